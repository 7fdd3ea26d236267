"""Start the head at the class prototypes instead of at random.

A fresh linear head needs many steps before its argmax means anything; with few labelled
rows there are few steps to spend. Setting each class's weight row to the direction of that
class's mean pooled vector (of the pretrained encoder, before any update) makes the first
step already a nearest-prototype classifier (cosine, scaled), and fine-tuning starts from
there: SetFit-like head quality at step 0, end-to-end training after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from csft.errors import DataError

HEAD_INITS = ("random", "prototypes")


@torch.no_grad()
def prototype_weights(
    pooled: torch.Tensor, labels: torch.Tensor, num_classes: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) for a linear head on `pooled`: row k = scale * unit(mean of class k)
    / mean |pooled|, bias 0. Logits are then scale x cosine for vectors of average length."""
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise DataError(
            f"model.head_init=prototypes: classes {missing[:10]} have no train row, so they "
            "have no prototype."
        )
    pooled = pooled.float()
    sums = torch.zeros(num_classes, pooled.shape[1]).index_add_(0, labels, pooled)
    weight = F.normalize(sums, dim=-1) * scale / pooled.norm(dim=-1).mean().clamp(min=1e-6)
    return weight, torch.zeros(num_classes)
