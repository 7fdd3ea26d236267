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
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start, so each epoch gets a new order."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        if not self.shuffle:
            order = torch.argsort(self.lengths, stable=True)
            return [b.tolist() for b in order.split(self.batch_size)]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        batches = []
        for pool in order.split(self.batch_size * self.pool_batches):
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches.extend(pool.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i].tolist() for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.lengths) // self.batch_size
        return -(-len(self.lengths) // self.batch_size)
