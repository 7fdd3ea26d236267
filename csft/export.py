"""Export a trained Classifier as a Hugging Face model folder that `pipeline` loads.

`pooling=cls` exports a plain `BertForSequenceClassification` (same pooler, same head, same
numbers). `pooling=mean` exports the same weights with a small model class
(`modeling_csft.py`, named in `config.auto_map`; load with `trust_remote_code=True`).
`csft.json` beside it records what evaluation needs: task, pooling and encoding settings.
csft itself never imports that file: `csft.evaluate` loads the weights into csft's own
class for the recorded pooling.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from csft.data.encoding import Encoding
from csft.errors import ConfigError, DataError
from csft.model import hf_modeling
from csft.model.classifier import Classifier

METADATA = "csft.json"
REMOTE_CODE = "modeling_csft.py"
# What evaluation and deployment read from csft.json.
METADATA_KEYS = ("task", "pooling", "encoding")


def export_model(
    classifier: Classifier, tokenizer: Any, encoding: Encoding, out_dir: str | Path
) -> Path:
    """Write weights, config (with id2label / label2id), tokenizer and csft.json to out_dir.

    The folder is written under a temporary name and moved into place at the end, so an
    earlier export is never left half overwritten.
    """
    from transformers import AutoModelForSequenceClassification

    encoder = classifier.encoder
    if encoder.config.model_type != "bert":
        raise ConfigError(
            f"export supports BERT-family encoders; this one is {encoder.config.model_type!r}."
        )
    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    num_outputs = classifier.head.classifier.out_features
    config.num_labels = num_outputs
    id2label = classifier.hparams.id2label
    if classifier.task == "regression":
        config.problem_type = "regression"
        config.id2label, config.label2id = {0: "score"}, {"score": 0}
    else:
        config.problem_type = "single_label_classification"
        config.id2label = {int(i): name for i, name in id2label.items()}
        config.label2id = {name: int(i) for i, name in id2label.items()}
    config.classifier_dropout = classifier.head.dropout.p
    if classifier.pooling == "cls":
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        config.architectures = ["CsftBertForSequenceClassification"]
        config.auto_map = {
            "AutoModelForSequenceClassification": "modeling_csft.CsftBertForSequenceClassification"
        }
        model = hf_modeling.CsftBertForSequenceClassification(config)
    model.bert.load_state_dict(encoder.state_dict())
    model.classifier.load_state_dict(classifier.head.classifier.state_dict())

    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if classifier.pooling != "cls":
        shutil.copyfile(hf_modeling.__file__, staging / REMOTE_CODE)
    metadata = {
        "task": classifier.task,
        "pooling": classifier.pooling,
        "encoding": asdict(encoding),
        "trust_remote_code": classifier.pooling != "cls",
    }
    (staging / METADATA).write_text(json.dumps(metadata, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    """csft.json; a broken one is one DataError naming it, not a JSON traceback."""
    path = Path(model_dir) / METADATA
    if not path.is_file():
        raise ConfigError(f"{model_dir}: not a csft export (no {METADATA}).")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot be read (not valid JSON?): {err}") from None
    missing = [k for k in METADATA_KEYS if not isinstance(metadata, dict) or k not in metadata]
    if missing:
        raise DataError(f"{path}: not csft export metadata (no {', '.join(missing)}).")
    return metadata
