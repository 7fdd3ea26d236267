"""Shared fixtures: the real data folder, a tiny random BERT, and Hydra composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURES = Path(__file__).parent / "fixtures"
DATA_DIR = Path(os.environ.get("CSFT_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
os.environ["CSFT_DATA_DIR"] = str(DATA_DIR)

# The hand-written intent fixture (24 rows, 3 intents) as `data=csv` overrides; with a 25 %
# validation split it trains on 18 rows.
INTENT_FIXTURE = [
    "data=csv",
    f"data.train_file={FIXTURES / 'intents_train.csv'}",
    f"data.test_file={FIXTURES / 'intents_test.csv'}",
    "data.text_column=message",
    "data.label_column=intent",
    "data.val_fraction=0.25",
]

# The tiny BERT shape, read from conf/model/tiny.yaml (what `model=tiny` builds): 2 layers,
# 32 hidden, 2 heads, 64 intermediate. Every test that builds a tiny encoder uses this one
# shape; `tiny_bert_dir` stacks 4 such layers so that freeze=top4 has layers to leave.
TINY_SHAPE: dict[str, int] = dict(
    OmegaConf.to_container(OmegaConf.load(CONF / "model" / "tiny.yaml").config_overrides)
)
TINY_BERT_DIR_LAYERS = 4


def tiny_classifier(num_labels: int = 3, **kwargs):
    """A Classifier with a random encoder of TINY_SHAPE and MiniLM's vocabulary."""
    from csft.model.classifier import Classifier
    from csft.pretrained import packaged_minilm_dir

    return Classifier(
        packaged_minilm_dir(),
        num_labels=num_labels,
        random_init=True,
        config_overrides=TINY_SHAPE,
        **kwargs,
    )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "banking77" / "train.csv").is_file():
        pytest.skip(f"real data not found in {DATA_DIR} (set CSFT_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    from csft.pretrained import packaged_minilm_dir

    return packaged_minilm_dir()


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    from csft.pretrained import load_tokenizer

    return load_tokenizer(minilm_dir)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer) -> Path:
    """A random BERT of TINY_SHAPE but 4 layers, saved like a pretrained model (with a
    tokenizer)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer), **{**TINY_SHAPE, "num_hidden_layers": TINY_BERT_DIR_LAYERS}
        )
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def compose(overrides: list[str], config_name: str = "train"):
    """The config `python -m csft.<config_name> *overrides` would run with."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from csft.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def tiny_overrides(tmp_path: Path, *extra: str) -> list[str]:
    """A fast run: the tiny BERT, quiet trainer, output under tmp_path."""
    return [
        "model=tiny",
        f"paths.output_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "callbacks.lr_monitor=null",
        *extra,
    ]


def assert_same_logits(model, exported, tokenizer) -> None:
    """An exported model (any loader) gives the trained Classifier's logits on two messages."""
    import torch

    batch = tokenizer(
        ["my card is lost", "refund please, it has been a week"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        got = exported(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
