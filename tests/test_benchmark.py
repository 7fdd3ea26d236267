"""scripts/benchmark.py: the report's tables from made-up numbers, the csft contenders'
config (the recipe plus only the benchmark's overrides), the Trainer script's setup, the
time-to-accuracy stop through real (tiny) fits.

Timings are printed by the script, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import INTENT_FIXTURE, ROOT, compose, tiny_overrides

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark
import benchmark_contenders as contenders
import benchmark_report as report

# What a plain `python scripts/benchmark.py` runs: every mode but tta (its own, long race).
DEFAULT_CONTENDERS = [n for mode, names in report.MODES.items() if mode != "tta" for n in names]


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """Each table row as {column: cell}, keyed by its contender (first cell)."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not set(cells[0]) <= set("-: "):
            rows[cells[0].strip("`")] = dict(zip(header, cells, strict=False))
    return rows


def training(samples: float, later: float | None = None, **extra) -> dict:
    return {
        "samples_per_s": samples,
        "later_samples_per_s": later,
        "fit_seconds": 1234.5,
        "peak_rss_mib": 1710.4,
        "test_acc": 0.91954,
        **extra,
    }


def fake_run(modes=("full", "top2", "inference"), epochs=2) -> report.Run:
    return report.Run(
        command="python scripts/benchmark.py --epochs 2",
        when="2026-11-28 12:00 UTC",
        model="packaged all-MiniLM-L6-v2",
        device="CPU, fp32",
        modes=tuple(modes),
        train_rows=10003,
        test_rows=3080,
        labels=77,
        batch_size=32,
        max_length=64,
        lr=2e-4,
        epochs=epochs,
        threads=2,
        seed=42,
        machine="Linux, x86_64, 2 CPUs",
        versions="torch 2, transformers 5; Python 3.11",
    )


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
def test_full_table_has_ratios_against_both_baselines_and_formats_numbers():
    results = {"csft": training(100.0), "hf": training(40.0), "hf_grouped": training(200.0)}
    rows = table_rows("\n".join(report.markdown_tables(results, ("full",), 2)))
    assert list(rows) == ["csft", "hf", "hf_grouped"]
    csft = rows["csft"]
    assert csft["samples/s vs hf"] == "2.50×"
    assert csft["samples/s vs hf_grouped"] == "0.50×"
    assert rows["hf"]["samples/s vs hf"] == "1.00×"
    assert (csft["train samples/s"], csft["fit wall s"]) == ("100.0", "1,234.5")
    assert (csft["peak RSS MiB"], csft["test acc"]) == ("1,710", "0.9195")


def test_missing_or_failed_contenders_leave_dashes_not_errors():
    results = {"csft": training(100.0), "hf": {"name": "hf", "failed": "exit 1"}}
    markdown = "\n".join(report.markdown_tables(results, ("full",), 2))
    assert "| hf | failed (exit 1) |" in markdown
    rows = table_rows(markdown)
    assert rows["csft"]["samples/s vs hf"] == "—"  # the baseline failed
    assert rows["csft"]["samples/s vs hf_grouped"] == "—"  # the baseline never ran
    assert rows["hf_grouped"]["train samples/s"] == "—"
    assert rows["hf_grouped"]["test acc"] == "—"


def test_top2_table_compares_later_epochs_and_says_when_there_are_none():
    results = {
        "csft_top2_cache": training(236.0, later=304.8),
        "hf_top2": training(70.2, later=70.4),
    }
    rows = table_rows("\n".join(report.markdown_tables(results, ("top2",), 2)))
    assert rows["csft_top2_cache"]["samples/s epochs ≥ 2"] == "304.8"
    assert rows["csft_top2_cache"]["epochs ≥ 2 vs hf_top2"] == "4.33×"
    assert rows["csft_top2_cache"]["samples/s vs hf_top2"] == "3.36×"
    assert rows["csft_top2"]["samples/s vs hf_top2"] == "—"
    one_epoch = report.markdown_tables({"hf_top2": training(70.2)}, ("top2",), 1)
    assert "(epochs ≥ 2: run with --epochs 2 or more.)" in one_epoch
    assert "### Top 2 layers + head train (1 epoch)" in one_epoch
    assert "(epochs ≥ 2: run with --epochs 2 or more.)" not in report.markdown_tables(
        results, ("top2",), 2
    )


