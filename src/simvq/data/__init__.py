"""Image data sets. Every one yields float32 ``(C, H, W)`` images in ``[0, 1]`` and has a ``cache_key``
naming its contents (used to cache rFID reference statistics)."""

from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST, MissingDatasetError
from .image_folder import ImageFolder
from .photos import SamplePhotoCrops
from .build import build_image_dataset

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FashionMNIST",
    "ImageFolder",
    "MissingDatasetError",
    "SamplePhotoCrops",
    "build_image_dataset",
]
