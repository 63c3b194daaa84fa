"""A small natural-image set: random crops of the sample photos shipped offline with scikit-image
(in the wheel's ``skimage/data`` directory) and scikit-learn (``load_sample_images``).

Train and test use different photos, so test crops are of scenes the model never saw.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

# photographs (not synthetic test patterns) shipped inside the scikit-image wheel
SKIMAGE_TRAIN = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
)
SKIMAGE_TEST = ("coffee.png", "motorcycle_right.png")
SKLEARN_TRAIN, SKLEARN_TEST = ("china.jpg",), ("flower.jpg",)


def load_photos(split: str) -> list[np.ndarray]:
    """The photos of ``split`` as uint8 ``(H, W, 3)`` arrays."""
    import skimage
    from PIL import Image
    from sklearn.datasets import load_sample_images

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = []
    for name in SKIMAGE_TRAIN if split == "train" else SKIMAGE_TEST:
        with Image.open(os.path.join(directory, name)) as image:
            photos.append(np.asarray(image.convert("RGB")))
    sample = load_sample_images()
    wanted = SKLEARN_TRAIN if split == "train" else SKLEARN_TEST
    photos += [image for name, image in zip(sample.filenames, sample.images) if os.path.basename(name) in wanted]
    return photos


class SamplePhotoCrops(Dataset):
    """``num_crops`` crops of ``crop_size`` pixels from the offline sample photos, scaled to ``image_size``.

    Crops are drawn once from ``seed`` (deterministic, so the test set is fixed); a photo is picked
    with probability proportional to its area. ``crop_size`` defaults to ``2 * image_size`` so a crop
    holds a recognisable piece of the scene after downscaling.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        image_size: int = 32,
        channels: int = 3,
        num_crops: int = 10_000,
        crop_size: int | None = None,
        seed: int = 0,
    ):
        from PIL import Image

        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        crop_size = crop_size or 2 * image_size
        photos = [p for p in load_photos(split) if min(p.shape[:2]) >= crop_size]
        if not photos:
            raise ValueError(f"crop_size {crop_size} is larger than every {split} photo")
        rng = np.random.default_rng(seed + (0 if split == "train" else 1_000_003))
        areas = np.array([p.shape[0] * p.shape[1] for p in photos], dtype=np.float64)
        picks = rng.choice(len(photos), size=num_crops, p=areas / areas.sum())
        crops = np.empty((num_crops, channels, image_size, image_size), dtype=np.uint8)
        for i, which in enumerate(picks):
            photo = photos[which]
            top = rng.integers(0, photo.shape[0] - crop_size + 1)
            left = rng.integers(0, photo.shape[1] - crop_size + 1)
            image = Image.fromarray(photo[top : top + crop_size, left : left + crop_size])
            image = image.resize((image_size, image_size), Image.BICUBIC)
            if channels == 1:
                crops[i, 0] = np.asarray(image.convert("L"))
            else:
                crops[i] = np.asarray(image).transpose(2, 0, 1)
        self.images = torch.from_numpy(crops)
        self.image_size, self.channels = image_size, channels
        self.cache_key = f"photos-{split}-{num_crops}x{crop_size}to{image_size}px-{channels}ch-seed{seed}"

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].float() / 255.0