def test_inference_table_speed_up_is_lower_latency():
    results = {
        "csft_predict": {"rows_per_s": 235.0, "latency_p50_ms": 10.0, "latency_p95_ms": 12.345},
        "pipeline": {"rows_per_s": 117.5, "latency_p50_ms": 25.0, "latency_p95_ms": 30.0},
    }
    rows = table_rows("\n".join(report.markdown_tables(results, ("inference",), 2)))
    assert rows["csft_predict"]["rows/s vs pipeline"] == "2.00×"
    assert rows["csft_predict"]["p50 speed-up vs pipeline"] == "2.50×"
    assert rows["csft_predict"]["p95 ms"] == "12.35"
    assert rows["pipeline"]["p50 speed-up vs pipeline"] == "1.00×"


def test_report_has_the_modes_run_the_setups_and_the_header():
    results = {
        "csft": training(
            100.0,
            trainable_params=22595021,
            optimizer="Adam(fused=True)",
            attention="sdpa",
            threads=2,
            overrides=["experiment=banking77", "freeze=none"],
        ),
        "hf": training(
            40.0, trainable_params=22742861, optimizer="AdamW", attention="sdpa", threads=2
        ),
        "csft_predict": {"rows_per_s": 235.0},
    }
    text = report.report(results, fake_run(modes=("full",)))
    assert text.startswith("# Benchmarks: csft vs a Hugging Face Trainer script\n")
    assert "`python scripts/benchmark.py --epochs 2` — 2026-11-28 12:00 UTC" in text
    assert "10003 train rows read" in text and "77 labels" in text
    assert "### Full fine-tuning (2 epochs)" in text
    assert "### Top 2" not in text and "### Inference" not in text
    assert (
        "- `csft`: 22,595,021 trainable parameters, Adam(fused=True), sdpa attention, "
        "2 thread(s); `experiment=banking77 freeze=none`." in text
    )
    assert "- `hf`: 22,742,861 trainable parameters, AdamW, sdpa attention, 2 thread(s)." in text
    assert "### What differs between csft and the Trainer script" in text


def test_summary_names_only_ratios_whose_both_sides_ran():
    results = {"csft": training(100.0), "hf": training(40.0)}
    assert report.summary(results) == ["full: csft / hf train samples/s: 2.50×"]
    assert report.summary({}) == []


def tta(seconds: float | None, epochs: float | None, best: float = 0.93, **extra) -> dict:
    trace = [{"seconds": 60.0, "epoch": 0.5, "acc": 0.85, "val_seconds": 4.0}]
    trace += [
        {"seconds": seconds or 120.0, "epoch": epochs or 1.0, "acc": best, "val_seconds": 4.0}
    ]
    return {
        "seconds_to_target": seconds,
        "epochs_to_target": epochs,
        "best_val_acc": best,
        "trace": trace,
        "samples_per_s": 95.25,
        "val_seconds": 8.0,
        "peak_rss_mib": 1500.0,
        **extra,
    }


def test_tta_section_has_times_epochs_ratio_traces_and_says_when_the_target_was_missed():
    results = {
        "csft_tta": tta(
            120.0,
            1.0,
            trainable_params=22,
            optimizer="Adam",
            attention="sdpa",
            threads=2,
            overrides=["trainer.val_check_interval=0.5"],
        ),
        "hf_tta": tta(300.0, 2.5),
    }
    text = report.tta_section(results, fake_run(modes=("tta",)))
    assert text.startswith(report.TTA_MARKERS[0]) and text.endswith(report.TTA_MARKERS[1])
    rows = table_rows(text)
    assert rows["csft_tta"]["wall s to 92 %"] == "120.0"
    assert rows["csft_tta"]["epochs to 92 %"] == "1.00"
    assert rows["csft_tta"]["time vs hf_tta"] == "0.40×"
    assert rows["hf_tta"]["time vs hf_tta"] == "1.00×"
    assert (rows["hf_tta"]["train samples/s"], rows["hf_tta"]["validation s"]) == ("95.2", "8.0")
    assert "- `csft_tta`: 0.50: 0.8500 (60 s) · 1.00: 0.9300 (120 s)." in text
    assert "`trainer.val_check_interval=0.5`" in text  # the setup line
    assert report.summary(results)[-1].endswith(": 0.40×")
    missed = {"csft_tta": results["csft_tta"], "hf_tta": tta(None, None, best=0.9012)}
    rows = table_rows(report.tta_section(missed, fake_run(modes=("tta",))))
    assert rows["hf_tta"]["wall s to 92 %"] == "not reached (best 0.9012)"
    assert rows["hf_tta"]["epochs to 92 %"] == "—"
    assert rows["csft_tta"]["time vs hf_tta"] == "—"


