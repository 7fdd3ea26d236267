"""Reply appropriateness from the Bitext customer-support set: does this reply fit this query?

Every real (instruction, response) pair is a positive. Negatives pair a query with the
response of another intent: "hard" ones from the same category (get_refund vs track_refund),
"easy" ones from another category. Rows are split into train/val/test by intent BEFORE
pairing, so no query or response text is seen in two splits.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csft.data.datamodule import FileDataModule, stratified_split
from csft.data.example import CLASSIFICATION, Example
from csft.data.readers import _text, read_rows
from csft.errors import ConfigError, DataError

COLUMNS = ("instruction", "response", "intent", "category")
MISMATCH, MATCH = "mismatch", "match"


@dataclass(frozen=True)
class SupportRow:
    query: str
    response: str
    intent: str
    category: str
    source: str


def read_support_rows(path: str | Path) -> list[SupportRow]:
    rows, unit = read_rows(path)
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        found = ", ".join(rows[0]) if rows else "none"
        raise DataError(f"{path}: needs columns {', '.join(missing or COLUMNS)}; found {found}.")
    out = []
    for i, row in enumerate(rows):
        where = f"{path}, {unit} {i + 1}"
        fields = {c: _text(row[c], where, c).strip() for c in COLUMNS}
        out.append(
            SupportRow(
                fields["instruction"],
                fields["response"],
                fields["intent"],
                fields["category"],
                where,
            )
        )
    return out


def first_per_intent(rows: Sequence[SupportRow], limit: int) -> list[SupportRow]:
    """The first `limit` rows of each intent: a small-data experiment on the same file."""
    seen: dict[str, int] = defaultdict(int)
    kept = []
    for row in rows:
        seen[row.intent] += 1
        if seen[row.intent] <= limit:
            kept.append(row)
    return kept


def split_rows(
    rows: Sequence[SupportRow], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[SupportRow]]:
    """Stratified by intent, seeded: test first, then validation from the rest."""
    as_examples = [Example(text=r.query, label=r.intent, source=str(i)) for i, r in enumerate(rows)]
    rest, test = stratified_split(as_examples, test_fraction, seed)
    train, val = stratified_split(rest, val_fraction / (1 - test_fraction), seed + 1)
    return {
        name: [rows[int(e.source)] for e in part]
        for name, part in (("train", train), ("val", val), ("test", test))
    }


def build_pairs(
    rows: Sequence[SupportRow],
    negatives_per_positive: int,
    hard_negative_share: float,
    rng: random.Random,
) -> list[Example]:
    """Each row's own pair (match) plus `negatives_per_positive` mismatched replies.

    Each negative is hard (same category, other intent) with probability
    `hard_negative_share` when the category has another intent, else easy (other category).
    Negatives come only from `rows`, i.e. from the same split.
    """
    if negatives_per_positive < 1:
        raise ConfigError(f"data.negatives_per_positive={negatives_per_positive}: must be ≥ 1.")
    if not 0.0 <= hard_negative_share <= 1.0:
        raise ConfigError(f"data.hard_negative_share={hard_negative_share}: must be in [0, 1].")
    by_category: dict[str, list[SupportRow]] = defaultdict(list)
    for row in rows:
        by_category[row.category].append(row)
    examples = []
    for row in rows:
        examples.append(Example(row.query, MATCH, response=row.response, source=row.source))
        hard = [r for r in by_category[row.category] if r.intent != row.intent]
        easy_categories = [c for c in by_category if c != row.category]
        for _ in range(negatives_per_positive):
            if hard and rng.random() < hard_negative_share:
                other = rng.choice(hard)
            else:
                other = rng.choice(by_category[rng.choice(easy_categories)])
            examples.append(
                Example(
                    row.query,
                    MISMATCH,
                    response=other.response,
                    source=f"{row.source} x {other.source}",
                )
            )
    return examples


class BitextPairsDataModule(FileDataModule):
    """(query, reply) → match / mismatch, on the Bitext customer-support file.

    `max_queries_per_intent` keeps only the first N rows of each intent (small-data runs).
    """

    label_names = (MISMATCH, MATCH)  # index 1 is the positive class (for AUROC)

    def __init__(
        self,
        file: str,
        negatives_per_positive: int = 1,
        hard_negative_share: float = 0.5,
        test_fraction: float = 0.2,
        max_queries_per_intent: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_file=file, **kwargs)
        if self.task != CLASSIFICATION:
            raise ConfigError(
                f"data.task={self.task}: Bitext pairs are match / mismatch, a classification task."
            )
        self.negatives_per_positive = negatives_per_positive
        self.hard_negative_share = hard_negative_share
        self.test_fraction = test_fraction
        self.max_queries_per_intent = max_queries_per_intent

    def load_splits(self) -> dict[str, list[Example]]:
        rows = read_support_rows(self.files["train"])
        if self.max_queries_per_intent:
            rows = first_per_intent(rows, self.max_queries_per_intent)
        splits = split_rows(rows, self.val_fraction, self.test_fraction, self.seed)
        rng = random.Random(self.seed)
        return {
            name: build_pairs(part, self.negatives_per_positive, self.hard_negative_share, rng)
            for name, part in splits.items()
        }
