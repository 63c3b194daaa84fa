"""Analysis hooks for a trained (or training) SimVQ: the spectrum of W, what a code index means,
and which codes a gradient step moves.

    tracker = SpectrumTracker(every=50)
    fit_quantizer(data, "simvq", 512, callback=tracker)     # or call tracker(step, q) in any loop
    tracker.effective_ranks, tracker.figure()

    index_correspondence(q, z)   # usage counted on C's rows == usage counted on W(C)'s rows
    code_movement(q, z)          # per-code displacement of the effective codebook after one SGD step

The last one is the "disjoint optimisation" argument made visible: plain VQ's codebook loss has
a nonzero gradient only on the rows that some token selected, so every other code stays exactly
where it is; in SimVQ the loss trains the shared ``W``, and every row of ``W(C)`` moves.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from ..quantizers.base import code_counts

# ----------------------------------------------------------------------------- spectrum


def singular_values(weight: Tensor) -> Tensor:
    """Singular values of a 2-D ``weight``, descending, float64."""
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"weight must be a 2-D tensor, got {getattr(weight, 'shape', type(weight).__name__)}")
    return torch.linalg.svdvals(weight.detach().double())


def effective_rank(weight_or_singular_values: Tensor) -> float:
    """Roy & Vetterli (2007) effective rank: ``exp(H(p))`` with ``p = s / sum(s)`` over singular values.

    Equals the rank for a matrix whose nonzero singular values are all equal; between 1 and
    ``min(shape)``. Accepts a matrix or a 1-D vector of singular values.
    """
    values = weight_or_singular_values
    if values.ndim == 2:
        values = singular_values(values)
    elif values.ndim != 1:
        raise ValueError(f"expected a matrix or a vector of singular values, got shape {tuple(values.shape)}")
    values = values.double().clamp_min(0)
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values / total
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
    return float(entropy.exp())


def _linear_weight(quantizer) -> Tensor:
    proj = getattr(quantizer, "proj", None)
    if proj is None:
        raise TypeError(f"{type(quantizer).__name__} has no linear map `proj` (expected a SimVQ)")
    return proj.weight


class SpectrumTracker:
    """Callback ``(step, quantizer)`` recording W's singular values and effective rank every ``every`` steps."""

    def __init__(self, every: int = 50):
        self.every = every
        self.steps: list[int] = []
        self.singular_values: list[Tensor] = []
        self.effective_ranks: list[float] = []

    def __call__(self, step: int, quantizer) -> None:
        if step % self.every:
            return
        values = singular_values(_linear_weight(quantizer))
        self.steps.append(step)
        self.singular_values.append(values)
        self.effective_ranks.append(effective_rank(values))

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "effective_rank": self.effective_ranks,
            "singular_values": [v.tolist() for v in self.singular_values],
        }

    def figure(self):
        from ..utils import pyplot

        plt = pyplot()

        figure, (left, right) = plt.subplots(1, 2, figsize=(6.4, 2.6))
        values = torch.stack(self.singular_values).numpy()
        left.semilogy(self.steps, values, linewidth=0.7)
        left.set_title("singular values of W", fontsize=8)
        left.set_xlabel("step", fontsize=7)
        right.plot(self.steps, self.effective_ranks)
        right.set_ylim(0, values.shape[1] * 1.05)
        right.set_title(f"effective rank of W (max {values.shape[1]})", fontsize=8)
        right.set_xlabel("step", fontsize=7)
        for ax in (left, right):
            ax.tick_params(labelsize=6)
        figure.tight_layout()
        return figure


# ----------------------------------------------------------------------------- what a code index is


@torch.no_grad()
def index_correspondence(quantizer, z: Tensor) -> dict:
    """Usage counted on the rows of ``C`` vs on the rows of ``W(C)``: index ``i`` of C is code ``i`` of W(C).

    Returns counts from the quantizer's own codes, counts from an independent brute-force
    (``torch.cdist``) argmin against ``C @ W^T + b``, the largest difference between
    ``decode(i)`` and ``W(C_i)``, and, for contrast, the counts one gets by searching ``C`` alone
    (what decoding or searching "through C", the official code's bug, would count).
    """
    weight, bias = _linear_weight(quantizer).double(), quantizer.proj.bias
    basis = quantizer.basis.double()
    effective = F.linear(basis, weight, None if bias is None else bias.double())
    flat = z.reshape(-1, z.shape[-1]).double()
    size = quantizer.codebook_size
    codes = quantizer.encode(z).reshape(-1)
    counts_codes = code_counts(codes, size)
    counts_effective = code_counts(torch.cdist(flat, effective).argmin(1), size)
    counts_basis_only = code_counts(torch.cdist(flat, basis).argmin(1), size)
    decoded = quantizer.decode(torch.arange(size)).double()
    return {
        "counts_codes": counts_codes,
        "counts_effective": counts_effective,
        "counts_basis_only": counts_basis_only,
        "max_decode_error": float((decoded - effective).abs().max()),
        "counts_equal": bool((counts_codes == counts_effective).all()),
        "usage_codes": float((counts_codes > 0).float().mean()),
        "usage_effective": float((counts_effective > 0).float().mean()),
        "usage_basis_only": float((counts_basis_only > 0).float().mean()),
    }


