"""Read CSV / TSV / JSONL / Parquet a chunk at a time, and write tables the same way.

`csft.predict` runs on files of any size, so nothing here holds a whole file: a reader
yields chunks of rows and a writer appends them. Cells are read with the options of
`csft.data.readers` and rows become Examples by the rules of `read_examples` /
`read_dialogues` (their `_text` / `_context` helpers), so a row means the same thing in
training and in prediction.

Row numbers are the ones training's errors use: CSV / TSV / Parquet count data rows from 1
(the header is not a row), JSONL counts the file's lines from 1 (blank lines count, so the
number is the line an editor shows).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from csft.data.example import Example
from csft.data.readers import SUFFIXES, _context, _text
from csft.errors import DataError

# What can be written: ".json" reads as JSONL, but a JSONL file named .json misleads.
OUTPUT_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}


def input_kind(path: Path) -> str:
    """csv / jsonl / parquet from the suffix, as `read_rows` decides it."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix!r}; use one of {sorted(SUFFIXES)}."
        )
    return kind


def output_kind(path: Path) -> str:
    kind = OUTPUT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown output type {path.suffix!r}; use one of {sorted(OUTPUT_SUFFIXES)}."
        )
    return kind


def _csv_options(path: Path) -> dict[str, Any]:
    """`read_rows`' options: everything as text, an empty cell stays "", TSV unquoted."""
    tsv = path.suffix.lower() == ".tsv"
    return {
        "sep": "\t" if tsv else ",",
        "quoting": csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
        "dtype": str,
        "keep_default_na": False,
    }


@dataclass
class Row:
    """One input row: its number, its cells, or why it could not be read (a broken line)."""

    number: int
    values: dict[str, Any] | None
    error: str | None = None


@dataclass
class Chunk:
    rows: list[Row]
    # Bytes (CSV / TSV / JSONL) or rows (Parquet) consumed so far: what the progress bar shows.
    position: int


class RowStream:
    """The rows of one file, `chunk_size` at a time.

    `columns` is the header / schema when the format has one (None for JSONL, whose lines
    may differ) so a missing column stops the run before any work; `total` and
    `total_unit` size a progress bar without reading the file first. Setting `only` to
    the columns a caller uses makes CSV / TSV / Parquet keep just those (a wide file stays cheap).
    """

    def __init__(self, path: str | Path, chunk_size: int) -> None:
        self.path = Path(path)
        self.kind = input_kind(self.path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: data file not found.")
        if chunk_size < 1:
            raise DataError(f"chunk_size={chunk_size}: expected at least 1.")
        self.chunk_size = chunk_size
        self.unit = "line" if self.kind == "jsonl" else "row"
        self.columns = self._columns()
        self.only: list[str] | None = None
        if self.kind == "parquet":
            self.total, self.total_unit = self._parquet().metadata.num_rows, "row"
        else:
            self.total, self.total_unit = self.path.stat().st_size, "B"

    def __iter__(self) -> Iterator[Chunk]:
        readers = {"csv": self._csv_chunks, "jsonl": self._jsonl_chunks}
        return readers.get(self.kind, self._parquet_chunks)()

    def _columns(self) -> list[str] | None:
        if self.kind == "jsonl":
            return None
        if self.kind == "parquet":
            return list(self._parquet().schema_arrow.names)
        import pandas as pd

        return list(self._read_csv(pd, self.path, nrows=0).columns)

    def _cannot_read(self, err: Exception) -> DataError:
        return DataError(f"{self.path}: cannot be read as {self.kind}: {err}")

    def _read_csv(self, pd: Any, source: Any, **kwargs: Any) -> Any:
        try:
            return pd.read_csv(source, **_csv_options(self.path), **kwargs)
        except (ValueError, OSError, pd.errors.ParserError) as err:
            raise self._cannot_read(err) from None

    def _csv_chunks(self) -> Iterator[Chunk]:
        import pandas as pd

        done = 0
        with self.path.open("rb") as handle:
            frames = self._read_csv(
                pd, handle, encoding="utf-8", chunksize=self.chunk_size, usecols=self.only
            )
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                except (ValueError, OSError, pd.errors.ParserError) as err:
                    raise self._cannot_read(err) from None
                records = frame.to_dict(orient="records")
                rows = [Row(done + i + 1, values) for i, values in enumerate(records)]
                done += len(rows)
                yield Chunk(rows, handle.tell())

    def _jsonl_chunks(self) -> Iterator[Chunk]:
        rows: list[Row] = []
        position = 0
        with self.path.open("rb") as handle:  # binary: tell() and byte counts stay usable
            for number, line in enumerate(handle, start=1):
                position += len(line)
                if not line.strip():
                    continue
                rows.append(_json_row(number, line))
                if len(rows) == self.chunk_size:
                    yield Chunk(rows, position)
                    rows = []
        if rows:
            yield Chunk(rows, position)

    def _parquet(self) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except (OSError, ValueError) as err:  # pyarrow's errors derive from these
            raise self._cannot_read(err) from None

    def _parquet_chunks(self) -> Iterator[Chunk]:
        done = 0
        batches = self._parquet().iter_batches(batch_size=self.chunk_size, columns=self.only)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, ValueError) as err:
                raise self._cannot_read(err) from None
            rows = [Row(done + i + 1, values) for i, values in enumerate(batch.to_pylist())]
            done += len(rows)
            yield Chunk(rows, done)


