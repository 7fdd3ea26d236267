"""MaskedLM: continued masked-LM pretraining of an encoder, saved as a plain encoder folder.

A sentence-transformers checkpoint (the packaged MiniLM) has no masked-LM head: the head's
decoder is tied to the word embeddings, but its transform (dense + LayerNorm) and bias start
fresh. While the head is fresh, the first `head_warmup_ratio` of the steps train the head
alone, so the encoder's first updates do not follow the gradients of a random head.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from csft.errors import ConfigError, ModelNotAvailableError
from csft.model.classifier import NonFiniteLossError, _mixed_precision_clips
from csft.model.freezing import count_parameters
from csft.model.optim import parameter_groups
from csft.pretrained import from_pretrained, load_encoder

log = logging.getLogger("csft.pretrain")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
IGNORE = -100  # the label of a token that is not predicted


def masked_lm_config(name_or_path: str, config_overrides: dict[str, Any] | None = None) -> Any:
    """The model's config, checked to be an encoder transformers has a masked-LM form of."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING

    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ModelNotAvailableError(
            f"model.name_or_path={name_or_path!r}: the folder has no config.json, so it is not "
            f"a model folder. Point it at a folder from save_pretrained (e.g. the encoder/ "
            f"folder of a csft.pretrain run)."
        )
    try:
        config = from_pretrained(AutoConfig, name_or_path)
    except (ValueError, KeyError) as err:
        raise ModelNotAvailableError(
            f"model.name_or_path={name_or_path!r}: its config.json cannot be read as a "
            f"transformers config ({err})."
        ) from None
    if type(config) not in MODEL_FOR_MASKED_LM_MAPPING:
        raise ConfigError(
            f"model.name_or_path={name_or_path!r} is a {config.model_type!r} model, which has no "
            f"masked-LM form: csft.pretrain needs a BERT-family encoder (bert, roberta, ...)."
        )
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    return config


def load_masked_lm(
    name_or_path: str,
    random_init: bool = False,
    config_overrides: dict[str, Any] | None = None,
    attn_implementation: str | None = "sdpa",
) -> tuple[Any, list[str]]:
    """The encoder with a masked-LM head (fp32) and the names of the head weights the
    checkpoint lacks, which start fresh (all weights are fresh with `random_init` or
    `config_overrides`; then none are named)."""
    from transformers import AutoModelForMaskedLM

    config = masked_lm_config(name_or_path, config_overrides)
    kwargs = {"dtype": torch.float32, "attn_implementation": attn_implementation}
    if random_init or config_overrides:
        return AutoModelForMaskedLM.from_config(config, **kwargs), []
    try:
        model, info = from_pretrained(
            AutoModelForMaskedLM, name_or_path, output_loading_info=True, **kwargs
        )
    except ModelNotAvailableError:
        raise
    except OSError as err:  # a config without weights beside it
        raise ModelNotAvailableError(f"model.name_or_path={name_or_path!r}: {err}") from None
    prefix = f"{model.base_model_prefix}."
    missing = set(info["missing_keys"])
    if any(key.startswith(prefix) for key in missing):
        raise ModelNotAvailableError(
            f"model.name_or_path={name_or_path!r}: the checkpoint lacks encoder weights "
            f"({', '.join(sorted(k for k in missing if k.startswith(prefix)))[:200]}); it is "
            f"not an encoder of this architecture."
        )
    # named_parameters names a tied weight once (the decoder is the word embeddings).
    head = {name for name, _ in model.named_parameters() if not name.startswith(prefix)}
    return model, sorted(head & missing)


def mlm_head(model: nn.Module) -> nn.Module | None:
    """The masked-LM head: the one child module beside the encoder (BERT's `cls`, RoBERTa's
    `lm_head`); None for a model laid out otherwise (DistilBERT: several)."""
    heads = [child for child in model.children() if child is not model.base_model]
    return heads[0] if len(heads) == 1 else None


