"""Hugging Face model classes for csft's exports that are not stock transformers models,
copied into those folders.

`BertForSequenceClassification` pools with [CLS] → dense → tanh; csft's `pooling=mean`
averages the token vectors instead. `csft.ensemble` exports several runs as one model that
averages their probabilities. Such an export ships this file and names its class in
`config.auto_map`, so `AutoModelForSequenceClassification` and `pipeline` load it with
`trust_remote_code=True`. Each config has a model type of its own (`csft_bert_mean`,
`csft_ensemble`), so loading it *without* `trust_remote_code` is an error that asks for it,
not a plain `BertForSequenceClassification` with random layers that predicts nonsense.
It imports nothing from csft: the export stands alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertPreTrainedModel,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput


class CsftBertMeanConfig(BertConfig):
    """A BERT config under its own name: only this file's class knows the mean pooling."""

    model_type = "csft_bert_mean"


class CsftBertForSequenceClassification(BertPreTrainedModel):
    """BERT encoder → mean over unpadded tokens → dropout → linear."""

    config_class = CsftBertMeanConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class CsftEnsembleConfig(PretrainedConfig):
    """Several exports under one config: each member's own config and pooling, and the
    temperature fitted on the ensemble's validation probabilities."""

    model_type = "csft_ensemble"

    def __init__(
        self, members: list | None = None, calibration_temperature: float = 1.0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.members = list(members or [])
        self.calibration_temperature = calibration_temperature


def ensemble_member(entry: dict) -> nn.Module:
    """A member's model class for its pooling, built from its saved config (no weights)."""
    if entry["pooling"] == "mean":
        return CsftBertForSequenceClassification(CsftBertMeanConfig.from_dict(entry["config"]))
    return BertForSequenceClassification(BertConfig.from_dict(entry["config"]))


class CsftEnsembleForSequenceClassification(PreTrainedModel):
    """Members' calibrated probabilities averaged; logits = log(mean probability) / T, so a
    softmax of the output is the (re-calibrated) ensemble probability."""

    config_class = CsftEnsembleConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.members = nn.ModuleList(ensemble_member(entry) for entry in config.members)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        log_probs = torch.stack(
            [
                member(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).logits.log_softmax(-1)
                for member in self.members
            ]
        )
        mean_log_prob = torch.logsumexp(log_probs, 0) - math.log(len(self.members))
        logits = mean_log_prob / self.config.calibration_temperature
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
