"""Turn Examples into token ids once: (context + text) as segment one, response as segment two."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csft.data.example import Example
from csft.errors import ConfigError


@dataclass(frozen=True)
class Encoding:
    """How Examples become ids. The first segment is cut from the LEFT, so the latest turns live."""

    max_length: int = 64
    max_response_length: int = 32
    turn_separator: str = " [SEP] "
    max_context_turns: int | None = None

    def first_segment(self, example: Example) -> str:
        """Context turns (the latest `max_context_turns`) then the text, separated."""
        context = example.context
        if self.max_context_turns is not None:
            context = (
                context[len(context) - self.max_context_turns :] if self.max_context_turns else ()
            )
        return self.turn_separator.join((*context, example.text))


def encode(
    examples: Sequence[Example], tokenizer: Any, encoding: Encoding
) -> list[dict[str, list[int]]]:
    """Token ids (and token type ids) for every example, truncated to `encoding.max_length`."""
    pairs = any(e.response is not None for e in examples)
    specials = tokenizer.num_special_tokens_to_add(pair=pairs)
    room = encoding.max_length - specials - (encoding.max_response_length if pairs else 0)
    if room < 1:
        raise ConfigError(
            f"data.max_length={encoding.max_length} leaves no room for the message: "
            f"{specials} special tokens"
            + (f" + data.max_response_length={encoding.max_response_length}" if pairs else "")
        )
    firsts = [encoding.first_segment(e) for e in examples]
    seconds = _cap(tokenizer, [e.response or "" for e in examples], encoding) if pairs else None
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        batch = tokenizer(
            firsts,
            seconds,
            truncation="only_first" if pairs else True,
            max_length=encoding.max_length,
            return_token_type_ids=True,
            return_attention_mask=False,
        )
    finally:
        tokenizer.truncation_side = side
    return [
        {"input_ids": ids, "token_type_ids": types}
        for ids, types in zip(batch["input_ids"], batch["token_type_ids"], strict=True)
    ]


def _cap(tokenizer: Any, responses: list[str], encoding: Encoding) -> list[str]:
    """Cut each response after its first `max_response_length` tokens (on a token boundary)."""
    offsets = tokenizer(responses, add_special_tokens=False, return_offsets_mapping=True)
    capped = []
    for response, spans in zip(responses, offsets["offset_mapping"], strict=True):
        if len(spans) > encoding.max_response_length:
            response = response[: spans[encoding.max_response_length - 1][1]]
        capped.append(response)
    return capped


def encode_cached(
    examples: Sequence[Example],
    tokenizer: Any,
    encoding: Encoding,
    cache_dir: str | Path | None,
) -> list[dict[str, list[int]]]:
    """`encode`, stored under `cache_dir` keyed by the texts, the tokenizer and the settings."""
    if cache_dir is None:
        return encode(examples, tokenizer, encoding)
    key = hashlib.sha256()
    key.update(repr((type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer))).encode())
    key.update(repr(encoding).encode())
    for e in examples:
        key.update(repr((e.context, e.text, e.response)).encode())
    path = Path(cache_dir) / f"tokens-{key.hexdigest()[:20]}.pkl"
    if path.is_file():
        with path.open("rb") as handle:
            return pickle.load(handle)
    encoded = encode(examples, tokenizer, encoding)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    with partial.open("wb") as handle:
        pickle.dump(encoded, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)
    return encoded
