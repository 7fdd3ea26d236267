"""`csft.predict`: a file of any size, streamed in chunks, gives the Predictor's predictions
row for row; bad rows stop the run (or are listed aside) and nothing partial is left."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import FIXTURES, ROOT, compose, tiny_classifier

from csft.data.dialogues import read_dialogues
from csft.data.encoding import Encoding
from csft.data.example import Example
from csft.data.streaming import RowStream, table_example
from csft.errors import ConfigError, DataError
from csft.export import export_model
from csft.inference import Predictor
from csft.model.calibration import calibrate
from csft.predict import predict_file, run

ID2LABEL = {0: "card_lost", 1: "refund", 2: "transfer"}
MARKERS = {"customer": "customer:", "agent": "agent:"}
PHRASES = ["my card is lost", "refund please", "the transfer never arrived", "where is my money"]
# Messages of many lengths, so length-sorted batches differ from input order.
MESSAGES = [" ".join(PHRASES[(i + j) % 4] for j in range(1 + i % 5)) + f" #{i}" for i in range(40)]


def _export(out_dir: Path, tokenizer, task: str = "classification", pair: bool = False) -> Path:
    torch.manual_seed(0)
    if task == "regression":
        model = tiny_classifier(1, task="regression", pooling="cls").eval()
        calibration = None
    else:
        model = tiny_classifier(3, id2label=ID2LABEL, pooling="cls").eval()
        logits = torch.randn(200, 3) * 3
        labels = logits.argmax(-1)
        labels[:30] = torch.randint(0, 3, (30,))
        calibration = calibrate(logits, labels, 0.98)
    encoding = Encoding(max_length=48, max_response_length=16)
    return export_model(model, tokenizer, encoding, out_dir, calibration, pair_task=pair)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("predict-models")
    return SimpleNamespace(
        classifier=_export(root / "classifier", tokenizer),
        pair=_export(root / "pair", tokenizer, pair=True),
        regression=_export(root / "regression", tokenizer, task="regression"),
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a shared, busy machine two threads wait on each other (a 40-row
    predict: 1.4 s on two threads, 0.02 s on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path, monkeypatch):
    """Hydra's run directory (the CLI's log) goes under tmp_path, not outputs/."""
    monkeypatch.setenv("CSFT_LOG_DIR", str(tmp_path / "logs"))


# -- helpers -------------------------------------------------------------------------------


def cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "csft.predict", *overrides, "threads=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def predict(model_dir: Path, input: Path, output: Path, *overrides: str):
    """`python -m csft.predict` in-process (its `run`), with Hydra's composition."""
    cfg = compose(
        [f"model_dir={model_dir}", f"input={input}", f"output={output}", *overrides], "predict"
    )
    return run(cfg)


