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


CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def resolve_model_dir(path: str | Path) -> Path:
    """A run dir (holding model/) or an exported model folder."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / METADATA).is_file():
            return candidate
    raise ConfigError(f"run_dir={path}: neither it nor {path / 'model'} is a csft export.")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _read_config(model_dir: Path) -> Any:
    """config.json as a BertConfig, read by csft so a broken file is one error naming it."""
    from transformers import BertConfig

    path = model_dir / CONFIG
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found (every export has one).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot be read (not valid JSON?): {_one_line(err)}") from None
    if not isinstance(values, dict) or values.get("model_type") != "bert":
        raise DataError(f"{path}: not the config of a BERT model (csft exports are BERT).")
    try:
        return BertConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: not a usable BERT config: {_one_line(err)}") from None


def load_exported(model_dir: Path) -> Any:
    """The export's weights in csft's own model class for its pooling, in eval mode.

    The folder's `modeling_csft.py` (named in config.auto_map for `pipeline` users) is never
    imported: csft never executes code that a model folder brings with it. A missing,
    truncated or mismatched file is one DataError naming it, not a loader traceback.
    """
    from safetensors import SafetensorError
    from transformers import BertForSequenceClassification

    classes = {
        "cls": BertForSequenceClassification,
        "mean": hf_modeling.CsftBertForSequenceClassification,
    }
    pooling = read_metadata(model_dir).get("pooling")
    if pooling not in classes:
        raise DataError(
            f"{model_dir / METADATA}: pooling={pooling!r}; expected one of {sorted(classes)}."
        )
    config = _read_config(model_dir)
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise DataError(f"{weights}: not found (the export's weights).")
    try:
        model, info = classes[pooling].from_pretrained(
            model_dir, config=config, use_safetensors=True, output_loading_info=True
        )
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise DataError(
            f"{weights}: cannot be read (truncated or corrupt?): {_one_line(err)}"
        ) from None
    # A weights file that does not fit would otherwise leave layers randomly initialised.
    unfit = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if unfit:
        raise DataError(
            f"{weights}: does not fit {model_dir / CONFIG} with pooling={pooling} "
            f"(missing or mis-shaped: {', '.join(unfit[:5])})."
        )
    return model.eval()
