"""Benchmark csft against a plain Hugging Face `transformers.Trainer` script on Banking77.

    python scripts/benchmark.py [--modes full,top2,inference] [--epochs 3] [--threads N]
                                [--train-rows N] [--test-rows N] [--out docs/benchmarks.md]
                                [--device cuda] [--shape bert-base] [--compile]

Same model (the packaged all-MiniLM-L6-v2), same rows, batch size, max length, epochs,
learning rate and torch threads for every contender. Each contender runs in its own
subprocess (`--worker NAME`, one JSON line as its last stdout line), so its peak RSS is its
own. Modes:

- full: csft vs `hf` (random order) vs `hf_grouped` (train_sampling_strategy=group_by_length).
- top2: only the top 2 encoder layers + head train: `csft_top2`, `csft_top2_cache` (the
  frozen-layer cache) vs `hf_top2` (embeddings and lower layers requires_grad=False).
  With --epochs >= 2 also samples/s of epochs 2.. (where the cache pays off).
- inference: csft's batch predict (length-sorted batches, dynamic padding) vs
  `transformers.pipeline("text-classification", batch_size=32)` on one exported model (the
  packaged MiniLM with a fresh 77-way head), plus single-request latency p50 / p95.

`--device cuda` runs every contender on the first GPU in bf16 (csft `bf16-mixed`, the
Trainer `bf16=True`, inference in bf16 weights). `--shape bert-base` swaps the weights for a
randomly initialised model of bert-base's shape (12 layers, 768 wide), the same for every
contender. `--compile` turns on csft's `model.compile` (torch.compile, dynamic shapes).

Prints a Markdown table per mode with ratios (timings are reported, never asserted) and
writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
TAG = "[benchmark]"

MODES: dict[str, tuple[str, ...]] = {
    "full": ("csft", "hf", "hf_grouped"),
    "top2": ("csft_top2", "csft_top2_cache", "hf_top2"),
    "inference": ("csft_predict", "pipeline"),
}
TOP_LAYERS = 2  # layers that train in the top2 mode
SHAPES: dict[str, dict[str, int]] = {
    "minilm": {},  # the packaged pretrained weights
    "bert-base": {  # bert-base-uncased's shape on MiniLM's vocabulary, random weights
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}


# ---------------------------------------------------------------------------------------------
# shared helpers (parent and workers)
# ---------------------------------------------------------------------------------------------
def progress(message: str) -> None:
    print(f"{TAG} {message}", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def describe_optimizer(optimizer: Any) -> str:
    """E.g. 'Adam(lr=0.0002, ..., weight_decay=0.0, fused=True)': what stepped the weights
    (lr and weight decay as the parameter groups have them, not the constructor defaults)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    settings = dict(optimizer.defaults)
    for key in ("lr", "weight_decay"):
        values = sorted({group[key] for group in optimizer.param_groups if key in group})
        if values:
            settings[key] = values[0] if len(values) == 1 else values
    shown = ("betas", "eps", "weight_decay", "fused")
    inner = ", ".join(f"{k}={settings[k]}" for k in shown if k in settings)
    return f"{type(optimizer).__name__}({inner})"


def later_epochs_rate(rows: int, epoch_seconds: list[float]) -> float | None:
    """Samples/s over epochs 2.. (None with fewer than 2 epochs)."""
    later = epoch_seconds[1:]
    if not later or sum(later) <= 0:
        return None
    return rows * len(later) / sum(later)


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------
def worker_setup(args: argparse.Namespace) -> None:
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)


