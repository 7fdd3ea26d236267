"""Read CSV / JSONL / Parquet rows and map their columns onto `Example`."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from csft.data.example import CLASSIFICATION, REGRESSION, TASKS, Example
from csft.errors import ConfigError, DataError

SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def read_rows(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """Read every row of a table as a dict; returns the rows and the unit a row is counted in."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found.")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix!r}; use one of {sorted(SUFFIXES)}."
        )
    if kind == "jsonl":
        return list(_read_jsonl(path)), "line"
    try:
        if kind == "csv":
            tsv = path.suffix.lower() == ".tsv"
            # Everything as text: "123" stays a string and an empty cell stays "", not NaN.
            # TSV has no quoting: a message opening with '"' must not swallow the next lines.
            frame = pd.read_csv(
                path,
                sep="\t" if tsv else ",",
                quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
                dtype=str,
                keep_default_na=False,
            )
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be read as {kind}: {err}") from None
    return frame.to_dict(orient="records"), "row"


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {number}: not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {row!r:.60}.")
            yield row


def read_examples(
    path: str | Path,
    *,
    text_column: str,
    label_column: str | None,
    task: str = CLASSIFICATION,
    context_column: str | None = None,
    response_column: str | None = None,
) -> list[Example]:
    """Read a table into Examples, checking every row; errors name the file and row."""
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: expected one of {TASKS}.")
    rows, unit = read_rows(path)
    if not rows:
        raise DataError(f"{path}: holds no rows.")
    wanted = {"text_column": text_column, "label_column": label_column}
    wanted |= {"context_column": context_column, "response_column": response_column}
    for key, column in wanted.items():
        if column is not None and column not in rows[0]:
            found = ", ".join(map(str, rows[0].keys()))
            raise DataError(
                f"{path}: column {column!r} (data.{key}) not found; the columns are: {found}."
            )
    examples = []
    for index, row in enumerate(rows):
        where = f"{path}, {unit} {index + 1}"
        examples.append(
            Example(
                text=_text(row.get(text_column), where, text_column),
                label=_label(row.get(label_column), where, label_column, task)
                if label_column
                else None,
                context=_context(row.get(context_column), where, context_column)
                if context_column
                else (),
                response=_text(row.get(response_column), where, response_column)
                if response_column
                else None,
                source=where,
            )
        )
    return examples


def _text(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} must be text, got {value!r:.60}.")
    if not value.strip():
        raise DataError(f"{where}: column {column!r} is empty.")
    return value


def _label(value: Any, where: str, column: str, task: str) -> str | float:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if missing or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: column {column!r} has no label.")
    if task == CLASSIFICATION:
        return str(value).strip()
    assert task == REGRESSION
    try:
        target = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: column {column!r} holds {value!r:.60}, but data.task=regression needs "
            f"a number. Use data.task=classification for class names."
        ) from None
    if not math.isfinite(target):
        raise DataError(f"{where}: column {column!r} holds a non-finite target {value!r}.")
    return target


def _context(value: Any, where: str, column: str) -> tuple[str, ...]:
    """Earlier turns, oldest first: a list of strings, or one string (one turn, may be empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if isinstance(value, str):
        return (value,)
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, list | tuple) and all(isinstance(turn, str) for turn in value):
        return tuple(turn for turn in value if turn.strip())
    raise DataError(f"{where}: column {column!r} must be a string or a list of strings.")
