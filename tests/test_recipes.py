"""Every shipped `experiment=<recipe>` composes and runs: the packaged MiniLM on the real data,
one fast_dev_run step of each split, through `csft.train.train`.

The recipes are listed from conf/experiment/ when the tests are collected, so a new recipe
is covered without touching this file.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import CONF, compose

from csft.train import train

RECIPES = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))


def test_the_shipped_recipes_are_found():
    assert {"banking77", "bitext_pairs", "dstc9_binary", "dstc9_ratings"} <= set(RECIPES)


@pytest.mark.slow  # the real MiniLM on each recipe's real data
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_a_fast_dev_run_and_reports_its_test_metric(tmp_path, data_dir, recipe):
    cfg = compose(
        [
            f"experiment={recipe}",
            "debug=fdr",
            f"paths.output_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
            # Scoring the export on the whole test split costs minutes with MiniLM on a CPU;
            # the Trainer's test batch still measures the test metric.
            "report=false",
        ]
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    test_metric = cfg.optimized_metric.replace("val/", "test/", 1)
    assert test_metric.startswith("test/"), cfg.optimized_metric
    value = metrics.get(test_metric)
    assert isinstance(value, float) and math.isfinite(value), (test_metric, metrics)
    assert (tmp_path / "model" / "config.json").is_file()
