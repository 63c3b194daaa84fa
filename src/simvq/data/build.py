"""``build_image_dataset(data_config, split)``, ``build_speech_dataset(data_config, split)``: the data
set a recipe names."""

from __future__ import annotations

import random
from pathlib import Path

from .fashion_mnist import FashionMNIST
from .image_folder import ImageFolder, list_images
from .photos import SamplePhotoCrops
from .speech import LibriTTS, SpeechCorpus, WavFolder, build_speech_corpus, rate_dir
from .webdataset_images import ShardedImageSet

DATASETS = ("fashion_mnist", "image_folder", "photos", "class_folders", "webdataset")


def build_image_dataset(config, split: str, *, seed: int = 0):
    """``config``: a :class:`simvq.runs.schemas.DataConfig`; ``split``: "train" or "test".

    ``class_folders`` is ImageNet's layout (``root/<class>/<image>``, ``ImageFolder(class_folders=True)``):
    ``root`` the training images, ``test_root`` the validation images (without it, a fixed fraction of
    ``root`` as for ``image_folder``). ``webdataset``: ``root`` and ``test_root`` name tar shards (a
    directory, a brace pattern or a glob, ``simvq.data.webdataset_images.expand_shards``); this gives
    their images one by one (``ShardedImageSet``, for evaluation and token counts), training reads
    them as ``ShardedImages`` batches. Training crops follow ``crop``; the test split is centre-cropped."""
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
    if config.name == "webdataset":
        shards = config.root if split == "train" else config.test_root
        if shards is None:
            key = "data.root" if split == "train" else "data.test_root"
            raise ValueError(f"{key} must name the {split} tar shards (a directory, a brace pattern or a glob) for data.name=webdataset")
        return ShardedImageSet(shards, image_size=config.image_size, channels=config.channels, crop="center", seed=seed)
    if config.name in ("image_folder", "class_folders"):
        if config.root is None:
            raise ValueError(f"data.root must name a directory of images for data.name={config.name}")
        crop = config.crop if split == "train" else "center"
        classes = {"class_folders": True} if config.name == "class_folders" else {}
        if config.test_root is not None:
            root = config.root if split == "train" else config.test_root
            return ImageFolder(root, image_size=config.image_size, channels=config.channels, crop=crop, seed=seed, **classes)
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
            **classes,
        )
    raise ValueError(f"data.name must be one of {DATASETS}, got {config.name!r}")


SPEECH_DATASETS = ("espeak_corpus", "wav_folder", "libritts")


def build_speech_dataset(config, split: str, *, seed: int = 0, whole: bool = False):
    """``config``: a :class:`simvq.runs.schemas.AudioDataConfig`. The train split gives random clips
    of ``clip_seconds`` (whole utterances with ``whole``, e.g. to count its tokens), the test split
    whole utterances. ``espeak_corpus`` is synthesised under
    ``root`` on first use (``build_speech_corpus``; needs espeak-ng). ``libritts`` reads LibriTTS's
    layout under ``root`` (``LibriTTS``): ``train_splits`` for training, ``test_splits`` for evaluation."""
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
    if config.name == "libritts":
        splits = config.train_splits if split == "train" else config.test_splits
        return LibriTTS(config.root, tuple(splits), sample_rate=config.sample_rate, clip_seconds=clip_seconds, seed=seed)
    raise ValueError(f"data.name must be one of {SPEECH_DATASETS}, got {config.name!r}")
