"""The LightningDataModule: read splits, build the label vocabulary, encode once, batch."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from csft.data.collate import PadCollator
from csft.data.dialogues import read_dialogues
from csft.data.encoding import Encoding, encode_cached
from csft.data.example import CLASSIFICATION, TASKS, Example, LabelVocab
from csft.data.fewshot import Subsample
from csft.data.pseudo_labels import read_pseudo_labels
from csft.data.readers import read_examples
from csft.data.samplers import rank_batch_sampler
from csft.errors import ConfigError, DataError
from csft.pretrained import load_tokenizer

SPLITS = ("train", "val", "test")
READERS = ("table", "dialogues")


def stratified_split(
    examples: Sequence[Example], fraction: float, seed: int, stratify: bool = True
) -> tuple[list[Example], list[Example]]:
    """Carve `fraction` of the rows out as validation, per label when `stratify`, seeded."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.val_fraction={fraction}: must lie strictly between 0 and 1.")
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        groups[e.label if stratify else None].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for key in sorted(groups, key=str):
        members = groups[key]
        rng.shuffle(members)
        take = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        held.update(members[:take])
    keep = [e for i, e in enumerate(examples) if i not in held]
    val = [e for i, e in enumerate(examples) if i in held]
    return keep, val


class FileDataModule(pl.LightningDataModule):
    """Batches of (context + text [, response]) token ids with dynamic padding.

    `reader="table"` reads CSV / JSONL / Parquet columns; `reader="dialogues"` reads the
    multi-turn dialogue JSONL format (see `csft.data.dialogues`). Subclasses that build
    examples some other way (pairs, ratings) override `load_splits` (and may fix the class
    order with `label_names`).
    `shots_per_class` / `train_fraction` train on a seeded sample of the labelled rows
    (`csft.data.fewshot`), subclasses included: the sample is taken from what `load_splits`
    returns.
    `batch_size` is per device: under DDP the global batch is batch_size x devices x nodes.
    """

    label_names: tuple[str, ...] | None = None

    def __init__(
        self,
        tokenizer: str,
        train_file: str | None = None,
        test_file: str | None = None,
        val_file: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        context_column: str | None = None,
        response_column: str | None = None,
        task: str = CLASSIFICATION,
        val_fraction: float = 0.1,
        seed: int = 0,
        max_length: int = 64,
        max_response_length: int = 32,
        turn_separator: str = " [SEP] ",
        max_context_turns: int | None = None,
        reader: str = "table",
        speaker_markers: dict[str, str] | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        pad_to_multiple_of: int | None = None,
        pool_batches: int = 50,
        num_workers: int = 0,
        cache_dir: str | None = None,
        fetch: Callable[[], Any] | None = None,
        shots_per_class: int | None = None,
        train_fraction: float | None = None,
        sample_seed: int = 0,
        pseudo_labels: str | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer_name = tokenizer
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.columns = {
            "text_column": text_column,
            "label_column": label_column,
            "context_column": context_column,
            "response_column": response_column,
        }
        if task not in TASKS:
            raise ConfigError(f"data.task={task!r}: expected one of {TASKS}.")
        self.task = task
        self.val_fraction = val_fraction
        self.seed = seed
        if reader not in READERS:
            raise ConfigError(f"data.reader={reader!r}: expected one of {READERS}.")
        self.reader = reader
        self.speaker_markers = speaker_markers
        self.encoding = Encoding(max_length, max_response_length, turn_separator, max_context_turns)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pool_batches = pool_batches
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.fetch = fetch
        self.subsample = Subsample(shots_per_class, train_fraction, sample_seed)
        self.subsample.check()  # before any file is read
        self.pseudo_labels = pseudo_labels
        self.pseudo_rows = 0
        self.examples: dict[str, list[Example]] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.vocab: LabelVocab | None = None
        self._tokenizer: Any = None
        self._resume_position: tuple[int, int] | None = None

    # -- reading ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.fetch is not None:
            self.fetch()

    def read_split(self, split: str) -> list[Example]:
        path = self.files[split]
        if self.reader == "dialogues":
            return read_dialogues(
                path,
                task=self.task,
                speaker_markers=self.speaker_markers,
                label_key=self.columns["label_column"],
                response_key=self.columns["response_column"] or "response",
            )
        return read_examples(path, task=self.task, **self.columns)

    def load_splits(self) -> dict[str, list[Example]]:
        """Train, val and test Examples; val is carved from train when no file names it."""
        if not self.files["train"]:
            raise ConfigError("data.train_file is not set.")
        train = self.read_split("train")
        if self.files["val"]:
            val = self.read_split("val")
        else:
            train, val = stratified_split(
                train, self.val_fraction, self.seed, stratify=self.task == CLASSIFICATION
            )
        test = self.read_split("test") if self.files["test"] else []
        return {"train": train, "val": val, "test": test}

    @property
    def val_carved(self) -> bool:
        """Validation is cut from the train rows (no val file; Bitext and DSTC9 always)."""
        return not self.files["val"]

    def sampled_splits(self) -> dict[str, list[Example]]:
        """`load_splits` with the few-shot / fractional sample applied, then the pseudo-labelled
        rows added to train; needs no tokenizer, so a script can get a run's exact rows."""
        splits = self.load_splits()
        if self.subsample.active:
            by_label = self.task == CLASSIFICATION
            splits = self.subsample.apply(splits, self.val_carved, by_label=by_label)
        if self.pseudo_labels:
            if self.task != CLASSIFICATION:
                raise ConfigError("data.pseudo_labels: self-training needs a classification task.")
            known = {str(e.label) for e in splits["train"]}
            pseudo = read_pseudo_labels(self.pseudo_labels, known)
            self.pseudo_rows = len(pseudo)
            splits["train"] = splits["train"] + pseudo
        return splits

    def sample_record(self) -> dict[str, Any] | None:
        """The sampled rows' sources (None without a sample or pseudo-labels):
        <run dir>/data_sample.json. Pseudo-labelled rows are named by their file."""
        if not self.subsample.active and not self.pseudo_labels:
            return None
        splits = self.examples or self.sampled_splits()
        # The pseudo-labelled rows are the last pseudo_rows of train (sampled_splits).
        labelled = splits["train"][: len(splits["train"]) - self.pseudo_rows]
        record = self.subsample.record({**splits, "train": labelled})
        if self.pseudo_labels:
            record["pseudo_labels"] = {"file": str(self.pseudo_labels), "rows": self.pseudo_rows}
        return record

    # -- Lightning hooks -------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        self.examples = self.sampled_splits()
        if not self.examples["train"]:
            raise DataError("the train split is empty.")
        if self.task == CLASSIFICATION and self.label_names:
            self.vocab = LabelVocab(tuple(self.label_names))
        elif self.task == CLASSIFICATION:
            self.vocab = LabelVocab.from_examples(self.examples["train"], where="train split")
        for split, examples in self.examples.items():
            self.rows[split] = self.encode_split(examples)

    def encode_split(self, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Token ids with the label index (or float target) and the row's position."""
        if not examples:  # a split the data config does not have (no test file)
            return []
        encoded = encode_cached(examples, self.tokenizer, self.encoding, self.cache_dir)
        for i, (row, example) in enumerate(zip(encoded, examples, strict=True)):
            row["index"] = i
            if example.label is None:
                row["label"] = None
            elif self.vocab is not None:
                row["label"] = self.vocab.encode(example)
            else:
                row["label"] = float(example.label)
        return encoded

    @property
    def num_labels(self) -> int:
        return len(self.vocab) if self.vocab is not None else 1

    @property
    def id2label(self) -> dict[int, str] | None:
        return self.vocab.id2label if self.vocab is not None else None

    def class_counts(self) -> list[int] | None:
        return self.vocab.counts(self.examples["train"]) if self.vocab is not None else None

    @property
    def is_pair_task(self) -> bool:
        return any(e.response is not None for e in self.examples.get("train", []))

    def collator(self) -> PadCollator:
        dtype = torch.long if self.task == CLASSIFICATION else torch.float32
        return PadCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, dtype)

    def loader(
        self, rows: list[dict[str, Any]], train: bool = False, shard: bool = True
    ) -> DataLoader:
        """Length-bucketed batches; under DDP (and `shard`) this rank's share of the rows.

        `shard=False` gives one process every row: what the evaluation of an export needs,
        whatever process group a run still has open.
        """
        sampler = rank_batch_sampler(
            [len(r["input_ids"]) for r in rows],
            self.batch_size if train else self.eval_batch_size,
            train,
            self.seed,
            self.pool_batches,
            shard=shard,
            # trainer.overfit_batches (debug=overfit): the same few batches again and again
            reshuffle=not getattr(getattr(self, "trainer", None), "overfit_batches", 0),
        )
        if train and self._resume_position is not None:
            sampler.resume(*self._resume_position)
        return DataLoader(
            rows,
            batch_sampler=sampler,
            collate_fn=self.collator(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.rows["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.rows["val"])

    def test_dataloader(self) -> DataLoader:
        if not self.rows["test"]:
            raise ConfigError("data.test_file is not set: there is no test split to evaluate.")
        return self.loader(self.rows["test"])

    # -- resuming --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where training stands in its epoch, saved in every checkpoint: a resumed run skips
        the batches of that epoch it already trained on (the order is a function of the
        seed and the epoch, so the rest of the epoch is the same as without the stop)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "batches_trained": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "epoch" in state_dict:
            self._resume_position = (state_dict["epoch"], state_dict["batches_trained"])

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {len(self.examples.get(s, []))}" for s in SPLITS)
        labels = f"{self.num_labels} labels" if self.vocab else "regression"
        return f"{Path(self.files['train'] or '').parent.name or 'data'}: {sizes}; {labels}"
