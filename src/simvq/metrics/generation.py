"""Metrics of generated images and of token streams:

- ``token_statistics``: entropy (bits), usage and perplexity of a code histogram — the unigram
  baseline a prior's bits per token should beat;
- a domain classifier (``simvq.models.classifier.ImageClassifier``) trained once on Fashion-MNIST
  and cached as safetensors under ``$SIMVQ_CACHE/classifier`` (default ``~/.cache/simvq/classifier``);
- ``domain_fid``: the Frechet distance on its 128-d features (meaningful and fast at 28x28, where
  Inception sees upscaled blobs), and ``class_accuracy`` of class-conditional samples;
- ``kernel_inception_distance`` (KID, Binkowski et al. 2018: the unbiased MMD^2 with the cubic
  polynomial kernel, mean and std over random subsets) and ``precision_recall`` (improved precision
  and recall, Kynkaanniemi et al. 2019, k-NN balls) on any features, here the classifier's;
- ``DomainReference``: the test split's classifier features (cached in memory and on disk, keyed by
  the classifier's weights and the images), their Frechet statistics with the square root of the
  covariance computed once, and every domain metric of a sample set against them;
- ``generation_fid``: the Inception FID of samples against a fixed subset of the test split (the
  reference statistics are shared with the tokenizer's rFID cache), ``inception_floor`` (training
  images against the same reference) and ``FrechetReference`` (the Frechet distance by two symmetric
  eigendecompositions, one of them cached: 3-7x faster than ``scipy.linalg.sqrtm`` at 2048-d).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.classifier import ImageClassifier
from .image import (
    InceptionFeatures,
    feature_statistics,
    fid_cache_dir,
    reference_statistics,
)

CLASSIFIER_VERSION = "v1"  # bump when the architecture or its training recipe changes: a new cache file


def token_statistics(counts: Tensor) -> dict[str, float]:
    """``{"entropy_bits", "perplexity", "usage", "tokens", "codebook_size"}`` of a ``(K,)`` code histogram."""
    counts = counts.double()
    total = counts.sum().item()
    probs = counts / max(total, 1.0)
    entropy_bits = -(probs[probs > 0] * probs[probs > 0].log2()).sum().item()
    return {
        "entropy_bits": entropy_bits,
        "perplexity": 2.0**entropy_bits,
        "usage": (counts > 0).double().mean().item(),
        "tokens": int(total),
        "codebook_size": counts.numel(),
    }


# ----------------------------------------------------------------------------- the domain classifier


def classifier_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SIMVQ_CACHE/classifier``, else ``~/.cache/simvq/classifier``."""
    return Path(cache_dir) if cache_dir is not None else fid_cache_dir().parent / "classifier"


def train_classifier(train_set, *, epochs: int = 2, batch_size: int = 128, lr: float = 3e-3, seed: int = 0, progress: bool = True) -> ImageClassifier:
    """A plain loop (no Lightning: a minute of work): AdamW with a one-cycle schedule, ``epochs``
    passes over ``train_set`` (a data set with ``images`` uint8 and ``labels``)."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images, labels = train_set.images.unsqueeze(1) if train_set.images.ndim == 3 else train_set.images, train_set.labels.long()
    # channels-last: ~20% faster convolutions on CPU (oneDNN)
    model = ImageClassifier(num_classes=int(labels.max()) + 1, in_channels=images.shape[1])
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack Module.to's memory_format
    steps_per_epoch = images.shape[0] // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    model.train()
    with tqdm(total=epochs * steps_per_epoch, desc="domain classifier", disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            order = torch.randperm(images.shape[0], generator=generator)
            for batch in order[: steps_per_epoch * batch_size].view(steps_per_epoch, batch_size):
                inputs = (images[batch].float() / 255.0).contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(inputs), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
    return model.to(memory_format=torch.contiguous_format).eval()


@torch.no_grad()
def classify(model: ImageClassifier, images: Tensor, *, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """``(features (N, 128) float64, predicted labels (N,))`` of images ``(N, C, H, W)`` in ``[0, 1]``
    (uint8 images are scaled)."""
    model.eval()
    features, predictions = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float().clamp(0, 1)
        feature = model.features(batch)
        features.append(feature.double())
        predictions.append(model.head(feature).argmax(dim=1))
    return torch.cat(features), torch.cat(predictions)


def domain_classifier(
    *, cache_dir: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None, progress: bool = True
) -> tuple[ImageClassifier, dict]:
    """The cached Fashion-MNIST classifier and its record (``test_accuracy``, ``train_seconds``, ...);
    trained (about a minute on two CPU cores) and saved on the first call."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..data import FashionMNIST

    path = classifier_cache_dir(cache_dir) / f"fashion_mnist-classifier-{CLASSIFIER_VERSION}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as stored:
            record = {k: float(v) for k, v in (stored.metadata() or {}).items() if k not in ("format", "library")}
        model = ImageClassifier()
        model.load_state_dict(load_file(str(path)))
        return model.eval(), record
    started, cpu_started = time.time(), time.process_time()
    model = train_classifier(FashionMNIST("train", root=data_root), progress=progress)
    seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    test = FashionMNIST("test", root=data_root)
    _, predictions = classify(model, test.images.unsqueeze(1))
    record = {"test_accuracy": (predictions == test.labels).double().mean().item(), "train_seconds": round(seconds, 1),
              "train_cpu_seconds": round(cpu_seconds, 1)}  # wall time misleads on a shared machine
    _save_with_metadata(model, path, record)
    return model, record


