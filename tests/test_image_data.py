"""Image data sets: Fashion-MNIST IDX reading, the install hint, image folders, photo crops."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from simvq.data import FashionMNIST, ImageFolder, MissingDatasetError, SamplePhotoCrops, build_image_dataset
from simvq.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, fashion_mnist_size
from simvq.train.config import DataConfig


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_missing_dataset_gives_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMVQ_FASHION_MNIST", raising=False)
    with pytest.raises(MissingDatasetError, match="apt-get install dataset-fashion-mnist") as error:
        FashionMNIST("test", root=tmp_path)
    assert str(tmp_path) in str(error.value) and "data.root" in str(error.value)
    with pytest.raises(FileNotFoundError):  # MissingDatasetError is a FileNotFoundError
        build_image_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path)), "train")


def test_idx_files_are_read_exactly(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("SIMVQ_FASHION_MNIST", str(tmp_path))  # the path override, by environment
    dataset = FashionMNIST("test")
    assert len(dataset) == 5 == fashion_mnist_size("test")  # the header alone says as much
    assert torch.equal(dataset.labels, torch.tensor([3, 1, 4, 1, 5]))
    item = dataset[2]
    assert item.shape == (1, 28, 28) and item.dtype == torch.float32
    assert torch.allclose(item[0], torch.from_numpy(images[2]).float() / 255)
    with pytest.raises(ValueError, match="split"):
        FashionMNIST("validation", root=tmp_path)


@pytest.mark.skipif(not (DEFAULT_FASHION_MNIST_ROOT and __import__("os").path.isdir(DEFAULT_FASHION_MNIST_ROOT)),
                    reason="dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_sizes():
    assert len(FashionMNIST("train", root=DEFAULT_FASHION_MNIST_ROOT)) == 60_000
    test = FashionMNIST("test", root=DEFAULT_FASHION_MNIST_ROOT)
    assert len(test) == 10_000 and 0.0 <= float(test[0].min()) and float(test[0].max()) <= 1.0


def test_image_folder_resizes_crops_and_converts(tmp_path):
    # a 40x20 image: left half black, right half white; center crop after resizing the short side to 10
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, 20:] = 255
    Image.fromarray(array).save(tmp_path / "wide.png")
    Image.fromarray(np.full((30, 30, 3), 128, dtype=np.uint8)).save(tmp_path / "sub_gray.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    rgb = ImageFolder(tmp_path, image_size=10, channels=3, crop="center")
    assert len(rgb) == 2
    wide = rgb[rgb.files.index(tmp_path / "wide.png")]
    assert wide.shape == (3, 10, 10)
    # the center 10x10 of the 20x10 resized image straddles the edge: left half ~0, right half ~1
    assert wide[:, :, :4].max() < 0.05 and wide[:, :, 6:].min() > 0.95
    gray = ImageFolder(tmp_path, image_size=8, channels=1, crop="random", seed=1)
    assert all(gray[i].shape == (1, 8, 8) for i in range(len(gray)))
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(tmp_path, channels=2)
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path / "empty", files=[])


def test_image_folder_split_is_disjoint(tmp_path):
    for i in range(10):
        Image.fromarray(np.full((12, 12, 3), i * 20, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    config = DataConfig(name="image_folder", root=str(tmp_path), image_size=8, channels=3, test_fraction=0.2)
    train, test = build_image_dataset(config, "train"), build_image_dataset(config, "test")
    assert len(train) == 8 and len(test) == 2 and not set(train.files) & set(test.files)
    assert test.crop == "center"


def test_photo_crops_are_deterministic_and_split_by_photo():
    train = SamplePhotoCrops("train", image_size=16, num_crops=12, seed=0)
    again = SamplePhotoCrops("train", image_size=16, num_crops=12, seed=0)
    test = SamplePhotoCrops("test", image_size=16, channels=1, num_crops=5, seed=0)
    assert train[0].shape == (3, 16, 16) and test[0].shape == (1, 16, 16)
    assert torch.equal(train.images, again.images)
    assert train.cache_key != test.cache_key
    assert float(train.images.float().std()) > 5  # real picture content, not a constant
