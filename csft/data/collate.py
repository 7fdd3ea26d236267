"""Dynamic padding: a batch is padded to its own longest row, not to max_length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class PadCollator:
    """Pads `input_ids`/`token_type_ids`, builds `attention_mask`, stacks `labels` and `index`."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    label_dtype: torch.dtype = torch.long

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(rows), length), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"])
            token_type_ids[i, :n] = torch.tensor(row["token_type_ids"])
            attention_mask[i, :n] = 1
        batch = {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "index": torch.tensor([row["index"] for row in rows]),
        }
        if rows[0].get("label") is not None:
            batch["labels"] = torch.tensor([row["label"] for row in rows], dtype=self.label_dtype)
        return batch
