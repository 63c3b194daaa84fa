"""VQ-WAE (Vuong et al. 2023, "Vector Quantized Wasserstein Auto-Encoder", ICML).

The codebook is fitted to the encoder's latents by an optimal-transport distance instead of the
VQ-VAE codebook term: with ``a`` uniform over the N tokens of a batch and ``b`` uniform over the
codes, the loss is the transport cost ``<P, C>`` of the entropic plan ``P`` between them
(``C_ij = ||x_i - c_j||^2``). Every code must receive ``b_j`` of the mass, so every code is pulled
towards some part of the latent distribution: the term drives uniform use, which is the paper's
point. Quantization itself is the nearest code with a straight-through gradient, as in VQ-VAE.

Solver: Sinkhorn in the log domain (the dual potentials ``f (N,)`` and ``g (M,)``, updated by
log-sum-exp), so small ``epsilon`` never underflows. Memory is bounded in K: the cost matrix is
walked in tiles of at most ``tile_elements`` entries and recomputed on every half-iteration when
the whole ``N x M`` table is larger than one tile (then each iteration costs two ``N x M x dim``
GEMMs); when it fits in one tile it is computed once. The gradient is the envelope-theorem one
(``d OT_eps / d C = P``) and is formed from the plan's barycentric maps ``P c`` and ``P^T x``,
which are accumulated tile by tile, so no ``(N, M)`` tensor is kept for the backward either.
Extra memory: a few tile-sized tables (the tile, its scaled copy, the log-sum-exp's work space;
about 50 MiB at the default ``tile_elements``) plus ``O((N + M) dim)``.

Compute grows as ``iterations x N x M`` (plus ``x dim`` when streamed); at large K the transport
is solved against a fresh random sub-sample of ``M = max_transport_codes`` codes per step (every
code is drawn every ``K / M`` steps on average), so a step stays affordable at K = 65,536.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import (
    CodebookQuantizer,
    FlatOutput,
    commitment_losses,
    fp32,
    gaussian_codebook,
    squared_distances,
    straight_through,
)
from .options import check_float, check_int
from .registry import register_quantizer

DEFAULT_TILE_ELEMENTS = 2**22  # 16 MiB of float32 cost entries per tile
# The plan is exp((f_i + g_j - C_ij) / epsilon_abs) with potentials f, g carrying float32 rounding
# errors of about 2**-24 of the costs: with epsilon_abs = epsilon * mean cost below 2**-23 x the
# mean those errors are as large as epsilon_abs times the cost ratio, and the plan is noise (a
# transport cost of 78 for 5.8 at epsilon=1e-8, 301 or NaN below).
RELATIVE_EPSILON_MIN = 2.0**-23


class _Tiles:
    """The cost matrix as (row slice, column slice, tile) triples; cached when it is one tile."""

    def __init__(self, x: Tensor, codes: Tensor, tile_elements: int):
        self.x, self.codes = x, codes
        num_tokens, num_codes = x.shape[0], codes.shape[0]
        # whole rows of codes when they fit (one pass over tokens), else one token per row of tiles
        self.code_block = max(1, min(num_codes, tile_elements // num_tokens))
        self.token_block = max(1, min(num_tokens, tile_elements // self.code_block))
        self.single = self.token_block >= num_tokens and self.code_block >= num_codes
        self.cached = squared_distances(x, codes) if self.single else None

    def __iter__(self):
        if self.single:
            yield slice(None), slice(None), self.cached
            return
        for start in range(0, self.x.shape[0], self.token_block):
            rows = slice(start, start + self.token_block)
            for code_start in range(0, self.codes.shape[0], self.code_block):
                cols = slice(code_start, code_start + self.code_block)
                yield rows, cols, squared_distances(self.x[rows], self.codes[cols])


@torch.no_grad()
def sinkhorn_potentials(
    x: Tensor,
    codes: Tensor,
    *,
    epsilon: float | Tensor,
    iterations: int,
    tile_elements: int = DEFAULT_TILE_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Log-domain Sinkhorn between uniform weights on ``x: (N, d)`` and on ``codes: (M, d)``.

    Returns the potentials ``f (N,)``, ``g (M,)``; the plan is
    ``P_ij = exp((f_i + g_j - C_ij) / epsilon)``. The last update is ``g``'s, so the column sums
    (the codes' marginal) are exact and the row sums converge with the iterations.
    """
    x, codes = x.float(), codes.float()
    tiles = _Tiles(x, codes, tile_elements)
    log_a = torch.full((x.shape[0],), -math.log(x.shape[0]), device=x.device)
    log_b = torch.full((codes.shape[0],), -math.log(codes.shape[0]), device=x.device)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    scaled = None
    for _ in range(iterations):
        if tiles.single:  # the common small case: one table, scaled once, no running log-sum-exp
            if scaled is None:
                assert tiles.cached is not None  # a single tile is cached (for the type checker)
                scaled = tiles.cached / -epsilon
            f = epsilon * (log_a - torch.logsumexp(scaled + g / epsilon, dim=1))
            g = epsilon * (log_b - torch.logsumexp(scaled + (f / epsilon)[:, None], dim=0))
            continue
        row_lse = torch.full_like(f, -math.inf)
        for rows, cols, cost in tiles:
            row_lse[rows] = torch.logaddexp(row_lse[rows], torch.logsumexp((g[cols] - cost) / epsilon, dim=1))
        f = epsilon * (log_a - row_lse)
        col_lse = torch.full_like(g, -math.inf)
        for rows, cols, cost in tiles:
            col_lse[cols] = torch.logaddexp(col_lse[cols], torch.logsumexp((f[rows, None] - cost) / epsilon, dim=0))
        g = epsilon * (log_b - col_lse)
    return f, g


