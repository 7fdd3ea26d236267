"""Offline model loading: local folders work, a missing hub model fails at once and clearly."""

from __future__ import annotations

import pytest

from csft.errors import ModelNotAvailableError
from csft.pretrained import from_pretrained, load_encoder, load_tokenizer


def test_packaged_minilm_loads_offline(minilm_dir):
    encoder = load_encoder(minilm_dir, add_pooling_layer=False)
    assert encoder.config.num_hidden_layers == 6 and encoder.config.hidden_size == 384
    assert load_tokenizer(minilm_dir).is_fast


@pytest.mark.parametrize("offline_flag", ["1", None])
def test_uncached_hub_model_fails_with_one_message(monkeypatch, offline_flag):
    if offline_flag:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline_flag)
    else:  # "online" but the hub cannot be reached: a closed local port stands in for it
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", "/nonexistent-csft-cache")
    with pytest.raises(ModelNotAvailableError) as err:
        load_encoder("bert-base-uncased")
    message = str(err.value)
    assert "model.name_or_path='bert-base-uncased'" in message
    assert "local copy" in message and "model=minilm" in message


def test_an_unreachable_hub_is_never_asked(monkeypatch):
    """Only the local cache is tried: no download attempt, so no hub retry loop."""
    calls = []

    class Loader:
        @staticmethod
        def from_pretrained(name, **kwargs):
            calls.append(kwargs)
            raise OSError("not cached")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelNotAvailableError):
        from_pretrained(Loader, "some-org/some-model")
    assert calls == [{"local_files_only": True}]


def test_a_missing_local_folder_is_named():
    with pytest.raises(ModelNotAvailableError, match="/no/such/bert"):
        load_encoder("/no/such/bert")


def test_a_half_precision_checkpoint_loads_as_fp32_master_weights(tiny_bert_dir, tmp_path):
    import torch
    from transformers import BertModel

    half = BertModel.from_pretrained(tiny_bert_dir, dtype=torch.float16)
    half.save_pretrained(tmp_path)
    assert BertModel.from_pretrained(tmp_path).dtype == torch.float16  # what transformers does
    encoder = load_encoder(str(tmp_path))
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    expected = half.embeddings.word_embeddings.weight.float()
    assert torch.equal(encoder.embeddings.word_embeddings.weight, expected)


def test_a_folder_that_is_not_an_encoder_is_named_for_training(tmp_path):
    """`csft.train model.name_or_path=<folder without config.json>`: one error, no traceback."""
    from conftest import INTENT_FIXTURE, compose, tiny_overrides

    from csft.train import train

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    cfg = compose(
        [*tiny_overrides(tmp_path, *INTENT_FIXTURE), f"model.name_or_path={tmp_path / 'notes'}"]
    )
    with pytest.raises(ModelNotAvailableError, match="is a folder but not an encoder"):
        train(cfg)
