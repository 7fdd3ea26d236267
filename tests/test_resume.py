"""A run stopped by a signal in the middle of an epoch, then resumed, ends where an
uninterrupted run of the same seed ends: the same weights, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import INTENT_FIXTURE, ROOT, compose, tiny_overrides
from recording import read

from csft.train import train

# 18 train rows in batches of 4: 5 steps an epoch, 15 in all. Defaults otherwise (dropout
# on, fused Adam with warmup, CSV logger, checkpoints, report).
RUN = [
    "model=tiny",
    *INTENT_FIXTURE,
    "data.batch_size=4",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "optim.lr=1e-3",
]
STOP_AT = 7  # epoch 1, its third batch


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    done = subprocess.run(
        [sys.executable, "-m", "csft.train", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == expect, done.stderr[-4000:]
    return done


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and the same run stopped by SIGTERM at step 7 (with W&B on)."""
    root = tmp_path_factory.mktemp("resume")
    whole, stopped = root / "whole", root / "stopped"
    cli(*RUN, f"hydra.run.dir={whole}")
    killed = cli(
        *RUN,
        "logger=many",
        "+callbacks.stop._target_=recording.SignalAt",
        f"+callbacks.stop.step={STOP_AT}",
        f"hydra.run.dir={stopped}",
        expect=128 + signal.SIGTERM,
    )
    return whole, stopped, killed


def test_sigterm_saves_last_ckpt_mid_epoch_and_prints_the_resume_command(runs):
    _, stopped, killed = runs
    assert "Traceback" not in killed.stderr
    message = [line for line in killed.stderr.splitlines() if line.startswith("csft: ")]
    assert len(message) == 1, killed.stderr[-2000:]
    assert "SIGTERM" in message[0] and f"resume={stopped}" in message[0]
    checkpoint = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == STOP_AT + 1 and checkpoint["epoch"] == 1
    assert not (stopped / "metrics.json").exists() and not (stopped / "model").exists()


def test_resumed_run_ends_with_the_weights_of_the_uninterrupted_run(runs):
    whole, resumed, _ = runs  # resumed in place, as a user does
    first_wandb_id = (resumed / "wandb_run_id").read_text()
    cli(f"resume={resumed}")
    expected, got = weights(whole), weights(resumed)
    assert expected.keys() == got.keys()
    for key in expected:  # exact: same batches, same dropout masks, same optimizer state
        assert torch.equal(expected[key], got[key]), key
    final = json.loads((resumed / "metrics.json").read_text())
    reference = json.loads((whole / "metrics.json").read_text())
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "best_score", "epochs"):
        assert final[key] == reference[key], key
    assert final["resumed_from"] == str(resumed / "checkpoints" / "last.ckpt")
    # Into the same directory: the first part's epoch-0 metrics are still in the CSV log,
    # and W&B continued the same run.
    rows = (resumed / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {row.split(",")[header.index("epoch")] for row in rows[1:]}
    assert {"0", "1", "2"} <= epochs
    assert (resumed / "wandb_run_id").read_text() == first_wandb_id
    assert len(list((resumed / "wandb").glob(f"*run-*-{first_wandb_id}"))) == 2


def test_resume_of_a_truncated_checkpoint_names_the_file(runs, tmp_path):
    _, stopped, _ = runs
    broken = tmp_path / "broken"
    shutil.copytree(stopped, broken)
    last = broken / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    done = cli(f"resume={broken}", expect=2)
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"csft: error: {last}: cannot be read")


def test_ctrl_c_stops_the_same_way(tmp_path):
    done = cli(
        *RUN,
        "+callbacks.stop._target_=recording.SignalAt",
        "+callbacks.stop.step=3",
        f"+callbacks.stop.signum={int(signal.SIGINT)}",
        f"hydra.run.dir={tmp_path}",
        expect=128 + signal.SIGINT,
    )
    assert "SIGINT received" in done.stderr and f"resume={tmp_path}" in done.stderr
    assert (
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    )


def test_last_ckpt_is_written_every_n_train_steps_within_an_epoch(tmp_path):
    log = tmp_path / "batches.jsonl"
    cfg = compose(
        tiny_overrides(
            tmp_path,
            *RUN,
            "trainer.max_epochs=1",
            "callbacks.last_checkpoint.every_n_train_steps=2",
            "+callbacks.record._target_=recording.BatchRecorder",
            f"+callbacks.record.path={log}",
            f"+callbacks.record.watch={tmp_path / 'checkpoints' / 'last.ckpt'}",
        )
    )
    train(cfg)
    seen = {b["step"]: b["watched_file_exists"] for b in read(log)}
    assert seen == {0: False, 1: False, 2: True, 3: True, 4: True}


def test_resume_needs_a_run_directory(tmp_path):
    done = cli(f"resume={tmp_path}", expect=2)
    assert "not a csft run directory" in done.stderr
