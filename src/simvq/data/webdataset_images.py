"""Images from WebDataset tar shards at scale: ``ShardedImages`` yields uint8 batches (optionally with
class labels) with rank/worker sharding, seeded per-epoch shuffling and exact mid-epoch resumption;
``write_image_shards`` packs image files (e.g. an ImageNet class-folder tree) into such shards.

The shard format is WebDataset's: an uncompressed tar whose consecutive members sharing a key (the
path up to the first dot of the file name) form one sample, ``<key>.<ext>`` one field of it: the
image is the first of ``IMAGE_FIELDS`` present, the class label the integer text of ``<key>.cls``.

How a run walks the data (everything follows from ``seed``, the epoch, the rank and the world size):

- Each epoch permutes the shard list with ``(seed, epoch)``. With at least as many shards as ranks,
  rank ``r`` owns the permuted shards ``r, r + world, ...``; it reads them in groups of
  ``mix_shards`` shards, each group's samples in a seeded random order. With fewer shards than
  ranks, the samples themselves are permuted and rank ``r`` owns every ``world``-th of them. Each
  rank thus sees every sample it owns exactly once per epoch, and the ranks together see every sample
  of the shards exactly once.
- A rank's epochs, one after another, form its sample sequence; batch ``k`` is samples
  ``[k B, (k + 1) B)`` of it (a batch may span the end of an epoch; with ``epochs`` the last batch can
  be short). DataLoader worker ``w`` of ``W`` builds batches ``k = w, w + W, ...``, which is exactly the
  order the DataLoader returns them in: the rank's batch sequence does not depend on the number of
  workers, and no worker reads another's samples.
- A random crop is drawn from ``(seed, epoch, sample)``, so crops do not depend on ranks or workers
  either.
- Resuming: ``start`` batches already consumed (the recipe's step count), or ``load_state_dict`` of a
  ``state_dict()``: ``{"epoch", "samples"}`` consumed by this rank. The resumed run yields exactly the
  samples (and crops) the uninterrupted run would have yielded from there.

Why not the ``webdataset`` package (it installs here): its pipeline streams each shard start to end
through a shuffle buffer and splits shards between workers, so a rank's order depends on the number
of workers and resuming means replaying the stream; the exact per-epoch plan above needs random
access to the members, which a one-pass tar index (``tarfile``: offsets and sizes) gives with the
standard library. Shards must therefore be local (or mounted) uncompressed tar files, not URLs.
"""

from __future__ import annotations

import bisect
import glob
import io
import os
import random
import re
import tarfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .folders import files_digest
from .image_folder import CROPS, resize_and_crop, to_uint8_tensor

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")
LABEL_FIELDS = ("cls", "cls.txt")
OPEN_FILES = 16  # tar files a worker keeps open
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext: key, then the extension(s)


# ----------------------------------------------------------------------------- the shard list and its index


def expand_shards(shards: str | os.PathLike | Sequence) -> list[Path]:
    """The shard files ``shards`` names: a directory (its ``*.tar``, sorted), a brace pattern
    (``train-{000000..001023}.tar``, ``{a,b}``), a glob, a path, or a list of these."""
    if isinstance(shards, (str, os.PathLike)):
        items = [str(shards)]
    else:
        items = [str(item) for item in shards]
    paths: list[Path] = []
    for item in items:
        for name in _braces(item):
            if Path(name).is_dir():
                paths += sorted(Path(name).glob("*.tar"))
            elif any(c in name for c in "*?["):
                paths += [Path(p) for p in sorted(glob.glob(name))]
            else:
                paths.append(Path(name))
    if not paths:
        raise FileNotFoundError(f"no tar shards found for {shards!r}")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard file(s) do not exist, e.g. {missing[0]}")
    return paths


