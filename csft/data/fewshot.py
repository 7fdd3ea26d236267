"""Few-shot and fractional samples of the train split: learning curves from one labelled file.

`shots_per_class=K` keeps K train rows per class (all rows of a class with fewer). When
validation was carved from train, train and validation are pooled back first (the whole
labelled file) and validation becomes at most K further rows per class: a few-shot user has
no large labelled validation set either. With a validation file, validation is at most K
rows per class of it. A carved-out validation that leaves a class without a row is an error
(regression: groups are label values, and only an empty validation split is an error).
`train_fraction=F` keeps share F of each class of train (at least one row; regression: a
plain share), validation as loaded. The test split is never touched.

Pooling mixes what a data module had kept apart between train and validation (Bitext's
per-intent split, DSTC9's per-instance split); test stays apart. For Bitext the pooled rows
are (query, reply) pairs and the classes are match / mismatch.

The sample is a pure function of the rows, K (or F) and `sample_seed`: the rows of a class
are put in a fixed order (by their source, so neither the file's carve-out nor the training
seed matters), shuffled once with the seed, and the first K taken. So the K=10 sample is
part of the K=20 sample of the same seed, and train rows keep the order they have in the
file. (Rows a data module makes with data.seed, such as Bitext's negative replies, and the
train split that `train_fraction` samples after a carve-out, still follow data.seed.)
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from csft.data.example import Example
from csft.errors import ConfigError, DataError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def source_order(example: Example) -> tuple[Any, ...]:
    """A fixed order of rows: by source with its numbers compared as numbers ("row 9" before
    "row 10", so a file's rows come in file order), then by content to break ties."""
    parts = re.split(r"(\d+)", example.source)
    numbered = [int(p) if i % 2 else p for i, p in enumerate(parts)]
    return (numbered, example.text, example.context, example.response or "", str(example.label))


@dataclass(frozen=True)
class Subsample:
    """Which train (and validation) rows a run keeps; inactive when both sizes are None.

    `by_label` (classification) groups rows by class; for regression, `shots_per_class`
    groups rows by label value and `train_fraction` is a plain seeded share of train.
    """

    shots_per_class: int | None = None  # K rows per class (all rows of a class with fewer)
    train_fraction: float | None = None  # F in (0, 1]: that share of train, per class
    sample_seed: int = 0

    @property
    def active(self) -> bool:
        return self.shots_per_class is not None or self.train_fraction is not None

    def check(self) -> None:
        """The rules of csft.checks again, for callers that build a data module directly."""
        shots, fraction = self.shots_per_class, self.train_fraction
        if shots is not None and not (_is_int(shots) and shots >= 1):
            raise ConfigError(
                f"data.shots_per_class={shots!r}: expected null or an integer >= 1 "
                "(train rows per class)."
            )
        ok_fraction = isinstance(fraction, int | float) and not isinstance(fraction, bool)
        if fraction is not None and not (ok_fraction and 0 < fraction <= 1):
            raise ConfigError(
                f"data.train_fraction={fraction!r}: expected null or a number > 0 and <= 1 "
                "(the share of the train split kept)."
            )
        if shots is not None and fraction is not None:
            raise ConfigError(
                f"data.shots_per_class={shots} and data.train_fraction={fraction}: set one of "
                "them, not both (K rows per class, or a share of the train split)."
            )
        if not (_is_int(self.sample_seed) and self.sample_seed >= 0):
            raise ConfigError(f"data.sample_seed={self.sample_seed!r}: expected an integer >= 0.")

    def apply(
        self, splits: dict[str, list[Example]], val_carved: bool, by_label: bool
    ) -> dict[str, list[Example]]:
        """The sampled splits. `val_carved`: validation was cut from the train file (pool the
        two back first); `by_label`: classification (group by class)."""
        self.check()
        if self.shots_per_class is not None:
            return self._shots(splits, self.shots_per_class, val_carved, by_label)
        if self.train_fraction is not None:
            fraction = self.train_fraction
            keep = self._pick(splits["train"], by_label, lambda n: max(1, round(n * fraction)))
            return {**splits, "train": keep}
        return dict(splits)

    def record(self, splits: dict[str, list[Example]]) -> dict[str, Any]:
        """What was sampled, row by row (their sources), for <run dir>/data_sample.json."""
        return {
            "shots_per_class": self.shots_per_class,
            "train_fraction": self.train_fraction,
            "sample_seed": self.sample_seed,
            "train": [e.source for e in splits.get("train", [])],
            "val": [e.source for e in splits.get("val", [])],
        }

    # -- sampling ------------------------------------------------------------------------
    def _groups(self, rows: Sequence[Example], grouped: bool) -> dict[Any, list[int]]:
        """Row indices per label (one group when not `grouped`), each in source order and
        shuffled once by a generator of its own: a class's sample ignores the other classes."""
        groups: dict[Any, list[int]] = defaultdict(list)
        for i in sorted(range(len(rows)), key=lambda i: source_order(rows[i])):
            groups[rows[i].label if grouped else None].append(i)
        for key, members in groups.items():
            random.Random(f"{self.sample_seed}/{key}").shuffle(members)
        return groups

    def _pick(
        self, rows: Sequence[Example], grouped: bool, count: Callable[[int], int]
    ) -> list[Example]:
        """The first count(n) shuffled rows of each group of n, in the rows' own order."""
        kept: set[int] = set()
        for members in self._groups(rows, grouped).values():
            kept.update(members[: count(len(members))])
        return [row for i, row in enumerate(rows) if i in kept]

    def _shots(
        self, splits: dict[str, list[Example]], shots: int, val_carved: bool, by_label: bool
    ) -> dict[str, list[Example]]:
        """K rows per label (regression too: per label value); see the module docstring."""
        if not val_carved:
            return {
                **splits,
                "train": self._pick(splits["train"], True, lambda n: shots),
                "val": self._pick(splits["val"], True, lambda n: shots),
            }
        pool = sorted([*splits["train"], *splits["val"]], key=source_order)
        train: set[int] = set()
        val: set[int] = set()
        for members in self._groups(pool, True).values():
            train.update(members[:shots])
            val.update(members[shots : 2 * shots])
        self._check_validation(pool, val, shots, by_label)
        return {
            **splits,
            "train": [row for i, row in enumerate(pool) if i in train],
            "val": [row for i, row in enumerate(pool) if i in val],
        }

    @staticmethod
    def _check_validation(
        pool: Sequence[Example], val: set[int], shots: int, by_label: bool
    ) -> None:
        """Every class (regression: the split as a whole) keeps at least one validation row."""
        counts: dict[str, int] = defaultdict(int)
        for row in pool:
            counts[str(row.label)] += 1
        starved = sorted(name for name, n in counts.items() if n <= shots)
        if by_label and starved:
            sizes = ", ".join(f"{name!r} ({counts[name]} rows)" for name in starved)
            lower = min(counts[name] for name in starved) - 1
            fix = f"set data.shots_per_class <= {lower} or " if lower >= 1 else ""
            raise DataError(
                f"data.shots_per_class={shots}: validation is carved from the labelled rows, "
                f"and {len(starved)} class(es) have no row left for it (at most {shots} rows "
                f"in all): {sizes}. Fix: {fix}give a validation file (data.val_file)."
            )
        if not val:
            raise DataError(
                f"data.shots_per_class={shots}: validation is carved from the labelled rows, "
                f"and no label value has more than {shots} rows, so none is left for it. "
                "Fix: lower data.shots_per_class or give a validation file (data.val_file)."
            )
