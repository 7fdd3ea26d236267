"""Frozen-layer feature cache: same outputs, same training results, clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import compose, tiny_overrides
from test_train import INTENT_DATA
from test_training_loop import recorded_run

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


def test_frozen_layer_cache_trains_like_the_uncached_model(tmp_path):
    """Same seed, top2 with and without the cache: the same loss at every batch of two
    epochs, up to the cache's fp16 storage (dropout on, as by default)."""
    runs = {}
    for cache in (False, True):
        _, batches = recorded_run(
            tmp_path / str(cache),
            "freeze=top2",
            "trainer.max_epochs=2",
            f"model.cache_frozen={cache}",
        )
        runs[cache] = batches
    plain, cached = runs[False], runs[True]
    assert [b["rows"] for b in plain] == [b["rows"] for b in cached]
    losses = torch.tensor([[a["loss"], b["loss"]] for a, b in zip(plain, cached, strict=True)])
    assert torch.allclose(losses[:, 0], losses[:, 1], rtol=2e-3, atol=2e-3), losses
    # ... and end as the same model: the same logits on the same batch.
    ids = torch.randint(1000, 2000, (4, 12))
    logits = []
    for cache in (False, True):
        model = Classifier.load_from_checkpoint(tmp_path / str(cache) / "checkpoints" / "last.ckpt")
        with torch.no_grad():
            logits.append(model.eval()(ids, torch.ones_like(ids), None))
    assert torch.allclose(logits[0], logits[1], atol=5e-3), (logits[0] - logits[1]).abs().max()