def _small_labels(ax, *, xlabel: str, ylabel: str | None = None, title: str | None = None, legend: int | None = None) -> None:
    """The small-print labels of the analysis figures (7 pt labels, 6 pt ticks, optional legend size)."""
    ax.set_xlabel(xlabel, fontsize=7)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=7)
    if title:
        ax.set_title(title, fontsize=7)
    if legend:
        ax.legend(fontsize=legend)
    ax.tick_params(labelsize=6)


def plot_index_correspondence(result: dict):
    from ..utils import pyplot

    plt = pyplot()

    figure, ax = plt.subplots(figsize=(3.2, 3.0))
    ax.scatter(result["counts_effective"], result["counts_codes"], s=6, label="codes vs nearest row of W(C)")
    ax.scatter(result["counts_effective"], result["counts_basis_only"], s=6, marker="x", label="nearest row of C alone")
    _small_labels(ax, xlabel="count of index i, brute force on W(C)", ylabel="count of index i", legend=6)
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------- who moves


def code_movement(quantizer, z: Tensor, *, lr: float = 0.1) -> dict:
    """One plain SGD step on the codebook loss ``||sg(z) - q||^2`` of a *copy* of ``quantizer``.

    Returns ``movement: (K,)`` the distance each row of the effective codebook moved,
    ``selected: (K,)`` whether any token of ``z`` chose that code, and the fraction of selected and
    of unselected codes that moved (displacement > 1e-12 of the codebook's scale).
    """
    model = copy.deepcopy(quantizer).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=lr)
    before = model.codebook().detach().double().clone()
    out = model(z)
    optimizer.zero_grad(set_to_none=True)
    out.losses["codebook"].backward()
    optimizer.step()
    after = model.codebook().detach().double()
    movement = (after - before).norm(dim=1)
    selected = code_counts(out.codes, model.codebook_size) > 0
    tolerance = 1e-12 * float(before.norm(dim=1).max())
    moved = movement > tolerance
    return {
        "movement": movement,
        "selected": selected,
        "moved": moved,
        "fraction_selected": float(selected.float().mean()),
        "fraction_moved": float(moved.float().mean()),
        "fraction_unselected_moved": float(moved[~selected].float().mean()) if (~selected).any() else float("nan"),
        "mean_movement_selected": float(movement[selected].mean()),
        "mean_movement_unselected": float(movement[~selected].mean()) if (~selected).any() else float("nan"),
    }


class MovementTracker:
    """Callback ``(step, quantizer)``: per step, the fraction of codes of the effective codebook that
    moved since the previous call, and the fraction that have never moved since the first call.

    Call it after every optimiser step (``fit_quantizer(..., callback=tracker)``). With Adam, a VQ
    code keeps moving for a while after its last selection (momentum), so "moved this step" counts
    codes selected recently, not only in this batch; "never moved" counts codes never selected.
    """

    def __init__(self):
        self.steps: list[int] = []
        self.fraction_moved: list[float] = []
        self.fraction_never_moved: list[float] = []
        self._previous: Tensor | None = None
        self._ever_moved: Tensor | None = None

    @torch.no_grad()
    def __call__(self, step: int, quantizer) -> None:
        codebook = quantizer.codebook().detach().double().clone()
        if self._previous is not None:
            moved = (codebook - self._previous).norm(dim=1) > 1e-12 * float(self._previous.norm(dim=1).max())
            self._ever_moved = moved if self._ever_moved is None else self._ever_moved | moved
            self.steps.append(step)
            self.fraction_moved.append(float(moved.double().mean()))
            self.fraction_never_moved.append(1.0 - float(self._ever_moved.double().mean()))
        self._previous = codebook

    def as_dict(self) -> dict:
        return {"steps": self.steps, "fraction_moved": self.fraction_moved, "fraction_never_moved": self.fraction_never_moved}


