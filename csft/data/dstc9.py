"""Reply-quality scores from the DSTC9 track-1 human evaluation.

One row per rated (test instance, system reply): the query is the FAQ question (title) of the
instance's reference knowledge snippet, optionally with the entity name and the snippet's
answer as context; the response is the system's reply; the target is the mean crowd rating
(appropriateness, accuracy, or both), scaled from 1-5 to [0, 1]. Each instance is rated for
up to 11 systems, so splits are made by instance, never by row.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from csft.data.datamodule import FileDataModule
from csft.data.example import CLASSIFICATION, REGRESSION, Example
from csft.errors import ConfigError, DataError

TARGETS = ("appropriateness", "accuracy", "both")
POOR, GOOD = "poor", "good"


def _load(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: data file not found (DSTC9 track-1 human evaluation).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}).") from None


def scaled_mean(ratings: dict[str, list[int]], target: str) -> float:
    """Mean rating on 1-5, scaled to [0, 1]."""
    keys = ("appropriateness", "accuracy") if target == "both" else (target,)
    values = [v for key in keys for v in ratings[key]]
    return (sum(values) / len(values) - 1.0) / 4.0


def read_rated_replies(
    directory: str | Path,
    target: str = "appropriateness",
    with_entity: bool = False,
    with_answer: bool = False,
) -> list[tuple[int, Example]]:
    """(instance index, Example with a float label) for every rated system reply."""
    if target not in TARGETS:
        raise ConfigError(f"data.target={target!r}: expected one of {TARGETS}.")
    directory = Path(directory)
    knowledge = _load(directory / "data_eval" / "knowledge.json")
    labels = _load(directory / "data_eval" / "test" / "labels.json")
    rated = sorted((directory / "results").glob("*/*.human_eval.json"))
    if not rated:
        raise DataError(f"{directory / 'results'}: no */*.human_eval.json rating files found.")
    rows = []
    for ratings_path in rated:
        entry_path = ratings_path.with_name(ratings_path.name.replace(".human_eval", ""))
        entry, ratings = _load(entry_path), _load(ratings_path)
        if len(ratings) != len(labels) or len(entry) != len(labels):
            raise DataError(f"{ratings_path}: {len(ratings)} items, labels.json has {len(labels)}.")
        for i, rating in enumerate(ratings):
            if rating is None:
                continue
            snippet = labels[i]["knowledge"][0]
            entity = knowledge[snippet["domain"]][str(snippet["entity_id"])]
            doc = entity["docs"][str(snippet["doc_id"])]
            context = []
            if with_entity and entity.get("name"):
                context.append(entity["name"])
            if with_answer:
                context.append(doc["body"])
            example = Example(
                text=doc["title"],
                context=tuple(context),
                response=entry[i]["response"],
                label=scaled_mean(rating, target),
                source=f"{ratings_path}, item {i}",
            )
            rows.append((i, example))
    return rows


def split_instances(
    instances: set[int], val_fraction: float, test_fraction: float, seed: int
) -> dict[int, str]:
    """Assign each instance index to train / val / test (seeded)."""
    order = sorted(instances)
    random.Random(seed).shuffle(order)
    n_test, n_val = round(len(order) * test_fraction), round(len(order) * val_fraction)
    return {
        i: "test" if k < n_test else "val" if k < n_test + n_val else "train"
        for k, i in enumerate(order)
    }


class Dstc9RatingsDataModule(FileDataModule):
    """(FAQ question, system reply) → quality score (task=regression), or good / poor at
    `threshold` (task=classification)."""

    def __init__(
        self,
        directory: str,
        target: str = "appropriateness",
        with_entity: bool = False,
        with_answer: bool = False,
        threshold: float = 0.75,
        test_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("task", REGRESSION)
        super().__init__(**kwargs)
        if self.task == CLASSIFICATION:
            self.label_names = (POOR, GOOD)  # index 1 (good) is the positive class
        self.directory = directory
        self.target = target
        self.with_entity = with_entity
        self.with_answer = with_answer
        self.threshold = threshold
        self.test_fraction = test_fraction
        self.files["train"] = directory

    def load_splits(self) -> dict[str, list[Example]]:
        rows = read_rated_replies(self.directory, self.target, self.with_entity, self.with_answer)
        assignment = split_instances(
            {i for i, _ in rows}, self.val_fraction, self.test_fraction, self.seed
        )
        splits: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
        for i, example in rows:
            if self.task == CLASSIFICATION:
                label = GOOD if example.label >= self.threshold else POOR
                example = Example(
                    example.text, label, example.context, example.response, example.source
                )
            splits[assignment[i]].append(example)
        return splits
