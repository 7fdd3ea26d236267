"""The packaged pretrained MiniLM on real Banking77 rows: it must learn (slow: minutes on CPU)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, compose

from csft.train import train

pytestmark = pytest.mark.slow


def test_minilm_learns_banking77_intents(tmp_path, data_dir):
    """20 intents, 30 training rows each, 3 epochs: far above the 5 % of chance on held-out rows."""
    train_rows = pd.read_csv(data_dir / "banking77" / "train.csv")
    test_rows = pd.read_csv(data_dir / "banking77" / "test.csv")
    intents = sorted(train_rows.category.unique())[::4][:20]
    sample = train_rows[train_rows.category.isin(intents)].groupby("category").head(30)
    held_out = test_rows[test_rows.category.isin(intents)].groupby("category").head(10)
    sample.to_csv(tmp_path / "train.csv", index=False)
    held_out.to_csv(tmp_path / "test.csv", index=False)
    cfg = compose(
        [
            "data=csv",
            f"data.train_file={tmp_path / 'train.csv'}",
            f"data.test_file={tmp_path / 'test.csv'}",
            "data.label_column=category",
            "data.val_fraction=0.1",
            "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false",
            "optim.lr=1e-4",
            "optim.head_lr=2e-3",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    results = train(cfg)
    assert results["test/acc"] > 0.6, results
    assert results["test/f1_macro"] > 0.5, results


def test_cli_default_job_leaves_a_complete_run_dir(tmp_path, data_dir):
    """`python -m csft.train` (defaults, a slice of the data) through the real CLI."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "csft.train",
        "debug=limit",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test/acc" in done.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # A numeric val/acc for each of the 2 epochs, then the best checkpoint's (after fit).
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        val_acc = [
            (r["epoch"], float(r["val/acc"])) for r in csv.DictReader(handle) if r["val/acc"]
        ]
    assert [epoch for epoch, _ in val_acc] == ["0", "1", "2"], val_acc
    assert val_acc[-1][1] == pytest.approx(metrics["val/acc"], abs=1e-6)
    assert metrics["epochs"] == 2
    # 2 × 5 % of an epoch already lifts MiniLM far above chance (1/77): measured 0.29 on the
    # Trainer's 10 % of test batches and 0.35 for the exported model on the whole test split.
    chance = 1 / 77
    assert metrics["test/acc"] > 10 * chance, metrics
    evaluated = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert evaluated["rows"] == 3080  # report=true scores the export on all of Banking77 test
    assert evaluated["test/acc"] > 10 * chance, evaluated
    assert metrics["trainable_params"] < metrics["total_params"]  # freeze=embeddings
    exported = json.loads((run_dir / "model" / "config.json").read_text())
    assert len(exported["id2label"]) == 77
    assert (run_dir / "model" / "tokenizer.json").is_file()


def test_minilm_learns_reply_appropriateness_on_bitext_pairs(tmp_path, data_dir):
    """20 queries per intent, half the negatives hard: AUROC well above 0.5 on held-out pairs."""
    results = train(
        compose(
            [
                "data=bitext_pairs",
                "data.max_queries_per_intent=20",
                "data.max_length=96",
                "data.max_response_length=64",
                "freeze=top2",
                "trainer.max_epochs=2",
                "trainer.enable_progress_bar=false",
                f"paths.output_dir={tmp_path}",
            ]
        )
    )
    assert results["test/auroc"] > 0.8, results


def test_minilm_scores_dstc9_replies_better_than_the_mean(tmp_path, data_dir):
    """A slice of one epoch already correlates with the crowd ratings."""
    results = train(
        compose(
            [
                "data=dstc9_ratings",
                "freeze=top2",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=80",
                "trainer.limit_val_batches=5",
                "trainer.enable_progress_bar=false",
                "data.with_answer=true",
                f"paths.output_dir={tmp_path}",
            ]
        )
    )
    assert results["test/pearson"] > 0.1, results
    # The default report: the exported regression model scored on the whole test split agrees
    # with the Trainer's test pass on the same (best) weights.
    evaluated = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert evaluated["test/mse"] == pytest.approx(results["test/mse"], rel=1e-3)
