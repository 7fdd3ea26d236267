"""The benchmark's contenders; scripts/benchmark.py runs each in its own worker process.

- csft, csft_top2, csft_top2_cache: the user's recipe `experiment=banking77`, composed
  with Hydra plus only the benchmark's overrides and built by `csft.train.build`, so the
  benchmark times what `python -m csft.train experiment=banking77 ...` runs.
- hf, hf_grouped, hf_top2: a plain `transformers.Trainer` script with the same settings.
- csft_tta, hf_tta: time to accuracy. csft's default job (`python -m csft.train`) and the
  best Trainer script a user would write (group_by_length, [CLS] pooler), both validated
  every half epoch on csft's validation rows and stopped at the first validation that
  reaches the target accuracy.
- export, csft_predict, pipeline: batch and single-request inference on one export.

Each returns a dict of numbers for scripts/benchmark_report.py. Heavy imports stay inside
the functions: a worker loads only its own framework, so its peak RSS is its own.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
RECIPE = "experiment=banking77"
TAG = "[benchmark]"
TOP_LAYERS = 2  # what trains in the top2 mode: conf/freeze/top2.yaml's trainable_layers
WARMUP = 0.1  # conf/optim/adam_warmup.yaml's warmup_ratio
DEFAULT_JOB_EPOCHS = 5  # conf/trainer/default.yaml's max_epochs: the tta mode's default
HALF_EPOCH = 0.5  # the tta mode validates every half epoch (trainer.val_check_interval)
TTA = ("csft_tta", "hf_tta")
SHAPES: dict[str, dict[str, int]] = {
    "minilm": {},  # the packaged pretrained weights
    "bert-base": {  # bert-base-uncased's shape on MiniLM's vocabulary, random weights
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}
# Off for the csft contenders because the Trainer scripts do none of it either: no
# checkpoints, logging or export (lr_monitor needs a logger) ...
QUIET = (
    "+trainer.enable_checkpointing=false",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks.model_checkpoint=null",
    "callbacks.last_checkpoint=null",
    "callbacks.lr_monitor=null",
    "export=false",
)
# ... and no validation, except in the tta mode, which validates to know when to stop.
NOTHING_BUT_TRAINING = ("trainer.limit_val_batches=0", *QUIET)


# ---------------------------------------------------------------------------------------------
# measuring
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


def later_epochs_rate(rows: int, epoch_seconds: list[float]) -> float | None:
    """Samples/s over epochs 2.. (None with fewer than 2 epochs)."""
    later = epoch_seconds[1:]
    if not later or sum(later) <= 0:
        return None
    return rows * len(later) / sum(later)


def epoch_timer(base: type) -> Any:
    """Wall seconds of each training epoch, as a callback of `base` (`pl.Callback` or
    `transformers.TrainerCallback`): one timer, and each worker imports only its framework."""

    class EpochTimer(base):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.started = 0.0

        def begin(self, *_: Any, **__: Any) -> None:
            self.started = time.perf_counter()

        def end(self, *_: Any, **__: Any) -> None:
            self.seconds.append(time.perf_counter() - self.started)

        on_train_epoch_start = on_epoch_begin = begin  # Lightning, transformers
        on_train_epoch_end = on_epoch_end = end

    return EpochTimer()


def describe_optimizer(optimizer: Any) -> str:
    """E.g. 'Adam(betas=..., weight_decay=0.0, fused=True)': what stepped the weights (lr and
    weight decay as the parameter groups have them, not the constructor defaults)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    settings = dict(optimizer.defaults)
    for key in ("lr", "weight_decay"):
        values = sorted({group[key] for group in optimizer.param_groups if key in group})
        if values:
            settings[key] = values[0] if len(values) == 1 else values
    shown = ("betas", "eps", "weight_decay", "fused")
    inner = ", ".join(f"{k}={settings[k]}" for k in shown if k in settings)
    return f"{type(optimizer).__name__}({inner})"


def training_result(
    rows: int, test_rows: int, epochs: int, fit_seconds: float, epoch_seconds: list[float]
) -> dict[str, Any]:
    return {
        "train_rows": rows,
        "test_rows": test_rows,
        "fit_seconds": fit_seconds,
        "epoch_seconds": epoch_seconds,
        "samples_per_s": rows * epochs / fit_seconds,
        "later_samples_per_s": later_epochs_rate(rows, epoch_seconds),
    }


