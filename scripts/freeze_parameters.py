"""Print trainable vs total parameters of every freeze policy for a model config.

    python scripts/freeze_parameters.py [model=minilm] [num_labels=77]

Prints a Markdown table (the one in README's results).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from csft.resolvers import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str]) -> None:
    options = dict(arg.split("=", 1) for arg in argv)
    model = options.get("model", "minilm")
    num_labels = int(options.get("num_labels", 77))
    register_resolvers()
    policies = sorted(p.stem for p in (CONF / "freeze").glob("*.yaml"))
    print(f"| freeze ({model}, {num_labels} labels) | trainable | total | share |")
    print("| --- | ---: | ---: | ---: |")
    for policy in policies:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", [f"model={model}", f"freeze={policy}", "paths.output_dir=."])
        classifier = instantiate(cfg.model, _partial_=True, _convert_="all")(
            num_labels=num_labels, freeze=instantiate(cfg.freeze)
        )
        trainable, total = classifier.hparams.trainable_params, classifier.hparams.total_params
        print(f"| `{policy}` | {trainable:,} | {total:,} | {trainable / total:.1%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
