"""Training batches drawn from in-memory tensors: one indexing op per step instead of a
``Dataset.__getitem__`` per image plus a collate (the per-image path costs ~1-3 ms a step on CPU
and serialises a GPU run on the host).

An image data set opts in by exposing ``images``: a ``(N, H, W)`` or ``(N, C, H, W)`` uint8 tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import IterableDataset


def uint8_images(dataset) -> Tensor | None:
    """The data set's images as one ``(N, C, H, W)`` uint8 tensor, or None when it has none."""
    images = getattr(dataset, "images", None)
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim not in (3, 4):
        return None
    return images.unsqueeze(1) if images.ndim == 3 else images


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 ``[0, 255]`` batches to float32 ``[0, 1]``; float batches pass through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


class ShuffledRows(IterableDataset):
    """Endless epochs of shuffled batches of rows of one or more tensors with the same number of rows
    (images, token grids and their labels): each step yields the tuple of the tensors' batches, taken
    by one ``index_select`` each; the last partial batch of an epoch is dropped. Epoch ``e`` uses
    permutation seed ``seed + e``; under ``torch.distributed`` each rank takes every ``world``-th batch
    of the same permutation. ``start``: batches (per rank) already consumed, e.g. by the steps of a
    resumed run; they are skipped, so the sequence continues exactly where it stopped."""

    def __init__(self, tensors: Sequence[Tensor], batch_size: int, *, seed: int = 0, start: int = 0):
        rows = {tensor.shape[0] for tensor in tensors if isinstance(tensor, Tensor) and tensor.ndim}
        if not tensors or len(rows) != 1 or not all(isinstance(tensor, Tensor) and tensor.ndim for tensor in tensors):
            shapes = [tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__ for tensor in tensors]
            raise ValueError(f"tensors must be one or more tensors with the same number of rows, got {shapes}")
        num_rows = rows.pop()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= num_rows:
            raise ValueError(f"batch_size must lie in [1, {num_rows}] (the number of rows), got {batch_size!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative integer, got {start!r}")
        self.tensors, self.num_rows, self.batch_size, self.seed, self.start = tuple(tensors), num_rows, batch_size, seed, start

    def __iter__(self):
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        per_rank = len(range(rank, self.num_rows // self.batch_size, world))
        epoch, skip = divmod(self.start, per_rank) if per_rank else (0, 0)
        while True:
            order = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + epoch))
            batches = order[: order.numel() // self.batch_size * self.batch_size].view(-1, self.batch_size)
            for batch in batches[rank::world][skip:]:
                yield tuple(tensor.index_select(0, batch) for tensor in self.tensors)
            epoch, skip = epoch + 1, 0


class ShuffledBatches(ShuffledRows):
    """``ShuffledRows`` of one ``(N, C, H, W)`` uint8 image tensor: yields the ``(batch_size, C, H, W)``
    batches themselves."""

    def __init__(self, images: Tensor, batch_size: int, *, seed: int = 0, start: int = 0):
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {got}")
        super().__init__((images,), batch_size, seed=seed, start=start)

    def __iter__(self):
        for (images,) in super().__iter__():
            yield images


__all__ = ["ShuffledBatches", "ShuffledRows", "to_unit_float", "uint8_images"]
