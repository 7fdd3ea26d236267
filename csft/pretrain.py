"""`python -m csft.pretrain data=<config> | text_file=<file>`: domain-adaptive pretraining.

Continued masked-LM training of the encoder on unlabelled in-domain text, with the trainer,
logger, callbacks and paths of training. The result, `<run dir>/encoder`, is an encoder
folder that `python -m csft.train model.name_or_path=<run dir>/encoder` fine-tunes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from csft.checks import NULL, Rule, check_config, integer, number, position_limit
from csft.console import results_table
from csft.data.corpus import (
    MaskedLMDataModule,
    clean_corpus,
    datamodule_texts,
    read_text_file,
    split_corpus,
)
from csft.distributed import end_process_group, use_job_subprocess_command
from csft.errors import ConfigError
from csft.instantiation import instantiate_unwrapping_errors
from csft.job import instantiate_dict, plain_number, restore_best_weights, run_job
from csft.model.masked_lm import MaskedLM, masked_lm_config
from csft.resolvers import register_resolvers
from csft.tracking import make_loggers, report_wandb_location

log = logging.getLogger("csft.pretrain")
register_resolvers()

DATA_SOURCES = ("train_file", "file", "directory")  # what a data config reads, by kind

# Pretraining's own keys (csft.checks.RULES holds the keys it shares with training).
RULES: dict[str, Rule] = {
    "max_texts": NULL | integer(2),
    "val_fraction": number(gt=0, lt=1),
    "mlm_probability": number(gt=0, lt=1),
    "max_length": integer(3),
    "batch_size": integer(1),
    "eval_batch_size": integer(1),
    "pad_to_multiple_of": NULL | integer(1),
    "head_warmup_ratio": number(ge=0, lt=1),
}


def check(cfg: DictConfig) -> None:
    """Before any work: one corpus source, a masked-LM encoder, numbers that make sense."""
    has_data, has_file = bool(cfg.get("data")), cfg.get("text_file") is not None
    if has_data == has_file:
        given = "both data= and text_file= are set" if has_data else "no corpus is given"
        raise ConfigError(
            f"{given}: pretrain on one of data=<data config> (its train split's texts) or "
            f"text_file=<file> (.txt, one text a line; or .jsonl/.csv/.tsv/.parquet with "
            f"text_column=<column>)."
        )
    overrides = cfg.model.get("config_overrides")
    overrides = OmegaConf.to_container(overrides) if overrides else None
    masked_lm_config(cfg.model.name_or_path, overrides)  # before check_config reads it
    check_config(cfg)
    for key, rule in RULES.items():
        value = cfg.get(key)
        if not rule.ok(value):
            raise ConfigError(f"{key}={value!r}: expected {rule.expected}.")
    limit = position_limit(cfg.model.name_or_path, overrides)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(
            f"max_length={cfg.max_length}: the model {cfg.model.name_or_path} takes at most "
            f"{limit} tokens (its max_position_embeddings); set max_length <= {limit}."
        )


def read_corpus(cfg: DictConfig) -> tuple[list[str], str]:
    """The corpus's distinct non-blank texts and where they came from."""
    if cfg.get("text_file") is not None:
        where = str(cfg.text_file)
        texts = read_text_file(cfg.text_file, cfg.text_column)
    else:
        datamodule = instantiate_unwrapping_errors(cfg.data, tokenizer=cfg.model.name_or_path)
        source = next((cfg.data[k] for k in DATA_SOURCES if cfg.data.get(k)), cfg.data._target_)
        where = f"data: {source} (train split)"
        texts = datamodule_texts(datamodule)
    return clean_corpus(texts, where), where


