"""The 2-D toy: watch plain VQ's codebook collapse and SimVQ's one linear layer keep every code alive.

A tiny autoencoder ``x (2) -> MLP encoder -> z (2) -> quantizer (K codes) -> MLP decoder -> x``
is trained on continuous 2-D data. The codes live in the same plane as the encoder outputs, so the
whole state of the quantizer is a scatter plot: where the codes are, which ones the data reach.

    result = train_toy(ToyConfig(dataset="square", method="vq"))
    result.usage[-1]                      # fraction of the K codes hit by the eval set
    fig = plot_toy({"vq": result, ...})   # code positions over training, coloured by usage

Methods: ``vq`` (plain VQ-VAE codebook, ``build_quantizer("vq")``), ``simvq`` (codebook ``W(C)``, C
frozen), ``simvq_train_c`` (``SimVQ(train_codebook=True)``, the paper's Remark 4.1 ablation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ..quantizers import SimVQ, build_quantizer, list_quantizers
from ..quantizers.base import code_counts, code_statistics

DATASETS = ("square", "ring", "mixture")
METHODS = ("vq", "simvq", "simvq_train_c")
# Data streams are seeded apart from the quantizers: SimVQ(seed=s) draws C with randn from seed s,
# and data drawn from the same seed would be C itself, up to scale (it happened; docs/analysis.md).
DATA_SEED_OFFSET = 1_000_003

METHOD_LABELS = {"vq": "plain VQ", "simvq": "SimVQ (C frozen)", "simvq_train_c": "SimVQ, C trained"}


# ----------------------------------------------------------------------------- data


def toy_data(name: str, num_samples: int, *, generator: torch.Generator | None = None, scale: float = 1.0) -> Tensor:
    """``(num_samples, 2)`` points of a 2-D toy distribution, multiplied by ``scale``.

    square:  uniform on ``[-1, 1]^2``.
    ring:    radius ``1 + 0.1 * N(0, 1)``, uniform angle (a continuous curve with a hole inside).
    mixture: 8 Gaussians (std 0.1) on the unit circle: data with 8 modes, so at most ~8 codes are
             *needed*; usage there is bounded by the modes, not by collapse.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if name == "square":
        points = torch.rand(num_samples, 2, generator=generator) * 2 - 1
    elif name == "ring":
        angle = torch.rand(num_samples, generator=generator) * 2 * math.pi
        radius = 1 + 0.1 * torch.randn(num_samples, generator=generator)
        points = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    else:
        angles = torch.arange(8) * 2 * math.pi / 8
        means = torch.stack([angles.cos(), angles.sin()], dim=1)
        mode = torch.randint(0, 8, (num_samples,), generator=generator)
        points = means[mode] + 0.1 * torch.randn(num_samples, 2, generator=generator)
    return points * scale


# ----------------------------------------------------------------------------- model


def build_toy_quantizer(method: str, codebook_size: int, *, dim: int = 2, seed: int = 0):
    """The quantizer of ``method``: one of ``METHODS`` or any registered quantizer name, built with
    its defaults and ``seed``; every codebook method's codes start from the same N(0, 1/dim) scale."""
    if method == "simvq_train_c":
        return SimVQ(dim, codebook_size, seed=seed, train_codebook=True)
    if method in list_quantizers():
        return build_quantizer(method, dim=dim, codebook_size=codebook_size, seed=seed)
    raise ValueError(f"method must be one of {METHODS} or a registered quantizer, got {method!r}")


@torch.no_grad()
def code_vectors(quantizer) -> Tensor:
    """Every code's vector in the latent plane, ``(K, dim)``: ``decode`` of each code (``W(C)`` for
    SimVQ). Multi-stage quantizers have no single table: ``(0, dim)``."""
    if quantizer.code_ndim:
        return torch.zeros(0, quantizer.dim)
    return quantizer.decode(torch.arange(quantizer.codebook_size)).detach().clone()


def mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 2))


@dataclass
class ToyConfig:
    dataset: str = "square"
    method: str = "simvq"
    codebook_size: int = 64
    # The data occupy [-0.2, 0.2]^2 while the codes start at N(0, 1/2): the encoder's first outputs
    # reach only a few codes, and a reconstruction loss this small cannot out-pull the VQ losses
    # that hold the encoder on them. At data_scale=1 plain VQ keeps most codes (docs/toy.md).
    data_scale: float = 0.2
    hidden: int = 32
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    snapshot_every: int = 50
    eval_samples: int = 8192  # usage is counted over this many points (cap 1 - exp(-N/K) ~ 1)
    shown_latents: int = 600  # encoder outputs kept per snapshot for the figures
    seed: int = 0


