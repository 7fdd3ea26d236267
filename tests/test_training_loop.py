"""What a real `Trainer.fit` does to the model and the data, seen from inside the loop.

Each test runs `csft.train.train` on a composed config with every default in place and a
`recording.BatchRecorder` callback that writes what each training batch looked like.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import INTENT_FIXTURE, assert_same_logits, compose, tiny_overrides
from recording import read

from csft.train import train

FIT = [*INTENT_FIXTURE, "data.batch_size=4", "optim.lr=1e-3"]


def recorded_run(tmp_path, *overrides):
    log = tmp_path / "batches.jsonl"
    cfg = compose(
        tiny_overrides(
            tmp_path,
            *FIT,
            "+callbacks.record._target_=recording.BatchRecorder",
            f"+callbacks.record.path={log}",
            *overrides,
        )
    )
    return train(cfg), read(log)


def epochs_of(batches):
    by_epoch: dict[int, list[list[int]]] = {}
    for batch in batches:
        by_epoch.setdefault(batch["epoch"], []).append(batch["rows"])
    return [by_epoch[e] for e in sorted(by_epoch)]


def test_every_epoch_trains_on_a_new_order_of_all_rows(tmp_path):
    _, batches = recorded_run(tmp_path, "freeze=top2", "trainer.max_epochs=3")
    epochs = epochs_of(batches)
    assert len(epochs) == 3
    for epoch in epochs:  # 18 train rows, each once per epoch
        assert sorted(row for batch in epoch for row in batch) == list(range(18))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_same_seed_same_batch_orders(tmp_path):
    _, first = recorded_run(tmp_path / "a", "trainer.max_epochs=2")
    _, second = recorded_run(tmp_path / "b", "trainer.max_epochs=2")
    assert epochs_of(first) == epochs_of(second)


def test_debug_overfit_repeats_the_same_batches(tmp_path):
    _, batches = recorded_run(tmp_path, "debug=overfit", "trainer.max_epochs=3")
    epochs = epochs_of(batches)
    assert len(epochs) == 3 and len(epochs[0]) == 3
    assert epochs[0] == epochs[1] == epochs[2]


@pytest.mark.parametrize("loaded", ["random", "pretrained"])
@pytest.mark.parametrize("policy", ["embeddings", "top2", "head", "none"])
def test_frozen_parts_run_in_eval_mode_at_every_training_batch(
    tmp_path, tiny_bert_dir, policy, loaded
):
    """Frozen parts without dropout, trainable parts with it, at every batch of a real fit.

    Both ways a model is built matter: `from_config` (model=tiny) returns modules in train
    mode, `from_pretrained` (model=minilm, model=bert: what users run) in eval mode.
    """
    source = []
    if loaded == "pretrained":
        source = [
            f"model.name_or_path={tiny_bert_dir}",
            "model.random_init=false",
            "model.config_overrides=null",
        ]
    _, batches = recorded_run(tmp_path, *source, f"freeze={policy}", "trainer.max_epochs=2")
    assert {b["epoch"] for b in batches} == {0, 1}
    for batch in batches:
        assert batch["frozen_in_train_mode"] == 0, batch
        assert batch["trainable_in_eval_mode"] == 0, batch
    assert (batches[0]["frozen_modules"] > 0) == (policy != "none")
    assert batches[0]["trainable_modules"] > 0  # the head (and its dropout) at least


def test_metrics_json_reports_the_best_checkpoint_for_val_and_test(tmp_path):
    """val/* and test/* come from the same (best) weights, not val/* from the last epoch."""
    import csv

    results, _ = recorded_run(tmp_path, "trainer.max_epochs=6", "optim.lr=1e-2")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(results))
    with (tmp_path / "csv" / "metrics.csv").open() as handle:
        per_epoch = {
            int(row["epoch"]): float(row["val/loss"])
            for row in csv.DictReader(handle)
            if row["val/loss"]
        }
    best_epoch = int(saved["best_checkpoint"].rsplit("epoch", 1)[1][:2])
    assert best_epoch < 5, "this seed must pick an earlier epoch than the last for the test to bite"
    assert saved["val/loss"] == pytest.approx(per_epoch[best_epoch], abs=1e-5)
    assert saved["val/loss"] != pytest.approx(per_epoch[5], abs=1e-5)
    assert saved["val/acc"] == pytest.approx(saved["best_score"], abs=1e-6)


def test_a_run_without_a_test_file_trains_and_exports_the_best_checkpoint(tmp_path):
    from transformers import pipeline

    results, _ = recorded_run(tmp_path, "data.test_file=null", "trainer.max_epochs=2")
    assert not any(key.startswith("test/") for key in results)
    assert "val/acc" in results and results["best_checkpoint"]
    classify = pipeline("text-classification", model=str(tmp_path / "model"))
    assert classify("I lost my card")[0]["label"] in {"card_lost", "refund", "transfer"}
    best = torch.load(results["best_checkpoint"], weights_only=False)["state_dict"]
    from safetensors.torch import load_file

    exported = load_file(tmp_path / "model" / "model.safetensors")
    assert torch.equal(
        exported["bert.encoder.layer.0.output.dense.weight"],
        best["encoder.encoder.layer.0.output.dense.weight"],
    )
    # The head is the best checkpoint's, divided by the temperature fitted on validation.
    temperature = json.loads((tmp_path / "model" / "csft.json").read_text())["calibration"][
        "temperature"
    ]
    torch.testing.assert_close(
        exported["classifier.weight"], best["head.classifier.weight"] / temperature
    )


def test_any_checkpoint_loads_back_with_load_from_checkpoint(tmp_path, tokenizer):
    """The Lightning convention: `Classifier.load_from_checkpoint(path)` gives the model that
    was saved (same logits), for every checkpoint a default run writes; the best one is the
    model the run exported."""
    from csft.export import load_exported
    from csft.model.classifier import Classifier

    results, _ = recorded_run(tmp_path, "freeze=top2", "trainer.max_epochs=2")
    checkpoints = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    names = {p.name for p in checkpoints}
    assert "last.ckpt" in names and any(name.startswith("epoch") for name in names), names
    ids = torch.randint(1000, 2000, (3, 10))
    mask = torch.ones_like(ids)
    for path in checkpoints:
        state = torch.load(path, weights_only=False)["state_dict"]
        loaded = Classifier.load_from_checkpoint(path).eval()
        reference = Classifier.load_from_checkpoint(path).eval()
        reference.load_state_dict(state)
        assert loaded.hparams.freeze["name"] == "top2"
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
        with torch.no_grad():
            assert torch.equal(loaded(ids, mask, None), reference(ids, mask, None))
    # The export is the best checkpoint with its logits divided by the run's temperature.
    best = Classifier.load_from_checkpoint(results["best_checkpoint"]).eval()
    temperature = json.loads((tmp_path / "model" / "csft.json").read_text())["calibration"][
        "temperature"
    ]
    assert temperature != 1.0
    assert_same_logits(
        lambda *inputs: best(*inputs) / temperature, load_exported(tmp_path / "model"), tokenizer
    )
