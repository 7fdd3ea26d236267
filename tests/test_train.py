"""End to end through Hydra's compose: fit → test the best checkpoint → export → pipeline."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    FIXTURES,
    INTENT_FIXTURE,
    ROOT,
    assert_same_logits,
    compose,
    tiny_classifier,
    tiny_overrides,
)
from hydra.errors import ConfigCompositionException, MissingConfigException

from csft.errors import ConfigError
from csft.train import sweep_score, train

INTENT_DATA = [
    *INTENT_FIXTURE,
    "data.batch_size=4",
    "trainer.max_epochs=3",
    "optim.lr=1e-3",
]


def run(tmp_path, *overrides):
    cfg = compose(tiny_overrides(tmp_path, *overrides))
    return cfg, train(cfg)


@pytest.fixture(scope="module")
def intent_run(tmp_path_factory):
    """A 3-epoch run of the tiny BERT (CLS pooling) on the intent fixture."""
    out = tmp_path_factory.mktemp("intent-run")
    _, results = run(out, *INTENT_DATA, "model.pooling=cls", "freeze=none")
    return out, results


def test_fast_dev_run_on_banking77_exports_a_pipeline_ready_model(tmp_path, data_dir):
    import torch.nn.functional as F
    from transformers import pipeline

    from csft.export import load_exported
    from csft.instantiation import instantiate_unwrapping_errors

    cfg, _ = run(tmp_path, "debug=fdr")
    model_dir = tmp_path / "model"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"test/acc", "test/f1_macro", "test/loss"} <= saved.keys()
    config = json.loads((model_dir / "config.json").read_text())
    categories = json.loads((data_dir / "banking77" / "categories.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(categories)
    assert all(config["id2label"][str(i)] == name for name, i in config["label2id"].items())

    # The reported test numbers are the exported model's: fast_dev_run tests one batch (the
    # shortest test rows), and the export, with its own tokenizer, scores that batch the same.
    data = instantiate_unwrapping_errors(cfg.data, tokenizer=str(model_dir))
    data.prepare_data()
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    exported = load_exported(model_dir)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        logits = exported(**inputs).logits
    labels = batch["labels"]
    # The export's head is divided by the temperature fitted on validation: times T gives
    # the Trainer's logits back.
    temperature = json.loads((model_dir / "csft.json").read_text())["calibration"]["temperature"]
    assert temperature != 1.0
    raw = logits * temperature
    assert saved["test/loss"] == pytest.approx(F.cross_entropy(raw, labels).item(), abs=1e-4)
    accuracy = (logits.argmax(-1) == labels).double().mean().item()
    assert saved["test/acc"] == pytest.approx(accuracy, abs=1e-6)

    # The default export is a stock BertForSequenceClassification: a plain pipeline (no
    # trust_remote_code) says what the exported weights predict, named as the data names it.
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert not (model_dir / "modeling_csft.py").exists()
    message = "I still have not received my new card"
    classify = pipeline("text-classification", model=str(model_dir))
    prediction = classify(message)[0]
    with torch.no_grad():
        probabilities = (
            exported(**data.tokenizer(message, return_tensors="pt")).logits[0].softmax(-1)
        )
    assert prediction["label"] == data.id2label[int(probabilities.argmax())]
    assert prediction["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)


def test_run_leaves_checkpoint_metrics_log_and_model(intent_run):
    out, results = intent_run
    assert results["best_checkpoint"].startswith(str(out / "checkpoints"))
    assert os.path.isfile(results["best_checkpoint"])
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3
    # The CSV log has a numeric val/acc for each of the 3 epochs, then the best checkpoint's
    # (measured after fit, logged at epoch 3), which is the one metrics.json reports.
    with (out / "csv" / "metrics.csv").open() as handle:
        val_acc = [
            (int(r["epoch"]), float(r["val/acc"])) for r in csv.DictReader(handle) if r["val/acc"]
        ]
    assert [epoch for epoch, _ in val_acc] == [0, 1, 2, 3]
    assert all(math.isfinite(value) for _, value in val_acc)
    best_epoch = int(Path(results["best_checkpoint"]).stem.removeprefix("epoch"))
    assert val_acc[best_epoch][1] == pytest.approx(results["best_score"], abs=1e-6)
    assert val_acc[-1][1] == pytest.approx(results["val/acc"], abs=1e-6)
    checkpoint = torch.load(results["best_checkpoint"], weights_only=False)
    assert checkpoint["id2label"] == {0: "card_lost", 1: "refund", 2: "transfer"}


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_export_reproduces_the_trained_model_outputs(tmp_path, tokenizer, pooling):
    from transformers import AutoModelForSequenceClassification, pipeline

    from csft.data.encoding import Encoding
    from csft.export import export_model

    model = tiny_classifier(
        id2label={0: "card_lost", 1: "refund", 2: "transfer"}, pooling=pooling
    ).eval()
    export_model(model, tokenizer, Encoding(), tmp_path / "model")
    exported = AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "model", trust_remote_code=pooling == "mean"
    ).eval()
    if pooling == "cls":  # a plain transformers class, no custom code needed
        assert type(exported).__name__ == "BertForSequenceClassification"
    assert_same_logits(model, exported, tokenizer)
    classify = pipeline(
        "text-classification", model=str(tmp_path / "model"), trust_remote_code=pooling == "mean"
    )
    # The pipeline's label is the trained model's own top class, by its own name.
    batch = tokenizer("my card is lost", return_tensors="pt")
    with torch.no_grad():
        top = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).argmax()
    assert classify("my card is lost")[0]["label"] == model.hparams.id2label[int(top)]


def test_same_seed_same_metrics(tmp_path, intent_run):
    _, first = intent_run
    _, again = run(tmp_path, *INTENT_DATA, "model.pooling=cls", "freeze=none")
    for key in ("test/acc", "test/loss", "val/loss"):
        assert again[key] == pytest.approx(first[key], abs=1e-6), key


def test_samples_per_second_counts_the_rows_trained_when_a_run_is_cut_short(tmp_path):
    cut = ("data.batch_size=6", "trainer.max_epochs=3", "trainer.limit_train_batches=2")
    _, results = run(tmp_path, *INTENT_FIXTURE, *cut)
    # 3 epochs of 2 batches of 6, not 3 epochs of the whole train split (18 rows)
    assert results["train_samples"] == 3 * 2 * 6
    # fit_seconds and samples/s are both rounded to 0.1, so samples/s lies within what
    # those roundings allow
    seconds = results["fit_seconds"]
    low, high = 36 / (seconds + 0.05), 36 / max(seconds - 0.05, 1e-9)
    assert low - 0.05 <= results["train_samples_per_second"] <= high + 0.05


def test_regression_with_mse_reports_regression_metrics(tmp_path):
    _, results = run(
        tmp_path,
        "data=csv",
        f"data.train_file={FIXTURES / 'ratings.jsonl'}",
        f"data.test_file={FIXTURES / 'ratings.jsonl'}",
        "data.text_column=query",
        "data.response_column=reply",
        "data.context_column=history",
        "data.label_column=score",
        "data.batch_size=8",
        "data.task=regression",  # numeric labels: loss=auto picks MSE
        "trainer.max_epochs=2",
    )
    assert {"test/mse", "test/mae", "test/pearson", "test/spearman"} <= results.keys()
    assert "test/acc" not in results
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


def test_evaluate_writes_metrics_confusion_matrix_and_per_class_report(tmp_path, intent_run):
    from csft.export import resolve_model_dir

    run_dir, results = intent_run
    command = [
        sys.executable,
        "-m",
        "csft.evaluate",
        f"run_dir={run_dir}",
        f"hydra.run.dir={tmp_path}",
        *[o for o in INTENT_DATA if o.startswith("data")],
    ]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True)
    assert resolve_model_dir(run_dir) == run_dir / "model"
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "per_class.csv").read_text().splitlines()
    assert report[0] == "label,precision,recall,f1,support"
    assert [line.split(",")[0] for line in report[1:]] == ["card_lost", "refund", "transfer"]
    assert sum(int(line.split(",")[-1]) for line in report[1:]) == 6
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(results["test/acc"], abs=1e-6)


# -- config errors -------------------------------------------------------------------------
def test_unknown_config_option_is_hydras_error(tmp_path):
    with pytest.raises((MissingConfigException, ConfigCompositionException), match="freeze"):
        compose(tiny_overrides(tmp_path, "freeze=top99"))


def test_freeze_deeper_than_the_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"freeze=top4.*4 trainable layers.*has 2 layers"):
        run(tmp_path, *INTENT_DATA, "freeze=top4")  # model=tiny has 2 layers


def test_debug_configs_compose(tmp_path):
    assert compose(tiny_overrides(tmp_path, "debug=overfit")).trainer.overfit_batches == 3
    limit = compose(tiny_overrides(tmp_path, "debug=limit")).trainer
    assert limit.max_epochs == 2 and 0 < limit.limit_train_batches < 1
    assert compose(tiny_overrides(tmp_path, "debug=fdr")).trainer.fast_dev_run is True


def test_cli_bad_input_prints_one_clear_error(tmp_path):
    missing = tmp_path / "missing.csv"
    command = [
        sys.executable,
        "-m",
        "csft.train",
        "model=tiny",
        "data=csv",
        f"data.train_file={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert f"csft: error: {missing}: data file not found." in done.stderr
    assert "Traceback" not in done.stderr


def test_model_bert_runs_from_a_local_folder(tmp_path, tiny_bert_dir):
    """`model=bert model.name_or_path=/dir freeze=top4` (tiny_bert_dir has 4 layers)."""
    _, results = run(
        tmp_path,
        *INTENT_DATA,
        "model=bert",
        f"model.name_or_path={tiny_bert_dir}",
        "freeze=top4",
        "trainer.max_epochs=1",
    )
    assert results["trainable_params"] < results["total_params"]  # embeddings frozen
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]  # bert uses cls pooling


def test_cli_model_bert_offline_fails_at_once_with_the_fix(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    command = [
        sys.executable,
        "-m",
        "csft.train",
        "model=bert",
        "freeze=top4",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("csft: error:")]
    assert len(errors) == 1 and "model=minilm" in errors[0]
    assert "Traceback" not in done.stderr and "Retrying" not in done.stderr


def test_sweep_score_falls_back_to_the_metric_without_a_best_checkpoint():
    assert sweep_score({"best_score": 0.9, "val/acc": 0.8}, "val/acc") == 0.9
    assert sweep_score({"best_score": None, "val/acc": 0.8}, "val/acc") == 0.8
    assert math.isnan(sweep_score({"best_score": None}, "val/acc"))


def test_gpu_check_run_bf16_fused_adam_clipping_and_csv_logger_without_wandb(tmp_path, monkeypatch):
    """What scripts/gpu_check.sh runs on the H200, which found both: Lightning refuses to clip
    gradients for a fused optimizer under AMP (bf16-mixed runs on CPU too), and the report
    imported wandb, which that machine lacks, although only the CSV logger ran."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    cfg, results = run(
        tmp_path, *INTENT_DATA, "trainer.max_epochs=1", "trainer.precision=bf16-mixed", "logger=csv"
    )
    assert cfg.trainer.gradient_clip_val > 0 and cfg.optim.optimizer.fused and cfg.report
    assert math.isfinite(results["test/loss"])
    assert (tmp_path / "evaluation" / "metrics.json").is_file()


