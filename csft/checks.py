"""Up-front checks of the numbers a user sets by hand, before any data is read or model built.

Hydra turns a mistyped number (`lr=2e-4x`) into a string, and a library then fails deep
inside a run; here each such key has one rule, and a value that breaks it stops the run
with the key, the value and what it should be.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from csft.errors import ConfigError

_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """What a key accepts (`ok`) and how an error message says it (`expected`)."""

    expected: str
    ok: Callable[[Any], bool]

    def __or__(self, other: Rule) -> Rule:
        return Rule(f"{self.expected} or {other.expected}", lambda v: self.ok(v) or other.ok(v))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def integer(low: int) -> Rule:
    """An int (not a bool, not 3.0) of at least `low`."""
    return Rule(f"an integer >= {low}", lambda v: _is_int(v) and v >= low)


def number(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Rule:
    """A finite int or float within the bounds given, e.g. number(gt=0), number(ge=0, lt=1)."""
    given = (
        (">=", ge, operator.ge),
        (">", gt, operator.gt),
        ("<=", le, operator.le),
        ("<", lt, operator.lt),
    )
    bounds = [(words, bound, test) for words, bound, test in given if bound is not None]
    return Rule(
        "a number " + " and ".join(f"{words} {bound}" for words, bound, _ in bounds),
        lambda v: _is_number(v) and all(test(v, bound) for _, bound, test in bounds),
    )


def _device_indices(value: Any) -> bool:
    """Lightning's `devices` as indices: [0, 1], or a string such as '0,1' (or '2': a count)."""
    if isinstance(value, str):
        return bool(re.fullmatch(r"\d+(,\d+)*,?|-1", value.replace(" ", "")))
    return isinstance(value, Sequence) and bool(value) and all(_is_int(i) and i >= 0 for i in value)


NULL = Rule("null", lambda v: v is None)
# Lightning's limit_*_batches / overfit_batches: a count of batches, or a share of them.
BATCHES = integer(0) | number(ge=0, le=1)
DURATION = Rule(
    "a duration 'DD:HH:MM:SS'",
    lambda v: isinstance(v, str) and bool(re.fullmatch(r"\d+:\d+:\d+:\d+", v)),
)
DEVICES = (
    integer(1)
    | Rule("-1 (all)", lambda v: v == -1 and _is_int(v))
    | Rule("'auto'", lambda v: v == "auto")
    | Rule("device indices such as [0, 1] or '0,1'", _device_indices)
)

# Keys that each choose the same thing: at most one of a pair may be set (not null).
EXCLUSIVE: tuple[tuple[str, str], ...] = (("data.shots_per_class", "data.train_fraction"),)

# One rule per key a user sets by hand; keys a config does not have are skipped. Null is
# accepted where the shipped yaml (or the library) takes it.
RULES: dict[str, Rule] = {
    "seed": integer(0),
    "threads": NULL | integer(1),
    "data.seed": integer(0),
    "data.batch_size": integer(1),
    "data.eval_batch_size": integer(1),
    "data.max_length": integer(1),
    "data.max_response_length": integer(1),
    "data.max_context_turns": NULL | integer(0),
    "data.val_fraction": number(gt=0, lt=1),
    "data.test_fraction": number(gt=0, lt=1),
    "data.negatives_per_positive": integer(1),
    "data.hard_negative_share": number(ge=0, le=1),
    "data.max_queries_per_intent": NULL | integer(1),
    "data.shots_per_class": NULL | integer(1),
    "data.train_fraction": NULL | number(gt=0, le=1),
    "data.sample_seed": integer(0),
    "data.threshold": number(ge=0, le=1),
    "data.pad_to_multiple_of": NULL | integer(1),
    "handoff.target_accuracy": number(gt=0, le=1),
    "data.pool_batches": integer(1),
    "data.num_workers": integer(0),
    "model.dropout": number(ge=0, lt=1),
    "model.head_init_scale": number(gt=0),
    "model.contrastive_weight": number(ge=0),
    "model.contrastive_temperature": number(gt=0),
    "freeze.trainable_layers": NULL | integer(0),
    "optim.lr": number(gt=0),
    "optim.head_lr": NULL | number(gt=0),
    "optim.layer_decay": number(gt=0, le=1),
    "optim.weight_decay": number(ge=0),
    "optim.scheduler.warmup_ratio": number(ge=0, lt=1),
    "trainer.max_epochs": NULL | integer(-1),
    "trainer.max_steps": integer(-1),
    "trainer.gradient_clip_val": NULL | number(ge=0),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.limit_train_batches": NULL | BATCHES,
    "trainer.limit_val_batches": NULL | BATCHES,
    "trainer.limit_test_batches": NULL | BATCHES,
    "trainer.limit_predict_batches": NULL | BATCHES,
    "trainer.overfit_batches": BATCHES,
    "trainer.val_check_interval": NULL | integer(1) | number(gt=0, le=1) | DURATION,
    "trainer.check_val_every_n_epoch": NULL | integer(1),
    "trainer.num_sanity_val_steps": integer(-1),
    "trainer.log_every_n_steps": integer(0),
    "trainer.devices": DEVICES,
    "trainer.num_nodes": integer(1),
    "callbacks.last_checkpoint.every_n_train_steps": NULL | integer(1),
}


def check_config(cfg: DictConfig) -> None:
    """Raise one ConfigError naming the key of the first impossible value in `cfg`."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not rule.ok(value):
            raise ConfigError(f"{key}={value!r}: expected {rule.expected}.")
    for first, second in EXCLUSIVE:
        values = [OmegaConf.select(cfg, key, default=None) for key in (first, second)]
        if None not in values:
            raise ConfigError(
                f"{first}={values[0]!r} and {second}={values[1]!r}: set one of them, not both."
            )
    max_length = OmegaConf.select(cfg, "data.max_length")
    name = OmegaConf.select(cfg, "model.name_or_path")
    if max_length is not None and name is not None:
        overrides = OmegaConf.select(cfg, "model.config_overrides")
        limit = position_limit(name, OmegaConf.to_container(overrides) if overrides else None)
        if limit is not None and max_length > limit:
            raise ConfigError(
                f"data.max_length={max_length}: the model {name} takes at most {limit} tokens "
                f"(its max_position_embeddings); set data.max_length <= {limit}."
            )


def position_limit(
    name_or_path: str, config_overrides: Mapping[str, Any] | None = None
) -> int | None:
    """The most tokens the encoder's position embeddings take, from its config (no weights)."""
    from transformers import AutoConfig

    from csft.pretrained import from_pretrained

    config = from_pretrained(AutoConfig, name_or_path)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= config.pad_token_id + 1  # their position ids start after the padding index
    return limit
