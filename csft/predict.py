"""`python -m csft.predict model_dir=... input=... output=...`: predictions for a file of any size.

The input is streamed a chunk at a time (`csft.data.streaming`), each chunk predicted with
the export's `Predictor` and appended to the output, so memory stays bounded whatever the
file size. The output is written beside its path under a temporary name and moved into
place only at the end: a run that stops (a bad row, an error, Ctrl+C) leaves nothing
partial there and an earlier file untouched.

One output row per input row, in input order: `row` (the numbering training's errors use:
data rows from 1 for CSV / TSV / Parquet, file lines for JSONL), the `id_column` value when
set, then `label`, `confidence`, `handoff`, `top_k` (classification) or `score` (regression).
"""

from __future__ import annotations

import csv
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from csft.console import quiet_libraries
from csft.data.dialogues import dialogue_example
from csft.data.example import REGRESSION, Example
from csft.data.streaming import (
    RowStream,
    TableWriter,
    output_kind,
    require_columns,
    table_example,
)
from csft.errors import ConfigError, CsftError, DataError

# No register_resolvers(): predict.yaml uses none of csft's, and importing them imports torch,
# which an error in the arguments should not wait for.

FORMATS = ("table", "dialogues")
ON_BAD_ROW = ("stop", "skip")
# Bad rows named in the error that stops a run (the count covers them all).
SHOWN_BAD_ROWS = 10
CLASSIFICATION_COLUMNS = ["label", "confidence", "handoff", "top_k"]
REGRESSION_COLUMNS = ["score"]
# Fixed Parquet types, so every chunk (and an empty output) has the same schema.
OUTPUT_TYPES = {"row": int, "label": str, "confidence": float, "handoff": bool, "top_k": str}
OUTPUT_TYPES |= {"score": float}

Parse = Callable[[Mapping[str, Any], str], tuple[Example, Any]]


@dataclass
class BadRows:
    """Rows that could not be predicted: the first few for the error message, all of them
    in the sidecar CSV when one is given (on_bad_row=skip), never all in memory."""

    sidecar: Path | None = None
    count: int = 0
    first: list[tuple[int, str]] = field(default_factory=list)
    _handle: Any = None
    _writer: Any = None

    def add(self, number: int, reason: str) -> None:
        self.count += 1
        if len(self.first) < SHOWN_BAD_ROWS:
            self.first.append((number, reason))
        if self.sidecar is not None:
            if self._handle is None:
                self._handle = self.sidecar.open("w", newline="", encoding="utf-8")
                self._writer = csv.writer(self._handle, lineterminator="\n")
                self._writer.writerow(["row", "error"])
            self._writer.writerow([number, reason])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


@dataclass
class Summary:
    """What a run did, for the closing lines and Hydra's return value."""

    output: Path
    rows: int = 0
    handoffs: int | None = None  # None: a regression model hands nothing off
    bad_rows: int = 0
    errors_file: Path | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        line = f"predicted {self.rows:,} rows in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        if self.handoffs is not None:
            share = 100 * self.handoffs / self.rows if self.rows else 0.0
            line += f"; {self.handoffs:,} handed off ({share:.1f} %)"
        lines = [line]
        if self.bad_rows:
            plural = "s" if self.bad_rows > 1 else ""
            lines.append(f"skipped {self.bad_rows:,} bad row{plural}, listed in {self.errors_file}")
        return [*lines, f"wrote {self.output}"]


def errors_path(output: Path) -> Path:
    """`<output>.errors.csv`: the bad rows of an on_bad_row=skip run."""
    return output.with_name(output.name + ".errors.csv")


