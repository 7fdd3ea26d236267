"""Learning curve: test accuracy and macro-F1 against the train rows per class (few-shot K).

    python scripts/learning_curve.py [--shots 5,10,20,50,full] [--seeds 0,1,2]
        [--out docs/learning_curve] [--runs DIR] [--python PYTHON] [--from-runs]
        [-- hydra overrides ...]

One `python -m csft.train` run per K and seed, one after another:
`data.shots_per_class=K data.sample_seed=S <overrides>`, so at one seed every K draws from
the same shuffle (the 5 rows of a class are among its 10). "full" trains on all rows and
varies `seed=S` instead, so its runs differ too. Each run lives in <runs>/K{K}_s{S} (or
full_s{S}); <runs> is <out>_runs unless given. A run whose metrics.json exists is not run
again, so an interrupted curve resumes where it stopped (with the same overrides: a run made
with others is an error, not a silent mix).

Writes <out>.md (K, train rows, mean ± sample std over seeds of test accuracy and macro-F1,
mean fit seconds), <out>.json (every run's numbers) and <out>.png (accuracy and macro-F1
against K, log x axis, std error bars; "full" at the full train split's rows per class),
from every finished run in <runs>. --from-runs only rebuilds those three.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csft.errors import ConfigError, CsftError, DataError

FULL = "full"
ACC, F1 = "test/acc", "test/f1_macro"
RUN_NAME = re.compile(r"(?:K(\d+)|full)_s(\d+)")


@dataclass(frozen=True)
class Run:
    """One point of one seed: K rows per class (None: all rows) at seed `seed`."""

    shots: int | None
    seed: int

    @property
    def name(self) -> str:
        return f"K{self.shots}_s{self.seed}" if self.shots is not None else f"{FULL}_s{self.seed}"

    def overrides(self, extra: list[str]) -> list[str]:
        """What `python -m csft.train` gets, hydra.run.dir aside."""
        if self.shots is None:  # null: also when the extra overrides pick a few-shot recipe
            return [f"seed={self.seed}", "data.shots_per_class=null", *extra]
        return [f"data.shots_per_class={self.shots}", f"data.sample_seed={self.seed}", *extra]


def parse_list(text: str, option: str, full: bool) -> list[Any]:
    """'5,10,full' → [5, 10, None] (`full` only where allowed); integers >= 1 (seeds >= 0)."""
    values: list[Any] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if full and item == FULL:
            values.append(None)
        elif item.isdigit() and int(item) >= (1 if full else 0):
            values.append(int(item))
        else:
            expected = "integers >= 1 or 'full'" if full else "integers >= 0"
            raise ConfigError(f"{option} {text!r}: {item!r} is not one of {expected}.")
    if not values:
        raise ConfigError(f"{option} {text!r}: names nothing.")
    return values


def plan(shots: list[int | None], seeds: list[int]) -> list[Run]:
    return [Run(k, s) for k in shots for s in seeds]


def saved_overrides(run_dir: Path) -> list[str]:
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def run_csft_train(
    run_dir: Path, overrides: list[str], python: str, where: str, env: dict | None = None
) -> None:
    """One `python -m csft.train` subprocess into `run_dir`, skipped when its metrics.json
    exists (made with the same overrides; others are an error). Shared with
    benchmark_fewshot.py."""
    if (run_dir / "metrics.json").is_file():
        if saved_overrides(run_dir) != overrides:
            raise ConfigError(
                f"{run_dir} was made with the overrides {saved_overrides(run_dir)}, not "
                f"{overrides}: use another --out (or --runs) or remove that run."
            )
        print(f"{where}: done before (metrics.json), skipped", flush=True)
        return
    print(f"{where}: {python} -m csft.train {' '.join(overrides)}", flush=True)
    command = [python, "-m", "csft.train", *overrides, f"hydra.run.dir={run_dir}"]
    status = subprocess.run(command, check=False, env=env).returncode
    if status != 0 or not (run_dir / "metrics.json").is_file():
        raise CsftError(
            f"{run_dir.name} failed (exit status {status}); its log: {run_dir / 'train.log'}. "
            "Run the script again to resume from this run."
        )


def run_all(runs: list[Run], runs_dir: Path, extra: list[str], python: str) -> None:
    """Each run not finished yet, as a subprocess; stops at the first that fails."""
    for number, run in enumerate(runs, 1):
        where = f"[{number}/{len(runs)}] {run.name}"
        run_csft_train(runs_dir / run.name, run.overrides(extra), python, where)


# -- reading the runs ---------------------------------------------------------------------
def train_split(run_dir: Path) -> tuple[int, int]:
    """(train rows, classes) of a run, from its saved data config: its exact train split."""
    from csft.data.pseudo_labels import load_run_datamodule

    train = load_run_datamodule(run_dir).sampled_splits()["train"]
    return len(train), len({str(e.label) for e in train})


def read_run(run_dir: Path, run: Run) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    missing = [key for key in (ACC, F1, "fit_seconds") if key not in metrics]
    if missing:
        raise DataError(
            f"{run_dir / 'metrics.json'}: no {', '.join(missing)} (a learning curve needs a "
            "classification run with a test split)."
        )
    sample = run_dir / "data_sample.json"
    if run.shots is not None and sample.is_file():
        rows, classes = len(json.loads(sample.read_text())["train"]), None
    else:
        rows, classes = train_split(run_dir)
    return {
        "seed": run.seed,
        "run_dir": str(run_dir),
        "train_rows": rows,
        "classes": classes,
        ACC: metrics[ACC],
        F1: metrics[F1],
        "fit_seconds": metrics["fit_seconds"],
    }


def finished_runs(runs_dir: Path) -> list[Run]:
    """Every run in `runs_dir` with a metrics.json, by K (full last), then seed."""
    found = []
    for path in runs_dir.glob("*/metrics.json"):
        match = RUN_NAME.fullmatch(path.parent.name)
        if match:
            found.append(Run(int(match[1]) if match[1] else None, int(match[2])))
    return sorted(found, key=lambda r: (r.shots is None, r.shots or 0, r.seed))


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs_dir: Path) -> dict[str, Any]:
    """One point per K (and full): each seed's numbers, their mean and sample std."""
    runs = finished_runs(runs_dir)
    if not runs:
        raise DataError(f"{runs_dir}: no finished run (K<k>_s<seed>/metrics.json) to summarise.")
    by_shots: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_shots[run.shots].append(read_run(runs_dir / run.name, run))
    points = []
    for shots, measured in by_shots.items():
        acc, acc_std = _mean_std([m[ACC] for m in measured])
        f1, f1_std = _mean_std([m[F1] for m in measured])
        rows = statistics.fmean(m["train_rows"] for m in measured)
        if shots is None:
            per_class = statistics.fmean(m["train_rows"] / m["classes"] for m in measured)
        else:
            per_class = shots
        points.append(
            {
                "shots": FULL if shots is None else shots,
                "train_rows": rows,
                "rows_per_class": per_class,
                "seeds": [m["seed"] for m in measured],
                "acc_mean": acc,
                "acc_std": acc_std,
                "f1_mean": f1,
                "f1_std": f1_std,
                "fit_seconds_mean": statistics.fmean(m["fit_seconds"] for m in measured),
                "runs": measured,
            }
        )
    return {"runs_dir": str(runs_dir), "metrics": {"accuracy": ACC, "f1": F1}, "points": points}