def _json_row(number: int, line: bytes) -> Row:
    """One JSONL line; a broken one is a Row with the reason `_read_jsonl` would give."""
    try:
        values = json.loads(line)
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        return Row(number, None, f"not valid JSON ({getattr(err, 'msg', err)}).")
    if not isinstance(values, dict):
        return Row(number, None, f"expected a JSON object, got {values!r:.60}.")
    return Row(number, values)


def require_columns(
    values: Mapping[str, Any], wanted: Mapping[str, str | None], where: str
) -> None:
    """Every wanted column (config key -> name) is there; the error names those found."""
    for key, column in wanted.items():
        if column is not None and column not in values:
            found = ", ".join(map(str, values)) or "none"
            raise DataError(
                f"{where}: column {column!r} ({key}) not found; the columns are: {found}."
            )


def table_example(
    values: Mapping[str, Any],
    where: str,
    *,
    text_column: str,
    context_column: str | None = None,
    response_column: str | None = None,
) -> Example:
    """One table row as `read_examples` reads it, without a label."""
    wanted = {"text_column": text_column, "context_column": context_column}
    require_columns(values, wanted | {"response_column": response_column}, where)
    return Example(
        text=_text(values[text_column], where, text_column),
        context=_context(values[context_column], where, context_column) if context_column else (),
        response=_text(values[response_column], where, response_column)
        if response_column
        else None,
        source=where,
    )


# -- writing --------------------------------------------------------------------------------


class TableWriter:
    """Appends records (dicts) to a CSV / TSV / JSONL / Parquet file, one chunk at a time.

    `kind` is `output_kind` of the final name (the file written may be a temporary one).

    `types` fixes a column's Parquet type (int, float, bool, str) so every chunk agrees;
    other columns take the type of their first chunk. CSV, TSV and Parquet hold lists and
    dicts as JSON text; JSONL holds them as they are.
    """

    def __init__(
        self, path: Path, kind: str, columns: list[str], types: Mapping[str, type] | None = None
    ) -> None:
        self.path, self.kind, self.columns = path, kind, columns
        self.types = dict(types or {})
        self._parquet: Any = None
        self._schema: Any = None
        self._handle: Any = None
        self._tsv = kind == "tsv"
        if kind in ("csv", "tsv"):
            self._handle = path.open("w", newline="", encoding="utf-8")
            # TSV unquoted, as csft reads it: a '"' in a cell (JSON) stays a plain character.
            options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "quotechar": None}
            self._csv = csv.writer(
                self._handle, lineterminator="\n", **(options if self._tsv else {})
            )
            self._csv.writerow(columns)
        elif kind == "jsonl":
            self._handle = path.open("w", encoding="utf-8")

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.kind in ("csv", "tsv"):
            self._csv.writerows([self._text_cell(r.get(c)) for c in self.columns] for r in records)
        elif self.kind == "jsonl":
            for record in records:
                line = json.dumps(
                    {c: record.get(c) for c in self.columns}, ensure_ascii=False, default=str
                )
                self._handle.write(line + "\n")
        else:
            self._write_parquet(records)

    def close(self) -> None:
        if self.kind == "parquet" and self._parquet is None:
            self._write_parquet([])  # an empty file still has its columns
        for handle in (self._handle, self._parquet):
            if handle is not None:
                handle.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _text_cell(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        text = (
            json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)
        )
        if self._tsv:  # an unquoted TSV cell cannot hold a tab or a line break
            text = " ".join(text.replace("\t", " ").splitlines())
        return text

    def _write_parquet(self, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = []
        for i, column in enumerate(self.columns):
            values = [_json_cell(r.get(column)) for r in records]
            if self._schema is not None:
                kind = self._schema.field(i).type
            elif column in self.types:
                kind = _ARROW_TYPES[self.types[column]](pa)
            else:
                kind = pa.array(values).type
                kind = pa.string() if pa.types.is_null(kind) else kind
            try:
                arrays.append(pa.array(values, type=kind))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                raise DataError(
                    f"{self.path}: column {column!r} changes type between rows ({err}); "
                    "write CSV or JSONL instead."
                ) from None
        table = pa.Table.from_arrays(arrays, names=self.columns)
        if self._parquet is None:
            self._schema = table.schema
            self._parquet = pq.ParquetWriter(self.path, self._schema)
        self._parquet.write_table(table)


_ARROW_TYPES = {
    int: lambda pa: pa.int64(),
    float: lambda pa: pa.float64(),
    bool: lambda pa: pa.bool_(),
    str: lambda pa: pa.string(),
}


def _json_cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value
