"""What a run prints: csft's own lines, the progress bar and the results table.

Library chatter (load reports, tips, deprecation warnings) goes to the run's log file only.
"""

from __future__ import annotations

from typing import Any


def quiet_libraries() -> None:
    """Send transformers', Lightning's and Python warnings' messages to the log file only."""


def results_table(results: dict[str, Any]) -> str:
    """The metrics a run ends with, one per line, val/ and test/ first."""
    keys = [k for k in results if k.startswith(("test/", "val/"))]
    keys += ["fit_seconds", "train_samples_per_second", "epochs", "trainable_params"]
    width = max(len(k) for k in keys)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {results[k]}" for k in keys if k in results]
    return "\n".join(lines)
