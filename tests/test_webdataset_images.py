"""Images at scale: WebDataset shards (simvq.data.webdataset_images) split over simulated ranks and
DataLoader workers, seeded per-epoch order, exact resumption; ImageNet-style class folders."""

import tarfile
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import simvq.data.webdataset_images as wds_module
from simvq.data.image_folder import ImageFolder
from simvq.data.webdataset_images import ShardedImages, expand_shards, write_image_shards

pytestmark = pytest.mark.usefixtures("one_thread")


def write_pngs(directory, count, size=(8, 8)):
    """Images whose colour names them: red + 256 * green is the image's number."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        array = np.zeros((size[1], size[0], 3), np.uint8)
        array[..., 0], array[..., 1], array[..., 2] = i % 256, i // 256, np.arange(size[0], dtype=np.uint8) * 9
        path = directory / f"img{i:03d}.png"
        Image.fromarray(array).save(path)
        files.append(path)
    return files


def ids(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


@pytest.fixture
def shards(tmp_path):
    """23 images in shards of 5, 5, 5, 5, 3 (shuffled before packing), labels = number % 3."""
    files = write_pngs(tmp_path / "png", 23)
    return write_image_shards(files, tmp_path / "shards", labels=[i % 3 for i in range(23)], per_shard=5, seed=1)


def as_worker(monkeypatch, worker, workers):
    info = None if workers is None else types.SimpleNamespace(id=worker, num_workers=workers)
    monkeypatch.setattr(wds_module, "get_worker_info", lambda: info)


def rank_batches(dataset, monkeypatch, workers, limit=None):
    """What a DataLoader(dataset, batch_size=None, num_workers=workers) returns: the workers' batches
    taken in turn, a finished worker skipped."""
    iterators = []
    for worker in range(workers):
        as_worker(monkeypatch, worker, workers)
        iterators.append(iter(dataset))
    as_worker(monkeypatch, 0, None)
    out, active = [], list(range(workers))
    # generators capture get_worker_info lazily: advance each under its own identity
    while active and (limit is None or len(out) < limit):
        for worker in list(active):
            if limit is not None and len(out) >= limit:
                break
            as_worker(monkeypatch, worker, workers)
            try:
                out.append(next(iterators[worker]))
            except StopIteration:
                active.remove(worker)
    as_worker(monkeypatch, 0, None)
    return out


def test_every_image_once_per_epoch_over_two_ranks_and_two_workers(shards, monkeypatch):
    seen = []
    for rank in range(2):
        dataset = ShardedImages(shards, batch_size=2, image_size=8, crop="center", epochs=1, rank=rank, world_size=2, seed=3)
        batches = rank_batches(dataset, monkeypatch, workers=2)
        rank_ids = [i for batch in batches for i in ids(batch)]
        assert all(batch.dtype == torch.uint8 and batch.shape[1:] == (3, 8, 8) for batch in batches)
        assert len(rank_ids) == dataset.epoch_length(0, rank, 2)
        seen += rank_ids
    assert sorted(seen) == list(range(23))
    # two epochs: twice each, the second epoch in another order
    per_epoch = []
    for rank in range(2):
        dataset = ShardedImages(shards, batch_size=3, image_size=8, crop="center", epochs=2, rank=rank, world_size=2, seed=3)
        flat = [i for batch in rank_batches(dataset, monkeypatch, workers=2) for i in ids(batch)]
        first = dataset.epoch_length(0, rank, 2)
        per_epoch.append((flat[:first], flat[first:]))
    assert sorted(per_epoch[0][0] + per_epoch[1][0]) == list(range(23))
    assert sorted(per_epoch[0][1] + per_epoch[1][1]) == list(range(23))
    assert [e[0] for e in per_epoch] != [e[1] for e in per_epoch]


def test_fewer_shards_than_ranks_splits_the_images(tmp_path, monkeypatch):
    one = write_image_shards(write_pngs(tmp_path / "png", 9), tmp_path / "one", per_shard=100)
    seen = []
    for rank in range(3):
        dataset = ShardedImages(one, batch_size=2, image_size=8, epochs=1, rank=rank, world_size=3, crop="center")
        assert dataset.epoch_length(0, rank, 3) == 3
        seen += [i for batch in rank_batches(dataset, monkeypatch, workers=2) for i in ids(batch)]
    assert sorted(seen) == list(range(9))
    with pytest.raises(ValueError, match="9 images cannot be shared among 10 ranks"):
        list(ShardedImages(one, batch_size=1, image_size=8, rank=0, world_size=10))


def test_order_is_seeded_by_seed_and_epoch_and_does_not_depend_on_workers(shards, monkeypatch):
    def order(seed, workers):
        dataset = ShardedImages(shards, batch_size=4, image_size=8, crop="center", epochs=2, seed=seed)
        return [ids(batch) for batch in rank_batches(dataset, monkeypatch, workers=workers)]

    base = order(0, 1)
    assert base == order(0, 1) == order(0, 2) == order(0, 3)
    assert base != order(1, 1)
    flat = [i for batch in base for i in batch]
    assert sorted(flat[:23]) == sorted(flat[23:]) == list(range(23)) and flat[:23] != flat[23:]


def test_resuming_mid_epoch_yields_exactly_the_remaining_batches(tmp_path, monkeypatch):
    files = write_pngs(tmp_path / "png", 23, size=(12, 8))  # wider than tall: the random crop moves
    shards = write_image_shards(files, tmp_path / "shards", labels=[i % 3 for i in range(23)], per_shard=4)
    options = dict(batch_size=3, image_size=8, crop="random", seed=5, labels=True, rank=1, world_size=2)
    whole = rank_batches(ShardedImages(shards, **options), monkeypatch, workers=2, limit=14)  # crosses epochs
    first, second = (ShardedImages(shards, **options).epoch_length(epoch, 1, 2) for epoch in (0, 1))
    assert 14 * 3 > first + second  # past two epoch ends
    for consumed in (1, 4, 9):
        resumed = rank_batches(ShardedImages(shards, start=consumed, **options), monkeypatch, workers=2, limit=14 - consumed)
        for (images, labels), (want_images, want_labels) in zip(resumed, whole[consumed:], strict=True):
            assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
        # the same through a state dict {"epoch", "samples"}
        state = ShardedImages(shards, **options).state_dict(consumed)
        position = consumed * 3
        epoch = 0 if position < first else 1 if position < first + second else 2
        assert state == {"epoch": epoch, "samples": position - [0, first, first + second][epoch]}
        again = ShardedImages(shards, **options)
        again.load_state_dict(state)
        restored = rank_batches(again, monkeypatch, workers=3, limit=14 - consumed)  # another worker count
        assert all(torch.equal(a[0], b[0]) for a, b in zip(restored, whole[consumed:], strict=True))
    images, labels = whole[0]
    assert labels.dtype == torch.int64 and labels.tolist() == [i % 3 for i in ids(images)]
    # random crops (blue = 9 x column, so the crop's first blue value is 9 x its left offset), which
    # the resumed runs above reproduced
    offsets = {int(v) // 9 for images, _ in whole for v in images[:, 2, 0, 0]}
    assert len(offsets) > 1 and offsets <= set(range(5))


def test_a_real_dataloader_with_two_workers_gives_the_canonical_order(shards):
    dataset = ShardedImages(shards, batch_size=2, image_size=8, crop="center", epochs=1, start=2, seed=7, rank=0, world_size=1)
    alone = [ids(batch) for batch in DataLoader(dataset, batch_size=None)]
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert [ids(batch) for batch in loader] == alone
    full = [ids(batch) for batch in DataLoader(ShardedImages(shards, batch_size=2, image_size=8, crop="center", epochs=1, seed=7), batch_size=None)]
    assert full[2:] == alone and len(full) == 12  # 23 images: 11 pairs and a single


def test_shard_lists_and_refusals(shards, tmp_path):
    directory = shards[0].parent
    assert expand_shards(directory) == shards
    assert expand_shards(str(directory / "shard-{000000..000004}.tar")) == shards
    assert expand_shards(str(directory / "shard-00000[13].tar")) == [shards[1], shards[3]]
    assert expand_shards([str(directory / "shard-{000002,000000}.tar")]) == [shards[2], shards[0]]
    with pytest.raises(FileNotFoundError, match="do not exist"):
        expand_shards(str(directory / "shard-{000000..000009}.tar"))
    compressed = tmp_path / "gz" / "x.tar.gz"
    compressed.parent.mkdir()
    with tarfile.open(compressed, "w:gz") as tar:
        tar.add(shards[0], arcname="a.png")
    with pytest.raises(ValueError, match="not an uncompressed tar"):
        ShardedImages([compressed], batch_size=1)
    unlabelled = write_image_shards(write_pngs(tmp_path / "few", 2), tmp_path / "nolabels")
    with pytest.raises(ValueError, match="has no class label"):
        ShardedImages(unlabelled, batch_size=1, labels=True)
    with pytest.raises(ValueError, match="batch_size"):
        ShardedImages(shards, batch_size=0)
    # the bytes of the shards are reproducible
    again = write_image_shards(sorted((tmp_path / "png").glob("*.png")), tmp_path / "again", labels=[i % 3 for i in range(23)], per_shard=5, seed=1)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in shards]


def test_class_folders_number_classes_like_torchvision(tmp_path):
    root = tmp_path / "train"
    for name, folder in [("a.JPEG", "n02"), ("b.png", "n01"), ("sub/c.png", "n01"), ("d.JPEG", "n03")]:
        (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 6, 3), 100, np.uint8)).save(root / folder / name, format="JPEG" if name.endswith("JPEG") else "PNG")
    (root / "n00_empty").mkdir()
    dataset = ImageFolder(root, image_size=4, class_folders=True)
    assert dataset.classes == ["n00_empty", "n01", "n02", "n03"]
    assert [f.relative_to(root).as_posix() for f in dataset.files] == ["n01/b.png", "n01/sub/c.png", "n02/a.JPEG", "n03/d.JPEG"]
    assert dataset.labels.tolist() == [1, 1, 2, 3]
    assert dataset[2].shape == (3, 4, 4)  # items stay images
    subset = ImageFolder(root, image_size=4, class_folders=True, files=[root / "n03" / "d.JPEG"])
    assert subset.labels.tolist() == [3]  # numbered as in the whole set
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "stray.png")
    with pytest.raises(ValueError, match="not in a class folder"):
        ImageFolder(root, image_size=4, class_folders=True)
    # into shards with their labels, and back
    dataset = ImageFolder(root / "n01", image_size=4)
    shards = write_image_shards(dataset.files, tmp_path / "shards", labels=[7, 8], seed=None)
    images, labels = next(iter(ShardedImages(shards, batch_size=2, image_size=4, labels=True, crop="center", epochs=1)))
    assert sorted(labels.tolist()) == [7, 8] and images.shape == (2, 3, 4, 4)


def test_uint8_and_float_conversions_agree():
    """to_tensor (ImageFolder's items) is the uint8 tensor (the shards' batches) over 255, as before."""
    from simvq.data.image_folder import to_tensor, to_uint8_tensor

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    rgb = torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0)
    gray = torch.from_numpy(np.asarray(image.convert("L"), np.float32) / 255.0)[None]
    assert torch.equal(to_tensor(image, 3), rgb) and torch.equal(to_tensor(image, 1), gray)
    assert torch.equal(to_uint8_tensor(image, 3).float() / 255.0, rgb)
