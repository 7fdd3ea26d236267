"""Benchmark csft against a plain Hugging Face `transformers.Trainer` script on Banking77.

    python scripts/benchmark.py [--modes full,top2,inference,tta] [--epochs 3] [--threads N]
                                [--target-acc 0.92] [--train-rows N] [--test-rows N]
                                [--out docs/benchmarks.md] [--json docs/benchmarks.json]
                                [--device cuda] [--shape bert-base] [--compile]

csft runs the user's recipe, `python -m csft.train experiment=banking77`, with only the
benchmark's overrides (scripts/benchmark_contenders.py lists them); the Trainer script
gets the same model (the packaged all-MiniLM-L6-v2), rows, batch size, max length, epochs,
learning rate, warmup and torch threads. Each contender runs in its own subprocess
(`--worker NAME`, one JSON line as its last stdout line), so its peak RSS is its own. Modes:

- full: csft vs `hf` (random order) vs `hf_grouped` (train_sampling_strategy=group_by_length).
- top2: only the top 2 encoder layers + head train: `csft_top2`, `csft_top2_cache` (the
  frozen-layer cache) vs `hf_top2` (embeddings and lower layers requires_grad=False).
  With --epochs >= 2 also samples/s of epochs 2.. (where the cache pays off).
- inference: csft's batch predict (length-sorted batches, dynamic padding) vs
  `transformers.pipeline("text-classification", batch_size=32)` on one exported model (the
  packaged MiniLM with a fresh 77-way head), plus single-request latency p50 / p95.
- tta (time to accuracy; not in the default --modes): wall seconds until validation
  accuracy first reaches --target-acc (0.92), validated every half epoch on csft's
  validation rows, for csft's default job (`python -m csft.train`, `csft_tta`) and the best
  Trainer script a user would write (`hf_tta`: group_by_length, every parameter trains,
  [CLS] pooler). --epochs defaults to the default job's 5 here (3 for the other modes).

`--device cuda` runs every contender on the first GPU in bf16 (csft `bf16-mixed`, the
Trainer `bf16=True`, inference in bf16 weights). `--shape bert-base` swaps the weights for a
randomly initialised model of bert-base's shape (12 layers, 768 wide), the same for every
contender. `--compile` turns on csft's `model.compile` (torch.compile, dynamic shapes).

Prints a Markdown table per mode with ratios (timings are reported, never asserted) and
writes it to --out (scripts/benchmark_report.py): full, top2 and inference rewrite the file;
tta replaces only its own marked section, so `--modes tta` keeps the other modes' results
(and they keep it). --json merges into the file's earlier results, contender by contender.
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
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

# Beside this file, so on sys.path when it runs as a script.
from benchmark_contenders import (
    DEFAULT_JOB_EPOCHS,
    ROOT,
    SHAPES,
    TAG,
    TTA,
    WORKERS,
    csft_config,
    peak_rss_mib,
    progress,
)
from benchmark_report import MODES, Run, document, raw_json, report, summary, tta_section

DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
EPOCHS = 3  # the full, top2 and inference modes' default --epochs


# ---------------------------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------------------------
def worker_main(args: argparse.Namespace) -> int:
    """Run one contender and print its result as the last stdout line."""
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    result = WORKERS[args.worker](args, args.worker)
    result.update(name=args.worker, threads=torch.get_num_threads(), peak_rss_mib=peak_rss_mib())
    if args.device == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    numbers = ", ".join(
        f"{k} {result[k]:.3g}"
        for k in ("samples_per_s", "rows_per_s", "test_acc", "seconds_to_target", "peak_rss_mib")
        if isinstance(result.get(k), float)
    )
    progress(f"{args.worker}: done ({numbers})" if numbers else f"{args.worker}: done")
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------------
def sample_train(frame: Any, limit: int, seed: int) -> Any:
    """A seeded sample of `limit` train rows with every label at least once: csft takes its
    labels from the train split (as a user's run does), so a small sample still gets the
    77-way head and knows every test label."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    labels = shuffled["category"].nunique()
    if limit < labels:
        raise SystemExit(f"benchmark: --train-rows {limit} < the {labels} labels")
    first = shuffled.drop_duplicates("category").index
    rest = shuffled.index.difference(first, sort=False)[: limit - len(first)]
    return shuffled[shuffled.index.isin(first.append(rest))]  # in shuffled order


def prepare_data(args: argparse.Namespace, work: Path) -> dict[str, int]:
    """Train / test CSVs (seeded samples when asked) and split.json; returns the sizes: rows
    read (train, test), csft's split of train (fit, val) and the labels."""
    import pandas as pd

    source = Path(args.data_dir) / "banking77"
    sizes = {}
    for split, limit in (("train", args.train_rows), ("test", args.test_rows)):
        path = source / f"{split}.csv"
        if not path.is_file():
            raise SystemExit(f"benchmark: {path} not found (set CSFT_DATA_DIR or --data-dir)")
        frame = pd.read_csv(path)
        if limit is not None and split == "train":
            frame = sample_train(frame, limit, args.seed)
        elif limit is not None:
            frame = frame.sample(frac=1.0, random_state=args.seed).head(limit)
        frame.to_csv(work / f"{split}.csv", index=False)
        sizes[split] = len(frame)
    return sizes | write_split(args, work)


def write_split(args: argparse.Namespace, work: Path) -> dict[str, int]:
    """split.json: csft's own train and validation splits (90 / 10 %, stratified, seeded),
    the test rows and the label names, as csft's data module reads them from the recipe;
    returns the sizes of the splits and the label count."""
    from hydra.utils import instantiate

    cfg = csft_config(args, "csft", work / "split")
    dm = instantiate(cfg.data, tokenizer=cfg.model.name_or_path)
    dm.setup("fit")
    rows = {
        split: [
            [e.text, r["label"]] for e, r in zip(dm.examples[split], dm.rows[split], strict=True)
        ]
        for split in ("train", "val", "test")
    }
    names = [dm.id2label[i] for i in range(dm.num_labels)]
    (work / "split.json").write_text(json.dumps({"labels": names, **rows}))
    return {"fit": len(rows["train"]), "val": len(rows["val"]), "labels": len(names)}


def worker_command(args: argparse.Namespace, name: str, work: Path) -> list[str]:
    options = {
        "--worker": name,
        "--workdir": work,
        "--data-dir": args.data_dir,
        "--epochs": args.tta_epochs if name in TTA else args.epochs,
        "--target-acc": args.target_acc,
        "--threads": args.threads,
        "--seed": args.seed,
        "--batch-size": args.batch_size,
        "--max-length": args.max_length,
        "--lr": args.lr,
        "--latency-requests": args.latency_requests,
        "--device": args.device,
        "--shape": args.shape,
    }
    flags = [str(part) for option in options.items() for part in option]
    if args.compile:
        flags.append("--compile")
    return [sys.executable, str(Path(__file__).resolve()), *flags]


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


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def describe_run(args: argparse.Namespace, sizes: dict[str, int]) -> Run:
    """The report's header facts: the command, the machine, the library versions."""
    model = "packaged all-MiniLM-L6-v2"
    if SHAPES[args.shape]:
        model = f"randomly initialised {args.shape} shape ({SHAPES[args.shape]})"
    device = "CPU, fp32"
    if args.device == "cuda":
        import torch

        device = f"{torch.cuda.get_device_name(0)}, bf16"
    packages = ("torch", "transformers", "pytorch-lightning", "csft")
    return Run(
        command="python scripts/benchmark.py " + shlex.join(args.argv),
        when=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        model=model + (", torch.compile" if args.compile else ""),
        device=device,
        modes=tuple(args.modes),
        train_rows=sizes["train"],
        test_rows=sizes["test"],
        labels=sizes["labels"],
        batch_size=args.batch_size,
        max_length=args.max_length,
        lr=args.lr,
        epochs=args.epochs,
        threads=args.threads,
        seed=args.seed,
        machine=f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        versions=", ".join(f"{p} {version(p)}" for p in packages)
        + f"; Python {platform.python_version()}",
        fit_rows=sizes["fit"],
        val_rows=sizes["val"],
        tta_epochs=args.tta_epochs,
        target_acc=args.target_acc,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes",
        default="full,top2,inference",
        help=f"comma-separated, of {','.join(MODES)} (tta: time to accuracy)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"default {EPOCHS}; for the tta mode the most it trains, default the default "
        f"job's {DEFAULT_JOB_EPOCHS}",
    )
    parser.add_argument(
        "--target-acc",
        type=float,
        default=0.92,
        help="tta: the validation accuracy whose first reaching is timed",
    )
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
    args.data_dir = str(Path(args.data_dir).resolve())
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown or not args.modes:
        parser.error(f"--modes: expected some of {','.join(MODES)}, got {sorted(unknown)}")
    args.tta_epochs = args.epochs or DEFAULT_JOB_EPOCHS
    args.epochs = args.epochs or EPOCHS
    if min(args.epochs, args.tta_epochs, args.threads, args.latency_requests) < 1:
        parser.error("--epochs, --threads and --latency-requests must be at least 1")
    if not 0.0 <= args.target_acc <= 1.0:
        parser.error(f"--target-acc {args.target_acc}: an accuracy, from 0 to 1")
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
        work = Path(args.workdir or tmp).resolve()  # --workdir: keep the data and export there
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
    run = describe_run(args, sizes)
    if any(mode != "tta" for mode in args.modes):
        print(report(results, run))
    if "tta" in args.modes:
        print(tta_section(results, run))
    print("\n".join(summary(results)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document(out.read_text() if out.is_file() else None, results, run))
    if args.json:  # merged: a run of some modes keeps the other contenders' numbers
        path = Path(args.json)
        earlier = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(raw_json({**earlier, **results}))
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")
    return 1 if any("failed" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
