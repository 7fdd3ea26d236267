"""Which metrics a task reports, as torchmetrics collections (one per stage)."""

from __future__ import annotations

import torchmetrics as tm
from torchmetrics import MetricCollection

from csft.data.example import CLASSIFICATION


def task_metrics(task: str, num_labels: int) -> MetricCollection:
    """Classification: accuracy, macro-F1 (+ AUROC for two classes). Regression: MSE, MAE,
    Pearson, Spearman. Classification metrics take logits; AUROC the positive-class score."""
    if task == CLASSIFICATION:
        metrics = {
            "acc": tm.Accuracy(task="multiclass", num_classes=num_labels, average="micro"),
            "f1_macro": tm.F1Score(task="multiclass", num_classes=num_labels, average="macro"),
        }
        if num_labels == 2:
            metrics["auroc"] = tm.AUROC(task="binary")
        return MetricCollection(metrics)
    return MetricCollection(
        {
            "mse": tm.MeanSquaredError(),
            "mae": tm.MeanAbsoluteError(),
            "pearson": tm.PearsonCorrCoef(),
            "spearman": tm.SpearmanCorrCoef(),
        }
    )
