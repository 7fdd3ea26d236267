"""ONNX export: one graph (encoder, pooling, head) that gives the torch export's logits on
batches of any size and length, an int8 variant, and clear errors for what is missing."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from csft.errors import ConfigError

ID2LABEL = {0: "card_lost", 1: "refund", 2: "transfer"}
MESSAGES = [
    "my card is lost",
    "refund please, it has been a week and the money is still not back on my account",
    "how do I transfer money to a friend abroad?",
    "hi",
    "the exchange rate you applied to my last card payment looks wrong to me",
]
REPLIES = ["we blocked it", "sorry about that", "use the app", "hello", "let me check"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_bert_dir, tokenizer) -> dict[str, tuple[Path, dict]]:
    """pooling → (a tiny export with model.onnx and model.int8.onnx, its csft.json before)."""
    from csft.data.encoding import Encoding
    from csft.export import export_model
    from csft.model.classifier import Classifier
    from csft.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx-exports")
    built = {}
    for pooling in ("cls", "mean"):
        torch.manual_seed(0)
        model = Classifier(str(tiny_bert_dir), 3, id2label=ID2LABEL, pooling=pooling).eval()
        folder = export_model(model, tokenizer, Encoding(), root / pooling)
        before = json.loads((folder / "csft.json").read_text())
        assert export_onnx(folder, quantize="int8") == [
            folder / "model.onnx",
            folder / "model.int8.onnx",
        ]
        built[pooling] = (folder, before)
    return built


def batches(tokenizer) -> list[dict[str, torch.Tensor]]:
    """Other batch sizes (5, 1, 3) and lengths than the export's example (2 × 7), padded."""
    five = tokenizer(MESSAGES, padding=True, return_tensors="pt")
    one = tokenizer([" ".join(MESSAGES)], return_tensors="pt")
    pairs = tokenizer(MESSAGES[:3], REPLIES[:3], padding=True, return_tensors="pt")
    found = [dict(b) for b in (five, one, pairs)]
    sizes, lengths = zip(*(b["input_ids"].shape for b in found), strict=True)
    assert sizes == (5, 1, 3) and min(lengths) > 7 and len(set(lengths)) == 3, lengths
    assert (five["attention_mask"] == 0).any() and (pairs["token_type_ids"] == 1).any()
    return found


INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def torch_logits(model: Path | torch.nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """The logits of the export's torch model (`load_exported`) for the batch's inputs."""
    from csft.export import load_exported

    if isinstance(model, Path):
        model = load_exported(model)
    with torch.no_grad():
        return model(**{name: batch[name] for name in INPUTS}).logits.numpy()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_onnx_gives_the_torch_logits_for_any_batch_size_and_length(exports, tokenizer, pooling):
    from csft.onnx_export import load_session, run_session

    folder, _ = exports[pooling]
    session = load_session(folder, threads=1)
    inputs = {i.name: (i.type, len(i.shape)) for i in session.get_inputs()}
    assert inputs == {name: ("tensor(int64)", 2) for name in INPUTS}
    assert [(o.name, o.type) for o in session.get_outputs()] == [("logits", "tensor(float)")]
    for batch in batches(tokenizer):
        expected = torch_logits(folder, batch)
        # Extra keys (a collated batch's labels, index) are ignored; numpy works as well.
        batch_with_extras = {**batch, "labels": torch.zeros(len(expected)), "index": None}
        got = run_session(session, batch_with_extras)
        as_numpy = run_session(session, {k: v.numpy() for k, v in batch.items()})
        assert got.dtype == np.float32 and got.shape == (len(expected), 3)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(as_numpy, got)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_int8_graph_is_smaller_and_close_to_fp32(exports, tokenizer, pooling):
    from csft.onnx_export import load_session, run_session

    folder, _ = exports[pooling]
    fp32, int8 = load_session(folder), load_session(folder, "onnx-int8")
    assert (folder / "model.int8.onnx").stat().st_size < (folder / "model.onnx").stat().st_size
    texts = [f"{a} {b}" for a in MESSAGES for b in REPLIES]  # 25 rows
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    full, quantized = run_session(fp32, batch), run_session(int8, batch)
    assert quantized.shape == full.shape and quantized.dtype == np.float32
    assert not np.array_equal(quantized, full)  # it is a different graph
    assert np.corrcoef(full.ravel(), quantized.ravel())[0, 1] > 0.99
    assert (full.argmax(1) == quantized.argmax(1)).mean() >= 0.9


def test_csft_json_keeps_its_keys_and_records_the_onnx_files(exports):
    folder, before = exports["mean"]
    after = json.loads((folder / "csft.json").read_text())
    assert {k: v for k, v in after.items() if k != "onnx"} == before
    onnx = after["onnx"]
    assert onnx["files"] == {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
    assert isinstance(onnx["opset"], int) and onnx["opset"] >= 17
    assert onnx["torch"] == torch.__version__
    assert onnx["quantization"]["per_channel"] is True
    assert not list(folder.glob("*.partial"))


def export_cli(*overrides: str, hydra_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "csft.export", *overrides, f"hydra.run.dir={hydra_dir}"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_cli_writes_both_graphs_and_prints_their_paths(exports, tokenizer, tmp_path):
    from csft.onnx_export import load_session, run_session

    folder = shutil.copytree(exports["cls"][0], tmp_path / "export")
    for name in ("model.onnx", "model.int8.onnx"):
        (folder / name).unlink()
    metadata = json.loads((folder / "csft.json").read_text())
    del metadata["onnx"]
    (folder / "csft.json").write_text(json.dumps(metadata))

    done = export_cli(
        f"run_dir={folder}", "format=onnx", "quantize=int8", hydra_dir=tmp_path / "hydra"
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        f"wrote {folder / 'model.onnx'}",
        f"wrote {folder / 'model.int8.onnx'}",
    ]
    assert "Traceback" not in done.stderr
    batch = dict(tokenizer(MESSAGES, padding=True, return_tensors="pt"))
    got = run_session(load_session(folder), batch)
    np.testing.assert_allclose(got, torch_logits(folder, batch), atol=1e-4, rtol=0)
    assert run_session(load_session(folder, "onnx-int8"), batch).shape == (5, 3)
    assert set(json.loads((folder / "csft.json").read_text())["onnx"]["files"]) == {
        "onnx",
        "onnx-int8",
    }


@pytest.mark.parametrize(
    ("override", "named"),
    [("quantize=int4", "quantize='int4'"), ("format=hf", "format='hf'")],
)
def test_cli_bad_value_is_one_error_line_and_exit_2(exports, tmp_path, override, named):
    folder = shutil.copytree(exports["cls"][0], tmp_path / "export")
    (folder / "model.onnx").unlink()

    done = export_cli(f"run_dir={folder}", override, hydra_dir=tmp_path / "hydra")

    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("csft: error:")]
    assert len(errors) == 1 and named in errors[0], done.stderr[-3000:]
    assert not (folder / "model.onnx").exists()


def test_bad_quantize_names_the_allowed_values(exports):
    from csft.onnx_export import export_onnx

    with pytest.raises(ConfigError, match=r"quantize='fp16'.*int8"):
        export_onnx(exports["cls"][0], quantize="fp16")


def test_a_missing_graph_names_the_command_that_writes_it(exports, tmp_path):
    from csft.onnx_export import export_onnx, load_session

    folder = shutil.copytree(exports["mean"][0], tmp_path / "export")
    # An fp32-only export removes the int8 graph an earlier export left: it no longer matches.
    assert export_onnx(folder) == [folder / "model.onnx"]
    assert not (folder / "model.int8.onnx").exists()
    onnx = json.loads((folder / "csft.json").read_text())["onnx"]
    assert onnx["files"] == {"onnx": "model.onnx"} and onnx["quantization"] is None

    with pytest.raises(ConfigError) as missing_int8:
        load_session(folder, "onnx-int8")
    assert str(folder / "model.int8.onnx") in str(missing_int8.value)
    assert f"python -m csft.export run_dir={folder} format=onnx quantize=int8" in str(
        missing_int8.value
    )
    (folder / "model.onnx").unlink()
    with pytest.raises(ConfigError) as missing_fp32:
        load_session(folder)
    assert str(missing_fp32.value).endswith(f"python -m csft.export run_dir={folder} format=onnx")
    with pytest.raises(ConfigError, match=r"backend='tensorrt'.*onnx-int8"):
        load_session(folder, "tensorrt")


def test_a_failed_export_leaves_the_earlier_files_untouched(exports, tmp_path, monkeypatch):
    import csft.onnx_export

    folder = shutil.copytree(exports["cls"][0], tmp_path / "export")
    (folder / "model.int8.onnx").unlink()
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    def fail(fp32: Path, int8: Path) -> None:
        assert fp32.name.endswith(".partial") and fp32.stat().st_size > 0  # fp32 was written
        int8.write_bytes(b"half a graph")
        raise RuntimeError("quantization failed")

    monkeypatch.setattr(csft.onnx_export, "_quantize_int8", fail)
    with pytest.raises(RuntimeError, match="quantization failed"):
        csft.onnx_export.export_onnx(folder, quantize="int8")

    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == digest


def test_missing_onnx_packages_say_how_to_install_them(exports, monkeypatch):
    from csft.onnx_export import export_onnx, load_session

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    for call in (lambda: export_onnx(exports["cls"][0]), lambda: load_session(exports["cls"][0])):
        with pytest.raises(ConfigError, match=r"onnxruntime.*pip install 'csft\[onnx\]'"):
            call()


def test_packaged_minilm_on_banking77_rows(tmp_path, data_dir, minilm_dir, tokenizer):
    """The real encoder (random head: parity needs no training) on 64 real test messages,
    encoded and padded by csft's own pipeline."""
    from csft.data.collate import PadCollator
    from csft.data.encoding import Encoding, encode
    from csft.data.readers import read_examples
    from csft.export import export_model, load_exported
    from csft.model.classifier import Classifier
    from csft.onnx_export import export_onnx, load_session, run_session

    examples = read_examples(
        data_dir / "banking77" / "test.csv", text_column="text", label_column="category"
    )[::48][:64]
    labels = sorted({str(e.label) for e in examples})
    torch.manual_seed(0)
    model = Classifier(minilm_dir, len(labels), id2label=dict(enumerate(labels))).eval()
    folder = export_model(model, tokenizer, Encoding(), tmp_path / "minilm")
    export_onnx(folder, quantize="int8")

    rows = [{**row, "index": i} for i, row in enumerate(encode(examples, tokenizer, Encoding()))]
    collate = PadCollator(tokenizer.pad_token_id)
    exported = load_exported(folder)
    fp32, int8 = load_session(folder), load_session(folder, "onnx-int8")
    expected, got, quantized = [], [], []
    for start in (0, 40):  # two batches: 40 and 24 rows, each padded to its own longest
        batch = collate(rows[start : start + 40])
        expected.append(torch_logits(exported, batch))
        got.append(run_session(fp32, batch))
        quantized.append(run_session(int8, batch))
    expected, got, quantized = map(np.concatenate, (expected, got, quantized))

    assert got.shape == (64, len(labels))
    assert np.abs(got - expected).max() < 1e-4
    # A random head's logits are near-ties, so argmax agreement says little: check the scores.
    assert np.corrcoef(quantized.ravel(), got.ravel())[0, 1] > 0.9
