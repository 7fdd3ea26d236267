"""`python -m csft.serve model_dir=<run or model folder>`: an HTTP JSON API over an export.

Endpoints (FastAPI on uvicorn; config: conf/serve.yaml):

- `POST /predict` with `{"texts": ["...", ...]}` or
  `{"inputs": [{"text": "...", "context": ["earlier turn", ...], "response": "..."}, ...]}`
  (`context` and `response` optional; null is the same as absent) answers
  `{"predictions": [...], "model": {"task", "backend", "handoff_threshold"}}`: one
  `Predictor.predict` dict per input, in input order (classification: label, confidence,
  top_k, handoff; regression: score). `model` says which kind of model answered and the
  threshold that set `handoff`. Texts longer than the model takes are cut from the left,
  as in training; that is not an error.
- `GET /health`: `{"status": "ok"}` (the model is loaded before the server listens).
- `GET /metadata`: `Predictor.describe()` plus `"serve"`: max_batch, max_wait_ms,
  max_items, max_body_bytes, top_k.
- `GET /metrics`: Prometheus text (a registry per app): `csft_requests_total{endpoint,
  status}`, `csft_request_errors_total{endpoint,status}` (4xx and 5xx),
  `csft_request_latency_seconds{endpoint}` (histogram), `csft_batch_size` (histogram of
  inputs per model call), `csft_items_predicted_total`, `csft_batch_failures_total`.
  Unknown paths count as endpoint="other", so a scanner cannot grow the label set.

Every error is `{"error": {"status": N, "message": "..."}}`, the message naming the field
at fault (`texts[3]`, `inputs[0].context[1]`): 400 the body is not JSON; 422 the JSON has
the wrong shape, an empty list, a non-string or blank text, or an input the model cannot
take (`Predictor.check`: a pair model without a response, a response to a non-pair
model); 413 more than `serve.max_items` inputs or a body over `serve.max_body_bytes`
(Content-Length, then the bytes actually read, so an oversized chunked upload is cut off
rather than buffered); 404 unknown path; 405 wrong method; 500 the model call failed.
Any bad request leaves the server serving.

Micro-batching: one asyncio task pools the inputs of concurrent requests. It sends a batch
to the model when it holds `serve.max_batch` inputs or when the oldest waiting input has
waited `serve.max_wait_ms` (at once when the previous call held a single input: an idle
server adds no wait); a request larger than max_batch spans several batches. The
model runs in one worker thread, one call at a time, so the event loop keeps accepting
requests meanwhile. A batch that raises fails only the requests with inputs in it (500);
the batcher goes on with the next batch.

workers=N starts N uvicorn processes. Each loads its own copy of the model and runs its own
batcher and its own metrics: a scrape of /metrics describes only the worker that answered
it (run one worker per container and let Prometheus add them up, or keep workers=1 when
exact totals matter). The parent loads the model once first, so a bad model_dir fails
before any worker starts, and hands the config to the workers as JSON in the environment
variable CSFT_SERVE_CONFIG (uvicorn starts workers from an import string:
`csft.serve:app_from_env`).

SIGTERM or SIGINT: uvicorn stops accepting connections, finishes the requests in flight,
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Histogram,
        generate_latest,
    )
    from starlette.exceptions import HTTPException
except ModuleNotFoundError as missing:  # the `serve` extra is not installed
    raise SystemExit(
        f"csft: error: csft.serve needs {missing.name}: pip install 'csft[serve]'"
    ) from None

from csft.console import quiet_libraries
from csft.data.example import Example
from csft.errors import ConfigError, CsftError, DataError

log = logging.getLogger("csft.serve")

ENV_CONFIG = "CSFT_SERVE_CONFIG"
ENDPOINTS = ("/predict", "/health", "/metadata", "/metrics")
INPUT_KEYS = ("text", "context", "response")
JSON_TYPES = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


@dataclass(frozen=True)
class ServeSettings:
    """The `serve:` section of conf/serve.yaml: batching and request limits."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_items: int = 256
    max_body_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for key in ("max_batch", "max_items", "max_body_bytes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"serve.{key}={getattr(self, key)}: expected at least 1.")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve.max_wait_ms={self.max_wait_ms}: expected 0 or more.")


class RequestError(Exception):
    """A request the server refuses; answered as `{"error": {"status", "message"}}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BatchFailed(Exception):
    """The model call holding some of a request's inputs raised."""


# --- request parsing -------------------------------------------------------------------


