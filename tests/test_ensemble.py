"""csft.ensemble: real `python -m csft.train` runs of the tiny BERT (one [CLS], one mean
pooling, same validation rows) exported as one model by `python -m csft.ensemble`, then
loaded afresh by csft's Predictor and by a plain transformers `pipeline`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import INTENT_FIXTURE, tiny_overrides

from csft.ensemble import build_ensemble
from csft.errors import ConfigError
from csft.inference import Predictor


def cli(module: str, *args: str) -> str:
    """`python -m <module> *args` in a fresh process; fails the test on a non-zero exit or a
    question on stdin (transformers asks before running a folder's code); its output."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "Do you wish to run the custom code" not in output, output[-2000:]
    return output


def train_run(run_dir: Path, *extra: str, data_seed: int = 7) -> Path:
    tiny = [o for o in tiny_overrides(run_dir) if not o.startswith("paths.output_dir")]
    cli(
        "csft.train",
        *tiny,
        *INTENT_FIXTURE,
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "optim.lr=1e-3",
        "freeze=none",
        f"data.seed={data_seed}",
        f"hydra.run.dir={run_dir}",
        *extra,
    )
    return run_dir


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """Two members (different seeds and poolings, data.seed shared) and their ensemble."""
    root = tmp_path_factory.mktemp("ensemble")
    members = [  # a mean-pooling member first: its folder names code of its own
        train_run(root / "mean", "seed=2", "model.pooling=mean"),
        train_run(root / "cls", "seed=1", "model.pooling=cls"),
    ]
    out = root / "ens"
    cli("csft.ensemble", f"runs=[{members[0]},{members[1]}]", f"hydra.run.dir={out}")
    return members, out


MESSAGES = ["my card is lost", "refund please, it has been a week", "send money to my sister"]


def examples(texts):
    from csft.data.example import Example

    return [Example(text=t, label=None, source=f"input {i}") for i, t in enumerate(texts)]


@pytest.mark.slow  # three CLI processes of the tiny BERT
def test_the_export_averages_the_members_calibrated_probabilities(ensemble):
    members, out = ensemble
    metadata = json.loads((out / "model" / "csft.json").read_text())
    assert metadata["pooling"] == "ensemble" and len(metadata["members"]) == 2
    temperature = metadata["calibration"]["temperature"]
    member_probs = [
        torch.from_numpy(Predictor.load(m).logits(examples(MESSAGES))).double().softmax(-1)
        for m in members
    ]
    expected = ((sum(member_probs) / 2).log() / temperature).softmax(-1)
    got = torch.from_numpy(Predictor.load(out).logits(examples(MESSAGES))).double().softmax(-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # The members really differ, so the average is not one member's answer.
    assert not torch.allclose(member_probs[0], member_probs[1], atol=1e-3)


@pytest.mark.slow
def test_a_plain_pipeline_loads_it_with_trust_remote_code_and_not_without(ensemble):
    from transformers import AutoModelForSequenceClassification, pipeline

    _, out = ensemble
    predictor = Predictor.load(out)
    classify = pipeline("text-classification", model=str(out / "model"), trust_remote_code=True)
    for message, ours in zip(MESSAGES, predictor.predict(examples(MESSAGES)), strict=True):
        theirs = classify(message)[0]
        assert theirs["label"] == ours["label"]
        assert theirs["score"] == pytest.approx(ours["confidence"], abs=1e-5)
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(out / "model")


@pytest.mark.slow
def test_the_reported_test_accuracy_is_the_exports_on_the_members_test_split(ensemble):
    from csft.data.pseudo_labels import load_run_datamodule

    members, out = ensemble
    summary = json.loads((out / "ensemble.json").read_text())
    test = load_run_datamodule(members[0]).sampled_splits()["test"]
    predicted = [p["label"] for p in Predictor.load(out).predict(test)]
    accuracy = np.mean([p == str(e.label) for p, e in zip(predicted, test, strict=True)])
    assert summary["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert summary["members"] == [str(m) for m in members]


@pytest.mark.slow
def test_members_validated_on_other_rows_one_run_or_no_run_are_errors(ensemble, tmp_path):
    members, _ = ensemble
    other = train_run(tmp_path / "other", "seed=3", data_seed=8)
    with pytest.raises(ConfigError, match=r"other: validated on other rows .* one data\.seed"):
        build_ensemble([str(members[0]), str(other)], tmp_path / "out")
    with pytest.raises(ConfigError, match="at least two different runs"):
        build_ensemble([str(members[0]), str(members[0])], tmp_path / "out")
    with pytest.raises(ConfigError, match=r"not a csft\.train run directory"):
        build_ensemble([str(members[0]), str(tmp_path)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