def datamodule(
    args: argparse.Namespace,
    tokenizer: str,
    eval_batch_size: int | None = None,
    setup: bool = True,
):
    """csft's data module on the prepared files, with all Banking77 labels in a fixed order
    (so a small --train-rows sample still has the 77-way head and knows every test label)."""
    from csft.data.datamodule import FileDataModule

    work = Path(args.workdir)
    dm = FileDataModule(
        tokenizer=tokenizer,
        train_file=str(work / "train.csv"),
        test_file=str(work / "test.csv"),
        text_column="text",
        label_column="category",
        val_fraction=0.1,
        seed=args.seed,
        max_length=args.max_length,
        batch_size=args.batch_size,
        eval_batch_size=eval_batch_size or 128,
    )
    dm.label_names = tuple(json.loads((work / "labels.json").read_text()))
    if setup:
        dm.setup("fit")
    return dm


def csft_classifier(args: argparse.Namespace, dm: Any, top2: bool, cache: bool) -> Any:
    from functools import partial

    import torch

    from csft.model.classifier import Classifier
    from csft.model.freezing import FreezePolicy
    from csft.model.optim import warmup_schedule
    from csft.pretrained import packaged_minilm_dir

    freeze = FreezePolicy("top2", TOP_LAYERS, False) if top2 else FreezePolicy("none", None, True)
    overrides = SHAPES[args.shape]
    return Classifier(
        packaged_minilm_dir(),
        random_init=bool(overrides),
        config_overrides=overrides,
        compile=args.compile,
        num_labels=dm.num_labels,
        id2label=dm.id2label,
        pooling="mean",
        freeze=freeze,
        cache_frozen=cache,
        optimizer=partial(torch.optim.Adam, lr=args.lr, fused=True),
        scheduler=partial(warmup_schedule, warmup_ratio=0.1, decay="linear"),
    )


def run_csft(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import pytorch_lightning as pl

    from csft.pretrained import packaged_minilm_dir

    top2 = name != "csft"
    cache = name == "csft_top2_cache"
    pl.seed_everything(args.seed, verbose=False)
    dm = datamodule(args, packaged_minilm_dir())
    check_same_rows(args, dm)
    model = csft_classifier(args, dm, top2=top2, cache=cache)
    epochs: list[float] = []

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            epochs.append(time.perf_counter() - self.start)

    cuda = args.device == "cuda"
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="gpu" if cuda else "cpu",
        precision="bf16-mixed" if cuda else "32-true",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        gradient_clip_val=1.0,
        callbacks=[EpochTimer()],
    )
    rows = len(dm.rows["train"])
    progress(f"{name}: fit {rows} rows x {args.epochs} epochs")
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_seconds = time.perf_counter() - start
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    return {
        "train_rows": rows,
        "test_rows": len(dm.rows["test"]),
        "fit_seconds": fit_seconds,
        "epoch_seconds": epochs,
        "samples_per_s": rows * args.epochs / fit_seconds,
        "later_samples_per_s": later_epochs_rate(rows, epochs),
        "test_acc": float(test["test/acc"]),
        "trainable_params": int(model.hparams.trainable_params),
        "optimizer": describe_optimizer(trainer.optimizers[0]),
        "attention": model.encoder.config._attn_implementation,
    }


