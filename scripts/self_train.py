"""Self-training: a few-shot run labels unlabelled texts, a student trains on both.

    python scripts/self_train.py --runs DIR [--teacher RUN_DIR] [--rounds 1]
        [--threshold 0.7] [--student-epochs 3] [--text-file FILE [--text-column text]]
        [--threads 2] [--python PYTHON] [-- csft.train overrides of the teacher ...]

1. The teacher: RUN_DIR if given (a finished `csft.train` run), else `python -m csft.train
   <overrides>` in DIR/teacher, e.g. `experiment=banking77_fewshot data.sample_seed=0`.
2. Each round r: the previous model's export labels the unlabelled pool; the rows it labels
   with calibrated confidence >= --threshold go to DIR/round{r}_pseudo_labels.jsonl, and a
   student trains in DIR/round{r} with the teacher's own overrides plus
   `data.pseudo_labels=<that file> trainer.max_epochs=<--student-epochs>`: the same labelled
   rows, the same validation rows, the same recipe, from the pretrained encoder again.
   The next round's labeller is this student.
3. The pool: --text-file (one text a line, or a table's --text-column), else the labelled
   rows the teacher's sample left out (`data.shots_per_class` / `data.train_fraction`), their
   labels hidden from the models and used only to report the pseudo-labels' accuracy. The
   test split is never in the pool.

A finished step is not run again (csft.train: metrics.json; a pseudo-label file), so an
interrupted run resumes. Writes DIR/self_train.json and prints a table: per model, test and
validation accuracy, macro-F1, fit seconds, and per round the pseudo-labels kept and their
accuracy where it is known.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import run_csft_train, saved_overrides

from csft.errors import ConfigError, CsftError

STUDENT_KEYS = ("data.pseudo_labels", "trainer.max_epochs", "hydra.run.dir")


def student_overrides(teacher_overrides: list[str], pseudo_file: Path, epochs: int) -> list[str]:
    """The teacher's overrides with the pseudo-label file and the student's epochs."""
    kept = [o for o in teacher_overrides if o.lstrip("+~").split("=", 1)[0] not in STUDENT_KEYS]
    return [*kept, f"data.pseudo_labels={pseudo_file}", f"trainer.max_epochs={epochs}"]


def unlabelled_pool(teacher: Path, text_file: str | None, text_column: str) -> list[Any]:
    """The Examples to pseudo-label: a text file's texts (no labels), or the labelled rows the
    teacher's sample left out (labels kept for measuring only; pseudo_label hides them)."""
    from csft.data.corpus import clean_corpus, read_text_file
    from csft.data.example import Example
    from csft.data.pseudo_labels import left_out_rows

    if text_file:
        texts = clean_corpus(read_text_file(text_file, text_column), text_file)
        return [
            Example(t, source=f"{Path(text_file).name} text {i}") for i, t in enumerate(texts, 1)
        ]
    return left_out_rows(teacher)


def label_round(
    labeller: Path, pool: list[Any], threshold: float, threads: int, path: Path
) -> dict[str, Any]:
    """Pseudo-label the pool with `labeller`'s export into `path` (kept if it exists)."""
    from csft.data.pseudo_labels import pseudo_label, write_pseudo_labels
    from csft.inference import Predictor

    facts_path = path.with_suffix(".json")
    if path.is_file() and facts_path.is_file():
        print(f"{path.name}: done before, kept", flush=True)
        return json.loads(facts_path.read_text())
    start = time.perf_counter()
    predictor = Predictor.load(labeller / "model", threads=threads)
    rows = pseudo_label(predictor, pool, threshold)
    seconds = time.perf_counter() - start
    write_pseudo_labels(rows, path)
    gold = {e.source: e.label for e in pool if e.label is not None}
    facts: dict[str, Any] = {
        "labeller": str(labeller),
        "pool": len(pool),
        "kept": len(rows),
        "threshold": threshold,
        "label_seconds": round(seconds, 1),
    }
    if gold and rows:
        right = sum(str(gold.get(r["source"])) == r["label"] for r in rows)
        facts["kept_accuracy"] = round(right / len(rows), 6)
    facts_path.write_text(json.dumps(facts, indent=2))
    shown = f", {facts['kept_accuracy']:.1%} right" if "kept_accuracy" in facts else ""
    print(f"{path.name}: {len(rows)} of {len(pool)} rows kept{shown}", flush=True)
    return facts


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run's numbers, and its train rows (labelled + pseudo-labelled) when it sampled."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keys = ("test/acc", "test/f1_macro", "val/acc", "fit_seconds")
    facts = {"run_dir": str(run_dir)} | {k: metrics.get(k) for k in keys}
    sample_path = run_dir / "data_sample.json"
    if sample_path.is_file():
        sample = json.loads(sample_path.read_text())
        facts["labelled_rows"] = len(sample["train"])
        facts["pseudo_rows"] = (sample.get("pseudo_labels") or {}).get("rows", 0)
    return facts