@dataclass
class ToyResult:
    """Snapshots of one toy run; ``S`` snapshots, ``K`` codes, ``M`` shown latents.

    steps: (S,) training step of each snapshot (0 = before training).
    codebooks: (S, K, 2) effective codebook (``W(C)`` for SimVQ) at each snapshot.
    counts: (S, K) how many of the eval points each code receives.
    latents: (S, M, 2) encoder outputs of a fixed subset of the eval points.
    usage, perplexity, mse: (S,) over the eval set (mse in data units divided by data_scale^2).
    """

    config: ToyConfig
    steps: Tensor
    codebooks: Tensor
    counts: Tensor
    latents: Tensor
    usage: Tensor
    perplexity: Tensor
    mse: Tensor
    data: Tensor = field(repr=False, default=None)  # (M, 2) the shown eval points
    modules: nn.ModuleDict | None = field(repr=False, default=None)  # the trained encoder, quantizer, decoder

    def summary(self) -> dict:
        return {
            "config": asdict(self.config),
            "final_usage": float(self.usage[-1]),
            "final_used_codes": int((self.counts[-1] > 0).sum()),
            "final_perplexity": float(self.perplexity[-1]),
            "final_relative_mse": float(self.mse[-1]),
            "usage_curve": {int(s): float(u) for s, u in zip(self.steps, self.usage)},
        }


def train_toy(config: ToyConfig | None = None, *, progress: bool = False, callback=None) -> ToyResult:
    """Train the toy autoencoder of ``config`` and record the quantizer's state every few steps.

    ``callback(step, quantizer)`` runs after every optimiser step (e.g. an analysis.SpectrumTracker).
    """
    config = config if config is not None else ToyConfig()
    if config.dataset not in DATASETS:
        raise ValueError(f"config.dataset must be one of {DATASETS}, got {config.dataset!r}")
    torch.manual_seed(config.seed)
    quantizer = build_toy_quantizer(config.method, config.codebook_size, seed=config.seed)
    encoder, decoder = mlp(config.hidden), mlp(config.hidden)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters(), *quantizer.parameters()], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed + DATA_SEED_OFFSET)
    eval_generator = torch.Generator().manual_seed(config.seed + 2 * DATA_SEED_OFFSET)
    eval_points = toy_data(config.dataset, config.eval_samples, generator=eval_generator, scale=config.data_scale)
    shown = eval_points[: config.shown_latents]

    snapshots: dict[str, list] = {k: [] for k in ("steps", "codebooks", "counts", "latents", "usage", "perplexity", "mse")}

    @torch.no_grad()
    def snapshot(step: int) -> None:
        # eval mode: measuring must not move an EMA codebook or start a k-means init on eval points
        quantizer.eval()
        latents = encoder(eval_points)
        out = quantizer(latents)
        counts = code_counts(out.codes, quantizer.codebook_size)
        stats = code_statistics(counts)
        mse = (decoder(out.quantized) - eval_points).pow(2).mean() / config.data_scale**2
        snapshots["steps"].append(step)
        snapshots["codebooks"].append(code_vectors(quantizer))
        quantizer.train()
        snapshots["counts"].append(counts)
        snapshots["latents"].append(latents[: config.shown_latents].clone())
        snapshots["usage"].append(stats["usage"])
        snapshots["perplexity"].append(stats["perplexity"])
        snapshots["mse"].append(mse)

    iterator = range(1, config.steps + 1)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"{config.dataset}/{config.method}", leave=False)
    snapshot(0)
    for step in iterator:
        x = toy_data(config.dataset, config.batch_size, generator=generator, scale=config.data_scale)
        out = quantizer(encoder(x))
        loss = (decoder(out.quantized) - x).pow(2).mean() + out.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(step, quantizer)
        if step % config.snapshot_every == 0 or step == config.steps:
            snapshot(step)

    return ToyResult(
        modules=nn.ModuleDict({"encoder": encoder, "quantizer": quantizer, "decoder": decoder}),
        config=config,
        steps=torch.tensor(snapshots["steps"]),
        codebooks=torch.stack(snapshots["codebooks"]),
        counts=torch.stack(snapshots["counts"]),
        latents=torch.stack(snapshots["latents"]),
        usage=torch.stack(snapshots["usage"]),
        perplexity=torch.stack(snapshots["perplexity"]),
        mse=torch.stack(snapshots["mse"]),
        data=shown,
    )


