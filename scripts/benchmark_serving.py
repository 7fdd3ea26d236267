"""Deployment benchmark: csft's inference backends and HTTP server against HF `pipeline`.

    python scripts/benchmark_serving.py --model-dir outputs/train/runs/<run>/model \
        [--threads 2] [--rows 3080] [--requests 300] [--out docs/benchmarks_serving.json]

All on one exported model, the same Banking77 test rows and the same number of threads, one
contender after another in this run (ratios are what to read; the machines are shared):

- batch predict, rows/s and test accuracy: csft `Predictor` with `backend=torch`, `onnx`
  (fp32), `onnx-int8` (dynamic int8) and `transformers.pipeline("text-classification",
  batch_size=64, truncation=True)` on the same folder;
- in-process single-text latency p50 / p95 of each;
- HTTP (`python -m csft.serve`, a real server in a subprocess): single-text latency p50 / p95
  at concurrency 1 and throughput at concurrency 16 (texts/s), per backend.

The model folder is copied to a temporary directory; ONNX graphs are written there.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64
BACKENDS = ("torch", "onnx", "onnx-int8")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def test_rows(limit: int | None) -> tuple[list[str], list[str]]:
    import pandas as pd

    data = Path(os.environ.get("CSFT_DATA_DIR", ROOT.parent / "shared" / "data"))
    frame = pd.read_csv(data / "banking77" / "test.csv", dtype=str, keep_default_na=False)
    frame = frame.head(limit) if limit else frame
    return frame["text"].tolist(), frame["category"].tolist()


def latencies(predict_one: Any, texts: list[str], requests: int) -> dict[str, float]:
    """p50 / p95 of one text at a time, after 10 warm-up calls."""
    for text in texts[:10]:
        predict_one(text)
    seconds = []
    for i in range(requests):
        start = time.perf_counter()
        predict_one(texts[i % len(texts)])
        seconds.append(time.perf_counter() - start)
    return {
        "p50_ms": round(1000 * percentile(seconds, 50), 2),
        "p95_ms": round(1000 * percentile(seconds, 95), 2),
    }


def bench_predictor(model_dir: Path, backend: str, texts, labels, args) -> dict[str, Any]:
    from csft.data.example import Example
    from csft.inference import Predictor

    predictor = Predictor.load(model_dir, backend=backend, threads=args.threads)
    examples = [Example(t) for t in texts]
    predictor.predict(examples[:BATCH], BATCH)  # warm-up
    start = time.perf_counter()
    predictions = predictor.predict(examples, BATCH)
    seconds = time.perf_counter() - start
    correct = sum(p["label"] == y for p, y in zip(predictions, labels, strict=True))
    return {
        "rows_per_s": round(len(texts) / seconds, 1),
        "accuracy": round(correct / len(texts), 6),
        "handoff_share": round(sum(p["handoff"] for p in predictions) / len(texts), 6),
        **latencies(lambda t: predictor.predict([Example(t)]), texts, args.requests),
        "labels": [p["label"] for p in predictions],
    }


def bench_pipeline(model_dir: Path, texts, labels, args) -> dict[str, Any]:
    import torch
    from transformers import pipeline

    torch.set_num_threads(args.threads)
    classify = pipeline("text-classification", model=str(model_dir), device="cpu")
    classify(texts[:BATCH], batch_size=BATCH, truncation=True)  # warm-up
    start = time.perf_counter()
    with torch.inference_mode():
        answers = classify(texts, batch_size=BATCH, truncation=True)
    seconds = time.perf_counter() - start
    predicted = [a["label"] for a in answers]
    return {
        "rows_per_s": round(len(texts) / seconds, 1),
        "accuracy": round(
            sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(texts), 6
        ),
        **latencies(lambda t: classify(t, truncation=True), texts, args.requests),
        "labels": predicted,
    }


# -- HTTP ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, backend: str, args: Any, workdir: Path):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "csft.serve",
        f"model_dir={model_dir}",
        f"backend={backend}",
        f"port={port}",
        f"threads={args.threads}",
        f"hydra.run.dir={workdir / f'serve-{backend}'}",
        "access_log=false",
    ]
    if args.max_wait_ms is not None:
        command.append(f"serve.max_wait_ms={args.max_wait_ms}")
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError("server did not answer /health within 120 s")


def post_one(port: int, text: str, connection: http.client.HTTPConnection | None = None) -> Any:
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"texts": [text]})
    connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
    return json.loads(payload)


def bench_http(model_dir: Path, backend: str, texts, args, workdir: Path) -> dict[str, Any]:
    server, port = start_server(model_dir, backend, args, workdir)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # keep-alive
        single = latencies(lambda t: post_one(port, t, connection), texts, args.requests)
        connections: dict[int, http.client.HTTPConnection] = {}

        def worker_post(i: int) -> None:
            import threading

            key = threading.get_ident()
            if key not in connections:
                connections[key] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            post_one(port, texts[i % len(texts)], connections[key])

        total = max(args.requests * 4, 400)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(worker_post, range(32)))  # warm-up
            start = time.perf_counter()
            list(pool.map(worker_post, range(total)))
            seconds = time.perf_counter() - start
        return {
            "c1_p50_ms": single["p50_ms"],
            "c1_p95_ms": single["p95_ms"],
            "c16_texts_per_s": round(total / seconds, 1),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def table(results: dict[str, Any]) -> str:
    pipe = results["batch"]["pipeline"]
    lines = [
        "| backend | batch rows/s | × pipeline | test accuracy | agrees with torch | "
        "in-process p50 / p95 ms | HTTP c=1 p50 / p95 ms | HTTP c=16 texts/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results["batch"].items():
        http_row = results["http"].get(name, {})
        lines.append(
            f"| {name} | {row['rows_per_s']} | {row['rows_per_s'] / pipe['rows_per_s']:.2f}× | "
            f"{100 * row['accuracy']:.2f} % | {100 * row['agreement']:.2f} % | "
            f"{row['p50_ms']} / {row['p95_ms']} | "
            + (
                f"{http_row['c1_p50_ms']} / {http_row['c1_p95_ms']} | "
                f"{http_row['c16_texts_per_s']} |"
                if http_row
                else "— | — |"
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=None, help="test rows (default: all)")
    parser.add_argument("--requests", type=int, default=200, help="single-text requests")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="serve.max_wait_ms")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from csft.export import resolve_model_dir
    from csft.onnx_export import export_onnx

    torch.set_num_threads(args.threads)
    texts, labels = test_rows(args.rows)
    backends = [b for b in args.backends.split(",") if b]
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "rows": len(texts),
        "batch_size": BATCH,
        "serve_max_wait_ms": args.max_wait_ms,
        "batch": {},
        "http": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = Path(shutil.copytree(resolve_model_dir(args.model_dir), workdir / "model"))
        start = time.perf_counter()
        export_onnx(model_dir, quantize="int8")
        results["onnx_export_seconds"] = round(time.perf_counter() - start, 1)
        for backend in backends:
            print(f"batch predict: {backend}", file=sys.stderr)
            results["batch"][backend] = bench_predictor(model_dir, backend, texts, labels, args)
        print("batch predict: pipeline", file=sys.stderr)
        results["batch"]["pipeline"] = bench_pipeline(model_dir, texts, labels, args)
        reference = results["batch"].get("torch", results["batch"]["pipeline"])["labels"]
        for row in results["batch"].values():
            row["agreement"] = round(
                sum(a == b for a, b in zip(row["labels"], reference, strict=True)) / len(texts), 6
            )
        for row in results["batch"].values():
            del row["labels"]
        if not args.no_http:
            for backend in backends:
                print(f"HTTP: {backend}", file=sys.stderr)
                results["http"][backend] = bench_http(model_dir, backend, texts, args, workdir)
    print(table(results))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
