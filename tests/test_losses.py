"""Loss objects: the data's task picks one, and each owns its options and their checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import INTENT_FIXTURE, compose, tiny_classifier, tiny_overrides
from hydra.utils import instantiate

from csft.errors import ConfigError
from csft.model.losses import CrossEntropy, MeanSquaredError, from_hparams, loss_for_task
from csft.train import build, train


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], CrossEntropy),  # banking77 declares classification
        (["data=dstc9_ratings"], MeanSquaredError),  # declares regression
        (["data=dstc9_ratings", "data.task=classification"], CrossEntropy),
        (["data=csv", "data.train_file=x.csv", "data.task=regression"], MeanSquaredError),
        (["data=dstc9_ratings", "loss=ce"], CrossEntropy),  # an explicit choice wins
    ],
)
def test_the_data_task_picks_the_loss(overrides, expected):
    cfg = compose(["model=tiny", *overrides])
    assert type(instantiate(cfg.loss, _convert_="all")) is expected


def test_balanced_class_weights_are_bound_from_the_train_split(tmp_path):
    rows = ["text,label"] + [f"message {i},{label}" for i, label in enumerate("aaaaaabbbccc")]
    table = tmp_path / "unbalanced.csv"
    table.write_text("\n".join(rows) + "\n")
    cfg = compose(
        tiny_overrides(
            tmp_path / "run",
            "data=csv",
            f"data.train_file={table}",
            f"data.val_file={table}",
            "loss.class_weights=balanced",
        )
    )
    datamodule, model, _ = build(cfg)
    counts = datamodule.class_counts()
    assert counts == [6, 3, 3]
    expected = [sum(counts) / (len(counts) * c) for c in counts]
    torch.testing.assert_close(model.criterion.weight, torch.tensor(expected))
    # The weights reach the loss: a rare class's error costs more.
    logits, labels = torch.randn(4, len(counts)), torch.tensor([0, 1, 2, 0])
    expected_loss = F.cross_entropy(logits, labels, weight=torch.tensor(expected))
    torch.testing.assert_close(model.criterion(logits, labels), expected_loss)


def test_label_smoothing_reaches_the_loss():
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    smoothed = CrossEntropy(label_smoothing=0.2)(logits, labels)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, labels, label_smoothing=0.2))
    assert not torch.allclose(smoothed, CrossEntropy()(logits, labels))


def test_label_smoothing_trains_end_to_end(tmp_path):
    cfg = compose(
        tiny_overrides(
            tmp_path, *INTENT_FIXTURE, "loss.label_smoothing=0.1", "trainer.max_epochs=1"
        )
    )
    results = train(cfg)
    assert results["test/loss"] > 0
    saved = torch.load(results["best_checkpoint"], weights_only=False)
    assert saved["hyper_parameters"]["loss"] == {
        "name": "ce",
        "label_smoothing": 0.1,
        "class_weights": None,
    }


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CrossEntropy(label_smoothing=1.5), r"loss.label_smoothing=1.5: expected"),
        (lambda: CrossEntropy(label_smoothing="0.1x"), r"loss.label_smoothing='0.1x'"),
        (lambda: CrossEntropy(class_weights="heavy"), r"loss.class_weights='heavy'"),
        (lambda: CrossEntropy(class_weights=[1, -2]), r"-2 is not a positive number"),
        (lambda: loss_for_task("regression", label_smoothing=0.1), r"apply to classification"),
        (lambda: loss_for_task("ranking"), r"data.task='ranking'"),
        (
            lambda: CrossEntropy(class_weights=[1, 2]).bind("classification", [3, 3, 3]),
            r"3 classes",
        ),
        (lambda: MeanSquaredError().bind("classification", [3, 3]), r"use loss=ce"),
    ],
)
def test_bad_loss_options_are_one_clear_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_bad_loss_option_stops_the_run_before_training(tmp_path):
    cfg = compose(tiny_overrides(tmp_path, *INTENT_FIXTURE, "loss.label_smoothing=1.5"))
    with pytest.raises(ConfigError, match=r"loss.label_smoothing=1.5"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_a_checkpoint_rebuilds_its_loss(tmp_path):
    loss = CrossEntropy(label_smoothing=0.05, class_weights=[1.0, 2.0, 0.5])
    rebuilt = from_hparams(loss.hparams())
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(rebuilt(logits, labels), loss(logits, labels))
    assert isinstance(from_hparams(MeanSquaredError().hparams()), MeanSquaredError)


def test_the_classifier_refuses_a_loss_of_another_task():
    with pytest.raises(ConfigError, match="loss=mse is a regression loss"):
        tiny_classifier(loss=MeanSquaredError())
