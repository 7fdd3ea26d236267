"""How csft loads an export: its own model class, never the folder's code; broken files fail
with one clear error that names them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import INTENT_FIXTURE, ROOT, assert_same_logits

ID2LABEL = {0: "card_lost", 1: "refund", 2: "transfer"}
EVAL_DATA = [o for o in INTENT_FIXTURE if not o.startswith("data.val_fraction")]

# Stands in for a hostile modeling_csft.py: importing it leaves a marker, then fails loudly.
TAMPERED = """\
from pathlib import Path

Path({marker!r}).write_text("the export's own code ran")
raise RuntimeError("modeling_csft.py from the model folder was imported")
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_bert_dir, tokenizer) -> dict[str, tuple]:
    """pooling → (the Classifier, its export folder), built once for the module."""
    from csft.data.encoding import Encoding
    from csft.export import export_model
    from csft.model.classifier import Classifier

    root = tmp_path_factory.mktemp("exports")
    built = {}
    for pooling in ("cls", "mean"):
        torch.manual_seed(0)
        model = Classifier(str(tiny_bert_dir), 3, id2label=ID2LABEL, pooling=pooling).eval()
        built[pooling] = (model, export_model(model, tokenizer, Encoding(), root / pooling))
    return built


def evaluate_cli(run_dir: Path, out_dir: Path, modules: Path):
    """A fresh `python -m csft.evaluate` process on the intent fixture's test split.

    transformers copies any remote code it loads into HF_MODULES_CACHE: point it at `modules`.
    """
    env = {**os.environ, "HF_MODULES_CACHE": str(modules)}
    command = [
        sys.executable,
        "-m",
        "csft.evaluate",
        f"run_dir={run_dir}",
        f"hydra.run.dir={out_dir}",
        *EVAL_DATA,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def broken_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_load_exported_uses_csfts_own_class_and_reproduces_the_model(exports, tokenizer, pooling):
    from transformers import BertForSequenceClassification

    from csft.export import load_exported
    from csft.model.hf_modeling import CsftBertForSequenceClassification

    model, export = exports[pooling]
    loaded = load_exported(export)
    expected_class = {
        "cls": BertForSequenceClassification,
        "mean": CsftBertForSequenceClassification,  # csft's module, not the folder's copy
    }[pooling]
    assert type(loaded) is expected_class
    assert not loaded.training
    assert_same_logits(model, loaded, tokenizer)


def test_evaluate_never_runs_the_code_an_export_brings(exports, tmp_path):
    _, export = exports["mean"]
    tampered = broken_copy(export, tmp_path / "tampered")
    marker = tmp_path / "remote-code-ran"
    (tampered / "modeling_csft.py").write_text(TAMPERED.format(marker=str(marker)))
    modules = tmp_path / "hf-modules"

    clean = evaluate_cli(export, tmp_path / "eval-clean", modules)
    done = evaluate_cli(tampered, tmp_path / "eval-tampered", modules)

    assert clean.returncode == 0, clean.stderr[-2000:]
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists()
    assert not list(modules.rglob("modeling_csft.py"))
    for name in ("metrics.json", "per_class.csv"):
        assert (tmp_path / "eval-tampered" / name).read_text() == (
            tmp_path / "eval-clean" / name
        ).read_text(), name
    assert json.loads((tmp_path / "eval-tampered" / "metrics.json").read_text())["rows"] == 6
    # The tampered file does misbehave when something does import it (here: trust_remote_code).
    load = (
        "import sys; from transformers import AutoModelForSequenceClassification as A; "
        "A.from_pretrained(sys.argv[1], trust_remote_code=True)"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(modules)}
    imported = subprocess.run(
        [sys.executable, "-c", load, str(tampered)], capture_output=True, text=True, env=env
    )
    assert imported.returncode != 0 and marker.exists()


def truncate_weights(folder: Path) -> str:
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return "model.safetensors"


def break_config(folder: Path) -> str:
    with (folder / "config.json").open("a") as handle:
        handle.write("{ not json")
    return "config.json"


def break_metadata(folder: Path) -> str:
    (folder / "csft.json").write_text('{"task": "classification", ')
    return "csft.json"


def mislabel_pooling(folder: Path) -> str:
    # Mean-pooling weights have no [CLS] pooler: loading them as `cls` would score a random one.
    metadata = json.loads((folder / "csft.json").read_text())
    (folder / "csft.json").write_text(json.dumps({**metadata, "pooling": "cls"}))
    return "model.safetensors"


@pytest.mark.parametrize(
    "breakage", [truncate_weights, break_config, break_metadata, mislabel_pooling]
)
def test_a_broken_export_is_one_clear_error_naming_the_file(exports, tmp_path, breakage):
    folder = broken_copy(exports["mean"][1], tmp_path / "export")
    name = breakage(folder)

    done = evaluate_cli(folder, tmp_path / "eval", tmp_path / "hf-modules")

    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("csft: error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith(f"csft: error: {folder / name}: ")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_the_saved_tokenizer_truncates_as_training_did(exports):
    from transformers import AutoTokenizer

    from csft.data.encoding import Encoding

    tokenizer = AutoTokenizer.from_pretrained(exports["cls"][1])
    assert tokenizer.model_max_length == Encoding().max_length
    assert tokenizer.truncation_side == "left"
    ids = tokenizer("older words " * 100 + "my card is lost", truncation=True)["input_ids"]
    assert len(ids) == Encoding().max_length
    assert tokenizer.decode(ids[-5:-1]) == "my card is lost"  # the end survives


def test_a_mean_pooling_export_without_trust_remote_code_is_an_error_not_nonsense(exports):
    from transformers import AutoModelForSequenceClassification, pipeline

    _, export = exports["mean"]
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModelForSequenceClassification.from_pretrained(export)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("text-classification", model=str(export))
    assert "trust_remote_code=True" in (export / "README.md").read_text()
    assert json.loads((export / "csft.json").read_text())["trust_remote_code"] is True


def test_a_cls_export_loads_in_a_plain_pipeline_and_its_card_says_how(exports, tokenizer):
    from transformers import pipeline

    model, export = exports["cls"]
    classify = pipeline("text-classification", model=str(export))
    batch = tokenizer("my card is lost", return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**batch)[0].softmax(-1)
    prediction = classify("my card is lost")[0]
    assert prediction["label"] == ID2LABEL[int(probabilities.argmax())]
    assert prediction["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)
    card = (export / "README.md").read_text()
    assert "trust_remote_code" not in card and "truncation=True" in card


def test_pipeline_and_csft_evaluate_agree_on_multi_turn_pairs(tmp_path):
    """A dialogue run (context turns + a reply, first segment cut from the left at 24
    tokens): the pipeline called as the model card says gives the probabilities that
    csft.evaluate scores, row for row."""
    from conftest import FIXTURES, compose, tiny_overrides
    from transformers import pipeline

    from csft.data.dialogues import read_dialogues
    from csft.evaluate import evaluate, predict_split
    from csft.export import load_exported
    from csft.instantiation import instantiate_unwrapping_errors
    from csft.train import train

    dialogues = str(FIXTURES / "dialogues.jsonl")
    data = [
        "data=dialogues",
        f"data.train_file={dialogues}",
        f"data.test_file={dialogues}",
        "data.max_length=24",
        "data.max_response_length=12",
        "data.batch_size=4",
        "trainer.max_epochs=2",
    ]
    cfg = compose(tiny_overrides(tmp_path, *data))
    train(cfg)
    export = tmp_path / "model"
    metadata = json.loads((export / "csft.json").read_text())
    assert metadata["pair_task"] and metadata["speaker_markers"]["customer"] == "customer:"

    datamodule = instantiate_unwrapping_errors(cfg.data, tokenizer=str(export))
    datamodule.setup("test")
    logits, _, _ = predict_split(load_exported(export), datamodule.loader(datamodule.rows["test"]))
    expected = logits.softmax(-1)
    scored = evaluate(export, datamodule, "test", tmp_path / "evaluation")

    from csft.data.encoding import Encoding

    encoding = Encoding(**metadata["encoding"])
    examples = read_dialogues(dialogues, speaker_markers=metadata["speaker_markers"])
    inputs = [{"text": encoding.first_segment(e), "text_pair": e.response} for e in examples]
    classify = pipeline("text-classification", model=str(export))
    assert any(len(classify.tokenizer(**i)["input_ids"]) > 24 for i in inputs)  # truncation bites
    answers = classify(inputs, truncation="only_first", top_k=None)
    names = datamodule.id2label
    got = torch.tensor(
        [
            [{a["label"]: a["score"] for a in answer}[names[k]] for k in range(len(names))]
            for answer in answers
        ]
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    accuracy = sum(
        max(answer, key=lambda a: a["score"])["label"] == e.label
        for answer, e in zip(answers, examples, strict=True)
    ) / len(examples)
    assert scored["test/acc"] == pytest.approx(accuracy, abs=1e-6)


def test_loading_a_mean_export_for_inference_never_asks_on_stdin(exports, monkeypatch):
    """transformers asks "Do you wish to run the custom code?" on stdin when a folder with an
    auto_map is loaded without trust_remote_code; a server would hang on it."""
    import builtins

    from csft.data.example import Example
    from csft.inference import Predictor
    from csft.pretrained import load_tokenizer

    prompts = []

    def answer_no(prompt: str = "") -> str:  # transformers swallows errors raised here
        prompts.append(prompt)
        return "n"

    monkeypatch.setattr(builtins, "input", answer_no)
    _, export = exports["mean"]
    predictor = Predictor.load(export)
    assert predictor.predict([Example("my card is lost")])[0]["label"] in predictor.labels
    assert load_tokenizer(str(export))("my card")["input_ids"][0] == 101
    assert prompts == []
