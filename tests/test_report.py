"""Sweep summaries (csft.sweep_summary, scripts/summarize_sweep.py) and the two notebooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from csft.errors import DataError
from csft.sweep_summary import (
    collect_jobs,
    markdown_table,
    reproduce_command,
    summarize,
    swept_keys,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT = ROOT / "scripts" / "summarize_sweep.py"
FIXED = ["model=tiny", "trainer.max_epochs=2"]
# job number → (freeze, lr, best_score); a 2×2 grid, then a failed and a running job.
GRID = {0: ("none", "1e-4", 0.81), 1: ("none", "2e-4", 0.93), 2: ("head", "1e-4", 0.42)}
GRID[3] = ("head", "2e-4", 0.55)


def write_job(
    sweep: Path,
    job: int,
    overrides: list[str],
    metrics: dict | None = None,
    failed: dict | None = None,
    mode: str = "max",
) -> None:
    hydra_dir = sweep / str(job) / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    task = "classification" if mode == "max" else "regression"
    (hydra_dir / "config.yaml").write_text(
        f"optimized_metric: ${{monitor:${{data.task}}}}\ndata:\n  task: {task}\n"
        "model:\n  name_or_path: ${packaged_minilm:}\n"
    )
    if metrics is not None:
        (sweep / str(job) / "metrics.json").write_text(json.dumps(metrics))
    if failed is not None:
        (sweep / str(job) / "failed.json").write_text(json.dumps(failed))


def metrics_for(score: float, monitor: str = "val/acc") -> dict:
    return {
        monitor: score - 0.01,
        "test/acc": score - 0.02,
        "test/f1_macro": score - 0.03,
        "best_score": score,
        "fit_seconds": 12.345678,
        "epochs": 2,
        "trainable_params": 123,
        "best_checkpoint": "/x/epoch01.ckpt",
    }


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A hand-made 2×2 sweep freeze × lr, plus job 4 failed and job 5 still running."""
    sweep = tmp_path / "multiruns" / "2026-01-01_00-00-00-000000"
    for job, (freeze, lr, score) in GRID.items():
        overrides = [*FIXED, f"freeze={freeze}", f"optim.lr={lr}"]
        write_job(sweep, job, overrides, metrics=metrics_for(score))
    write_job(
        sweep,
        4,
        [*FIXED, "freeze=top2", "optim.lr=1e-4"],
        failed={"error": "freeze.trainable_layers=9 > 6 layers", "type": "ConfigError"},
    )
    write_job(sweep, 5, [*FIXED, "freeze=top2", "optim.lr=2e-4"])
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n"
        + "".join(f"    - {o}\n" for o in FIXED)
        + "    - freeze=none,head,top2\n    - optim.lr=1e-4,2e-4\n"
    )
    return sweep


def test_collect_jobs_sorts_best_first_failed_and_running_last(sweep):
    frame = collect_jobs(sweep)
    assert frame["job"].tolist() == [1, 0, 3, 2, 4, 5]
    assert frame["status"].tolist() == ["ok"] * 4 + ["failed", "running"]
    assert frame["best_score"].iloc[:4].tolist() == [0.93, 0.81, 0.55, 0.42]
    assert frame["best_score"].iloc[4:].isna().all()
    assert frame["optim.lr"].iloc[0] == pytest.approx(2e-4)  # parsed as a number
    assert frame["freeze"].tolist()[:2] == ["none", "none"]
    assert frame["trainer.max_epochs"].tolist() == [2] * 6
    assert {"val/acc", "test/acc", "test/f1_macro", "fit_seconds", "epochs"} <= set(frame)
    assert "trainable_params" not in frame and "best_checkpoint" not in frame
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert "trainable_layers=9" in failed["error"] and "ConfigError" in failed["error"]
    assert frame["error"].notna().sum() == 1
    assert swept_keys(frame) == ["freeze", "optim.lr"]
    assert frame.attrs["optimized_metric"] == "val/acc" and frame.attrs["mode"] == "max"
    assert reproduce_command(frame) == (
        "python -m csft.train model=tiny trainer.max_epochs=2 freeze=none optim.lr=2e-4"
    )


def test_summarize_writes_markdown_csv_and_png(sweep, tmp_path):
    out = tmp_path / "report"
    frame = summarize(sweep, out)
    paths = {kind: Path(path) for kind, path in frame.attrs["paths"].items()}
    assert paths == {k: out / f"summary.{k}" for k in ("md", "csv", "png")}

    lines = paths["md"].read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:5] == ["job", "status", "freeze", "optim.lr", "best_score"]
    assert header[5:] == ["test/acc", "test/f1_macro", "fit_seconds", "error"]
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert len(rows) == 6
    assert "| 12.35 |" in rows[0]  # 4 significant digits
    assert rows[0].startswith("| 1 | ok | none | 0.0002 | 0.93 |")

    back = pd.read_csv(paths["csv"])
    assert back["job"].tolist() == [1, 0, 3, 2, 4, 5]
    assert back["best_score"].iloc[0] == pytest.approx(0.93)
    assert swept_keys(back) == ["freeze", "optim.lr"]  # found without attrs
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)


def test_summarize_defaults_to_the_sweep_dir_and_plots_a_single_swept_key(tmp_path):
    for job, lr in enumerate(["1e-5", "1e-4", "1e-3"]):
        write_job(tmp_path, job, [f"optim.lr={lr}"], metrics_for(0.5 + job / 10))
    frame = summarize(tmp_path)
    assert swept_keys(frame) == ["optim.lr"]  # from the jobs: no multirun.yaml
    assert (tmp_path / "summary.png").read_bytes().startswith(PNG_MAGIC)
    assert markdown_table(frame).count("\n") == 4


