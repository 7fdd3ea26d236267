"""scripts/learning_curve.py: the runs it starts (a stand-in interpreter), resuming, the
table / JSON / plot numbers against the runs' own metrics.json; and (slow: three real
subprocess runs of the tiny BERT, about a minute on 2 CPUs) the same on real runs."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, INTENT_FIXTURE, ROOT, tiny_overrides

sys.path.insert(0, str(ROOT / "scripts"))
import learning_curve as curve


def hydra_overrides(tmp_path: Path) -> list[str]:
    """tiny_overrides without paths.output_dir (each run's dir is hydra.run.dir), 1 epoch."""
    tiny = [o for o in tiny_overrides(tmp_path) if not o.startswith("paths.output_dir")]
    return [*tiny, *INTENT_FIXTURE, "data.batch_size=4", "trainer.max_epochs=1", "export=false"]


@pytest.fixture(scope="module")
def fixture_curve(tmp_path_factory):
    """K = 2, 4 and full at seed 0: three real `python -m csft.train` runs."""
    tmp = tmp_path_factory.mktemp("curve")
    out = tmp / "curve"
    argv = ["--shots", "2,4,full", "--seeds", "0", "--out", str(out), "--"]
    assert curve.main([*argv, *hydra_overrides(tmp)]) == 0
    return out, argv, hydra_overrides(tmp)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def table_cells(markdown: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in markdown.splitlines()[2:]]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.slow
def test_the_curve_reports_each_run_s_own_numbers(fixture_curve):
    out, _, _ = fixture_curve
    runs = out.with_name("curve_runs")
    assert sorted(p.name for p in runs.iterdir()) == ["K2_s0", "K4_s0", "full_s0"]
    summary = json.loads(out.with_suffix(".json").read_text())
    points = {p["shots"]: p for p in summary["points"]}
    assert list(points) == [2, 4, "full"]
    # rows: K per class of the 3 intents; full = 24 rows less the 25 % validation carve
    assert [points[k]["train_rows"] for k in (2, 4, "full")] == [6, 12, 18]
    assert [points[k]["rows_per_class"] for k in (2, 4, "full")] == [2, 4, 6]
    assert len(json.loads((runs / "K4_s0" / "data_sample.json").read_text())["train"]) == 12
    cells = table_cells(out.with_suffix(".md").read_text())
    for k, name in ((2, "K2_s0"), (4, "K4_s0"), ("full", "full_s0")):
        saved = metrics(runs / name)
        point = points[k]
        assert point["acc_mean"] == saved["test/acc"] and point["acc_std"] == 0
        assert point["f1_mean"] == saved["test/f1_macro"]
        assert point["fit_seconds_mean"] == saved["fit_seconds"]
        row = cells[str(k) if k != "full" else "full (6 per class)"]
        assert row[1] == f"{saved['test/acc']:.4f} ± 0.0000"
        assert row[2] == f"{saved['test/f1_macro']:.4f} ± 0.0000"
    # what the PNG draws
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = curve.plot_curve(summary)
    accuracy = fig.axes[0].lines[0]
    assert list(accuracy.get_xdata()) == [2, 4, 6]
    assert list(accuracy.get_ydata()) == [
        metrics(runs / n)["test/acc"] for n in ("K2_s0", "K4_s0", "full_s0")
    ]
    assert fig.axes[0].get_xscale() == "log"


@pytest.mark.slow
def test_a_second_call_runs_nothing_again_and_refuses_other_overrides(
    fixture_curve, monkeypatch, capsys
):
    out, argv, overrides = fixture_curve
    before = out.with_suffix(".json").read_text()

    def no_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(subprocess, "run", no_run)
    assert curve.main([*argv, *overrides]) == 0
    assert out.with_suffix(".json").read_text() == before
    assert curve.main([*argv, *overrides, "optim.lr=1e-2"]) == 2
    assert "was made with the overrides" in capsys.readouterr().err


@pytest.mark.slow
def test_from_runs_rebuilds_the_outputs(fixture_curve, tmp_path):
    out, _, _ = fixture_curve
    again = tmp_path / "again"
    runs = out.with_name("curve_runs")
    assert curve.main(["--from-runs", "--runs", str(runs), "--out", str(again)]) == 0
    assert again.with_suffix(".md").read_text() == out.with_suffix(".md").read_text()
    assert json.loads(again.with_suffix(".json").read_text()) == json.loads(
        out.with_suffix(".json").read_text()
    )


FAKE_PYTHON = """#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
assert args[:2] == ["-m", "csft.train"], args
run_dir = Path(args[-1].removeprefix("hydra.run.dir="))
overrides = args[2:-1]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps(args[2:]) + "\\n")
values = dict(o.split("=", 1) for o in overrides)
if values.get("data.shots_per_class") == os.environ.get("FAIL_AT", "none"):
    sys.exit(3)
(run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
(run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {{o}}\\n" for o in overrides))
k = int(values.get("data.shots_per_class", "null").replace("null", "0"))
seed = int(values.get("data.sample_seed", values.get("seed", 0)))
if k:
    rows = [f"row {{i}}" for i in range(3 * k)]
    (run_dir / "data_sample.json").write_text(json.dumps({{"train": rows, "val": []}}))
else:
    (run_dir / ".hydra" / "config.yaml").write_text(os.environ["FULL_CONFIG"])
acc = 0.5 + k / 100 + seed / 1000 if k else 0.9 + seed / 1000
metrics = {{"test/acc": acc, "test/f1_macro": acc - 0.1, "fit_seconds": 1.0 + k + seed}}
(run_dir / "metrics.json").write_text(json.dumps(metrics))
"""

# A full run's saved data config: the fixture with a 50 % carve (12 train rows, 3 intents).
FULL_CONFIG = f"""seed: 3
data:
  _target_: csft.data.datamodule.FileDataModule
  train_file: {FIXTURES / "intents_train.csv"}
  text_column: message
  label_column: intent
  val_fraction: 0.5
  seed: ${{seed}}
  cache_dir: ${{paths.output_dir}}/tokenized
"""


@pytest.fixture
def fake_python(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """An interpreter that records its command line and writes a finished run's files."""
    path = tmp_path / "fake-python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("FULL_CONFIG", FULL_CONFIG)
    return path, calls


def test_one_run_per_k_and_seed_with_the_sample_overrides_resumed_after_a_failure(
    fake_python, tmp_path, monkeypatch, capsys
):
    python, calls = fake_python
    out = tmp_path / "lc"
    argv = ["--shots", "2,4,full", "--seeds", "0,1", "--out", str(out), "--python", str(python)]
    monkeypatch.setenv("FAIL_AT", "4")
    assert curve.main([*argv, "--", "model=tiny", "data.batch_size=4"]) == 2
    assert "K4_s0 failed (exit status 3)" in capsys.readouterr().err
    monkeypatch.delenv("FAIL_AT")
    assert curve.main([*argv, "--", "model=tiny", "data.batch_size=4"]) == 0
    runs = out.with_name("lc_runs")
    made = [json.loads(line) for line in calls.read_text().splitlines()]
    tail = ["model=tiny", "data.batch_size=4"]
    expected = [
        ["data.shots_per_class=2", "data.sample_seed=0", *tail, f"hydra.run.dir={runs}/K2_s0"],
        ["data.shots_per_class=2", "data.sample_seed=1", *tail, f"hydra.run.dir={runs}/K2_s1"],
        ["data.shots_per_class=4", "data.sample_seed=0", *tail, f"hydra.run.dir={runs}/K4_s0"],
    ]
    # the failed K4_s0 ran again on resume; K2 runs did not
    expected += [expected[-1]]
    expected += [
        ["data.shots_per_class=4", "data.sample_seed=1", *tail, f"hydra.run.dir={runs}/K4_s1"],
        ["seed=0", "data.shots_per_class=null", *tail, f"hydra.run.dir={runs}/full_s0"],
        ["seed=1", "data.shots_per_class=null", *tail, f"hydra.run.dir={runs}/full_s1"],
    ]
    assert made == expected
    summary = json.loads(out.with_suffix(".json").read_text())
    points = {p["shots"]: p for p in summary["points"]}
    assert [points[k]["train_rows"] for k in (2, 4, "full")] == [6, 12, 12]
    assert points["full"]["rows_per_class"] == 4
    for k in (2, 4, "full"):
        saved = [metrics(runs / f"{'K' if k != 'full' else ''}{k}_s{s}") for s in (0, 1)]
        accs = [m["test/acc"] for m in saved]
        assert points[k]["acc_mean"] == pytest.approx(statistics.fmean(accs))
        assert points[k]["acc_std"] == pytest.approx(statistics.stdev(accs))
        assert [r["test/acc"] for r in points[k]["runs"]] == accs
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".md").read_text().count("\n") == 2 + 3


def fake_run(runs: Path, name: str, acc: float, f1: float, seconds: float, train: int) -> None:
    run_dir = runs / name
    (run_dir / ".hydra").mkdir(parents=True)
    saved = {"test/acc": acc, "test/f1_macro": f1, "fit_seconds": seconds}
    (run_dir / "metrics.json").write_text(json.dumps(saved))
    if name.startswith("K"):
        sample = {"train": [f"row {i}" for i in range(train)], "val": []}
        (run_dir / "data_sample.json").write_text(json.dumps(sample))
    else:  # a full run: train rows and classes come from its saved data config
        (run_dir / ".hydra" / "config.yaml").write_text(
            "seed: 3\n"
            "data:\n"
            "  _target_: csft.data.datamodule.FileDataModule\n"
            f"  train_file: {FIXTURES / 'intents_train.csv'}\n"
            "  text_column: message\n"
            "  label_column: intent\n"
            "  val_fraction: 0.5\n"
            "  seed: ${seed}\n"
            "  cache_dir: ${paths.output_dir}/tokenized\n"
        )


def test_mean_and_std_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    numbers = {
        "K5_s0": (0.50, 0.40, 10.0),
        "K5_s1": (0.60, 0.45, 12.0),
        "K5_s2": (0.70, 0.65, 14.0),
        "full_s0": (0.90, 0.88, 100.0),
        "full_s1": (0.92, 0.91, 110.0),
    }
    for name, (acc, f1, seconds) in numbers.items():
        fake_run(runs, name, acc, f1, seconds, train=15)
    fake_run(runs, "not_a_run", 0, 0, 0, 0)
    summary = curve.summarize(runs)
    five, full = summary["points"]
    assert five["shots"] == 5 and five["seeds"] == [0, 1, 2] and five["train_rows"] == 15
    assert five["acc_mean"] == pytest.approx(0.6)
    assert five["acc_std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))
    assert five["f1_mean"] == pytest.approx(0.5) and five["fit_seconds_mean"] == 12
    # full: the fixture's 24 rows less a 50 % carve, 3 intents
    assert full["shots"] == "full" and full["train_rows"] == 12 and full["rows_per_class"] == 4
    assert full["acc_std"] == pytest.approx(statistics.stdev([0.90, 0.92]))
    line = curve.markdown_table(summary).splitlines()[2]
    assert line == "| 5 | 15 | 0.6000 ± 0.1000 | 0.5000 ± 0.1323 | 12.0 | 3 |"
    bars = curve.plot_curve(summary).axes[0].containers[0]  # accuracy's error bars
    segments = bars.lines[2][0].get_segments()
    assert [s[1][1] - s[0][1] for s in segments] == pytest.approx(
        [2 * five["acc_std"], 2 * full["acc_std"]]
    )


def test_bad_lists_and_an_empty_runs_dir_are_one_line_errors(tmp_path, capsys):
    assert curve.main(["--shots", "0,5", "--out", str(tmp_path / "c")]) == 2
    assert "--shots '0,5': '0' is not one of integers >= 1 or 'full'" in capsys.readouterr().err
    assert curve.main(["--seeds", "a", "--out", str(tmp_path / "c")]) == 2
    assert "--seeds 'a'" in capsys.readouterr().err
    assert curve.main(["--from-runs", "--out", str(tmp_path / "c")]) == 2
    assert "no finished run" in capsys.readouterr().err