class MaskedLM(pl.LightningModule):
    """An encoder and its masked-LM head, trained on masked tokens; `save_encoder` writes the
    encoder alone, in the form `model.name_or_path` (and `load_encoder`) takes."""

    def __init__(
        self,
        name_or_path: str,
        random_init: bool = False,
        config_overrides: dict[str, Any] | None = None,
        attn_implementation: str | None = "sdpa",
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        weight_decay: float = 0.0,
        head_lr: float | None = None,
        head_warmup_ratio: float = 0.05,
    ) -> None:
        super().__init__()
        if not 0.0 <= head_warmup_ratio < 1.0:
            raise ConfigError(f"head_warmup_ratio={head_warmup_ratio}: must be in [0, 1).")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.model, fresh = load_masked_lm(
            name_or_path, random_init, dict(config_overrides or {}), attn_implementation
        )
        self.fresh_head = bool(fresh)
        if self.fresh_head:
            log.info(
                "%s has no masked-LM head weights (%s): the head starts fresh, and the first "
                "%.0f%% of the steps train it alone (head_warmup_ratio)",
                name_or_path,
                ", ".join(fresh),
                100 * head_warmup_ratio,
            )
        self.head_warmup_steps = 0  # set when the number of steps is known (configure_...)
        trainable, total = count_parameters(self)
        self.hparams.update(trainable_params=trainable, total_params=total)
        self.samples_trained = 0
        # (loss sum, masked tokens) of a validation: its mean over masked tokens, DDP ranks
        # summed. Made afresh for each validation, in the mode (inference or not) it runs in.
        self._val_totals = torch.zeros(2)
        self.train()  # from_pretrained leaves eval mode; MLM trains with dropout

    @property
    def encoder(self) -> nn.Module:
        return self.model.base_model

    @property
    def head(self) -> nn.Module | None:
        return mlm_head(self.model)

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the masked tokens and their number.

        The head (a vocabulary-wide projection, as costly as MiniLM's whole encoder per token)
        runs on the masked tokens only, not on every position.
        """
        masked = labels != IGNORE
        count = int(masked.sum())
        head = self.head
        if head is None:  # a head csft cannot run apart: transformers' own loss, every position
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
            return (out.loss if count else out.logits.sum() * 0.0), count
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        logits = head(hidden[masked])
        if count == 0:  # nothing masked in this batch (very short texts): no signal
            return logits.sum() * 0.0, 0
        return nn.functional.cross_entropy(logits.float(), labels[masked]), count

    # -- steps -----------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.train()  # also after a user's `.eval()` before `fit`
        if self.head_warmup_steps > self.global_step:
            log.info("the masked-LM head trains alone for %d steps", self.head_warmup_steps)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """During the head warmup the encoder's gradients are dropped before the step (and
        before clipping), so it stays as it was. Dropping, not freezing: DDP needs every
        parameter that had a gradient at the start to keep getting one."""
        if self.global_step < self.head_warmup_steps:
            for parameter in self.encoder.parameters():
                parameter.grad = None
        elif self.head_warmup_steps and self.global_step == self.head_warmup_steps:
            log.info("step %d: the encoder trains from here on", self.global_step)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self(batch["input_ids"], batch["attention_mask"], batch["labels"])
        size = len(batch["input_ids"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=size, prog_bar=True)
        self.samples_trained += size * getattr(self._trainer, "world_size", 1)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"masked-LM loss became {loss.item()} at step {self.global_step}; stopping. "
                f"Lower optim.lr or raise optim.scheduler.warmup_ratio."
            )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_totals = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, count = self(batch["input_ids"], batch["attention_mask"], batch["labels"])
        self._val_totals[0] += loss.detach().double() * count
        self._val_totals[1] += count

    def on_validation_epoch_end(self) -> None:
        total, count = self.trainer.strategy.reduce(self._val_totals, reduce_op="sum").tolist()
        loss = total / count if count else math.nan
        perplexity = math.exp(min(loss, 700.0))  # nan stays nan
        self.log_dict({"val/loss": loss, "val/perplexity": perplexity}, prog_bar=True)

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ConfigError("no optimizer configured (optim.optimizer).")
        total = int(self.trainer.estimated_stepping_batches)
        if self.fresh_head:
            self.head_warmup_steps = round(self.hparams.head_warmup_ratio * total)
        decay = self.hparams.weight_decay
        groups = parameter_groups([(self.encoder, None)], decay)
        in_encoder = {id(p) for p in self.encoder.parameters()}  # the tied decoder weight
        rest = [m for m in self.model.children() if m is not self.encoder]
        for group in parameter_groups([(nn.ModuleList(rest), self.hparams.head_lr)], decay):
            group["params"] = [p for p in group["params"] if id(p) not in in_encoder]
            if group["params"]:
                groups.append(group)
        optimizer = self.optimizer_factory(groups)
        if optimizer.defaults.get("fused") and _mixed_precision_clips(self.trainer):
            optimizer = self.optimizer_factory(groups, fused=False)  # see Classifier
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- the result ------------------------------------------------------------------------
    def save_encoder(self, directory: str | Path, tokenizer: Any) -> Path:
        """The encoder (with the pooler it started with, which MLM does not train) and the
        tokenizer, as a folder `AutoModel.from_pretrained` and `model.name_or_path` load.

        No head weights go in: a masked-LM head in the folder would show up as unexpected
        weights each time the encoder is loaded for fine-tuning.
        """
        from transformers import AutoModel

        directory = Path(directory)
        if self.hparams.random_init or self.hparams.config_overrides:
            encoder = AutoModel.from_config(self.encoder.config)
        else:  # the start checkpoint's own pooler (random where it has none)
            encoder = load_encoder(self.hparams.name_or_path)
        state = {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if unexpected or any(not key.startswith("pooler.") for key in missing):
            raise RuntimeError(f"encoder weights do not fit: {missing=}, {unexpected=}")
        encoder.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return directory
