"""DDP on CPU (gloo): two processes match one, also when launched from a Hydra multirun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import FIXTURES, INTENT_FIXTURE, ROOT, tiny_overrides

from csft.data.samplers import LengthBucketBatchSampler

# 24 dialogues, 18 train rows after a 25 % validation split: 3 global batches of 6.
DDP_RUN = [
    "model=tiny",
    "model.dropout=0.0",
    *INTENT_FIXTURE,
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "callbacks.lr_monitor=null",
    "optim.lr=3e-3",
    "optim.optimizer.fused=false",
    "data.eval_batch_size=2",  # 5 test rows on 2 ranks: a last global batch of 1 row
]


@pytest.fixture()
def five_test_rows(tmp_path):
    lines = (FIXTURES / "intents_test.csv").read_text().splitlines()
    path = tmp_path / "five.csv"
    path.write_text("\n".join(lines[:6]) + "\n")
    return f"data.test_file={path}"


def cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "csft.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_ranks_get_disjoint_slices_of_the_same_global_batches():
    lengths = list(range(5, 55))
    single = list(LengthBucketBatchSampler(lengths, 10, seed=4))
    ranks = [
        list(LengthBucketBatchSampler(lengths, 5, seed=4, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for whole, a, b in zip(single, *ranks, strict=True):
        assert sorted(a + b) == sorted(whole) and not set(a) & set(b)


def test_a_short_last_global_batch_still_feeds_every_rank():
    shards = [list(LengthBucketBatchSampler([3] * 7, 2, num_replicas=4, rank=r)) for r in range(4)]
    assert all(len(s) == 1 and len(s[0]) >= 1 for s in shards)


def test_two_gloo_processes_match_one_process(tmp_path, five_test_rows):
    """With the defaults (report=true): the run finishes, exports and scores its export."""
    one = tmp_path / "one"
    two = tmp_path / "two"
    cli(*DDP_RUN, five_test_rows, "data.batch_size=6", f"hydra.run.dir={one}")
    cli(
        *DDP_RUN,
        five_test_rows,
        "trainer=ddp",
        "trainer.devices=2",
        "data.batch_size=3",
        f"hydra.run.dir={two}",
    )
    single = json.loads((one / "metrics.json").read_text())
    double = json.loads((two / "metrics.json").read_text())
    # Same global batches, same init, no dropout: only float summation order differs
    # (gloo all-reduce vs one batch), which Adam's normalisation amplifies a little.
    for key in ("val/loss", "test/loss"):
        assert double[key] == pytest.approx(single[key], rel=0.02), key
    assert double["test/acc"] == pytest.approx(single["test/acc"], abs=0.17)  # ≤ 1 of 6 rows
    assert (two / "train_rank1.log").is_file()  # rank 1 ran the same job, in the same dir
    # data.batch_size is per device: 2 ranks × 3 rows make the one process's global batch of
    # 6, so both runs take 3 optimizer steps an epoch over the 18 train rows (2 epochs).
    for run_dir, results in ((one, single), (two, double)):
        assert results["train_samples"] == 2 * 18, run_dir
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        assert last["global_step"] == 2 * 3, run_dir
    # The synced DDP test metrics count each of the 5 rows once: they equal the one-process
    # evaluation of the exported (same, best) weights on the whole split.
    evaluated = json.loads((two / "evaluation" / "metrics.json").read_text())
    assert evaluated["rows"] == 5
    for key in ("test/acc", "test/f1_macro"):
        assert double[key] == pytest.approx(evaluated[key], abs=1e-6), key


@pytest.mark.parametrize("world", range(1, 9))
def test_evaluation_batches_deal_every_row_to_exactly_one_rank(world):
    for size in range(1, 201):
        lengths = [(7 * i) % 23 + 1 for i in range(size)]
        for batch_size in (1, 3, 128):
            seen = [
                row
                for rank in range(world)
                for batch in LengthBucketBatchSampler(
                    lengths, batch_size, shuffle=False, num_replicas=world, rank=rank
                )
                for row in batch
            ]
            assert sorted(seen) == list(range(size)), (size, world, batch_size)
            sizes = [
                len(
                    LengthBucketBatchSampler(lengths, batch_size, False, num_replicas=world, rank=r)
                )
                for r in range(world)
            ]
            assert max(sizes) - min(sizes) <= 1


def test_ddp_under_multirun_runs_each_job_once(tmp_path):
    sweep = tmp_path / "sweep"
    cli(
        "-m",
        *DDP_RUN,
        "trainer=ddp",
        "trainer.devices=2",
        "data.batch_size=3",
        "optim.lr=1e-3,3e-3",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]  # no extra sweep started by a child rank
    for job in jobs:  # each job trained once over both ranks: 18 rows an epoch, 2 epochs
        assert json.loads((sweep / job / "metrics.json").read_text())["train_samples"] == 36


def test_slurm_launcher_config_follows_the_trainer(tmp_path):
    from conftest import CONF
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            tiny_overrides(
                tmp_path,
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.devices=4",
                "trainer.num_nodes=2",
                "hydra.launcher.partition=gpu",
            ),
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu"