def time_to_accuracy(base: type, target: float) -> Any:
    """Records (wall seconds since `start()`, epoch, validation accuracy) at the end of every
    validation pass and stops the fit at the first that reaches `target`; a callback of
    `base` (`pl.Callback` or `transformers.TrainerCallback`), so both contenders stop by
    the same rule."""

    class TimeToAccuracy(base):
        def __init__(self) -> None:
            super().__init__()
            self.target = target
            self.trace: list[dict[str, float]] = []
            self.reached: dict[str, float] | None = None
            self.started = self.val_started = time.perf_counter()

        def start(self) -> None:
            """Called right before fit / train(): the clock counts only what follows."""
            self.started = time.perf_counter()

        def record(self, epoch: float, acc: float, val_seconds: float) -> bool:
            """One validation's point; True once the target is reached."""
            point = {
                "seconds": time.perf_counter() - self.started,
                "epoch": epoch,
                "acc": acc,
                "val_seconds": val_seconds,
            }
            self.trace.append(point)
            if self.reached is None and acc >= self.target:
                self.reached = point
            return self.reached is not None

        # Lightning: on_validation_end sees the epoch's val/acc (as ModelCheckpoint does).
        def on_validation_start(self, trainer: Any, *_: Any) -> None:
            self.val_started = time.perf_counter()

        def on_validation_end(self, trainer: Any, *_: Any) -> None:
            if trainer.sanity_checking:
                return
            acc = float(trainer.callback_metrics["val/acc"])
            epoch = trainer.global_step / trainer.num_training_batches
            if self.record(epoch, acc, time.perf_counter() - self.val_started):
                trainer.should_stop = True

        # transformers
        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            metrics = kwargs["metrics"]
            if self.record(state.epoch, metrics["eval_accuracy"], metrics["eval_runtime"]):
                control.should_training_stop = True

    return TimeToAccuracy()


def tta_result(
    rows: int, val_rows: int, epochs_trained: float, fit_seconds: float, clock: Any
) -> dict[str, Any]:
    """What the tta mode reports of one contender; the seconds and epochs to the target are
    None when it was never reached (then best_val_acc says how close it came)."""
    reached = clock.reached or {}
    return {
        "train_rows": rows,
        "val_rows": val_rows,
        "target_acc": clock.target,
        "seconds_to_target": reached.get("seconds"),
        "epochs_to_target": reached.get("epoch"),
        "best_val_acc": max((p["acc"] for p in clock.trace), default=None),
        "trace": clock.trace,
        "fit_seconds": fit_seconds,
        "epochs_trained": epochs_trained,
        "samples_per_s": rows * epochs_trained / fit_seconds,
        "val_seconds": sum(p["val_seconds"] for p in clock.trace),
    }


def read_split(workdir: str | Path) -> dict[str, Any]:
    """split.json: csft's train and validation splits and the test rows as [text, label id],
    with the label names (scripts/benchmark.py writes it), so the Trainer and pipeline
    workers use the very rows csft uses without importing csft's Lightning stack."""
    return json.loads((Path(workdir) / "split.json").read_text())


def check_same_rows(workdir: str | Path, datamodule: Any) -> None:
    """csft's data module must hold exactly the rows the HF workers get from split.json."""
    split = read_split(workdir)
    for name in ("train", "val", "test"):
        texts = [e.text for e in datamodule.examples[name]]
        if texts != [text for text, _ in split[name]]:
            raise SystemExit(f"benchmark: csft's {name} rows differ from split.json")


