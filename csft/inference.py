"""Predictions from an exported model folder: the one path `csft.predict` and `csft.serve` use.

A `Predictor` reads the folder (never running code shipped in it), encodes inputs exactly as
training did (csft's own `encode`: left truncation, context turns, reply caps), batches
rows of similar length together, runs one backend (torch, ONNX fp32 or ONNX int8) and
returns, per input, the label, its calibrated confidence, the top-k and whether to hand the
message to a human (the run's threshold, csft.json "calibration"). Regression: the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import csft
from csft.data.collate import PadCollator
from csft.data.encoding import Encoding, encode
from csft.data.example import REGRESSION, Example
from csft.errors import ConfigError, DataError
from csft.export import load_exported, read_config, read_metadata, resolve_model_dir

BACKENDS = ("torch", "onnx", "onnx-int8")


@dataclass
class Predictor:
    """An export ready to predict. Build it with `Predictor.load(model_dir, backend=...)`."""

    model_dir: Path
    backend: str
    metadata: dict[str, Any]
    labels: list[str]
    tokenizer: Any
    encoding: Encoding
    run_batch: Any = field(repr=False)
    top_k: int = 3
    threshold: float | None = None

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        backend: str = "torch",
        threads: int | None = None,
        top_k: int = 3,
        threshold: float | None = None,
    ) -> Predictor:
        """`threshold` overrides the run's hand-off threshold (None: the run's own)."""
        from transformers import AutoTokenizer

        if backend not in BACKENDS:
            raise ConfigError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}.")
        if top_k < 1:
            raise ConfigError(f"top_k={top_k}: expected at least 1.")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold={threshold}: expected a confidence in [0, 1].")
        model_dir = resolve_model_dir(model_dir)
        metadata = read_metadata(model_dir)
        if threads:
            torch.set_num_threads(threads)
        if backend == "torch":
            model = load_exported(model_dir)
            config = model.config
            run_batch = _torch_runner(model)
        else:
            from csft.onnx_export import load_session, run_session

            session = load_session(model_dir, backend, threads)
            config = read_config(model_dir)
            run_batch = lambda batch: run_session(session, batch)  # noqa: E731
        try:
            # trust_remote_code=False: a mean-pooling export names its own config class
            # (auto_map); without the flag transformers would stop and ask on stdin.
            tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{model_dir}: the tokenizer cannot be loaded: {err}") from None
        if metadata["task"] == REGRESSION:
            labels = ["score"]
        else:
            labels = [config.id2label[i] for i in range(config.num_labels)]
        calibration = metadata.get("calibration") or {}
        if threshold is None:
            threshold = calibration.get("threshold")
        return cls(
            model_dir=model_dir,
            backend=backend,
            metadata=metadata,
            labels=labels,
            tokenizer=tokenizer,
            encoding=Encoding(**metadata["encoding"]),
            run_batch=run_batch,
            top_k=min(top_k, len(labels)),
            threshold=threshold,
        )

    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def pair_task(self) -> bool:
        return bool(self.metadata.get("pair_task"))

    def describe(self) -> dict[str, Any]:
        """What /metadata serves: task, labels, threshold, versions."""
        calibration = self.metadata.get("calibration") or {}
        return {
            "task": self.task,
            "labels": self.labels if self.task != REGRESSION else [],
            "pair_task": self.pair_task,
            "handoff_threshold": self.threshold,
            "target_accuracy": calibration.get("target_accuracy"),
            "temperature": calibration.get("temperature"),
            "max_length": self.encoding.max_length,
            "backend": self.backend,
            "model_dir": str(self.model_dir),
            "base_model": self.metadata.get("base_model"),
            "model_csft_version": self.metadata.get("csft_version"),
            "csft_version": csft.__version__,
        }

    def check(self, example: Example) -> None:
        """Inputs the model cannot take as trained: a DataError naming `example.source`."""
        where = example.source or "input"
        if not isinstance(example.text, str) or not example.text.strip():
            raise DataError(f"{where}: the text is empty.")
        if self.pair_task and not example.response:
            raise DataError(f"{where}: this model scores (message, reply) pairs: give a response.")
        if not self.pair_task and example.response is not None:
            raise DataError(f"{where}: this model takes no response (it is not a pair model).")

    def logits(self, examples: Sequence[Example], batch_size: int = 64) -> np.ndarray:
        """Calibrated logits (float32, [rows, outputs]) in input order; a DataError for an
        input the model cannot take (`check`)."""
        if not examples:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        for example in examples:  # inputs encoded as training never did would score silently
            self.check(example)
        rows = encode(examples, self.tokenizer, self.encoding)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        collate = PadCollator(self.tokenizer.pad_token_id)
        out = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([{**rows[i], "index": i} for i in chunk])
            out[chunk] = np.asarray(self.run_batch(batch), dtype=np.float32).reshape(len(chunk), -1)
        return out

    def predict(self, examples: Sequence[Example], batch_size: int = 64) -> list[dict[str, Any]]:
        """One dict per example: label, confidence, top_k, handoff (regression: score)."""
        logits = self.logits(examples, batch_size)
        if self.task == REGRESSION:
            return [{"score": round(float(v), 6)} for v in logits[:, 0]]
        probs = torch.from_numpy(logits).double().softmax(-1)
        top = probs.topk(self.top_k, dim=-1)
        threshold = 0.0 if self.threshold is None else self.threshold
        results = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            results.append(
                {
                    "label": self.labels[indices[0]],
                    "confidence": round(values[0], 6),
                    "top_k": [
                        {"label": self.labels[i], "score": round(v, 6)}
                        for v, i in zip(values, indices, strict=True)
                    ],
                    "handoff": values[0] < threshold,
                }
            )
        return results


def _torch_runner(model: Any) -> Any:
    inputs = ("input_ids", "attention_mask", "token_type_ids")

    @torch.inference_mode()
    def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
        return model(**{k: batch[k] for k in inputs}).logits.float().numpy()

    return run
