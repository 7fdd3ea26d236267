"""csft.pretrain: masked-LM pretraining through Trainer.fit → an encoder folder csft.train takes."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, INTENT_FIXTURE, ROOT, compose, tiny_overrides

from csft.data.corpus import MaskedLMDataModule, clean_corpus, example_texts
from csft.data.example import Example
from csft.errors import ConfigError, DataError, ModelNotAvailableError
from csft.model.masked_lm import MaskedLM
from csft.pretrain import check, pretrain, read_corpus
from csft.pretrained import load_encoder

TEST_ONLY_TEXT = "I misplaced my card"  # in intents_test.csv, not in intents_train.csv
EXTRA_TEXTS = [
    "my card was declined at the shop",
    "how do I change my pin",
    "the app will not let me log in",
    "I was charged twice for one coffee",
    "can I get a new card sent abroad",
    "what is the exchange rate today",
    "my top up did not go through",
    "I forgot my passcode",
    "why is my balance not updated",
    "how do I close my account",
    "is my money safe with you",
    "the atm kept my card",
]


def training_messages() -> list[str]:
    with (FIXTURES / "intents_train.csv").open() as handle:
        return [row["message"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """36 distinct messages, plus a repeat and blank lines that the corpus drops."""
    path = tmp_path_factory.mktemp("corpus") / "messages.txt"
    lines = [*training_messages(), "", "   ", *EXTRA_TEXTS, EXTRA_TEXTS[0]]
    path.write_text("\n".join(lines) + "\n")
    return path


def pretrain_overrides(out: Path, model_dir: Path, *extra: str) -> list[str]:
    """The 4-layer tiny BERT folder (no masked-LM head: the head starts fresh), fast."""
    return tiny_overrides(
        out,
        f"model.name_or_path={model_dir}",
        "model.random_init=false",
        "model.config_overrides=null",
        "batch_size=8",
        "val_fraction=0.25",
        "optim.lr=1e-3",
        *extra,
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_bert_dir, corpus_file):
    """3 epochs (12 steps, the first 2 the head's alone) on the corpus file."""
    out = tmp_path_factory.mktemp("pretrain-run")
    overrides = pretrain_overrides(
        out, tiny_bert_dir, f"text_file={corpus_file}", "trainer.max_epochs=3"
    )
    results = pretrain(compose([*overrides, "head_warmup_ratio=0.2"], "pretrain"))
    return out, results


def encoder_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_encoder(str(model_dir)).state_dict()


# -- the run and its encoder folder ---------------------------------------------------------
def test_the_encoder_folder_loads_clean_and_was_trained(pretrained, tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    out, results = pretrained
    encoder_dir = out / "encoder"
    assert results["encoder_dir"] == str(encoder_dir)
    assert json.loads((out / "metrics.json").read_text())["encoder_dir"] == str(encoder_dir)
    # The ecosystem's loader: a plain BertModel, every weight found, none left over.
    model, info = AutoModel.from_pretrained(encoder_dir, output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert not any(info.values()), info
    assert json.loads((encoder_dir / "config.json").read_text())["architectures"] == ["BertModel"]
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    assert tokenizer("my card is lost")["input_ids"][0] == tokenizer.cls_token_id

    start, trained = encoder_weights(tiny_bert_dir), encoder_weights(encoder_dir)
    assert start.keys() == trained.keys()
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    assert "embeddings.word_embeddings.weight" in changed  # also the tied decoder
    assert "encoder.layer.3.output.dense.weight" in changed
    # MLM does not use the pooler: it is the start checkpoint's, kept for pooling=cls.
    assert not {k for k in changed if k.startswith("pooler.")}
    assert results["steps"] == 12 and results["head_warmup_steps"] == 2


def test_validation_loss_is_logged_finite_and_falls(pretrained):
    out, results = pretrained
    assert math.isfinite(results["val/loss"]) and math.isfinite(results["val/loss_start"])
    assert results["val/perplexity"] == pytest.approx(math.exp(results["val/loss"]), rel=1e-5)
    assert results["val/loss"] < results["val/loss_start"]
    assert results["train_texts"] + results["val_texts"] == 36
    with (out / "csv" / "metrics.csv").open() as handle:
        logged = [float(r["val/loss"]) for r in csv.DictReader(handle) if r["val/loss"]]
    # Before fit, after each of the 3 epochs, and the restored best weights after fit.
    assert len(logged) == 5 and all(math.isfinite(v) for v in logged)
    assert logged[0] == pytest.approx(results["val/loss_start"])
    assert min(logged[1:4]) == pytest.approx(results["val/loss"])


def test_fine_tuning_starts_from_the_pretrained_encoder(pretrained, tmp_path):
    from csft.train import train

    encoder_dir = Path(pretrained[0]) / "encoder"
    cfg = compose(
        tiny_overrides(
            tmp_path,
            *INTENT_FIXTURE,
            f"model.name_or_path={encoder_dir}",
            "model.random_init=false",
            "model.config_overrides=null",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "freeze=embeddings",
            # report on (the default): the export of a pretrained encoder is evaluated too
        )
    )
    results = train(cfg)
    assert math.isfinite(results["test/loss"]) and 0 <= results["test/acc"] <= 1
    assert (tmp_path / "evaluation").is_dir() and "test/ece" in results
    exported = json.loads((tmp_path / "model" / "config.json").read_text())
    assert exported["num_hidden_layers"] == 4  # the encoder folder's, not model=tiny's 2
    # freeze=embeddings: the fine-tuned model's embeddings are the pretrained ones.
    from transformers import AutoModelForSequenceClassification

    fine_tuned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    pretrained_embeddings = encoder_weights(encoder_dir)["embeddings.word_embeddings.weight"]
    assert torch.equal(fine_tuned.bert.embeddings.word_embeddings.weight, pretrained_embeddings)


def test_the_head_warmup_leaves_the_encoder_as_it_was(tiny_bert_dir, corpus_file, tmp_path):
    """All steps in the head warmup: the encoder folder holds the start weights, while the
    head alone lowered the validation loss."""
    overrides = pretrain_overrides(
        tmp_path, tiny_bert_dir, f"text_file={corpus_file}", "trainer.max_epochs=1"
    )
    results = pretrain(compose([*overrides, "head_warmup_ratio=0.99"], "pretrain"))
    assert results["head_warmup_steps"] == results["steps"] == 4
    start, saved = encoder_weights(tiny_bert_dir), encoder_weights(tmp_path / "encoder")
    assert all(torch.equal(start[k], saved[k]) for k in start)
    assert results["val/loss"] < results["val/loss_start"]


# -- the corpus ---------------------------------------------------------------------------
def test_a_data_config_gives_its_train_texts_only(tmp_path):
    cfg = compose([*tiny_overrides(tmp_path, *INTENT_FIXTURE)], "pretrain")
    texts, where = read_corpus(cfg)
    assert "intents_train.csv" in where
    assert TEST_ONLY_TEXT not in texts
    # The 25 % the data config carves out to validate fine-tuning is left out as well.
    assert len(texts) == 18 and set(texts) < set(training_messages())


def test_dialogues_give_context_turns_and_responses(tmp_path):
    cfg = compose(
        [
            *tiny_overrides(tmp_path),
            "data=dialogues",
            f"data.train_file={FIXTURES / 'dialogues.jsonl'}",
        ],
        "pretrain",
    )
    texts, _ = read_corpus(cfg)
    assert "customer: I lost my card" in texts or "customer: hello" in texts
    assert "I've blocked the card and ordered a new one." in texts
    assert len(texts) == len(set(texts))


def test_example_texts_and_cleaning():
    examples = [Example("b", "x", context=("a",), response="c"), Example(" b ", "y")]
    assert example_texts(examples) == ["a", "b", "c", " b "]
    assert clean_corpus(example_texts(examples), "here") == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("messages.txt", "plain message\n"),
        ("messages.jsonl", '{"body": "plain message"}\n{"body": null}\n'),
        ("messages.csv", "id,body\n1,plain message\n2,\n"),
        ("messages.tsv", "id\tbody\n1\tplain message\n"),
    ],
)
def test_text_files_of_each_kind(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    cfg = compose([*tiny_overrides(tmp_path), f"text_file={path}", "text_column=body"], "pretrain")
    assert read_corpus(cfg)[0] == ["plain message"]


def test_validation_masks_are_the_same_every_time(minilm_dir):
    """Every validation of a run (and of a rerun with the seed) scores the same masks."""

    def setup() -> MaskedLMDataModule:
        data = MaskedLMDataModule(
            minilm_dir, ["a first text to train on"], EXTRA_TEXTS, batch_size=4, eval_batch_size=5
        )
        data.setup("fit")
        return data

    data = setup()
    first, second, rerun = [list(d.val_dataloader()) for d in (data, data, setup())]
    for a, b, c in zip(first, second, rerun, strict=True):
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    labels = torch.cat([b["labels"].flatten() for b in first])
    assert 0 < (labels != -100).sum() < (labels.numel() // 2)
    train = next(iter(data.train_dataloader()))
    assert train["labels"].shape == train["input_ids"].shape


def test_the_masked_token_loss_is_the_models_own(tiny_bert_dir):
    """Running the head on the masked tokens alone gives transformers' masked-LM loss."""
    model = MaskedLM(str(tiny_bert_dir))
    assert all(m.training for m in model.modules())  # dropout on (from_pretrained: eval mode)
    model.eval()
    input_ids = torch.randint(1000, 2000, (3, 9))
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 1] = 1500, 1600, 1700
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        loss, count = model(input_ids, mask, labels)
        expected = model.model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    assert count == 3
    torch.testing.assert_close(loss, expected)


# -- bad input: one clear error each ------------------------------------------------------
def corpus_error(tmp_path, *overrides: str) -> str:
    cfg = compose([*tiny_overrides(tmp_path), *overrides], "pretrain")
    with pytest.raises((DataError, ConfigError, ModelNotAvailableError)) as err:
        check(cfg)
        read_corpus(cfg)
    return str(err.value)


def test_a_file_of_blank_lines_is_an_empty_corpus(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\t\n")
    message = corpus_error(tmp_path, f"text_file={path}")
    assert str(path) in message and "empty" in message


def test_a_table_without_rows_is_named(tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("text\n")
    assert "holds no rows" in corpus_error(tmp_path, f"text_file={path}")


def test_a_missing_text_file_is_named(tmp_path):
    message = corpus_error(tmp_path, f"text_file={tmp_path / 'nope.txt'}")
    assert "nope.txt" in message and "not found" in message


def test_a_wrong_text_column_names_the_columns_found(tmp_path):
    path = tmp_path / "messages.csv"
    path.write_text("id,message\n1,hello\n")
    message = corpus_error(tmp_path, f"text_file={path}", "text_column=body")
    assert "'body'" in message and "id, message" in message


@pytest.mark.parametrize("both", [False, True])
def test_the_corpus_needs_data_or_text_file(tmp_path, corpus_file, both):
    extra = [*INTENT_FIXTURE, f"text_file={corpus_file}"] if both else []
    message = corpus_error(tmp_path, *extra)
    assert "data=<data config>" in message and "text_file=<file>" in message
    assert ("both" in message) == both


def test_a_folder_without_config_json_is_not_an_encoder(tmp_path, corpus_file):
    (tmp_path / "weights").mkdir()
    message = corpus_error(
        tmp_path, f"text_file={corpus_file}", f"model.name_or_path={tmp_path / 'weights'}"
    )
    assert "config.json" in message and "weights" in message


def test_a_decoder_is_not_an_encoder(tmp_path, corpus_file):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=1).save_pretrained(tmp_path / "gpt")
    message = corpus_error(
        tmp_path,
        f"text_file={corpus_file}",
        f"model.name_or_path={tmp_path / 'gpt'}",
        "model.random_init=false",
        "model.config_overrides=null",
    )
    assert "'gpt2'" in message and "masked-LM" in message


def test_impossible_numbers_name_their_key(tmp_path, corpus_file):
    message = corpus_error(tmp_path, f"text_file={corpus_file}", "mlm_probability=1.5")
    assert message.startswith("mlm_probability=1.5")


def test_the_command_line_says_one_line_and_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "csft.pretrain", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("csft: error: no corpus is given")


@pytest.mark.slow  # a whole command-line run (imports, Hydra, fit, save): ~30 s on 2 busy cores
def test_the_command_line_pretrains_into_its_run_dir(tmp_path, tiny_bert_dir, corpus_file):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "csft.pretrain",
            f"paths.log_dir={tmp_path}",
            "model=tiny",
            f"text_file={corpus_file}",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (run_dir,) = (tmp_path / "pretrain" / "runs").iterdir()
    assert (run_dir / "encoder" / "config.json").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "metrics.json").is_file()
    assert f"model.name_or_path={run_dir / 'encoder'}" in done.stdout
