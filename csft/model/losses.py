"""The training losses as objects: each knows its task, its options and their checks.

`loss=auto` (the default) takes the data's declared task: cross-entropy for classification,
MSE for regression. A loss is bound to the train split (`bind`) before training: that checks
the task and turns `class_weights="balanced"` into one weight per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from csft.data.example import CLASSIFICATION, REGRESSION, TASKS
from csft.errors import ConfigError


class Loss(nn.Module):
    """A loss for one task. `name` is what `loss=` and the checkpoint call it."""

    name: str
    task: str

    def check_task(self, task: str) -> None:
        """The loss must fit the task the data declares (known before any data is read)."""
        if task != self.task:
            raise ConfigError(
                f"loss={self.name} is a {self.task} loss, but the data's task is {task} "
                f"(data.task); drop the loss= override (loss=auto follows the data) or use "
                f"loss={'ce' if task == CLASSIFICATION else 'mse'}."
            )

    def bind(self, task: str, class_counts: Sequence[int] | None) -> Loss:
        """Check the task and size per-class options to the train split's classes."""
        self.check_task(task)
        return self

    def hparams(self) -> dict[str, Any]:
        """What the checkpoint stores to rebuild this loss (`from_hparams`)."""
        return {"name": self.name}


class CrossEntropy(Loss):
    """Cross-entropy over the label vocabulary, with optional label smoothing and per-class
    weights: null, "balanced" (n / (k · count), rare classes weigh more) or one per class."""

    name, task = "ce", CLASSIFICATION

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, Real)
            or not 0.0 <= label_smoothing < 1.0
        ):
            raise ConfigError(
                f"loss.label_smoothing={label_smoothing!r}: expected a number in [0, 1)."
            )
        if isinstance(class_weights, str) and class_weights != "balanced":
            raise ConfigError(
                f"loss.class_weights={class_weights!r}: expected null, balanced or a list "
                f"with one weight per class."
            )
        weight = None
        if class_weights is not None and not isinstance(class_weights, str):
            class_weights = [_positive_weight(w) for w in class_weights]
            weight = torch.tensor(class_weights, dtype=torch.float32)
        self.label_smoothing = float(label_smoothing)
        self.class_weights = class_weights
        self.register_buffer("weight", weight, persistent=False)

    def bind(self, task: str, class_counts: Sequence[int] | None) -> CrossEntropy:
        self.check_task(task)
        if self.class_weights is None:
            return self
        counts = list(class_counts or [])
        if self.class_weights == "balanced":
            weights = [sum(counts) / (len(counts) * max(c, 1)) for c in counts]
            self.weight = torch.tensor(weights, dtype=torch.float32)
        elif len(self.class_weights) != len(counts):
            raise ConfigError(
                f"loss.class_weights has {len(self.class_weights)} values; "
                f"the train split has {len(counts)} classes."
            )
        return self

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            outputs.float(), labels, weight=self.weight, label_smoothing=self.label_smoothing
        )

    def hparams(self) -> dict[str, Any]:
        weights = self.weight.tolist() if self.weight is not None else self.class_weights
        return {
            "name": self.name,
            "label_smoothing": self.label_smoothing,
            "class_weights": weights,
        }


class MeanSquaredError(Loss):
    """MSE between the single output and the numeric label."""

    name, task = "mse", REGRESSION

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs.float(), labels.float())


LOSSES: dict[str, type[Loss]] = {
    CrossEntropy.name: CrossEntropy,
    MeanSquaredError.name: MeanSquaredError,
}


def loss_for_task(
    task: str,
    label_smoothing: float = 0.0,
    class_weights: str | Sequence[float] | None = None,
) -> Loss:
    """`loss=auto`: cross-entropy for classification data, MSE for regression data."""
    if task not in TASKS:
        raise ConfigError(f"data.task={task!r}: expected one of {TASKS}.")
    if task == CLASSIFICATION:
        return CrossEntropy(label_smoothing, class_weights)
    if label_smoothing or class_weights is not None:
        raise ConfigError(
            "loss.label_smoothing and loss.class_weights apply to classification; "
            "the data's task is regression (MSE)."
        )
    return MeanSquaredError()


def from_hparams(saved: Mapping[str, Any]) -> Loss:
    """The loss a checkpoint describes (`Loss.hparams`)."""
    options = dict(saved)
    name = options.pop("name", None)
    if name not in LOSSES:
        raise ConfigError(f"loss name {name!r} in the checkpoint: expected one of {list(LOSSES)}.")
    return LOSSES[name](**options)


def _positive_weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ConfigError(f"loss.class_weights: {value!r} is not a positive number.")
    return float(value)
