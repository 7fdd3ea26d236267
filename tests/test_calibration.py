"""Temperature scaling, calibration error and the hand-off threshold, on numbers whose
answer is known; then through a real training run and its export."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import INTENT_FIXTURE, compose, tiny_overrides

from csft.model.calibration import (
    at_threshold,
    calibrate,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
    pick_threshold,
)


def overconfident(rows: int = 4000, classes: int = 5, temperature: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z): z is calibrated, z * temperature over-confident."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, classes, generator=generator) * 1.5
    labels = torch.multinomial(z.softmax(-1), 1, generator=generator).squeeze(1)
    return z * temperature, labels


def test_fit_temperature_recovers_the_known_temperature_and_lowers_ece():
    logits, labels = overconfident(temperature=3.0)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(logits.softmax(-1), labels)
    after = expected_calibration_error((logits / fitted).softmax(-1), labels)
    assert after < before / 3
    # Scaling never changes a prediction.
    assert torch.equal((logits / fitted).argmax(-1), logits.argmax(-1))


def test_an_underconfident_model_gets_a_temperature_below_one():
    logits, labels = overconfident(temperature=0.5)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.1)


def test_coverage_curve_counts_ties_together():
    confidence = torch.tensor([0.9, 0.8, 0.8, 0.5])
    correct = torch.tensor([True, True, False, True])
    curve = coverage_curve(confidence, correct)
    assert curve == [
        {"threshold": pytest.approx(0.9), "coverage": 0.25, "accuracy": 1.0},
        {"threshold": pytest.approx(0.8), "coverage": 0.75, "accuracy": pytest.approx(2 / 3)},
        {"threshold": pytest.approx(0.5), "coverage": 1.0, "accuracy": 0.75},
    ]


def test_pick_threshold_takes_the_largest_coverage_that_keeps_the_target():
    generator = torch.Generator().manual_seed(1)
    confidence = torch.rand(500, generator=generator)
    correct = torch.rand(500, generator=generator) < confidence  # higher confidence, more right
    threshold, coverage, accuracy = pick_threshold(confidence, correct, 0.9)
    assert accuracy >= 0.9
    assert (coverage, accuracy) == pytest.approx(at_threshold(confidence, correct, threshold))
    # Brute force: no threshold with accuracy >= 0.9 answers more rows.
    for t in confidence.tolist():
        cov, acc = at_threshold(confidence, correct, t)
        assert not (acc >= 0.9 and cov > coverage + 1e-12)


def test_an_unreachable_target_hands_everything_to_a_human():
    confidence = torch.tensor([0.9, 0.7, 0.6])
    correct = torch.tensor([False, True, False])
    threshold, coverage, _ = pick_threshold(confidence, correct, 0.99)
    assert threshold == 1.0 and coverage == 0.0


def test_calibrate_picks_the_threshold_on_calibrated_confidences():
    logits, labels = overconfident(temperature=3.0)
    calibration = calibrate(logits, labels, 0.95)
    confidence, predicted = (logits.double() / calibration.temperature).softmax(-1).max(-1)
    coverage, accuracy = at_threshold(confidence, predicted == labels, calibration.threshold)
    assert accuracy >= 0.95
    assert coverage == pytest.approx(calibration.val_coverage)
    assert calibration.val_rows == len(labels)


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    from csft.train import train

    out = tmp_path_factory.mktemp("calibrated-run")
    cfg = compose(
        tiny_overrides(
            out,
            *INTENT_FIXTURE,
            "data.batch_size=4",
            "trainer.max_epochs=3",
            "optim.lr=1e-3",
            "handoff.target_accuracy=0.6",
        )
    )
    return out, train(cfg)


def test_a_run_folds_its_temperature_into_the_export_and_reports_handoff(calibrated_run):
    from csft.evaluate import predict_split
    from csft.export import load_exported
    from csft.instantiation import instantiate_unwrapping_errors

    out, results = calibrated_run
    metadata = json.loads((out / "model" / "csft.json").read_text())
    calibration = metadata["calibration"]
    assert calibration["target_accuracy"] == 0.6
    assert calibration["temperature"] == results["temperature"] != 1.0
    assert calibration["threshold"] == results["handoff_threshold"]
    assert calibration["val_rows"] > 0

    # The test numbers in metrics.json are what the export's (calibrated) logits give.
    cfg = compose(tiny_overrides(out, *INTENT_FIXTURE))
    data = instantiate_unwrapping_errors(cfg.data, tokenizer=str(out / "model"))
    data.setup("test")
    logits, labels, _ = predict_split(load_exported(out / "model"), data.loader(data.rows["test"]))
    probs = logits.double().softmax(-1)
    confidence, predicted = probs.max(-1)
    coverage, accuracy = at_threshold(confidence, predicted == labels, calibration["threshold"])
    assert results["test/handoff_coverage"] == pytest.approx(coverage, abs=1e-6)
    if coverage > 0:
        assert results["test/handoff_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert results["test/ece"] == pytest.approx(expected_calibration_error(probs, labels), abs=1e-6)
    raw = (logits.double() * calibration["temperature"]).softmax(-1)
    assert results["test/ece_uncalibrated"] == pytest.approx(
        expected_calibration_error(raw, labels), abs=1e-6
    )
    # The curve on disk: every row's coverage and accuracy, and a picture of it.
    with (out / "evaluation" / "coverage_accuracy.csv").open() as handle:
        curve = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    assert curve[-1]["coverage"] == 1.0
    assert curve[-1]["accuracy"] == pytest.approx((predicted == labels).double().mean().item())
    assert (out / "evaluation" / "coverage_accuracy.png").stat().st_size > 1000


def test_regression_runs_store_no_calibration(tmp_path):
    from conftest import tiny_classifier

    from csft.data.encoding import Encoding
    from csft.export import export_model, read_metadata
    from csft.pretrained import load_tokenizer, packaged_minilm_dir

    model = tiny_classifier(1, task="regression").eval()
    folder = export_model(model, load_tokenizer(packaged_minilm_dir()), Encoding(), tmp_path)
    assert read_metadata(folder)["calibration"] is None


def test_target_accuracy_outside_zero_one_is_refused(tmp_path):
    from csft.checks import check_config
    from csft.errors import ConfigError

    cfg = compose(tiny_overrides(tmp_path, *INTENT_FIXTURE, "handoff.target_accuracy=1.5"))
    with pytest.raises(ConfigError, match=r"handoff\.target_accuracy"):
        check_config(cfg)
