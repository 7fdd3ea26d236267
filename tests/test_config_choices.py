"""Config group options do what they say in a real run: the optimizer and schedule that
`optim=` names, the metric files that `logger=` names."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

import pytest
import torch
from conftest import INTENT_FIXTURE, compose

from csft.train import build, train

# 18 train rows in batches of 4: 5 optimizer steps an epoch.
STEPS_PER_EPOCH = 5
FIT = [
    "model=tiny",
    *INTENT_FIXTURE,
    "data.batch_size=4",
    "trainer.enable_progress_bar=false",
]


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


# -- optim -----------------------------------------------------------------------------------
def cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def linear(step: int, total: int, warmup: int) -> float:
    return (step + 1) / warmup if step < warmup else 1 - (step - warmup) / (total - warmup)


def test_adamw_cosine_trains_with_adamw_decay_and_a_cosine_schedule(tmp_path):
    epochs = 2
    total = epochs * STEPS_PER_EPOCH  # 10 steps, 10 % (1) of them warmup
    cfg = compose(
        [
            *FIT,
            "optim=adamw_cosine",
            f"trainer.max_epochs={epochs}",
            "trainer.log_every_n_steps=1",  # the LearningRateMonitor's lr at every step
            f"paths.output_dir={tmp_path}",
        ]
    )
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == total

    (optimizer,) = trainer.optimizers
    assert type(optimizer) is torch.optim.AdamW
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        plain = [n.endswith("bias") or "LayerNorm" in n for n in group_names]
        assert all(plain) or not any(plain), group_names
        assert group["weight_decay"] == (0.0 if all(plain) else 0.01), group_names
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.01}
    (scheduler,) = trainer.lr_scheduler_configs
    assert scheduler.interval == "step"

    # The learning rate each step trained with, as the LearningRateMonitor logged it: one
    # column per parameter group, all at optim.lr (head_lr=null).
    rows = csv_rows(tmp_path)
    columns = [c for c in rows[0] if c.startswith("lr-AdamW")]
    assert columns, rows[0].keys()
    cosine_lrs = [cfg.optim.lr * cosine(step, total, warmup=1) for step in range(total)]
    linear_lrs = [cfg.optim.lr * linear(step, total, warmup=1) for step in range(total)]
    for column in columns:
        trace = {int(r["step"]): float(r[column]) for r in rows if r[column]}
        assert sorted(trace) == list(range(total)), column
        got = [trace[step] for step in range(total)]
        assert got == pytest.approx(cosine_lrs, rel=1e-6), column
        assert got != pytest.approx(linear_lrs, rel=1e-3), column  # adam_warmup's shape


# -- logger ----------------------------------------------------------------------------------
def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def wandb_history(run_file: Path) -> list[dict[str, str]]:
    """The history rows of an offline W&B run file: records in LevelDB's log format (32 KiB
    blocks of chunks with a 7-byte header) after a 7-byte W&B header."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", run_file
    block, position, pending, rows = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header: padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                )
    return rows


@pytest.mark.parametrize("logger", ["tensorboard", "many"])
def test_logger_option_writes_val_metrics_for_every_epoch(tmp_path, monkeypatch, logger):
    import json

    from csft.tracking import finish_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose(
        [
            *FIT,
            f"logger={logger}",
            "trainer.max_epochs=2",
            "callbacks.lr_monitor=null",
            f"paths.output_dir={tmp_path}",
        ]
    )
    try:
        results = train(cfg)
    finally:
        finish_wandb(failed=False)  # what the Hydra job does after train()
    assert results == json.loads((tmp_path / "metrics.json").read_text())

    # TensorBoard: val/acc at the end of epochs 0 and 1 (steps 4 and 9), then the best
    # checkpoint's, measured after fit (step 10, epoch 2), which metrics.json reports.
    epoch_at = dict(tensorboard_scalars(tmp_path, "epoch"))
    val_acc = tensorboard_scalars(tmp_path, "val/acc")
    assert [(step, epoch_at[step]) for step, _ in val_acc] == [(4, 0), (9, 1), (10, 2)]
    assert val_acc[-1][1] == pytest.approx(results["val/acc"], abs=1e-6)
    val_loss = tensorboard_scalars(tmp_path, "val/loss")
    assert val_loss[-1][1] == pytest.approx(results["val/loss"], abs=1e-6)

    wandb_runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    if logger == "tensorboard":  # that logger alone
        assert not (tmp_path / "csv").exists() and not wandb_runs
        return
    # many: the CSV log and the offline W&B run hold the same val/loss at the same steps.
    from_csv = [(int(r["step"]), float(r["val/loss"])) for r in csv_rows(tmp_path) if r["val/loss"]]
    (run_file,) = wandb_runs
    from_wandb = [
        (int(row["trainer/global_step"]), float(row["val/loss"]))
        for row in wandb_history(run_file)
        if "val/loss" in row
    ]
    for logged in (from_csv, from_wandb):
        assert [step for step, _ in logged] == [4, 9, 10]
        assert [value for _, value in logged] == pytest.approx([v for _, v in val_loss], abs=1e-6)
