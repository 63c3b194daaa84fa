"""``build_image_dataset(data_config, split)``, ``build_speech_dataset(data_config, split)``: the data
set a recipe names."""

from __future__ import annotations

import random
from pathlib import Path

from .fashion_mnist import FashionMNIST
from .image_folder import ImageFolder, list_images
from .photos import SamplePhotoCrops
from .speech import SpeechCorpus, WavFolder, build_speech_corpus, rate_dir

DATASETS = ("fashion_mnist", "image_folder", "photos")


def build_image_dataset(config, split: str, *, seed: int = 0):
    """``config``: a :class:`simvq.runs.schemas.DataConfig`; ``split``: "train" or "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if config.name == "fashion_mnist":
        if (config.image_size, config.channels) != (28, 1):
            raise ValueError("fashion_mnist images are 28x28 grayscale: set data.image_size=28 data.channels=1")
        return FashionMNIST(split, root=config.root)
    if config.name == "photos":
        return SamplePhotoCrops(
            split,
            image_size=config.image_size,
            channels=config.channels,
            num_crops=config.train_crops if split == "train" else config.test_crops,
            seed=seed,
        )
    if config.name == "image_folder":
        if config.root is None:
            raise ValueError("data.root must name a directory of images for data.name=image_folder")
        crop = config.crop if split == "train" else "center"
        if config.test_root is not None:
            root = config.root if split == "train" else config.test_root
            return ImageFolder(root, image_size=config.image_size, channels=config.channels, crop=crop, seed=seed)
        # no separate test folder: hold out a fixed, seeded fraction of the files
        files = list_images(Path(config.root))
        if len(files) < 2:
            raise ValueError(f"need at least 2 images under {config.root} to split train/test, found {len(files)}")
        order = list(range(len(files)))
        random.Random(12345).shuffle(order)
        num_test = max(1, round(config.test_fraction * len(files)))
        chosen = order[:num_test] if split == "test" else order[num_test:]
        return ImageFolder(
            config.root,
            image_size=config.image_size,
            channels=config.channels,
            crop=crop,
            files=[files[i] for i in sorted(chosen)],
            seed=seed,
        )
    raise ValueError(f"data.name must be one of {DATASETS}, got {config.name!r}")


SPEECH_DATASETS = ("espeak_corpus", "wav_folder")


def build_speech_dataset(config, split: str, *, seed: int = 0, whole: bool = False):
    """``config``: a :class:`simvq.runs.schemas.AudioDataConfig`. The train split gives random clips
    of ``clip_seconds`` (whole utterances with ``whole``, e.g. to count its tokens), the test split
    whole utterances. ``espeak_corpus`` is synthesised under
    ``root`` on first use (``build_speech_corpus``; needs espeak-ng)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    clip_seconds = config.clip_seconds if split == "train" and not whole else None
    if config.name == "espeak_corpus":
        if not (Path(config.root) / "manifest.csv").is_file() or not rate_dir(config.root, config.sample_rate).is_dir():
            build_speech_corpus(config.root, config.corpus, workers=config.workers, progress=True)
        return SpeechCorpus(config.root, split, sample_rate=config.sample_rate, clip_seconds=clip_seconds, seed=seed)
    if config.name == "wav_folder":
        root = config.test_root if split == "test" and config.test_root is not None else config.root
        return WavFolder(root, sample_rate=config.sample_rate, clip_seconds=clip_seconds, seed=seed)
    raise ValueError(f"data.name must be one of {SPEECH_DATASETS}, got {config.name!r}")
