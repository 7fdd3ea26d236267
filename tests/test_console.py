"""A run's console shows csft's lines, the progress bar and the results; library chatter
(transformers' load report, Lightning's notices, Python warnings) goes to the log file."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import INTENT_FIXTURE, ROOT

LIBRARY_NOISE = ["LOAD REPORT", "UNEXPECTED", "Loading weights", "litlogger", "deprecated"]


@pytest.mark.slow  # the real MiniLM (its load report is what must stay off the console)
def test_a_run_prints_csft_lines_and_results_and_logs_library_noise_to_the_file(tmp_path):
    """The packaged MiniLM has pooler weights that mean pooling drops: transformers reports
    them (a load report to route to the file)."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "csft.train",
        "model=minilm",
        "model.pooling=mean",
        "debug=fdr",
        *INTENT_FIXTURE,
        "trainer.enable_progress_bar=true",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]
    assert "[csft.train][INFO] - fixtures: train 18, val 6, test 6; 3 labels" in done.stdout
    assert "metric" in done.stdout and "test/acc" in done.stdout  # the results table
    assert "Epoch" in done.stdout  # Lightning's progress bar
    assert not [noise for noise in LIBRARY_NOISE if noise in console], console
    log = (run_dir / "train.log").read_text()
    assert "BertModel LOAD REPORT" in log and "pooler.dense.weight | UNEXPECTED" in log
    assert "GPU available" in log and "litlogger" in log
    assert "fixtures: train 18" in log


QUIET = """
import logging, sys, warnings
original_showwarning = warnings.showwarning
import pytorch_lightning  # adds its stderr handler: the root has none yet
import transformers.utils.logging as hf_logging
from lightning_fabric.strategies.launchers import subprocess_script as fabric_launcher
from pytorch_lightning.strategies.launchers import subprocess_script as pl_launcher
from transformers import AutoTokenizer, BertModel  # some libraries filter warnings on import
launchers = (pl_launcher._hydra_subprocess_cmd, fabric_launcher._hydra_subprocess_cmd)
filters = list(warnings.filters)
import csft.train, csft.evaluate  # the entry points: importing them patches nothing
from csft.console import quiet_libraries
assert (pl_launcher._hydra_subprocess_cmd, fabric_launcher._hydra_subprocess_cmd) == launchers
assert list(warnings.filters) == filters, "importing csft changed the warning filters"

lightning = logging.getLogger("pytorch_lightning")
fabric = logging.getLogger("lightning_fabric")
file = logging.FileHandler(sys.argv[1])
fabric.addHandler(file)  # as a logging configuration would
assert lightning.handlers and not lightning.propagate, "importing csft changed Lightning"
assert hf_logging.is_progress_bar_enabled(), "importing csft changed transformers"
assert warnings.showwarning is original_showwarning, "importing csft changed warnings"

quiet_libraries()
assert not hf_logging.is_progress_bar_enabled()
assert hf_logging._default_handler not in logging.getLogger("transformers").handlers
assert warnings.showwarning is not original_showwarning
assert not lightning.handlers and lightning.propagate
assert fabric.handlers == [file] and not fabric.propagate
print("ok")
"""


def test_importing_csft_changes_nothing_and_quiet_libraries_drops_only_library_handlers(
    tmp_path,
):
    done = subprocess.run(
        [sys.executable, "-c", QUIET, str(tmp_path / "fabric.log")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == "ok"
