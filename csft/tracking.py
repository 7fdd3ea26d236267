"""Experiment tracking: loggers from config, W&B runs that behave inside sweeps.

Without an API key W&B runs offline and says how to sync. In a multirun every job is its
own W&B run, grouped by the sweep, tagged with the job's overrides, and finished at the end
of the job, also when the job fails.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import loggers
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from csft.instantiation import instantiate_unwrapping_errors

log = logging.getLogger("csft.tracking")
WANDB_TARGET = "pytorch_lightning.loggers.WandbLogger"
WANDB_RUN_ID = "wandb_run_id"  # in the run dir: a resumed run continues the same W&B run


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; this one keeps its rows and header."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = sorted(csv.DictReader(handle).fieldnames or [])


class CSVLogger(loggers.CSVLogger):
    """`pytorch_lightning.loggers.CSVLogger` that appends, so a resumed run keeps the metrics
    its first part logged."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def job_identity() -> dict[str, Any]:
    """Name, group and tags that tell sweep jobs apart (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    identity: dict[str, Any] = {"tags": [o[:64] for o in overrides]}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        identity["group"] = Path(hydra_cfg.sweep.dir).name
        identity["name"] = f"{hydra_cfg.job.num}: {hydra_cfg.job.override_dirname}"[:128]
    return identity


def make_loggers(
    group: DictConfig | None, run_config: DictConfig, resuming: bool = False
) -> list[Any]:
    """Instantiate every logger of the `logger` group; W&B gets offline mode, group and tags,
    and a resumed run the W&B run id its first part had."""
    loggers = []
    for item in (group or {}).values():
        if not item or "_target_" not in item:
            continue
        extra: dict[str, Any] = {}
        if item._target_ == WANDB_TARGET:
            if not wandb_has_key() and os.environ.get("WANDB_MODE") is None:
                os.environ["WANDB_MODE"] = "offline"
                log.info("W&B: no API key (WANDB_API_KEY or ~/.netrc), logging offline")
            identity = job_identity()
            extra["tags"] = [*list(item.get("tags") or []), *identity.get("tags", [])]
            for key in ("group", "name"):
                if item.get(key) is None and key in identity:
                    extra[key] = identity[key]
            id_file = Path(item.save_dir) / WANDB_RUN_ID
            if resuming and item.get("id") is None and id_file.is_file():
                extra |= {"id": id_file.read_text().strip(), "resume": "allow"}
        logger = instantiate_unwrapping_errors(item, **extra)
        if item._target_ == WANDB_TARGET:  # the whole resolved config, not just the model's
            config = OmegaConf.to_container(run_config, resolve=True)
            logger.experiment.config.update(config, allow_val_change=True)
            run_id = getattr(logger.experiment, "id", None)
            if isinstance(run_id, str):  # rank 0 only has a real run
                (Path(item.save_dir) / WANDB_RUN_ID).write_text(run_id)
        loggers.append(logger)
    return loggers


def wandb_loggers(loggers: list[Any]) -> list[Any]:
    from pytorch_lightning.loggers import WandbLogger

    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def log_evaluation(loggers: list[Any], evaluation_dir: Path) -> None:
    """Send the test confusion matrix and the per-class report to W&B (if a W&B logger runs)."""
    for logger in wandb_loggers(loggers):
        import wandb  # only here: a run with other loggers works where wandb is not installed

        run = logger.experiment
        image = evaluation_dir / "confusion_matrix.png"
        if image.is_file():
            run.log({"test/confusion_matrix": wandb.Image(str(image))})
        report = evaluation_dir / "per_class.csv"
        if report.is_file():
            with report.open() as handle:
                rows = list(csv.reader(handle))
            run.log({"test/per_class": wandb.Table(columns=rows[0], data=rows[1:])})


def report_wandb_location(loggers: list[Any]) -> None:
    for logger in wandb_loggers(loggers):
        run = logger.experiment
        if run.settings.mode == "offline" or os.environ.get("WANDB_MODE") == "offline":
            run_dir = Path(run.dir).parent
            message = f"W&B run written offline to {run_dir}; upload it with: wandb sync {run_dir}"
            log.info(message)
            print(message)


def finish_wandb(failed: bool) -> None:
    """Close the job's W&B run (if one was started), marking it failed when the job failed."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