def _braces(pattern: str) -> list[str]:
    """Bash-style brace expansion of ``{a..b}`` (zero padding kept) and ``{x,y}``, leftmost first."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end():]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        low, high = numeric.groups()
        width = len(low) if low.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(low), int(high) + 1)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in _braces(head + option + tail)]


def index_shard(path: Path, *, labels: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over a tar's headers: ``(offsets, sizes, labels)`` (int64) of each sample's image
    member, in tar order; ``labels`` -1 unless read. Samples without an image are skipped."""
    offsets, sizes, classes = [], [], []
    try:
        tar = tarfile.open(path, mode="r:")  # uncompressed only: members are read by offset
    except tarfile.ReadError as error:
        raise ValueError(f"shard {path} is not an uncompressed tar file: {error}") from error
    with tar:
        key, fields = None, {}

        def flush():
            image = next((fields[f] for f in IMAGE_FIELDS if f in fields), None)
            if image is None:
                return
            label = -1
            if labels:
                member = next((fields[f] for f in LABEL_FIELDS if f in fields), None)
                if member is None:
                    raise ValueError(f"sample {key} of shard {path} has no class label ({' or '.join('.' + f for f in LABEL_FIELDS)})")
                label = int(tar.extractfile(member).read().decode().strip())
            offsets.append(image.offset_data)
            sizes.append(image.size)
            classes.append(label)

        for member in tar:
            if not member.isfile():
                continue
            match = _KEY.match(member.name)
            if match is None:
                continue
            if match.group(1) != key:
                flush()
                key, fields = match.group(1), {}
            fields[match.group(2).lower()] = member
        flush()
    return np.asarray(offsets, np.int64), np.asarray(sizes, np.int64), np.asarray(classes, np.int64)


# ----------------------------------------------------------------------------- the data set