def _save_with_metadata(model: torch.nn.Module, path: Path, record: dict) -> None:
    from safetensors.torch import save_file

    from ..utils import atomic_path

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "library": "simvq", **{k: str(v) for k, v in record.items()}})


# ----------------------------------------------------------------------------- distances between feature sets


class FrechetReference:
    """The Frechet distance to fixed reference statistics ``(mu, sigma)``:
    ``||mu - mu_r||^2 + Tr(S) + Tr(S_r) - 2 Tr((S_r^1/2 S S_r^1/2)^1/2)``.

    ``Tr((S S_r)^1/2)`` equals the trace of the square root of the symmetric matrix
    ``S_r^1/2 S S_r^1/2`` (the two products have the same eigenvalues), so the distance needs
    ``S_r^1/2`` once (an eigendecomposition, kept here) and one symmetric eigenvalue computation per
    sample set, where ``frechet_distance`` runs ``scipy.linalg.sqrtm`` on a non-symmetric product each
    time (28 s against 4-8 s at 2048-d on one loaded CPU core). Tested against ``frechet_distance``."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray):
        self.mu, self.sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(self.sigma)
        self.root = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
        self.trace = float(np.trace(self.sigma))

    @classmethod
    def of(cls, features: np.ndarray) -> FrechetReference:
        return cls(*feature_statistics(features))

    def distance(self, mu: np.ndarray, sigma: np.ndarray) -> float:
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        product = self.root @ sigma @ self.root
        eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
        diff = mu - self.mu
        cross = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
        return float(max(0.0, diff @ diff + np.trace(sigma) + self.trace - 2 * cross))

    def __call__(self, features: np.ndarray) -> float:
        return self.distance(*feature_statistics(features))


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """KID's kernel ``(x . y / d + 1)^3`` between the rows of ``x`` ``(n, d)`` and ``y`` ``(m, d)``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """The unbiased estimate of MMD^2 between the rows of ``x`` and ``y`` (each ``(m, d)``, m >= 2)
    under ``polynomial_kernel``: the within-set means leave out the diagonal."""
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return (within_x + within_y - 2 * k_xy.mean()).item()


def kernel_inception_distance(features: np.ndarray | Tensor, reference: np.ndarray | Tensor, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> dict:
    """KID (Binkowski et al. 2018) of ``features`` against ``reference`` (``(N, d)`` each, on any
    feature extractor): ``mmd2_unbiased`` of ``subsets`` random subsets of ``min(subset_size, N,
    N_ref)`` rows drawn without replacement from each side; ``{"kid", "kid_std", "kid_subsets",
    "kid_subset_size"}`` (mean and sample std over the subsets, as torch-fidelity reports them)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 rows on each side, got {x.shape[0]} and {y.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    values = [
        mmd2_unbiased(x[torch.randperm(x.shape[0], generator=generator)[:size]], y[torch.randperm(y.shape[0], generator=generator)[:size]])
        for _ in range(subsets)
    ]
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values, ddof=1)) if subsets > 1 else 0.0,
            "kid_subsets": subsets, "kid_subset_size": size}


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``(n, m)`` squared Euclidean distances between rows (float64, clamped at 0)."""
    return ((x * x).sum(1, keepdim=True) + (y * y).sum(1) - 2 * x @ y.T).clamp_(min=0.0)


def knn_radii(features: Tensor, k: int, *, chunk: int = 1000) -> Tensor:
    """Squared distance of each row to its k-th nearest other row (the row itself, at 0, not counted)."""
    if features.shape[0] <= k:
        raise ValueError(f"k-NN radii need more than k={k} rows, got {features.shape[0]}")
    return torch.cat([squared_distances(features[i : i + chunk], features).kthvalue(k + 1, dim=1).values
                      for i in range(0, features.shape[0], chunk)])


def coverage_of(points: Tensor, centres: Tensor, radii: Tensor, *, chunk: int = 1000) -> float:
    """The fraction of ``points`` inside at least one ball ``(centre, squared radius)``."""
    inside = [(squared_distances(points[i : i + chunk], centres) <= radii).any(dim=1) for i in range(0, points.shape[0], chunk)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real: np.ndarray | Tensor, fake: np.ndarray | Tensor, *, k: int = 3, real_radii: Tensor | None = None) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of
    balls around its points reaching their k-th nearest neighbour; precision is the fraction of
    ``fake`` rows inside the real manifold, recall the fraction of ``real`` rows inside the fake one.
    ``real_radii``: ``knn_radii(real, k)`` when already computed. ``{"precision", "recall"}``."""
    real = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    return {"precision": coverage_of(fake, real, real_radii), "recall": coverage_of(real, fake, knn_radii(fake, k))}


