"""What a run prints: csft's own lines, the progress bar and the results table.

Library chatter (load reports, tips, deprecation warnings) goes to the run's log file only.
The routing lives in Hydra's job logging (conf/hydra/default.yaml): the `csft` loggers and
other libraries' warnings reach the console, while transformers, Lightning and Python
warnings go to `<run dir>/<job name>.log` (their errors to stderr as well).
`quiet_libraries()` takes away the libraries' own ways around that configuration.
"""

from __future__ import annotations

import logging
from typing import Any

# The loggers of libraries that install their own console handler.
LIBRARY_LOGGERS = ("transformers", "pytorch_lightning", "lightning", "lightning_fabric")


def quiet_libraries() -> None:
    """Send transformers', Lightning's and Python warnings' messages to the log file only.

    Call it once logging is configured (first thing in a Hydra job). Importing this module
    changes nothing; calling this function changes, for the whole process:

    - transformers: its own stderr handler and its tqdm bars ("Loading weights", "Writing
      model shards") go;
    - Lightning: the bare stderr handler each of its packages adds on import when the root
      logger has none yet ("GPU available", the litlogger tip) goes;
    - `warnings.warn` becomes a record of the `py.warnings` logger.

    A library logger the logging configuration gave handlers (Hydra's: the file) keeps them
    and their `propagate`; one left without handlers propagates to the root's.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.disable_progress_bar()
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if _added_on_import(h)]:
            logger.removeHandler(handler)
        if not logger.handlers:
            logger.propagate = True


def _added_on_import(handler: logging.Handler) -> bool:
    """Lightning's own handler: `logging.StreamHandler()` (stderr), no formatter, no level.
    Handlers from a logging configuration have a formatter or are another class."""
    return (
        type(handler) is logging.StreamHandler
        and handler.formatter is None
        and handler.level == logging.NOTSET
    )


def results_table(results: dict[str, Any]) -> str:
    """The metrics a run ends with, one per line, val/ and test/ first."""
    keys = [k for k in results if k.startswith(("test/", "val/"))]
    keys += ["fit_seconds", "train_samples_per_second", "epochs", "trainable_params"]
    width = max(len(k) for k in keys)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {results[k]}" for k in keys if k in results]
    return "\n".join(lines)
