"""Few-shot and fractional samples (csft.data.fewshot): which rows, how many, errors, and the
run's data_sample.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, INTENT_FIXTURE, compose, tiny_overrides

from csft.checks import check_config
from csft.data.datamodule import FileDataModule
from csft.data.example import Example
from csft.data.fewshot import Subsample
from csft.errors import ConfigError, DataError
from csft.instantiation import instantiate_unwrapping_errors

INTENTS = FIXTURES / "intents_train.csv"  # 24 rows: 8 card_lost, 8 refund, 8 transfer


def intents(**kwargs) -> FileDataModule:
    """The intent fixture (no val file: a 25 % validation split is carved from train)."""
    options = dict(text_column="message", label_column="intent", val_fraction=0.25)
    return FileDataModule("unused", train_file=str(INTENTS), **(options | kwargs))


def sources(examples: list[Example]) -> list[str]:
    return [e.source for e in examples]


def per_label(examples: list[Example]) -> dict:
    return dict(Counter(e.label for e in examples))


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("message,intent\n" + "".join(f"{t},{label}\n" for t, label in rows))
    return path


# -- shots_per_class ----------------------------------------------------------------------
def test_k_rows_per_class_and_k_more_per_class_validate_disjoint_from_train():
    full = intents().load_splits()
    sampled = intents(shots_per_class=3, sample_seed=5).sampled_splits()
    assert per_label(sampled["train"]) == {"card_lost": 3, "refund": 3, "transfer": 3}
    # validation is pooled with train, then at most K other rows per class
    assert per_label(sampled["val"]) == {"card_lost": 3, "refund": 3, "transfer": 3}
    assert not set(sources(sampled["train"])) & set(sources(sampled["val"]))
    # from the whole labelled file (train + carved validation), test untouched
    labelled = set(sources(full["train"] + full["val"]))
    assert set(sources(sampled["train"] + sampled["val"])) <= labelled
    assert sources(sampled["test"]) == sources(full["test"]) == []
    # rows keep the file's order
    rows = [int(s.rsplit(" ", 1)[1]) for s in sources(sampled["train"])]
    assert rows == sorted(rows)


def test_validation_takes_what_is_left_when_a_class_has_fewer_than_2k_rows():
    sampled = intents(shots_per_class=6, sample_seed=0).sampled_splits()
    assert per_label(sampled["train"]) == {"card_lost": 6, "refund": 6, "transfer": 6}
    assert per_label(sampled["val"]) == {"card_lost": 2, "refund": 2, "transfer": 2}


def test_with_a_val_file_a_class_with_fewer_than_k_rows_keeps_them_all(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        [(f"lost {i}", "card_lost") for i in range(6)]
        + [(f"refund {i}", "refund") for i in range(2)]
        + [(f"send {i}", "transfer") for i in range(5)],
    )
    val = write_csv(
        tmp_path / "val.csv",
        [(f"v lost {i}", "card_lost") for i in range(5)]
        + [(f"v refund {i}", "refund") for i in range(1)]
        + [(f"v send {i}", "transfer") for i in range(4)],
    )
    dm = FileDataModule(
        "unused",
        train_file=str(train),
        val_file=str(val),
        text_column="message",
        label_column="intent",
        shots_per_class=3,
    )
    assert not dm.val_carved
    sampled = dm.sampled_splits()
    assert per_label(sampled["train"]) == {"card_lost": 3, "refund": 2, "transfer": 3}
    assert all(s.startswith(str(train)) for s in sources(sampled["train"]))
    # validation: at most K per class of the val file
    assert per_label(sampled["val"]) == {"card_lost": 3, "refund": 1, "transfer": 3}
    assert all(s.startswith(str(val)) for s in sources(sampled["val"]))


def test_same_sample_seed_same_rows_and_smaller_k_nested_in_larger_k():
    first = intents(shots_per_class=4, sample_seed=3).sampled_splits()
    again = intents(shots_per_class=4, sample_seed=3).sampled_splits()
    assert sources(first["train"]) == sources(again["train"])
    assert sources(first["val"]) == sources(again["val"])
    other = intents(shots_per_class=4, sample_seed=4).sampled_splits()
    assert sources(other["train"]) != sources(first["train"])
    trains = [
        set(sources(intents(shots_per_class=k, sample_seed=3).sampled_splits()["train"]))
        for k in (1, 2, 4, 7)
    ]
    assert trains[0] < trains[1] < trains[2] < trains[3]


def test_the_sample_does_not_depend_on_the_training_seed():
    carves = [intents(seed=s).load_splits()["val"] for s in (0, 7)]
    assert sources(carves[0]) != sources(carves[1])  # the carve-out does depend on it
    samples = [intents(seed=s, shots_per_class=3, sample_seed=1).sampled_splits() for s in (0, 7)]
    assert sources(samples[0]["train"]) == sources(samples[1]["train"])
    assert sources(samples[0]["val"]) == sources(samples[1]["val"])


def test_a_class_with_no_validation_row_left_names_it_and_the_fix(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        [(f"lost {i}", "card_lost") for i in range(8)]
        + [(f"refund {i}", "refund") for i in range(2)]
        + [(f"send {i}", "transfer") for i in range(3)],
    )
    dm = FileDataModule(
        "unused", train_file=str(train), text_column="message", label_column="intent"
    )
    dm.subsample = Subsample(shots_per_class=3)
    with pytest.raises(DataError) as err:
        dm.sampled_splits()
    assert str(err.value) == (
        "data.shots_per_class=3: validation is carved from the labelled rows, and 2 class(es) "
        "have no row left for it (at most 3 rows in all): 'refund' (2 rows), 'transfer' "
        "(3 rows). Fix: set data.shots_per_class <= 1 or give a validation file (data.val_file)."
    )
    with pytest.raises(DataError, match=r"'card_lost' \(8 rows\), 'refund' \(8 rows\)"):
        intents(shots_per_class=8).sampled_splits()


# -- train_fraction -----------------------------------------------------------------------
def test_train_fraction_keeps_that_share_of_each_class_and_the_validation_split():
    full = intents(seed=2).load_splits()  # 6 train rows per class after the 25 % carve
    assert per_label(full["train"]) == {"card_lost": 6, "refund": 6, "transfer": 6}
    half = intents(seed=2, train_fraction=0.5, sample_seed=9).sampled_splits()
    assert per_label(half["train"]) == {"card_lost": 3, "refund": 3, "transfer": 3}
    assert set(sources(half["train"])) <= set(sources(full["train"]))
    assert sources(half["val"]) == sources(full["val"])
    # at least one row per class; all of them at 1.0
    tenth = intents(seed=2, train_fraction=0.1, sample_seed=9).sampled_splits()
    assert per_label(tenth["train"]) == {"card_lost": 1, "refund": 1, "transfer": 1}
    assert set(sources(tenth["train"])) < set(sources(half["train"]))
    whole = intents(seed=2, train_fraction=1.0).sampled_splits()
    assert sources(whole["train"]) == sources(full["train"])


# -- regression ---------------------------------------------------------------------------
def ratings(tmp_path: Path) -> Path:
    """Scores of 3 values: 0.0 twice, 0.5 five times, 1.0 six times."""
    scores = [0.0] * 2 + [0.5] * 5 + [1.0] * 6
    path = tmp_path / "ratings.jsonl"
    path.write_text(
        "".join(json.dumps({"query": f"q{i}", "score": s}) + "\n" for i, s in enumerate(scores))
    )
    return path


def test_regression_shots_group_by_label_value(tmp_path):
    dm = FileDataModule(
        "unused",
        train_file=str(ratings(tmp_path)),
        text_column="query",
        label_column="score",
        task="regression",
        shots_per_class=3,
    )
    sampled = dm.sampled_splits()
    assert per_label(sampled["train"]) == {0.0: 2, 0.5: 3, 1.0: 3}
    # a value with no row left is fine for regression: validation as a whole is not empty
    assert per_label(sampled["val"]) == {0.5: 2, 1.0: 3}
    dm.subsample = Subsample(shots_per_class=6)
    with pytest.raises(DataError, match="no label value has more than 6 rows"):
        dm.sampled_splits()


def test_regression_train_fraction_is_a_plain_share(tmp_path):
    dm = FileDataModule(
        "unused",
        train_file=str(FIXTURES / "ratings.jsonl"),  # 24 rows, every score its own value
        text_column="query",
        label_column="score",
        task="regression",
        val_fraction=0.25,
        train_fraction=0.5,
    )
    full = dm.load_splits()
    sampled = dm.sampled_splits()
    assert len(full["train"]) == 18 and len(sampled["train"]) == 9
    assert sources(sampled["val"]) == sources(full["val"])


def test_dstc9_ratings_get_the_sample_by_label_value(data_dir):
    directory = data_dir / "dstc9_track1_human_eval"
    if not directory.is_dir():
        pytest.skip(f"{directory} not found")
    from csft.data.dstc9 import Dstc9RatingsDataModule

    dm = Dstc9RatingsDataModule(str(directory), tokenizer="unused", shots_per_class=5)
    full = dm.load_splits()
    values = {e.label for e in full["train"] + full["val"]}
    sampled = dm.sampled_splits()
    assert per_label(sampled["train"]) == dict.fromkeys(values, 5)
    assert len(sampled["val"]) <= 5 * len(values)
    assert sources(sampled["test"]) == sources(full["test"])


# -- errors -------------------------------------------------------------------------------
BAD = [
    ("data.shots_per_class=0", "data.shots_per_class=0: expected null or an integer >= 1"),
    ("data.shots_per_class=-3", "data.shots_per_class=-3: expected null or an integer >= 1"),
    ("data.shots_per_class=2.5", "data.shots_per_class=2.5: expected null or an integer >= 1"),
    ("data.shots_per_class=ten", "data.shots_per_class='ten': expected null or an integer >= 1"),
    ("data.train_fraction=0", "data.train_fraction=0: expected null or a number > 0 and <= 1"),
    ("data.train_fraction=1.5", "data.train_fraction=1.5: expected null or a number > 0 and"),
    ("data.train_fraction=-0.2", "data.train_fraction=-0.2: expected null or a number > 0"),
    ("data.sample_seed=-1", "data.sample_seed=-1: expected an integer >= 0"),
    (
        "data.shots_per_class=5 data.train_fraction=0.5",
        "data.shots_per_class=5 and data.train_fraction=0.5: set one of them, not both",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_settings_are_refused_by_the_config_checks(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose(["model=tiny", *INTENT_FIXTURE, *overrides.split()]))
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_settings_are_refused_by_the_data_module_before_reading(overrides, message):
    kwargs = {}
    for item in overrides.split():
        key, value = item.removeprefix("data.").split("=")
        kwargs[key] = value if value == "ten" else json.loads(value)
    with pytest.raises(ConfigError) as err:
        FileDataModule("unused", train_file="/no/such/file.csv", **kwargs)
    assert str(err.value).startswith(message)


def test_good_settings_pass_the_checks():
    for overrides in ("data.shots_per_class=1", "data.train_fraction=1", "data.train_fraction=0.3"):
        check_config(compose(["model=tiny", *INTENT_FIXTURE, overrides]))
    assert not Subsample().active and Subsample(train_fraction=0.2).active


def test_without_a_sample_nothing_changes():
    dm = intents()
    assert dm.sample_record() is None
    assert sources(dm.sampled_splits()["train"]) == sources(dm.load_splits()["train"])


# -- end to end ---------------------------------------------------------------------------
def test_a_few_shot_run_trains_on_the_sample_and_writes_data_sample_json(tmp_path):
    from csft.train import train

    overrides = ["data.shots_per_class=3", "data.sample_seed=2", "data.batch_size=4"]
    cfg = compose(tiny_overrides(tmp_path, *INTENT_FIXTURE, *overrides, "trainer.max_epochs=2"))
    assert cfg.report
    results = train(cfg)
    record = json.loads((tmp_path / "data_sample.json").read_text())
    assert record["shots_per_class"] == 3 and record["sample_seed"] == 2
    assert record["train_fraction"] is None
    assert len(record["train"]) == 9 and len(record["val"]) == 9
    expected = intents(shots_per_class=3, sample_seed=2).sampled_splits()
    assert record["train"] == sources(expected["train"])
    assert record["val"] == sources(expected["val"])
    assert results["train_samples"] == 2 * 9  # the Trainer saw the 9 sampled rows per epoch
    assert (tmp_path / "metrics.json").is_file() and "test/acc" in results


def test_ten_shot_banking77_has_770_train_rows(data_dir, tmp_path):
    cfg = compose(tiny_overrides(tmp_path, "data.shots_per_class=10", "data.sample_seed=0"))
    check_config(cfg)
    dm = instantiate_unwrapping_errors(cfg.data, tokenizer=cfg.model.name_or_path)
    sampled = dm.sampled_splits()
    train = per_label(sampled["train"])
    assert len(sampled["train"]) == 770 and len(train) == 77 and set(train.values()) == {10}
    assert len(sampled["val"]) <= 770
    assert max(per_label(sampled["val"]).values()) <= 10
    assert not set(sources(sampled["train"])) & set(sources(sampled["val"]))
    assert len(sampled["test"]) == 3080
    assert dm.sample_record()["train"] == sources(sampled["train"])