def test_a_tta_run_keeps_the_other_modes_results_and_they_keep_its_section():
    written = report.report({"csft": training(100.0)}, fake_run(modes=("full",)))
    earlier = f"{written}\n## GPU check\n\nhand-written\n"
    tta_run = fake_run(modes=("tta",))
    text = report.document(earlier, {"csft_tta": tta(120.0, 1.0)}, tta_run)
    section = report.marked_section(text)
    assert section is not None and "## Time to accuracy" in section
    assert text.replace(section + "\n\n", "") == earlier  # everything else as it was
    assert text.index(section) < text.index("## GPU check")
    again = report.document(text, {"csft_tta": tta(90.0, 1.0)}, tta_run)
    assert again.count(report.TTA_MARKERS[0]) == 1 and "| csft_tta | 90.0 |" in again
    assert again.replace(report.marked_section(again), "") == text.replace(section, "")
    full_again = report.document(again, {"csft": training(50.0)}, fake_run(modes=("full",)))
    assert report.marked_section(full_again) == report.marked_section(again)
    assert "| csft | 50.0 |" in full_again
    fresh = report.document(None, {}, tta_run)
    assert fresh.startswith(report.TITLE) and report.marked_section(fresh)


# ---------------------------------------------------------------------------------------------
# the csft contenders: the recipe, composed
# ---------------------------------------------------------------------------------------------
def flat(cfg) -> dict[str, object]:
    """Every leaf of a config as {dotted key: value}, interpolations unresolved."""
    from omegaconf import OmegaConf

    leaves: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            leaves[prefix.rstrip(".")] = node

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return leaves


def bench_args(tmp_path, *argv: str):
    return benchmark.parse_args(["--workdir", str(tmp_path), *argv])


def test_csft_contender_is_the_recipe_with_only_the_benchmarks_overrides(tmp_path):
    args = bench_args(tmp_path, "--lr", "1e-4", "--epochs", "2", "--max-length", "48")
    cfg = contenders.csft_config(args, "csft", tmp_path / "out")
    recipe = compose(["experiment=banking77"])
    # The optimizer and schedule are the recipe's; only the learning rate is the benchmark's.
    assert {**flat(cfg.optim), "lr": None} == {**flat(recipe.optim), "lr": None}
    assert cfg.optim.optimizer._target_ == recipe.optim.optimizer._target_
    assert cfg.optim.scheduler._target_ == recipe.optim.scheduler._target_
    assert cfg.optim.scheduler.warmup_ratio == contenders.WARMUP
    assert (cfg.optim.lr, cfg.trainer.max_epochs, cfg.data.max_length) == (1e-4, 2, 48)
    assert flat(cfg.model) == flat(recipe.model) and cfg.freeze.name == "none"
    # Nothing else differs from the recipe but what runs it on the benchmark's rows, quietly.
    allowed = [
        "optim.lr",
        "trainer.max_epochs",
        "data.max_length",
        "freeze",
        "threads",
        "paths",
        "data.train_file",
        "data.test_file",
        "trainer.limit_val_batches",
        "trainer.enable_checkpointing",
        "export",
        "logger",
        "trainer.enable_progress_bar",
        "callbacks.model_checkpoint",
        "callbacks.last_checkpoint",
        "callbacks.lr_monitor",
    ]
    mine, theirs = flat(cfg), flat(recipe)
    differing = {k for k in mine.keys() | theirs.keys() if mine.get(k, "∅") != theirs.get(k, "∅")}
    unexplained = {
        k for k in differing if not any(k == a or k.startswith(f"{a}.") for a in allowed)
    }
    assert not unexplained, sorted(unexplained)
    assert {"optim.lr", "trainer.max_epochs", "data.max_length", "freeze.name"} <= differing


