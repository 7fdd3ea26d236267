"""Unlabelled in-domain text for masked-LM pretraining, and its batches.

The corpus is either a data config's train split (texts, context turns and responses, labels
dropped) or a file of raw messages. Only the train split is read: the texts a fine-tuning
run validates and tests on stay unseen, so its numbers stay clean.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from csft.data.example import Example
from csft.data.readers import SUFFIXES, read_rows
from csft.data.samplers import rank_batch_sampler
from csft.errors import ConfigError, DataError
from csft.pretrained import load_tokenizer

TEXT_SUFFIXES = (".txt", *SUFFIXES)
IGNORE = -100  # the label of a token that is not predicted (unmasked or padding)


def example_texts(examples: Iterable[Example]) -> list[str]:
    """Every text an Example holds: its context turns, the message and the response."""
    texts: list[str] = []
    for example in examples:
        texts.extend(example.context)
        texts.append(example.text)
        if example.response is not None:
            texts.append(example.response)
    return texts


def datamodule_texts(datamodule: Any) -> list[str]:
    """The train split's texts of a data config's DataModule (fetched first if it fetches)."""
    datamodule.prepare_data()
    return example_texts(datamodule.load_splits()["train"])


def read_text_file(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts from a .txt file (one a line) or a table's `text_column` (JSONL, CSV, TSV,
    Parquet). Blank lines and empty cells are kept as "" here; `clean_corpus` drops them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: text_file not found.")
    if path.suffix.lower() == ".txt":
        return path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{path}: unknown file type {path.suffix!r}; use one of {sorted(TEXT_SUFFIXES)}."
        )
    rows, unit = read_rows(path)
    if not rows:
        raise DataError(f"{path}: holds no rows.")
    if text_column not in rows[0]:
        found = ", ".join(map(str, rows[0].keys()))
        raise DataError(
            f"{path}: column {text_column!r} (text_column) not found; the columns are: {found}."
        )
    texts = []
    for number, row in enumerate(rows, start=1):
        value = row.get(text_column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = ""
        if not isinstance(value, str):
            raise DataError(
                f"{path}, {unit} {number}: column {text_column!r} must be text, got {value!r:.60}."
            )
        texts.append(value)
    return texts


def clean_corpus(texts: Iterable[str], where: str) -> list[str]:
    """Stripped texts without blanks and repeats (first occurrence kept, order kept).

    Repeats are dropped because a corpus of templated messages would otherwise weight its
    most frequent templates many times over. `where` names the source in the error.
    """
    seen: set[str] = set()
    kept: list[str] = []
    for text in texts:
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            kept.append(text)
    if not kept:
        raise DataError(f"{where}: the corpus is empty (no non-blank text).")
    return kept


def split_corpus(
    texts: Sequence[str], val_fraction: float, seed: int, max_texts: int | None = None
) -> tuple[list[str], list[str]]:
    """Seeded shuffle, at most `max_texts` texts, and `val_fraction` of them held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}: must lie strictly between 0 and 1.")
    texts = list(texts)
    random.Random(seed).shuffle(texts)
    if max_texts is not None:
        texts = texts[:max_texts]
    if len(texts) < 2:
        raise DataError(
            f"the corpus holds {len(texts)} distinct text(s): at least 2 are needed, one to "
            f"train on and one to validate."
        )
    held = min(len(texts) - 1, max(1, round(len(texts) * val_fraction)))
    return texts[held:], texts[:held]


@dataclass
class PadMasked:
    """Pads rows that are masked already (`input_ids`, `labels`); labels pad with -100."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class MaskedLMDataModule(pl.LightningDataModule):
    """Length-bucketed batches of token ids, masked by `DataCollatorForLanguageModeling`.

    Training draws new masks every batch (dynamic masking). Validation texts are masked
    once, from a generator seeded with `seed`, so every validation (before fit, each epoch,
    after fit) scores the same masked tokens and their losses compare. `batch_size` is per
    device.
    """

    def __init__(
        self,
        tokenizer: str,
        train_texts: Sequence[str],
        val_texts: Sequence[str],
        max_length: int = 128,
        mlm_probability: float = 0.15,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        pad_to_multiple_of: int | None = None,
        pool_batches: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError(
                f"mlm_probability={mlm_probability}: must lie strictly between 0 and 1."
            )
        self.tokenizer_name = tokenizer
        self.texts = {"train": list(train_texts), "val": list(val_texts)}
        self.max_length = max_length
        self.mlm_probability = mlm_probability
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pool_batches = pool_batches
        self.seed = seed
        self.rows: dict[str, list[dict[str, list[int]]]] = {}
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
            if self._tokenizer.mask_token is None:
                raise ConfigError(
                    f"model.name_or_path={self.tokenizer_name}: its tokenizer has no mask "
                    f"token, so it cannot be pretrained with masked-LM."
                )
        return self._tokenizer

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        for split, texts in self.texts.items():
            encoded = self.tokenizer(
                texts,
                truncation=True,
                max_length=self.max_length,
                return_special_tokens_mask=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            self.rows[split] = [
                {"input_ids": ids, "special_tokens_mask": special}
                for ids, special in zip(
                    encoded["input_ids"], encoded["special_tokens_mask"], strict=True
                )
            ]
        self.rows["val"] = self.mask_once(self.rows["val"])

    def mask_once(self, rows: list[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
        """Each row masked once, text by text, from a generator seeded with `seed`: the same
        masks whatever the batches, the epoch or the number of DDP processes."""
        collator = self.collator(seed=self.seed)
        masked = []
        for row in rows:
            batch = collator([row])
            masked.append({k: batch[k][0].tolist() for k in ("input_ids", "labels")})
        return masked

    def collator(self, seed: int | None = None) -> Any:
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(
            self.tokenizer,
            mlm_probability=self.mlm_probability,
            pad_to_multiple_of=self.pad_to_multiple_of,
            seed=seed,
        )

    def loader(self, rows: list[dict[str, list[int]]], train: bool = False) -> DataLoader:
        """Length-bucketed, this DDP rank's share; training batches masked afresh."""
        sampler = rank_batch_sampler(
            [len(r["input_ids"]) for r in rows],
            self.batch_size if train else self.eval_batch_size,
            train,
            self.seed,
            self.pool_batches,
            fix="raise val_fraction.",
        )
        pad = PadMasked(self.tokenizer.pad_token_id, self.pad_to_multiple_of)
        collate = self.collator() if train else pad
        return DataLoader(rows, batch_sampler=sampler, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.rows["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.rows["val"])

    def describe(self) -> str:
        lengths = [len(r["input_ids"]) for r in self.rows.get("train", [])]
        mean = sum(lengths) / max(1, len(lengths))
        return (
            f"corpus: {len(self.texts['train'])} texts to train on, {len(self.texts['val'])} "
            f"to validate; {mean:.1f} tokens a text on average (max_length {self.max_length})"
        )
