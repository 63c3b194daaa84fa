"""Token data sets for the prior: a split's images encoded once by a trained tokenizer and kept on
disk, keyed on the tokenizer's weights so a changed tokenizer never serves stale tokens.

    codes, labels = cached_tokens(path, key, lambda: encode_dataset(tokenizer.encode, dataset))

The file is safetensors (``codes`` int32 ``(N, h, w)``, ``labels`` int64 ``(N,)``) with the key in
its metadata; a file whose key differs is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .in_memory import to_unit_float, uint8_images


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_labels(dataset) -> Tensor | None:
    """The data set's ``labels`` ``(N,)`` int64 tensor, or None when it has none."""
    labels = getattr(dataset, "labels", None)
    return labels.long() if isinstance(labels, Tensor) else None


@torch.no_grad()
def encode_dataset(encode: Callable[[Tensor], Tensor], dataset, *, batch_size: int = 256, progress: bool = True) -> tuple[Tensor, Tensor]:
    """``(codes (N, h, w) int32, labels (N,) int64)``: every image of ``dataset`` through ``encode``
    (images ``(B, C, H, W)`` in ``[0, 1]`` -> codes); labels are -1 for a data set without them."""
    from tqdm.auto import tqdm

    images = uint8_images(dataset)  # in-memory sets: one index op per batch
    chunks = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="tokenize", disable=not progress, leave=False):
        stop = min(start + batch_size, len(dataset))
        if images is not None:
            batch = to_unit_float(images[start:stop])
        else:
            batch = torch.stack([dataset[i] for i in range(start, stop)])
        chunks.append(encode(batch).to("cpu", torch.int32))
    labels = dataset_labels(dataset)
    if labels is None:
        labels = torch.full((len(dataset),), -1, dtype=torch.long)
    return torch.cat(chunks), labels


def cached_tokens(path: str | os.PathLike, key: str, compute: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``(codes, labels)`` from ``path`` when it was written under ``key``, else ``compute()``'s,
    written there atomically first."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ..utils import atomic_path

    path = Path(path)
    if path.is_file():
        with safe_open(str(path), framework="pt") as stored:
            if (stored.metadata() or {}).get("key") == key:
                return stored.get_tensor("codes"), stored.get_tensor("labels")
    codes, labels = compute()
    codes, labels = codes.to(torch.int32).contiguous(), labels.to(torch.long).contiguous()
    with atomic_path(path) as tmp:
        save_file({"codes": codes, "labels": labels}, tmp, metadata={"key": key, "library": "simvq"})
    return codes, labels


__all__ = ["cached_tokens", "dataset_labels", "encode_dataset", "file_sha256"]
