"""Data sets. Every image data set yields float32 ``(C, H, W)`` images in ``[0, 1]`` and has a
``cache_key`` naming its contents (used to cache rFID reference statistics); speech data sets
(``simvq.data.speech``) yield float32 ``(1, S)`` waveforms in ``[-1, 1]``."""

from .build import build_image_dataset, build_speech_dataset
from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST, MissingDatasetError
from .image_folder import FolderBatches, ImageFolder
from .photos import SamplePhotoCrops
from .speech import (
    FileClipBatches,
    InMemorySpeech,
    LibriTTS,
    RandomClipBatches,
    SpeechCorpus,
    SpeechCorpusSpec,
    WavFolder,
    build_speech_corpus,
    pad_collate,
    read_manifest,
)
from .webdataset_images import ShardedImages, ShardedImageSet, write_image_shards

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FashionMNIST",
    "FileClipBatches",
    "FolderBatches",
    "ImageFolder",
    "InMemorySpeech",
    "LibriTTS",
    "MissingDatasetError",
    "RandomClipBatches",
    "SamplePhotoCrops",
    "ShardedImageSet",
    "ShardedImages",
    "SpeechCorpus",
    "SpeechCorpusSpec",
    "WavFolder",
    "build_image_dataset",
    "build_speech_dataset",
    "build_speech_corpus",
    "pad_collate",
    "read_manifest",
    "write_image_shards",
]