def _staging(path: Path) -> Path:
    """A hidden, unique name beside `path`: same filesystem, so the final rename is atomic."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")


def _reason(err: Exception, where: str) -> str:
    """The error without its leading "file, row N" (the sidecar has a row column)."""
    message = " ".join(str(err).split())
    return message[len(where) :].lstrip(":, ") if message.startswith(where) else message


def output_columns(task: str, id_column: str | None) -> list[str]:
    columns = REGRESSION_COLUMNS if task == REGRESSION else CLASSIFICATION_COLUMNS
    ids = [id_column] if id_column else []
    if id_column in ("row", *columns):
        raise ConfigError(f"id_column={id_column!r}: the output has a column of that name.")
    return ["row", *ids, *columns]


def predict_file(
    predictor: Any,
    stream: RowStream,
    output: str | Path,
    parse: Parse,
    *,
    id_column: str | None = None,
    batch_size: int = 256,
    on_bad_row: str = "stop",
    progress: bool | None = None,
) -> Summary:
    """Predict every row of `stream` into `output`, a chunk at a time.

    `parse(values, where)` gives a row's Example and id, or raises DataError. With
    on_bad_row=stop the first bad row ends prediction, but reading goes on (cheap) so the
    error can count them all; nothing is written. `progress=None` shows the bar on a
    terminal only.
    """
    from tqdm import tqdm

    output = Path(output)
    columns = output_columns(predictor.task, id_column)
    sidecar = errors_path(output)
    staged = _staging(output)
    bad = BadRows(_staging(sidecar) if on_bad_row == "skip" else None)
    summary = Summary(output, handoffs=None if predictor.task == REGRESSION else 0)
    bar = tqdm(
        total=stream.total,
        unit=stream.total_unit,
        unit_scale=True,
        desc="predict",
        file=sys.stderr,
        disable=None if progress is None else not progress,
    )
    start = time.perf_counter()
    try:
        with TableWriter(staged, output_kind(output), columns, OUTPUT_TYPES) as writer:
            for chunk in stream:
                examples, records = _parse_chunk(chunk, stream, parse, bad, id_column)
                if not (on_bad_row == "stop" and bad.count):
                    _predict_chunk(predictor, examples, records, batch_size, summary)
                    writer.write(records)
                bar.set_postfix_str(f"{summary.rows:,} rows", refresh=False)
                bar.update(chunk.position - bar.n)
        bad.close()
        if bad.count and on_bad_row == "stop":
            raise DataError(_bad_rows_message(stream, bad, sidecar))
        os.replace(staged, output)
        if bad.count:
            os.replace(bad.sidecar, sidecar)
            summary.bad_rows, summary.errors_file = bad.count, sidecar
        else:  # an older run's list would describe rows this output no longer lacks
            sidecar.unlink(missing_ok=True)
    except BaseException:
        bad.close()
        for path in (staged, bad.sidecar):
            if path is not None:
                path.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _parse_chunk(
    chunk: Any, stream: RowStream, parse: Parse, bad: BadRows, id_column: str | None
) -> tuple[list[Example], list[dict[str, Any]]]:
    """The chunk's good rows as Examples and their output records (row, id) so far."""
    examples, records = [], []
    for row in chunk.rows:
        where = f"{stream.path}, {stream.unit} {row.number}"
        if row.values is None:
            bad.add(row.number, row.error or "cannot be read.")
            continue
        try:
            example, ident = parse(row.values, where)
        except DataError as err:
            bad.add(row.number, _reason(err, where))
            continue
        examples.append(example)
        records.append({"row": row.number, **({id_column: ident} if id_column else {})})
    return examples, records


def _predict_chunk(
    predictor: Any,
    examples: list[Example],
    records: list[dict[str, Any]],
    batch_size: int,
    summary: Summary,
) -> None:
    """Fill each record with its prediction; count rows and hand-offs."""
    if not examples:  # every row of the chunk was bad
        return
    for record, result in zip(records, predictor.predict(examples, batch_size), strict=True):
        record.update(result)
        if summary.handoffs is not None and result["handoff"]:
            summary.handoffs += 1
    summary.rows += len(records)


def _bad_rows_message(stream: RowStream, bad: BadRows, sidecar: Path) -> str:
    unit = stream.unit
    numbers = ", ".join(str(number) for number, _ in bad.first)
    more = f" and {bad.count - len(bad.first):,} more" if bad.count > len(bad.first) else ""
    number, reason = bad.first[0]
    plural = "s" if bad.count > 1 else ""
    return (
        f"{stream.path}: {bad.count:,} bad {unit}{plural} ({unit}{plural} {numbers}{more}); "
        f"{unit} {number}: {reason} Nothing was written. Fix {'them' if plural else 'it'}, or "
        f"pass on_bad_row=skip to predict the other rows and list the bad ones in {sidecar}."
    )


