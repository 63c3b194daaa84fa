"""Metrics of generated images and of token streams:

- ``token_statistics``: entropy (bits), usage and perplexity of a code histogram — the unigram
  baseline a prior's bits per token should beat;
- a domain classifier (``simvq.models.classifier.ImageClassifier``) trained once on Fashion-MNIST
  and cached as safetensors under ``$SIMVQ_CACHE/classifier`` (default ``~/.cache/simvq/classifier``);
- ``domain_fid``: the Frechet distance on its 128-d features (meaningful and fast at 28x28, where
  Inception sees upscaled blobs), and ``class_accuracy`` of class-conditional samples;
- ``generation_fid``: the Inception FID of samples against a fixed subset of the test split (the
  reference statistics are shared with the tokenizer's rFID cache).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.classifier import ImageClassifier
from .image import (
    InceptionFeatures,
    feature_statistics,
    fid_cache_dir,
    frechet_distance,
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
    model = ImageClassifier(num_classes=int(labels.max()) + 1, in_channels=images.shape[1]).to(memory_format=torch.channels_last)
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


def domain_metrics(classifier: ImageClassifier, samples: Tensor, reference: Tensor, *, labels: Tensor | None = None) -> dict:
    """Domain FID between ``samples`` and ``reference`` images (``(N, C, H, W)``, float in ``[0, 1]``
    or uint8) on the classifier's features, and, given the samples' intended ``labels``, the
    fraction the classifier assigns to them."""
    features, predictions = classify(classifier, samples)
    reference_features, _ = classify(classifier, reference)
    mu, sigma = feature_statistics(features.numpy())
    mu_ref, sigma_ref = feature_statistics(reference_features.numpy())
    metrics = {
        "domain_fid": frechet_distance(mu, sigma, mu_ref, sigma_ref),
        "domain_fid_samples": samples.shape[0],
        "domain_fid_reference_images": reference.shape[0],
    }
    if labels is not None:
        metrics["class_accuracy"] = (predictions == labels.to(predictions.device)).double().mean().item()
    return metrics


@torch.no_grad()
def generation_fid(samples: Tensor, dataset, *, cache_dir=None, device=None, batch_size: int = 50, progress: bool = True) -> dict:
    """Inception FID of ``samples`` ``(N, C, H, W)`` in ``[0, 1]`` against a fixed random subset of
    ``dataset`` of the same size (its statistics cached; the key is the tokenizer rFID's, so the two
    share the reference)."""
    from tqdm.auto import tqdm

    if samples.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 samples, got {samples.shape[0]}")
    extractor = InceptionFeatures(device)
    subset, mu_ref, sigma_ref = reference_statistics(
        extractor, dataset, samples.shape[0], batch_size=batch_size, cache_dir=cache_dir, progress=progress, desc="FID reference")
    features = [extractor(samples[start : start + batch_size])
                for start in tqdm(range(0, samples.shape[0], batch_size), desc="FID", disable=not progress, leave=False)]
    mu, sigma = feature_statistics(np.concatenate(features))
    return {"fid": frechet_distance(mu, sigma, mu_ref, sigma_ref), "fid_samples": samples.shape[0], "fid_reference_images": len(subset)}


def bits(nats: float) -> float:
    return nats / math.log(2)


__all__ = [
    "bits",
    "classifier_cache_dir",
    "classify",
    "domain_classifier",
    "domain_metrics",
    "generation_fid",
    "token_statistics",
    "train_classifier",
]
