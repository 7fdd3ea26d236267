"""`python -m csft.train`: compose the config, fit, test the best checkpoint, export.

Everything is built from config with `hydra.utils.instantiate`; this module is the only
place that reads the config, and it hands the library plain arguments.
"""

from __future__ import annotations

import json
import logging
import math
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
from csft.console import quiet_libraries, results_table
from csft.distributed import end_process_group, isolated_job, use_job_subprocess_command
from csft.errors import ConfigError, CsftError
from csft.evaluate import evaluate
from csft.export import export_model
from csft.instantiation import instantiate_unwrapping_errors
from csft.resolvers import register_resolvers
from csft.resume import RunInterrupted, check_checkpoint, resume_arguments
from csft.sweep_summary import record_failure
from csft.tracking import finish_wandb, log_evaluation, make_loggers, report_wandb_location

log = logging.getLogger("csft.train")
# Frozen modules are in eval mode on purpose (no dropout in what does not train).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
register_resolvers()
use_job_subprocess_command()


def class_weights(setting: Any, counts: list[int] | None) -> list[float] | None:
    """`loss.class_weights`: null, "balanced" (n / (k * count)), or one weight per class."""
    if setting is None:
        return None
    if counts is None:
        raise ConfigError("loss.class_weights is set, but the task is regression.")
    if setting == "balanced":
        total = sum(counts)
        return [total / (len(counts) * max(c, 1)) for c in counts]
    weights = [float(w) for w in setting]
    if len(weights) != len(counts):
        raise ConfigError(
            f"loss.class_weights has {len(weights)} values; "
            f"the train split has {len(counts)} classes."
        )
    return weights


