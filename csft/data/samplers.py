"""Length-bucketed batches: little padding, yet a different shuffled order every epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into pools of `batch_size * pool_batches` rows, sort each pool by length,
    cut pools into batches and shuffle the batches.

    Rows of similar length share a batch (so dynamic padding pads little), while the order
    still changes every epoch. The order is a function of (seed, epoch) only. With
    `shuffle=False` batches come in length order (for evaluation, where order is irrelevant).

    Under DDP (`num_replicas` > 1) the sampler builds the same global batches of
    `batch_size * num_replicas` rows on every rank and yields this rank's slice, so a run on
    N processes sees the batches a 1-process run with N times the batch size would. A short
    last global batch is filled up with its own rows, so every rank yields as many batches.
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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.drop_last = drop_last
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start, so each epoch gets a new order."""
        self.epoch = epoch

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def _global_batches(self) -> list[list[int]]:
        size = self.global_batch_size
        if not self.shuffle:
            order = torch.argsort(self.lengths, stable=True)
            return [b.tolist() for b in order.split(size)]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        batches = []
        for pool in order.split(size * self.pool_batches):
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches.extend(pool.split(size))
        if self.drop_last and batches and len(batches[-1]) < size:
            batches.pop()
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i].tolist() for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            if self.num_replicas == 1:
                yield batch
                continue
            while len(batch) < self.num_replicas:  # every rank needs at least one row
                batch = batch + batch
            share = -(-len(batch) // self.num_replicas)
            mine = batch[self.rank * share : (self.rank + 1) * share]
            yield mine or batch[:share]

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.lengths) // self.global_batch_size
        return -(-len(self.lengths) // self.global_batch_size)
