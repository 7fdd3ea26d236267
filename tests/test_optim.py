"""Warmup/decay shape and parameter groups."""

from __future__ import annotations

import math
from functools import partial
from itertools import pairwise

import pytest
import torch

from csft.errors import ConfigError
from csft.model.classifier import Classifier
from csft.model.freezing import FreezePolicy
from csft.model.optim import parameter_groups, warmup_schedule


def lrs(total: int, warmup_ratio: float, decay: str) -> list[float]:
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_schedule(optimizer, total, warmup_ratio, decay)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return out


def test_linear_warmup_then_linear_decay():
    values = lrs(100, 0.1, "linear")
    assert values[0] == pytest.approx(0.1)
    assert all(a < b for a, b in pairwise(values[:10]))  # rising
    assert values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a > b for a, b in pairwise(values[10:]))  # falling
    assert values[55] == pytest.approx(0.5)
    assert values[-1] == pytest.approx(1 / 90)


def test_cosine_decay_is_half_way_at_the_middle():
    values = lrs(100, 0.1, "cosine")
    assert values[9] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.5)
    assert values[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 90)))


def test_bad_schedule_settings_name_the_key():
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ConfigError, match="decay"):
        warmup_schedule(optimizer, 10, 0.1, "exponential")
    with pytest.raises(ConfigError, match="warmup_ratio"):
        warmup_schedule(optimizer, 10, 1.5)


def test_no_weight_decay_on_bias_and_layernorm_and_own_head_lr(tiny_bert_dir):
    model = Classifier(
        str(tiny_bert_dir),
        num_labels=3,
        freeze=FreezePolicy("top2", 2, False),
        optimizer=partial(torch.optim.AdamW, lr=1e-4),
        weight_decay=0.01,
        head_lr=1e-3,
    )
    optimizer = model.configure_optimizers()
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)  # frozen ones left out, none twice
    for group in optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        plain = [n.endswith("bias") or "LayerNorm" in n for n in group_names]
        assert all(plain) if group["weight_decay"] == 0.0 else not any(plain)
        is_head = [n.startswith("head.") for n in group_names]
        assert all(is_head) or not any(is_head)
        assert group["lr"] == (1e-3 if all(is_head) else 1e-4)


def test_parameter_groups_skip_frozen_parameters():
    layer = torch.nn.Linear(2, 2)
    layer.bias.requires_grad_(False)
    groups = parameter_groups([(layer, None)], 0.1)
    assert len(groups) == 1 and groups[0]["params"][0] is layer.weight
    assert "lr" not in groups[0]