def run_hf(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise SystemExit(
            f"{name}: the Hugging Face Trainer needs accelerate>=1.1 (pip install accelerate)"
        )
    import numpy as np
    import transformers
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from csft.pretrained import packaged_minilm_dir

    model_dir = packaged_minilm_dir()
    # The very rows (and label ids) csft trains and tests on: its 90 % train split.
    split = read_split(args)
    label2id = {name: i for i, name in enumerate(split["labels"])}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def dataset(name: str) -> list[dict[str, Any]]:
        texts, labels = [t for t, _ in split[name]], [y for _, y in split[name]]
        encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
        return [
            {**{k: v[i] for k, v in encoded.items()}, "labels": label}
            for i, label in enumerate(labels)
        ]

    train_set, test_set = dataset("train"), dataset("test")
    transformers.set_seed(args.seed)
    labels = {
        "num_labels": len(label2id),
        "id2label": {i: n for n, i in label2id.items()},
        "label2id": label2id,
    }
    if SHAPES[args.shape]:
        config = AutoConfig.from_pretrained(model_dir, **SHAPES[args.shape], **labels)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **labels)
    if name == "hf_top2":
        base = model.base_model
        base.embeddings.requires_grad_(False)
        for layer in base.encoder.layer[: len(base.encoder.layer) - TOP_LAYERS]:
            layer.requires_grad_(False)
    epochs: list[float] = []

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, *_: Any, **__: Any) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, *_: Any, **__: Any) -> None:
            epochs.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=128,
            num_train_epochs=args.epochs,
            learning_rate=args.lr,
            warmup_steps=0.1,  # transformers 5: a float < 1 is a ratio of all steps
            lr_scheduler_type="linear",
            train_sampling_strategy="group_by_length" if name == "hf_grouped" else "random",
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=args.device == "cpu",
            bf16=args.device == "cuda",
            seed=args.seed,
            max_grad_norm=1.0,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=[EpochTimer()],
        )
        rows = len(train_set)
        progress(f"{name}: fit {rows} rows x {args.epochs} epochs")
        start = time.perf_counter()
        trainer.train()
        fit_seconds = time.perf_counter() - start
        predicted = trainer.predict(test_set)
    logits = predicted.predictions[0] if isinstance(predicted.predictions, tuple) else None
    logits = predicted.predictions if logits is None else logits
    accuracy = float(np.mean(np.argmax(logits, -1) == predicted.label_ids))
    return {
        "train_rows": rows,
        "test_rows": len(test_set),
        "fit_seconds": fit_seconds,
        "epoch_seconds": epochs,
        "samples_per_s": rows * args.epochs / fit_seconds,
        "later_samples_per_s": later_epochs_rate(rows, epochs),
        "test_acc": accuracy,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer": describe_optimizer(trainer.optimizer),
        "attention": model.config._attn_implementation,
    }


