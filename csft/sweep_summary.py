"""Summaries of a Hydra multirun sweep: one row per job, a Markdown/CSV table and a plot.

A sweep is read from what its jobs left on disk (`.hydra/`, `metrics.json`, `failed.json`),
so a sweep can be summarised while it is still running, or long after, without its logs.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Hashable, Iterable
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from csft.errors import DataError
from csft.model.metrics import metric_mode
from csft.resolvers import register_resolvers

OK, FAILED, RUNNING = "ok", "failed", "running"
FAILURE_RECORD = "failed.json"


def record_failure(job_dir: Path, err: BaseException) -> None:
    """What a failed sweep job leaves for the summary (its traceback goes to the job's log)."""
    failure = {"type": type(err).__name__, "error": str(err)}
    (job_dir / FAILURE_RECORD).write_text(json.dumps(failure, indent=2))


SCORE = "best_score"
RUN_KEYS = ("best_score", "fit_seconds", "epochs")
METRIC_PREFIXES = ("val/", "test/")
MAX_LINES = 8  # a swept key with more values than this is not drawn as one line each
SUMMARY_FILES = {"md": "summary.md", "csv": "summary.csv", "png": "summary.png"}


def _parse_override(text: str) -> tuple[str, Any]:
    """(key, value) of one `key=value` override, the value typed the way Hydra types it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(text)
    except Exception:  # Hydra wrote it, so this is rare; keep the raw text rather than fail
        key, _, value = text.lstrip("+~").partition("=")
        return key, _number_or_text(value)
    key = override.key_or_group
    if override.package:
        key = f"{key}@{override.package}"
    if override.is_sweep_override():
        return key, override.get_value_element_as_str()
    value = override.value()
    if isinstance(value, str):
        return key, _number_or_text(value)
    if isinstance(value, (list, dict)):  # keep cells hashable, so swept keys can be found
        return key, override.get_value_element_as_str()
    return key, value


def _number_or_text(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _read_yaml_list(path: Path) -> list[str]:
    if not path.is_file():
        return []
    loaded = OmegaConf.to_container(OmegaConf.load(path))
    return [str(item) for item in loaded] if isinstance(loaded, list) else []


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read it as JSON ({err}).") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(loaded).__name__}.")
    return loaded


def _config_value(job_dirs: Iterable[Path], key: str) -> Any:
    """`key` from the first job config that has it (all jobs of a sweep share the objective)."""
    for job_dir in job_dirs:
        path = job_dir / ".hydra" / "config.yaml"
        if not path.is_file():
            continue
        value = OmegaConf.select(
            OmegaConf.load(path), key, default=None, throw_on_resolution_failure=False
        )
        if value is not None:
            return value
    return None


def _job_dirs(sweep_dir: Path) -> list[Path]:
    if not sweep_dir.is_dir():
        raise DataError(f"{sweep_dir}: no such sweep directory.")
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not jobs:
        raise DataError(
            f"{sweep_dir}: no job directories (0/, 1/, ...); is it a Hydra multirun "
            f"directory (outputs/train/multiruns/<time>)?"
        )
    return sorted(jobs, key=lambda p: int(p.name))


def _job_row(job_dir: Path) -> dict[str, Any]:
    """What one job left behind; a failure newer than the metrics wins (a re-run job)."""
    row: dict[str, Any] = {"job": int(job_dir.name)}
    overrides = _read_yaml_list(job_dir / ".hydra" / "overrides.yaml")
    for text in overrides:
        key, value = _parse_override(text)
        row[key] = value
    metrics, failed = job_dir / "metrics.json", job_dir / FAILURE_RECORD
    newest_failed = failed.is_file() and (
        not metrics.is_file() or failed.stat().st_mtime >= metrics.stat().st_mtime
    )
    if newest_failed:
        info = _read_json(failed)
        kind, message = info.get("type"), str(info.get("error", ""))
        row |= {"status": FAILED, "error": f"{kind}: {message}" if kind else message}
    elif metrics.is_file():
        values = _read_json(metrics)
        row["status"] = OK
        row |= {
            key: value
            for key, value in values.items()
            if key.startswith(METRIC_PREFIXES) or key in RUN_KEYS
        }
    else:
        row["status"] = RUNNING
    row["overrides"] = shlex.join(overrides)
    return row


def swept_keys(frame: pd.DataFrame) -> list[str]:
    """Override keys that a sweep varies: from multirun.yaml, else those differing across jobs."""
    if "swept_keys" in frame.attrs:
        return list(frame.attrs["swept_keys"])
    return [key for key in _override_columns(frame) if _distinct(frame[key]) > 1]


def _override_columns(frame: pd.DataFrame) -> list[str]:
    if "override_keys" in frame.attrs:
        return [k for k in frame.attrs["override_keys"] if k in frame.columns]
    fixed = {"job", "status", "error", "overrides", *RUN_KEYS}
    return [c for c in frame.columns if c not in fixed and not str(c).startswith(METRIC_PREFIXES)]


def _distinct(column: pd.Series) -> int:
    return len({_hashable(v) for v in column})


def _hashable(value: Any) -> Hashable:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, Hashable) else repr(value)


def _declared_sweeps(sweep_dir: Path) -> list[str]:
    """Keys multirun.yaml sweeps: `a,b` / `range(...)` overrides, then `hydra.sweeper.params`."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = OmegaConf.load(path)
    keys: list[str] = []
    for text in OmegaConf.select(config, "hydra.overrides.task", default=None) or []:
        try:
            override = OverridesParser.create().parse_override(str(text))
        except Exception:
            continue
        if override.is_sweep_override():
            key = override.key_or_group
            keys.append(f"{key}@{override.package}" if override.package else key)
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)  # e.g. Optuna's
    if isinstance(params, DictConfig):
        keys += [str(key) for key in params if str(key) not in keys]
    return keys


