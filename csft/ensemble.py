"""Several runs of one recipe exported as one model: their calibrated probabilities averaged.

    python -m csft.ensemble runs=[<run>,<run>,<run>]

Seeds of one recipe disagree on the hard messages; averaging their probabilities is the
oldest way to buy accuracy with inference time (k members cost k forward passes). The
members must share labels, task, encoding and tokenizer, and were validated on the same rows
(train them with one `data.seed` and different `seed`s): the ensemble's own temperature and
hand-off threshold are fitted there, as a run's are. The folder is a csft export like any
other (`csft.predict`, `csft.serve`, `csft.evaluate`, ONNX; `pipeline` with
`trust_remote_code=True`), and the run scores it on the members' test split.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

import csft
from csft.console import quiet_libraries
from csft.errors import ConfigError, CsftError
from csft.export import (
    METADATA,
    REMOTE_CODE,
    load_exported,
    publish,
    read_config,
    read_metadata,
    resolve_model_dir,
)
from csft.model import hf_modeling
from csft.model.calibration import calibrate

# What every member must share with the first, from csft.json.
SHARED_METADATA = ("task", "encoding", "pair_task", "speaker_markers")


def member_dirs(runs: list[str]) -> list[Path]:
    """Each run's export folder; at least two distinct runs, each a training run dir."""
    runs = [str(r) for r in runs]
    if len(set(runs)) < 2:
        raise ConfigError(f"runs={runs}: an ensemble needs at least two different runs.")
    for run in runs:
        if not (Path(run) / ".hydra" / "config.yaml").is_file():
            raise ConfigError(
                f"runs: {run} is not a csft.train run directory (no .hydra/config.yaml): "
                "the ensemble is calibrated on the members' validation rows."
            )
    return [resolve_model_dir(run) for run in runs]


def check_members(model_dirs: list[Path]) -> list[dict[str, Any]]:
    """The members' metadata; a ConfigError naming the first member that differs."""
    metadata = [read_metadata(d) for d in model_dirs]
    for model_dir, meta in zip(model_dirs, metadata, strict=True):
        if meta.get("pooling") == "ensemble":
            raise ConfigError(f"{model_dir}: is an ensemble already; name its member runs.")
    first, first_config = metadata[0], read_config(model_dirs[0])
    if first["task"] != "classification":
        raise ConfigError(
            f"{model_dirs[0]}: ensembles average class probabilities; task is {first['task']}."
        )
    for model_dir, meta in zip(model_dirs[1:], metadata[1:], strict=True):
        for key in SHARED_METADATA:
            if meta.get(key) != first.get(key):
                raise ConfigError(
                    f"{model_dir}: {key} differs from {model_dirs[0]} "
                    f"({meta.get(key)!r} against {first.get(key)!r})."
                )
        config = read_config(model_dir)
        if dict(config.id2label) != dict(first_config.id2label):
            raise ConfigError(f"{model_dir}: its labels differ from {model_dirs[0]}'s.")
        if config.vocab_size != first_config.vocab_size:
            raise ConfigError(
                f"{model_dir}: its vocabulary differs from {model_dirs[0]}'s in size."
            )
    return metadata


def validation_rows(runs: list[str]) -> list[Any]:
    """The members' shared validation rows; a ConfigError when they differ."""
    from csft.data.pseudo_labels import load_run_datamodule

    first = None
    for run in runs:
        val = load_run_datamodule(run).sampled_splits()["val"]
        if first is None:
            first = val
        elif [e.source for e in val] != [e.source for e in first]:
            raise ConfigError(
                f"{run}: validated on other rows than {runs[0]}. Train the members with one "
                "data.seed (e.g. data.seed=42 seed=1,2,3), so no member trained on the rows "
                "the ensemble is calibrated on."
            )
    if not first:
        raise ConfigError(f"{runs[0]}: has no validation rows to calibrate the ensemble on.")
    return first