def compare_toy(dataset: str = "square", methods=METHODS, *, progress: bool = False, **overrides) -> dict[str, ToyResult]:
    """One run per method on ``dataset`` with the same seed and options (``overrides`` go to ToyConfig)."""
    return {m: train_toy(ToyConfig(dataset=dataset, method=m, **overrides), progress=progress) for m in methods}


# ----------------------------------------------------------------------------- figures


def _draw_state(ax, result: ToyResult, index: int, *, limit: float | None = None) -> None:
    """Encoder outputs (grey) and codes (coloured by log-count; dead codes as red crosses)."""
    import numpy as np

    latents = result.latents[index].numpy()
    codebook = result.codebooks[index].numpy()
    counts = result.counts[index].numpy()
    alive = counts > 0
    ax.scatter(latents[:, 0], latents[:, 1], s=2, c="0.75", linewidths=0)
    ax.scatter(codebook[~alive, 0], codebook[~alive, 1], s=14, marker="x", c="tab:red", linewidths=0.8)
    ax.scatter(
        codebook[alive, 0], codebook[alive, 1], s=16, c=np.log1p(counts[alive]), cmap="viridis",
        vmin=0, vmax=np.log1p(counts.sum()), edgecolors="k", linewidths=0.3,
    )
    if limit is not None:
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _limit(results: dict[str, ToyResult]) -> float:
    points = torch.cat([torch.cat([r.codebooks.reshape(-1, 2), r.latents.reshape(-1, 2)]) for r in results.values()])
    return float(points.abs().quantile(0.995)) * 1.1


def plot_toy(results: dict[str, ToyResult], *, columns: int = 4):
    """Rows: methods; columns: snapshots from start to end; last column: usage over training."""
    from ..utils import pyplot

    plt = pyplot()

    names = list(results)
    figure, axes = plt.subplots(len(names), columns + 1, figsize=(2.1 * (columns + 1), 2.1 * len(names)), squeeze=False)
    limit = _limit(results)
    for row, name in enumerate(names):
        result = results[name]
        picks = torch.linspace(0, len(result.steps) - 1, columns).round().long().tolist()
        for col, index in enumerate(picks):
            ax = axes[row][col]
            _draw_state(ax, result, index, limit=limit)
            ax.set_title(f"step {int(result.steps[index])}: {int((result.counts[index] > 0).sum())}/{result.config.codebook_size}", fontsize=7)
            if col == 0:
                ax.set_ylabel(METHOD_LABELS.get(name, name), fontsize=8)
        curve = axes[row][columns]
        for other, other_result in results.items():
            style = "-" if other == name else ":"
            curve.plot(other_result.steps.numpy(), other_result.usage.numpy(), style, label=METHOD_LABELS.get(other, other), linewidth=1)
        curve.set_ylim(0, 1.05)
        curve.set_title("usage", fontsize=7)
        curve.tick_params(labelsize=6)
        if row == 0:
            curve.legend(fontsize=5)
    figure.suptitle(f"{next(iter(results.values())).config.dataset}: codes coloured by log-count, red x = dead", fontsize=8)
    figure.tight_layout()
    return figure


def animate_toy(results: dict[str, ToyResult], path, *, fps: int = 6, dpi: int = 60) -> None:
    """Animated GIF of every snapshot, one panel per method (Pillow writer)."""
    from ..utils import pyplot

    plt = pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    names = list(results)
    figure, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names), 2.6), squeeze=False)
    limit = _limit(results)
    frames = min(len(r.steps) for r in results.values())

    def draw(index):
        for ax, name in zip(axes[0], names):
            ax.clear()
            result = results[name]
            _draw_state(ax, result, index, limit=limit)
            ax.set_title(
                f"{METHOD_LABELS.get(name, name)}\nstep {int(result.steps[index])}, "
                f"{int((result.counts[index] > 0).sum())}/{result.config.codebook_size} used",
                fontsize=7,
            )
        return []

    animation = FuncAnimation(figure, draw, frames=frames, blit=False)
    animation.save(str(path), writer=PillowWriter(fps=fps), dpi=dpi)
    plt.close(figure)


__all__ = [
    "DATASETS",
    "DATA_SEED_OFFSET",
    "METHODS",
    "ToyConfig",
    "ToyResult",
    "animate_toy",
    "build_toy_quantizer",
    "compare_toy",
    "plot_toy",
    "toy_data",
    "train_toy",
]