def write_table(path: Path, rows: list[dict]) -> Path:
    """rows in the file type of `path`'s suffix (TSV unquoted, as csft reads it)."""
    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_NONE)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_output(path: Path) -> list[dict]:
    """An output file as dicts, top_k as a list whatever the format."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".parquet":
        rows = pd.read_parquet(path).to_dict(orient="records")
    else:
        tsv = path.suffix == ".tsv"
        rows = pd.read_csv(
            path,
            sep="\t" if tsv else ",",
            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
            dtype={"label": str, "id": str},
        ).to_dict(orient="records")
    for row in rows:
        if isinstance(row.get("top_k"), str):
            row["top_k"] = json.loads(row["top_k"])
        if isinstance(row.get("handoff"), str):
            row["handoff"] = row["handoff"] == "true"
    return rows


def assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        if "score" in want:
            assert row["score"] == pytest.approx(want["score"], abs=1e-5)
            continue
        assert row["label"] == want["label"]
        assert row["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
        assert bool(row["handoff"]) == want["handoff"]
        assert [k["label"] for k in row["top_k"]] == [k["label"] for k in want["top_k"]]
        assert [k["score"] for k in row["top_k"]] == pytest.approx(
            [k["score"] for k in want["top_k"]], abs=1e-5
        )


def expected(model_dir: Path, examples: list[Example], **load) -> list[dict]:
    return Predictor.load(model_dir, **load).predict(examples, batch_size=8)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


# -- end to end ----------------------------------------------------------------------------


def test_cli_predicts_a_csv_in_chunks_and_reports(models, tmp_path):
    """The real command: several chunks, one row per input in order, the closing lines."""
    rows = [{"id": f"t{i}", "text": text} for i, text in enumerate(MESSAGES)]
    source = write_table(tmp_path / "tickets.csv", rows)
    output = tmp_path / "new" / "dir" / "predictions.csv"  # missing directories are created
    done = cli(
        f"model_dir={models.classifier}",
        f"input={source}",
        f"output={output}",
        "id_column=id",
        "chunk_size=7",
        "batch_size=4",
    )
    assert done.returncode == 0, done.stderr
    got = read_output(output)
    assert list(got[0])[:3] == ["row", "id", "label"]
    assert [r["row"] for r in got] == list(range(1, len(MESSAGES) + 1))
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    want = expected(models.classifier, [Example(t) for t in MESSAGES])
    assert_same_predictions(got, want)
    handed = sum(w["handoff"] for w in want)
    assert f"predicted {len(MESSAGES)} rows in" in done.stdout
    assert "rows/s" in done.stdout and f"; {handed} handed off" in done.stdout
    assert f"wrote {output}" in done.stdout
    assert leftovers(output.parent) == []


@pytest.mark.parametrize(
    ("source", "target"),
    [("csv", "jsonl"), ("tsv", "csv"), ("jsonl", "parquet"), ("parquet", "tsv")],
)
def test_every_format_in_and_out_gives_the_predictors_predictions(
    models, tmp_path, monkeypatch, source, target
):
    """Chunks of 6 over 40 rows: 7 calls to Predictor.predict, none over 6 rows."""
    sizes: list[int] = []
    real = Predictor.predict
    monkeypatch.setattr(
        Predictor, "predict", lambda self, ex, bs=64: sizes.append(len(ex)) or real(self, ex, bs)
    )
    rows = [{"id": f"t{i}", "text": text} for i, text in enumerate(MESSAGES)]
    path = write_table(tmp_path / f"in.{source}", rows)
    output = tmp_path / f"out.{target}"
    summary = predict(models.classifier, path, output, "id_column=id", "chunk_size=6")
    assert sizes == [6] * 6 + [4] and summary.rows == len(MESSAGES)
    got = read_output(output)
    assert [r["row"] for r in got] == list(range(1, len(MESSAGES) + 1))
    assert [str(r["id"]) for r in got] == [r["id"] for r in rows]
    monkeypatch.setattr(Predictor, "predict", real)
    assert_same_predictions(got, expected(models.classifier, [Example(t) for t in MESSAGES]))


def test_jsonl_output_holds_top_k_as_a_list_and_csv_as_json_text(models, tmp_path):
    path = write_table(tmp_path / "in.csv", [{"text": t} for t in MESSAGES[:3]])
    predict(models.classifier, path, tmp_path / "out.jsonl", "top_k=2")
    predict(models.classifier, path, tmp_path / "out.csv", "top_k=2")
    line = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert list(line) == ["row", "label", "confidence", "handoff", "top_k"]
    assert isinstance(line["top_k"], list) and len(line["top_k"]) == 2
    assert isinstance(line["handoff"], bool)
    cell = pd.read_csv(tmp_path / "out.csv", dtype=str)["top_k"][0]
    assert json.loads(cell) == line["top_k"]


def test_dialogues_give_the_predictions_of_read_dialogues_examples(models, tmp_path):
    """Turns JSONL: the Examples `read_dialogues` builds, with the markers csft.json names.
    A blank line is skipped but counted: `row` is the line an editor shows."""
    metadata_path = models.pair / "csft.json"
    saved = metadata_path.read_text()
    metadata_path.write_text(json.dumps({**json.loads(saved), "speaker_markers": MARKERS}))
    try:
        lines = (FIXTURES / "dialogues.jsonl").read_text().splitlines()[:9]
        source = tmp_path / "dialogues.jsonl"
        source.write_text("\n".join([*lines[:4], "", *lines[4:]]) + "\n")
        output = tmp_path / "out.jsonl"
        predict(models.pair, source, output, "format=dialogues", "id_column=id", "chunk_size=4")
        examples = read_dialogues(source, speaker_markers=MARKERS, labelled=False)
        want = expected(models.pair, examples)
    finally:
        metadata_path.write_text(saved)
    got = read_output(output)
    assert [r["row"] for r in got] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert [r["id"] for r in got] == [json.loads(line)["id"] for line in lines]
    assert_same_predictions(got, want)


def test_a_pair_model_reads_context_and_response_columns(models, tmp_path):
    rows = [
        {"text": "my card is lost", "history": ["hi", "hello, how can I help?"], "reply": "ok"},
        {"text": "refund please", "history": "where is my money", "reply": "sent it back"},
        {"text": "transfer never arrived", "history": [], "reply": "let me check"},
    ]
    path = write_table(tmp_path / "pairs.jsonl", rows)
    output = tmp_path / "out.parquet"
    predict(models.pair, path, output, "context_column=history", "response_column=reply", "top_k=1")
    examples = [
        Example("my card is lost", context=("hi", "hello, how can I help?"), response="ok"),
        Example("refund please", context=("where is my money",), response="sent it back"),
        Example("transfer never arrived", response="let me check"),
    ]
    assert_same_predictions(read_output(output), expected(models.pair, examples, top_k=1))
    with pytest.raises(ConfigError, match="response_column=<column>"):
        predict(models.pair, path, tmp_path / "no.csv", "context_column=history")
    with pytest.raises(ConfigError, match="not a pair model"):
        predict(models.classifier, path, tmp_path / "no.csv", "response_column=reply")
    assert not (tmp_path / "no.csv").exists()


def test_a_regression_model_writes_a_score(models, tmp_path):
    path = write_table(tmp_path / "in.csv", [{"text": t} for t in MESSAGES[:10]])
    output = tmp_path / "scores.csv"
    summary = predict(models.regression, path, output, "chunk_size=3")
    got = read_output(output)
    assert list(got[0]) == ["row", "score"]
    assert_same_predictions(got, expected(models.regression, [Example(t) for t in MESSAGES[:10]]))
    assert summary.handoffs is None and "handed off" not in summary.lines()[0]


# -- bad rows ------------------------------------------------------------------------------


def test_bad_rows_stop_the_cli_naming_their_lines_and_leave_the_output_alone(models, tmp_path):
    source = tmp_path / "tickets.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps({"text": "my card is lost"}),
                json.dumps({"text": "   "}),  # line 2: empty
                json.dumps({"text": "refund please"}),
                json.dumps({"message": "no text key"}),  # line 4: missing column
                "{not json",  # line 5
                json.dumps({"text": "transfer"}),
                json.dumps({"text": 42}),  # line 7: not text
            ]
        )
        + "\n"
    )
    output = tmp_path / "predictions.csv"
    output.write_text("an earlier run's predictions\n")
    done = cli(f"model_dir={models.classifier}", f"input={source}", f"output={output}")
    assert done.returncode == 2
    error = done.stderr.strip()
    assert error.count("\n") == 0 and error.startswith("csft: error: ")
    assert f"{source}: 4 bad lines (lines 2, 4, 5, 7)" in error
    assert "column 'text' is empty" in error and "on_bad_row=skip" in error
    assert output.read_text() == "an earlier run's predictions\n"
    assert leftovers(tmp_path) == [] and not (tmp_path / "predictions.csv.errors.csv").exists()


def test_the_error_names_the_first_ten_bad_rows_and_counts_them_all(models, tmp_path):
    rows = [{"text": "" if i % 2 else t} for i, t in enumerate(MESSAGES)]  # rows 2, 4, ... 40
    path = write_table(tmp_path / "in.csv", rows)
    with pytest.raises(DataError) as caught:
        predict(models.classifier, path, tmp_path / "out.csv", "chunk_size=8")
    assert "20 bad rows (rows 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 and 10 more)" in str(caught.value)
    assert not (tmp_path / "out.csv").exists() and leftovers(tmp_path) == []


def test_skip_writes_the_good_rows_and_lists_the_bad_ones(models, tmp_path):
    # Two columns: a one-column CSV's blank line is no row at all (for training too).
    rows = [{"id": i, "text": t} for i, t in enumerate(MESSAGES[:6])]
    rows[1]["text"] = ""
    rows[4]["text"] = " "
    path = write_table(tmp_path / "in.csv", rows)
    output = tmp_path / "out.jsonl"
    summary = predict(models.classifier, path, output, "on_bad_row=skip", "chunk_size=4")
    got = read_output(output)
    assert [r["row"] for r in got] == [1, 3, 4, 6]
    good = [Example(MESSAGES[i]) for i in (0, 2, 3, 5)]
    assert_same_predictions(got, expected(models.classifier, good))
    sidecar = tmp_path / "out.jsonl.errors.csv"
    assert pd.read_csv(sidecar).to_dict(orient="records") == [
        {"row": 2, "error": "column 'text' is empty."},
        {"row": 5, "error": "column 'text' is empty."},
    ]
    assert summary.bad_rows == 2 and f"skipped 2 bad rows, listed in {sidecar}" in summary.lines()
    # A clean rerun removes the stale list, which would describe rows no longer missing.
    write_table(path, [{"text": t} for t in MESSAGES[:6]])
    predict(models.classifier, path, output, "on_bad_row=skip")
    assert not sidecar.exists() and len(read_output(output)) == 6


def test_a_missing_column_names_the_columns_found(models, tmp_path):
    path = write_table(tmp_path / "in.csv", [{"message": "hi", "ticket": "1"}])
    with pytest.raises(DataError, match=r"'text' \(text_column\) not found; the columns are: "):
        predict(models.classifier, path, tmp_path / "out.csv")
    with pytest.raises(DataError, match=r"'ref' \(id_column\) not found; the columns are: message"):
        predict(
            models.classifier, path, tmp_path / "out.csv", "text_column=message", "id_column=ref"
        )
    with pytest.raises(DataError, match="the columns are: message, ticket"):
        table_example({"message": "hi", "ticket": "1"}, "in.jsonl, line 1", text_column="text")
    assert not (tmp_path / "out.csv").exists()


def test_a_missing_input_exits_2_with_one_line(tmp_path):
    """Refused before a model is loaded (model_dir is no export) or torch imported: fast."""
    done = cli(f"model_dir={tmp_path}", f"input={tmp_path / 'missing.csv'}", "output=out.csv")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr == f"csft: error: {tmp_path / 'missing.csv'}: data file not found.\n"


@pytest.mark.parametrize(
    ("input_name", "output_name", "message"),
    [
        ("tickets.txt", "out.csv", "unknown file type '.txt'"),
        ("tickets.csv", "out.xlsx", "unknown output type '.xlsx'"),
        ("tickets.csv", "out.json", "unknown output type '.json'"),
    ],
)
def test_unknown_suffixes_are_refused_before_any_work(tmp_path, input_name, output_name, message):
    """DataError (one `csft: error:` line, exit 2, as above) before the model is loaded:
    model_dir is no export, yet the suffix is what fails."""
    (tmp_path / input_name).write_text("text\nhello\n")
    with pytest.raises(DataError, match=re.escape(message)):
        predict(tmp_path, tmp_path / input_name, tmp_path / output_name)
    assert not (tmp_path / output_name).exists()


def test_model_and_backend_errors_are_csft_errors(models, tmp_path):
    path = write_table(tmp_path / "in.csv", [{"text": "hello"}])
    with pytest.raises(ConfigError, match="is a csft export"):
        predict(tmp_path, path, tmp_path / "out.csv")
    pytest.importorskip("onnxruntime")
    with pytest.raises(ConfigError, match=r"model\.onnx: not found"):
        predict(models.classifier, path, tmp_path / "out.csv", "backend=onnx")


# -- streaming -----------------------------------------------------------------------------


class CountingPredictor:
    """Predictor's interface without a model: records the size of every predict call."""

    task, pair_task, metadata = "classification", False, {}

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.sizes: list[int] = []
        self.fail_on_call = fail_on_call

    def check(self, example: Example) -> None:
        Predictor.check(self, example)

    def predict(self, examples: list[Example], batch_size: int) -> list[dict]:
        self.sizes.append(len(examples))
        if len(self.sizes) == self.fail_on_call:
            raise KeyboardInterrupt
        result = {"label": "refund", "confidence": 0.9, "top_k": [], "handoff": False}
        return [dict(result) for _ in examples]


