"""Config resolvers csft's YAML files use; registered by every entry point."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from csft.model.metrics import headline_metric, metric_mode
from csft.pretrained import packaged_minilm_dir


def sqlite_url(directory: str, name: str = "optuna.db") -> str:
    """`sqlite:///<directory>/<name>`, creating the directory (SQLite will not)."""
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / name}"


def sweep_direction(metric: str) -> str:
    """Optuna's word for `metric_mode`: minimize or maximize."""
    return f"{metric_mode(metric)}imize"


RESOLVERS = {
    "packaged_minilm": packaged_minilm_dir,  # ${packaged_minilm:}: the packaged MiniLM folder
    "sqlite_url": sqlite_url,  # ${sqlite_url:dir}: an SQLite URL for Optuna's study
    "monitor": headline_metric,  # ${monitor:${data.task}}: val/acc or val/mse
    "metric_mode": metric_mode,  # ${metric_mode:val/mse}: min or max
    "sweep_direction": sweep_direction,  # ${sweep_direction:val/acc}: maximize
}


def register_resolvers() -> None:
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