def test_top2_cache_gpu_and_bert_base_contender_overrides(tmp_path):
    args = bench_args(tmp_path, "--shape", "bert-base", "--compile")
    args.device = "cuda"  # parse_args would look for a GPU; composing needs none
    cfg = contenders.csft_config(args, "csft_top2_cache", tmp_path / "out")
    assert (cfg.freeze.name, cfg.freeze.trainable_layers) == ("top2", contenders.TOP_LAYERS)
    assert cfg.model.cache_frozen and cfg.model.compile and cfg.model.random_init
    assert dict(cfg.model.config_overrides) == contenders.SHAPES["bert-base"]
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    plain = contenders.csft_config(bench_args(tmp_path), "csft_top2", tmp_path / "out")
    assert not plain.model.cache_frozen and not plain.model.random_init
    assert plain.trainer.precision == compose(["experiment=banking77"]).trainer.precision


def test_csft_tta_contender_is_the_default_job_with_only_the_benchmarks_overrides(tmp_path):
    cfg = contenders.csft_config(bench_args(tmp_path), "csft_tta", tmp_path / "out")
    job = compose([])  # `python -m csft.train`: no recipe
    assert (cfg.trainer.val_check_interval, cfg.trainer.max_epochs) == (0.5, 5)
    assert cfg.trainer.limit_val_batches is None  # it validates
    assert (cfg.model.pooling, cfg.freeze.name) == ("cls", "embeddings")
    allowed = [
        "trainer.val_check_interval",
        "threads",
        "paths",
        "data.train_file",
        "data.test_file",
        "trainer.enable_checkpointing",
        "export",
        "logger",
        "trainer.enable_progress_bar",
        "callbacks.model_checkpoint",
        "callbacks.last_checkpoint",
        "callbacks.lr_monitor",
    ]
    mine, theirs = flat(cfg), flat(job)
    differing = {k for k in mine.keys() | theirs.keys() if mine.get(k, "∅") != theirs.get(k, "∅")}
    unexplained = {
        k for k in differing if not any(k == a or k.startswith(f"{a}.") for a in allowed)
    }
    assert not unexplained, sorted(unexplained)


def test_tta_epochs_default_to_the_default_jobs_and_reach_the_workers(tmp_path):
    args = bench_args(tmp_path, "--modes", "full,tta", "--target-acc", "0.5")
    assert (args.epochs, args.tta_epochs) == (3, contenders.DEFAULT_JOB_EPOCHS)
    assert compose([]).trainer.max_epochs == contenders.DEFAULT_JOB_EPOCHS
    worker = benchmark.parse_args(benchmark.worker_command(args, "hf_tta", tmp_path)[2:])
    assert (worker.epochs, worker.target_acc) == (contenders.DEFAULT_JOB_EPOCHS, 0.5)
    assert benchmark.parse_args(benchmark.worker_command(args, "hf", tmp_path)[2:]).epochs == 3
    both = bench_args(tmp_path, "--epochs", "2")
    assert (both.epochs, both.tta_epochs) == (2, 2)
    with pytest.raises(SystemExit):
        bench_args(tmp_path, "--target-acc", "92")


def test_options_reach_every_worker(tmp_path):
    args = benchmark.parse_args(["--shape", "bert-base", "--compile", "--epochs", "2"])
    command = benchmark.worker_command(args, "hf", tmp_path)
    worker = benchmark.parse_args(command[2:])
    assert (worker.worker, worker.shape, worker.compile, worker.epochs, worker.device) == (
        "hf",
        "bert-base",
        True,
        2,
        "cpu",
    )
    assert (worker.workdir, worker.data_dir) == (str(tmp_path), args.data_dir)


