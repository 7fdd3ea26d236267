"""Config resolvers csft's YAML files use; registered by every entry point."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from csft.pretrained import packaged_minilm_dir


def sqlite_url(directory: str, name: str = "optuna.db") -> str:
    """`sqlite:///<directory>/<name>`, creating the directory (SQLite will not)."""
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / name}"


def register_resolvers() -> None:
    """`${packaged_minilm:}`: the packaged MiniLM folder; `${sqlite_url:dir}`: an SQLite URL."""
    if not OmegaConf.has_resolver("packaged_minilm"):
        OmegaConf.register_new_resolver("packaged_minilm", packaged_minilm_dir)
    if not OmegaConf.has_resolver("sqlite_url"):
        OmegaConf.register_new_resolver("sqlite_url", sqlite_url)
