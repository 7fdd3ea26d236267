"""Multirun sweeps through the real CLI: grid, failures, W&B offline runs, Optuna search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INTENT_FIXTURE, ROOT

TINY_RUN = [
    "model=tiny",
    *INTENT_FIXTURE,
    "data.batch_size=4",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "callbacks.lr_monitor=null",
]


def sweep(sweep_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "csft.train",
        "-m",
        *TINY_RUN,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A 2×2 grid in which one cell (freeze=top4 on the 2-layer tiny BERT) must fail."""
    sweep_dir = tmp_path_factory.mktemp("grid")
    sweep(sweep_dir, "freeze=none,top4", "optim.lr=1e-3,3e-3")
    return sweep_dir


def test_grid_runs_every_combination_in_its_own_directory(grid):
    jobs = job_dirs(grid)
    assert len(jobs) == 4
    combinations = {
        tuple(
            line
            for line in (job / ".hydra" / "overrides.yaml").read_text().splitlines()
            if "freeze=" in line or "optim.lr=" in line
        )
        for job in jobs
    }
    assert len(combinations) == 4 and all(len(c) == 2 for c in combinations)
    finished = [j for j in jobs if (j / "metrics.json").is_file()]
    assert len(finished) == 2
    for job in finished:
        assert "freeze=none" in (job / ".hydra" / "overrides.yaml").read_text()
        assert (job / "model" / "config.json").is_file()


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(grid):
    failed = [j for j in job_dirs(grid) if (j / "failed.json").is_file()]
    assert len(failed) == 2
    for job in failed:
        failure = json.loads((job / "failed.json").read_text())
        assert failure["type"] == "ConfigError"
        assert "encoder has 2 layers" in failure["error"]
        assert "freeze=top4" in (job / ".hydra" / "overrides.yaml").read_text()


def test_wandb_offline_multirun_gives_each_job_its_own_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc key: offline by itself
    done = sweep(tmp_path / "sweep", "logger=wandb", "optim.lr=1e-3,3e-3", env=env)
    assert "wandb sync" in done.stdout
    runs = []
    for job in job_dirs(tmp_path / "sweep"):
        (run,) = list((job / "wandb").glob("offline-run-*"))
        runs.append(run.name)
        assert list(run.glob("run-*.wandb"))  # the run's history, metrics included
    assert len(set(runs)) == 2


def test_optuna_search_records_its_trials_in_sqlite(tmp_path):
    import optuna
    import yaml

    sweep_dir = tmp_path / "search"
    # val/loss, not the default val/acc: the tiny model's val/acc on 6 rows is the same in
    # every trial, its loss differs, so each trial's value can be told apart. A loss is
    # minimised: the study's direction follows the metric's name.
    sweep(
        sweep_dir,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "optimized_metric=val/loss",
    )
    jobs = job_dirs(sweep_dir)
    assert [job.name for job in jobs] == ["0", "1", "2"]
    study = optuna.load_study(study_name="csft", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    # Each trial is one job: the study holds the job's sampled values and its best score.
    scores = []
    for trial, job in zip(trials, jobs, strict=True):
        results = json.loads((job / "metrics.json").read_text())
        scores.append(results["best_score"])
        assert trial.value == pytest.approx(results["best_score"], abs=1e-6), job
        assert results["best_score"] == pytest.approx(results["val/loss"], abs=1e-6), job
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"optim.lr={trial.params['optim.lr']}" in overrides, job
    assert len(set(scores)) == 3, scores  # distinct values: the matching above can fail
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(scores), abs=1e-6)
    assert best["best_params"] == study.best_trial.params
