"""`csft.evaluate`: a run is scored on its own data config; labels are matched by name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import INTENT_FIXTURE, ROOT, compose, tiny_overrides

from csft.evaluate import evaluate

EVAL_DATA = [o for o in INTENT_FIXTURE if not o.startswith("data.val_fraction")]


def evaluate_cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "csft.evaluate", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def dstc9_run(tmp_path_factory, data_dir):
    """A short DSTC9 regression run with seed 7 (DSTC9's test split depends on the seed),
    through the CLI so the run dir holds what Hydra saves."""
    out = tmp_path_factory.mktemp("dstc9-seed7")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "csft.train",
            *tiny_overrides(out, "data=dstc9_ratings", "seed=7", "trainer.max_epochs=1"),
            "trainer.limit_train_batches=5",
            "trainer.limit_val_batches=2",
            f"hydra.run.dir={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow  # a DSTC9 run and three evaluate processes on the real data (~40 s)
def test_a_run_is_scored_on_its_own_data_and_seed(dstc9_run, tmp_path):
    """No data= given: the run's saved data config, seed 7 included, so the test split is the
    one the run held out (seed 42's split holds other rows, some of them trained on). The
    run's model/ folder finds the run's config in its parent."""
    run_dir, _ = dstc9_run
    done = evaluate_cli(f"run_dir={run_dir / 'model'}", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    scored = json.loads((tmp_path / "metrics.json").read_text())
    # The run's own report evaluated the export on its test split in-process.
    reported = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert scored == reported
    assert {"test/mse", "test/mae", "test/pearson", "test/spearman"} <= scored.keys()
    other_seed = evaluate_cli(
        f"run_dir={run_dir}", "data=dstc9_ratings", "seed=42", f"hydra.run.dir={tmp_path / 's'}"
    )
    assert other_seed.returncode == 0, other_seed.stderr
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["rows"] != scored["rows"]


@pytest.mark.slow  # shares the DSTC9 run
def test_an_export_without_a_run_needs_data(dstc9_run, tmp_path):
    import shutil

    run_dir, _ = dstc9_run
    alone = shutil.copytree(run_dir / "model", tmp_path / "export")
    done = evaluate_cli(f"run_dir={alone}", f"hydra.run.dir={tmp_path / 'out'}")
    assert done.returncode == 2
    assert "name the data to score with data=" in done.stderr


def test_labels_are_matched_by_name_when_the_export_orders_them_differently(
    tmp_path, tiny_bert_dir, tokenizer
):
    """The export's id2label is reversed against the data's (alphabetical) vocabulary."""
    from csft.data.encoding import Encoding
    from csft.export import export_model
    from csft.instantiation import instantiate_unwrapping_errors
    from csft.model.classifier import Classifier

    reversed_labels = {0: "transfer", 1: "refund", 2: "card_lost"}
    torch.manual_seed(3)
    model = Classifier(str(tiny_bert_dir), 3, id2label=reversed_labels, pooling="mean").eval()
    model_dir = export_model(model, tokenizer, Encoding(), tmp_path / "export")
    cfg = compose(tiny_overrides(tmp_path, *EVAL_DATA))
    datamodule = instantiate_unwrapping_errors(cfg.data, tokenizer=str(tiny_bert_dir))
    datamodule.setup("test")
    assert datamodule.vocab.names != tuple(reversed_labels[i] for i in range(3))

    results = evaluate(model_dir, datamodule, "test", tmp_path / "evaluation")

    examples = datamodule.examples["test"]
    batch = tokenizer([e.text for e in examples], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    def accuracy(id2label):
        predicted = [id2label[i] for i in logits.argmax(-1).tolist()]
        return sum(p == e.label for p, e in zip(predicted, examples, strict=True)) / len(examples)

    expected = accuracy(reversed_labels)
    assert expected != accuracy(dict(enumerate(datamodule.vocab.names)))  # the order matters
    assert results["test/acc"] == pytest.approx(expected, abs=1e-6)
    assert results["rows"] == len(examples)
