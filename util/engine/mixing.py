"""Batches that mix labelled and unlabeled frames (trainStudent.py --unlabeled).

The training set is the labelled train split followed by the unlabeled frames (one ConcatDataset:
indices ``0..n_labelled-1`` labelled, the rest unlabeled). Two ways to draw an epoch:

- every frame once (the default): torch's DistributedSampler over the whole set, so labelled and
  unlabeled frames are shuffled together, each process its share, as for the labelled split alone;
- ``--unlabeled-per-batch K`` (:class:`MixedBatchSampler`): every batch holds ``batch_size - K``
  labelled and ``K`` unlabeled frames; an epoch is one pass over the labelled frames, and the
  unlabeled frames are taken in turn from a stream of permutations that continues across epochs
  (each frame is used about equally often, whatever the pool's size).

Both depend only on (seed, epoch): resuming at an epoch draws the same batches, and every process
draws the same global order and takes every world_size-th part of it.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def _permutation(n: int, seed: int, *key: int) -> torch.Tensor:
    """A permutation of range(n) fixed by (seed, *key)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, *key]).generate_state(1, np.uint64)[0] >> 1))
    return torch.randperm(n, generator=g)


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size - per_batch`` labelled indices (``0..n_labelled-1``) and ``per_batch``
    unlabeled ones (``n_labelled..n_labelled+n_unlabeled-1``) for process ``rank`` of ``world_size``."""

    def __init__(self, n_labelled: int, n_unlabeled: int, batch_size: int, per_batch: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not 0 < per_batch < batch_size:
            raise ValueError(f"MixedBatchSampler: need 0 < per_batch < batch_size, got {per_batch} and {batch_size}")
        if n_labelled < 1 or n_unlabeled < 1:
            raise ValueError(f"MixedBatchSampler: need labelled and unlabeled frames, got {n_labelled}, {n_unlabeled}")
        self.n_labelled, self.n_unlabeled = n_labelled, n_unlabeled
        self.per_batch, self.n_lab_batch = per_batch, batch_size - per_batch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.labelled_share = math.ceil(n_labelled / world_size)  # DistributedSampler's, padded
        self.n_batches = math.ceil(self.labelled_share / self.n_lab_batch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    @property
    def unlabeled_per_epoch(self) -> int:
        """Unlabeled frames this process draws per epoch."""
        return self.n_batches * self.per_batch

    def _labelled(self) -> list[int]:
        order = _permutation(self.n_labelled, self.seed, self.epoch, 0).tolist()
        total = self.labelled_share * self.world_size
        order += (order * math.ceil(total / len(order)))[:total - len(order)]  # pad as DistributedSampler
        return order[self.rank:total:self.world_size]

    def _unlabeled(self) -> list[int]:
        need = self.unlabeled_per_epoch * self.world_size  # over every process
        start = self.epoch * need  # position in the endless stream of permutations
        out: list[int] = []
        n = self.n_unlabeled
        for q in range(start // n, (start + need - 1) // n + 1):
            out += _permutation(n, self.seed, q, 1).tolist()
        out = out[start - (start // n) * n:][:need]
        return [self.n_labelled + i for i in out[self.rank::self.world_size]]

    def __iter__(self) -> Iterator[list[int]]:
        lab, unl = self._labelled(), self._unlabeled()
        k, m = self.per_batch, self.n_lab_batch
        for b in range(self.n_batches):
            yield lab[b * m:(b + 1) * m] + unl[b * k:(b + 1) * k]
