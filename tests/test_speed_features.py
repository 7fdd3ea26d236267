"""Throughput features that must not change results: torch.compile, the non-finite guard."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import tiny_classifier

from csft.model.classifier import Classifier, NonFiniteLossError
from csft.model.losses import CrossEntropy


def tiny(**kwargs) -> Classifier:
    torch.manual_seed(0)
    return tiny_classifier(**kwargs)


def batch(length: int, rows: int = 4) -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 2000, (rows, length))
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.tensor([0, 1, 2, 0][:rows]),
    }


def test_compiled_encoder_does_not_recompile_per_padded_length():
    compiled_graphs = []

    def counting_backend(graph, example_inputs):
        compiled_graphs.append(graph)
        return graph.forward

    torch._dynamo.reset()
    model = tiny(compile=True, compile_backend=counting_backend).eval()
    reference = tiny().eval()
    for length in (5, 9, 13, 21):
        b = batch(length)
        with torch.no_grad():
            got = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            expected = reference(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        torch.testing.assert_close(got, expected)
    assert 1 <= len(compiled_graphs) <= 2  # the first shape, then one dynamic graph at most
    assert set(model.state_dict()) == set(reference.state_dict())  # export keys unchanged


class ExplodingLoss(CrossEntropy):
    """Cross-entropy that turns NaN from its third call (the third training step) on."""

    calls = 0

    def forward(self, outputs, labels):
        self.calls += 1
        loss = super().forward(outputs, labels)
        return loss * float("nan") if self.calls > 2 else loss


def test_a_non_finite_loss_stops_the_run_naming_the_step():
    from functools import partial

    model = tiny(loss=ExplodingLoss(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    loader = torch.utils.data.DataLoader([batch(6)] * 5, batch_size=None)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at step 2"):
        trainer.fit(model, train_dataloaders=loader)
