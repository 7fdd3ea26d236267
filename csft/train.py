"""`python -m csft.train`: compose the config, build, fit, restore and test the best
weights, export.

Everything is built from config with `hydra.utils.instantiate`; this module is the only
place that reads the config, and it hands the library plain arguments.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from csft.checks import check_config
from csft.console import results_table
from csft.data.datamodule import FileDataModule
from csft.data.example import CLASSIFICATION, REGRESSION
from csft.distributed import end_process_group, use_job_subprocess_command
from csft.errors import ConfigError, CsftError
from csft.evaluate import evaluate
from csft.export import export_model
from csft.instantiation import instantiate_unwrapping_errors
from csft.job import instantiate_dict, plain_number, restore_best_weights, run_job
from csft.model.calibration import Calibration, calibrate
from csft.model.classifier import Classifier
from csft.model.metrics import mean_baseline
from csft.resolvers import register_resolvers
from csft.resume import check_checkpoint, resume_arguments
from csft.tracking import log_evaluation, make_loggers, report_wandb_location

log = logging.getLogger("csft.train")
register_resolvers()


def build(cfg: DictConfig) -> tuple[FileDataModule, Classifier, pl.Trainer]:
    """DataModule (set up, so the label vocabulary is known), Classifier and Trainer."""
    if cfg.model.get("cache_frozen") and cfg.trainer.get("reload_dataloaders_every_n_epochs"):
        raise ConfigError(
            "model.cache_frozen=true keeps each row's frozen-layer output for the whole run, "
            "but trainer.reload_dataloaders_every_n_epochs="
            f"{cfg.trainer.reload_dataloaders_every_n_epochs} rebuilds the rows between "
            "epochs: set one of them off."
        )
    loss = instantiate_unwrapping_errors(cfg.loss, _convert_="all")
    datamodule = instantiate_unwrapping_errors(cfg.data, tokenizer=cfg.model.name_or_path)
    loss.check_task(datamodule.task)  # before reading any data: a mismatch fails at once
    datamodule.prepare_data()
    datamodule.setup("fit")
    loss.bind(datamodule.task, datamodule.class_counts())
    make_model = instantiate(cfg.model, _partial_=True, _convert_="all")
    model = make_model(
        num_labels=datamodule.num_labels,
        id2label=datamodule.id2label,
        task=datamodule.task,
        freeze=instantiate_unwrapping_errors(cfg.freeze),
        loss=loss,
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler),
        weight_decay=cfg.optim.weight_decay,
        head_lr=cfg.optim.head_lr,
        layer_decay=cfg.optim.layer_decay,
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_dict(cfg.get("callbacks")),
        logger=make_loggers(cfg.get("logger"), cfg, resuming=bool(cfg.get("ckpt_path"))) or False,
    )
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build, fit (or resume), restore the best weights, validate and test them, export.

    Every reported metric comes from the best checkpoint: `val/*` and `test/*` alike.
    """
    check_config(cfg)  # before any work: a mistyped number stops here, naming its key
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    # Frozen modules are in eval mode on purpose (no dropout in what does not train).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    resume_from = check_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None

    datamodule, model, trainer = build(cfg)
    log.info("%s", datamodule.describe())
    sample = datamodule.sample_record()  # few-shot / fractional: which rows, to reproduce
    if sample is not None and trainer.is_global_zero:
        (output_dir / "data_sample.json").write_text(json.dumps(sample, indent=2))
    log.info(
        "freeze=%s: %s of %s parameters train",
        cfg.freeze.name,
        f"{model.hparams.trainable_params:,}",
        f"{model.hparams.total_params:,}",
    )
    if trainer.world_size > 1:
        use_job_subprocess_command()  # DDP ranks re-run this job, not the whole command line

    if resume_from:
        log.info("resuming from %s", resume_from)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    fit_seconds = time.perf_counter() - start
    if trainer.interrupted:
        raise KeyboardInterrupt

    best = restore_best_weights(trainer, model)
    results = measure_best(trainer, model, datamodule)
    results |= run_facts(trainer, model, fit_seconds, best)
    if resume_from:
        results["resumed_from"] = str(resume_from)  # fit_seconds and samples: this part only
    results = {key: plain_number(value) for key, value in results.items()}

    # DDP: from here on one process works on whole splits. Close the group first, so the
    # export's evaluation neither shards the test split nor waits on ranks that have left.
    is_global_zero = trainer.is_global_zero
    end_process_group()
    if not is_global_zero:  # rank 0 alone writes the run's files
        return results
    if cfg.get("export"):
        results |= export_and_report(cfg, model, datamodule, trainer.loggers, output_dir)
    report_wandb_location(trainer.loggers)
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    print(results_table(results))
    return results


