"""Quantizers as clustering (1-sparse coding): fit a codebook straight to data, no encoder.

Each method minimises its own codebook loss ``||sg(x) - q(x)||^2`` by minibatch Adam on the data
itself; the result is judged like k-means: *distortion* (mean squared Euclidean distance of a point
to its nearest code) and *usage* (fraction of codes that own at least one point), against
scikit-learn's KMeans as the reference.

A fact worth keeping in view (docs/analysis.md): SimVQ's codebook is ``W(C)``, an affine image of a
fixed random cloud. Where ``K <= dim`` the rows of ``C`` are independent and ``W`` can put every code
anywhere, so SimVQ can reach k-means' optimum; where ``K >> dim`` the codes can only be a stretched,
rotated copy of the Gaussian cloud, which covers the data's ellipse but cannot follow its modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.fashion_mnist import fashion_mnist_file, read_idx
from ..quantizers.base import code_counts, code_statistics
from ..search import nearest
from .toy import DATA_SEED_OFFSET, build_toy_quantizer

# ----------------------------------------------------------------------------- data


def gaussian_mixture(
    num_samples: int,
    *,
    num_modes: int = 8,
    dim: int = 16,
    separation: float = 4.0,
    std: float = 0.5,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """``(points (N, dim), labels (N,))``: equal-weight isotropic Gaussians whose means are drawn
    ``N(0, separation^2 / 2)`` per coordinate (expected mean distance ``separation * sqrt(dim)``)."""
    generator = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)
    means = torch.randn(num_modes, dim, generator=generator) * separation / math.sqrt(2)
    labels = torch.randint(0, num_modes, (num_samples,), generator=generator)
    points = means[labels] + std * torch.randn(num_samples, dim, generator=generator)
    return points, labels


def load_fashion_mnist_pixels(split: str = "test", *, limit: int | None = None, root: str | Path | None = None) -> Tensor:
    """Fashion-MNIST images of ``split`` as ``(N, 784)`` float32 in ``[0, 1]`` (``simvq.data``'s files)."""
    images = read_idx(fashion_mnist_file(split, "images", root))
    if limit is not None:
        images = images[:limit]
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)


def pca_features(x: Tensor, dim: int) -> Tensor:
    """Project centred ``x: (N, D)`` onto its top ``dim`` principal directions (float32)."""
    centred = x - x.mean(0)
    _, _, v = torch.linalg.svd(centred.double(), full_matrices=False)
    return (centred.double() @ v[:dim].T).float()


# ----------------------------------------------------------------------------- fitting


@dataclass
class ClusteringFit:
    """A codebook fitted to ``data`` and how it serves it."""

    method: str
    codebook: Tensor  # (K, dim)
    counts: Tensor  # (K,) points owned by each code
    distortion: float  # mean squared distance to the nearest code
    usage: float
    perplexity: float
    history: dict[str, list] = field(default_factory=dict)  # step -> usage / distortion
    quantizer: torch.nn.Module | None = field(default=None, repr=False)  # the fitted module, if any

    def summary(self) -> dict:
        return {
            "distortion": self.distortion,
            "usage": self.usage,
            "used_codes": int((self.counts > 0).sum()),
            "perplexity": self.perplexity,
        }


def assess(data: Tensor, codebook: Tensor, method: str, history: dict | None = None) -> ClusteringFit:
    codes, squared = nearest(data, codebook)
    counts = code_counts(codes, codebook.shape[0])
    stats = code_statistics(counts)
    return ClusteringFit(
        method=method,
        codebook=codebook.detach().clone(),
        counts=counts,
        distortion=float(squared.mean()),
        usage=float(stats["usage"]),
        perplexity=float(stats["perplexity"]),
        history=history or {},
    )