def row_parser(cfg: DictConfig, predictor: Any, stream: RowStream) -> Parse:
    """Row -> (Example, id) by the config's format and columns, checked against the model."""
    id_column = cfg.id_column
    if cfg.format == "dialogues":
        if stream.kind != "jsonl":
            raise ConfigError(f"format=dialogues reads JSONL dialogues; {stream.path} is not.")
        # The markers the model was trained with (csft.json), else read_dialogues' default.
        markers = predictor.metadata.get("speaker_markers")
        to_example = partial(
            dialogue_example,
            speaker_markers=markers,
            response_key=cfg.response_column or "response",
            labelled=False,
        )
        wanted = {"id_column": id_column}
    else:
        _check_pair_columns(cfg, predictor)
        columns = {k: cfg[k] for k in ("text_column", "context_column", "response_column")}
        to_example = partial(table_example, **columns)
        wanted = {**columns, "id_column": id_column}
    if stream.columns is not None:  # a header / schema: a missing column stops before any work
        require_columns(dict.fromkeys(stream.columns), wanted, str(stream.path))
        stream.only = list(dict.fromkeys(column for column in wanted.values() if column))

    def parse(values: Mapping[str, Any], where: str) -> tuple[Example, Any]:
        if id_column:
            require_columns(values, {"id_column": id_column}, where)
        example = to_example(values, where)
        predictor.check(example)
        return example, values[id_column] if id_column else None

    return parse


def _check_pair_columns(cfg: DictConfig, predictor: Any) -> None:
    if predictor.pair_task and not cfg.response_column:
        raise ConfigError(
            f"{predictor.model_dir} scores (message, reply) pairs: name the reply column "
            "with response_column=<column>."
        )
    if not predictor.pair_task and cfg.response_column:
        raise ConfigError(
            f"response_column={cfg.response_column}: {predictor.model_dir} is not a pair "
            "model; it takes no reply."
        )


def check_options(cfg: DictConfig) -> None:
    """Everything that can be refused before a model is loaded or a row read."""
    output_kind(Path(cfg.output))
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r}: expected one of {', '.join(FORMATS)}.")
    if cfg.on_bad_row not in ON_BAD_ROW:
        raise ConfigError(
            f"on_bad_row={cfg.on_bad_row!r}: expected one of {', '.join(ON_BAD_ROW)}."
        )
    for key in ("batch_size", "chunk_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r}: expected a whole number, at least 1.")
    if Path(cfg.input).resolve() == Path(cfg.output).resolve():
        raise ConfigError(f"output={cfg.output}: the same file as the input.")


def run(cfg: DictConfig) -> Summary:
    """The whole command, without Hydra's entry point: tests call it in-process."""
    check_options(cfg)
    stream = RowStream(cfg.input, cfg.chunk_size)
    from csft.inference import Predictor  # torch: only once the cheap checks have passed

    predictor = Predictor.load(
        cfg.model_dir,
        backend=cfg.backend,
        threads=cfg.threads,
        top_k=cfg.top_k,
        threshold=cfg.threshold,
    )
    parse = row_parser(cfg, predictor, stream)
    output = Path(cfg.output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"output={output}: its directory cannot be created: {err}") from None
    return predict_file(
        predictor,
        stream,
        output,
        parse,
        id_column=cfg.id_column,
        batch_size=cfg.batch_size,
        on_bad_row=cfg.on_bad_row,
    )


@hydra.main(version_base="1.3", config_path="pkg://csft.conf", config_name="predict")
def main(cfg: DictConfig) -> dict[str, Any]:
    quiet_libraries()
    try:
        summary = run(cfg)
    except (CsftError, OSError) as err:  # OSError: the output cannot be written (disk full)
        print(f"csft: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"csft: interrupted; {cfg.output} was left as it was.", file=sys.stderr)
        sys.exit(130)
    for line in summary.lines():
        print(line)
    return {"rows": summary.rows, "handoffs": summary.handoffs, "bad_rows": summary.bad_rows}


if __name__ == "__main__":
    main()
