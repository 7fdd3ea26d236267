"""ONNX export of a csft model folder, and the onnxruntime session that serves it.

The whole classifier (encoder, pooling, head) becomes one graph with dynamic batch and
length: `model.onnx` (fp32) and, with quantize=int8, `model.int8.onnx` (onnxruntime's
dynamic quantization), written next to the Hugging Face files and recorded in the folder's
csft.json under "onnx". Serving them (`load_session`, `run_session`) imports neither torch
nor csft's model code.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from csft.errors import ConfigError

# Backend name → file inside the model folder.
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
QUANTIZE = ("int8",)
# Dynamic int8 quantization with one scale per output channel of each weight matrix: one
# outlier column of a BERT projection no longer sets the scale of all the others.
# reduce_range stays off (full 8-bit weights); it only helps CPUs without VNNI instructions.
INT8_OPTIONS: dict[str, Any] = {"per_channel": True, "reduce_range": False}


def _require(*names: str) -> None:
    """onnx, onnxscript (the exporter) and onnxruntime are optional: say how to get them."""
    for name in names:
        try:
            __import__(name)
        except ImportError:
            raise ConfigError(f"ONNX needs the package {name}: pip install 'csft[onnx]'.") from None


def export_onnx(model_dir: str | Path, quantize: str | None = None) -> list[Path]:
    """Write model.onnx (and model.int8.onnx with quantize="int8"); return the paths.

    Each graph is written under a temporary name and renamed only once all are complete,
    so a failed export never leaves a half-written model.onnx. A model.int8.onnx left from
    an earlier export is removed when quantize is None: it would no longer match model.onnx.
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(
            f"quantize={quantize!r}: expected one of {', '.join(QUANTIZE)} or null (fp32 only)."
        )
    _require("onnx", "onnxscript", "onnxruntime")
    from csft.export import read_metadata

    model_dir = Path(model_dir)
    read_metadata(model_dir)  # a folder that is not a csft export fails here, by name
    targets = {"onnx": model_dir / ONNX_FILES["onnx"]}
    if quantize == "int8":
        targets["onnx-int8"] = model_dir / ONNX_FILES["onnx-int8"]
    partial = {name: path.with_name(path.name + ".partial") for name, path in targets.items()}
    try:
        opset = _export_fp32(model_dir, partial["onnx"])
        if "onnx-int8" in partial:
            _quantize_int8(partial["onnx"], partial["onnx-int8"])
        for name, path in targets.items():
            partial[name].replace(path)
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    if quantize is None:
        (model_dir / ONNX_FILES["onnx-int8"]).unlink(missing_ok=True)
    _record(model_dir, targets, opset)
    return list(targets.values())


def _export_fp32(model_dir: Path, path: Path) -> int:
    """torch.export (dynamo) of the eval-mode model; returns the graph's opset."""
    import onnx
    import torch

    from csft.export import load_exported

    class Logits(torch.nn.Module):
        """The Hugging Face model as a function of the three id tensors to its logits."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits

    # Both the wrapper and the model in eval mode: export must not switch dropout on.
    wrapper = Logits(load_exported(model_dir)).eval()
    # Example ids: batch and length above 1 and different, so neither is fixed as a constant.
    input_ids = torch.ones((2, 7), dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("length")}
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (input_ids, attention_mask, token_type_ids),
            str(path),
            dynamo=True,
            external_data=False,  # one self-contained file (MiniLM is far below 2 GB)
            verbose=False,
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_shapes={name: dims for name in INPUTS},
        )
    graph = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Mute the exporter's known chatter (torchvision-missing notes, axis-renaming and
    pytree deprecation warnings) for the duration of the export; errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
            yield
    finally:
        logger.setLevel(level)


def _quantize_int8(fp32: Path, int8: Path) -> None:
    """onnxruntime's dynamic quantization: int8 weights, activations quantized per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It advises shape pre-processing on the root logger; on MiniLM that changed nothing
    # measurable (same accuracy and logit error on 1024 Banking77 rows): drop that note.
    advice = _DropMessage("Please consider to run pre-processing before quantization")
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, **INT8_OPTIONS)
    finally:
        logging.getLogger().removeFilter(advice)


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _record(model_dir: Path, targets: dict[str, Path], opset: int) -> None:
    """Add "onnx" to csft.json (every other key kept), replacing the file atomically."""
    import onnxruntime
    import torch

    from csft.export import METADATA

    path = model_dir / METADATA
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata["onnx"] = {
        "files": {name: p.name for name, p in targets.items()},
        "opset": opset,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "quantization": (
            {"method": "dynamic", "weight_type": "QInt8", **INT8_OPTIONS}
            if "onnx-int8" in targets
            else None
        ),
    }
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    staging.replace(path)


def export_command(model_dir: str | Path, backend: str) -> str:
    """The command line that writes the file `backend` needs."""
    command = f"python -m csft.export run_dir={model_dir} format=onnx"
    return command + (" quantize=int8" if backend == "onnx-int8" else "")


def load_session(model_dir: str | Path, backend: str = "onnx", threads: int | None = None) -> Any:
    """An onnxruntime InferenceSession (CPU) on the folder's graph for `backend`."""
    if backend not in ONNX_FILES:
        raise ConfigError(f"backend={backend!r}: expected one of {', '.join(ONNX_FILES)}.")
    _require("onnxruntime")  # serving needs only the runtime
    import onnxruntime

    path = Path(model_dir) / ONNX_FILES[backend]
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found (backend={backend}); write it with: "
            f"{export_command(model_dir, backend)}"
        )
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_session(session: Any, batch: Mapping[str, Any]) -> np.ndarray:
    """float32 logits [batch, num_labels] for a batch of torch tensors or numpy arrays.

    Only the graph's own inputs are fed (a collated batch also holds labels and index).
    """
    feed = {
        node.name: np.asarray(batch[node.name], dtype=np.int64) for node in session.get_inputs()
    }
    (logits,) = session.run(["logits"], feed)
    return np.asarray(logits, dtype=np.float32)
