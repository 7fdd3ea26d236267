"""Supervised contrastive loss (Khosla et al., 2020) on the pooled sentence vectors.

With a handful of labelled rows per class, cross-entropy alone fits the head and barely
moves the encoder's geometry; the contrastive term pulls the pooled vectors of one class
together and pushes other classes away, which is what a nearest-class decision needs. It is
added to the task loss (`model.contrastive_weight`), so one fit trains both, and it acts on
the pooled vector the head reads, so nothing new is exported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from csft.errors import ConfigError


def supervised_contrastive_loss(
    pooled: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor | None:
    """Mean over anchors with at least one same-class partner in the batch of
    -log(softmax over the other rows of cosine / temperature), averaged over the partners.

    None when no row of the batch has a partner (nothing to pull together).
    """
    if temperature <= 0:
        raise ConfigError(f"model.contrastive_temperature={temperature}: must be > 0.")
    z = F.normalize(pooled.float(), dim=-1)
    similarity = z @ z.T / temperature
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    partners = (labels[:, None] == labels[None, :]) & ~self_mask
    anchors = partners.any(dim=1)
    if not anchors.any():
        return None
    log_prob = similarity.masked_fill(self_mask, float("-inf")).log_softmax(dim=-1)
    log_prob = log_prob.masked_fill(self_mask, 0.0)
    per_anchor = -(log_prob * partners).sum(dim=1) / partners.sum(dim=1).clamp(min=1)
    return per_anchor[anchors].mean()
