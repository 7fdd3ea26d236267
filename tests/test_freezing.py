"""Freezing policies leave exactly the expected parameters trainable."""

from __future__ import annotations

import pytest
from conftest import TINY_BERT_DIR_LAYERS

from csft.errors import ConfigError
from csft.model.classifier import Classifier
from csft.model.freezing import FreezePolicy, count_parameters

LAYERS = TINY_BERT_DIR_LAYERS  # the depth of the tiny BERT in tiny_bert_dir


def build(tiny_bert_dir, policy: FreezePolicy, pooling: str = "mean") -> Classifier:
    return Classifier(str(tiny_bert_dir), num_labels=3, pooling=pooling, freeze=policy)


def numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("policy", "trainable_layers", "embeddings_train"),
    [
        (FreezePolicy("none", None, True), LAYERS, True),
        (FreezePolicy("top2", 2, False), 2, False),
        (FreezePolicy("top4", 4, False), 4, False),
        (FreezePolicy("head", 0, False), 0, False),
        (FreezePolicy("embeddings", None, False), LAYERS, False),
    ],
)
def test_policy_trains_exactly_the_expected_parameters(
    tiny_bert_dir, policy, trainable_layers, embeddings_train
):
    model = build(tiny_bert_dir, policy)
    layers = model.encoder.encoder.layer
    expected = numel(model.head) + sum(
        numel(layer) for layer in layers[LAYERS - trainable_layers :]
    )
    if embeddings_train:
        expected += numel(model.encoder.embeddings)
    trainable, total = count_parameters(model)
    assert trainable == expected
    assert total == numel(model)
    assert model.hparams.trainable_params == expected
    for i, layer in enumerate(layers):
        wanted = i >= LAYERS - trainable_layers
        assert all(p.requires_grad == wanted for p in layer.parameters()), f"layer {i}"


def test_cls_pooler_trains_with_top_layers_but_not_in_a_linear_probe(tiny_bert_dir):
    top2 = build(tiny_bert_dir, FreezePolicy("top2", 2, False), pooling="cls")
    assert all(p.requires_grad for p in top2.encoder.pooler.parameters())
    probe = build(tiny_bert_dir, FreezePolicy("head", 0, False), pooling="cls")
    assert not any(p.requires_grad for p in probe.encoder.parameters())
    assert count_parameters(probe)[0] == numel(probe.head)


def test_more_layers_than_the_encoder_has_is_a_config_error(tiny_bert_dir):
    deeper = LAYERS + 2
    with pytest.raises(
        ConfigError, match=rf"freeze.trainable_layers={deeper}.*encoder has {LAYERS} layers"
    ):
        build(tiny_bert_dir, FreezePolicy(f"top{deeper}", deeper, False))


def test_frozen_modules_stay_in_eval_mode_when_training(tiny_bert_dir):
    model = build(tiny_bert_dir, FreezePolicy("top2", 2, False))
    model.train()
    layers = model.encoder.encoder.layer
    assert not model.encoder.embeddings.training
    assert [layer.training for layer in layers] == [False] * (LAYERS - 2) + [True, True]
    assert model.head.training
    model.eval()
    assert not any(layer.training for layer in layers)