class ShardedImages(IterableDataset):
    """uint8 image batches ``(B, channels, image_size, image_size)`` from WebDataset shards (with
    ``labels``: ``(images, labels)``, labels int64 ``(B,)``). Use with ``DataLoader(dataset,
    batch_size=None, num_workers=W)``; see the module docstring for the order and resumption.

    Args:
        shards: the tar files (see ``expand_shards``); their order matters (it is permuted per epoch).
        batch_size: images per batch.
        image_size, channels, crop: as ``ImageFolder`` (short side resized, then a square crop).
        seed: the shuffles and the crops.
        start: batches this rank already consumed (e.g. the steps of a resumed run).
        epochs: stop after this many epochs (counted from epoch 0, so a resumed run stops where the
            uninterrupted one does); None: endless (training).
        mix_shards: shards whose samples are shuffled together (random access within them).
        labels: also yield the ``.cls`` labels.
        rank, world_size: this process's place; default torch.distributed's, else $RANK/$WORLD_SIZE.
    """

    def __init__(
        self,
        shards,
        *,
        batch_size: int,
        image_size: int = 256,
        channels: int = 3,
        crop: str = "random",
        seed: int = 0,
        start: int = 0,
        epochs: int | None = None,
        mix_shards: int = 8,
        labels: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        for name, value, low in (("batch_size", batch_size, 1), ("image_size", image_size, 1), ("start", start, 0), ("mix_shards", mix_shards, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"epochs must be a positive integer or None, got {epochs!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        indexed = [(path, index_shard(path, labels=labels)) for path in expand_shards(shards)]
        # shards without images are left out, so every shard a rank owns gives it images
        self.shards = [path for path, (offsets, _, _) in indexed if len(offsets)]
        indexed = [index for _, index in indexed if len(index[0])]
        if not indexed:
            raise ValueError(f"no images ({', '.join('.' + f for f in IMAGE_FIELDS)}) in the shards {shards!r}")
        self.counts = np.array([len(offsets) for offsets, _, _ in indexed], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])  # sample id of each shard's first sample
        self.offsets = np.concatenate([offsets for offsets, _, _ in indexed])
        self.sizes = np.concatenate([sizes for _, sizes, _ in indexed])
        self.labels = torch.from_numpy(np.concatenate([classes for _, _, classes in indexed])) if labels else None
        self.sample_shard = np.repeat(np.arange(len(self.shards)), self.counts)
        self.batch_size, self.image_size, self.channels, self.crop = batch_size, image_size, channels, crop
        self.seed, self.epochs, self.mix_shards, self.with_labels = seed, epochs, mix_shards, labels
        self._rank, self._world = rank, world_size
        self._start: tuple = ("batches", start)
        self._epoch_starts: dict[tuple, list[int]] = {}  # (rank, world) -> where epochs 0, 1, ... begin
        self._plans: OrderedDict = OrderedDict()
        self._files: OrderedDict = OrderedDict()  # shard -> open file, in this process
        self._files_pid: int | None = None

    def __len__(self) -> int:
        """Images in the shards (all ranks)."""
        return int(self.counts.sum())

    # -- where this process stands ---------------------------------------------------------------

    def placement(self) -> tuple[int, int]:
        """``(rank, world_size)``: as given, else torch.distributed's, else $RANK / $WORLD_SIZE, else (0, 1)."""
        import torch.distributed as dist

        if self._rank is not None or self._world is not None:
            rank, world = self._rank or 0, self._world or 1
        elif dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if not 0 <= rank < world:
            raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of {world}")
        if len(self.shards) < world and len(self) < world:
            raise ValueError(f"{len(self)} images cannot be shared among {world} ranks")
        return rank, world

    # -- the plan of an epoch ----------------------------------------------------------------------

    def _shard_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.shards))

    def epoch_length(self, epoch: int, rank: int, world: int) -> int:
        """Samples rank ``rank`` of ``world`` reads in ``epoch``."""
        if len(self.shards) >= world:
            return int(self.counts[self._shard_order(epoch)[rank::world]].sum())
        return len(range(rank, len(self), world))

    def epoch_plan(self, epoch: int, rank: int, world: int) -> np.ndarray:
        """The sample ids rank ``rank`` of ``world`` reads in ``epoch``, in order (int64)."""
        key = (epoch, rank, world)
        if key not in self._plans:
            if len(self.shards) >= world:
                mine = self._shard_order(epoch)[rank::world]
                pieces = []
                for group, first in enumerate(range(0, len(mine), self.mix_shards)):
                    ids = np.concatenate([np.arange(self.starts[s], self.starts[s + 1]) for s in mine[first : first + self.mix_shards]])
                    pieces.append(np.random.default_rng([self.seed, epoch, 1, rank, world, group]).permutation(ids))
                plan = np.concatenate(pieces)
            else:
                plan = np.random.default_rng([self.seed, epoch, 2]).permutation(len(self))[rank::world]
            self._plans[key] = plan
            while len(self._plans) > 2:  # the epoch being read and the next one
                self._plans.popitem(last=False)
        return self._plans[key]

    def _epoch_start(self, epoch: int, rank: int, world: int) -> int:
        """Position of ``epoch``'s first sample in the rank's sequence of epochs."""
        starts = self._epoch_starts.setdefault((rank, world), [0])
        while len(starts) <= epoch:
            starts.append(starts[-1] + self.epoch_length(len(starts) - 1, rank, world))
        return starts[epoch]

    def _locate(self, position: int, rank: int, world: int) -> tuple[int, int]:
        """``(epoch, index within it)`` of a position in the rank's sequence."""
        starts = self._epoch_starts.setdefault((rank, world), [0])
        while starts[-1] <= position:
            self._epoch_start(len(starts), rank, world)
        epoch = bisect.bisect_right(starts, position) - 1
        return epoch, position - starts[epoch]

    # -- resumption --------------------------------------------------------------------------------

    def _start_position(self, rank: int, world: int) -> int:
        kind, *values = self._start
        if kind == "batches":
            return values[0] * self.batch_size
        epoch, samples = values
        return self._epoch_start(epoch, rank, world) + samples

    def state_dict(self, batches_consumed: int = 0) -> dict:
        """``{"epoch", "samples"}``: where this rank stands after ``batches_consumed`` batches of an
        iteration (counted from this data set's start): the epoch and the samples of it consumed."""
        rank, world = self.placement()
        epoch, samples = self._locate(self._start_position(rank, world) + batches_consumed * self.batch_size, rank, world)
        return {"epoch": epoch, "samples": samples}

    def load_state_dict(self, state: dict) -> None:
        """Start the next iteration at ``state`` (from ``state_dict``)."""
        epoch, samples = state["epoch"], state["samples"]
        if not (isinstance(epoch, int) and isinstance(samples, int) and epoch >= 0 and samples >= 0):
            raise ValueError(f"state must hold non-negative integers epoch and samples, got {state!r}")
        self._start = ("epoch", epoch, samples)

    # -- reading -----------------------------------------------------------------------------------

    def __iter__(self):
        rank, world = self.placement()
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        start = self._start_position(rank, world)
        end = None if self.epochs is None else self._epoch_start(self.epochs, rank, world)
        batch = worker
        while True:
            low = start + batch * self.batch_size
            high = low + self.batch_size if end is None else min(low + self.batch_size, end)
            if low >= high:
                return
            yield self._batch(range(low, high), rank, world)
            batch += workers

    def samples(self, positions: Iterable[int], rank: int, world: int) -> list[tuple[int, int]]:
        """``(epoch, sample id)`` at positions of the rank's sequence."""
        out = []
        for position in positions:
            epoch, index = self._locate(position, rank, world)
            out.append((epoch, int(self.epoch_plan(epoch, rank, world)[index])))
        return out

    def _batch(self, positions: range, rank: int, world: int):
        chosen = self.samples(positions, rank, world)
        images = torch.stack([self.image(sample, epoch) for epoch, sample in chosen])
        if self.labels is None:
            return images
        return images, self.labels[torch.tensor([sample for _, sample in chosen])]

    def image(self, sample: int, epoch: int = 0) -> torch.Tensor:
        """Sample ``sample``'s image as uint8 ``(channels, size, size)``, cropped as in ``epoch``."""
        from PIL import Image

        shard = int(self.sample_shard[sample])
        handle = self._file(shard)
        handle.seek(int(self.offsets[sample]))
        data = handle.read(int(self.sizes[sample]))
        rng = random.Random(f"{self.seed}-{epoch}-{sample}") if self.crop == "random" else None
        try:
            with Image.open(io.BytesIO(data)) as image:
                image = resize_and_crop(image.convert("RGB"), self.image_size, crop=self.crop, rng=rng)
        except Exception as error:  # PIL's UnidentifiedImageError, truncated data, ...
            index = sample - int(self.starts[shard])
            raise ValueError(f"cannot decode image {index} of shard {self.shards[shard]}: {error}") from error
        return to_uint8_tensor(image, self.channels)

    def _file(self, shard: int):
        if self._files_pid != os.getpid():  # a forked worker: never share the parent's file offsets
            self._files, self._files_pid = OrderedDict(), os.getpid()
        handle = self._files.pop(shard, None) or open(self.shards[shard], "rb")  # noqa: SIM115 -- kept open
        self._files[shard] = handle
        while len(self._files) > OPEN_FILES:
            self._files.popitem(last=False)[1].close()
        return handle

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"], state["_files_pid"] = OrderedDict(), None  # open files stay in their process
        return state


