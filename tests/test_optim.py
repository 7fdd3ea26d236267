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


def test_layer_decay_gives_each_layer_its_own_lr_in_a_real_fit(tmp_path):
    """optim.layer_decay=0.5 on the 2-layer tiny BERT: top layer and pooler at lr, the layer
    below at lr/2, the embeddings at lr/4, the head at optim.head_lr; every trainable
    parameter in exactly one group."""
    import pytorch_lightning as pl
    from conftest import INTENT_FIXTURE, compose, tiny_overrides

    from csft.train import build

    cfg = compose(
        tiny_overrides(
            tmp_path,
            *INTENT_FIXTURE,
            "freeze=none",
            "optim.lr=1e-3",
            "optim.head_lr=5e-3",
            "optim.layer_decay=0.5",
            "trainer.max_steps=1",
        )
    )
    pl.seed_everything(0)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    lr_of = {}
    for group in trainer.optimizers[0].param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["initial_lr"]
    encoder = model.encoder
    expected = {
        **{id(p): 1e-3 / 4 for p in encoder.embeddings.parameters()},
        **{id(p): 1e-3 / 2 for p in encoder.encoder.layer[0].parameters()},
        **{id(p): 1e-3 for p in encoder.encoder.layer[1].parameters()},
        **{id(p): 1e-3 for p in encoder.pooler.parameters()},
        **{id(p): 5e-3 for p in model.head.parameters()},
    }
    assert lr_of == pytest.approx(expected)
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)


def test_layer_decay_outside_0_1_is_refused_by_key(tmp_path):
    from conftest import INTENT_FIXTURE, compose, tiny_overrides

    from csft.checks import check_config

    with pytest.raises(ConfigError, match=r"optim\.layer_decay"):
        check_config(compose(tiny_overrides(tmp_path, *INTENT_FIXTURE, "optim.layer_decay=1.5")))
