"""The few-shot levers: the supervised contrastive term and the prototype-initialised head."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from conftest import INTENT_FIXTURE, compose, tiny_overrides

from csft.errors import ConfigError, DataError
from csft.model.contrastive import supervised_contrastive_loss
from csft.model.prototypes import prototype_weights


def test_contrastive_loss_is_low_when_classes_cluster_and_high_when_they_mix():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    low = supervised_contrastive_loss(clustered, labels, temperature=0.1)
    high = supervised_contrastive_loss(mixed, labels, temperature=0.1)
    assert low < 0.01 < 5 < high


def test_contrastive_loss_matches_the_formula_for_one_anchor_pair():
    pooled = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])  # rows 0 and 1 are each other's only partner
    t = 0.5
    z = torch.nn.functional.normalize(pooled, dim=-1)
    sim = z @ z.T / t

    def anchor(i: int, j: int) -> torch.Tensor:
        others = [k for k in range(3) if k != i]
        return -(sim[i, j] - torch.logsumexp(sim[i, others], 0))

    expected = (anchor(0, 1) + anchor(1, 0)) / 2  # row 2 has no partner: not an anchor
    torch.testing.assert_close(supervised_contrastive_loss(pooled, labels, t), expected)


def test_contrastive_loss_is_none_without_partners_and_its_gradient_flows():
    assert supervised_contrastive_loss(torch.randn(3, 4), torch.tensor([0, 1, 2])) is None
    pooled = torch.randn(4, 8, requires_grad=True)
    supervised_contrastive_loss(pooled, torch.tensor([0, 0, 1, 1])).backward()
    assert pooled.grad is not None and pooled.grad.abs().sum() > 0


def test_prototype_head_puts_each_class_mean_on_its_own_class():
    torch.manual_seed(0)
    centres = torch.randn(3, 16) * 3
    labels = torch.arange(3).repeat_interleave(5)
    pooled = centres[labels] + 0.3 * torch.randn(15, 16)
    weight, bias = prototype_weights(pooled, labels, 3, scale=20.0)
    assert torch.equal((pooled @ weight.T + bias).argmax(-1), labels)
    # a vector of average length along a prototype gets logit `scale` for its class
    mean_norm = pooled.norm(dim=-1).mean()
    along = torch.nn.functional.normalize(weight[1], dim=0) * mean_norm
    torch.testing.assert_close((weight @ along)[1], torch.tensor(20.0))


def test_prototype_head_refuses_a_class_without_rows():
    with pytest.raises(DataError, match=r"classes \[2\] have no train row"):
        prototype_weights(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]), 3, scale=20.0)


class HeadAtFirstStep(pl.Callback):
    """The head's weights as the first training batch sees them, and the train loss logged."""

    def on_train_batch_start(self, trainer, model, batch, batch_idx):
        if not hasattr(self, "weight"):
            self.weight = model.head.classifier.weight.detach().clone()
            self.bias = model.head.classifier.bias.detach().clone()


def _fit(tmp_path, *extra: str):
    from csft.train import build

    cfg = compose(tiny_overrides(tmp_path, *INTENT_FIXTURE, "trainer.max_epochs=1", *extra))
    pl.seed_everything(0)
    datamodule, model, trainer = build(cfg)
    start_state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    seen = HeadAtFirstStep()
    seen.built = model.head.classifier.weight.detach().clone()
    trainer.callbacks.append(seen)
    trainer.fit(model, datamodule=datamodule)
    return datamodule, model, trainer, seen, start_state


def test_prototype_init_runs_inside_fit_from_the_encoder_as_loaded(tmp_path):
    datamodule, model, _, seen, start_state = _fit(tmp_path, "model.head_init=prototypes")
    # recompute the prototypes independently: a fresh model with the start weights
    model.encoder.load_state_dict(start_state)
    model.eval()
    pooled, labels = [], []
    with torch.no_grad():
        for batch in datamodule.loader(datamodule.rows["train"], shard=False):
            pooled.append(
                model.pool(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            )
            labels.append(batch["labels"])
    weight, bias = prototype_weights(torch.cat(pooled), torch.cat(labels), 3, scale=20.0)
    torch.testing.assert_close(seen.weight, weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seen.bias, bias)


def test_without_prototype_init_fit_keeps_the_random_head_it_was_built_with(tmp_path):
    _, _, trainer, seen, _ = _fit(tmp_path)
    torch.testing.assert_close(seen.weight, seen.built)
    assert "train/contrastive_epoch" not in trainer.callback_metrics


def test_the_contrastive_term_trains_beside_cross_entropy(tmp_path):
    _, _, trainer, _, _ = _fit(tmp_path, "model.contrastive_weight=0.5")
    contrastive = trainer.callback_metrics["train/contrastive_epoch"]
    assert torch.isfinite(contrastive) and contrastive > 0
    logged = json.dumps(sorted(trainer.logged_metrics))
    assert "train/contrastive" in logged


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.head_init=kmeans"], "model.head_init='kmeans'"),
        (["model.contrastive_temperature=0"], "model.contrastive_temperature"),
        (["model.contrastive_weight=-1"], "model.contrastive_weight"),
    ],
)
def test_bad_few_shot_settings_name_their_key(tmp_path, overrides, message):
    from csft.train import train

    cfg = compose(tiny_overrides(tmp_path, *INTENT_FIXTURE, *overrides))
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_the_few_shot_recipe_composes_with_its_levers_on():
    cfg = compose(["experiment=banking77_fewshot"])
    assert cfg.data.shots_per_class == 10
    assert cfg.model.pooling == "mean" and cfg.model.head_init == "prototypes"
    assert cfg.model.contrastive_weight > 0
