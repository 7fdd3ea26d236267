"""Importing csft changes nothing in other libraries: patches happen when a run needs them."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

CHECK = """
import logging, warnings
from lightning_fabric.strategies.launchers import subprocess_script as fabric_launcher
from pytorch_lightning.strategies.launchers import subprocess_script as pl_launcher
# The libraries first: some set their own warning filters on import (accelerate does).
from transformers import AutoTokenizer, BertModel  # noqa: F401

before = (pl_launcher._hydra_subprocess_cmd, fabric_launcher._hydra_subprocess_cmd,
          list(warnings.filters), logging.getLogger().handlers[:])
import csft.train, csft.evaluate  # noqa: E401,F401
after = (pl_launcher._hydra_subprocess_cmd, fabric_launcher._hydra_subprocess_cmd,
         list(warnings.filters), logging.getLogger().handlers[:])
assert after[0] is before[0] and after[1] is before[1], "Lightning's DDP launcher was patched"
assert after[2] == before[2], "warning filters changed"
assert after[3] == before[3], "logging handlers changed"
print("untouched")
"""


def test_importing_the_entry_points_patches_nothing():
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "untouched"