def _json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"{where}: expected a string, got {_json_type(value)}.")
    return value


def _items(payload: Any) -> tuple[str, list[Any]]:
    """("texts" or "inputs", its list): exactly one of the two keys, holding a list."""
    usage = 'expected an object with one key, "texts" (strings) or "inputs" (objects)'
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body is {_json_type(payload)}: {usage}.")
    keys = [k for k in ("texts", "inputs") if k in payload]
    unknown = sorted(set(payload) - {"texts", "inputs"})
    if unknown:
        raise RequestError(422, f"unknown key(s) {', '.join(map(repr, unknown))}: {usage}.")
    if len(keys) != 1:
        found = "both" if keys else "neither"
        raise RequestError(422, f'the body has {found} of "texts" and "inputs": {usage}.')
    key = keys[0]
    items = payload[key]
    if not isinstance(items, list):
        raise RequestError(422, f"{key}: expected a list, got {_json_type(items)}.")
    if not items:
        raise RequestError(422, f"{key}: the list is empty; give at least one input.")
    return key, items


def _parse_input(item: Any, where: str) -> Example:
    """One element of "inputs": text, optional context (list of strings), optional response."""
    if not isinstance(item, dict):
        raise RequestError(
            422,
            f'{where}: expected an object with "text" (and optional "context", '
            f'"response"), got {_json_type(item)}.',
        )
    unknown = sorted(set(item) - set(INPUT_KEYS))
    if unknown:
        raise RequestError(
            422,
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(INPUT_KEYS)}.",
        )
    if "text" not in item:
        raise RequestError(422, f'{where}: "text" is missing.')
    text = _string(item["text"], f"{where}.text")
    context = item.get("context") or []
    if not isinstance(context, list):
        raise RequestError(
            422, f"{where}.context: expected a list of strings, got {_json_type(context)}."
        )
    turns = tuple(_string(turn, f"{where}.context[{j}]") for j, turn in enumerate(context))
    response = item.get("response")
    if response is not None:
        response = _string(response, f"{where}.response")
    return Example(text, context=turns, response=response, source=where)


def parse_examples(payload: Any, check: Callable[[Example], None], max_items: int) -> list[Example]:
    """The Examples of a parsed /predict body, or a RequestError naming what is wrong.

    `check` is `Predictor.check`: the model's own rules (no blank text, pairs need a
    response), whose DataError names the input (`source`).
    """
    key, items = _items(payload)
    if len(items) > max_items:
        raise RequestError(
            413,
            f"{key}: {len(items)} inputs; at most {max_items} per request "
            "(serve.max_items): split them over several requests.",
        )
    if key == "texts":
        examples = [
            Example(_string(text, f"texts[{i}]"), source=f"texts[{i}]")
            for i, text in enumerate(items)
        ]
    else:
        examples = [_parse_input(item, f"inputs[{i}]") for i, item in enumerate(items)]
    for example in examples:
        try:
            check(example)
        except DataError as err:
            raise RequestError(422, str(err)) from None
    return examples


