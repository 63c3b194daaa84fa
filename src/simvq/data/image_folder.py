"""Users' own images: every image file under a directory, resized and cropped to a square."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .folders import files_digest, folder_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CROPS = ("center", "random")


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def to_uint8_tensor(image, channels: int) -> torch.Tensor:
    """A PIL image as uint8 ``(channels, H, W)``."""
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.array(image, dtype=np.uint8)  # a writable copy
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def to_tensor(image, channels: int) -> torch.Tensor:
    """A PIL image as float32 ``(channels, H, W)`` in ``[0, 1]``."""
    return to_uint8_tensor(image, channels).float() / 255.0


def resize_and_crop(image, size: int, *, crop: str, rng: random.Random | None = None):
    """Resize the short side to ``size`` (bicubic, antialiased) then crop a ``size`` square."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    if crop == "random" and rng is not None:
        left, top = rng.randint(0, new_w - size), rng.randint(0, new_h - size)
    else:
        left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageFolder(Dataset):
    """Images of any size under ``root`` (recursively), as ``(channels, size, size)`` in ``[0, 1]``.

    Args:
        root: directory of images (png/jpg/bmp/gif/tif/webp).
        image_size: side of the square output.
        channels: 3 (RGB) or 1 (grayscale).
        crop: "center" (deterministic, for eval) or "random" (a new crop each time an item is read).
        files: an explicit file list instead of scanning ``root`` (used for train/test splits).
        class_folders: ImageNet's layout, ``root/<class>/**/<image>``: ``self.classes`` holds the
            sorted class folder names and ``self.labels`` each image's class index (int64), as
            torchvision's ``ImageFolder`` numbers them; items stay images. An image directly under
            ``root`` is refused.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_size: int = 64,
        channels: int = 3,
        crop: str = "center",
        files: list[Path] | None = None,
        seed: int = 0,
        class_folders: bool = False,
    ):
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.root = Path(root)
        files = folder_files(self.root, files, list_images, folder="image", nouns="images", suffixes=IMAGE_SUFFIXES)
        self.files = list(files)
        self.image_size, self.channels, self.crop = image_size, channels, crop
        self.seed = seed
        self._rng: tuple[tuple, random.Random] | None = None
        self.cache_key = f"folder-{files_digest(self.files)}-{image_size}px-{channels}ch-{crop}"
        if class_folders:
            self.classes, self.labels = class_labels(self.root, self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[index]) as image:
            image = resize_and_crop(image.convert("RGB"), self.image_size, crop=self.crop, rng=self.rng)
        return to_tensor(image, self.channels)

    @property
    def rng(self) -> random.Random:
        """The random-crop generator of this process: seeded from ``seed``, the data-loader worker
        and the DDP rank, so workers and ranks draw different crops (a ``Random`` built once in
        ``__init__`` was copied into every worker, which then all drew the same crops) while a
        run stays reproducible."""
        key = _stream_key()
        if self._rng is None or self._rng[0] != key:
            self._rng = (key, random.Random(f"{self.seed}-{key}"))
        return self._rng[1]


class FolderBatches(IterableDataset):
    """Endless uint8 batches ``(batch_size, channels, size, size)`` of an ``ImageFolder``'s images, read
    file by file in DataLoader workers (``DataLoader(batches, batch_size=None, num_workers=W)``), in an
    order that resumes exactly:

    - epoch ``e`` is a permutation of the images seeded by ``(seed, e)``, cut into full batches (the
      last partial one dropped); rank ``r`` of ``world`` takes batches ``r, r + world, ...`` of it;
    - a rank's batches, epoch after epoch, form its sequence; worker ``w`` of ``W`` builds its batches
      ``w, w + W, ...``, the order the DataLoader returns them in, so the sequence does not depend on
      the number of workers;
    - a random crop is drawn from ``(seed, epoch, image)``, independent of ranks and workers;
    - ``start``: batches this rank already consumed (the steps of a resumed run): the sequence
      continues there, crops included.

    The rank is torch.distributed's, else ``$RANK`` / ``$WORLD_SIZE``.
    """

    def __init__(self, folder: ImageFolder, batch_size: int, *, seed: int = 0, start: int = 0, crop: str | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(folder):
            raise ValueError(f"batch_size must lie in [1, {len(folder)}] (the number of images), got {batch_size!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative integer, got {start!r}")
        crop = folder.crop if crop is None else crop
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.files, self.image_size, self.channels, self.crop = list(folder.files), folder.image_size, folder.channels, crop
        self.batch_size, self.seed, self.start = batch_size, seed, start
        self._order: tuple[int, np.ndarray] | None = None

    def placement(self) -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if len(self.files) // self.batch_size < world:
            raise ValueError(f"{len(self.files)} images make fewer full batches of {self.batch_size} than the {world} ranks")
        return rank, world

    def batch_images(self, step: int, rank: int, world: int) -> list[tuple[int, int]]:
        """``(epoch, image index)`` of every image in the rank's batch ``step``."""
        per_rank = len(range(rank, len(self.files) // self.batch_size, world))
        epoch, position = divmod(step, per_rank)
        if self._order is None or self._order[0] != epoch:  # one permutation per epoch, not per batch
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.files)))
        order = self._order[1]
        first = (rank + position * world) * self.batch_size
        return [(epoch, int(i)) for i in order[first : first + self.batch_size]]

    def image(self, index: int, epoch: int) -> torch.Tensor:
        from PIL import Image

        rng = random.Random(f"{self.seed}-{epoch}-{index}") if self.crop == "random" else None
        with Image.open(self.files[index]) as image:
            image = resize_and_crop(image.convert("RGB"), self.image_size, crop=self.crop, rng=rng)
        return to_uint8_tensor(image, self.channels)

    def __iter__(self):
        rank, world = self.placement()
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.start + worker
        while True:
            yield torch.stack([self.image(index, epoch) for epoch, index in self.batch_images(step, rank, world)])
            step += workers


def class_labels(root: Path, files: list[Path]) -> tuple[list[str], torch.Tensor]:
    """The sorted sub-folders of ``root`` (torchvision's ``find_classes``: every sub-folder, so a
    subset of the files numbers the classes as the whole set does) and each file's class index."""
    root = Path(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for path in files:
        parts = Path(path).relative_to(root).parts
        if len(parts) < 2 or parts[0] not in index:
            raise ValueError(f"class_folders: {path} lies directly under {root}, not in a class folder")
        labels.append(index[parts[0]])
    return classes, torch.tensor(labels, dtype=torch.long)


def _stream_key() -> tuple:
    import torch
    import torch.distributed as dist
    from torch.utils.data import get_worker_info

    worker = get_worker_info()
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))
    # in a worker, torch's seed differs per worker and, once Lightning's seed_everything(workers=True)
    # worker init has run, per rank as well
    return (rank, worker.id, torch.initial_seed()) if worker is not None else (rank, -1, 0)