# ----------------------------------------------------------------------------- cached reference features

_MEMORY: dict[str, object] = {}  # per process: reference features, statistics and k-NN radii by key


def classifier_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over the model's state (names, shapes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def images_fingerprint(images: Tensor) -> str:
    """16 hex digits of SHA-256 over an image tensor's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{images.dtype}{tuple(images.shape)}".encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def features_key(classifier: torch.nn.Module, images: Tensor) -> str:
    """``<classifier hash>-<images hash>``: what a set of real images' features are cached under."""
    return f"{classifier_fingerprint(classifier)}-{images_fingerprint(images)}"


def cached_features(classifier: ImageClassifier, images: Tensor, *, cache_dir: str | os.PathLike | None = None,
                    disk: bool = True, key: str | None = None) -> tuple[Tensor, Tensor]:
    """``classify(classifier, images)``, kept in memory for the process and (``disk``) in
    ``<classifier cache>/features/<classifier hash>-<images hash>.safetensors``: real images (the test
    split, a training subset) are classified once, not once per prior. ``key``: ``features_key``'s, when known."""
    from safetensors.torch import load_file, save_file

    from ..utils import atomic_path

    key = key or features_key(classifier, images)
    if key in _MEMORY:
        return cast(tuple[Tensor, Tensor], _MEMORY[key])  # stored below under features_key-style keys only
    path = classifier_cache_dir(cache_dir) / "features" / f"{key}.safetensors"
    if disk and path.is_file():
        stored = load_file(str(path))
        result = (stored["features"], stored["predictions"])
    else:
        result = classify(classifier, images)
        if disk:
            with atomic_path(path) as tmp:
                save_file({"features": result[0].contiguous(), "predictions": result[1].contiguous()}, tmp)
    _MEMORY[key] = result
    return result


def memoized(key: str, compute):
    """``compute()`` once per process and ``key``."""
    if key not in _MEMORY:
        _MEMORY[key] = compute()
    return _MEMORY[key]


