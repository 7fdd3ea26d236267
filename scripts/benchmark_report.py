"""The benchmark's report: result dicts in, the Markdown of docs/benchmarks.md out.

Pure functions (no timing, no imports of torch), so the tables are tested on made-up
numbers. A contender's result is a dict of numbers (see scripts/benchmark_contenders.py);
a failed one is {"failed": "exit 1"}; a missing one leaves its cells as dashes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Contenders per mode, in table order; the last ones of a mode are its baselines.
MODES: dict[str, tuple[str, ...]] = {
    "full": ("csft", "hf", "hf_grouped"),
    "top2": ("csft_top2", "csft_top2_cache", "hf_top2"),
    "inference": ("csft_predict", "pipeline"),
}
# The ratios printed after the tables: (label, contender, baseline, result key).
SUMMARY = (
    ("full: csft / hf train samples/s", "csft", "hf", "samples_per_s"),
    ("full: csft / hf_grouped train samples/s", "csft", "hf_grouped", "samples_per_s"),
    ("top2: csft_top2 / hf_top2 train samples/s", "csft_top2", "hf_top2", "samples_per_s"),
    ("top2: csft_top2_cache / hf_top2", "csft_top2_cache", "hf_top2", "samples_per_s"),
    (
        "top2: csft_top2_cache / hf_top2, epochs ≥ 2",
        "csft_top2_cache",
        "hf_top2",
        "later_samples_per_s",
    ),
    ("inference: csft_predict / pipeline rows/s", "csft_predict", "pipeline", "rows_per_s"),
)
NOTES = """\
### What differs between csft and the Trainer script

- csft runs the user's recipe, `python -m csft.train experiment=banking77`, with the \
overrides listed per contender above, and without validation, checkpoints, logging or \
export (`trainer.limit_val_batches=0`, `logger=none`, the checkpoint and lr-monitor \
callbacks off, `export=false`): the Trainer script runs none of them either.
- Pooling: csft's head mean-pools the tokens (how all-MiniLM-L6-v2 was trained); \
`AutoModelForSequenceClassification` uses BERT's [CLS] pooler (dense + tanh, trained too). \
Same encoder, so similar cost; accuracy differences partly come from this.
- Batch order: csft sorts pools of 50 batches by length (shuffled batches); `hf` is random, \
`hf_grouped` is `LengthGroupedSampler` (megabatches of min(rows / 128, 50) batches, so \
below 256 train rows it groups nothing).
- Optimizer: csft Adam(fused); the Trainer AdamW(fused) with weight decay 0 (the same \
update), fp32 weights for both. Warmup: the same number of steps in both (10 % of all, \
rounded; csft starts at lr / warmup steps, the Trainer at 0).
- top2: csft keeps the frozen embeddings and layers in eval mode (no dropout); the Trainer \
script only sets requires_grad=False, so dropout still runs there, and it also trains the \
[CLS] pooler.
- Truncation at max length: csft cuts from the left (keeps the end of the message), the \
tokenizer's default from the right (30 of 10,003 train and 5 of 3,080 test rows are longer \
than 64 tokens).
- Inference: both load the same exported folder with the same model class; csft tokenizes \
the split once, sorts by length and pads per batch; the pipeline batches in input order. \
Single-request latency is one text per call for both.
"""


@dataclass(frozen=True)
class Run:
    """What the header says about the run (the parent collects it; tests make it up)."""

    command: str
    when: str
    model: str  # e.g. "packaged all-MiniLM-L6-v2"
    device: str  # e.g. "CPU, fp32"
    modes: tuple[str, ...]
    train_rows: int
    test_rows: int
    labels: int
    batch_size: int
    max_length: int
    lr: float
    epochs: int
    threads: int
    seed: int
    machine: str
    versions: str


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(value: float | None, baseline: float | None) -> str:
    """value / baseline as '1.23×'; a dash when either is missing (or zero)."""
    if not value or not baseline:
        return "—"
    return f"{value / baseline:.2f}×"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _failed(results: dict[str, dict[str, Any]], name: str) -> str | None:
    if "failed" in results.get(name, {}):
        return f"| {name} | failed ({results[name]['failed']}) |"
    return None


def training_row(
    results: dict[str, dict[str, Any]], name: str, baselines: tuple[str, ...], later: bool
) -> str:
    """One contender's training numbers and its samples/s against each baseline."""
    failed = _failed(results, name)
    if failed:
        return failed
    mine, keys = results.get(name, {}), ["samples_per_s", *(["later_samples_per_s"] * later)]
    cells = [
        name,
        fmt(mine.get("samples_per_s")),
        *([fmt(mine.get("later_samples_per_s"))] if later else []),
        fmt(mine.get("fit_seconds")),
        fmt(mine.get("peak_rss_mib"), 0),
        fmt(mine.get("test_acc"), 4),
    ]
    for baseline in baselines:
        theirs = results.get(baseline, {})
        cells += [ratio(mine.get(key), theirs.get(key)) for key in keys]
    return _row(cells)


