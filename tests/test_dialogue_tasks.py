"""Reply appropriateness (Bitext pairs), reply-quality scores (DSTC9), multi-turn dialogues."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from conftest import FIXTURES, compose, tiny_overrides

from csft.data.bitext import MATCH, MISMATCH, build_pairs, read_support_rows, split_rows
from csft.data.dialogues import read_dialogues
from csft.data.dstc9 import read_rated_replies, scaled_mean, split_instances
from csft.data.encoding import Encoding, encode
from csft.data.example import Example
from csft.errors import ConfigError, DataError
from csft.train import train

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
DSTC9 = "dstc9_track1_human_eval"


# -- Bitext pairs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bitext_splits(data_dir):
    rows = read_support_rows(data_dir / BITEXT)
    return rows, split_rows(rows, 0.1, 0.2, seed=0)


def test_bitext_rows_split_by_intent_before_pairing_share_no_text(bitext_splits):
    rows, splits = bitext_splits
    assert len(rows) == 4514
    assert sum(len(s) for s in splits.values()) == 4514
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not {r.query for r in splits[a]} & {r.query for r in splits[b]}
        assert not {r.response for r in splits[a]} & {r.response for r in splits[b]}
    intents = Counter(r.intent for r in splits["test"])
    assert len(intents) == 27 and min(intents.values()) >= 0.15 * 139  # stratified


def test_negatives_come_from_another_intent_and_hard_ones_from_the_same_category(bitext_splits):
    _, splits = bitext_splits
    rows = splits["train"]
    by_response = {r.response: r for r in rows}
    by_query = {r.query: r for r in rows}
    for share, expected_hard in ((1.0, 0.9), (0.0, 0.0)):
        pairs = build_pairs(rows, 2, share, random.Random(0))
        negatives = [e for e in pairs if e.label == MISMATCH]
        assert len(negatives) == 2 * len(rows) and len(pairs) == 3 * len(rows)
        hard = 0
        for e in negatives:
            query, reply = by_query[e.text], by_response[e.response]  # same split only
            assert reply.intent != query.intent
            hard += reply.category == query.category
        assert hard / len(negatives) >= expected_hard if share else hard == 0
    positives = [e for e in pairs if e.label == MATCH]
    assert all(by_query[e.text].response == e.response for e in positives)


def test_bitext_missing_column_is_named(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("instruction,response,intent\nhi,hello,greet\n")
    with pytest.raises(DataError, match="needs columns category"):
        read_support_rows(path)


def test_bitext_pairs_end_to_end_on_the_tiny_bert(tmp_path, data_dir):
    results = train(
        compose(
            tiny_overrides(
                tmp_path,
                "data=bitext_pairs",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=20",
                "trainer.limit_val_batches=5",
                "trainer.limit_test_batches=5",
                "data.max_length=64",
                "data.max_response_length=32",
            )
        )
    )
    assert {"test/acc", "test/f1_macro", "test/auroc"} <= results.keys()
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": MISMATCH, "1": MATCH}


def test_pair_task_with_mse_is_a_config_error(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="use loss=ce"):
        train(compose(tiny_overrides(tmp_path, "data=bitext_pairs", "loss=mse")))


# -- DSTC9 ratings -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dstc9_rows(data_dir):
    return read_rated_replies(data_dir / DSTC9, with_entity=True, with_answer=True)


def test_dstc9_rows_and_target_scaling(dstc9_rows):
    assert len(dstc9_rows) == 20648
    assert len({i for i, _ in dstc9_rows}) == 1979
    assert scaled_mean({"appropriateness": [5, 5, 5]}, "appropriateness") == 1.0
    assert scaled_mean({"appropriateness": [1, 2, 3]}, "appropriateness") == 0.25
    ratings = {"appropriateness": [5, 5, 5], "accuracy": [1, 1, 1]}
    assert scaled_mean(ratings, "both") == 0.5
    assert all(0.0 <= e.label <= 1.0 for _, e in dstc9_rows)
    _, first = dstc9_rows[0]
    assert len(first.context) == 2 and first.text.endswith("?") and first.response


def test_dstc9_is_split_by_instance_never_by_row(dstc9_rows):
    assignment = split_instances({i for i, _ in dstc9_rows}, 0.1, 0.2, seed=0)
    seen: dict[int, set[str]] = {}
    for i, _ in dstc9_rows:
        seen.setdefault(i, set()).add(assignment[i])
    assert all(len(splits) == 1 for splits in seen.values())
    assert Counter(assignment.values())["test"] == round(1979 * 0.2)
    assert split_instances(set(seen), 0.1, 0.2, seed=0) == assignment


def test_dstc9_regression_end_to_end_reports_the_mean_baseline(tmp_path, data_dir):
    results = train(
        compose(
            tiny_overrides(
                tmp_path,
                "data=dstc9_ratings",  # declares regression: loss=auto trains with MSE
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=10",
                "trainer.limit_val_batches=3",
            )
        )
    )
    assert {"test/mse", "test/mae", "test/pearson", "test/spearman"} <= results.keys()
    assert 0.0 < results["test/mean_baseline_mse"] < 0.1


def test_dstc9_binary_view_with_class_weights(tmp_path, data_dir):
    results = train(
        compose(
            tiny_overrides(
                tmp_path,
                "data=dstc9_ratings",
                "data.task=classification",
                "loss.class_weights=balanced",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=10",
                "trainer.limit_val_batches=3",
                "trainer.limit_test_batches=5",
            )
        )
    )
    assert "test/auroc" in results


def test_dstc9_binary_view_refuses_a_regression_loss(tmp_path, data_dir):
    message = r"loss=mse is a regression loss, but the data's task is classification"
    with pytest.raises(ConfigError, match=message):
        train(
            compose(
                tiny_overrides(
                    tmp_path, "data=dstc9_ratings", "data.task=classification", "loss=mse"
                )
            )
        )


# -- multi-turn dialogues ------------------------------------------------------------------
def write_lines(tmp_path, *rows) -> str:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_dialogue_reader_takes_the_last_customer_turn_as_text():
    examples = read_dialogues(
        FIXTURES / "dialogues.jsonl", speaker_markers={"customer": "customer:", "agent": "agent:"}
    )
    assert len(examples) == 24
    first = examples[0]
    assert first.text == "customer: I lost my card"
    assert first.context == ("customer: hello", "agent: Good day, what can I do for you?")
    assert first.response == "I've blocked the card and ordered a new one."


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([{"speaker": "agent", "text": "hello"}], "line 2: the dialogue has no customer turn"),
        ([{"speaker": "customer"}], "line 2, turn 1: column 'text' must be text"),
        ([{"speaker": "customer", "text": "  "}], "line 2, turn 1: column 'text' is empty"),
        ([{"speaker": "bot", "text": "hi"}], "line 2: turn 1 has speaker 'bot'"),
    ],
)
def test_bad_dialogues_name_file_and_line(tmp_path, turns, message):
    good = {"id": "a", "turns": [{"speaker": "customer", "text": "hi"}], "label": "x"}
    path = write_lines(tmp_path, good, {"id": "b", "turns": turns, "label": "x"})
    with pytest.raises(DataError, match=message) as err:
        read_dialogues(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("label", [{}, {"label": None}], ids=["no key", "null"])
def test_dialogue_without_a_label_names_file_and_line_unless_unlabelled(tmp_path, label):
    good = {"id": "a", "turns": [{"speaker": "customer", "text": "hi"}], "label": "x"}
    path = write_lines(
        tmp_path, good, {"id": "b", "turns": [{"speaker": "customer", "text": "yo"}]} | label
    )
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: no 'label'"):
        read_dialogues(path)
    assert [e.label for e in read_dialogues(path, labelled=False)] == ["x", None]


def test_training_on_a_dialogue_without_a_label_stops_naming_file_and_line(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "dialogues.jsonl").read_text().splitlines()]
    del rows[2]["label"]
    path = write_lines(tmp_path, *rows)
    cfg = compose(tiny_overrides(tmp_path / "run", "data=dialogues", f"data.train_file={path}"))
    with pytest.raises(DataError, match=r"d\.jsonl, line 3: no 'label'") as err:
        train(cfg)
    assert str(path) in str(err.value)


def byte_level_tokenizer(tmp_path):
    """A second fast tokenizer family (RoBERTa-style BPE with <s> … </s></s> … </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    corpus = [
        json.loads(line)["turns"][-1]["text"]
        for line in (FIXTURES / "dialogues.jsonl").read_text().splitlines()
    ] * 5
    backend.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<s>", "</s>", "<pad>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    backend.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    from tokenizers import decoders

    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


@pytest.mark.parametrize("family", ["wordpiece", "bpe"])
def test_long_history_keeps_the_final_turn_and_the_response(tmp_path, tokenizer, family):
    tok = tokenizer if family == "wordpiece" else byte_level_tokenizer(tmp_path)
    history = tuple(f"agent: older message number {i} about a transfer" for i in range(40))
    example = Example(
        "customer: please refund my card", context=history, response="Your refund was issued"
    )
    encoding = Encoding(max_length=48, max_response_length=16, turn_separator=f" {tok.sep_token} ")
    (row,) = encode([example], tok, encoding)
    assert len(row["input_ids"]) == 48
    text = tok.decode(row["input_ids"], skip_special_tokens=True)
    assert text.replace(" ", "").lower().endswith("customer:pleaserefundmycardyourrefundwasissued")
    assert "number 0 " not in text and "39 about a transfer" in text


def test_max_context_turns_keeps_the_latest(tokenizer):
    example = Example("now", context=("one", "two", "three"))
    assert Encoding(max_context_turns=1).first_segment(example) == "three [SEP] now"
    assert Encoding(max_context_turns=0).first_segment(example) == "now"


def test_dialogues_end_to_end_on_the_tiny_bert(tmp_path):
    results = train(
        compose(
            tiny_overrides(
                tmp_path,
                "data=dialogues",
                f"data.train_file={FIXTURES / 'dialogues.jsonl'}",
                f"data.test_file={FIXTURES / 'dialogues.jsonl'}",
                "data.val_fraction=0.25",
                "data.batch_size=4",
                "trainer.max_epochs=2",
            )
        )
    )
    assert results["epochs"] == 2 and "test/acc" in results
