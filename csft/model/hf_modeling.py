"""A Hugging Face model class for csft's mean-pooling head, copied into exported folders.

`BertForSequenceClassification` pools with [CLS] → dense → tanh; csft's `pooling=mean`
averages the token vectors instead. An export with mean pooling ships this file and names
it in `config.auto_map`, so `AutoModelForSequenceClassification` and `pipeline` load it with
`trust_remote_code=True`. Its config has a model type of its own (`csft_bert_mean`), so
loading it *without* `trust_remote_code` is an error that asks for it, not a plain
`BertForSequenceClassification` with a random pooler that predicts nonsense.
It imports nothing from csft: the export stands alone.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel
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
