"""Stopping a run safely and continuing it: `python -m csft.train resume=<run dir>`.

A run saves `checkpoints/last.ckpt` (`LastCheckpoint`) at every epoch end, every
`callbacks.last_checkpoint.every_n_train_steps` steps, and when it is told to stop (SIGTERM:
preemption, SLURM's signal before the time limit; or Ctrl+C). The checkpoint holds what
continuing needs: weights, optimizer, scheduler, epoch and step (Lightning), the position in
the epoch's batch order (the DataModule's state) and the random number generators
(`RandomState`). Resuming re-runs the job with the overrides the run was started with, into
the same directory.
"""

from __future__ import annotations

import logging
import random
import shlex
import signal
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

from csft.errors import ConfigError, CsftError, DataError

log = logging.getLogger("csft.resume")
LAST = "last.ckpt"


class RunInterrupted(CsftError):
    """The run was asked to stop; its last.ckpt is saved and it can be resumed."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "ended by signal N"


def check_checkpoint(path: str | Path) -> Path:
    """A readable checkpoint, or one error naming the file (a truncated or corrupt one)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no checkpoint there.")
    try:  # torch.save writes a zip archive: a cut-short file has no central directory
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read (truncated or corrupt?): {err}") from None
    if bad is not None:
        raise DataError(f"{path}: cannot be read (corrupt entry {bad!r}).")
    return path


def resume_arguments(args: list[str]) -> list[str]:
    """Expand `resume=<run dir>` into the run's own overrides, its directory and its last.ckpt.

    Other arguments given with it come after the saved ones, so they win (e.g. a larger
    trainer.max_epochs to train on).
    """
    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    if len(given) > 1 or {"-m", "--multirun"} & set(args):
        raise ConfigError("resume=<run dir> resumes one run: give it once, without -m.")
    run_dir = Path(given[0].split("=", 1)[1]).expanduser().resolve()
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        raise ConfigError(f"resume={run_dir}: not a csft run directory (no {overrides}).")
    checkpoint = run_dir / "checkpoints" / LAST  # train() checks it, naming the file
    saved = yaml.safe_load(overrides.read_text()) or []
    saved = [o for o in saved if not o.startswith(("ckpt_path=", "resume="))]
    rest = [a for a in args if not a.startswith("resume=")]
    return [*saved, *rest, f"hydra.run.dir={run_dir}", f"ckpt_path={checkpoint}"]


def resume_command(run_dir: str | Path) -> str:
    return f"python -m csft.train resume={shlex.quote(str(run_dir))}"


class RandomState(pl.Callback):
    """Saves the random generators (dropout masks come from them) in every checkpoint and puts
    them back when a resumed fit starts, so the resumed run draws what the whole run would."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Tensors and plain values only: checkpoints must still load with weights_only=True
        # (what `Classifier.load_from_checkpoint` does), which refuses numpy arrays.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not at load time: the fit loop's first iter() over the loaders (which draws a
        # seed from torch's generator) comes between the two.
        if self._restore is None:
            return
        torch.set_rng_state(self._restore["torch"])
        random.setstate(self._restore["python"])
        kind, keys, pos, has_gauss, gauss = self._restore["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        if "cuda" in self._restore and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._restore["cuda"])
        self._restore = None


class LastCheckpoint(pl.Callback):
    """Keeps checkpoints/last.ckpt, the point a resumed run continues from: written at every
    epoch end (after its validation), every `every_n_train_steps` optimizer steps, and when
    the process is told to stop.

    SIGTERM or Ctrl+C during fit: finish the batch, save, stop with the command that
    resumes (exit status 128 + the signal's number). A second Ctrl+C stops at once.
    The file is written under a temporary name and renamed: a kill while writing leaves the
    previous last.ckpt whole.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(
        self, dirpath: str | Path, run_dir: str | Path, every_n_train_steps: int | None = None
    ) -> None:
        self.path = Path(dirpath) / LAST
        self.run_dir = Path(run_dir)
        self.every_n_train_steps = every_n_train_steps
        self._saved_step = -1
        self._received: int | None = None
        self._previous: dict[int, Any] = {}

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            partial.replace(self.path)
        self._saved_step = trainer.global_step

    # -- when --------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        received = self._received is not None
        if trainer.world_size > 1:  # every rank stops at the same batch
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if received:
            self.save(trainer)
            self._stop(trainer)
        step, every = trainer.global_step, self.every_n_train_steps
        if every and step % every == 0 and step != self._saved_step:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    # -- signals -----------------------------------------------------------------------------
    def _note(self, signum: int, frame: Any) -> None:
        if self._received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._received = signum
        log.warning("%s received: stopping after this batch", signal.Signals(signum).name)

    def _stop(self, trainer: pl.Trainer) -> None:
        self._restore_handlers()
        signum = self._received or signal.SIGTERM
        raise RunInterrupted(
            f"{signal.Signals(signum).name} received: stopped at epoch {trainer.current_epoch}, "
            f"step {trainer.global_step}; saved {self.path}. Resume with: "
            f"{resume_command(self.run_dir)}",
            signum,
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._received = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        self._restore_handlers()