def self_train(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    runs = Path(args.runs).resolve()
    if args.teacher:
        teacher = Path(args.teacher).resolve()
        if not (teacher / "metrics.json").is_file():
            raise ConfigError(f"--teacher {teacher}: no metrics.json, not a finished run.")
        if extra:
            raise ConfigError("--teacher is trained already: give overrides only without it.")
    else:
        teacher = runs / "teacher"
        run_csft_train(teacher, extra, args.python, "teacher")
    pool = unlabelled_pool(teacher, args.text_file, args.text_column)
    models = [{"stage": "teacher"} | read_metrics(teacher)]
    labeller = teacher
    for number in range(1, args.rounds + 1):
        pseudo_file = runs / f"round{number}_pseudo_labels.jsonl"
        facts = label_round(labeller, pool, args.threshold, args.threads, pseudo_file)
        student = runs / f"round{number}"
        overrides = student_overrides(saved_overrides(teacher), pseudo_file, args.student_epochs)
        run_csft_train(student, overrides, args.python, f"round {number}")
        models.append({"stage": f"round {number}", "pseudo_labels": facts} | read_metrics(student))
        labeller = student
    summary = {"teacher": str(teacher), "pool": len(pool), "models": models}
    (runs / "self_train.json").write_text(json.dumps(summary, indent=2))
    return summary


def train_rows(model: dict[str, Any]) -> str:
    if "labelled_rows" not in model:
        return "–"
    return f"{model['labelled_rows']:,} + {model['pseudo_rows']:,}"


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| model | pseudo-labels kept (right) | train rows (labelled + pseudo) "
        "| test acc | macro-F1 | val acc | fit s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model in summary["models"]:
        facts = model.get("pseudo_labels")
        kept = "–"
        if facts:
            kept = f"{facts['kept']:,} of {facts['pool']:,}"
            if "kept_accuracy" in facts:
                kept += f" ({facts['kept_accuracy']:.1%})"
        lines.append(
            f"| {model['stage']} | {kept} | {train_rows(model)} "
            f"| {model['test/acc']:.2%} | {model['test/f1_macro']:.2%} | {model['val/acc']:.2%} "
            f"| {model['fit_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="where the runs and files go")
    parser.add_argument("--teacher", help="a finished csft.train run to start from")
    parser.add_argument("--rounds", type=int, default=1, help="students, each labelling anew")
    parser.add_argument("--threshold", type=float, default=0.7, help="least confidence kept")
    parser.add_argument("--student-epochs", type=int, default=3, help="trainer.max_epochs")
    parser.add_argument("--text-file", help="unlabelled texts (default: rows the sample left)")
    parser.add_argument("--text-column", default="text", help="the text file's column")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for labelling")
    parser.add_argument("--python", default=sys.executable, help="runs `-m csft.train`")
    args = parser.parse_args(argv)
    try:
        if args.rounds < 1 or args.student_epochs < 1:
            raise ConfigError("--rounds and --student-epochs: expected at least 1.")
        if not 0.0 <= args.threshold <= 1.0:
            raise ConfigError(f"--threshold {args.threshold}: expected a confidence in [0, 1].")
        summary = self_train(args, extra)
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