class DomainReference:
    """Every domain metric of a sample set against one set of real images (the test split) on the
    classifier's features: the Frechet distance to their statistics (``domain_fid``), KID against them
    with its subset spread (``domain_kid``, ``domain_kid_std``), improved precision and recall against
    an equally large fixed random subset of them (``domain_precision``, ``domain_recall``; k=3) and,
    given the samples' intended labels, ``class_accuracy``. The reference's features, statistics and
    k-NN radii are computed once per process (features also cached on disk, see ``cached_features``)."""

    def __init__(self, classifier: ImageClassifier, images: Tensor, *, cache_dir=None, disk: bool = True,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, k: int = 3):
        self.classifier = classifier
        self.key = features_key(classifier, images)
        self.features, _ = cached_features(classifier, images, cache_dir=cache_dir, disk=disk, key=self.key)
        self.frechet = memoized(f"frechet-{self.key}", lambda: FrechetReference.of(self.features.numpy()))
        self.kid_subsets, self.kid_subset_size, self.k = kid_subsets, kid_subset_size, k

    def subset(self, count: int) -> tuple[Tensor, Tensor]:
        """A fixed random subset of ``count`` reference rows (seed 0) and their k-NN radii."""
        count = min(count, self.features.shape[0])

        def compute():
            rows = self.features[torch.from_numpy(np.sort(np.random.default_rng(0).choice(self.features.shape[0], count, replace=False)))]
            return rows, knn_radii(rows, self.k)

        return memoized(f"subset-{self.key}-{count}-k{self.k}", compute)

    def measure(self, features: Tensor, predictions: Tensor | None = None, labels: Tensor | None = None, *,
                kid: bool = True, pr: bool = True) -> dict:
        """``features`` (and ``predictions``) of a sample set: ``classify(classifier, samples)``."""
        features = features.double()
        metrics = {"domain_fid": self.frechet(features.numpy()), "domain_fid_samples": features.shape[0],
                   "domain_fid_reference_images": self.features.shape[0]}
        if kid and features.shape[0] >= 2:
            result = kernel_inception_distance(features, self.features, subsets=self.kid_subsets, subset_size=self.kid_subset_size)
            metrics.update({"domain_kid": result["kid"], "domain_kid_std": result["kid_std"],
                            "domain_kid_subsets": result["kid_subsets"], "domain_kid_subset_size": result["kid_subset_size"]})
        if pr and features.shape[0] > self.k:  # k-NN balls need more than k samples
            rows, radii = self.subset(min(features.shape[0], self.features.shape[0]))
            result = precision_recall(rows, features, k=self.k, real_radii=radii)
            metrics.update({"domain_precision": result["precision"], "domain_recall": result["recall"]})
        if labels is not None and predictions is not None:
            metrics["class_accuracy"] = (predictions == labels.to(predictions.device)).double().mean().item()
        return metrics

    def measure_images(self, images: Tensor, labels: Tensor | None = None, **options) -> dict:
        features, predictions = classify(self.classifier, images)
        return self.measure(features, predictions, labels, **options)


def domain_metrics(classifier: ImageClassifier, samples: Tensor, reference: Tensor, *, labels: Tensor | None = None,
                   kid: bool = False, pr: bool = False) -> dict:
    """Domain FID between ``samples`` and ``reference`` images (``(N, C, H, W)``, float in ``[0, 1]``
    or uint8) on the classifier's features, and, given the samples' intended ``labels``, the
    fraction the classifier assigns to them (KID and precision/recall on request: ``DomainReference``)."""
    domain = DomainReference(classifier, reference, disk=False)
    return domain.measure_images(samples, labels, kid=kid, pr=pr)


# ----------------------------------------------------------------------------- Inception FID


def inception_available() -> str | None:
    """None when the Inception weights are installed, else why not (one line)."""
    from .image import inception_weights_path

    try:
        inception_weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        return str(error).splitlines()[0]
    return None


def inception_reference(dataset, count: int, *, cache_dir=None, device=None, batch_size: int = 50, progress: bool = True,
                        desc: str = "FID reference") -> FrechetReference:
    """The Inception statistics of a fixed ``count``-image subset of ``dataset`` (cached on disk by
    ``reference_statistics``, kept in memory here with the square root of their covariance)."""
    def compute():
        extractor = InceptionFeatures(device)
        _, mu, sigma = reference_statistics(extractor, dataset, count, batch_size=batch_size, cache_dir=cache_dir,
                                            progress=progress, desc=desc)
        return FrechetReference(mu, sigma)

    return memoized(f"inception-{getattr(dataset, 'cache_key', type(dataset).__name__)}-{len(dataset)}-{count}-{cache_dir}", compute)


@torch.no_grad()
def inception_features(images: Tensor, *, device=None, batch_size: int = 50, progress: bool = True, desc: str = "FID") -> np.ndarray:
    from tqdm.auto import tqdm

    extractor = InceptionFeatures(device)
    return np.concatenate([extractor(images[start : start + batch_size])
                           for start in tqdm(range(0, images.shape[0], batch_size), desc=desc, disable=not progress, leave=False)])


@torch.no_grad()
def generation_fid(samples: Tensor, dataset, *, cache_dir=None, device=None, batch_size: int = 50, progress: bool = True) -> dict:
    """Inception FID of ``samples`` ``(N, C, H, W)`` in ``[0, 1]`` against a fixed random subset of
    ``dataset`` of the same size (its statistics cached; the key is the tokenizer rFID's, so the two
    share the reference)."""
    if samples.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 samples, got {samples.shape[0]}")
    reference = inception_reference(dataset, samples.shape[0], cache_dir=cache_dir, device=device, batch_size=batch_size, progress=progress)
    features = inception_features(samples, device=device, batch_size=batch_size, progress=progress)
    return {"fid": reference(features), "fid_samples": samples.shape[0], "fid_reference_images": min(samples.shape[0], len(dataset))}


