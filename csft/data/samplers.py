"""Length-bucketed batches: little padding, yet a different shuffled order every epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from csft.errors import ConfigError


class EpochShuffle(Sampler[int]):
    """A permutation of the rows that is a function of (seed, epoch) alone.

    It is the batch sampler's `.sampler`, which is where Lightning calls `set_epoch` at every
    epoch start (it never calls it on a batch sampler itself).
    """

    def __init__(self, size: int, seed: int = 0, reshuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.reshuffle = reshuffle  # False: epoch 0's order every epoch (overfitting on purpose)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if self.reshuffle:
            self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=self.generator()).tolist())

    def __len__(self) -> int:
        return self.size


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into pools of `batch_size * pool_batches` rows, sort each pool by length,
    cut pools into batches and shuffle the batches.

    Rows of similar length share a batch (so dynamic padding pads little), while the order
    still changes every epoch. The order is a function of (seed, epoch) only, kept by
    `self.sampler` (an `EpochShuffle`). With `shuffle=False` batches come in length order
    (for evaluation, where order is irrelevant).

    Under DDP (`num_replicas` > 1), training builds the same global batches of
    `batch_size * num_replicas` rows on every rank and yields this rank's slice, so a run on
    N processes sees the batches a 1-process run with N times the batch size would; a short
    last global batch is filled up with its own rows, so every rank yields as many batches.
    Evaluation (`shuffle=False`) deals each row to exactly one rank and never repeats one, so
    metrics count every row once; ranks may then get one batch more or less than others.

    `reshuffle=False` keeps epoch 0's batches in every epoch.
    `resume(epoch, batches)` makes the iteration of that epoch skip the batches a resumed
    run has already trained on.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        reshuffle: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.sampler = EpochShuffle(len(self.lengths), seed, reshuffle)
        self.pool_batches = pool_batches
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self._skip: tuple[int, int] | None = None  # (epoch, batches already trained)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def resume(self, epoch: int, batches: int) -> None:
        """Skip the first `batches` batches when `epoch` is iterated next."""
        self._skip = (epoch, batches)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def _global_batches(self) -> list[list[int]]:
        size = self.global_batch_size
        generator = self.sampler.generator()
        order = torch.randperm(len(self.lengths), generator=generator)
        batches = []
        for pool in order.split(size * self.pool_batches):
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches.extend(pool.split(size))
        if self.drop_last and batches and len(batches[-1]) < size:
            batches.pop()
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i].tolist() for i in shuffled]

    def _train_batches(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            if self.num_replicas == 1:
                yield batch
                continue
            while len(batch) < self.num_replicas:  # every rank needs at least one row
                batch = batch + batch
            share = -(-len(batch) // self.num_replicas)
            mine = batch[self.rank * share : (self.rank + 1) * share]
            yield mine or batch[:share]

    def _eval_rows(self) -> torch.Tensor:
        """This rank's rows in length order: every num_replicas-th row of the sorted split."""
        return torch.argsort(self.lengths, stable=True)[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from (b.tolist() for b in self._eval_rows().split(self.batch_size))
            return
        skip = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            skip = self._skip[1]
        self._skip = None
        for number, batch in enumerate(self._train_batches()):
            if number >= skip:
                yield batch

    def __len__(self) -> int:
        if not self.shuffle:
            return -(-len(self._eval_rows()) // self.batch_size)
        if self.drop_last:
            return len(self.lengths) // self.global_batch_size
        return -(-len(self.lengths) // self.global_batch_size)


def rank_batch_sampler(
    lengths: Sequence[int],
    batch_size: int,
    train: bool,
    seed: int,
    pool_batches: int,
    shard: bool = True,
    reshuffle: bool = True,
    fix: str = "each needs at least one row.",
) -> LengthBucketBatchSampler:
    """This process's length-bucketed batches: under DDP (and `shard`) its share of the rows.

    What both data modules (fine-tuning, masked-LM) batch with. An evaluation split with
    fewer rows than DDP processes is a `ConfigError` ending in `fix`.
    """
    distributed = shard and torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if distributed else 1
    if not train and 0 < len(lengths) < world:
        raise ConfigError(
            f"an evaluation split has {len(lengths)} rows, fewer than the {world} DDP "
            f"processes (trainer.devices x trainer.num_nodes): {fix}"
        )
    return LengthBucketBatchSampler(
        list(lengths),
        batch_size,
        shuffle=train,
        seed=seed,
        pool_batches=pool_batches,
        num_replicas=world,
        rank=torch.distributed.get_rank() if distributed else 0,
        reshuffle=reshuffle,
    )
