"""Self-training: data.pseudo_labels in the data module, the pseudo-label file's errors, and
scripts/self_train.py through real `python -m csft.train` runs of the tiny BERT (teacher and
two students: each round is labelled by the previous round's own export)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, INTENT_FIXTURE, ROOT, compose, tiny_overrides

from csft.data.datamodule import FileDataModule
from csft.data.pseudo_labels import read_pseudo_labels
from csft.errors import DataError

sys.path.insert(0, str(ROOT / "scripts"))
import self_train

TRAIN = str(FIXTURES / "intents_train.csv")
TEST = str(FIXTURES / "intents_test.csv")


def intents(**kwargs) -> FileDataModule:
    return FileDataModule(
        "unused",
        train_file=TRAIN,
        test_file=TEST,
        text_column="message",
        label_column="intent",
        val_fraction=0.25,
        **kwargs,
    )


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_pseudo_labelled_rows_join_train_after_the_sample(tmp_path):
    plain = intents(shots_per_class=2, sample_seed=1).sampled_splits()
    label = str(plain["train"][0].label)
    extra = write_rows(
        tmp_path / "p.jsonl",
        [{"text": "where is my new card", "label": label, "confidence": 0.9, "source": "x"}],
    )
    with_extra = intents(shots_per_class=2, sample_seed=1, pseudo_labels=str(extra))
    splits = with_extra.sampled_splits()
    assert splits["train"][:-1] == plain["train"]  # the same labelled sample, first
    added = splits["train"][-1]
    assert (added.text, added.label) == ("where is my new card", label)
    assert splits["val"] == plain["val"] and splits["test"] == plain["test"]
    record = with_extra.sample_record()
    assert record["train"] == [e.source for e in plain["train"]]
    assert record["pseudo_labels"] == {"file": str(extra), "rows": 1}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "hi", "label": "no_such_intent"}', "label 'no_such_intent' is not a class"),
        ('{"text": "  ", "label": "a"}', "'text' must be a non-empty string"),
        ("{not json", "not JSON"),
    ],
)
def test_a_bad_pseudo_label_row_is_an_error_naming_its_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_pseudo_labels(path, {"a", "b"})
    assert f"{path}, line 2" in str(err.value)


def test_a_missing_or_empty_pseudo_label_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        intents(pseudo_labels=str(tmp_path / "gone.jsonl")).sampled_splits()
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_pseudo_labels(tmp_path / "empty.jsonl", {"a"})


def test_student_overrides_replace_the_teacher_s_epochs_and_file():
    teacher = ["experiment=x", "trainer.max_epochs=8", "data.pseudo_labels=/old.jsonl", "seed=3"]
    assert self_train.student_overrides(teacher, Path("/new.jsonl"), 3) == [
        "experiment=x",
        "seed=3",
        "data.pseudo_labels=/new.jsonl",
        "trainer.max_epochs=3",
    ]


def test_bad_options_and_a_teacher_without_left_out_rows_are_one_line_errors(tmp_path, capsys):
    assert self_train.main(["--runs", str(tmp_path), "--rounds", "0"]) == 2
    assert self_train.main(["--runs", str(tmp_path), "--threshold", "1.5"]) == 2
    assert self_train.main(["--runs", str(tmp_path), "--teacher", str(tmp_path)]) == 2
    assert "not a finished run" in capsys.readouterr().err
    # a finished run on all its labelled rows: nothing is left to pseudo-label
    full = tmp_path / "full"
    (full / ".hydra").mkdir(parents=True)
    cfg = compose(tiny_overrides(full, *INTENT_FIXTURE))
    (full / ".hydra" / "config.yaml").write_text(__import__("omegaconf").OmegaConf.to_yaml(cfg))
    (full / "metrics.json").write_text("{}")
    assert self_train.main(["--runs", str(tmp_path / "st"), "--teacher", str(full)]) == 2
    assert "none are left to pseudo-label: give a text file" in capsys.readouterr().err


def hydra_overrides(tmp_path: Path) -> list[str]:
    tiny = [o for o in tiny_overrides(tmp_path) if not o.startswith("paths.output_dir")]
    return [*tiny, *INTENT_FIXTURE, "data.batch_size=4", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    """A 2-shot teacher and two students, threshold 0 (the random tiny BERT is never sure)."""
    runs = tmp_path_factory.mktemp("selftrain")
    argv = ["--runs", str(runs), "--rounds", "2", "--threshold", "0", "--student-epochs", "2"]
    overrides = [*hydra_overrides(runs), "data.shots_per_class=2", "data.sample_seed=0"]
    assert self_train.main([*argv, "--", *overrides]) == 0
    return runs


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_students_train_on_the_teacher_s_rows_plus_the_left_out_rows_labelled(two_rounds):
    runs = two_rounds
    teacher = json.loads((runs / "teacher" / "data_sample.json").read_text())
    assert len(teacher["train"]) == 6 and len(teacher["val"]) == 6  # 2 a class, 3 classes
    pseudo = rows(runs / "round1_pseudo_labels.jsonl")
    # the pool: the 24 labelled rows less the 12 sampled; the test file never joins it
    assert len(pseudo) == 12
    sources = {row["source"] for row in pseudo}
    assert not sources & set(teacher["train"] + teacher["val"])
    assert all(s.startswith(f"{TRAIN}, row ") for s in sources)
    for number in (1, 2):
        student = runs / f"round{number}"
        sample = json.loads((student / "data_sample.json").read_text())
        assert (sample["train"], sample["val"]) == (teacher["train"], teacher["val"])
        assert sample["pseudo_labels"]["rows"] == 12
        metrics = json.loads((student / "metrics.json").read_text())
        assert metrics["epochs"] == 2  # --student-epochs, not the teacher's 1
        assert metrics["train_samples"] == 2 * (6 + 12)


@pytest.mark.slow
def test_each_round_is_labelled_by_the_previous_round_s_export(two_rounds):
    from csft.data.example import Example
    from csft.inference import Predictor

    runs = two_rounds
    for number, labeller in ((1, "teacher"), (2, "round1")):
        pseudo = rows(runs / f"round{number}_pseudo_labels.jsonl")
        facts = json.loads((runs / f"round{number}_pseudo_labels.json").read_text())
        assert facts["labeller"] == str(runs / labeller)
        guesses = Predictor.load(runs / labeller / "model").predict(
            [Example(row["text"]) for row in pseudo]
        )
        assert [row["label"] for row in pseudo] == [g["label"] for g in guesses]
        assert [row["confidence"] for row in pseudo] == [g["confidence"] for g in guesses]


@pytest.mark.slow
def test_the_summary_reports_each_run_s_own_numbers_and_a_rerun_runs_nothing(
    two_rounds, monkeypatch
):
    runs = two_rounds
    summary = json.loads((runs / "self_train.json").read_text())
    assert [m["stage"] for m in summary["models"]] == ["teacher", "round 1", "round 2"]
    for model, name in zip(summary["models"], ["teacher", "round1", "round2"], strict=True):
        metrics = json.loads((runs / name / "metrics.json").read_text())
        assert model["test/acc"] == metrics["test/acc"]
        assert model["fit_seconds"] == metrics["fit_seconds"]
    right = summary["models"][1]["pseudo_labels"]["kept_accuracy"]
    pseudo = rows(runs / "round1_pseudo_labels.jsonl")
    with open(TRAIN, newline="") as handle:  # sources count data rows from 1
        gold = {f"{TRAIN}, row {i}": r["intent"] for i, r in enumerate(csv.DictReader(handle), 1)}
    assert right == pytest.approx(
        sum(gold[r["source"]] == r["label"] for r in pseudo) / len(pseudo), abs=1e-6
    )

    def no_run(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(subprocess, "run", no_run)
    monkeypatch.setattr("csft.inference.Predictor.load", no_run)
    argv = ["--runs", str(runs), "--rounds", "2", "--threshold", "0", "--student-epochs", "2"]
    assert self_train.main([*argv, "--teacher", str(runs / "teacher")]) == 0
    assert json.loads((runs / "self_train.json").read_text()) == summary


@pytest.mark.slow
def test_a_text_file_is_the_pool_when_given(two_rounds, tmp_path):
    messages = tmp_path / "messages.txt"
    messages.write_text("my card never came\n\n  \nI lost my wallet\nmy card never came\n")
    runs = tmp_path / "st"
    argv = ["--runs", str(runs), "--teacher", str(two_rounds / "teacher"), "--threshold", "0"]
    assert self_train.main([*argv, "--text-file", str(messages)]) == 0
    pseudo = rows(runs / "round1_pseudo_labels.jsonl")
    # blank lines and the repeat are dropped; no labelled row joins a text-file pool
    assert [row["text"] for row in pseudo] == ["my card never came", "I lost my wallet"]
    assert [row["source"] for row in pseudo] == ["messages.txt text 1", "messages.txt text 2"]
    facts = json.loads((runs / "round1_pseudo_labels.json").read_text())
    assert facts["pool"] == 2 and "kept_accuracy" not in facts  # no hidden labels to score
    sample = json.loads((runs / "round1" / "data_sample.json").read_text())
    assert sample["pseudo_labels"]["rows"] == 2
