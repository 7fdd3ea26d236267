"""The benchmark's report: result dicts in, the Markdown of docs/benchmarks.md out.

Pure functions (no timing, no imports of torch), so the tables are tested on made-up
numbers. A contender's result is a dict of numbers (see scripts/benchmark_contenders.py);
a failed one is {"failed": "exit 1"}; a missing one leaves its cells as dashes.

The full, top2 and inference modes make the file's first part (`report`); the tta mode is
a section of its own between markers (`tta_section`), which `document` splices into the
file as it is, so a run of some modes never deletes another's results.
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
    "tta": ("csft_tta", "hf_tta"),
}
TITLE = "# Benchmarks: csft vs a Hugging Face Trainer script"
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
    (
        "tta: csft_tta / hf_tta wall time to the target accuracy (lower: csft is faster)",
        "csft_tta",
        "hf_tta",
        "seconds_to_target",
    ),
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
    fit_rows: int = 0  # csft's train split: the rows every contender trains on
    val_rows: int = 0  # csft's validation split (the tta mode validates on it)
    tta_epochs: int = 5
    target_acc: float = 0.92


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


def setup_lines(results: dict[str, dict[str, Any]], names: tuple[str, ...]) -> list[str]:
    """What each training contender of `names` ran with (csft's: also its overrides)."""
    lines = []
    for name, r in results.items():
        if "optimizer" not in r or name not in names:
            continue
        gpu = f", peak GPU memory {r['peak_gpu_mib']:,.0f} MiB" if "peak_gpu_mib" in r else ""
        overrides = f"; `{' '.join(r['overrides'])}`" if r.get("overrides") else ""
        lines.append(
            f"- `{name}`: {r['trainable_params']:,} trainable parameters, {r['optimizer']}, "
            f"{r['attention']} attention, {r['threads']} thread(s){gpu}{overrides}."
        )
    return lines


def report(results: dict[str, dict[str, Any]], run: Run) -> str:
    """The file's first part: header, one table per mode run (but tta), setups, what
    differs."""
    header = [
        TITLE,
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
    classic = tuple(n for mode in ("full", "top2", "inference") for n in MODES[mode])
    setups = setup_lines(results, classic)
    if setups:
        body += ["### Setup per contender", "", *setups, ""]
    return "\n".join([*header, *body, NOTES])


# ---------------------------------------------------------------------------------------------
# time to accuracy
# ---------------------------------------------------------------------------------------------
TTA_NOTES = """\
### What differs between csft_tta and hf_tta

- The wall time counts everything after the data is tokenized and the model built: the \
call of `fit` / `train()` (optimizer set-up included), every training step and every \
validation pass up to and including the first that reaches the target (a user waits for \
those too). Samples/s = train rows x epochs trained / wall seconds of the whole `fit` / \
`train()`, validation included.
- Both validate on the same rows (csft's stratified 10 % of train.csv, seed 42) every half \
epoch: Lightning's `val_check_interval=0.5` validates after int(steps an epoch / 2) \
steps and at every multiple of it in the epoch, the Trainer's `eval_steps` is the same \
count. With an odd number of steps an epoch Lightning leaves out the validation after the \
epoch's last step, and the Trainer adds one after its very last step (Banking77's 282 \
steps: neither happens). Both stop at the first validation that reaches the target; \
validation batches of 128 (csft sorts them by length, the Trainer keeps the rows' order; \
both pad per batch).
- `csft_tta` is the default job, `python -m csft.train`, as a user runs it: [CLS] pooling, \
embeddings frozen (`freeze=embeddings`), Adam, 10 % linear warmup then linear decay, \
gradient clipping at 1.0, length-bucketed batches. The benchmark adds only its overrides \
(listed above), the stop, and no checkpoints, logger or export.
- `hf_tta` is the best Trainer script a user would write: \
`AutoModelForSequenceClassification` (BERT's [CLS] pooler + a linear head, as csft's \
default), `group_by_length` batches, AdamW with weight decay 0 (the same update), the same \
warmup steps and linear decay, `max_grad_norm=1.0`, `DataCollatorWithPadding`, nothing \
saved or logged. Every parameter trains, the embeddings too: what such a script does.
- Truncation at max length: csft cuts from the left (keeps the end of the message), the \
tokenizer's default from the right.
"""
TTA_MARKERS = ("<!-- benchmark:tta -->", "<!-- /benchmark:tta -->")


def percent(value: float) -> str:
    return f"{100 * value:g} %"


def tta_row(results: dict[str, dict[str, Any]], name: str) -> str:
    """One contender's time and epochs to the target, and its time against hf_tta's."""
    failed = _failed(results, name)
    if failed:
        return failed
    mine, base = results.get(name, {}), results.get("hf_tta", {})
    seconds = mine.get("seconds_to_target")
    if seconds is None and mine.get("best_val_acc") is not None:
        time_cell = f"not reached (best {mine['best_val_acc']:.4f})"
    else:
        time_cell = fmt(seconds)
    return _row(
        [
            name,
            time_cell,
            fmt(mine.get("epochs_to_target"), 2),
            fmt(mine.get("samples_per_s")),
            fmt(mine.get("val_seconds")),
            fmt(mine.get("peak_rss_mib"), 0),
            ratio(seconds, base.get("seconds_to_target")),
        ]
    )


def trace_line(name: str, result: dict[str, Any]) -> str:
    """`name`: epoch → val acc (wall s), one point per validation."""
    points = " · ".join(
        f"{p['epoch']:.2f}: {p['acc']:.4f} ({p['seconds']:,.0f} s)" for p in result.get("trace", [])
    )
    return f"- `{name}`: {points or 'no validation ran'}."


def tta_section(results: dict[str, dict[str, Any]], run: Run) -> str:
    """The tta mode's section, header facts included, between its markers."""
    target = percent(run.target_acc)
    names = MODES["tta"]
    lines = [
        TTA_MARKERS[0],
        "## Time to accuracy",
        "",
        f"`{run.command}` — {run.when}",
        "",
        f"Wall time until validation accuracy first reaches {target}, each contender alone "
        f"in its own process. Target: csft ≤ 0.5× the Trainer's time.",
        "",
        f"- Banking77, {run.model}; on {run.device}; {run.fit_rows} train rows and "
        f"{run.val_rows} validation rows (csft's stratified 10 % of the {run.train_rows} "
        f"train.csv rows read, the same rows for both), validated every half epoch; at most "
        f"{run.tta_epochs} epoch(s).",
        f"- batch size {run.batch_size}, max length {run.max_length}, lr {run.lr:g} "
        f"(10 % linear warmup, linear decay, grad-norm clip 1.0), {run.threads} torch "
        f"threads, seed {run.seed}.",
        f"- {run.machine}; {run.versions}.",
        "",
        f"| contender | wall s to {target} | epochs to {target} | train samples/s "
        "| validation s | peak RSS MiB | time vs hf_tta |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(tta_row(results, n) for n in names),
        "",
        "Validation accuracy at each validation (epoch: accuracy (wall s since the fit started)):",
        "",
        *(trace_line(n, results[n]) for n in names if "trace" in results.get(n, {})),
        "",
    ]
    setups = setup_lines(results, names)
    if setups:
        lines += ["### Setup per contender (time to accuracy)", "", *setups, ""]
    return "\n".join([*lines, TTA_NOTES, TTA_MARKERS[1]])


def marked_section(text: str | None) -> str | None:
    """The tta section of an earlier file, markers included (None if it has none)."""
    start, end = TTA_MARKERS
    if not text or start not in text or end not in text:
        return None
    return text[text.index(start) : text.index(end) + len(end)]


def splice(text: str, section: str) -> str:
    """`text` with its tta section replaced by `section`; without one, `section` goes
    before the first `## ` heading (the hand-written GPU and deployment parts), else last."""
    old = marked_section(text)
    if old is not None:
        return text.replace(old, section)
    heading = text.find("\n## ")
    if heading >= 0:
        return f"{text[: heading + 1]}{section}\n\n{text[heading + 1 :]}"
    return f"{text.rstrip()}\n\n{section}\n"


def document(existing: str | None, results: dict[str, dict[str, Any]], run: Run) -> str:
    """The file to write over `existing` (None: no file yet). The full, top2 and inference
    modes rewrite its first part; tta replaces only its own section; a run without tta
    keeps the earlier tta section."""
    if any(mode != "tta" for mode in run.modes):
        text = report(results, run)
    else:
        text = existing or f"{TITLE}\n"
    section = tta_section(results, run) if "tta" in run.modes else marked_section(existing)
    return splice(text, section) if section else text


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