async def read_body(receive_chunks: Any, content_length: str | None, limit: int) -> bytes:
    """The body, refused (413) once it would pass `limit` bytes: by its Content-Length
    before reading anything, else as soon as the bytes read pass it."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(400, f"Content-Length {content_length!r} is not a number.") from None
        if declared > limit:
            raise RequestError(
                413, f"the body is {declared} bytes; at most {limit} (serve.max_body_bytes)."
            )
    body = bytearray()
    async for chunk in receive_chunks:
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the body is over {limit} bytes (serve.max_body_bytes).")
    return bytes(body)


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"the body is not JSON: {err}.") from None
    except RecursionError:
        raise RequestError(400, "the body is not JSON csft can read: nested too deeply.") from None


# --- micro-batching --------------------------------------------------------------------


@dataclass
class _Item:
    example: Example
    future: asyncio.Future
    arrived: float


class MicroBatcher:
    """Pools the inputs of concurrent requests into model calls of up to `max_batch` items.

    A batch leaves when it is full or when its oldest input has waited `max_wait_s`, so
    no input waits longer than that for company; and at once when the previous call held a
    single input (no load: waiting would only add latency). Inputs that arrive while the
    model runs share the next call either way. The model runs in one thread, one call
    at a time: the event loop stays free to accept requests while it runs.
    """

    def __init__(
        self,
        predict: Callable[[list[Example]], list[dict[str, Any]]],
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.on_failure = on_failure
        self._pending: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csft-predict")
        self._task: asyncio.Task | None = None
        self._last_size = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._pending:
            item.future.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """The predictions for `examples`, in order; BatchFailed if a model call raised."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = [loop.create_future() for _ in examples]
        self._pending.extend(_Item(e, f, now) for e, f in zip(examples, futures, strict=True))
        self._arrived.set()
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:  # the request is lost: its inputs still queued are skipped
                future.cancel()
            raise

    async def _run(self) -> None:
        while True:
            await self._run_batch(await self._collect())

    async def _collect(self) -> list[_Item]:
        """Wait for a first input, then until the batch is full or that input's wait is up."""
        loop = asyncio.get_running_loop()
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        # Wait for company only under load (the last call pooled several inputs): a lone
        # request on an idle server goes straight to the model.
        wait = self.max_wait_s if self._last_size > 1 else 0.0
        deadline = self._pending[0].arrived + wait
        while len(self._pending) < self.max_batch and loop.time() < deadline:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        size = min(self.max_batch, len(self._pending))
        self._last_size = size
        return [self._pending.popleft() for _ in range(size)]

    async def _run_batch(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        examples = [item.example for item in live]
        try:
            results = await loop.run_in_executor(self._executor, self.predict, examples)
            if len(results) != len(live):
                raise RuntimeError(f"{len(results)} predictions for {len(live)} inputs")
        except Exception as err:
            log.exception("a batch of %d inputs failed", len(live))
            self.on_failure()
            failure = BatchFailed(f"{type(err).__name__}: {err}")
            for item in live:
                if not item.future.done():
                    item.future.set_exception(failure)
            return
        self.on_batch(len(live))
        for item, result in zip(live, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)


# --- metrics ---------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics in a registry of their own (one per app, so tests and several
    apps in one process do not share counters)."""

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry()
        by_status = ["endpoint", "status"]
        self.requests = Counter(
            "csft_requests",
            "HTTP requests by endpoint and status code.",
            by_status,
            registry=self.registry,
        )
        self.errors = Counter(
            "csft_request_errors",
            "Requests answered with an error status (4xx, 5xx).",
            by_status,
            registry=self.registry,
        )
        self.latency = Histogram(
            "csft_request_latency_seconds",
            "Time from request to response.",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "csft_batch_size",
            "Inputs per model call (micro-batch).",
            buckets=batch_buckets(max_batch),
            registry=self.registry,
        )
        self.items = Counter("csft_items_predicted", "Inputs predicted.", registry=self.registry)
        self.batch_failures = Counter(
            "csft_batch_failures",
            "Model calls that raised (their requests got 500).",
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.items.inc(size)


def batch_buckets(max_batch: int) -> list[float]:
    """Powers of two up to max_batch, and max_batch itself: a full batch is its own bucket."""
    buckets = {1, max_batch}
    size = 2
    while size < max_batch:
        buckets.add(size)
        size *= 2
    return sorted(float(b) for b in buckets)


# --- the app ---------------------------------------------------------------------------


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "message": message}}, status_code=status, headers=headers
    )


def create_app(predictor: Any, settings: ServeSettings) -> FastAPI:
    """The FastAPI app over a loaded Predictor; its batcher starts and stops with the app."""
    metrics = Metrics(settings.max_batch)
    batcher: MicroBatcher | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        nonlocal batcher
        batcher = MicroBatcher(
            predictor.predict,
            settings.max_batch,
            settings.max_wait_ms / 1000,
            on_batch=metrics.observe_batch,
            on_failure=metrics.batch_failures.inc,
        )
        batcher.start()
        yield
        await batcher.close()

    # No /docs or /openapi.json: the body is validated by hand, so a schema would mislead.
    app = FastAPI(title="csft", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    model_summary = {
        "task": predictor.task,
        "backend": predictor.backend,
        "handoff_threshold": predictor.threshold,
    }
    metadata = {
        **predictor.describe(),
        "serve": {**asdict(settings), "top_k": predictor.top_k},
    }

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Any:
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics.observe_request(endpoint, status, time.perf_counter() - start)

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> Any:
        return error_response(err.status, err.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Any:
        path = request.url.path
        if err.status_code == 404:
            message = f"no endpoint {path}: POST /predict, GET /health, /metadata, /metrics."
        elif err.status_code == 405:
            allowed = (err.headers or {}).get("Allow", "")
            message = f"{request.method} {path} is not allowed (allowed: {allowed})."
        else:
            message = str(err.detail)
        return error_response(err.status_code, message, err.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception) -> Any:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(err).__name__}.")

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        body = await read_body(
            request.stream(), request.headers.get("content-length"), settings.max_body_bytes
        )
        examples = parse_examples(decode_json(body), predictor.check, settings.max_items)
        assert batcher is not None  # set by the lifespan before any request
        try:
            predictions = await batcher.submit(examples)
        except BatchFailed as err:
            raise RequestError(500, f"the model failed on this batch: {err}") from None
        return JSONResponse({"predictions": predictions, "model": model_summary})

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/metadata")
    async def describe() -> Any:
        return metadata

    @app.get("/metrics")
    async def scrape() -> Any:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# --- loading and running ---------------------------------------------------------------


def check_model_dir(model_dir: str) -> None:
    """A model_dir without an export fails at once, naming the key the user typed, not
    after the seconds that importing torch for `Predictor.load` takes (which checks the rest).
    """
    path = Path(model_dir)
    if not any((folder / "csft.json").is_file() for folder in (path, path / "model")):
        raise ConfigError(
            f"model_dir={path}: neither it nor {path / 'model'} is a csft export (no csft.json)."
        )


def load_predictor(options: dict[str, Any]) -> Any:
    """The Predictor `options` (the resolved config) names; CsftError if it cannot load."""
    from csft.inference import Predictor

    return Predictor.load(
        options["model_dir"],
        backend=options["backend"],
        threads=options["threads"],
        top_k=options["top_k"],
        threshold=options["threshold"],
    )


def app_from_env() -> FastAPI:
    """The app a uvicorn worker process builds (workers > 1): config from CSFT_SERVE_CONFIG."""
    quiet_libraries()
    options = json.loads(os.environ[ENV_CONFIG])
    return create_app(load_predictor(options), ServeSettings(**options["serve"]))


def serve_options(cfg: DictConfig) -> dict[str, Any]:
    """The keys the server and its workers need, as plain JSON-able values."""
    if cfg.workers < 1:
        raise ConfigError(f"workers={cfg.workers}: expected at least 1.")
    threads = cfg.threads
    if threads is None and cfg.workers > 1:  # N workers × all cores would oversubscribe
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    serve = OmegaConf.to_container(cfg.serve, resolve=True)
    ServeSettings(**serve)  # a bad limit is a config error before anything loads
    check_model_dir(str(cfg.model_dir))
    return {
        "model_dir": str(cfg.model_dir),
        "backend": cfg.backend,
        "threads": threads,
        "top_k": cfg.top_k,
        "threshold": cfg.threshold,
        "serve": serve,
    }


@contextmanager
def _signals_end_cleanly() -> Iterator[None]:
    """uvicorn re-raises SIGTERM/SIGINT through the previous handler once it has shut down
    gracefully: with Python's default handlers the process would then die of the signal (or
    print a KeyboardInterrupt). The stop was clean, so that re-raise does nothing and the
    process exits 0; the default handlers come back once uvicorn has returned."""
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_server(predictor: Any, options: dict[str, Any], cfg: DictConfig) -> None:
    """uvicorn until SIGTERM/SIGINT: in this process (workers=1) or in N worker processes."""
    import uvicorn

    common = {"host": cfg.host, "port": cfg.port, "access_log": cfg.access_log}
    with _signals_end_cleanly():
        if cfg.workers == 1:
            uvicorn.run(create_app(predictor, ServeSettings(**options["serve"])), **common)
        else:
            os.environ[ENV_CONFIG] = json.dumps(options)
            uvicorn.run("csft.serve:app_from_env", factory=True, workers=cfg.workers, **common)


@hydra.main(version_base="1.3", config_path="pkg://csft.conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    """`python -m csft.serve model_dir=<run> [backend=onnx] [port=8000] [workers=2]`."""
    quiet_libraries()
    try:
        options = serve_options(cfg)
        predictor = load_predictor(options)
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        sys.exit(2)
    labels = len(predictor.describe()["labels"])
    log.info(
        "serving http://%s:%s (backend=%s, task=%s, %d labels, %d worker%s)",
        cfg.host,
        cfg.port,
        predictor.backend,
        predictor.task,
        labels,
        cfg.workers,
        "s" if cfg.workers > 1 else "",
    )
    # With several workers each loads its own copy: this one only proved the folder loads.
    run_server(predictor if cfg.workers == 1 else None, options, cfg)
    log.info("stopped")


if __name__ == "__main__":
    main()