@torch.no_grad()
def _plan_moments(x: Tensor, codes: Tensor, f: Tensor, g: Tensor, epsilon: float | Tensor, tile_elements: int):
    """Row sums ``(N,)``, column sums ``(M,)``, ``P codes (N, d)`` and ``P^T x (M, d)``, by tiles."""
    x, codes = x.float(), codes.float()
    rows_sum, cols_sum = x.new_zeros(x.shape[0]), x.new_zeros(codes.shape[0])
    mapped_codes, mapped_tokens = torch.zeros_like(x), torch.zeros_like(codes)
    for rows, cols, cost in _Tiles(x, codes, tile_elements):
        plan = torch.exp((f[rows, None] + g[cols] - cost) / epsilon)
        rows_sum[rows] += plan.sum(1)
        cols_sum[cols] += plan.sum(0)
        mapped_codes[rows] += plan @ codes[cols]
        mapped_tokens[cols] += plan.t() @ x[rows]
    return rows_sum, cols_sum, mapped_codes, mapped_tokens


def transport_cost(
    x: Tensor,
    codes: Tensor,
    *,
    epsilon: float | Tensor,
    iterations: int,
    tile_elements: int = DEFAULT_TILE_ELEMENTS,
) -> Tensor:
    """``<P, C>`` of the entropic plan between uniform ``x: (N, d)`` and ``codes: (M, d)``.

    The value is exact for the plan found; its gradient to ``x`` and ``codes`` is the one with the
    plan held fixed (the envelope theorem), ``2 (r_i x_i - (P c)_i)`` and ``2 (s_j c_j - (P^T x)_j)``,
    built from tile-wise moments so no ``(N, M)`` tensor is stored for the backward.
    """
    x, codes = x.float(), codes.float()
    f, g = sinkhorn_potentials(x, codes, epsilon=epsilon, iterations=iterations, tile_elements=tile_elements)
    rows_sum, cols_sum, mapped_codes, mapped_tokens = _plan_moments(x, codes, f, g, epsilon, tile_elements)
    cross = (x * mapped_codes).sum()  # sum_ij P_ij x_i . c_j (no graph: the moments are constants)
    return (
        (rows_sum * x.pow(2).sum(1)).sum()
        + (cols_sum * codes.pow(2).sum(1)).sum()
        - 2 * (x * mapped_codes).sum()
        - 2 * (codes * mapped_tokens).sum()
        + 2 * cross.detach()
    )


