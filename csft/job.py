"""What every csft Hydra job that fits a model shares (`csft.train`, `csft.pretrain`): the
error policy around the work, the config groups it instantiates, the best checkpoint's
weights and plain numbers for metrics.json.

The policy: a single run stops on a user error with one line (exit status 2); in a multirun
a failing job is recorded (failed.json, the log) and returns NaN, so the sweep goes on; a
run stopped by a signal exits 128 + the signal's number; W&B is finished either way.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from csft.console import quiet_libraries
from csft.distributed import isolated_job
from csft.errors import CsftError
from csft.resume import RunInterrupted
from csft.sweep_summary import record_failure
from csft.tracking import finish_wandb


def run_job(
    cfg: DictConfig,
    work: Callable[[DictConfig], dict[str, Any]],
    score: Callable[[dict[str, Any]], float],
    log: logging.Logger,
) -> float | None:
    """Run `work(cfg)` in the run dir under the policy above; `score(results)` is what the
    job returns to a sweeper."""
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        with isolated_job():
            results = work(cfg)
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
    return score(results)


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def instantiate_dict(group: DictConfig | None) -> list[Any]:
    """Instantiate each `_target_` entry of a config group like `callbacks` or `logger`."""
    if not group:
        return []
    return [instantiate(item) for item in group.values() if item and "_target_" in item]


def restore_best_weights(trainer: pl.Trainer, model: pl.LightningModule) -> str | None:
    """Load the best checkpoint's weights into `model`; its path, or None when no checkpoint
    was kept (fast_dev_run): then the weights are the last ones."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if best:
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
    return best


def plain_number(value: Any) -> Any:
    """A metric as JSON takes it: tensors as numbers, floats rounded, inf / NaN as text."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value