def run_export(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The packaged MiniLM with a fresh (seeded) 77-way head, exported once for inference."""
    import pytorch_lightning as pl

    from csft.export import export_model
    from csft.pretrained import packaged_minilm_dir

    pl.seed_everything(args.seed, verbose=False)
    dm = datamodule(args, packaged_minilm_dir())
    model = csft_classifier(args, dm, top2=False, cache=False)
    out = export_model(model, dm.tokenizer, dm.encoding, Path(args.workdir) / "export")
    return {"dir": str(out)}


def timed_latency(predict_one: Callable[[str], Any], texts: list[str], requests: int) -> dict:
    for text in texts[:3]:  # warm-up, untimed
        predict_one(text)
    times = []
    for i in range(requests):
        start = time.perf_counter()
        predict_one(texts[i % len(texts)])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "latency_p50_ms": percentile(times, 50),
        "latency_p95_ms": percentile(times, 95),
        "latency_requests": requests,
    }


def run_csft_predict(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import torch

    from csft.data.encoding import encode
    from csft.data.example import Example
    from csft.evaluate import load_exported, predict_split

    model_dir = Path(args.workdir) / "export"
    model = load_exported(model_dir)
    if args.device == "cuda":
        model = model.to("cuda", dtype=torch.bfloat16)
    dm = datamodule(args, str(model_dir), eval_batch_size=args.batch_size)
    check_same_rows(args, dm)
    examples = dm.examples["test"]
    remap = torch.tensor([model.config.label2id[n] for n in dm.vocab.names])
    collate = dm.collator()
    inputs = ("input_ids", "attention_mask", "token_type_ids")

    def on_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: batch[k].to(args.device, non_blocking=True) for k in inputs}

    @torch.inference_mode()
    def predict_one(text: str) -> int:
        row = encode([Example(text=text)], dm.tokenizer, dm.encoding)[0]
        row["index"] = 0
        logits = model(**on_device(collate([row]))).logits
        return int(logits.argmax(-1))  # waits for the GPU

    predict_split(model, dm.loader(dm.encode_split(examples[: args.batch_size])))  # warm-up
    progress(f"{name}: predict {len(examples)} rows")
    start = time.perf_counter()
    rows = dm.encode_split(examples)  # tokenizing is part of predicting, as in the pipeline
    logits, labels, _ = predict_split(model, dm.loader(rows))  # what csft.evaluate runs
    seconds = time.perf_counter() - start
    preds, labels = logits.argmax(-1), remap[labels]
    texts = [e.text for e in examples]
    return {
        "test_rows": len(examples),
        "predict_seconds": seconds,
        "rows_per_s": len(examples) / seconds,
        "test_acc": float((preds == labels).float().mean()),
        **timed_latency(predict_one, texts, args.latency_requests),
    }


def run_pipeline(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import torch
    from transformers import pipeline

    model_dir = Path(args.workdir) / "export"
    split = read_split(args)
    texts = [text for text, _ in split["test"]]
    labels = [split["labels"][label] for _, label in split["test"]]
    classify = pipeline(
        "text-classification",
        model=str(model_dir),
        tokenizer=str(model_dir),
        trust_remote_code=True,
        device=args.device,
        dtype=torch.bfloat16 if args.device == "cuda" else torch.float32,
    )
    options = {"truncation": True, "max_length": args.max_length}

    def top(result: Any) -> str:
        return (result[0] if isinstance(result, list) else result)["label"]

    classify(texts[: args.batch_size], batch_size=args.batch_size, **options)  # warm-up
    progress(f"{name}: predict {len(texts)} rows")
    start = time.perf_counter()
    results = classify(texts, batch_size=args.batch_size, **options)
    seconds = time.perf_counter() - start
    correct = sum(top(r) == label for r, label in zip(results, labels, strict=True))
    return {
        "test_rows": len(texts),
        "predict_seconds": seconds,
        "rows_per_s": len(texts) / seconds,
        "test_acc": correct / len(texts),
        **timed_latency(lambda t: top(classify(t, **options)), texts, args.latency_requests),
    }


WORKERS: dict[str, Callable[[argparse.Namespace, str], dict[str, Any]]] = {
    "csft": run_csft,
    "csft_top2": run_csft,
    "csft_top2_cache": run_csft,
    "hf": run_hf,
    "hf_grouped": run_hf,
    "hf_top2": run_hf,
    "csft_predict": run_csft_predict,
    "pipeline": run_pipeline,
    "export": run_export,
}


def worker_main(args: argparse.Namespace) -> int:
    worker_setup(args)
    import torch

    result = WORKERS[args.worker](args, args.worker)
    result.update(
        name=args.worker,
        threads=torch.get_num_threads(),
        peak_rss_mib=peak_rss_mib(),
    )
    if args.device == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    summary = ", ".join(
        f"{k} {result[k]:.3g}"
        for k in ("samples_per_s", "rows_per_s", "test_acc", "peak_rss_mib")
        if isinstance(result.get(k), float)
    )
    progress(f"{args.worker}: done ({summary})" if summary else f"{args.worker}: done")
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------
def prepare_data(args: argparse.Namespace, work: Path) -> dict[str, int]:
    """Train / test CSVs (shuffled-with-seed subsets when asked) and the label list."""
    import pandas as pd

    source = Path(args.data_dir) / "banking77"
    sizes = {}
    frames = {}
    for split, limit in (("train", args.train_rows), ("test", args.test_rows)):
        path = source / f"{split}.csv"
        if not path.is_file():
            raise SystemExit(f"benchmark: {path} not found (set CSFT_DATA_DIR or --data-dir)")
        frame = pd.read_csv(path)
        frames[split] = frame
        if limit is not None:
            frame = frame.sample(frac=1.0, random_state=args.seed).head(limit)
        frame.to_csv(work / f"{split}.csv", index=False)
        sizes[split] = len(frame)
    categories = source / "categories.json"
    if categories.is_file():
        labels = sorted(json.loads(categories.read_text()))
    else:
        labels = sorted(set(frames["train"]["category"].astype(str)))
    (work / "labels.json").write_text(json.dumps(labels))
    sizes["labels"] = len(labels)
    write_split(args, work)
    return sizes


def write_split(args: argparse.Namespace, work: Path) -> None:
    """split.json: csft's own train split (90 %, stratified, seeded) and the test rows as
    (text, label id), so the Trainer and pipeline workers use the very rows csft uses
    without importing csft's Lightning stack (which would count in their peak RSS)."""
    from csft.data.example import LabelVocab

    dm = datamodule(args, tokenizer="unused", setup=False)
    vocab = LabelVocab(tuple(dm.label_names))
    splits = dm.load_splits()
    rows = {
        split: [[e.text, vocab.encode(e)] for e in splits[split]] for split in ("train", "test")
    }
    (work / "split.json").write_text(json.dumps({"labels": vocab.names, **rows}))


def read_split(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads((Path(args.workdir) / "split.json").read_text())


def check_same_rows(args: argparse.Namespace, dm: Any) -> None:
    """csft's data module must hold exactly the rows the HF workers get from split.json."""
    split = read_split(args)
    for name in ("train", "test"):
        texts = [e.text for e in dm.examples[name]]
        if texts != [text for text, _ in split[name]]:
            raise SystemExit(f"benchmark: csft's {name} rows differ from split.json")


def worker_command(args: argparse.Namespace, name: str, work: Path) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--workdir",
        str(work),
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--lr",
        str(args.lr),
        "--latency-requests",
        str(args.latency_requests),
        "--device",
        args.device,
        "--shape",
        args.shape,
        *(["--compile"] if args.compile else []),
    ]


def run_worker(args: argparse.Namespace, name: str, work: Path) -> dict[str, Any]:
    """One contender in its own process; its progress lines pass through, the rest is kept
    for the error message."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("PYTHONWARNINGS", "ignore")
    tail: list[str] = []
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(
            worker_command(args, name, work),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith(TAG):
                print(line, end="", file=sys.stderr, flush=True)
            tail = [*tail[-39:], line]
        code = process.wait()
        stdout.seek(0)
        lines = [line for line in stdout.read().splitlines() if line.strip()]
    if code != 0 or not lines:
        message = "".join(tail[-20:])
        print(f"{TAG} {name}: FAILED (exit {code})\n{message}", file=sys.stderr, flush=True)
        return {"name": name, "failed": f"exit {code}"}
    result = json.loads(lines[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(value: float | None, baseline: float | None) -> str:
    if not value or not baseline:
        return "—"
    return f"{value / baseline:.2f}×"


def markdown_tables(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    epochs = f"{args.epochs} epoch" + ("s" if args.epochs != 1 else "")

    def get(name: str, key: str) -> Any:
        return results.get(name, {}).get(key)

    def training_row(name: str, baselines: tuple[str, ...], later: bool) -> str:
        if "failed" in results.get(name, {}):
            return f"| {name} | failed ({results[name]['failed']}) |"
        cells = [
            name,
            fmt(get(name, "samples_per_s")),
            *([fmt(get(name, "later_samples_per_s"))] if later else []),
            fmt(get(name, "fit_seconds")),
            fmt(get(name, "peak_rss_mib"), 0),
            fmt(get(name, "test_acc"), 4),
        ]
        for baseline in baselines:
            cells.append(ratio(get(name, "samples_per_s"), get(baseline, "samples_per_s")))
            if later:
                cells.append(
                    ratio(get(name, "later_samples_per_s"), get(baseline, "later_samples_per_s"))
                )
        return "| " + " | ".join(cells) + " |"

    if "full" in args.modes:
        lines += [
            f"### Full fine-tuning ({epochs})",
            "",
            "| contender | train samples/s | fit wall s | peak RSS MiB | test acc "
            "| samples/s vs hf | samples/s vs hf_grouped |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(training_row(n, ("hf", "hf_grouped"), False) for n in MODES["full"]),
            "",
        ]
    if "top2" in args.modes:
        lines += [
            f"### Top 2 layers + head train ({epochs})",
            "",
            "| contender | train samples/s | samples/s epochs ≥ 2 | fit wall s | peak RSS MiB "
            "| test acc | samples/s vs hf_top2 | epochs ≥ 2 vs hf_top2 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(training_row(n, ("hf_top2",), True) for n in MODES["top2"]),
            "",
        ]
        if args.epochs < 2:
            lines += ["(epochs ≥ 2: run with --epochs 2 or more.)", ""]
    if "inference" in args.modes:
        lines += [
            "### Inference (untrained 77-way head; same exported model)",
            "",
            "| contender | rows/s | p50 ms | p95 ms | peak RSS MiB | test acc "
            "| rows/s vs pipeline | p50 speed-up vs pipeline |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name in MODES["inference"]:
            if "failed" in results.get(name, {}):
                lines.append(f"| {name} | failed ({results[name]['failed']}) |")
                continue
            p50, base_p50 = get(name, "latency_p50_ms"), get("pipeline", "latency_p50_ms")
            cells = [
                name,
                fmt(get(name, "rows_per_s")),
                fmt(p50, 2),
                fmt(get(name, "latency_p95_ms"), 2),
                fmt(get(name, "peak_rss_mib"), 0),
                fmt(get(name, "test_acc"), 4),
                ratio(get(name, "rows_per_s"), get("pipeline", "rows_per_s")),
                ratio(base_p50, p50),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, sizes: dict[str, int]
) -> str:
    command = "python scripts/benchmark.py " + shlex.join(args.argv)
    versions = ", ".join(
        f"{p} {version(p)}" for p in ("torch", "transformers", "pytorch-lightning", "csft")
    )
    model = (
        "packaged all-MiniLM-L6-v2"
        if not SHAPES[args.shape]
        else f"randomly initialised {args.shape} shape ({SHAPES[args.shape]})"
    )
    device = "CPU, fp32"
    if args.device == "cuda":
        import torch

        device = f"{torch.cuda.get_device_name(0)}, bf16"
    header = [
        "# Benchmarks: csft vs a Hugging Face Trainer script",
        "",
        f"`{command.strip()}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Banking77, {model}{', torch.compile' if args.compile else ''}; on {device}; "
        f"{sizes['train']} train rows read, csft holds "
        f"out 10 % for validation and every contender trains on the same remaining rows; "
        f"{sizes['test']} test rows; {sizes['labels']} labels.",
        f"- batch size {args.batch_size}, max length {args.max_length}, lr {args.lr:g} "
        f"(10 % linear warmup, linear decay, grad-norm clip 1.0), {args.epochs} epoch(s), "
        f"{args.threads} torch threads, seed {args.seed}.",
        f"- {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; {versions}; Python {platform.python_version()}.",
        "- Samples/s = train rows x epochs / wall seconds of `fit` / `train()`. Ratios > 1: "
        "csft is faster. Peak RSS is each contender's own process. Timings depend on the "
        "machine and its load.",
        "",
    ]
    setups = [
        f"- `{name}`: {r['trainable_params']:,} trainable parameters, {r['optimizer']}, "
        f"{r['attention']} attention, {r['threads']} thread(s)"
        + (f", peak GPU memory {r['peak_gpu_mib']:,.0f} MiB." if "peak_gpu_mib" in r else ".")
        for name, r in results.items()
        if "optimizer" in r
    ]
    notes = [
        "### What differs between csft and the Trainer script",
        "",
        "- Pooling: csft's head mean-pools the tokens (how all-MiniLM-L6-v2 was trained); "
        "`AutoModelForSequenceClassification` uses BERT's [CLS] pooler (dense + tanh, trained "
        "too). Same encoder, so similar cost; accuracy differences partly come from this.",
        "- Batch order: csft sorts pools of 50 batches by length (shuffled batches); `hf` is "
        "random, `hf_grouped` is `LengthGroupedSampler` (megabatches of min(rows / 128, 50) "
        "batches, so below 256 train rows it groups nothing).",
        "- Optimizer: csft Adam(fused); the Trainer AdamW(fused) with weight decay 0 (the "
        "same update). Warmup: 10 % of the steps in both (csft rounds and starts at lr / "
        "warmup steps, the Trainer rounds up and starts at 0).",
        "- top2: csft keeps the frozen embeddings and layers in eval mode (no dropout); the "
        "Trainer script only sets requires_grad=False, so dropout still runs there, and it "
        "also trains the [CLS] pooler.",
        "- Truncation at max length: csft cuts from the left (keeps the end of the message), "
        "the tokenizer's default from the right (30 of 10,003 train and 5 of 3,080 test rows "
        "are longer than 64 tokens).",
        "- Inference: both load the same exported folder with the same model class; csft "
        "tokenizes the split once, sorts by length and pads per batch; the pipeline batches "
        "in input order. Single-request latency is one text per call for both.",
        "",
    ]
    body = markdown_tables(results, args)
    if setups:
        body += ["### Setup per contender", "", *setups, ""]
    return "\n".join(header + body + notes)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="full,top2,inference", help="comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--train-rows", type=int, help="a seeded sample of the train rows")
    parser.add_argument("--test-rows", type=int, help="a seeded sample of the test rows")
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="minilm",
        help="minilm: the packaged weights; bert-base: random weights of bert-base's shape",
    )
    parser.add_argument("--compile", action="store_true", help="csft's model.compile=true")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("CSFT_DATA_DIR", str(ROOT.parent / "shared" / "data")),
        help="holds banking77/train.csv and test.csv (default: $CSFT_DATA_DIR)",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the Markdown file to write")
    parser.add_argument("--json", help="also write every contender's raw numbers here")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help="keep the prepared data and export here")
    args = parser.parse_args(argv)
    args.argv = argv
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown or not args.modes:
        parser.error(f"--modes: expected some of {','.join(MODES)}, got {sorted(unknown)}")
    if args.epochs < 1 or args.threads < 1 or args.latency_requests < 1:
        parser.error("--epochs, --threads and --latency-requests must be at least 1")
    if args.device == "cuda" and not args.worker:
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no GPU on this machine")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="csft-bench-") as tmp:
        work = Path(args.workdir or tmp)  # --workdir: keep the data and export there
        work.mkdir(parents=True, exist_ok=True)
        args.workdir = str(work)
        sizes = prepare_data(args, work)
        for mode in args.modes:
            names = MODES[mode]
            if mode == "inference":
                exported = run_worker(args, "export", work)
                if "failed" in exported:
                    results.update({n: {"name": n, "failed": "export failed"} for n in names})
                    continue
            for name in names:
                results[name] = run_worker(args, name, work)
    text = report(results, args, sizes)
    print(text)
    for label, name, baseline, key in (
        ("full: csft / hf train samples/s", "csft", "hf", "samples_per_s"),
        ("full: csft / hf_grouped train samples/s", "csft", "hf_grouped", "samples_per_s"),
        ("top2: csft_top2 / hf_top2 train samples/s", "csft_top2", "hf_top2", "samples_per_s"),
        ("top2: csft_top2_cache / hf_top2", "csft_top2_cache", "hf_top2", "samples_per_s"),
        ("top2: csft_top2_cache / hf_top2, epochs ≥ 2", "csft_top2_cache", "hf_top2", "later"),
        ("inference: csft_predict / pipeline rows/s", "csft_predict", "pipeline", "rows_per_s"),
    ):
        key = "later_samples_per_s" if key == "later" else key
        value, base = results.get(name, {}).get(key), results.get(baseline, {}).get(key)
        if value and base:
            print(f"{label}: {value / base:.2f}×")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")
    return 1 if any("failed" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