@register_quantizer("vq_wae")
class VQWAE(CodebookQuantizer):
    """Nearest-code quantizer whose codebook is trained by an entropic Wasserstein distance.

    Args:
        dim, codebook_size: code dimension and number of codes.
        wasserstein_weight: weight of the transport cost ``<P, C>`` (1.0: the paper weighs its
            Wasserstein term against the reconstruction with a tuned multiplier; with simvq's mean
            squared reconstruction and the per-token normalisation of ``<P, C>`` (total mass 1)
            both are per-token squared errors, so 1 keeps them on the same footing).
        epsilon: entropic regularisation, *relative* to the mean cost of the batch (0.05): the
            latents' scale changes during training, and a fixed absolute epsilon would make the
            plan too blurred early or numerically sharp late. The absolute value used is
            ``epsilon * mean_ij C_ij``, computed exactly in ``O((N + M) dim)``. At least ``2**-23``,
            float32's resolution (see ``RELATIVE_EPSILON_MIN``: at 1e-9 the loss was NaN).
        iterations: Sinkhorn iterations per step (20, our choice: the codes' marginal is exact after
            every iteration, and at the default epsilon the tokens' marginal is within 1e-5 after
            about 10 on clustered latents; the log-domain updates stay stable at any count).
        max_transport_codes: at most this many codes enter the transport per step, a fresh
            uniform sub-sample when ``codebook_size`` is larger (1024: the paper's codebook sizes are
            at most this, so there the transport is exact; a recipe batch of 64 x 49 tokens against
            1024 codes is one 16 MiB tile, computed once per step; at K = 65,536 each code is drawn
            every 64 steps on average).
        tile_elements: cost entries per tile (2**22, 16 MiB): the memory bound of the solver.
        beta, init_scale, seed, rotation_trick, chunk_size, channel_first, check_finite: as in
            :class:`CodebookQuantizer`. The OT term already pulls latents towards the codes they are
            transported to; the commitment term ``beta * ||z - sg(q)||^2`` keeps each latent close
            to the code it is actually quantized to (``beta=0`` leaves the OT term alone). Codes
            start as ``N(0, init_scale^2)``, default ``dim**-0.5`` like ``vq``.

    Eval mode computes no transport (no loss); the codes and values are the nearest codes.
    """

    def __init__(self, dim: int, codebook_size: int, *, wasserstein_weight: float = 1.0, epsilon: float = 0.05,
                 iterations: int = 20, max_transport_codes: int | None = 1024,
                 tile_elements: int = DEFAULT_TILE_ELEMENTS, **options):
        super().__init__(dim, codebook_size, **options)
        self.wasserstein_weight = check_float("wasserstein_weight", wasserstein_weight, low=0.0, low_open=True)
        # relative to the mean transport cost (see absolute_epsilon)
        self.epsilon = check_float(
            "epsilon",
            epsilon,
            low=RELATIVE_EPSILON_MIN,
            why="the plan exp((f + g - C) / (epsilon * mean cost)) needs it above the float32 rounding of the "
            "potentials f, g (2**-24 of the costs): at least 2**-23, float32's resolution",
        )
        self.iterations = check_int("iterations", iterations, minimum=1)
        self.max_transport_codes = check_int("max_transport_codes", max_transport_codes, minimum=2, optional=True)
        self.tile_elements = check_int("tile_elements", tile_elements, minimum=1)
        self.embedding = nn.Parameter(gaussian_codebook(codebook_size, dim, init_scale=self.init_scale, seed=self.seed))

    def codebook(self) -> Tensor:
        return self.embedding

    def absolute_epsilon(self, x: Tensor, codes: Tensor) -> Tensor:
        """``epsilon * mean_ij ||x_i - c_j||^2`` (0-d tensor, no host sync), exact, without the ``(N, M)`` table."""
        with torch.no_grad():
            x, codes = x.float(), codes.float()
            mean_cost = x.pow(2).sum(1).mean() + codes.pow(2).sum(1).mean() - 2 * (x.mean(0) @ codes.mean(0))
            return self.epsilon * mean_cost.clamp_min(torch.finfo(torch.float32).tiny)

    def transport_codes(self) -> Tensor:
        """The codes entering this step's transport: all, or a uniform sub-sample."""
        limit = self.max_transport_codes
        if limit is None or limit >= self.codebook_size:
            return self.embedding
        chosen = torch.randperm(self.codebook_size, device=self.embedding.device)[:limit]
        return self.embedding[chosen]

    def quantize(self, x: Tensor) -> FlatOutput:
        codes = self.search(x, checked=self.check_finite)
        with fp32(x.device.type):
            z = x.float()
            q = self.lookup(codes).float()
            quantized = straight_through(z, q, rotation_trick=self.rotation_trick)
            if not self.training:
                return FlatOutput(quantized=quantized, codes=codes)
            losses = {}
            if self.beta > 0:
                losses["commitment"] = commitment_losses(z, q, beta=self.beta)["commitment"]
            targets = self.transport_codes().float()
            epsilon = self.absolute_epsilon(z, targets)
            cost = transport_cost(z, targets, epsilon=epsilon, iterations=self.iterations, tile_elements=self.tile_elements)
            losses["wasserstein"] = self.wasserstein_weight * cost
        return FlatOutput(quantized=quantized, codes=codes, losses=losses, metrics={"epsilon": epsilon})

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, wasserstein_weight={self.wasserstein_weight}, beta={self.beta}, "
            f"epsilon={self.epsilon}, iterations={self.iterations}, max_transport_codes={self.max_transport_codes}"
        )


__all__ = ["VQWAE", "sinkhorn_potentials", "transport_cost"]
