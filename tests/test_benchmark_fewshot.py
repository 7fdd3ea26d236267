"""scripts/benchmark_fewshot.py: the table and JSON from made-up results, the setfit payload
against the csft run's sample, the runs it starts (stand-in interpreters) and resuming; and,
where the setfit venv exists, its worker for real on 3 classes x 2 rows (seconds)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, INTENT_FIXTURE, ROOT, compose, tiny_overrides

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark_fewshot as fewshot

from csft.data.datamodule import FileDataModule
from csft.instantiation import instantiate_unwrapping_errors
from csft.pretrained import packaged_minilm_dir


def made_up_run(seed: int, acc: float, f1: float, seconds: float, **extra) -> dict:
    return {"seed": seed, "accuracy": acc, "f1_macro": f1, "train_seconds": seconds} | extra


SETFIT_SETTINGS = {
    "batch_size": 16,
    "num_epochs": 1,
    "num_iterations": 20,
    "seed": 0,
    "head": "LogisticRegression",
    "max_length": 256,
}


def made_up_runs(setfit_sample: str = "abc") -> dict[str, list[dict]]:
    setfit = {"settings": SETFIT_SETTINGS, "versions": {"setfit": "1.1.3"}, "n_pairs": 30800}
    return {
        "csft": [
            made_up_run(0, 0.88, 0.87, 100.0, sample="abc"),
            made_up_run(1, 0.89, 0.885, 110.0, sample="def"),
            made_up_run(2, 0.90, 0.89, 120.0, sample="ghi"),
        ],
        "setfit": [
            made_up_run(0, 0.86, 0.85, 600.0, sample=setfit_sample, **setfit),
            made_up_run(1, 0.87, 0.86, 610.0, sample="def", **setfit),
        ],
    }


FACTS = {
    "data": "banking77",
    "shots": 10,
    "seeds": [0, 1, 2],
    "threads": 2,
    "test_rows": 3080,
    "model": "/m",
    "csft_model": "/m",
    "csft_overrides": ["trainer.max_epochs=8"],
    "machine": "x86_64 (2 CPUs)",
}


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_table_and_json_hold_each_contender_s_seeds_mean_std_and_the_published_rows(
    tmp_path,
):
    summary = fewshot.summarize(made_up_runs(), FACTS)
    csft, setfit = summary["contenders"]["csft"], summary["contenders"]["setfit"]
    assert csft["acc_mean"] == pytest.approx(0.89)
    assert csft["acc_std"] == pytest.approx(statistics.stdev([0.88, 0.89, 0.90]))
    assert csft["f1_mean"] == pytest.approx(statistics.fmean([0.87, 0.885, 0.89]))
    assert csft["train_seconds_mean"] == 110 and setfit["train_seconds_mean"] == 605
    assert setfit["seeds"] == [0, 1]
    rows = table_rows(fewshot.markdown(summary))
    assert rows[0] == [
        "contender",
        "seed 0 acc %",
        "seed 1 acc %",
        "seed 2 acc %",
        "test accuracy %",
        "test macro-F1 %",
        "train s (mean)",
    ]
    assert rows[2] == ["csft", "88.00", "89.00", "90.00", "89.00 ± 1.00", "88.17 ± 1.04", "110.0"]
    assert rows[3] == [
        "setfit 1.1.3 (batch 16, 1 epoch, 20 iterations)",
        "86.00",
        "87.00",
        "",  # seed 2 not run
        "86.50 ± 0.71",
        "85.50 ± 0.71",
        "605.0",
    ]
    assert rows[4] == ["USE+ConveRT (published)", "", "", "", "85.19", "", ""]
    assert rows[5] == ["CPFT (published)", "", "", "", "87.20", "", ""]
    paths = fewshot.write_outputs(summary, tmp_path / "fewshot")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(summary))
    text = paths["md"].read_text()
    assert "threads=2 trainer.max_epochs=8`" in text and "30800 pairs" in text
    assert "num_iterations=20" in text and "same rows" in text
    # other data or K: no published row; two contenders on different rows: an error
    assert fewshot.summarize(made_up_runs(), FACTS | {"shots": 5})["published"] == []
    with pytest.raises(fewshot.BenchmarkError, match="seed 0: the contenders trained on different"):
        fewshot.summarize(made_up_runs(setfit_sample="other"), FACTS)
    # a contender with one finished seed shows no spread
    one = made_up_runs()
    one["setfit"] = one["setfit"][:1]
    assert table_rows(fewshot.markdown(fewshot.summarize(one, FACTS)))[3][4:6] == [
        "86.00 (1 seed)",
        "85.00 (1 seed)",
    ]


def k2_overrides(tmp_path: Path) -> list[str]:
    return [*tiny_overrides(tmp_path), *INTENT_FIXTURE, "data.shots_per_class=2"]


def test_the_setfit_payload_holds_exactly_the_csft_sample_s_train_rows(tmp_path):
    # what csft.train writes to data_sample.json, from the config it composes
    cfg = compose([*k2_overrides(tmp_path), "data.sample_seed=3"])
    datamodule = instantiate_unwrapping_errors(cfg.data, tokenizer=cfg.model.name_or_path)
    datamodule.setup("fit")
    record = datamodule.sample_record()
    payload = fewshot.setfit_payload(2, 3, INTENT_FIXTURE, None)
    assert len(payload["train"]) == 6 == len(record["train"])
    assert sorted(r["source"] for r in payload["train"]) == sorted(record["train"])
    trained = {e.source: (e.text, e.label) for e in datamodule.examples["train"]}
    assert {r["source"]: (r["text"], r["label"]) for r in payload["train"]} == trained
    # setfit has no validation: none of those rows; the whole test split
    assert not {r["source"] for r in payload["train"]} & set(record["val"])
    test = datamodule.examples["test"]
    assert payload["test"] == [{"text": e.text, "label": e.label} for e in test]
    assert len(test) == 6
    assert payload["model"] == payload["csft_model"] == packaged_minilm_dir()
    assert (payload["data"], payload["shots"], payload["seed"]) == ("fixtures", 2, 3)
    # the check against a run's data_sample.json
    run = tmp_path / "run"
    run.mkdir()
    (run / "data_sample.json").write_text(json.dumps(record))
    fewshot.check_same_sample(payload, run)
    other = fewshot.setfit_payload(2, 4, INTENT_FIXTURE, None)
    assert {r["source"] for r in other["train"]} != set(record["train"])
    with pytest.raises(fewshot.BenchmarkError, match="are not the 6 rows"):
        fewshot.check_same_sample(other, run)


FAKE_CSFT = """#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
assert args[:2] == ["-m", "csft.train"], args
assert os.environ["OMP_NUM_THREADS"] == "2"
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps(["csft", *args[2:]]) + "\\n")
run_dir = Path(args[-1].removeprefix("hydra.run.dir="))
values = dict(o.split("=", 1) for o in args[2:-1])
seed = values["data.sample_seed"]
(run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
(run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {{o}}\\n" for o in args[2:-1]))
sample = json.loads(os.environ["SAMPLES"])[seed]
(run_dir / "data_sample.json").write_text(json.dumps({{"train": sample, "val": []}}))
metrics = {{"test/acc": 0.8 + int(seed) / 100, "test/f1_macro": 0.7, "fit_seconds": 10.0}}
(run_dir / "metrics.json").write_text(json.dumps(metrics))
"""

FAKE_SETFIT = """#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps(["setfit", *args[1:]]) + "\\n")
payload = json.loads(Path(args[args.index("--setfit-worker") + 1]).read_text())
print("setfit chatter on stdout goes first")
print(json.dumps({{
    "accuracy": 0.75, "f1_macro": 0.6, "train_seconds": 20.0, "predict_seconds": 1.0,
    "n_train": len(payload["train"]), "n_pairs": 12, "steps": 1,
    "settings": {{"batch_size": 16, "num_epochs": 1, "num_iterations": 1, "seed": payload["seed"],
                  "head": "LogisticRegression", "max_length": 256}},
    "versions": {{"setfit": "1.1.3"}},
}}))
"""


def interpreter(path: Path, text: str) -> str:
    path.write_text(text.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def intent_sample(seed: int) -> list[str]:
    """The train sources of a K=2 sample of the intent fixture, as INTENT_FIXTURE reads it."""
    datamodule = FileDataModule(
        "unused",
        train_file=str(FIXTURES / "intents_train.csv"),
        text_column="message",
        label_column="intent",
        val_fraction=0.25,
        seed=42,
        shots_per_class=2,
        sample_seed=seed,
    )
    return [e.source for e in datamodule.sampled_splits()["train"]]


def test_each_contender_runs_once_per_seed_on_one_sample_and_a_rerun_resumes(
    tmp_path, monkeypatch, capsys
):
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("SAMPLES", json.dumps({"0": intent_sample(0), "1": intent_sample(1)}))
    out = tmp_path / "fs"
    argv = [
        "--shots=2",
        "--seeds=0,1",
        f"--out={out}",
        f"--python={interpreter(tmp_path / 'csft-python', FAKE_CSFT)}",
        f"--setfit-python={interpreter(tmp_path / 'setfit-python', FAKE_SETFIT)}",
        "--setfit-iterations=1",
        "--",
        *INTENT_FIXTURE,
    ]
    assert fewshot.main(argv) == 0
    runs = out.with_name("fs_runs")
    made = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [m[0] for m in made] == ["csft", "setfit", "csft", "setfit"]
    assert made[0][1:] == [
        "data.shots_per_class=2",
        "data.sample_seed=0",
        "threads=2",
        *INTENT_FIXTURE,
        f"hydra.run.dir={runs / 'csft_K2_s0'}",
    ]
    assert made[1][1:] == [
        "--setfit-worker",
        str(runs / "setfit_K2_s0" / "payload.json"),
        "--threads=2",
        "--setfit-iterations=1",
        "--setfit-epochs=1",
        "--setfit-batch-size=16",
    ]
    summary = json.loads(out.with_suffix(".json").read_text())
    csft, setfit = summary["contenders"]["csft"], summary["contenders"]["setfit"]
    assert [r["accuracy"] for r in csft["runs"]] == [0.8, 0.81]
    assert [r["accuracy"] for r in setfit["runs"]] == [0.75, 0.75]
    assert [r["sample"] for r in csft["runs"]] == [r["sample"] for r in setfit["runs"]]
    assert summary["test_rows"] == 6 and summary["published"] == []
    capsys.readouterr()

    # a second call runs nothing again; other setfit settings are an error, not a mix
    def no_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(subprocess, "run", no_run)
    assert fewshot.main(argv) == 0
    # --from-runs: seed 2 is not run, only the finished seeds are tabulated
    again = tmp_path / "again"
    assert (
        fewshot.main(
            [
                *argv[:1],
                "--seeds=0,1,2",
                f"--out={again}",
                f"--runs={runs}",
                "--from-runs",
                *argv[3:],
            ]
        )
        == 0
    )
    assert json.loads(again.with_suffix(".json").read_text())["contenders"] == summary["contenders"]
    assert fewshot.main([a for a in argv if "iterations" not in a]) == 2
    assert "setfit_K2_s0/result.json was made with" in capsys.readouterr().err
    monkeypatch.undo()

    # a csft run that trained on other rows stops the benchmark before setfit runs
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("SAMPLES", json.dumps({"2": intent_sample(3)}))
    assert fewshot.main([*argv[:1], "--seeds=2", *argv[2:]]) == 2
    assert "setfit's 6 train rows are not the 6 rows of" in capsys.readouterr().err


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    out = f"--out={tmp_path / 'fs'}"
    assert fewshot.main(["--seeds=a", out]) == 2
    assert "--seeds 'a'" in capsys.readouterr().err
    assert fewshot.main(["--contenders=csft,hf", out]) == 2
    assert "expected some of csft, setfit" in capsys.readouterr().err
    assert fewshot.main([out, "--", "threads=4"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert (
        fewshot.main(
            [
                out,
                "--shots=2",
                "--contenders=setfit",
                "--setfit-python=/nope",
                "--",
                *INTENT_FIXTURE,
            ]
        )
        == 2
    )
    assert "--setfit-python /nope: not found" in capsys.readouterr().err


SETFIT_PYTHON = Path(fewshot.default_setfit_python())


@pytest.mark.skipif(not SETFIT_PYTHON.is_file(), reason=f"no setfit venv at {SETFIT_PYTHON}")
def test_the_setfit_worker_trains_and_reports_one_json_line(tmp_path):
    payload = fewshot.setfit_payload(2, 0, INTENT_FIXTURE, None)
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    script = str(ROOT / "scripts" / "benchmark_fewshot.py")
    command = [str(SETFIT_PYTHON), script, "--setfit-worker", str(path), "--setfit-iterations=1"]
    done = subprocess.run(
        command, env=fewshot.thread_env(2), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1  # setfit's own output went to stderr
    result = json.loads(lines[0])
    assert (result["n_train"], result["n_test"], result["n_classes"]) == (6, 6, 3)
    assert result["n_pairs"] == 2 * 1 * 6 and result["steps"] == 1
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1_macro"] <= 1
    assert result["train_seconds"] > 0 and result["threads"] == 2
    assert result["settings"] == {
        "batch_size": 16,
        "num_epochs": 1,
        "num_iterations": 1,
        "seed": 0,
        "head": "LogisticRegression",
        "max_length": 256,  # MiniLM's max_seq_length
    }
    assert {"setfit", "sentence-transformers", "torch"} <= set(result["versions"])
    assert result["versions"]["transformers"].startswith("4.")