def fit_quantizer(
    data: Tensor,
    method: str,
    codebook_size: int,
    *,
    steps: int = 2000,
    batch_size: int = 512,
    lr: float = 1e-2,
    seed: int = 0,
    record_every: int = 100,
    callback: Callable[[int, torch.nn.Module], None] | None = None,
) -> ClusteringFit:
    """Fit quantizer ``method`` ("vq", "simvq", "simvq_train_c") to ``data: (N, dim)`` by Adam on its
    codebook loss. ``callback(step, quantizer)`` runs after every step (analysis hooks plug in here)."""
    if data.ndim != 2:
        raise ValueError(f"data must have shape (N, dim), got {tuple(data.shape)}")
    data = data.float()
    torch.manual_seed(seed)
    quantizer = build_toy_quantizer(method, codebook_size, dim=data.shape[1], seed=seed)
    optimizer = torch.optim.Adam([p for p in quantizer.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)
    history: dict[str, list] = {"step": [], "usage": [], "distortion": []}

    def record(step: int) -> None:
        with torch.no_grad():
            fit = assess(data, quantizer.codebook().detach(), method)
        history["step"].append(step)
        history["usage"].append(fit.usage)
        history["distortion"].append(fit.distortion)

    record(0)
    for step in range(1, steps + 1):
        batch = data[torch.randint(0, len(data), (batch_size,), generator=generator)]
        out = quantizer(batch)
        # the data are fixed, so the commitment term has no gradient; only the codebook term trains
        loss = out.losses["codebook"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(step, quantizer)
        if step % record_every == 0 or step == steps:
            record(step)
    with torch.no_grad():
        fit = assess(data, quantizer.codebook().detach(), method, history)
    fit.quantizer = quantizer
    return fit


def fit_kmeans(data: Tensor, codebook_size: int, *, seed: int = 0, n_init: int = 4) -> ClusteringFit:
    """scikit-learn KMeans (k-means++ init, Lloyd iterations) as the distortion reference."""
    from sklearn.cluster import KMeans

    kmeans = KMeans(n_clusters=codebook_size, n_init=n_init, random_state=seed).fit(data.double().numpy())
    return assess(data.float(), torch.from_numpy(kmeans.cluster_centers_).float(), "kmeans")


def compare_clustering(
    data: Tensor,
    codebook_size: int,
    *,
    methods=("vq", "simvq", "simvq_train_c"),
    seed: int = 0,
    **fit_options,
) -> dict[str, ClusteringFit]:
    """KMeans and every quantizer ``method`` fitted to the same data with the same ``codebook_size``."""
    fits = {"kmeans": fit_kmeans(data, codebook_size, seed=seed)}
    for method in methods:
        fits[method] = fit_quantizer(data, method, codebook_size, seed=seed, **fit_options)
    return fits


# ----------------------------------------------------------------------------- figure


def plot_clustering(fits: dict[str, ClusteringFit], data: Tensor | None = None, *, title: str = ""):
    """Distortion (relative to KMeans) and usage per method; with 2-D ``data``, the codes on it too."""
    from ..utils import pyplot

    plt = pyplot()

    show_points = data is not None and data.shape[1] == 2
    panels = 3 if show_points else 2
    figure, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 2.8))
    names = list(fits)
    reference = fits["kmeans"].distortion if "kmeans" in fits else 1.0
    axes[0].bar(names, [fits[n].distortion / reference for n in names], color="tab:blue")
    axes[0].axhline(1.0, color="k", linewidth=0.6)
    axes[0].set_title("distortion / KMeans", fontsize=8)
    axes[1].bar(names, [fits[n].usage for n in names], color="tab:green")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("codes used", fontsize=8)
    for ax in axes[:2]:
        ax.tick_params(axis="x", labelsize=6, rotation=30)
        ax.tick_params(axis="y", labelsize=6)
    if show_points:
        ax = axes[2]
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8", linewidths=0)
        for name, marker in zip(names, "o^sv"):
            used = fits[name].counts > 0
            codebook = fits[name].codebook
            ax.scatter(codebook[used, 0], codebook[used, 1], s=10, marker=marker, label=name, linewidths=0.3, edgecolors="k")
        ax.legend(fontsize=5)
        ax.set_aspect("equal")
        ax.set_title("used codes on the data", fontsize=8)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    return figure


__all__ = [
    "ClusteringFit",
    "assess",
    "compare_clustering",
    "fit_kmeans",
    "fit_quantizer",
    "gaussian_mixture",
    "load_fashion_mnist_pixels",
    "pca_features",
    "plot_clustering",
]
