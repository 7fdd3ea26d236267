"""Summarise a Hydra multirun sweep: a Markdown table, a CSV and a plot of the optimized metric.

    python scripts/summarize_sweep.py outputs/train/multiruns/<time> [--out DIR]

Writes summary.md, summary.csv and summary.png into the sweep dir (or --out) and prints the
table, best job first. Works on a sweep that is still running: unfinished jobs show as running.
"""

from __future__ import annotations

import argparse
import sys

from csft.errors import CsftError
from csft.sweep_summary import markdown_table, reproduce_command, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", metavar="MULTIRUN_DIR", help="a Hydra multirun dir")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: MULTIRUN_DIR)")
    args = parser.parse_args(argv)
    try:
        frame = summarize(args.multirun_dir, args.out)
    except CsftError as err:
        print(f"csft: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(frame))
    print()
    if (frame["status"] == "ok").any():
        print(f"best: {reproduce_command(frame)}")
    for path in frame.attrs["paths"].values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
