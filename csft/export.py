"""Export a trained Classifier as a Hugging Face model folder that `pipeline` loads.

`pooling=cls` (the default) exports a plain `BertForSequenceClassification` (same pooler,
same head, same numbers): `pipeline("text-classification", model=dir)` loads it as it is.
`pooling=mean` exports the same weights with a small model class (`modeling_csft.py`, named
in `config.auto_map` under its own model type): it loads with `trust_remote_code=True`, and
without it transformers stops with an error asking for it. csft itself never imports that
file: it loads the weights into its own class for the recorded pooling.

The saved tokenizer encodes as training did: `model_max_length` is the run's
`data.max_length` and it truncates from the left (the latest turns survive). The run's
temperature (csft.model.calibration) is folded into the head, so every reader of the folder
gets calibrated scores; `csft.json` records it with the hand-off threshold, the task, the
pooling and the encoding settings, and `README.md` says how to call the model.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import torch
from omegaconf import DictConfig

import csft
from csft.console import quiet_libraries
from csft.data.encoding import Encoding
from csft.errors import ConfigError, CsftError, DataError
from csft.model import hf_modeling
from csft.model.calibration import Calibration

if TYPE_CHECKING:  # serving loads exports without importing Lightning
    from csft.model.classifier import Classifier

METADATA = "csft.json"
REMOTE_CODE = "modeling_csft.py"
MODEL_CARD = "README.md"
TOKENIZER_CONFIG = "tokenizer_config.json"
# What evaluation and deployment read from csft.json.
METADATA_KEYS = ("task", "pooling", "encoding")


def export_model(
    classifier: Classifier,
    tokenizer: Any,
    encoding: Encoding,
    out_dir: str | Path,
    calibration: Calibration | None = None,
    pair_task: bool = False,
    speaker_markers: dict[str, str] | None = None,
) -> Path:
    """Write weights, config (with id2label / label2id), tokenizer, csft.json and README.md.

    With a calibration, the head's weights and bias are divided by its temperature (the
    logits become logits / T; no argmax changes). The folder is written under a temporary
    name and moved into place at the end, so an earlier export is never left half
    overwritten.
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
        config = hf_modeling.CsftBertMeanConfig.from_dict(config.to_dict())
        config.architectures = ["CsftBertForSequenceClassification"]
        config.auto_map = {
            "AutoConfig": "modeling_csft.CsftBertMeanConfig",
            "AutoModelForSequenceClassification": "modeling_csft.CsftBertForSequenceClassification",
        }
        model = hf_modeling.CsftBertForSequenceClassification(config)
    model.bert.load_state_dict(encoder.state_dict())
    model.classifier.load_state_dict(classifier.head.classifier.state_dict())
    if calibration is not None:
        with torch.no_grad():
            model.classifier.weight /= calibration.temperature
            model.classifier.bias /= calibration.temperature

    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _encode_as_trained(staging / TOKENIZER_CONFIG, encoding)
    if classifier.pooling != "cls":
        shutil.copyfile(hf_modeling.__file__, staging / REMOTE_CODE)
    metadata = {
        "task": classifier.task,
        "pooling": classifier.pooling,
        "encoding": asdict(encoding),
        "pair_task": pair_task,
        "speaker_markers": dict(speaker_markers) if speaker_markers else None,
        "trust_remote_code": classifier.pooling != "cls",
        "calibration": calibration.to_dict() if calibration else None,
        "base_model": classifier.hparams.get("name_or_path"),
        "csft_version": csft.__version__,
    }
    return publish(staging, out_dir, metadata, config)


def publish(staging: Path, out_dir: Path, metadata: dict[str, Any], config: Any) -> Path:
    """Write csft.json and README.md into the staged folder, then move it to `out_dir` (an
    earlier export there is replaced only now, whole)."""
    (staging / METADATA).write_text(json.dumps(metadata, indent=2))
    (staging / MODEL_CARD).write_text(model_card(metadata, config))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def _encode_as_trained(path: Path, encoding: Encoding) -> None:
    """The saved tokenizer truncates like training: at data.max_length, from the left."""
    values = json.loads(path.read_text(encoding="utf-8"))
    values["model_max_length"] = encoding.max_length
    values["truncation_side"] = "left"
    path.write_text(json.dumps(values, indent=2, ensure_ascii=False))


