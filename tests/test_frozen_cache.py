"""Frozen-layer feature cache: same outputs, same training results, clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import compose, tiny_overrides
from test_train import INTENT_DATA

from csft.errors import ConfigError
from csft.model.classifier import Classifier
from csft.model.freezing import FreezePolicy
from csft.train import train


def pair(tiny_bert_dir, pooling: str) -> tuple[Classifier, Classifier]:
    policy = FreezePolicy("top2", 2, False)
    torch.manual_seed(0)
    cached = Classifier(str(tiny_bert_dir), 3, pooling=pooling, freeze=policy, cache_frozen=True)
    plain = Classifier(str(tiny_bert_dir), 3, pooling=pooling, freeze=policy)
    plain.load_state_dict(cached.state_dict())
    return cached.eval(), plain.eval()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cached_and_uncached_forward_agree(tiny_bert_dir, pooling):
    cached, plain = pair(tiny_bert_dir, pooling)
    ids = torch.randint(1000, 2000, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    types = torch.zeros_like(ids)
    index = torch.tensor([4, 9, 2])
    with torch.no_grad():
        expected = plain(ids, mask, types)
        first = cached(ids, mask, types, index=index, split="train")  # fills the cache
        assert len(cached.feature_cache) == 3
        again = cached(ids, mask, types, index=index, split="train")  # read from it
    torch.testing.assert_close(first, expected, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(again, first)
    assert set(cached.state_dict()) == set(plain.state_dict())  # no duplicated parameters


def test_gradients_reach_only_the_top_layers_through_the_cache(tiny_bert_dir):
    cached, _ = pair(tiny_bert_dir, "mean")
    cached.train()
    ids = torch.randint(1000, 2000, (2, 6))
    logits = cached(
        ids, torch.ones_like(ids), torch.zeros_like(ids), index=torch.tensor([0, 1]), split="train"
    )
    logits.sum().backward()
    layers = cached.encoder.encoder.layer
    assert all(p.grad is not None for p in layers[3].parameters())
    assert all(p.grad is None for p in layers[0].parameters())


def test_training_from_the_cache_reaches_the_same_metrics(tmp_path):
    common = [
        *INTENT_DATA,
        "model.config_overrides.num_hidden_layers=4",
        "freeze=top2",
        "model.dropout=0.0",
        "report=false",
    ]
    plain = train(compose(tiny_overrides(tmp_path / "plain", *common)))
    cached = train(compose(tiny_overrides(tmp_path / "cached", *common, "model.cache_frozen=true")))
    for key in ("val/loss", "test/loss"):
        assert cached[key] == pytest.approx(plain[key], rel=0.02), key
    assert cached["test/acc"] == pytest.approx(plain["test/acc"], abs=0.17)


@pytest.mark.parametrize("policy", ["none", "embeddings"])
def test_cache_with_trainable_bottom_is_a_config_error(tmp_path, policy):
    with pytest.raises(ConfigError, match=f"cache_frozen=true needs .* freeze={policy} trains"):
        train(
            compose(
                tiny_overrides(
                    tmp_path, *INTENT_DATA, f"freeze={policy}", "model.cache_frozen=true"
                )
            )
        )


def test_cache_with_rows_rebuilt_between_epochs_is_a_config_error(tmp_path):
    overrides = tiny_overrides(
        tmp_path,
        *INTENT_DATA,
        "freeze=top2",
        "model.cache_frozen=true",
        "+trainer.reload_dataloaders_every_n_epochs=1",
    )
    with pytest.raises(ConfigError, match="reload_dataloaders_every_n_epochs=1 rebuilds"):
        train(compose(overrides))
    assert not (tmp_path / "checkpoints").exists()