# ---------------------------------------------------------------------------------------------
# csft: the recipe, composed
# ---------------------------------------------------------------------------------------------
def csft_overrides(args: Any, name: str) -> list[str]:
    """The recipe (for csft_tta the default job) and what the benchmark changes in it
    (reported per contender)."""
    epochs = args.tta_epochs if name in TTA else args.epochs  # equal in a worker
    settings = [
        f"seed={args.seed}",
        f"trainer.max_epochs={epochs}",
        f"data.batch_size={args.batch_size}",
        f"data.max_length={args.max_length}",
        f"optim.lr={args.lr}",
    ]
    if name == "csft_tta":  # the default job as it is, validated every half epoch
        overrides = [*settings, f"trainer.val_check_interval={HALF_EPOCH}"]
    else:
        # full: everything trains, as in the Trainer script (the recipe freezes embeddings)
        freeze = "freeze=none" if name in ("csft", "export") else "freeze=top2"
        overrides = [RECIPE, *settings, freeze]
    if name == "csft_top2_cache":
        overrides.append("model.cache_frozen=true")
    if args.compile:
        overrides.append("model.compile=true")
    if SHAPES[args.shape]:
        shape = ",".join(f"{k}:{v}" for k, v in SHAPES[args.shape].items())
        overrides += ["model.random_init=true", f"model.config_overrides={{{shape}}}"]
    if args.device == "cuda":
        overrides += ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"]
    return overrides


def csft_config(args: Any, name: str, output_dir: str | Path) -> Any:
    """The config `python -m csft.train <csft_overrides>` would run with, on the prepared
    rows, writing only under output_dir."""
    from hydra import compose, initialize_config_dir

    from csft.resolvers import register_resolvers

    work = Path(args.workdir)
    overrides = [
        *csft_overrides(args, name),
        *(QUIET if name in TTA else NOTHING_BUT_TRAINING),
        f"threads={args.threads}",
        f"paths.data_dir={args.data_dir}",
        f"paths.output_dir={output_dir}",
        f"data.train_file={work / 'train.csv'}",
        f"data.test_file={work / 'test.csv'}",
    ]
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run_csft(args: Any, name: str) -> dict[str, Any]:
    import pytorch_lightning as pl

    from csft.train import build

    with tempfile.TemporaryDirectory(prefix=f"csft-{name}-") as out:
        cfg = csft_config(args, name, out)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as csft.train does
        datamodule, model, trainer = build(cfg)
        check_same_rows(args.workdir, datamodule)
        timer = epoch_timer(pl.Callback)
        trainer.callbacks.append(timer)
        rows = len(datamodule.rows["train"])
        progress(f"{name}: fit {rows} rows x {args.epochs} epochs")
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        fit_seconds = time.perf_counter() - start
        test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    return {
        **training_result(
            rows, len(datamodule.rows["test"]), args.epochs, fit_seconds, timer.seconds
        ),
        "test_acc": float(test["test/acc"]),
        "trainable_params": int(model.hparams.trainable_params),
        "optimizer": describe_optimizer(trainer.optimizers[0]),
        "attention": model.encoder.config._attn_implementation,
        "overrides": csft_overrides(args, name),
    }


def run_csft_tta(args: Any, name: str) -> dict[str, Any]:
    """The default job until its validation accuracy first reaches --target-acc."""
    import pytorch_lightning as pl

    from csft.train import build

    with tempfile.TemporaryDirectory(prefix=f"csft-{name}-") as out:
        cfg = csft_config(args, name, out)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as csft.train does
        datamodule, model, trainer = build(cfg)  # tokenized and built: the clock starts after
        check_same_rows(args.workdir, datamodule)
        clock = time_to_accuracy(pl.Callback, args.target_acc)
        trainer.callbacks.append(clock)
        rows, val_rows = len(datamodule.rows["train"]), len(datamodule.rows["val"])
        progress(f"{name}: fit {rows} rows, up to {args.epochs} epochs or {args.target_acc:g}")
        clock.start()
        trainer.fit(model, datamodule=datamodule)
        fit_seconds = time.perf_counter() - clock.started
        epochs = trainer.global_step / trainer.num_training_batches
    return {
        **tta_result(rows, val_rows, epochs, fit_seconds, clock),
        "trainable_params": int(model.hparams.trainable_params),
        "optimizer": describe_optimizer(trainer.optimizers[0]),
        "attention": model.encoder.config._attn_implementation,
        "overrides": csft_overrides(args, name),
    }


def run_export(args: Any, name: str) -> dict[str, Any]:
    """The recipe's model with a fresh (seeded) head, exported once for both inference
    contenders."""
    import pytorch_lightning as pl

    from csft.export import export_model
    from csft.train import build

    with tempfile.TemporaryDirectory(prefix="csft-export-") as out:
        cfg = csft_config(args, name, out)
        pl.seed_everything(cfg.seed, verbose=False)
        datamodule, model, _ = build(cfg)
        folder = Path(args.workdir) / "export"
        exported = export_model(model, datamodule.tokenizer, datamodule.encoding, folder)
    return {"dir": str(exported)}


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