def test_a_small_train_sample_keeps_every_label():
    import pandas as pd

    frame = pd.DataFrame(
        {"text": [f"t{i}" for i in range(40)], "category": [f"c{i % 5}" for i in range(40)]}
    )
    sample = benchmark.sample_train(frame, 6, seed=1)
    assert len(sample) == 6 and sample["category"].nunique() == 5
    assert sample.equals(benchmark.sample_train(frame, 6, seed=1))
    with pytest.raises(SystemExit, match="< the 5 labels"):
        benchmark.sample_train(frame, 4, seed=1)


def test_one_epoch_timer_serves_lightning_and_the_trainer():
    import pytorch_lightning as pl
    from transformers import TrainerCallback

    lightning, hf = contenders.epoch_timer(pl.Callback), contenders.epoch_timer(TrainerCallback)
    assert isinstance(lightning, pl.Callback) and isinstance(hf, TrainerCallback)
    for _ in range(2):
        lightning.on_train_epoch_start(None, None)
        lightning.on_train_epoch_end(None, None)
        hf.on_epoch_begin(None, None, None, model=None)
        hf.on_epoch_end(None, None, None, model=None)
    assert len(lightning.seconds) == len(hf.seconds) == 2
    assert contenders.later_epochs_rate(100, [5.0, 2.0, 2.0]) == 50.0
    assert contenders.later_epochs_rate(100, [5.0]) is None


# ---------------------------------------------------------------------------------------------
# time to accuracy: the stop, through real fits of tiny models
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [0.0, 1.01])  # reached at once; never
def test_csft_fit_stops_at_the_first_validation_that_reaches_the_target(tmp_path, target):
    import pytorch_lightning as pl

    from csft.train import build

    overrides = [*INTENT_FIXTURE, "data.batch_size=4", "trainer.max_epochs=2", "logger=none"]
    overrides += ["trainer.val_check_interval=0.5", *contenders.QUIET]
    datamodule, model, trainer = build(compose(tiny_overrides(tmp_path, *overrides)))
    clock = contenders.time_to_accuracy(pl.Callback, target)
    trainer.callbacks.append(clock)
    clock.start()
    trainer.fit(model, datamodule=datamodule)
    rows = len(datamodule.rows["train"])  # 18: 5 batches, validated after 2 and 4
    assert trainer.val_check_batch == contenders.half_epoch_steps(rows, 4) == 2
    epochs = [round(p["epoch"], 2) for p in clock.trace]
    if target == 0.0:
        assert epochs == [0.4] and trainer.global_step == 2
        assert clock.reached == clock.trace[0]
    else:
        assert epochs == [0.4, 0.8, 1.4, 1.8] and trainer.global_step == 10
        assert clock.reached is None
    seconds = [p["seconds"] for p in clock.trace]
    assert seconds == sorted(seconds) and all(
        0 < p["val_seconds"] < p["seconds"] for p in clock.trace
    )
    result = contenders.tta_result(rows, 6, trainer.global_step / 5, 1.0, clock)
    assert result["best_val_acc"] == max(p["acc"] for p in clock.trace)
    assert result["seconds_to_target"] == (clock.trace[0]["seconds"] if target == 0.0 else None)


@pytest.mark.parametrize("target", [0.0, 1.01])
def test_trainer_stops_at_the_first_evaluation_that_reaches_the_target(
    tmp_path, tiny_bert_dir, tokenizer, target
):
    pytest.importorskip("accelerate", reason="the Hugging Face Trainer needs accelerate")
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
    )

    texts = [f"message number {i} about {'cards' if i % 2 else 'transfers'}" for i in range(20)]
    rows = [{**tokenizer(t), "labels": i % 2} for i, t in enumerate(texts)]
    args = bench_args(tmp_path, "--batch-size", "4", "--epochs", "2", "--threads", "1")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    clock = contenders.time_to_accuracy(TrainerCallback, target)
    steps = contenders.half_epoch_steps(16, 4)  # 4 batches an epoch: every 2 steps
    trainer = Trainer(
        model=model,
        args=contenders.hf_training_args(
            args, str(tmp_path), 16, grouped=True, eval_strategy="steps", eval_steps=steps
        ),
        train_dataset=rows[:16],
        eval_dataset=rows[16:],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: {
            "accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())
        },
        callbacks=[clock],
    )
    clock.start()
    trainer.train()
    epochs = [p["epoch"] for p in clock.trace]
    if target == 0.0:
        assert epochs == [0.5] and trainer.state.global_step == 2
        assert clock.reached == clock.trace[0]
    else:
        assert epochs == [0.5, 1.0, 1.5, 2.0] and trainer.state.global_step == 8
        assert clock.reached is None


