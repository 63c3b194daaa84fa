"""The PNGs of a run directory (matplotlib, Agg backend; written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..utils import atomic_path, save_figure
from ..utils import pyplot as _pyplot


def _save(figure, path: Path) -> None:
    save_figure(figure, path, dpi=120, bbox_inches="tight")


@torch.no_grad()
def reconstruction_grid(model, dataset, path: Path, *, num_images: int = 32, per_row: int = 8) -> None:
    """Rows of originals, each followed by a row of their reconstructions by ``model`` (an ``ImageAutoencoder``)."""
    num_images = min(num_images, len(dataset))
    images = torch.stack([dataset[i] for i in range(num_images)])
    device = next(model.parameters()).device
    reconstructions = model.reconstruct(images.to(device)).float().cpu()
    rows = []
    for start in range(0, num_images, per_row):
        for batch in (images[start : start + per_row], reconstructions[start : start + per_row]):
            rows.append(_full_row(batch, per_row))
    save_image_grid(torch.cat(rows), path, per_row=per_row)


def save_image_grid(images: torch.Tensor, path: Path, *, per_row: int = 8) -> None:
    """A PNG grid of images ``(N, C, H, W)`` in ``[0, 1]``, ``per_row`` a row (the last padded with
    white), enlarged so small images can be seen."""
    from PIL import Image

    rows = [torch.cat(list(_full_row(images[start : start + per_row], per_row)), dim=2) for start in range(0, images.shape[0], per_row)]
    grid = torch.cat(rows, dim=1)  # (C, rows * H, W * per_row)
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    scale = max(1, 256 // images.shape[-1])  # small images are enlarged so a person can see them
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _full_row(batch: torch.Tensor, per_row: int) -> torch.Tensor:
    """``batch`` padded with white images to ``per_row``."""
    pad = per_row - batch.shape[0]
    return torch.cat([batch, torch.ones(pad, *batch.shape[1:])]) if pad else batch


def code_usage_histogram(counts: torch.Tensor, path: Path, *, title: str = "") -> None:
    """Counts per code index, and the same counts sorted (log scale) to show how skewed use is."""
    plt = _pyplot()
    counts = counts.cpu().numpy().astype(np.float64)
    used = (counts > 0).mean()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    left.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
    left.set_xlabel("code index")
    left.set_ylabel("tokens")
    left.set_title(f"{title}: {used:.1%} of codes used")
    ordered = np.sort(counts)[::-1]
    right.plot(np.arange(1, len(ordered) + 1), np.maximum(ordered, 0.5), color="tab:orange")
    right.set_yscale("log")
    right.set_xlabel("code rank")
    right.set_ylabel("tokens (log)")
    right.set_title("codes sorted by use")
    _save(figure, path)


def quality_over_steps(curves: dict[str, list[dict]], path: Path, *, targets: dict[str, float] | None = None) -> None:
    """PESQ and STOI of a codec's reconstructions over training, one line per run, the targets dashed."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for axis, (metric, title) in zip(axes, (("pesq", "PESQ (wideband)"), ("stoi", "STOI"))):
        for name, rows in curves.items():
            axis.plot([row["step"] for row in rows], [float(row[metric]) for row in rows], marker=".", label=name)
        if targets and metric in targets:
            axis.axhline(targets[metric], color="black", linestyle="--", linewidth=1, label=f"target {targets[metric]:g}")
        axis.set_xlabel("step")
        axis.set_ylabel(title)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    _save(figure, path)


def usage_over_steps(histories: dict[str, list[dict]], path: Path) -> None:
    """Usage and perplexity of the codes hit in each logging window, one line per run."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    for name, history in histories.items():
        steps = [point["step"] for point in history]
        left.plot(steps, [point["usage"] for point in history], marker=".", label=name)
        right.plot(steps, [point["perplexity"] for point in history], marker=".", label=name)
    left.set_ylabel("codebook usage (per logging window)")
    right.set_ylabel("perplexity (per logging window)")
    right.set_yscale("log")
    for axis in (left, right):
        axis.set_xlabel("step")
        axis.legend()
        axis.grid(alpha=0.3)
    _save(figure, path)