def measure_best(
    trainer: pl.Trainer, model: Classifier, datamodule: FileDataModule
) -> dict[str, Any]:
    """`val/*` and `test/*` of the restored weights (splits without rows are skipped), and
    for regression the test floor of predicting the train mean."""
    results: dict[str, Any] = {}
    for split, measure in (("val", trainer.validate), ("test", trainer.test)):
        if not datamodule.rows.get(split):
            log.info("no %s split (data.%s_file is not set): nothing to measure", split, split)
            continue
        measured = measure(model, datamodule=datamodule, verbose=False)
        results.update(measured[0] if measured else {})
    if datamodule.task == REGRESSION and datamodule.rows.get("test"):
        results |= mean_baseline(
            [r["label"] for r in datamodule.rows["train"]],
            [r["label"] for r in datamodule.rows["test"]],
        )
    return results


def run_facts(
    trainer: pl.Trainer, model: Classifier, fit_seconds: float, best: str | None
) -> dict[str, Any]:
    """How long, how much and what: the run's numbers beside its metrics."""
    return {
        "fit_seconds": round(fit_seconds, 1),
        "train_samples": model.samples_trained,
        "train_samples_per_second": round(model.samples_trained / fit_seconds, 1),
        "epochs": trainer.current_epoch if not trainer.fast_dev_run else 1,
        "trainable_params": model.hparams.trainable_params,
        "total_params": model.hparams.total_params,
        "best_checkpoint": best,
        "best_score": getattr(trainer.checkpoint_callback, "best_model_score", None),
    }


def export_and_report(
    cfg: DictConfig,
    model: Classifier,
    datamodule: FileDataModule,
    loggers: list[Any],
    output_dir: Path,
) -> dict[str, Any]:
    """<run dir>/model (Hugging Face folder, calibrated on validation) and, with `report`,
    its evaluation on test: what is deployed is what is reported."""
    calibration = calibrate_on_validation(model, datamodule, cfg.handoff.target_accuracy)
    model_dir = export_model(
        model,
        datamodule.tokenizer,
        datamodule.encoding,
        output_dir / "model",
        calibration=calibration,
        pair_task=datamodule.is_pair_task,
        speaker_markers=getattr(datamodule, "speaker_markers", None),
    )
    results: dict[str, Any] = {"model_dir": str(model_dir)}
    if calibration is not None:
        log.info(
            "calibration on validation: temperature %.3f; hand-off threshold %.4f answers "
            "%.1f%% of messages at %.2f%% accuracy (target %.0f%%)",
            calibration.temperature,
            calibration.threshold,
            100 * calibration.val_coverage,
            100 * calibration.val_accuracy,
            100 * calibration.target_accuracy,
        )
        results |= {
            "temperature": calibration.temperature,
            "handoff_threshold": calibration.threshold,
            "val/handoff_coverage": calibration.val_coverage,
            "val/handoff_accuracy": calibration.val_accuracy,
        }
    if cfg.get("report") and datamodule.rows.get("test"):
        evaluated = evaluate(model_dir, datamodule, "test", output_dir / "evaluation")
        log_evaluation(loggers, output_dir / "evaluation")
        results |= {k: v for k, v in evaluated.items() if k in REPORTED_FROM_EVALUATION}
    return results


# What the export's evaluation adds to metrics.json (the Trainer's test pass has the rest).
REPORTED_FROM_EVALUATION = (
    "test/ece_uncalibrated",
    "test/ece",
    "test/handoff_coverage",
    "test/handoff_accuracy",
)


@torch.no_grad()
def calibrate_on_validation(
    model: Classifier, datamodule: FileDataModule, target_accuracy: float
) -> Calibration | None:
    """Temperature and hand-off threshold from the best weights' validation logits
    (classification with a validation split; None otherwise)."""
    rows = datamodule.rows.get("val")
    if datamodule.task != CLASSIFICATION or not rows:
        return None
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for batch in datamodule.loader(rows, shard=False):
        inputs = [batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")]
        logits.append(model(*inputs).float().cpu())
        labels.append(batch["labels"])
    return calibrate(torch.cat(logits), torch.cat(labels), target_accuracy)


@hydra.main(version_base="1.3", config_path="pkg://csft.conf", config_name="train")
def run(cfg: DictConfig) -> float | None:
    """The Hydra job; returns the optimized metric so sweepers (Optuna) can use it.

    The error policy is `csft.job.run_job`'s; a run stopped by a signal saves last.ckpt
    first (`csft.resume`).
    """
    return run_job(cfg, train, lambda results: sweep_score(results, cfg.optimized_metric), log)


def sweep_score(results: dict[str, Any], metric: str) -> float:
    """What a sweeper optimizes: the best checkpoint's score, else (no checkpoint was kept,
    as under fast_dev_run) the metric itself; NaN when neither exists."""
    score = results.get("best_score")
    if score is None:
        score = results.get(metric)
    return float("nan") if score is None else float(score)


def main() -> float | None:
    """`python -m csft.train` / `csft-train`: `resume=<run dir>` becomes the run's own
    overrides before Hydra composes anything."""
    try:
        sys.argv[1:] = resume_arguments(sys.argv[1:])
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        sys.exit(2)
    return run()


if __name__ == "__main__":
    main()