def build(cfg: DictConfig) -> tuple[MaskedLMDataModule, MaskedLM, pl.Trainer]:
    """The corpus DataModule (set up: texts read and tokenized), MaskedLM and Trainer."""
    texts, where = read_corpus(cfg)
    train_texts, val_texts = split_corpus(texts, cfg.val_fraction, cfg.seed, cfg.max_texts)
    log.info("corpus from %s: %d distinct texts", where, len(texts))
    datamodule = MaskedLMDataModule(
        tokenizer=cfg.model.name_or_path,
        train_texts=train_texts,
        val_texts=val_texts,
        max_length=cfg.max_length,
        mlm_probability=cfg.mlm_probability,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        pad_to_multiple_of=cfg.pad_to_multiple_of,
        seed=cfg.seed,
    )
    datamodule.setup("fit")
    overrides = cfg.model.get("config_overrides")
    model = MaskedLM(
        name_or_path=cfg.model.name_or_path,
        random_init=cfg.model.get("random_init", False),
        config_overrides=OmegaConf.to_container(overrides) if overrides else None,
        attn_implementation=cfg.model.get("attn_implementation", "sdpa"),
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler),
        weight_decay=cfg.optim.weight_decay,
        head_lr=cfg.optim.head_lr,
        head_warmup_ratio=cfg.head_warmup_ratio,
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_dict(cfg.get("callbacks")),
        logger=make_loggers(cfg.get("logger"), cfg) or False,
    )
    return datamodule, model, trainer


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Build, validate the start, fit, restore the best weights, validate them, save the
    encoder folder. Returns the run's numbers (also in <run dir>/metrics.json)."""
    check(cfg)
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)

    datamodule, model, trainer = build(cfg)
    log.info("%s", datamodule.describe())
    log.info("%s parameters, all of them train", f"{model.hparams.total_params:,}")
    if trainer.world_size > 1:
        use_job_subprocess_command()  # DDP ranks re-run this job, not the whole command line

    results: dict[str, Any] = {}
    if cfg.validate_before_fit:
        start = trainer.validate(model, datamodule=datamodule, verbose=False)
        results |= {f"{k}_start": v for k, v in (start[0] if start else {}).items()}
        log.info("before pretraining: val/perplexity %.2f", results.get("val/perplexity_start"))
    begin = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - begin
    if trainer.interrupted:
        raise KeyboardInterrupt

    best = restore_best_weights(trainer, model)
    measured = trainer.validate(model, datamodule=datamodule, verbose=False)
    results |= measured[0] if measured else {}
    results |= {
        "fit_seconds": round(fit_seconds, 1),
        "train_samples": model.samples_trained,
        "train_samples_per_second": round(model.samples_trained / fit_seconds, 1),
        "epochs": trainer.current_epoch if not trainer.fast_dev_run else 1,
        "steps": trainer.global_step,
        "head_warmup_steps": model.head_warmup_steps,
        "train_texts": len(datamodule.texts["train"]),
        "val_texts": len(datamodule.texts["val"]),
        "total_params": model.hparams.total_params,
        "best_checkpoint": best,
    }
    results = {key: plain_number(value) for key, value in results.items()}

    is_global_zero = trainer.is_global_zero
    end_process_group()
    if not is_global_zero:  # rank 0 alone writes the run's files
        return results
    encoder_dir = model.save_encoder(output_dir / "encoder", datamodule.tokenizer)
    results["encoder_dir"] = str(encoder_dir)
    report_wandb_location(trainer.loggers)
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    print(results_table(results))
    print(f"encoder: {encoder_dir}")
    print(f"fine-tune it: python -m csft.train model.name_or_path={encoder_dir}")
    return results


@hydra.main(version_base="1.3", config_path="pkg://csft.conf", config_name="pretrain")
def run(cfg: DictConfig) -> float | None:
    """The Hydra job (error policy: `csft.job.run_job`); returns the final val/loss (what a
    sweep would minimize)."""
    return run_job(cfg, pretrain, lambda results: float(results.get("val/loss", math.nan)), log)


def main() -> float | None:
    """`python -m csft.pretrain` / `csft-pretrain`."""
    return run()


if __name__ == "__main__":
    main()