def run_csft_predict(args: Any, name: str) -> dict[str, Any]:
    import torch
    from hydra.utils import instantiate

    from csft.data.encoding import encode
    from csft.data.example import Example
    from csft.evaluate import predict_split
    from csft.export import load_exported

    model_dir = Path(args.workdir) / "export"
    model = load_exported(model_dir)
    if args.device == "cuda":
        model = model.to("cuda", dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory(prefix="csft-predict-") as out:
        data = csft_config(args, "export", out).data
        dm = instantiate(data, tokenizer=str(model_dir), eval_batch_size=args.batch_size)
        dm.setup("fit")
    check_same_rows(args.workdir, dm)
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
    return {
        "test_rows": len(examples),
        "predict_seconds": seconds,
        "rows_per_s": len(examples) / seconds,
        "test_acc": float((preds == labels).float().mean()),
        **timed_latency(predict_one, [e.text for e in examples], args.latency_requests),
    }


# ---------------------------------------------------------------------------------------------
# Hugging Face: a plain Trainer script and the pipeline
# ---------------------------------------------------------------------------------------------
def warmup_steps(rows: int, batch_size: int, epochs: int) -> int:
    """10 % of the optimizer steps, rounded as csft's warmup_schedule rounds. An int: a float
    `warmup_steps=0.1` is a ratio only since transformers 5.0 (4.x used it as 0.1 steps)."""
    return max(1, round(WARMUP * math.ceil(rows / batch_size) * epochs))


def hf_model(model_dir: str, shape: str, labels: dict[str, Any], top2: bool) -> Any:
    """`AutoModelForSequenceClassification` in fp32, whatever the checkpoint stores.

    transformers 5 loads with dtype="auto": a half-precision checkpoint (the GPU kit's
    fp16 MiniLM, scripts/gpu_check.sh) stays fp16, and Adam on fp16 weights diverges (its
    second moments underflow to 0): the Trainer's chance accuracy on the H200. csft's
    load_encoder pins fp32 too; bf16=True / --device decides autocast, not the weights.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if SHAPES[shape]:
        config = AutoConfig.from_pretrained(model_dir, **SHAPES[shape], **labels)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **labels)
    model = model.float()
    if top2:
        base = model.base_model
        base.embeddings.requires_grad_(False)
        for layer in base.encoder.layer[: len(base.encoder.layer) - TOP_LAYERS]:
            layer.requires_grad_(False)
    return model


def need_accelerate(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise SystemExit(
            f"{name}: the Hugging Face Trainer needs accelerate>=1.1 (pip install accelerate)"
        )


def hf_data(args: Any, parts: tuple[str, ...]) -> tuple[Any, dict[str, Any], list[Any]]:
    """The tokenizer, the labels for `from_pretrained` and each part of split.json tokenized
    as a Trainer script tokenizes (no padding: the collator pads per batch)."""
    from transformers import AutoTokenizer

    from csft.pretrained import packaged_minilm_dir

    split = read_split(args.workdir)  # the very rows (and label ids) csft uses
    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_dir())

    def dataset(part: str) -> list[dict[str, Any]]:
        texts, labels = [t for t, _ in split[part]], [y for _, y in split[part]]
        encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
        return [
            {**{k: v[i] for k, v in encoded.items()}, "labels": label}
            for i, label in enumerate(labels)
        ]

    names = split["labels"]
    labels = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
    return tokenizer, labels, [dataset(part) for part in parts]


def hf_training_args(args: Any, out: str, rows: int, grouped: bool, **extra: Any) -> Any:
    """The Trainer scripts' TrainingArguments: csft's settings, nothing saved or logged."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:  # transformers 5
        sampling = {"train_sampling_strategy": "group_by_length" if grouped else "random"}
    else:
        sampling = {"group_by_length": grouped}
    settings: dict[str, Any] = {
        "output_dir": out,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 128,
        "num_train_epochs": args.epochs,
        "learning_rate": args.lr,
        "warmup_steps": warmup_steps(rows, args.batch_size, args.epochs),
        "lr_scheduler_type": "linear",
        **sampling,
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": args.device == "cpu",
        "bf16": args.device == "cuda",
        "seed": args.seed,
        "max_grad_norm": 1.0,
    }
    return TrainingArguments(**{**settings, **extra})


def run_hf(args: Any, name: str) -> dict[str, Any]:
    need_accelerate(name)
    import numpy as np
    import transformers
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

    from csft.pretrained import packaged_minilm_dir

    tokenizer, labels, (train_set, test_set) = hf_data(args, ("train", "test"))
    transformers.set_seed(args.seed)
    model = hf_model(packaged_minilm_dir(), args.shape, labels, top2=name == "hf_top2")
    timer = epoch_timer(TrainerCallback)
    with tempfile.TemporaryDirectory(prefix=f"hf-{name}-") as out:
        training_args = hf_training_args(args, out, len(train_set), name == "hf_grouped")
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=[timer],
        )
        progress(f"{name}: fit {len(train_set)} rows x {args.epochs} epochs")
        start = time.perf_counter()
        trainer.train()
        fit_seconds = time.perf_counter() - start
        predicted = trainer.predict(test_set)
    logits = predicted.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {
        **training_result(len(train_set), len(test_set), args.epochs, fit_seconds, timer.seconds),
        "test_acc": float(np.mean(np.argmax(logits, -1) == predicted.label_ids)),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer": describe_optimizer(trainer.optimizer),
        "attention": model.config._attn_implementation,
        "warmup_steps": training_args.warmup_steps,
    }


