"""scripts/benchmark.py end to end on a tiny slice: every contender runs and is reported.

Timings are printed by the script, never asserted here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark

CONTENDERS = (
    "csft",
    "hf",
    "hf_grouped",
    "csft_top2",
    "csft_top2_cache",
    "hf_top2",
    "csft_predict",
    "pipeline",
)
RATIO_COLUMNS = (
    "samples/s vs hf",
    "samples/s vs hf_grouped",
    "samples/s vs hf_top2",
    "epochs ≥ 2 vs hf_top2",
    "rows/s vs pipeline",
    "p50 speed-up vs pipeline",
)


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """Each table row as {column: cell}, keyed by its contender (first cell)."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not set(cells[0]) <= set("-: "):
            rows[cells[0].strip("`")] = dict(zip(header, cells, strict=False))
    return rows


@pytest.mark.slow  # 9 subprocesses that each import torch: ~3 minutes on 2 cores
def test_benchmark_runs_every_contender_and_writes_the_table(tmp_path, data_dir):
    pytest.importorskip("accelerate", reason="the Hugging Face Trainer needs accelerate")
    out = tmp_path / "bench.md"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark.py"),
        "--train-rows",
        "96",
        "--test-rows",
        "64",
        "--epochs",
        "1",
        "--latency-requests",
        "5",
        # One thread per contender: on 2 busy cores, 2 threads can be 20x slower per call.
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert out.is_file()
    markdown = out.read_text()
    assert markdown.strip() in done.stdout
    rows = table_rows(markdown)
    assert set(CONTENDERS) <= rows.keys(), sorted(rows)
    for column in RATIO_COLUMNS:
        assert f"| {column} |" in markdown, column
    for name in CONTENDERS:
        accuracy = float(rows[name]["test acc"])
        assert 0.0 <= accuracy <= 1.0, (name, accuracy)
    # Baselines against themselves: ratio columns are filled, not left as dashes.
    assert rows["hf"]["samples/s vs hf"] == "1.00×"
    assert rows["pipeline"]["rows/s vs pipeline"] == "1.00×"
    assert rows["csft"]["samples/s vs hf"].endswith("×")
    assert rows["csft_predict"]["rows/s vs pipeline"].endswith("×")


def test_gpu_and_shape_options_reach_every_worker(tmp_path):
    args = benchmark.parse_args(["--shape", "bert-base", "--compile", "--epochs", "2"])
    command = benchmark.worker_command(args, "hf", tmp_path)
    assert command[command.index("--shape") + 1] == "bert-base"
    assert command[command.index("--device") + 1] == "cpu"
    assert "--compile" in command
    worker = benchmark.parse_args(command[2:])
    assert (worker.worker, worker.shape, worker.compile, worker.epochs) == (
        "hf",
        "bert-base",
        True,
        2,
    )


def test_the_bert_base_shape_is_a_random_bert_base():
    from types import SimpleNamespace

    labels = SimpleNamespace(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    args = benchmark.parse_args(["--shape", "bert-base"])
    model = benchmark.csft_classifier(args, labels, top2=False, cache=False)
    config = model.encoder.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (
        12,
        768,
        3072,
    )
    assert 105e6 < sum(p.numel() for p in model.encoder.parameters()) < 112e6  # bert-base: 110M
