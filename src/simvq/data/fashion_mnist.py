"""Fashion-MNIST (Xiao et al. 2017) from the Debian package ``dataset-fashion-mnist`` (IDX .gz files).

No download ever happens: the files come from the system package, or from ``root`` /
``$SIMVQ_FASHION_MNIST`` when they live elsewhere.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class MissingDatasetError(FileNotFoundError):
    """A data set's files are not where they should be; the message says how to get them."""


def fashion_mnist_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$SIMVQ_FASHION_MNIST``, else the Debian package's directory."""
    return Path(root or os.environ.get("SIMVQ_FASHION_MNIST") or DEFAULT_FASHION_MNIST_ROOT)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped or not, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {data[:4]!r})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def fashion_mnist_file(split: str, kind: str, root: str | os.PathLike | None = None) -> Path:
    """The IDX file of ``split`` ("train"/"test") and ``kind`` ("images"/"labels"); says how to get it if missing."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"split must be one of {sorted(SPLIT_PREFIX)}, got {split!r}")
    directory = fashion_mnist_root(root)
    stem = f"{SPLIT_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    path = _find(directory, stem)
    if path is None:
        raise MissingDatasetError(
            f"Fashion-MNIST {split} {kind} not found in {directory}. Install them with "
            f"`sudo apt-get install dataset-fashion-mnist`, or point data.root (or $SIMVQ_FASHION_MNIST) "
            f"at a directory holding {stem}.gz."
        )
    return path


def fashion_mnist_size(split: str, root: str | os.PathLike | None = None) -> int:
    """How many images ``split`` holds, read from its IDX header alone (no image is decoded)."""
    path = fashion_mnist_file(split, "images", root)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
        zero, dtype_code, ndim = struct.unpack(">HBB", handle.read(4))
        if zero != 0 or dtype_code != 0x08 or ndim < 1:
            raise ValueError(f"{path} is not an unsigned-byte IDX file")
        return struct.unpack(">I", handle.read(4))[0]


class FashionMNIST(Dataset):
    """Fashion-MNIST images ``(1, 28, 28)`` in ``[0, 1]`` (labels in ``self.labels``).

    Args:
        split: "train" (60,000) or "test" (10,000).
        root: directory holding the IDX files; default ``$SIMVQ_FASHION_MNIST`` or
            /usr/share/datasets/fashion-mnist (``apt-get install dataset-fashion-mnist``).
    """

    def __init__(self, split: str = "train", *, root: str | os.PathLike | None = None):
        images_path, labels_path = (fashion_mnist_file(split, kind, root) for kind in ("images", "labels"))
        self.split = split
        self.images = torch.from_numpy(read_idx(images_path).copy())  # (N, 28, 28) uint8
        self.labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
        self.cache_key = f"fashion_mnist-{split}"
        self.channels, self.image_size = 1, 28

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].unsqueeze(0).float() / 255.0
