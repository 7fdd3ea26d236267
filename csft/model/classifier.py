"""Classifier: a pretrained encoder, pooling and a head, trained with a loss object."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torchmetrics import MeanMetric

from csft.data.example import CLASSIFICATION, REGRESSION, TASKS
from csft.errors import ConfigError, CsftError
from csft.model.contrastive import supervised_contrastive_loss
from csft.model.freezing import FreezePolicy, count_parameters
from csft.model.frozen_cache import FrozenFeatureCache
from csft.model.heads import POOLINGS, ClassificationHead, mean_pool
from csft.model.losses import Loss, from_hparams, loss_for_task
from csft.model.metrics import task_metrics, update_metrics
from csft.model.optim import apply_lr_scales, layer_decay_parts, parameter_groups
from csft.model.prototypes import HEAD_INITS, prototype_weights
from csft.pretrained import load_encoder

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def _mixed_precision_clips(trainer: pl.Trainer) -> bool:
    return isinstance(trainer.precision_plugin, MixedPrecision) and bool(trainer.gradient_clip_val)


class NonFiniteLossError(CsftError, FloatingPointError):
    """The training loss became NaN or infinite; going on would only waste the run."""


class Classifier(pl.LightningModule):
    """Encoder + head. `task` (the data's) sizes the head: `num_labels` logits for
    classification, one score for regression. `loss` (csft.model.losses; default: the
    task's own) and `freeze` decide how it trains."""

    def __init__(
        self,
        name_or_path: str,
        num_labels: int,
        id2label: dict[int, str] | None = None,
        task: str = CLASSIFICATION,
        pooling: str = "cls",
        dropout: float = 0.1,
        freeze: FreezePolicy | Mapping[str, Any] | None = None,
        loss: Loss | Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        weight_decay: float = 0.0,
        head_lr: float | None = None,
        layer_decay: float = 1.0,
        random_init: bool = False,
        config_overrides: dict[str, Any] | None = None,
        attn_implementation: str | None = "sdpa",
        compile: bool = False,
        compile_backend: Any = "inductor",
        cache_frozen: bool = False,
        head_init: str = "random",
        head_init_scale: float = 20.0,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ConfigError(f"model.head_init={head_init!r}: expected one of {HEAD_INITS}.")
        if head_init == "prototypes" and task != CLASSIFICATION:
            raise ConfigError("model.head_init=prototypes needs a classification task.")
        if contrastive_weight < 0 or (contrastive_weight and task != CLASSIFICATION):
            raise ConfigError(
                f"model.contrastive_weight={contrastive_weight}: expected >= 0, and 0 unless "
                "the task is classification (the contrastive term pulls classes together)."
            )
        if contrastive_temperature <= 0:
            raise ConfigError(
                f"model.contrastive_temperature={contrastive_temperature}: must be > 0."
            )
        if task not in TASKS:
            raise ConfigError(f"data.task={task!r}: expected one of {TASKS}.")
        if pooling not in POOLINGS:
            raise ConfigError(f"model.pooling={pooling!r}: expected one of {POOLINGS}.")
        if task == CLASSIFICATION and num_labels < 2:
            raise ConfigError(f"a classification head needs at least 2 classes, got {num_labels}.")
        if task == REGRESSION:
            num_labels = 1
        if isinstance(freeze, Mapping):  # as saved in a checkpoint's hyperparameters
            freeze = FreezePolicy(**freeze)
        freeze = freeze or FreezePolicy()
        if isinstance(loss, Mapping):  # as saved in a checkpoint's hyperparameters
            loss = from_hparams(loss)
        loss = loss or loss_for_task(task)
        loss.check_task(task)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "freeze", "loss"])
        self.hparams["freeze"] = asdict(freeze)
        self.hparams["loss"] = loss.hparams()
        self.criterion = loss
        self.task = task
        self.pooling = pooling
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.encoder = load_encoder(
            name_or_path,
            random_init=random_init,
            config_overrides=dict(config_overrides or {}),
            add_pooling_layer=pooling == "cls",
            attn_implementation=attn_implementation,
        )
        self.head = ClassificationHead(self.encoder.config.hidden_size, num_labels, dropout)
        self.frozen = freeze.apply(self.encoder)
        self.train()  # frozen parts in eval mode from the start (see `train`)
        self.feature_cache: FrozenFeatureCache | None = None
        self.samples_trained = 0  # all ranks together; for samples/s however the run is cut
        if cache_frozen:
            if freeze.trainable_layers is None or freeze.train_embeddings:
                raise ConfigError(
                    f"model.cache_frozen=true needs frozen embeddings and lower layers "
                    f"(freeze=top4, top2 or head), but freeze={freeze.name} trains them: "
                    f"their outputs change every step and cannot be cached."
                )
            self.feature_cache = FrozenFeatureCache(self.encoder, freeze.trainable_layers)
        trainable, total = count_parameters(self)
        self.hparams.update(trainable_params=trainable, total_params=total)
        if compile:
            # dynamic=True: one graph for every padded length, not a recompile per batch shape.
            # In place (nn.Module.compile), so state_dict keys and export stay unchanged.
            self.encoder.compile(dynamic=True, backend=compile_backend)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_metrics", task_metrics(task, num_labels))
        # The evaluation loss as a torchmetric: under DDP it sums float row weights across
        # ranks. Lightning's own mean of a logged value divides integer row counts by the world
        # size (truncating), wrong when ranks hold different numbers of rows, as they do when
        # every row is evaluated exactly once.
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    # -- forward ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Classifier:
        """Frozen modules stay in eval mode (no dropout), whatever mode the rest is put in.

        Lightning >= 2.2 never calls `.train()` during fit: it records each submodule's own
        mode before validation and restores it afterwards. So the modes set here, at
        construction and again at `on_train_start`, are what every training batch runs with.
        """
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def on_train_start(self) -> None:
        self.train()  # also after a user's `.eval()` or a checkpoint load before `fit`

    def on_fit_start(self) -> None:
        # Not when resuming: the checkpoint's head (restored before this hook) is the one.
        if self.hparams.head_init == "prototypes" and not self.trainer.ckpt_path:
            self.init_head_from_prototypes(self.trainer.datamodule)

    @torch.no_grad()
    def init_head_from_prototypes(self, datamodule: Any) -> None:
        """Head rows = the train classes' mean pooled vectors (csft.model.prototypes), from
        the encoder as loaded, in eval mode (no dropout), over every train row."""
        was_training = self.training
        self.eval()
        pooled, labels = [], []
        for batch in datamodule.loader(datamodule.rows["train"], shard=False):
            inputs = [batch[k].to(self.device) for k in ("input_ids", "attention_mask")]
            token_types = batch["token_type_ids"].to(self.device)
            pooled.append(self.pool(*inputs, token_types).float().cpu())
            labels.append(batch["labels"])
        weight, bias = prototype_weights(
            torch.cat(pooled),
            torch.cat(labels),
            self.head.classifier.out_features,
            self.hparams.head_init_scale,
        )
        self.head.classifier.weight.copy_(weight)
        self.head.classifier.bias.copy_(bias)
        self.train(was_training)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        split: str | None = None,
    ) -> torch.Tensor:
        """Logits (or scores). With the frozen-layer cache and a row `index` + `split`, the
        frozen bottom's output comes from the cache and only the top layers run."""
        logits = self.head(self.pool(input_ids, attention_mask, token_type_ids, index, split))
        return logits.squeeze(-1) if self.task == REGRESSION else logits

    def pool(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        split: str | None = None,
    ) -> torch.Tensor:
        """The pooled vector the head reads ([CLS] pooler or mean of the tokens)."""
        if self.feature_cache is not None and index is not None and split is not None:
            states = self.feature_cache.bottom_states(
                split, index, input_ids, attention_mask, token_type_ids
            )
            out = self.feature_cache.top_forward(states, input_ids, attention_mask, token_type_ids)
        else:
            out = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
        if self.pooling == "cls":
            return out.pooler_output
        return mean_pool(out.last_hidden_state, attention_mask)

    # -- steps -----------------------------------------------------------------------------
    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        pooled = self.pool(
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            index=batch.get("index"),
            split=stage,
        )
        outputs = self.head(pooled)
        outputs = outputs.squeeze(-1) if self.task == REGRESSION else outputs
        loss = self.criterion(outputs, batch["labels"])
        if stage == "train" and self.hparams.contrastive_weight:
            contrastive = supervised_contrastive_loss(
                pooled, batch["labels"], self.hparams.contrastive_temperature
            )
            if contrastive is not None:
                self.log("train/contrastive", contrastive, on_step=True, on_epoch=True)
                loss = loss + self.hparams.contrastive_weight * contrastive
        update_metrics(getattr(self, f"{stage}_metrics"), outputs, batch["labels"], self.task)
        size = len(batch["labels"])
        if stage == "train":
            self.log(
                "train/loss", loss, on_step=True, on_epoch=True, batch_size=size, prog_bar=True
            )
        else:
            getattr(self, f"{stage}_loss").update(loss.detach(), weight=size)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self.samples_trained += len(batch["input_ids"]) * getattr(self._trainer, "world_size", 1)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); stopping. Lower optim.lr, raise "
                f"optim.scheduler.warmup_ratio, or clip gradients (trainer.gradient_clip_val)."
            )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        """Epoch metrics; torchmetrics has already gathered them from every DDP rank."""
        metrics = getattr(self, f"{stage}_metrics")
        values = {f"{stage}/{k}": v for k, v in metrics.compute().items()}
        metrics.reset()
        if stage != "train":
            loss = getattr(self, f"{stage}_loss")
            values = {f"{stage}/loss": loss.compute(), **values}
            loss.reset()
        self.log_dict(values, prog_bar=stage == "val")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ConfigError("no optimizer configured (optim.optimizer).")
        decay = self.hparams.get("layer_decay", 1.0)
        encoder_parts = (
            [(self.encoder, None)] if decay == 1.0 else layer_decay_parts(self.encoder, decay)
        )
        groups = parameter_groups(
            [*encoder_parts, (self.head, self.hparams.head_lr)], self.hparams.weight_decay
        )
        if not groups:
            raise ConfigError("the freeze policy leaves no trainable parameters.")
        optimizer = apply_lr_scales(self.optimizer_factory(groups))
        if optimizer.defaults.get("fused") and _mixed_precision_clips(self.trainer):
            # Lightning unscales mixed-precision gradients before clipping them, which a fused
            # optimizer (it unscales inside step()) refuses: fall back to the foreach kernels.
            optimizer = apply_lr_scales(self.optimizer_factory(groups, fused=False))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["id2label"] = self.hparams.id2label