def model_card(metadata: dict[str, Any], config: Any) -> str:
    """README.md of the folder: what it is and the calls that reproduce csft's encoding."""
    encoding = metadata["encoding"]
    trust = ", trust_remote_code=True" if metadata["trust_remote_code"] else ""
    lines = [
        "# csft export",
        "",
        f"Task: {metadata['task']}; pooling: {metadata['pooling']}; base model: "
        f"{metadata['base_model']}; csft {metadata['csft_version']}.",
        "",
        "```python",
        "from transformers import pipeline",
        f'classify = pipeline("text-classification", model="<this folder>"{trust})',
    ]
    separator = encoding["turn_separator"]
    if metadata["pair_task"]:
        lines += [
            "# pairs: the message (earlier turns first) and the reply, truncated from the left",
            f'text = "{separator}".join([*earlier_turns, message])',
            'classify({"text": text, "text_pair": reply}, truncation="only_first")',
        ]
    else:
        lines += [
            f"# earlier turns first, joined by {separator!r}; cut from the left at "
            f"{encoding['max_length']} tokens",
            f'classify("{separator}".join([*earlier_turns, message]), truncation=True)',
        ]
    lines += ["```", ""]
    lines += [
        "csft serves it as it is: `python -m csft.predict model_dir=<this folder> input=<file> "
        "output=<file>`, `python -m csft.serve model_dir=<this folder>`; "
        "`python -m csft.export run_dir=<this folder> format=onnx quantize=int8` adds "
        "`model.onnx` / `model.int8.onnx` (inputs input_ids, attention_mask, token_type_ids; "
        "output logits) for `backend=onnx|onnx-int8`.",
        "",
    ]
    if metadata["pooling"] == "ensemble":
        lines += [
            f"An ensemble of {len(metadata['members'])} csft runs: the output is the log of "
            "their mean calibrated probability, divided by the ensemble's own temperature. "
            "Each message costs one forward pass per member.",
            "",
        ]
    if metadata["trust_remote_code"]:
        architecture = "An ensemble" if metadata["pooling"] == "ensemble" else "Mean pooling"
        lines += [
            f"{architecture} is not a stock transformers architecture: this folder carries "
            f"`{REMOTE_CODE}` and loads only with `trust_remote_code=True` (read the file "
            "first). Without it transformers stops with an error. csft loads it without "
            "running that file: `python -m csft.predict model_dir=<this folder> ...`.",
            "",
        ]
    if metadata["pair_task"]:
        lines += [
            f"Replies longer than {encoding['max_response_length']} tokens were cut to that "
            "length in training; `pipeline` keeps them whole, `csft.predict` cuts them.",
            "",
        ]
    calibration = metadata.get("calibration")
    if calibration:
        lines += [
            f"Scores are calibrated (temperature {calibration['temperature']:.3f}, folded into "
            f"the {'output' if metadata['pooling'] == 'ensemble' else 'head'}). "
            f"Hand-off: answer when the top score is ≥ "
            f"{calibration['threshold']:.4f}, otherwise pass to a human; on validation that "
            f"answered {calibration['val_coverage']:.1%} of messages at "
            f"{calibration['val_accuracy']:.2%} accuracy (target "
            f"{calibration['target_accuracy']:.0%}).",
            "",
        ]
    if metadata["task"] == "regression":
        lines += [
            "The single output `score` is the predicted value (`function_to_apply=none`).",
            "",
        ]
    return "\n".join(lines)


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


def read_config(model_dir: Path) -> Any:
    """config.json as a BertConfig, read by csft so a broken file is one error naming it."""
    from transformers import BertConfig

    classes = {
        "bert": BertConfig,
        hf_modeling.CsftBertMeanConfig.model_type: hf_modeling.CsftBertMeanConfig,
        hf_modeling.CsftEnsembleConfig.model_type: hf_modeling.CsftEnsembleConfig,
    }
    path = model_dir / CONFIG
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found (every export has one).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot be read (not valid JSON?): {_one_line(err)}") from None
    if not isinstance(values, dict) or values.get("model_type") not in classes:
        raise DataError(f"{path}: not the config of a BERT model (csft exports are BERT).")
    try:
        return classes[values["model_type"]].from_dict(values)
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
        "ensemble": hf_modeling.CsftEnsembleForSequenceClassification,
    }
    pooling = read_metadata(model_dir).get("pooling")
    if pooling not in classes:
        raise DataError(
            f"{model_dir / METADATA}: pooling={pooling!r}; expected one of {sorted(classes)}."
        )
    config = read_config(model_dir)
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


@hydra.main(version_base="1.3", config_path="pkg://csft.conf", config_name="export")
def main(cfg: DictConfig) -> list[str]:
    """`python -m csft.export run_dir=<run> format=onnx [quantize=int8]`."""
    from csft.onnx_export import export_onnx

    quiet_libraries()
    try:
        if cfg.format != "onnx":
            raise ConfigError(
                f"format={cfg.format!r}: expected onnx (the run already wrote "
                "the Hugging Face folder)."
            )
        written = export_onnx(resolve_model_dir(cfg.run_dir), quantize=cfg.quantize)
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(f"wrote {path}")
    return [str(p) for p in written]


if __name__ == "__main__":
    main()
