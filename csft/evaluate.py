"""`python -m csft.evaluate run_dir=... [data=...]`: metrics, confusion matrix, per-class report.

Works on a run directory (its exported `model/`) or on an exported model folder directly,
so what is measured is exactly what would be deployed.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from csft.console import quiet_libraries
from csft.data.example import CLASSIFICATION
from csft.errors import ConfigError, CsftError
from csft.export import load_exported, read_metadata, resolve_model_dir
from csft.instantiation import instantiate_unwrapping_errors
from csft.model.calibration import at_threshold, coverage_curve, expected_calibration_error
from csft.model.metrics import task_metrics, update_metrics
from csft.resolvers import register_resolvers

log = logging.getLogger("csft.evaluate")
register_resolvers()


@torch.no_grad()
def predict_split(model: Any, loader: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(outputs, labels, row index) for every batch of a loader, in row order, on the CPU
    (the model may sit on a GPU)."""
    device = next(model.parameters()).device
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    outputs, labels, index = [], [], []
    for batch in loader:
        logits = model(**{k: batch[k].to(device, non_blocking=True) for k in inputs}).logits
        outputs.append(logits.float().cpu())
        labels.append(batch["labels"])
        index.append(batch["index"])
    order = torch.argsort(torch.cat(index))
    return torch.cat(outputs)[order], torch.cat(labels)[order], torch.cat(index)[order]


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class."""
    return torch.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def per_class_rows(matrix: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    tp = matrix.diag().double()
    support = matrix.sum(1).double()
    predicted = matrix.sum(0).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp)
    )
    return [
        {
            "label": name,
            "precision": round(precision[i].item(), 4),
            "recall": round(recall[i].item(), 4),
            "f1": round(f1[i].item(), 4),
            "support": int(support[i].item()),
        }
        for i, name in enumerate(names)
    ]


def plot_confusion(matrix: torch.Tensor, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(6.0, 0.18 * len(names))
    fig, ax = plt.subplots(figsize=(size, size))
    normalised = matrix.double() / matrix.sum(1, keepdim=True).clamp(min=1)
    image = ax.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=max(4, 9 - len(names) // 20))
    ax.set_yticks(range(len(names)), names, fontsize=max(4, 9 - len(names) // 20))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confidence_report(
    logits: torch.Tensor,
    labels: torch.Tensor,
    calibration: dict[str, Any] | None,
    split: str,
    out_dir: Path,
) -> dict[str, float]:
    """Calibration error before/after the export's temperature, the coverage–accuracy curve
    (CSV + PNG) and the test coverage and accuracy at the run's hand-off threshold."""
    temperature = calibration["temperature"] if calibration else 1.0
    probs = logits.double().softmax(-1)
    confidence, predicted = probs.max(-1)
    correct = predicted == labels
    results = {
        # The export's logits are logits / T: times T gives the uncalibrated ones back.
        f"{split}/ece_uncalibrated": expected_calibration_error(
            (logits.double() * temperature).softmax(-1), labels
        ),
        f"{split}/ece": expected_calibration_error(probs, labels),
    }
    curve = coverage_curve(confidence, correct)
    with (out_dir / "coverage_accuracy.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["threshold", "coverage", "accuracy"])
        writer.writeheader()
        writer.writerows({k: round(v, 6) for k, v in point.items()} for point in curve)
    threshold = calibration["threshold"] if calibration else None
    if threshold is not None:
        coverage, accuracy = at_threshold(confidence, correct, threshold)
        results[f"{split}/handoff_coverage"] = coverage
        if coverage > 0:  # no answered row, no accuracy (left out rather than NaN)
            results[f"{split}/handoff_accuracy"] = accuracy
    plot_coverage(
        curve,
        calibration,
        results.get(f"{split}/handoff_coverage"),
        out_dir / "coverage_accuracy.png",
    )
    return {k: round(v, 6) for k, v in results.items()}


def plot_coverage(
    curve: list[dict[str, float]],
    calibration: dict[str, Any] | None,
    coverage: float | None,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([p["coverage"] for p in curve], [p["accuracy"] for p in curve], lw=1.5)
    if calibration:
        target = calibration["target_accuracy"]
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
        if coverage is not None:
            ax.axvline(
                coverage,
                color="tab:red",
                ls=":",
                lw=1,
                label=f"threshold {calibration['threshold']:.3f}: {coverage:.1%} answered",
            )
        ax.legend(loc="lower left")
    ax.set_xlabel("coverage (share answered without a human)")
    ax.set_ylabel("accuracy on the answered share")
    ax.set_title("answer only when confidence ≥ t")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(model_dir: Path, datamodule: Any, split: str, out_dir: Path) -> dict[str, Any]:
    """Score an exported model on one split and write metrics, confusion matrix, per-class
    report and (classification) the confidence report."""
    model = load_exported(model_dir)
    config = model.config
    datamodule.prepare_data()
    datamodule.setup("test")
    if split not in datamodule.rows or not datamodule.rows[split]:
        raise ConfigError(f"split={split}: the data config has no {split} rows.")
    task = datamodule.task
    names: list[str] = []
    if task == CLASSIFICATION:
        names = [config.id2label[i] for i in range(config.num_labels)]
        if set(datamodule.vocab.names) - set(names):
            unknown = sorted(set(datamodule.vocab.names) - set(names))[:5]
            raise ConfigError(f"{model_dir}: the model has no output for labels {unknown}.")
        # Re-map the data's label indices onto the model's.
        remap = torch.tensor([config.label2id[n] for n in datamodule.vocab.names])
    # One process scores the whole split, whatever process group the caller has open.
    rows = datamodule.rows[split]
    outputs, labels, _ = predict_split(model, datamodule.loader(rows, shard=False))
    if task == CLASSIFICATION:
        labels = remap[labels]
    metrics = task_metrics(task, len(names) or 1)
    update_metrics(metrics, outputs, labels, task)
    results = {f"{split}/{k}": round(v.item(), 6) for k, v in metrics.compute().items()}
    results["rows"] = len(labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    if task == CLASSIFICATION:
        matrix = confusion_matrix(outputs.argmax(-1), labels, len(names))
        plot_confusion(matrix, names, out_dir / "confusion_matrix.png")
        with (out_dir / "per_class.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["label", "precision", "recall", "f1", "support"])
            writer.writeheader()
            writer.writerows(per_class_rows(matrix, names))
        calibration = read_metadata(model_dir).get("calibration")
        results |= confidence_report(outputs, labels, calibration, split, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    return results


def run_data_config(run_dir: Path, paths: DictConfig) -> DictConfig:
    """The data config a training run saved (`.hydra/config.yaml`), resolved with the run's
    own seed and this process's paths, so `csft.evaluate run_dir=<run>` scores the split the
    run held out."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"run_dir={run_dir}: no saved run config ({saved}); name the data to score "
            f"with data=<config> (e.g. data=banking77)."
        )
    config = OmegaConf.load(saved)
    if "data" not in config:
        raise ConfigError(f"{saved}: has no data section; name the data with data=<config>.")
    config.paths = paths
    return config.data


@hydra.main(version_base="1.3", config_path="pkg://csft.conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any]:
    quiet_libraries()
    try:
        model_dir = resolve_model_dir(cfg.run_dir)
        metadata = read_metadata(model_dir)
        # The run that exported the model: run_dir itself, or the parent of its model/.
        run_root = model_dir.parent if (model_dir.parent / ".hydra").is_dir() else model_dir
        data = cfg.data if cfg.get("data") else run_data_config(run_root, cfg.paths)
        datamodule = instantiate_unwrapping_errors(
            data, tokenizer=str(model_dir), task=metadata["task"], **metadata["encoding"]
        )
        out_dir = Path(cfg.paths.output_dir)
        results = evaluate(model_dir, datamodule, cfg.split, out_dir)
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        sys.exit(2)
    for key, value in results.items():
        print(f"{key:<16} {value}")
    print(f"wrote {out_dir}")
    return results


if __name__ == "__main__":
    main()
