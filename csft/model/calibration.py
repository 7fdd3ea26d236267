"""Confidence a deployment can act on: temperature scaling, calibration error, hand-off.

A fine-tuned classifier's softmax is over-confident. One temperature T, fitted on the
validation split by minimising the negative log-likelihood of logits / T, fixes most of it
without changing a single argmax (Guo et al., 2017). The export folds 1/T into the head, so
every consumer of the folder (csft, `pipeline`, ONNX) sees calibrated scores.

Hand-off: answer a message only when its confidence reaches a threshold, pass the rest to a
human. The threshold is the lowest one whose answered validation messages are at least
`target_accuracy` correct, i.e. the largest coverage that keeps the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.nn import functional as F

# Bounds on T: beyond them the validation split is too small or degenerate to trust.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
# Standard equal-width confidence bins for the expected calibration error.
ECE_BINS = 15


@dataclass(frozen=True)
class Calibration:
    """What a run learns on validation and the export stores (csft.json "calibration")."""

    temperature: float
    target_accuracy: float
    threshold: float
    val_coverage: float
    val_accuracy: float
    val_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising NLL(softmax(logits / T), labels); optimised in log T."""
    logits, labels = logits.detach().double(), labels.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    return min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-label ECE: |accuracy − confidence| averaged over 15 confidence bins, by rows."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(
        multiclass_calibration_error(
            probs.float(), labels.long(), num_classes=probs.shape[-1], n_bins=ECE_BINS
        )
    )


def coverage_curve(confidence: torch.Tensor, correct: torch.Tensor) -> list[dict[str, float]]:
    """For every distinct confidence t (high to low): the share of rows with confidence ≥ t
    (coverage) and the accuracy on them."""
    order = torch.argsort(confidence, descending=True, stable=True)
    conf, hits = confidence[order].double(), correct[order].double()
    answered = torch.arange(1, len(conf) + 1, dtype=torch.float64)
    accuracy = hits.cumsum(0) / answered
    # The last row of each run of equal confidences: a threshold answers all of them.
    last = torch.ones(len(conf), dtype=torch.bool)
    last[:-1] = conf[1:] != conf[:-1]
    return [
        {
            "threshold": float(conf[i]),
            "coverage": float(answered[i] / len(conf)),
            "accuracy": float(accuracy[i]),
        }
        for i in torch.nonzero(last).flatten().tolist()
    ]


def pick_threshold(
    confidence: torch.Tensor, correct: torch.Tensor, target_accuracy: float
) -> tuple[float, float, float]:
    """(threshold, coverage, accuracy): the largest coverage whose accuracy ≥ target.

    When no threshold reaches the target, 1.0: (almost) every message goes to a human.
    """
    reachable = [p for p in coverage_curve(confidence, correct) if p["accuracy"] >= target_accuracy]
    if not reachable:
        answered = confidence >= 1.0
        accuracy = float(correct[answered].double().mean()) if answered.any() else 0.0
        return 1.0, float(answered.double().mean()), accuracy
    best = max(reachable, key=lambda p: p["coverage"])
    return best["threshold"], best["coverage"], best["accuracy"]


def at_threshold(
    confidence: torch.Tensor, correct: torch.Tensor, threshold: float
) -> tuple[float, float]:
    """(coverage, accuracy) when only rows with confidence ≥ threshold are answered."""
    answered = confidence >= threshold
    coverage = float(answered.double().mean())
    accuracy = float(correct[answered].double().mean()) if answered.any() else float("nan")
    return coverage, accuracy


def calibrate(logits: torch.Tensor, labels: torch.Tensor, target_accuracy: float) -> Calibration:
    """Temperature, then the hand-off threshold on the calibrated confidences."""
    temperature = fit_temperature(logits, labels)
    probs = (logits.double() / temperature).softmax(-1)
    confidence, predicted = probs.max(-1)
    threshold, coverage, accuracy = pick_threshold(confidence, predicted == labels, target_accuracy)
    return Calibration(
        temperature=round(temperature, 6),
        target_accuracy=target_accuracy,
        threshold=threshold,
        val_coverage=round(coverage, 6),
        val_accuracy=round(accuracy, 6),
        val_rows=len(labels),
    )
