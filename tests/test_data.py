"""Readers, label vocabulary, splits, encoding, collate and the bucketed sampler."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import FIXTURES

from csft.data.collate import PadCollator
from csft.data.datamodule import FileDataModule, stratified_split
from csft.data.encoding import Encoding, encode, encode_cached
from csft.data.example import Example, LabelVocab
from csft.data.readers import read_examples
from csft.data.samplers import LengthBucketBatchSampler
from csft.errors import ConfigError, DataError

INTENTS = FIXTURES / "intents_train.csv"


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# -- readers ------------------------------------------------------------------------------
def test_csv_jsonl_and_parquet_read_the_same_examples(tmp_path):
    frame = pd.read_csv(INTENTS)
    frame.to_parquet(tmp_path / "t.parquet")
    with (tmp_path / "t.jsonl").open("w") as handle:
        for row in frame.to_dict(orient="records"):
            handle.write(json.dumps(row) + "\n")
    read = [
        read_examples(p, text_column="message", label_column="intent")
        for p in (INTENTS, tmp_path / "t.parquet", tmp_path / "t.jsonl")
    ]
    assert len(read[0]) == len(frame) == 24
    assert read[0] == read[1] == read[2]
    assert read[0][0] == Example(text="I lost my card", label="card_lost")


def test_context_and_response_columns(tmp_path):
    examples = read_examples(
        FIXTURES / "ratings.jsonl",
        text_column="query",
        label_column="score",
        context_column="history",
        response_column="reply",
        task="regression",
    )
    assert examples[0].context == ("hi", "hello, how can I help?")
    assert examples[0].response == "It shipped today and arrives Friday."
    assert isinstance(examples[0].label, float)


def test_tsv_takes_quotes_literally_one_example_per_line(tmp_path):
    # CSV quote processing would let the unmatched '"' swallow the lines after it.
    messages = ['"where is my card', "it was sent a week ago", 'he said "soon"', "thanks"]
    path = tmp_path / "t.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{m}\tx{i}\n" for i, m in enumerate(messages)))
    examples = read_examples(path, text_column="text", label_column="label")
    assert [(e.text, e.label) for e in examples] == [(m, f"x{i}") for i, m in enumerate(messages)]


def test_jsonl_line_without_the_label_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl, line 2: column 'label' has no label"):
        read_examples(path, text_column="text", label_column="label")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: data file not found"):
        read_examples(tmp_path / "nope.csv", text_column="text", label_column="label")


def test_missing_column_names_the_columns_found():
    with pytest.raises(DataError) as err:
        read_examples(INTENTS, text_column="text", label_column="intent")
    assert "'text' (data.text_column) not found" in str(err.value)
    assert "the columns are: message, intent" in str(err.value)


def test_empty_text_names_file_and_row(tmp_path):
    path = write_csv(
        tmp_path / "t.csv", [{"text": "hi", "label": "a"}, {"text": " ", "label": "b"}]
    )
    with pytest.raises(DataError, match=r"t\.csv, row 2: column 'text' is empty"):
        read_examples(path, text_column="text", label_column="label")


def test_non_string_text_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": 42, "label": "b"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl, line 2: column 'text' must be text, got 42"):
        read_examples(path, text_column="text", label_column="label")


def test_non_numeric_target_under_mse_names_the_row(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"text": "a", "y": "0.5"}, {"text": "b", "y": "good"}])
    with pytest.raises(
        DataError, match=r"row 2: column 'y' holds 'good', but data.task=regression"
    ):
        read_examples(path, text_column="text", label_column="y", task="regression")


# -- labels and splits ---------------------------------------------------------------------
def test_label_vocabulary_is_sorted_and_saved_as_id2label():
    vocab = LabelVocab.from_examples(
        read_examples(INTENTS, text_column="message", label_column="intent")
    )
    assert vocab.names == ("card_lost", "refund", "transfer")
    assert vocab.id2label == {0: "card_lost", 1: "refund", 2: "transfer"}
    assert vocab.encode(Example("x", "refund")) == 1


def test_label_unseen_in_train_names_the_row():
    vocab = LabelVocab(("a", "b"))
    with pytest.raises(DataError, match=r"test\.csv, row 7: label 'c' never occurs in the train"):
        vocab.encode(Example("x", "c", source="test.csv, row 7"))


def test_one_class_cannot_train_a_classifier():
    with pytest.raises(DataError, match="at least 2 classes, found 1"):
        LabelVocab.from_examples([Example("x", "a"), Example("y", "a")])


def test_validation_split_is_stratified_and_seeded():
    examples = read_examples(INTENTS, text_column="message", label_column="intent")
    train, val = stratified_split(examples, 0.25, seed=1)
    assert Counter(e.label for e in val) == {"card_lost": 2, "refund": 2, "transfer": 2}
    assert len(train) + len(val) == len(examples)
    assert not {e.text for e in train} & {e.text for e in val}
    assert stratified_split(examples, 0.25, seed=1) == (train, val)
    assert stratified_split(examples, 0.25, seed=2)[1] != val


def test_datamodule_rejects_a_test_label_train_never_saw(tmp_path, minilm_dir):
    test = write_csv(tmp_path / "test.csv", [{"message": "hello", "intent": "greeting"}])
    module = FileDataModule(
        minilm_dir, str(INTENTS), str(test), text_column="message", label_column="intent"
    )
    with pytest.raises(DataError, match=r"test\.csv, row 1: label 'greeting' never occurs"):
        module.setup("fit")


# -- encoding, collate, sampler ------------------------------------------------------------
def test_first_segment_is_truncated_from_the_left(tokenizer):
    history = tuple(f"earlier turn number {i} about my card" for i in range(20))
    example = Example("where is my refund", context=history)
    (row,) = encode([example], tokenizer, Encoding(max_length=24))
    assert len(row["input_ids"]) == 24
    text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    assert text.endswith("where is my refund")
    assert "number 0 " not in text  # the oldest turns are the ones cut


def test_response_is_the_second_segment_and_capped(tokenizer):
    example = Example("cancel my order", context=("hi",) * 30, response="word " * 100)
    (row,) = encode([example], tokenizer, Encoding(max_length=40, max_response_length=10))
    types = row["token_type_ids"]
    assert len(row["input_ids"]) == 40
    assert sum(types) == 10 + 1  # the capped response and its [SEP]
    first = [t for t, k in zip(row["input_ids"], types, strict=True) if k == 0]
    assert tokenizer.decode(first, skip_special_tokens=True).endswith("cancel my order")


def test_tokenization_is_cached_on_disk(tmp_path, tokenizer):
    examples = [Example("hello there"), Example("card lost")]
    first = encode_cached(examples, tokenizer, Encoding(), tmp_path)
    (cached,) = list(tmp_path.glob("tokens-*.pkl"))
    with cached.open("wb") as handle:  # a sentinel: the next call must read the file
        pickle.dump([{"input_ids": [1], "token_type_ids": [0]}] * 2, handle)
    assert encode_cached(examples, tokenizer, Encoding(), tmp_path)[0]["input_ids"] == [1]
    other = encode_cached(examples, tokenizer, Encoding(max_length=16), tmp_path)
    assert other == first  # new settings, new key


def test_collate_pads_to_the_batch_longest_row():
    rows = [
        {"input_ids": [101, 7, 102], "token_type_ids": [0, 0, 0], "label": 1, "index": 0},
        {"input_ids": [101, 102], "token_type_ids": [0, 0], "label": 0, "index": 1},
    ]
    batch = PadCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert PadCollator(0, pad_to_multiple_of=8)(rows)["input_ids"].shape == (2, 8)
    floats = PadCollator(0, label_dtype=torch.float32)(rows)["labels"]
    assert floats.dtype == torch.float32


def test_bucketed_sampler_covers_all_rows_with_little_padding():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 60, (1000,), generator=generator).tolist()
    sampler = LengthBucketBatchSampler(lengths, 16, seed=3, pool_batches=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    naive = sum(
        16 * max(lengths[i] for i in range(s, min(s + 16, 1000))) for s in range(0, 1000, 16)
    )
    assert padded < 0.75 * naive


def test_bucketed_sampler_is_seeded_and_reshuffles_each_epoch():
    lengths = list(range(200))
    a, b = (
        LengthBucketBatchSampler(lengths, 8, seed=1),
        LengthBucketBatchSampler(lengths, 8, seed=1),
    )
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(LengthBucketBatchSampler(lengths, 8, seed=2)) != first


def test_max_length_too_small_for_the_response_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match=r"data\.max_length=12"):
        encode(
            [Example("a", response="b")], tokenizer, Encoding(max_length=12, max_response_length=10)
        )