def inference_row(results: dict[str, dict[str, Any]], name: str) -> str:
    failed = _failed(results, name)
    if failed:
        return failed
    mine, base = results.get(name, {}), results.get("pipeline", {})
    return _row(
        [
            name,
            fmt(mine.get("rows_per_s")),
            fmt(mine.get("latency_p50_ms"), 2),
            fmt(mine.get("latency_p95_ms"), 2),
            fmt(mine.get("peak_rss_mib"), 0),
            fmt(mine.get("test_acc"), 4),
            ratio(mine.get("rows_per_s"), base.get("rows_per_s")),
            ratio(base.get("latency_p50_ms"), mine.get("latency_p50_ms")),  # lower is faster
        ]
    )


def markdown_tables(
    results: dict[str, dict[str, Any]], modes: tuple[str, ...], epochs: int
) -> list[str]:
    """One table per mode run, every contender of the mode in it (dashes where missing)."""
    lines: list[str] = []
    span = f"{epochs} epoch" + ("s" if epochs != 1 else "")
    if "full" in modes:
        lines += [
            f"### Full fine-tuning ({span})",
            "",
            "| contender | train samples/s | fit wall s | peak RSS MiB | test acc "
            "| samples/s vs hf | samples/s vs hf_grouped |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(training_row(results, n, ("hf", "hf_grouped"), False) for n in MODES["full"]),
            "",
        ]
    if "top2" in modes:
        lines += [
            f"### Top 2 layers + head train ({span})",
            "",
            "| contender | train samples/s | samples/s epochs ≥ 2 | fit wall s | peak RSS MiB "
            "| test acc | samples/s vs hf_top2 | epochs ≥ 2 vs hf_top2 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(training_row(results, n, ("hf_top2",), True) for n in MODES["top2"]),
            "",
        ]
        if epochs < 2:
            lines += ["(epochs ≥ 2: run with --epochs 2 or more.)", ""]
    if "inference" in modes:
        lines += [
            "### Inference (untrained 77-way head; same exported model)",
            "",
            "| contender | rows/s | p50 ms | p95 ms | peak RSS MiB | test acc "
            "| rows/s vs pipeline | p50 speed-up vs pipeline |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *(inference_row(results, n) for n in MODES["inference"]),
            "",
        ]
    return lines


def setup_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """What each training contender ran with (csft's: also its overrides of the recipe)."""
    lines = []
    for name, r in results.items():
        if "optimizer" not in r:
            continue
        gpu = f", peak GPU memory {r['peak_gpu_mib']:,.0f} MiB" if "peak_gpu_mib" in r else ""
        overrides = f"; `{' '.join(r['overrides'])}`" if r.get("overrides") else ""
        lines.append(
            f"- `{name}`: {r['trainable_params']:,} trainable parameters, {r['optimizer']}, "
            f"{r['attention']} attention, {r['threads']} thread(s){gpu}{overrides}."
        )
    return lines


def report(results: dict[str, dict[str, Any]], run: Run) -> str:
    """The whole Markdown file: header, one table per mode, setups, what differs."""
    header = [
        "# Benchmarks: csft vs a Hugging Face Trainer script",
        "",
        f"`{run.command}` — {run.when}",
        "",
        f"- Banking77, {run.model}; on {run.device}; {run.train_rows} train rows read, csft "
        f"holds out 10 % for validation and every contender trains on the same remaining "
        f"rows; {run.test_rows} test rows; {run.labels} labels.",
        f"- batch size {run.batch_size}, max length {run.max_length}, lr {run.lr:g} "
        f"(10 % linear warmup, linear decay, grad-norm clip 1.0), {run.epochs} epoch(s), "
        f"{run.threads} torch threads, seed {run.seed}.",
        f"- {run.machine}; {run.versions}.",
        "- Samples/s = train rows x epochs / wall seconds of `fit` / `train()`. Ratios > 1: "
        "csft is faster. Peak RSS is each contender's own process. Timings depend on the "
        "machine and its load.",
        "",
    ]
    body = markdown_tables(results, run.modes, run.epochs)
    setups = setup_lines(results)
    if setups:
        body += ["### Setup per contender", "", *setups, ""]
    return "\n".join([*header, *body, NOTES])


def summary(results: dict[str, dict[str, Any]]) -> list[str]:
    """The headline ratios, one line each, for those both sides of which ran."""
    lines = []
    for label, name, baseline, key in SUMMARY:
        value, base = results.get(name, {}).get(key), results.get(baseline, {}).get(key)
        if value and base:
            lines.append(f"{label}: {value / base:.2f}×")
    return lines


def raw_json(results: dict[str, dict[str, Any]]) -> str:
    """Every contender's raw numbers (docs/benchmarks.json)."""
    return json.dumps(results, indent=2)
