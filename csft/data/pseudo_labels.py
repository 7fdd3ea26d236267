"""Self-training's data: a trained run's export labels unlabelled texts, and the confident
ones join the labelled rows of the next run (`data.pseudo_labels=<file>`).

Few-shot users seldom lack texts, only labels: the support desk's message log is unlabelled.
A model trained on the few labelled rows labels those messages; the ones it is sure of
(calibrated confidence >= a threshold) are extra training rows for a student trained the
same way. `scripts/self_train.py` runs the rounds.

The unlabelled pool of a run is either a text file (`read_text_file`) or, for a run on a
sample of a labelled file (`data.shots_per_class`, `data.train_fraction`), the labelled
rows its sample left out, with their labels hidden (they only measure the pseudo-labels'
accuracy, as a benchmark would). The test split is never in the pool.

The file is JSONL, one row a line: text, label, confidence, source (where the text came
from), and context / response for dialogue and pair rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csft.data.example import CLASSIFICATION, Example
from csft.errors import ConfigError, DataError


def load_run_datamodule(run_dir: str | Path, **overrides: Any) -> Any:
    """The data module of a finished run, from its saved config (tokenizer not loaded):
    the exact rows it trained on. `overrides` replace data keys first."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from csft.resolvers import register_resolvers

    register_resolvers()
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise DataError(f"{path}: not found; {run_dir} is not a finished csft.train run.")
    cfg = OmegaConf.load(path)
    cfg.data.cache_dir = None  # ${hydra:...} resolves only inside a Hydra job
    cfg.data.pop("fetch", None)
    for key, value in overrides.items():
        cfg.data[key] = value
    return instantiate(cfg.data, tokenizer="unused")  # rows only: no tokenizer is loaded


def left_out_rows(run_dir: str | Path) -> list[Example]:
    """The labelled rows a run's sample did not use for train or validation (labels kept,
    for measuring; the caller hides them). Test rows are never among them."""
    datamodule = load_run_datamodule(run_dir, pseudo_labels=None)
    if datamodule.task != CLASSIFICATION:
        raise ConfigError(f"{run_dir}: self-training needs a classification run.")
    if not datamodule.subsample.active:
        raise ConfigError(
            f"{run_dir} trained on all its labelled rows (no data.shots_per_class or "
            "data.train_fraction), so none are left to pseudo-label: give a text file."
        )
    every = datamodule.load_splits()
    sampled = datamodule.sampled_splits()
    used = {e.source for e in sampled["train"] + sampled["val"]}
    candidates = every["train"] + (every["val"] if datamodule.val_carved else [])
    return [e for e in candidates if e.source not in used]


def pseudo_label(
    predictor: Any, pool: Sequence[Example], threshold: float, batch_size: int = 64
) -> list[dict[str, Any]]:
    """Every pool row the predictor labels with confidence >= threshold, as file rows."""
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold={threshold}: expected a confidence in [0, 1].")
    if predictor.task != CLASSIFICATION:
        raise ConfigError(f"{predictor.model_dir}: self-training needs a classification model.")
    hidden = [Example(e.text, None, e.context, e.response, e.source) for e in pool]
    kept = []
    for example, guess in zip(hidden, predictor.predict(hidden, batch_size), strict=True):
        if guess["confidence"] >= threshold:
            row = {"text": example.text, "label": guess["label"]}
            row |= {"confidence": guess["confidence"], "source": example.source}
            if example.context:
                row["context"] = list(example.context)
            if example.response is not None:
                row["response"] = example.response
            kept.append(row)
    return kept


def write_pseudo_labels(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write atomically (a temporary file renamed), so a stopped run leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
    return path


def read_pseudo_labels(path: str | Path, known_labels: set[str]) -> list[Example]:
    """The rows of a pseudo-label file as train Examples; a label outside `known_labels`
    (the labelled train rows' classes) or a row without text is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data.pseudo_labels file not found.")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON ({err.msg}).") from None
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: 'text' must be a non-empty string.")
        if str(label) not in known_labels:
            raise DataError(f"{where}: label {label!r} is not a class of the labelled train rows.")
        examples.append(
            Example(
                text,
                str(label),
                tuple(row.get("context") or ()),
                row.get("response"),
                source=f"{path.name} line {number} (pseudo-label)",
            )
        )
    if not examples:
        raise DataError(f"{path}: data.pseudo_labels holds no rows.")
    return examples
