"""Frozen-layer feature cache: compute the frozen bottom of the encoder once per row.

With `freeze=topK` the embeddings and the lower layers are fixed and run in eval mode, so
their output for a row is the same every epoch. The cache runs them once per row (the first
time the row is seen), keeps the unpadded hidden states in half precision, and from then on
only the top K layers and the head run. It uses the encoder's own forward on two views that
share the encoder's modules: `bottom` (embeddings + lower layers) and `top` (the cached
states in place of the embeddings + the top layers + pooler), so masks and attention
kernels are exactly the encoder's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from csft.model.freezing import encoder_layers


class _CachedStates(nn.Module):
    """Stands in for the embeddings of the `top` view: returns the states it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.states: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert self.states is not None
        return self.states


def _view(encoder: nn.Module, layers: list[nn.Module], embeddings: nn.Module, pooler: Any) -> Any:
    """A shallow copy of a BERT-style encoder that runs only `layers` (modules are shared)."""
    view = copy.copy(encoder)
    view._modules = dict(encoder._modules)
    stack = copy.copy(encoder.encoder)
    stack._modules = dict(encoder.encoder._modules)
    stack.layer = nn.ModuleList(layers)
    view.encoder = stack
    view.embeddings = embeddings
    view.pooler = pooler
    return view


class FrozenFeatureCache:
    """Per-row outputs of the frozen bottom, keyed by (split, row index).

    It is not an nn.Module on purpose: its views share the encoder's parameters, which must
    appear once in the model's state_dict and optimizer.
    """

    def __init__(
        self, encoder: nn.Module, trainable_layers: int, dtype: torch.dtype = torch.float16
    ) -> None:
        layers = list(encoder_layers(encoder))
        split = len(layers) - trainable_layers
        self.dtype = dtype
        self.bottom = _view(encoder, layers[:split], encoder.embeddings, None)
        self.bottom.eval()  # all of it is frozen: no dropout in what is stored
        self.inputs = _CachedStates()
        self.top = _view(encoder, layers[split:], self.inputs, getattr(encoder, "pooler", None))
        self.store: dict[tuple[str, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.store)

    @torch.no_grad()
    def bottom_states(
        self,
        split: str,
        index: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """The frozen bottom's output for a padded batch: from the cache, computed if new."""
        keys = [(split, int(i)) for i in index.tolist()]
        lengths = attention_mask.sum(1).tolist()
        missing = [k for k in keys if k not in self.store]
        if missing:
            states = self.bottom(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            for row, (key, length) in enumerate(zip(keys, lengths, strict=True)):
                if key not in self.store:
                    self.store[key] = states[row, : int(length)].to(self.dtype).cpu()
        width = input_ids.shape[1]
        hidden = self.store[keys[0]].shape[-1]
        out = torch.zeros(len(keys), width, hidden, device=input_ids.device)
        for row, key in enumerate(keys):
            cached = self.store[key]
            out[row, : cached.shape[0]] = cached.to(out.device, torch.float32)
        return out

    def top_forward(
        self,
        states: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> Any:
        """The top layers (and pooler) on cached states; returns the encoder's output type."""
        self.inputs.states = states
        try:
            return self.top(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
        finally:
            self.inputs.states = None