def plot_code_movement(results: dict[str, dict], trackers: dict[str, MovementTracker] | None = None):
    """Per-code displacement after one step, selected codes first, one panel per method; with
    ``trackers``, one more panel: fraction of codes moving per step over a whole fit."""
    from ..utils import pyplot

    plt = pyplot()

    panels = len(results) + (1 if trackers else 0)
    figure, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 2.6), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        order = torch.argsort(result["selected"].int(), descending=True, stable=True)
        movement = result["movement"][order].numpy()
        colours = ["tab:blue" if s else "tab:red" for s in result["selected"][order].tolist()]
        ax.bar(range(len(movement)), movement, color=colours, width=1.0)
        ax.set_title(
            f"{name}: {result['fraction_moved']:.0%} of codes moved\n(blue: selected {result['fraction_selected']:.0%}, red: not)",
            fontsize=7,
        )
        _small_labels(ax, xlabel="code (selected first)", ylabel="|change of code| after one step")
    if trackers:
        ax = axes[0][-1]
        for name, tracker in trackers.items():
            line = ax.plot(tracker.steps, tracker.fraction_moved, linewidth=0.8, label=f"{name}: moved this step")[0]
            ax.plot(tracker.steps, tracker.fraction_never_moved, ":", color=line.get_color(), label=f"{name}: never moved yet")
        ax.set_ylim(-0.02, 1.05)
        ax.set_xscale("log")
        _small_labels(ax, xlabel="step (Adam)", title="fraction of codes, over a fit", legend=5)
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------- where the tokens land


def codebook_geometry(codebook: Tensor, counts: Tensor, tokens: Tensor | None = None, *, bins: int = 10) -> dict:
    """Where a codebook's tokens land, by the codes' distance from the codebook's mean: the codes in
    ``bins`` equal groups, innermost first, with each group's usage (codes hit at least once in
    ``counts``) and share of all counted tokens; the codebook's effective rank (its centred singular
    values); with ``tokens`` (a sample of encoder outputs), their RMS distance from that mean over the
    codes' own. An untrained quantizer in many dimensions loses its outermost codes (the centre's codes
    are every direction's near neighbours); a trained one whose tokens spread wider than its codes
    feeds the outer codes and starves the centre."""
    if codebook.ndim != 2 or counts.shape != codebook.shape[:1]:
        raise ValueError(f"codebook (K, dim) and counts (K,) must agree, got {tuple(codebook.shape)} and {tuple(counts.shape)}")
    if not 1 <= bins <= codebook.shape[0]:
        raise ValueError(f"bins must be in [1, K={codebook.shape[0]}], got {bins}")
    if int(counts.sum()) <= 0:
        raise ValueError("counts must hold at least one counted token")
    codes = codebook.detach().double()
    centre = codes.mean(0)
    groups = (codes - centre).norm(dim=1).argsort().tensor_split(bins)
    counts = counts.double()
    result = {"usage_by_radius": [float((counts[g] > 0).double().mean()) for g in groups],
              "token_share_by_radius": [float(counts[g].sum() / counts.sum()) for g in groups],
              "effective_rank": effective_rank(singular_values(codes - centre))}
    if tokens is not None:
        def rms(x: Tensor) -> float:
            return float((x.detach().double() - centre).square().sum(1).mean().sqrt())

        result["spread_ratio"] = rms(tokens.reshape(-1, codes.shape[1])) / rms(codes)
    return result


def run_geometry(run_dir, counts: Tensor, *, images: int = 2000) -> dict | None:
    """``codebook_geometry`` of a trained image run: its quantizer's codebook, ``counts`` (the code
    histogram its evaluation counted) and the tokens of its first ``images`` test images. None for a
    quantizer without one explicit codebook (FSQ's and LFQ's grids, residual stages)."""
    from ..data import build_image_dataset
    from ..quantizers.base import CodebookQuantizer
    from ..runs.model import load_run_model

    model, config, _ = load_run_model(run_dir)
    if not isinstance(model.quantizer, CodebookQuantizer):
        return None
    test = build_image_dataset(config.data, "test")
    with torch.no_grad():  # in batches of 250 images: a finer grid's activations stay small
        tokens = torch.cat([model.encode_latents(torch.stack([test[i] for i in range(start, min(start + 250, images, len(test)))]))
                            .reshape(-1, config.model.dim) for start in range(0, min(images, len(test)), 250)])
        return codebook_geometry(model.quantizer.codebook(), counts, tokens)


__all__ = [
    "MovementTracker",
    "SpectrumTracker",
    "code_movement",
    "codebook_geometry",
    "effective_rank",
    "index_correspondence",
    "plot_code_movement",
    "plot_index_correspondence",
    "run_geometry",
    "singular_values",
]