def build_ensemble(
    runs: list[str], out_dir: str | Path, target_accuracy: float | None = None
) -> Path:
    """Write the ensemble export to `out_dir` (staged, moved into place at the end)."""
    from transformers import AutoTokenizer

    from csft.inference import Predictor

    model_dirs = member_dirs(runs)
    metadata = check_members(model_dirs)
    val = validation_rows(runs)
    first = metadata[0]
    members = [load_exported(d) for d in model_dirs]
    config = hf_modeling.CsftEnsembleConfig(
        members=[
            {"pooling": meta["pooling"], "config": member.config.to_dict()}
            for meta, member in zip(metadata, members, strict=True)
        ],
        id2label=dict(members[0].config.id2label),
        label2id=dict(members[0].config.label2id),
        problem_type="single_label_classification",
        architectures=["CsftEnsembleForSequenceClassification"],
        auto_map={
            "AutoConfig": "modeling_csft.CsftEnsembleConfig",
            "AutoModelForSequenceClassification": (
                "modeling_csft.CsftEnsembleForSequenceClassification"
            ),
        },
    )
    model = hf_modeling.CsftEnsembleForSequenceClassification(config)
    for slot, member in zip(model.members, members, strict=True):
        slot.load_state_dict(member.state_dict())

    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    # The members' tokenizer files, as their runs saved them (left truncation, max length).
    # trust_remote_code=False: a mean-pooling member names its own config class (auto_map);
    # without the flag transformers would stop and ask on stdin.
    AutoTokenizer.from_pretrained(model_dirs[0], trust_remote_code=False).save_pretrained(staging)
    shutil.copyfile(model_dirs[0] / "tokenizer_config.json", staging / "tokenizer_config.json")
    shutil.copyfile(hf_modeling.__file__, staging / REMOTE_CODE)
    meta = {
        "task": first["task"],
        "pooling": "ensemble",
        "encoding": first["encoding"],
        "pair_task": first.get("pair_task", False),
        "speaker_markers": first.get("speaker_markers"),
        "trust_remote_code": True,
        "calibration": None,
        "base_model": first.get("base_model"),
        "members": [str(d.resolve()) for d in model_dirs],
        "csft_version": csft.__version__,
    }
    (staging / METADATA).write_text(json.dumps(meta, indent=2))

    # Temperature and hand-off threshold on the shared validation rows, as a run fits its own.
    if target_accuracy is None:
        target_accuracy = (first.get("calibration") or {}).get("target_accuracy", 0.98)
    predictor = Predictor.load(staging)
    logits = torch.from_numpy(predictor.logits(val)).double()
    labels = torch.tensor([config.label2id[str(e.label)] for e in val])
    calibration = calibrate(logits, labels, target_accuracy)
    config.calibration_temperature = calibration.temperature
    config.save_pretrained(staging)
    meta["calibration"] = calibration.to_dict()
    meta["val_acc"] = round(float((logits.argmax(-1) == labels).double().mean()), 6)
    return publish(staging, out_dir, meta, config)


@hydra.main(version_base="1.3", config_path="pkg://csft.conf", config_name="ensemble")
def main(cfg: DictConfig) -> dict[str, Any]:
    """`python -m csft.ensemble runs=[<run>,<run>,...] [report=true]`."""
    from csft.evaluate import evaluate, run_data_config
    from csft.instantiation import instantiate_unwrapping_errors

    quiet_libraries()
    out = Path(cfg.paths.output_dir)
    try:
        runs = list(cfg.runs)
        model_dir = build_ensemble(runs, out / "model", cfg.target_accuracy)
        metadata = read_metadata(model_dir)
        results: dict[str, Any] = {"members": runs, **metadata}
        if cfg.report:
            data = run_data_config(Path(runs[0]), cfg.paths)
            datamodule = instantiate_unwrapping_errors(
                data, tokenizer=str(model_dir), task=metadata["task"], **metadata["encoding"]
            )
            results |= evaluate(model_dir, datamodule, "test", out / "evaluation")
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        sys.exit(2)
    summary = {k: results[k] for k in ("val_acc", "test/acc", "test/f1_macro") if k in results}
    (out / "ensemble.json").write_text(json.dumps({"members": runs, **summary}, indent=2))
    for key, value in summary.items():
        print(f"{key:<16} {value}")
    print(f"wrote {model_dir}")
    return results


if __name__ == "__main__":
    main()
