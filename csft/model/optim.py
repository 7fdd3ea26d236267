"""Parameter groups (no decay on biases and LayerNorm, own head lr) and warmup-then-decay."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from csft.errors import ConfigError

DECAYS = ("linear", "cosine", "constant")


def no_decay(name: str) -> bool:
    """Biases and LayerNorm weights get no weight decay (BERT's recipe)."""
    lowered = name.lower()
    return lowered.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered


def parameter_groups(
    modules: Iterable[tuple[nn.Module, float | None] | tuple[nn.Module, float | None, float]],
    weight_decay: float,
) -> list[dict]:
    """One decay and one no-decay group per (module, lr[, lr_scale]); frozen parameters are
    left out.

    An lr of None leaves the group on the optimizer's own lr. An `lr_scale` other than 1 is
    kept in the group for `apply_lr_scales` (the optimizer's lr is only known once it exists).
    """
    groups = []
    for module, lr, *scale in modules:
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        own_lr = {} if lr is None else {"lr": lr}
        if scale and scale[0] != 1.0:
            own_lr["lr_scale"] = scale[0]
        decayed = [p for n, p in named if not no_decay(n)]
        plain = [p for n, p in named if no_decay(n)]
        if decayed:
            groups.append({"params": decayed, "weight_decay": weight_decay, **own_lr})
        if plain:
            groups.append({"params": plain, "weight_decay": 0.0, **own_lr})
    return groups


def layer_decay_parts(encoder: nn.Module, decay: float) -> list[tuple[nn.Module, None, float]]:
    """Layer-wise lr decay (LLRD): the top layer (and the pooler) at the base lr, each layer
    below at `decay` times the one above, the embeddings lowest. Lower layers hold the
    general language the pretrained model brings; they should move least."""
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"optim.layer_decay={decay}: expected a number in (0, 1].")
    layers = list(encoder.encoder.layer)
    parts: list[tuple[nn.Module, None, float]] = [(encoder.embeddings, None, decay ** len(layers))]
    parts += [(layer, None, decay ** (len(layers) - 1 - i)) for i, layer in enumerate(layers)]
    if getattr(encoder, "pooler", None) is not None:
        parts.append((encoder.pooler, None, 1.0))
    return parts


def apply_lr_scales(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Multiply each group's lr by its `lr_scale` (before any scheduler records the lrs)."""
    for group in optimizer.param_groups:
        group["lr"] *= group.pop("lr_scale", 1.0)
    return optimizer


def warmup_factor(step: int, total_steps: int, warmup_steps: int, decay: str) -> float:
    """Multiplier of the base lr: 0 → 1 linearly over warmup, then decay to 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.1,
    decay: str = "linear",
) -> LambdaLR:
    """Linear warmup over `warmup_ratio` of the steps, then `decay`; step it every batch."""
    if decay not in DECAYS:
        raise ConfigError(f"optim.scheduler.decay={decay!r}: expected one of {DECAYS}.")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigError(f"optim.scheduler.warmup_ratio={warmup_ratio}: must be in [0, 1).")
    warmup_steps = max(1, round(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0
    factor: Callable[[int], float] = partial(
        warmup_factor, total_steps=total_steps, warmup_steps=warmup_steps, decay=decay
    )
    return LambdaLR(optimizer, factor)
