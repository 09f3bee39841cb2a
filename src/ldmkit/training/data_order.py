"""A deterministic data order: a seeded permutation per epoch, cut into global batches, sharded by rank.

The order is a pure function of ``(seed, epoch)``, and the position in it is one integer (global
micro-batches consumed), so a run resumed mid-epoch sees exactly the batches it would have seen. Under
``torchrun`` every rank computes the same permutation and takes its own contiguous slice of each global
batch (as ``DistributedSampler`` does), so K processes with batch B/K see the same examples as one
process with batch B.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ldmkit.types import Batch

_MASK63 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style mixing; stable across Python versions)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & _MASK63


class BatchSource(Protocol):
    """What the training loop reads: a length and a way to fetch a batch by dataset indices."""

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor) -> Batch: ...


class TensorData:
    """In-memory images ``[N, C, H, W]`` (and optional labels ``[N]``) as a :class:`BatchSource`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> Batch:
        labels = None if self.labels is None else self.labels[indices]
        return Batch(images=self.images[indices], labels=labels, indices=indices)


class DatasetData:
    """Adapts a map-style dataset to a :class:`BatchSource`: items are stacked by ``collate`` (a function of
    a list of items returning a :class:`Batch`) or, by default, taken as ``image`` or ``(image, label)``."""

    def __init__(self, dataset: Any, collate: Callable[[list], Batch] | None = None):
        self.dataset, self.collate = dataset, collate

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: torch.Tensor) -> Batch:
        items = [self.dataset[int(i)] for i in indices]
        if self.collate is not None:
            batch = self.collate(items)
            batch.indices = indices
            return batch
        if isinstance(items[0], (tuple, list)):
            images = torch.stack([torch.as_tensor(it[0]) for it in items])
            labels = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64)
            return Batch(images=images, labels=labels, indices=indices)
        return Batch(images=torch.stack([torch.as_tensor(it) for it in items]), indices=indices)


def as_batch_source(data: Any) -> BatchSource:
    return data if hasattr(data, "batch") else DatasetData(data)


@dataclass
class DataOrder:
    """Global batches of ``global_batch`` indices, in a fresh seeded permutation each epoch (last partial
    batch dropped); this rank gets ``[rank * b, (rank + 1) * b)`` of each, ``b = global_batch / world``."""

    num_examples: int
    global_batch: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        if self.global_batch % self.world_size:
            raise ValueError(f"global batch {self.global_batch} is not divisible by {self.world_size} processes")
        if self.num_examples < self.global_batch:
            raise ValueError(f"the dataset has {self.num_examples} examples, fewer than one batch "
                             f"({self.global_batch})")
        self.batches_per_epoch = self.num_examples // self.global_batch
        self._cached: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x0DA7A))
            self._cached = (epoch, torch.randperm(self.num_examples, generator=g))
        return self._cached[1]

    def position(self, consumed: int) -> tuple[int, int]:
        """``(epoch, batch_in_epoch)`` after ``consumed`` global batches."""
        return divmod(consumed, self.batches_per_epoch)

    def indices(self, consumed: int) -> torch.Tensor:
        """This rank's dataset indices for global batch number ``consumed`` (0-based over the whole run)."""
        epoch, k = self.position(consumed)
        per_rank = self.global_batch // self.world_size
        start = k * self.global_batch + self.rank * per_rank
        return self.permutation(epoch)[start:start + per_rank]


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with its tensors on ``device`` (the same object on CPU)."""
    if device.type == "cpu":
        return batch
    move = (lambda v: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
    return Batch(images=move(batch.images), labels=move(batch.labels), captions=batch.captions,
                 boxes=batch.boxes, box_labels=batch.box_labels, indices=batch.indices, extra=batch.extra)