def test_callbacks_ema_exports_the_averaged_weights_not_the_last_step(tmp_path):
    """callbacks=ema: the best checkpoint, the test metric and the export are the moving
    average of the weights (Lightning's EMAWeightAveraging), not the raw weights trained."""
    from csft.export import load_exported

    _, results = run(
        tmp_path,
        *INTENT_DATA,
        "model.pooling=cls",
        "freeze=none",
        "callbacks=ema",
        "callbacks.weight_averaging.decay=0.9",
    )
    checkpoint = torch.load(results["best_checkpoint"], weights_only=False)
    name = "encoder.layer.0.attention.self.query.weight"
    averaged = checkpoint["state_dict"][f"encoder.{name}"]
    raw = checkpoint["current_model_state"][f"encoder.{name}"]
    assert not torch.allclose(averaged, raw)  # the average is not the step's weights
    exported = load_exported(tmp_path / "model").state_dict()[f"bert.{name}"]
    torch.testing.assert_close(exported, averaged)


def test_monitor_null_exports_the_final_weights_not_the_best_epoch(tmp_path):
    """callbacks.model_checkpoint.monitor=null (experiment=banking77_best): the run tests and
    exports the weights of its last epoch, whatever validation said at earlier ones."""
    from csft.export import load_exported

    _, results = run(
        tmp_path, *INTENT_DATA, "freeze=none", "callbacks.model_checkpoint.monitor=null"
    )
    assert Path(results["best_checkpoint"]).name == "epoch02.ckpt"  # the third, last epoch
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    name = "encoder.layer.1.output.dense.weight"
    exported = load_exported(tmp_path / "model").state_dict()[f"bert.{name}"]
    torch.testing.assert_close(exported, final[f"encoder.{name}"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 3