class ShardedImageSet(Dataset):
    """The images of WebDataset shards as a map-style data set of float32 ``(channels, size, size)``
    in ``[0, 1]`` (item ``i``: the ``i``-th image in shard order, centre-cropped by default), for
    evaluation and token counts; training reads ``ShardedImages`` batches. ``cache_key`` names the
    shard files, the size, the channels and the crop."""

    def __init__(self, shards, *, image_size: int = 256, channels: int = 3, crop: str = "center", seed: int = 0,
                 labels: bool = False):
        self.sharded = ShardedImages(shards, batch_size=1, image_size=image_size, channels=channels, crop=crop, seed=seed, labels=labels)
        self.image_size, self.channels, self.crop = image_size, channels, crop
        self.cache_key = f"shards-{files_digest(self.sharded.shards)}-{len(self.sharded)}-{image_size}px-{channels}ch-{crop}"

    def __len__(self) -> int:
        return len(self.sharded)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} of {len(self)}")
        return self.sharded.image(index % len(self)).float() / 255.0

    @property
    def labels(self) -> torch.Tensor | None:
        """Each image's class (int64), when read with ``labels=True``."""
        return self.sharded.labels


def write_image_shards(
    files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    labels: Sequence[int] | None = None,
    per_shard: int = 1000,
    seed: int | None = 0,
    prefix: str = "shard",
) -> list[Path]:
    """Pack image files into WebDataset shards ``out_dir/<prefix>-000000.tar, ...`` of ``per_shard``
    samples: key ``%09d`` (the sample's place), ``.<suffix>`` the file's bytes unchanged and, with
    ``labels``, ``.cls`` its label. ``seed`` shuffles the files first (so each shard mixes the classes
    of a class-sorted file list; None keeps the order). Member metadata is fixed, so the same files
    give the same bytes. E.g. ImageNet: ``d = ImageFolder(root, class_folders=True);
    write_image_shards(d.files, out, labels=d.labels.tolist())``."""
    files = [Path(f) for f in files]
    if labels is not None and len(labels) != len(files):
        raise ValueError(f"got {len(labels)} labels for {len(files)} files")
    if isinstance(per_shard, bool) or not isinstance(per_shard, int) or per_shard < 1:
        raise ValueError(f"per_shard must be a positive integer, got {per_shard!r}")
    order = list(range(len(files)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for shard, first in enumerate(range(0, len(order), per_shard)):
        path = out_dir / f"{prefix}-{shard:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for place in range(first, min(first + per_shard, len(order))):
                index = order[place]
                members = [(files[index].suffix.lower().lstrip("."), files[index].read_bytes())]
                if labels is not None:
                    members.append(("cls", str(int(labels[index])).encode()))
                for extension, data in members:
                    info = tarfile.TarInfo(f"{place:09d}.{extension}")
                    info.size, info.mode, info.mtime = len(data), 0o444, 0
                    tar.addfile(info, io.BytesIO(data))
        written.append(path)
    return written


__all__ = ["IMAGE_FIELDS", "ShardedImageSet", "ShardedImages", "expand_shards", "index_shard", "write_image_shards"]