def half_epoch_steps(rows: int, batch_size: int) -> int:
    """Optimizer steps between validations: half an epoch's, rounded down as Lightning
    rounds `val_check_interval=0.5` (so both contenders validate after the same steps)."""
    return max(1, int(math.ceil(rows / batch_size) * HALF_EPOCH))


def run_hf_tta(args: Any, name: str) -> dict[str, Any]:
    """The best Trainer script a user would write, until its validation accuracy first
    reaches --target-acc: grouped batches, every parameter trains, [CLS] pooler + head."""
    need_accelerate(name)
    import numpy as np
    import transformers
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

    from csft.pretrained import packaged_minilm_dir

    tokenizer, labels, (train_set, val_set) = hf_data(args, ("train", "val"))
    transformers.set_seed(args.seed)
    model = hf_model(packaged_minilm_dir(), args.shape, labels, top2=False)

    def accuracy(predicted: Any) -> dict[str, float]:
        logits = predicted.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return {"accuracy": float(np.mean(np.argmax(logits, -1) == predicted.label_ids))}

    clock = time_to_accuracy(TrainerCallback, args.target_acc)
    with tempfile.TemporaryDirectory(prefix=f"hf-{name}-") as out:
        training_args = hf_training_args(
            args,
            out,
            len(train_set),
            grouped=True,
            eval_strategy="steps",
            eval_steps=half_epoch_steps(len(train_set), args.batch_size),
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            eval_dataset=val_set,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy,
            callbacks=[clock],
        )
        progress(
            f"{name}: fit {len(train_set)} rows, up to {args.epochs} epochs or {args.target_acc:g}"
        )
        clock.start()
        trainer.train()
        fit_seconds = time.perf_counter() - clock.started
        epochs = trainer.state.global_step / math.ceil(len(train_set) / args.batch_size)
    return {
        **tta_result(len(train_set), len(val_set), epochs, fit_seconds, clock),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer": describe_optimizer(trainer.optimizer),
        "attention": model.config._attn_implementation,
        "warmup_steps": training_args.warmup_steps,
        "eval_steps": training_args.eval_steps,
    }


def run_pipeline(args: Any, name: str) -> dict[str, Any]:
    import torch
    from transformers import pipeline

    model_dir = Path(args.workdir) / "export"
    split = read_split(args.workdir)
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


WORKERS: dict[str, Callable[[Any, str], dict[str, Any]]] = {
    "csft": run_csft,
    "csft_top2": run_csft,
    "csft_top2_cache": run_csft,
    "hf": run_hf,
    "hf_grouped": run_hf,
    "hf_top2": run_hf,
    "csft_tta": run_csft_tta,
    "hf_tta": run_hf_tta,
    "export": run_export,
    "csft_predict": run_csft_predict,
    "pipeline": run_pipeline,
}
