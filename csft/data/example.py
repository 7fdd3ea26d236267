"""The one record every reader produces, and the label vocabulary built from train."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from csft.errors import DataError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)


@dataclass(frozen=True)
class Example:
    """One training item.

    `text` is the customer's latest message, `context` the earlier turns (oldest first),
    `response` an agent reply for pair tasks, `label` a class name or a float target.
    `source` says where the row came from ("file:row") so errors can point at it.
    """

    text: str
    label: str | float | None = None
    context: tuple[str, ...] = ()
    response: str | None = None
    source: str = field(default="", compare=False)


@dataclass(frozen=True)
class LabelVocab:
    """Class names in a fixed order; index i is model output i."""

    names: tuple[str, ...]

    @classmethod
    def from_examples(cls, examples: Sequence[Example], where: str = "train") -> LabelVocab:
        names = tuple(sorted({str(e.label) for e in examples}))
        if len(names) < 2:
            raise DataError(
                f"{where}: a classification task needs at least 2 classes, found {len(names)} "
                f"({', '.join(names) or 'none'}). Check the label column."
            )
        return cls(names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def encode(self, example: Example) -> int:
        try:
            return self.label2id[str(example.label)]
        except KeyError:
            raise DataError(
                f"{example.source}: label {example.label!r} never occurs in the train split, "
                f"so the model has no output for it (known labels: {len(self.names)})."
            ) from None

    def counts(self, examples: Sequence[Example]) -> list[int]:
        counter = Counter(str(e.label) for e in examples)
        return [counter.get(name, 0) for name in self.names]