def _parse(values, where):
    return table_example(values, where, text_column="text"), None


def test_a_20000_row_csv_streams_in_bounded_chunks(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("text\n" + "".join(f"message number {i}\n" for i in range(20_000)))
    stream = RowStream(path, chunk_size=1_500)
    assert max(len(chunk.rows) for chunk in stream) <= 1_500
    predictor = CountingPredictor()
    output = tmp_path / "out.csv"
    summary = predict_file(predictor, stream, output, _parse, progress=False)
    assert predictor.sizes == [1_500] * 13 + [500] and summary.rows == 20_000
    rows = pd.read_csv(output, usecols=["row"])["row"]
    assert rows.tolist() == list(range(1, 20_001))


def test_a_chunk_of_bad_rows_only_is_not_sent_to_the_model(tmp_path):
    path = write_table(tmp_path / "in.jsonl", [{"text": ""}, {"text": " "}, {"text": "a"}])
    predictor = CountingPredictor()
    output = tmp_path / "out.csv"
    summary = predict_file(predictor, RowStream(path, 2), output, _parse, on_bad_row="skip")
    assert predictor.sizes == [1] and summary.rows == 1 and summary.bad_rows == 2
    assert pd.read_csv(output)["row"].tolist() == [3]


def test_an_interrupted_run_leaves_the_earlier_output_untouched(tmp_path):
    path = write_table(tmp_path / "in.csv", [{"text": t} for t in MESSAGES])
    output = tmp_path / "out.parquet"
    output.write_bytes(b"earlier")
    predictor = CountingPredictor(fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        predict_file(predictor, RowStream(path, 10), output, _parse, on_bad_row="skip")
    assert output.read_bytes() == b"earlier" and leftovers(tmp_path) == []


def test_row_numbers_follow_readers_conventions(tmp_path):
    """CSV data rows from 1 (a quoted line break does not shift them), JSONL file lines."""
    path = tmp_path / "in.csv"
    path.write_text('text\n"two\nlines"\nsecond\n')
    assert [r.number for c in RowStream(path, 1) for r in c.rows] == [1, 2]
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n[1]\n{"text": "b"}\n')
    rows = [r for c in RowStream(path, 2) for r in c.rows]
    assert [r.number for r in rows] == [1, 3, 4]
    assert rows[1].values is None and "expected a JSON object" in rows[1].error
    assert os.path.getsize(path) == list(RowStream(path, 2))[-1].position


def test_the_predictor_refuses_inputs_its_model_was_not_trained_on(models):
    """Called directly (not through predict or serve), a pair model without a reply or a
    single-text model with one is an error, not a score of an encoding training never saw."""
    from csft.inference import Predictor

    pair = Predictor.load(models.pair)
    with pytest.raises(DataError, match="give a response"):
        pair.predict([Example("my card is lost", source="input 1")])
    assert len(pair.predict([Example("my card is lost", response="blocked it")])) == 1
    single = Predictor.load(models.classifier)
    with pytest.raises(DataError, match="takes no response"):
        single.predict([Example("my card is lost", response="blocked it")])
    with pytest.raises(DataError, match="empty"):
        single.predict([Example("   ")])
