"""The training image stream: which sample keys each iteration loads, and how.

Why a stream of keys: everything random about a sample (which image, its augmentation, the
multi-scale size) is a function of its position in the stream, so a run resumed at iteration
``i`` (position ``i * batch``) sees what an uninterrupted run would have seen.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from darkcsp.train.augment import AugmentParams, training_sample


class StreamBatchSampler:
    """An endless stream of mini-batches of sample keys ``(index, w, h, position)``.

    Position p of this rank's stream is image ``p % L`` of epoch ``p // L`` of a
    :class:`DistributedSampler` (L images per rank), so any starting iteration can be resumed.
    """

    def __init__(self, count: int, mini_batch: int, batch: int, start_iteration: int,
                 seed: int, world: int, rank: int,
                 size_of: Callable[[int], tuple[int, int]]) -> None:
        self.sampler = DistributedSampler(range(count), num_replicas=world, rank=rank,
                                          shuffle=True, seed=seed, drop_last=False)
        self.mini, self.batch = mini_batch, batch
        self.start = start_iteration * batch
        self.size_of = size_of
        self._epoch = -1
        self._order: list[int] = []

    def index(self, position: int) -> int:
        length = len(self.sampler)
        epoch, offset = divmod(position, length)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._order = list(iter(self.sampler))
            self._epoch = epoch
        return self._order[offset]

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        position = self.start
        while True:
            w, h = self.size_of(position // self.batch)
            yield [(self.index(p), w, h, p) for p in range(position, position + self.mini)]
            position += self.mini


class TrainDataset(Dataset):
    """Sample keys -> augmented (image tensor, truth rows, unreadable file names)."""

    def __init__(self, source, params: AugmentParams, seed: int, rank: int) -> None:
        self.source, self.params, self.seed, self.rank = source, params, seed, rank

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, i: int) -> tuple[np.ndarray | None, np.ndarray, str]:
        return self.source.image(i), self.source.labels(i), self.source.name(i)

    def __getitem__(self, key: tuple[int, int, int, int]):
        index, w, h, position = key
        return training_sample(self._load, index, len(self.source), w, h, self.params,
                               [self.seed, self.rank, position])


def collate(items) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack images; pad truths to (B, T, 5) with zero rows (x = 0 ends a list, as Darknet)."""
    images = torch.stack([it[0] for it in items])
    most = max(1, max(len(it[1]) for it in items))
    truth = torch.zeros(len(items), most, 5)
    for n, it in enumerate(items):
        if len(it[1]):
            truth[n, :len(it[1])] = torch.from_numpy(it[1])
    return images, truth, [name for it in items for name in it[2]]


def default_workers(device: torch.device) -> int:
    """Loader processes when not given: on a CPU run torch's threads already use the cores,
    and loader processes only compete with them (2 cores: 4.9 images/s with 2 workers, 12.9
    with none), so keep the cores beyond two; CUDA runs load on up to 4."""
    cores = os.cpu_count() or 1
    return min(4, cores) if device.type == "cuda" else min(4, max(0, cores - 2))