def inception_floor(train_set, test_set, count: int, *, cache_dir=None, device=None, batch_size: int = 50, progress: bool = True) -> float:
    """Inception FID of a fixed ``count``-image subset of the training split against the test subset
    the samples are measured against: what real images score (both statistics cached on disk)."""
    train = inception_reference(train_set, count, cache_dir=cache_dir, device=device, batch_size=batch_size, progress=progress,
                                desc="FID floor")
    test = inception_reference(test_set, count, cache_dir=cache_dir, device=device, batch_size=batch_size, progress=progress)
    return test.distance(train.mu, train.sigma)


# ----------------------------------------------------------------------------- the tokenizer's reconstructions


def _dataset_images(dataset, indices) -> Tensor:
    """The images ``indices`` picks from ``dataset`` (uint8 when it holds them in memory)."""
    from ..data.in_memory import uint8_images

    held = uint8_images(dataset)
    if held is not None:
        return held[torch.as_tensor(indices, dtype=torch.long)]
    return torch.stack([dataset[int(i)] for i in indices])


@torch.no_grad()
def reconstruct(tokenizer, images: Tensor, *, batch_size: int = 250) -> Tensor:
    """The tokenizer's reconstructions ``(N, C, H, W)`` in ``[0, 1]`` (on the CPU)."""
    return torch.cat([tokenizer.reconstruct(images[i : i + batch_size]).float().clamp(0, 1).cpu()
                      for i in range(0, images.shape[0], batch_size)])


def reconstruction_scores(tokenizer, tokenizer_sha256: str, train_set, test_set, *, domain: DomainReference | None, samples: int,
                          fid_samples: int, inception_cache_dir=None, device=None, progress: bool = True) -> dict:
    """What the tokenizer's decoder alone caps: its reconstructions of the floors' training images
    (the first ``samples``; the fixed ``fid_samples`` subset) scored as samples are, ``domain_rfid``
    on the classifier's features against the test split, ``rfid`` on Inception's against the test
    subset. Cached per tokenizer (its weights' hash) in ``<SIMVQ_CACHE>/reconstructions``, keyed by
    the classifier, the images and the counts."""
    from ..utils import read_json, write_json
    from .image import inception_tag, subset_indices

    path = fid_cache_dir().parent / "reconstructions" / f"{tokenizer_sha256[:16]}.json"
    stored = read_json(path, {})
    found, changed = {}, False
    if domain is not None and samples:
        key = f"domain-{domain.key}-{getattr(train_set, 'cache_key', 'train')}-first{samples}"
        if key not in stored:
            images = reconstruct(tokenizer, _dataset_images(train_set, range(min(samples, len(train_set)))))
            features, _ = classify(domain.classifier, images)
            stored[key], changed = {"domain_rfid": domain.frechet(features.numpy()), "domain_rfid_images": images.shape[0]}, True
        found.update(stored[key])
    if fid_samples:
        count = min(fid_samples, len(train_set))
        key = f"inception-{inception_tag()}-{getattr(train_set, 'cache_key', 'train')}-{getattr(test_set, 'cache_key', 'test')}-n{count}"
        if key not in stored:
            subset = subset_indices(len(train_set), count)
            images = reconstruct(tokenizer, _dataset_images(train_set, subset))
            reference = inception_reference(test_set, count, cache_dir=inception_cache_dir, device=device, progress=progress)
            inception = inception_features(images, device=device, progress=progress, desc="rFID")
            stored[key], changed = {"rfid": reference(inception), "rfid_images": count}, True
        found.update(stored[key])
    if changed:
        write_json(path, stored)
    return found


def bits(nats: float) -> float:
    return nats / math.log(2)


__all__ = [
    "DomainReference",
    "FrechetReference",
    "bits",
    "cached_features",
    "classifier_cache_dir",
    "classifier_fingerprint",
    "classify",
    "domain_classifier",
    "domain_metrics",
    "generation_fid",
    "images_fingerprint",
    "inception_available",
    "inception_floor",
    "inception_reference",
    "kernel_inception_distance",
    "knn_radii",
    "mmd2_unbiased",
    "polynomial_kernel",
    "precision_recall",
    "reconstruct",
    "reconstruction_scores",
    "token_statistics",
    "train_classifier",
]
