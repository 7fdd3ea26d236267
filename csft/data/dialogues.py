"""Multi-turn dialogue logs in JSONL, one dialogue a line:

    {"id": "d1", "turns": [{"speaker": "customer", "text": "..."},
                           {"speaker": "agent", "text": "..."}, ...],
     "label": "refund", "response": "optional agent reply to judge"}

The last customer turn is the message to classify; the turns before it are its context
(agent turns after it are not used). Speaker markers ("customer:", "agent:") are prefixed
to each turn so the encoder can tell who said what.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from csft.data.example import CLASSIFICATION, Example
from csft.data.readers import _label, _read_jsonl, _text
from csft.errors import DataError

SPEAKERS = ("customer", "agent")
DEFAULT_MARKERS = {"customer": "customer:", "agent": "agent:"}


def read_dialogues(
    path: str | Path,
    task: str = CLASSIFICATION,
    speaker_markers: Mapping[str, str] | None = None,
    label_key: str = "label",
    response_key: str = "response",
    *,
    labelled: bool = True,
) -> list[Example]:
    """Examples from a dialogue JSONL file; every error names the file and line.

    Every line needs a label unless `labelled=False` (prediction input): a missing label
    would otherwise become a class of its own.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found.")
    examples = [
        dialogue_example(
            row,
            f"{path}, line {number}",
            task=task,
            speaker_markers=speaker_markers,
            label_key=label_key,
            response_key=response_key,
            labelled=labelled,
        )
        for number, row in enumerate(_read_jsonl(path), start=1)
    ]
    if not examples:
        raise DataError(f"{path}: holds no dialogues.")
    return examples


def dialogue_example(
    row: Mapping[str, Any],
    where: str,
    *,
    task: str = CLASSIFICATION,
    speaker_markers: Mapping[str, str] | None = None,
    label_key: str = "label",
    response_key: str = "response",
    labelled: bool = True,
) -> Example:
    """One dialogue line as an Example (training and `csft.predict` alike); errors name
    `where` (file and line)."""
    markers = dict(speaker_markers or {})
    turns = row.get("turns")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: 'turns' must be a non-empty list of turns.")
    marked: list[str] = []
    last_customer = None
    for i, turn in enumerate(turns):
        speaker = turn.get("speaker") if isinstance(turn, dict) else None
        if speaker not in SPEAKERS:
            raise DataError(
                f"{where}: turn {i + 1} has speaker {speaker!r}; expected one of {SPEAKERS}."
            )
        text = _text(turn.get("text"), f"{where}, turn {i + 1}", "text")
        marker = markers.get(speaker, "")
        marked.append(f"{marker} {text}" if marker else text)
        if speaker == "customer":
            last_customer = i
    if last_customer is None:
        raise DataError(f"{where}: the dialogue has no customer turn.")
    label = row.get(label_key)
    if label is None and labelled:
        raise DataError(f"{where}: no {label_key!r}; every training dialogue needs a label.")
    response = row.get(response_key)
    return Example(
        text=marked[last_customer],
        context=tuple(marked[:last_customer]),
        response=None if response is None else _text(response, where, response_key),
        label=None if label is None else _label(label, where, label_key, task),
        source=where,
    )
