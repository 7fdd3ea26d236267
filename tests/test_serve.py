"""csft.serve: the real server in a subprocess, over real HTTP, on tiny exported models.

Both servers (and the bad-model_dir run) are started at once by one module fixture: each
spends most of its start-up importing torch, which overlaps. Each test then waits for the
server it needs to answer /health.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, compose, tiny_classifier

from csft.data.encoding import Encoding
from csft.data.example import Example
from csft.errors import CsftError
from csft.export import export_model
from csft.inference import Predictor
from csft.model.calibration import calibrate
from csft.serve import (
    BatchFailed,
    MicroBatcher,
    ServeSettings,
    create_app,
    load_predictor,
    serve_options,
)

LABELS = {0: "card_lost", 1: "refund", 2: "transfer"}
# Small limits so that the 413s and the batch splitting are cheap to reach; a long wait so
# that concurrent requests reliably share model calls on a busy machine.
SERVE_OVERRIDES = (
    "serve.max_batch=16",
    "serve.max_wait_ms=50",
    "serve.max_items=64",
    "serve.max_body_bytes=100000",
)
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m csft.serve` in a subprocess, its output in files (a pipe nobody reads
    would block it once full)."""

    def __init__(self, name: str, model_dir: Path, tmp: Path, *overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = tmp / f"{name}.stderr"
        command = [
            sys.executable, "-m", "csft.serve",
            f"model_dir={model_dir}", f"port={self.port}", "threads=1", "access_log=false",
            f"hydra.run.dir={tmp / name}",
            *overrides,
        ]  # fmt: skip
        with (tmp / f"{name}.stdout").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_healthy(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited {self.process.returncode}:\n{self.stderr()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"no /health within {START_TIMEOUT_S} s:\n{self.stderr()}")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> int:
        self.terminate()
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def post(self, body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json=body, timeout=30)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as `name{label=value,...}` → value."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {
            sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def export(out_dir: Path, tokenizer: Any, num_labels: int = 3, **kwargs: Any) -> Path:
    """A tiny random BERT export; classification ones calibrated like a real run."""
    torch.manual_seed(0)
    pair_task = kwargs.pop("pair_task", False)
    model = tiny_classifier(num_labels, pooling="cls", **kwargs).eval()
    calibration = None
    if num_labels > 1:
        logits = torch.randn(200, num_labels) * 3
        labels = logits.argmax(-1)
        labels[:30] = torch.randint(0, num_labels, (30,))
        calibration = calibrate(logits, labels, 0.98)
    # Pairs need room for the reply (max_response_length) inside max_length.
    encoding = Encoding(max_length=64, max_response_length=16) if pair_task else Encoding(32)
    return export_model(model, tokenizer, encoding, out_dir, calibration, pair_task=pair_task)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-models")
    return {
        "classifier": export(root / "classifier", tokenizer, id2label=LABELS),
        "pair": export(root / "pair", tokenizer, 2, id2label={0: "bad", 1: "good"}, pair_task=True),
        "regression": export(root / "regression", tokenizer, 1, task="regression"),
    }


@pytest.fixture(scope="module")
def launched(model_dirs, tmp_path_factory) -> Any:
    tmp = tmp_path_factory.mktemp("serve-runs")
    servers = {
        "classifier": Server("classifier", model_dirs["classifier"], tmp, *SERVE_OVERRIDES),
        "pair": Server("pair", model_dirs["pair"], tmp),
        "missing": Server("missing", tmp / "no-such-run", tmp),
    }
    yield servers
    for server in servers.values():  # all at once: each takes seconds to exit
        server.terminate()
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def server(launched) -> Server:
    return launched["classifier"].wait_healthy()


@pytest.fixture(scope="module")
def expected(model_dirs) -> Any:
    """What the in-process Predictor says about the same inputs."""
    predictor = Predictor.load(model_dirs["classifier"])
    return lambda examples: predictor.predict(examples)


def compose_serve(*overrides: str) -> Any:
    return compose(list(overrides), config_name="serve")


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if "score" in w:
            assert g["score"] == pytest.approx(w["score"], abs=1e-5)
            continue
        assert g["label"] == w["label"]
        assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-5)
        assert [k["label"] for k in g["top_k"]] == [k["label"] for k in w["top_k"]]
        assert g["handoff"] == w["handoff"]


def texts_for(request: int, size: int) -> list[str]:
    return [f"request {request} item {i}: " + "card lost refund " * (i % 5) for i in range(size)]


# --- endpoints -------------------------------------------------------------------------


def test_health(server):
    answer = httpx.get(f"{server.url}/health", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_metadata_describes_model_and_limits(server, model_dirs):
    metadata = httpx.get(f"{server.url}/metadata", timeout=10).json()
    csft_json = json.loads((model_dirs["classifier"] / "csft.json").read_text())
    assert metadata["task"] == "classification"
    assert metadata["labels"] == ["card_lost", "refund", "transfer"]
    assert metadata["pair_task"] is False
    assert metadata["backend"] == "torch"
    assert metadata["handoff_threshold"] == csft_json["calibration"]["threshold"]
    assert metadata["serve"] == {
        "max_batch": 16,
        "max_wait_ms": 50,
        "max_items": 64,
        "max_body_bytes": 100000,
        "top_k": 3,
    }


def test_texts_predict_as_the_predictor_does(server, expected, model_dirs):
    texts = ["my card is lost", "I want a refund", "send money to my sister"]
    answer = server.post({"texts": texts})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert_same(body["predictions"], expected([Example(t) for t in texts]))
    threshold = json.loads((model_dirs["classifier"] / "csft.json").read_text())["calibration"]
    assert body["model"] == {
        "task": "classification",
        "backend": "torch",
        "handoff_threshold": threshold["threshold"],
    }


def test_inputs_with_context_predict_as_the_predictor_does(server, expected):
    inputs = [
        {"text": "still nothing", "context": ["my card is lost", "we sent a new one"]},
        {"text": "and the refund?", "context": []},
        {"text": "hello", "context": None, "response": None},
    ]
    answer = server.post({"inputs": inputs})
    assert answer.status_code == 200, answer.text
    want = expected(
        [
            Example("still nothing", context=("my card is lost", "we sent a new one")),
            Example("and the refund?"),
            Example("hello"),
        ]
    )
    assert_same(answer.json()["predictions"], want)
    # The context changes the answer: it really reached the model.
    alone = server.post({"texts": ["still nothing"]}).json()["predictions"][0]
    assert alone["confidence"] != answer.json()["predictions"][0]["confidence"]


def test_long_text_is_truncated_not_refused(server):
    answer = server.post({"texts": ["word " * 5000]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in LABELS.values()


def test_request_larger_than_a_batch_is_split_and_kept_in_order(server, expected):
    texts = texts_for(99, 40)  # serve.max_batch=16: three model calls
    answer = server.post({"texts": texts})
    assert answer.status_code == 200, answer.text
    assert_same(answer.json()["predictions"], expected([Example(t) for t in texts]))


def test_concurrent_requests_share_batches_and_get_their_own_answers(server, expected):
    sizes = list(range(1, 17))
    requests_texts = [texts_for(r, size) for r, size in enumerate(sizes)]
    before = server.metrics()
    start = threading.Barrier(len(sizes))

    def send(texts: list[str]) -> httpx.Response:
        start.wait()
        return server.post({"texts": texts})

    with ThreadPoolExecutor(len(sizes)) as pool:
        answers = list(pool.map(send, requests_texts))
    after = server.metrics()

    for texts, answer in zip(requests_texts, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert_same(answer.json()["predictions"], expected([Example(t) for t in texts]))

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    ok = 'csft_requests_total{"endpoint": "/predict", "status": "200"}'
    assert delta(ok) == len(sizes)
    assert delta("csft_items_predicted_total{}") == sum(sizes)
    batches = delta("csft_batch_size_count{}")
    # Fewer model calls than requests: inputs of different requests shared calls.
    assert batches < len(sizes)
    assert delta('csft_batch_size_bucket{"le": "1.0"}') < batches  # some batch held > 1


def test_metrics_is_valid_prometheus_text(server):
    server.post({"texts": ["my card is lost"]})
    answer = httpx.get(f"{server.url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert families["csft_requests"].type == "counter"
    assert families["csft_request_errors"].type == "counter"
    assert families["csft_request_latency_seconds"].type == "histogram"
    assert families["csft_batch_size"].type == "histogram"
    assert families["csft_items_predicted"].type == "counter"
    assert families["csft_batch_failures"].type == "counter"


# --- refusals --------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param(b"not json", 400, "not JSON", id="not-json"),
    pytest.param(b"\xff\xfe{", 400, "not JSON", id="not-utf8"),
    pytest.param(b"", 400, "not JSON", id="empty-body"),
    pytest.param(["hello"], 422, "the body is a list", id="not-an-object"),
    pytest.param({}, 422, 'neither of "texts" and "inputs"', id="neither-key"),
    pytest.param({"texts": ["a"], "inputs": [{"text": "a"}]}, 422, "both", id="both-keys"),
    pytest.param({"text": ["a"]}, 422, "unknown key(s) 'text'", id="unknown-top-key"),
    pytest.param({"texts": "hello"}, 422, "texts: expected a list", id="texts-not-list"),
    pytest.param({"texts": []}, 422, "texts: the list is empty", id="empty-texts"),
    pytest.param({"inputs": []}, 422, "inputs: the list is empty", id="empty-inputs"),
    pytest.param({"texts": ["a", "b", "c", 7]}, 422, "texts[3]: expected a string", id="int"),
    pytest.param({"texts": ["fine", "   "]}, 422, "texts[1]: the text is empty", id="blank"),
    pytest.param({"inputs": ["hello"]}, 422, "inputs[0]: expected an object", id="input-str"),
    pytest.param(
        {"inputs": [{"text": "a", "speaker": "x"}]},
        422,
        "inputs[0]: unknown key(s) 'speaker'",
        id="input-unknown-key",
    ),
    pytest.param({"inputs": [{"context": ["a"]}]}, 422, '"text" is missing', id="no-text"),
    pytest.param(
        {"inputs": [{"text": "ok"}, {"text": None}]},
        422,
        "inputs[1].text: expected a string, got null",
        id="null-text",
    ),
    pytest.param(
        {"inputs": [{"text": "a", "context": "earlier"}]},
        422,
        "inputs[0].context: expected a list of strings",
        id="context-str",
    ),
    pytest.param(
        {"inputs": [{"text": "a", "context": ["ok", 5]}]},
        422,
        "inputs[0].context[1]: expected a string",
        id="context-int",
    ),
    pytest.param(
        {"inputs": [{"text": "a", "response": 5}]},
        422,
        "inputs[0].response: expected a string",
        id="response-int",
    ),
    pytest.param(
        {"inputs": [{"text": "a", "response": "hi"}]},
        422,
        "inputs[0]: this model takes no response",
        id="response-to-non-pair",
    ),
    pytest.param({"texts": ["x"] * 65}, 413, "at most 64", id="too-many-items"),
    pytest.param(b'{"texts": ["' + b"x" * 150_000 + b'"]}', 413, "at most 100000", id="big"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_bad_request_is_refused_and_the_next_one_served(server, body, status, message):
    if isinstance(body, bytes):
        answer = httpx.post(f"{server.url}/predict", content=body, timeout=30)
    else:
        answer = server.post(body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["status"] == status
    assert message in error["message"]
    assert server.post({"texts": ["my card is lost"]}).status_code == 200


def test_oversized_chunked_body_is_cut_off(server):
    """No Content-Length: the limit applies to the bytes as they arrive."""

    def chunks() -> Any:
        yield b'{"texts": ["'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"]}'

    answer = httpx.post(f"{server.url}/predict", content=chunks(), timeout=30)
    assert answer.status_code == 413, answer.text
    assert "over 100000 bytes" in answer.json()["error"]["message"]
    assert server.post({"texts": ["my card is lost"]}).status_code == 200


def test_unknown_path_and_wrong_method_answer_json(server):
    missing = httpx.get(f"{server.url}/predictions", timeout=10)
    assert missing.status_code == 404
    assert "no endpoint /predictions" in missing.json()["error"]["message"]
    wrong = httpx.get(f"{server.url}/predict", timeout=10)
    assert wrong.status_code == 405
    assert wrong.json()["error"] == {
        "status": 405,
        "message": "GET /predict is not allowed (allowed: POST).",
    }
    assert server.post({"texts": ["my card is lost"]}).status_code == 200


# --- other models, start-up and shutdown ----------------------------------------------------


def test_pair_model_needs_a_response_then_stops_on_sigterm(launched, model_dirs):
    """The pair server's only test, so it ends by stopping it (a server costs seconds of
    CPU to start: the module starts two)."""
    server = launched["pair"].wait_healthy()
    refused = server.post({"inputs": [{"text": "my card is lost"}]})
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert "inputs[0]: this model scores (message, reply) pairs" in message
    assert server.post({"texts": ["my card is lost"]}).status_code == 422
    inputs = [
        {"text": "my card is lost", "response": "I have blocked it."},
        {"text": "refund?", "context": ["hi"], "response": "It is on its way."},
    ]
    answer = server.post({"inputs": inputs})
    assert answer.status_code == 200, answer.text
    want = Predictor.load(model_dirs["pair"]).predict(
        [
            Example("my card is lost", response="I have blocked it."),
            Example("refund?", context=("hi",), response="It is on its way."),
        ]
    )
    assert_same(answer.json()["predictions"], want)

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) == 0, server.stderr()
    assert "Traceback" not in server.stderr()


def test_bad_model_dir_is_one_error_line(launched):
    missing = launched["missing"]
    assert missing.process.wait(timeout=START_TIMEOUT_S) == 2
    errors = [line for line in missing.stderr().splitlines() if line.strip()]
    assert len(errors) == 1, errors
    assert errors[0].startswith("csft: error: model_dir=") and "no-such-run" in errors[0]


# --- in-process: a regression model, a failing model call ---------------------------------


def test_regression_model_answers_scores(model_dirs):
    from fastapi.testclient import TestClient

    predictor = Predictor.load(model_dirs["regression"])
    with TestClient(create_app(predictor, ServeSettings())) as client:
        answer = client.post("/predict", json={"texts": ["great help", "useless"]})
        assert answer.status_code == 200, answer.text
        want = predictor.predict([Example("great help"), Example("useless")])
        assert_same(answer.json()["predictions"], want)
        assert answer.json()["model"]["task"] == "regression"
        assert client.get("/metadata").json()["labels"] == []


def test_missing_onnx_file_fails_before_serving(model_dirs):
    """What main reports as one `csft: error:` line (exit 2) before uvicorn starts."""
    options = serve_options(compose_serve(f"model_dir={model_dirs['classifier']}", "backend=onnx"))
    with pytest.raises(CsftError, match=r"model\.onnx: not found .*format=onnx"):
        load_predictor(options)


def test_onnx_backend_serves_the_same_predictions(model_dirs, tmp_path, expected):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx_export = pytest.importorskip("csft.onnx_export")
    from fastapi.testclient import TestClient

    model_dir = shutil.copytree(model_dirs["classifier"], tmp_path / "model")
    onnx_export.export_onnx(model_dir)
    texts = ["my card is lost", "I want a refund"]
    predictor = Predictor.load(model_dir, backend="onnx")
    with TestClient(create_app(predictor, ServeSettings())) as client:
        answer = client.post("/predict", json={"texts": texts})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["backend"] == "onnx"
    assert_same(answer.json()["predictions"], expected([Example(t) for t in texts]))


class FailingPredictor:
    """Stands in for a Predictor whose model call raises on any batch holding "boom"."""

    task, backend, threshold, top_k = "classification", "fake", None, 1

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "labels": ["x"]}

    def check(self, example: Example) -> None:
        pass

    def predict(self, examples: list[Example]) -> list[dict[str, Any]]:
        if any(e.text == "boom" for e in examples):
            raise RuntimeError("the model fell over")
        return [{"label": e.text} for e in examples]


def test_failed_batch_fails_only_its_requests():
    async def scenario() -> list[Any]:
        batcher = MicroBatcher(FailingPredictor().predict, max_batch=2, max_wait_s=0.05)
        batcher.start()
        try:
            # "a" and "boom" share the first call; "c", "d" the second.
            results = await asyncio.gather(
                batcher.submit([Example("a")]),
                batcher.submit([Example("boom")]),
                batcher.submit([Example("c"), Example("d")]),
                return_exceptions=True,
            )
            results.append(await batcher.submit([Example("after")]))
        finally:
            await batcher.close()
        return results

    first, second, third, after = asyncio.run(scenario())
    assert isinstance(first, BatchFailed) and isinstance(second, BatchFailed)
    assert "the model fell over" in str(second)
    assert third == [{"label": "c"}, {"label": "d"}]
    assert after == [{"label": "after"}]


def test_batcher_gives_each_request_its_own_answers_under_load():
    """Many requests of random sizes over small batches: each gets exactly its inputs back."""
    sizes = [int(n) for n in torch.randint(1, 20, (50,))]
    calls: list[int] = []

    def predict(examples: list[Example]) -> list[dict[str, Any]]:
        calls.append(len(examples))
        return [{"label": e.text} for e in examples]

    async def scenario() -> list[list[dict[str, Any]]]:
        batcher = MicroBatcher(predict, max_batch=7, max_wait_s=0.01)
        batcher.start()
        try:
            return await asyncio.gather(
                *(
                    batcher.submit([Example(f"{r}.{i}") for i in range(n)])
                    for r, n in enumerate(sizes)
                )
            )
        finally:
            await batcher.close()

    answers = asyncio.run(scenario())
    for r, (n, answer) in enumerate(zip(sizes, answers, strict=True)):
        assert answer == [{"label": f"{r}.{i}"} for i in range(n)]
    assert max(calls) == 7 and sum(calls) == sum(sizes)


def test_failed_batch_is_a_json_500_and_serving_goes_on():
    from fastapi.testclient import TestClient

    app = create_app(FailingPredictor(), ServeSettings(max_wait_ms=0))
    with TestClient(app) as client:
        failed = client.post("/predict", json={"texts": ["boom"]})
        assert failed.status_code == 500
        assert "the model fell over" in failed.json()["error"]["message"]
        assert client.post("/predict", json={"texts": ["fine"]}).json()["predictions"] == [
            {"label": "fine"}
        ]
        metrics = client.get("/metrics").text
        assert "csft_batch_failures_total 1.0" in metrics