def test_optuna_params_in_multirun_yaml_are_swept_keys(tmp_path):
    trials = [("3.1e-5", "0.12", "head"), ("2.2e-4", "0.05", "none"), ("9.7e-5", "0.2", "head")]
    for job, (lr, dropout, freeze) in enumerate(trials):
        overrides = ["seed=1", f"optim.lr={lr}", f"model.dropout={dropout}"]
        write_job(tmp_path, job, [*overrides, f"freeze={freeze}"], metrics_for(0.6 + job / 10))
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      freeze: choice(none, head)\n"
        "      optim.lr: tag(log, interval(1e-5, 5e-4))\n"
        "      model.dropout: interval(0.0, 0.3)\n  overrides:\n    task:\n    - seed=1\n"
    )
    frame = summarize(tmp_path)
    assert swept_keys(frame) == ["freeze", "optim.lr", "model.dropout"]
    assert frame["job"].tolist() == [2, 1, 0]
    assert (tmp_path / "summary.png").read_bytes().startswith(PNG_MAGIC)


def test_min_mode_sorts_ascending(tmp_path):
    for job, score in enumerate([0.7, 0.2, 0.5]):
        overrides = ["loss=mse", f"optim.lr={job + 1}e-4"]
        write_job(tmp_path, job, overrides, metrics_for(score, "val/mse"), mode="min")
    frame = collect_jobs(tmp_path)
    assert frame["best_score"].tolist() == [0.2, 0.5, 0.7]
    assert frame["job"].tolist() == [1, 2, 0]
    assert frame.attrs["optimized_metric"] == "val/mse"


def test_nan_scores_sort_after_scored_jobs(tmp_path):
    write_job(tmp_path, 0, ["seed=1"], metrics={"best_score": "nan", "val/acc": "nan"})
    write_job(tmp_path, 1, ["seed=2"], failed={"error": "boom"})
    write_job(tmp_path, 2, ["seed=3"])
    write_job(tmp_path, 3, ["seed=4"], metrics=metrics_for(0.4))
    frame = summarize(tmp_path)
    assert frame["job"].tolist() == [3, 0, 1, 2]  # an ok job without a score: after scored ones
    assert frame["status"].tolist() == ["ok", "ok", "failed", "running"]
    assert frame["error"].iloc[2] == "boom"
    assert (tmp_path / "summary.png").read_bytes().startswith(PNG_MAGIC)


def test_a_dir_without_jobs_raises_a_data_error_naming_it(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(DataError, match=str(tmp_path)):
        collect_jobs(tmp_path)
    with pytest.raises(DataError, match="no such sweep directory"):
        collect_jobs(tmp_path / "missing")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_prints_the_table_and_the_paths(sweep, tmp_path):
    done = cli(str(sweep), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "| job | status | freeze | optim.lr | best_score |" in done.stdout
    assert "python -m csft.train model=tiny" in done.stdout
    assert f"wrote {tmp_path / 'out' / 'summary.png'}" in done.stdout


def test_cli_exits_2_on_an_empty_dir(tmp_path):
    done = cli(str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("csft: error:") and str(tmp_path) in done.stderr
    assert "Traceback" not in done.stderr


# Notebooks: executed top to bottom in a fresh kernel, as a reader would run them.


def run_notebook(name: str, tmp_path: Path, monkeypatch) -> list[str]:
    """Execute notebooks/<name> with its cwd in tmp_path; return each code cell's text output."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's mkdtemp lands in tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    for cell in nb.cells:  # committed without outputs
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for output in cell.outputs:
            assert output.output_type != "error", output
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
        texts.append("".join(parts))
    return texts


def test_quickstart_notebook_trains_evaluates_and_predicts(tmp_path, monkeypatch):
    texts = run_notebook("quickstart.ipynb", tmp_path, monkeypatch)
    output = "\n".join(texts)
    assert "test accuracy: " in output
    assert "'test/acc'" in texts[-3]  # evaluate's scores
    assert "'label'" in texts[-1] and "'score'" in texts[-1]  # pipeline predictions
    assert "'handoff'" in texts[-1] and "'top_k'" in texts[-1]  # csft's Predictor
    assert list(tmp_path.glob("csft-quickstart-*/model/csft.json"))


def test_sweep_notebook_summarizes_a_given_sweep(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("CSFT_SWEEP_DIR", str(sweep))
    output = "\n".join(run_notebook("sweep_analysis.ipynb", tmp_path, monkeypatch))
    assert "python -m csft.train model=tiny trainer.max_epochs=2 freeze=none" in output
    assert (sweep / "summary.png").is_file()


def test_sweep_notebook_builds_and_summarizes_a_demo_sweep(tmp_path, monkeypatch):
    monkeypatch.delenv("CSFT_SWEEP_DIR", raising=False)
    output = "\n".join(run_notebook("sweep_analysis.ipynb", tmp_path, monkeypatch))
    assert "python -m csft.train model=tiny data=csv" in output
    (sweep_dir,) = tmp_path.glob("csft-sweep-*")
    frame = pd.read_csv(sweep_dir / "summary.csv")
    assert sorted(frame["status"]) == ["ok"] * 4
    assert os.path.isfile(sweep_dir / "summary.png")