# ---------------------------------------------------------------------------------------------
# the Trainer script
# ---------------------------------------------------------------------------------------------
def test_trainer_warmup_is_an_int_ten_percent_of_the_steps_like_csft():
    assert compose(["experiment=banking77"]).optim.scheduler.warmup_ratio == contenders.WARMUP
    # 9,003 rows / 32 = 282 steps an epoch, 2 epochs: 56.4 → 56 (csft: round(0.1 * 564))
    assert contenders.warmup_steps(9003, 32, 2) == 56
    assert contenders.warmup_steps(232, 32, 2) == 2  # 16 steps: 1.6 → 2
    assert contenders.warmup_steps(10, 32, 1) == 1  # never 0: csft warms up at least 1 step
    assert isinstance(contenders.warmup_steps(9003, 32, 2), int)


def test_trainer_model_trains_fp32_weights_from_a_half_precision_checkpoint(
    tmp_path, tiny_bert_dir
):
    """The GPU kit stores MiniLM in fp16; transformers 5 would keep it fp16 (dtype="auto"),
    and Adam on fp16 weights diverges: chance accuracy on the H200."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertModel

    half = tmp_path / "half"
    BertModel.from_pretrained(tiny_bert_dir).half().save_pretrained(half)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(half)
    labels = {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}}
    as_stored = AutoModelForSequenceClassification.from_pretrained(half, **labels)
    assert as_stored.dtype == torch.float16  # what the Trainer script got before
    model = contenders.hf_model(str(half), "minilm", labels, top2=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    layers = model.base_model.encoder.layer
    trains = [any(p.requires_grad for p in layer.parameters()) for layer in layers]
    assert trains == [False] * (len(layers) - contenders.TOP_LAYERS) + [True] * 2
    assert not any(p.requires_grad for p in model.base_model.embeddings.parameters())


def test_the_bert_base_shape_is_a_random_bert_base(minilm_dir):
    labels = {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}}
    with torch.device("meta"):  # shapes without allocating (or initialising) 110M weights
        model = contenders.hf_model(minilm_dir, "bert-base", labels, top2=False)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (
        12,
        768,
        3072,
    )
    assert 105e6 < sum(p.numel() for p in model.base_model.parameters()) < 112e6  # 110M


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # 9 subprocesses that each import torch: minutes on 2 cores
def test_benchmark_runs_every_contender_and_writes_the_table(tmp_path, data_dir):
    pytest.importorskip("accelerate", reason="the Hugging Face Trainer needs accelerate")
    out = tmp_path / "bench.md"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark.py"),
        *("--train-rows", "96", "--test-rows", "64", "--epochs", "1"),
        *("--latency-requests", "5", "--threads", "1", "--out", str(out)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    markdown = out.read_text()
    assert markdown.strip() in done.stdout
    rows = table_rows(markdown)
    assert set(DEFAULT_CONTENDERS) <= rows.keys(), sorted(rows)
    for name in DEFAULT_CONTENDERS:  # accuracy over the 64 sampled test rows: a multiple of 1/64
        if rows[name]["test acc"] != "—":
            assert float(rows[name]["test acc"]) * 64 == pytest.approx(
                round(float(rows[name]["test acc"]) * 64), abs=0.01
            ), name
    assert rows["hf"]["samples/s vs hf"] == "1.00×"
    assert rows["csft"]["samples/s vs hf"].endswith("×")
    assert "`experiment=banking77 seed=42" in markdown


@pytest.mark.slow  # 2 workers with the real MiniLM: about a minute on 2 busy cores
def test_tta_mode_end_to_end_stops_both_at_the_first_half_epoch_validation(tmp_path, data_dir):
    """Both tta contenders on 96 rows with a target of 0: each stops at its first
    validation (3 batches an epoch: after 1), and the other modes' results in --out and
    --json stay."""
    pytest.importorskip("accelerate", reason="the Hugging Face Trainer needs accelerate")
    out, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    out.write_text("# Benchmarks\n\nearlier tables\n\n## Deployment\n\nhand-written\n")
    raw.write_text(json.dumps({"csft": {"samples_per_s": 103.9}}))
    command = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark.py"),
        *("--modes", "tta", "--train-rows", "96", "--test-rows", "16", "--target-acc", "0"),
        *("--threads", "1", "--out", str(out), "--json", str(raw)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    markdown, results = out.read_text(), json.loads(raw.read_text())
    assert markdown.startswith("# Benchmarks\n\nearlier tables\n\n<!-- benchmark:tta -->")
    assert markdown.endswith("## Deployment\n\nhand-written\n")
    assert results["csft"] == {"samples_per_s": 103.9}
    rows = table_rows(markdown)
    for name in report.MODES["tta"]:
        result = results[name]
        assert len(result["trace"]) == 1, name  # stopped at the first validation
        first = result["trace"][0]
        assert result["seconds_to_target"] == first["seconds"] > 0
        assert result["epochs_to_target"] == first["epoch"] <= 0.5
        assert result["train_rows"] + result["val_rows"] == 96
        assert float(rows[name]["wall s to 0 %"]) > 0
    for key in ("epochs_to_target", "train_rows", "val_rows"):
        assert results["csft_tta"][key] == results["hf_tta"][key], key
    assert rows["hf_tta"]["time vs hf_tta"] == "1.00×"
    assert "`seed=42 trainer.max_epochs=5" in markdown


@pytest.mark.slow  # the real MiniLM, fitted on 80 Banking77 rows
def test_csft_contender_fits_the_recipe_in_process(tmp_path, data_dir):
    """compose → csft.train.build → fit → test on a tiny slice, as a worker runs it."""
    args = bench_args(tmp_path, "--train-rows", "80", "--test-rows", "16", "--epochs", "1")
    args.workdir = str(tmp_path)
    benchmark.prepare_data(args, tmp_path)
    result = contenders.run_csft(args, "csft_top2")
    # Every label once and 3 more rows; csft validates on 1 row of each label with 2 or more.
    assert result["train_rows"] == len(contenders.read_split(tmp_path)["train"]) in range(77, 80)
    assert result["test_rows"] == 16 and len(result["epoch_seconds"]) == 1
    correct = result["test_acc"] * 16  # accuracy over the 16 test rows: k / 16
    assert correct == pytest.approx(round(correct), abs=1e-6)
    assert "freeze=top2" in result["overrides"]
    assert result["optimizer"].startswith("Adam(")


@pytest.mark.slow
def test_serving_benchmark_runs_every_backend_and_the_server_end_to_end(tmp_path, tokenizer):
    """scripts/benchmark_serving.py on a tiny export and 24 Banking77 rows: every backend's
    predictions agree with torch's in fp32, and the HTTP numbers come from a real server."""
    import json

    from conftest import tiny_classifier

    from csft.data.encoding import Encoding
    from csft.export import export_model

    torch.manual_seed(0)
    model = tiny_classifier(3, id2label={0: "card_arrival", 1: "lost_or_stolen_card", 2: "top_up"})
    export_model(model.eval(), tokenizer, Encoding(max_length=32), tmp_path / "model")
    out = tmp_path / "serving.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "benchmark_serving.py"),
            f"--model-dir={tmp_path / 'model'}",
            "--rows=24",
            "--requests=5",
            "--threads=1",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["batch"]) == {"torch", "onnx", "onnx-int8", "pipeline"}
    assert results["batch"]["onnx"]["agreement"] == 1.0
    assert results["batch"]["pipeline"]["agreement"] == 1.0
    assert set(results["http"]) == {"torch", "onnx", "onnx-int8"}
    assert all(row["c16_texts_per_s"] > 0 for row in results["http"].values())
    assert "| onnx-int8 |" in done.stdout
