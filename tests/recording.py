"""A callback that records what each training batch of a real fit looked like, for tests.

Instantiated from config (`+callbacks.record._target_=recording.BatchRecorder`), so the run
under test is the one `csft.train` builds, with every default in place.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class BatchRecorder(pl.Callback):
    """Appends one JSON line per training batch to `path`: epoch, rows, module modes, loss."""

    def __init__(self, path: str, watch: str | None = None) -> None:
        self.path = Path(path)
        self.watch = Path(watch) if watch else None  # a file whose existence is recorded too

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        frozen = {id(m) for f in module.frozen for m in f.modules()}
        rest = [m for part in (module.encoder, module.head) for m in part.modules()]
        rest = [m for m in rest if id(m) not in frozen]
        self._row = {
            "epoch": trainer.current_epoch,
            "rows": batch["index"].tolist(),
            "frozen_in_train_mode": sum(m.training for f in module.frozen for m in f.modules()),
            "frozen_modules": len(frozen),
            "trainable_in_eval_mode": sum(not m.training for m in rest),
            "trainable_modules": len(rest),
            "step": trainer.global_step,
            "watched_file_exists": bool(self.watch and self.watch.is_file()),
        }

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any) -> None:
        self._row["loss"] = float(outputs["loss"])
        with self.path.open("a") as handle:
            handle.write(json.dumps(self._row) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class SignalAt(pl.Callback):
    """Sends this process `signum` after training batch `step` of a run not itself resumed:
    a preemption in the middle of an epoch, delivered as a real signal."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.ckpt_path is None and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
