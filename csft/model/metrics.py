"""Which metrics a task reports, how model outputs feed them, and which one a run optimizes.

Training (the Classifier's val/test steps) and `csft.evaluate` (an exported model) both
update their metrics through `update_metrics`, so the two can never score differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchmetrics as tm
from torchmetrics import MetricCollection

from csft.data.example import CLASSIFICATION, REGRESSION, TASKS
from csft.errors import ConfigError

# The metric a run's best checkpoint is chosen by (and a sweep optimizes), per task.
HEADLINE = {CLASSIFICATION: "val/acc", REGRESSION: "val/mse"}
# Metrics where lower is better; every other one is maximised.
LOWER_IS_BETTER = ("loss", "mse", "mae")


def task_metrics(task: str, num_labels: int) -> MetricCollection:
    """Classification: accuracy, macro-F1 (+ AUROC for two classes). Regression: MSE, MAE,
    Pearson, Spearman."""
    if task == CLASSIFICATION:
        metrics = {
            "acc": tm.Accuracy(task="multiclass", num_classes=num_labels, average="micro"),
            "f1_macro": tm.F1Score(task="multiclass", num_classes=num_labels, average="macro"),
        }
        if num_labels == 2:
            metrics["auroc"] = tm.AUROC(task="binary")
        return MetricCollection(metrics, compute_groups=False)
    return MetricCollection(
        {
            "mse": tm.MeanSquaredError(),
            "mae": tm.MeanAbsoluteError(),
            "pearson": tm.PearsonCorrCoef(),
            "spearman": tm.SpearmanCorrCoef(),
        },
        compute_groups=False,
    )


def update_metrics(
    metrics: MetricCollection, outputs: torch.Tensor, labels: torch.Tensor, task: str
) -> None:
    """Feed one batch: logits (classification; AUROC gets the positive class's probability)
    or scores of shape (n,) or (n, 1) (regression)."""
    outputs = outputs.detach().float()
    for name, metric in metrics.items():
        if name == "auroc":
            metric.update(outputs.softmax(-1)[:, 1], labels)
        elif task == CLASSIFICATION:
            metric.update(outputs.argmax(-1), labels)
        else:
            metric.update(outputs.reshape(-1), labels.float())


def headline_metric(task: str) -> str:
    """`optimized_metric`'s default: `${monitor:${data.task}}` in conf/train.yaml."""
    if task not in HEADLINE:
        raise ConfigError(f"data.task={task!r}: expected one of {TASKS}.")
    return HEADLINE[task]


def metric_mode(metric: str) -> str:
    """ "min" for losses and errors, "max" for everything else (the checkpoint's `mode`)."""
    return "min" if metric.rsplit("/", 1)[-1].startswith(LOWER_IS_BETTER) else "max"


def mean_baseline(train_targets: Sequence[float], test_targets: Sequence[float]) -> dict:
    """Regression's floor: test MSE / MAE of always predicting the train split's mean."""
    mean = sum(train_targets) / len(train_targets)
    return {
        "test/mean_baseline_mse": sum((t - mean) ** 2 for t in test_targets) / len(test_targets),
        "test/mean_baseline_mae": sum(abs(t - mean) for t in test_targets) / len(test_targets),
    }