# -- writing ------------------------------------------------------------------------------
def _rows(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| K (rows per class) | train rows | test accuracy | test macro-F1 | fit s | seeds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in summary["points"]:
        k = p["shots"] if p["shots"] != FULL else f"full ({p['rows_per_class']:.0f} per class)"
        lines.append(
            f"| {k} | {_rows(p['train_rows'])} | {p['acc_mean']:.4f} ± {p['acc_std']:.4f} "
            f"| {p['f1_mean']:.4f} ± {p['f1_std']:.4f} | {p['fit_seconds_mean']:.1f} "
            f"| {len(p['seeds'])} |"
        )
    return "\n".join(lines) + "\n"


def plot_curve(summary: dict[str, Any]) -> Any:
    """The figure: accuracy and macro-F1 (mean, std error bars) against rows per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    points = summary["points"]
    x = [p["rows_per_class"] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label, style in (("acc", "test accuracy", "-"), ("f1", "test macro-F1", "--")):
        ax.errorbar(
            x,
            [p[f"{key}_mean"] for p in points],
            yerr=[p[f"{key}_std"] for p in points],
            linestyle=style,
            marker="o",
            capsize=3,
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([str(p["shots"]) for p in points])
    ax.xaxis.set_minor_formatter(NullFormatter())
    seeds = max(len(p["seeds"]) for p in points)
    ax.set_xlabel("train rows per class (K; full at the full split's mean)")
    ax.set_ylabel(f"test score (mean ± std, {seeds} seed{'s' * (seeds > 1)})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def write_outputs(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out.with_name(f"{out.name}.{suffix}") for suffix in ("md", "json", "png")}
    paths["md"].write_text(markdown_table(summary))
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    fig = plot_curve(summary)
    fig.savefig(paths["png"], dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="5,10,20,50,full", help="K values and/or 'full'")
    parser.add_argument("--seeds", default="0,1,2", help="sample seeds (full: training seeds)")
    parser.add_argument("--out", default="docs/learning_curve", help="writes OUT.md/.json/.png")
    parser.add_argument("--runs", help="the run dirs' parent (default: OUT_runs)")
    parser.add_argument("--python", default=sys.executable, help="runs `-m csft.train`")
    parser.add_argument("--from-runs", action="store_true", help="only rebuild the outputs")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    runs_dir = Path(args.runs).resolve() if args.runs else out.with_name(f"{out.name}_runs")
    try:
        if not args.from_runs:
            runs = plan(
                parse_list(args.shots, "--shots", True), parse_list(args.seeds, "--seeds", False)
            )
            run_all(runs, runs_dir, extra, args.python)
        summary = summarize(runs_dir)
        paths = write_outputs(summary, out)
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(summary))
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