def collect_jobs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per job of a multirun dir, best first (failed, then running jobs last).

    Columns: job, status, one per override key (typed), the val/ and test/ metrics,
    best_score, fit_seconds, epochs, error, and overrides (the job's command line).
    `frame.attrs` records the sweep dir, swept keys, optimized metric and its direction.
    """
    register_resolvers()  # the saved configs' ${monitor:...} and ${packaged_minilm:}
    sweep_dir = Path(sweep_dir)
    job_dirs = _job_dirs(sweep_dir)
    rows = [_job_row(job_dir) for job_dir in job_dirs]
    metric = _config_value(job_dirs, "optimized_metric")
    mode = metric_mode(str(metric)) if metric else "max"

    override_keys: list[str] = []
    metric_keys: list[str] = []
    for row in rows:
        for key in row:
            if key in {"job", "status", "error", "overrides"} or key in RUN_KEYS:
                continue
            target = metric_keys if key.startswith(METRIC_PREFIXES) else override_keys
            if key not in target:
                target.append(key)
    metric_keys = sorted(metric_keys, key=lambda k: (not k.startswith("val/"), k))
    columns = ["job", "status", *override_keys, SCORE, *metric_keys, "fit_seconds", "epochs"]
    frame = pd.DataFrame(rows).reindex(columns=[*columns, "error", "overrides"])
    for key in [SCORE, *metric_keys, "fit_seconds", "epochs"]:
        frame[key] = pd.to_numeric(frame[key], errors="coerce")  # "nan" strings → NaN
    frame["error"] = frame["error"].astype(object).where(frame["status"] == FAILED, None)

    # ok jobs by score (best first, unscored last), then failed, then running; ties by job.
    sort_keys = pd.DataFrame(
        {
            "rank": frame["status"].map({OK: 0, FAILED: 1, RUNNING: 2}),
            "score": -frame[SCORE] if mode == "max" else frame[SCORE],
            "job": frame["job"],
        }
    )
    order = sort_keys.sort_values(["rank", "score", "job"], na_position="last").index
    frame = frame.loc[order].reset_index(drop=True)

    by_jobs = [key for key in override_keys if _distinct(frame[key]) > 1]
    declared = [key for key in _declared_sweeps(sweep_dir) if key in override_keys]
    frame.attrs.update(
        sweep_dir=str(sweep_dir),
        mode=mode,
        optimized_metric=None if metric is None else str(metric),
        override_keys=override_keys,
        swept_keys=declared + [key for key in by_jobs if key not in declared],
    )
    return frame


def _format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_columns(frame: pd.DataFrame) -> list[str]:
    """job, status, swept keys, best_score, test metrics, fit_seconds (and error, if any)."""
    tests = [c for c in frame.columns if str(c).startswith("test/")]
    columns = ["job", "status", *swept_keys(frame), SCORE, *tests, "fit_seconds"]
    if "error" in frame.columns and frame["error"].notna().any():
        columns.append("error")
    return [c for c in columns if c in frame.columns]


def markdown_table(frame: pd.DataFrame) -> str:
    """The sweep as a Markdown table, floats to 4 significant digits."""
    columns = markdown_columns(frame)
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---:" if _is_numeric(frame[c]) else "---" for c in columns) + " |",
    ]
    for _, row in frame[columns].iterrows():
        lines.append("| " + " | ".join(_format_cell(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _is_numeric(column: pd.Series) -> bool:
    values = [v for v in column if _hashable(v) is not None]
    return bool(values) and all(isinstance(v, Real) and not isinstance(v, bool) for v in values)


def plot_summary(frame: pd.DataFrame, path: str | Path) -> Path:
    """best_score against a numeric swept key, one line per value of the other swept keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    path = Path(path)
    done = frame[(frame["status"] == OK) & frame[SCORE].notna()]
    swept = swept_keys(frame)
    numeric = [k for k in swept if _is_numeric(done[k])]
    # x: the numeric key with the most values (e.g. the learning rate); else a categorical one.
    x_key = max(numeric or swept, key=lambda k: _distinct(done[k]), default=None)
    # One line per value of the other keys, unless they are continuous (Optuna samples a new
    # value per job): those are left out, and the points are not joined into lines.
    line_keys = [
        k
        for k in swept
        if k != x_key and (k not in numeric or _distinct(done[k]) < min(len(done), MAX_LINES + 1))
    ]
    grid = len(line_keys) == len(swept) - (x_key is not None)
    metric = frame.attrs.get("optimized_metric")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if done.empty:
        ax.text(0.5, 0.5, "no finished jobs yet", ha="center", va="center")
        ax.set_axis_off()
    else:
        x_key = x_key or "job"
        groups = done.groupby(line_keys, dropna=False, sort=True) if line_keys else [((), done)]
        categorical = not _is_numeric(done[x_key])
        positions = {v: i for i, v in enumerate(dict.fromkeys(map(str, done[x_key])))}
        for values, group in groups:
            values = values if isinstance(values, tuple) else (values,)
            label = ", ".join(
                f"{k}={_format_cell(v)}" for k, v in zip(line_keys, values, strict=True)
            )
            if categorical:
                group = group.assign(_x=[positions[str(v)] for v in group[x_key]])
            else:
                group = group.assign(_x=group[x_key].astype(float))
            group = group.sort_values("_x")
            style = "-" if grid and not categorical else "none"  # no slope between categories
            ax.plot(group["_x"], group[SCORE], marker="o", linestyle=style, label=label or None)
        if categorical:
            ax.set_xticks(list(positions.values()), list(positions))
        else:
            xs = done[x_key].astype(float).dropna()
            if (xs > 0).all() and xs.max() / xs.min() > 10:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # labels at decades only
            ticks = sorted(set(xs))
            if len(ticks) <= 8:  # a grid sweep: label exactly the values tried
                ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
                ax.minorticks_off()
        ax.set_xlabel(x_key)
        ax.set_ylabel(f"{SCORE} ({metric})" if metric else SCORE)
        mode = frame.attrs.get("mode", "max")
        ax.set_title(f"{Path(frame.attrs.get('sweep_dir', '')).name or 'sweep'} ({mode} is best)")
        if line_keys:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_summary(frame: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write summary.md, summary.csv and summary.png to out_dir; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, name in SUMMARY_FILES.items()}
    paths["md"].write_text(markdown_table(frame) + "\n")
    frame.to_csv(paths["csv"], index=False)
    plot_summary(frame, paths["png"])
    return paths


def summarize(sweep_dir: str | Path, out_dir: str | Path | None = None) -> pd.DataFrame:
    """collect_jobs + write_summary (into the sweep dir by default); paths in attrs["paths"]."""
    frame = collect_jobs(sweep_dir)
    paths = write_summary(frame, sweep_dir if out_dir is None else out_dir)
    frame.attrs["paths"] = {kind: str(path) for kind, path in paths.items()}
    return frame


def reproduce_command(frame: pd.DataFrame, row: int = 0) -> str:
    """The `python -m csft.train ...` command that re-runs one row's job (default: the best)."""
    return f"python -m csft.train {frame['overrides'].iloc[row]}".rstrip()