def instantiate_dict(group: DictConfig | None) -> list[Any]:
    """Instantiate each `_target_` entry of a config group like `callbacks` or `logger`."""
    if not group:
        return []
    return [instantiate(item) for item in group.values() if item and "_target_" in item]


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """DataModule (set up, so the label vocabulary is known), Classifier and Trainer."""
    if cfg.model.get("cache_frozen") and cfg.trainer.get("reload_dataloaders_every_n_epochs"):
        raise ConfigError(
            "model.cache_frozen=true keeps each row's frozen-layer output for the whole run, "
            "but trainer.reload_dataloaders_every_n_epochs="
            f"{cfg.trainer.reload_dataloaders_every_n_epochs} rebuilds the rows between "
            "epochs: set one of them off."
        )
    datamodule = instantiate_unwrapping_errors(cfg.data)
    if datamodule.task != cfg.loss.task:
        raise ConfigError(
            f"data={cfg.data._target_.rsplit('.', 1)[-1]} is a {datamodule.task} task, but "
            f"loss.task={cfg.loss.task}; "
            f"use loss={'ce' if datamodule.task == 'classification' else 'mse'}."
        )
    datamodule.prepare_data()
    datamodule.setup("fit")
    make_model = instantiate(cfg.model, _partial_=True, _convert_="all")
    model = make_model(
        num_labels=datamodule.num_labels,
        id2label=datamodule.id2label,
        task=cfg.loss.task,
        freeze=instantiate_unwrapping_errors(cfg.freeze),
        label_smoothing=cfg.loss.label_smoothing,
        class_weights=class_weights(cfg.loss.class_weights, datamodule.class_counts()),
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler),
        weight_decay=cfg.optim.weight_decay,
        head_lr=cfg.optim.head_lr,
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_dict(cfg.get("callbacks")),
        logger=make_loggers(cfg.get("logger"), cfg, resuming=bool(cfg.get("ckpt_path"))) or False,
    )
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (or resume), restore the best weights, validate and test them, export them.

    Every reported metric comes from the best checkpoint: `val/*` and `test/*` alike.
    """
    check_config(cfg)  # before any work: a mistyped number stops here, naming its key
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    resume_from = check_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    datamodule, model, trainer = build(cfg)
    log.info("%s", datamodule.describe())
    trainable, total = model.hparams.trainable_params, model.hparams.total_params
    log.info(
        "freeze=%s: %s of %s parameters train", cfg.freeze.name, f"{trainable:,}", f"{total:,}"
    )
    if resume_from:
        log.info("resuming from %s", resume_from)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    fit_seconds = time.perf_counter() - start
    if trainer.interrupted:
        raise KeyboardInterrupt
    checkpoint = trainer.checkpoint_callback
    best = getattr(checkpoint, "best_model_path", "") or None
    if best:  # fast_dev_run saves none: then the weights are the last ones
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
    results: dict[str, Any] = {}
    for split, measure in (("val", trainer.validate), ("test", trainer.test)):
        if not datamodule.rows.get(split):
            log.info("no %s split (data.%s_file is not set): nothing to measure", split, split)
            continue
        measured = measure(model, datamodule=datamodule, verbose=False)
        results.update(measured[0] if measured else {})
    if datamodule.task == "regression" and datamodule.rows.get("test"):
        results |= mean_baseline(datamodule)
    epochs = trainer.current_epoch if not trainer.fast_dev_run else 1
    results |= {
        "fit_seconds": round(fit_seconds, 1),
        "train_samples": model.samples_trained,
        "train_samples_per_second": round(model.samples_trained / fit_seconds, 1),
        "epochs": epochs,
        "trainable_params": trainable,
        "total_params": total,
        "best_checkpoint": best,
        "best_score": getattr(checkpoint, "best_model_score", None),
    }
    if resume_from:
        results["resumed_from"] = str(resume_from)  # fit_seconds and samples: this part only
    results = {key: _number(value) for key, value in results.items()}
    # DDP: from here on one process works on whole splits. Close the group first, so the
    # export's evaluation neither shards the test split nor waits on ranks that have left.
    is_global_zero = trainer.is_global_zero
    end_process_group()
    if not is_global_zero:  # rank 0 alone writes the run's files
        return results
    if cfg.get("export"):
        model_dir = export_model(
            model, datamodule.tokenizer, datamodule.encoding, output_dir / "model"
        )
        results["model_dir"] = str(model_dir)
        if cfg.get("report") and datamodule.rows.get("test"):
            # What is deployed is what is reported: the exported model on the test split.
            evaluate(model_dir, datamodule, "test", output_dir / "evaluation")
            log_evaluation(trainer.loggers, output_dir / "evaluation")
    report_wandb_location(trainer.loggers)
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    print(results_table(results))
    return results


def mean_baseline(datamodule: Any) -> dict[str, float]:
    """Test MSE / MAE of always predicting the train split's mean target."""
    mean = sum(r["label"] for r in datamodule.rows["train"]) / len(datamodule.rows["train"])
    targets = [r["label"] for r in datamodule.rows["test"]]
    return {
        "test/mean_baseline_mse": sum((t - mean) ** 2 for t in targets) / len(targets),
        "test/mean_baseline_mae": sum(abs(t - mean) for t in targets) / len(targets),
    }


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def run(cfg: DictConfig) -> float | None:
    """The Hydra job; returns the optimized metric so sweepers (Optuna) can use it.

    A single run stops on a user error with one line (exit status 2). In a multirun a
    failing job is recorded (failed.json, the log) and returns NaN, so the sweep goes on.
    A run stopped by a signal saves last.ckpt and exits 128 + the signal's number.
    """
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        with isolated_job():
            results = train(cfg)
        failed = False
    except RunInterrupted as stop:
        log.warning("%s", stop)
        print(f"csft: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except Exception as err:
        if in_multirun():
            log.exception("job failed: %s", err)
            record_failure(output_dir, err)
            return float("nan")
        if isinstance(err, CsftError):
            log.error("%s", err)
            print(f"csft: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    finally:
        finish_wandb(failed)
    return sweep_score(results, cfg.optimized_metric)


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
