"""QINCo (Huijben et al. 2024, "Residual Quantization with Implicit Neural Codebooks", ICML).

Residual quantization whose stage codebooks depend on what the earlier stages reconstructed. Stage
``m`` has a base codebook ``C_m (K, dim)`` and a small network ``f_m``; its candidate codewords for
a token are ``f_m(C_m[k], x_hat_{m-1})``, and the chosen one is the candidate nearest to the
residual ``x - x_hat_{m-1}``:

    x_hat_0 = 0,   k_m = argmin_k ||x - x_hat_{m-1} - f_m(C_m[k], x_hat_{m-1})||^2,
    x_hat_m = x_hat_{m-1} + f_m(C_m[k_m], x_hat_{m-1}).

``f_m(c, x_hat) = v_L`` with ``v_0 = c + W [c; x_hat]`` (a linear layer on the concatenation, with a
residual connection from ``c``) and ``L`` residual MLP blocks ``v <- v + W_2 relu(W_1 v)`` of width
``hidden_dim``. ``W`` and each block's ``W_2`` start at zero, so an untrained QINCo *is* residual
quantization with codebooks ``C_m`` (the paper initialises QINCo from an RQ the same way). The first
stage has no network: ``x_hat_0 = 0`` carries no information to condition on.

Codes are ``(..., num_quantizers)`` with values in ``[0, codebook_size)``, as for ``residual`` and
``residual_simvq``; the constructor takes the same ``num_quantizers`` and per-stage
``codebook_size``, so the three compare at equal stages and K.

Search: exhaustive over the K candidates of every stage (the paper's encoder) costs ``N x K``
network evaluations per stage. ``candidates=A`` pre-selects, per token and stage, the ``A`` base
codewords ``C_m[k]`` nearest to the residual (a cheap approximation of the network's output, the
pre-selection of QINCo2) and runs the network on those only. Default ``A = 32``: it keeps a
training step within a few times a plain RQ step on a CPU; ``candidates=None`` is exhaustive.
Either way the search runs without a graph, in token chunks whose candidate tensor stays under
``2**22`` entries; the chosen codewords are then recomputed with a graph.

Training: the task gradient reaches the input by straight-through over the whole sum
(``x + sg(x_hat_M - x)``); the codebooks and networks learn from the reconstruction loss, the mean
squared error of every stage's partial reconstruction ``||sg(x) - x_hat_m||^2`` summed over stages
(the paper trains on the reconstruction error; the per-stage sum gives every stage a direct signal,
our choice), and the encoder commits with ``beta * ||x - sg(x_hat_M)||^2``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..search import nearest
from .base import FlatOutput, Quantizer, fp32, seeded_global_rng
from .options import check_float, check_int
from .registry import register_quantizer

SEARCH_ELEMENTS = 2**22  # candidate entries (tokens x candidates x width) per search chunk


class ImplicitCodebook(nn.Module):
    """``f(c, x_hat)``: concatenation layer with a residual from ``c``, then residual MLP blocks.

    The concatenation layer and each block's output layer start at zero: ``f(c, x_hat) = c``.
    """

    def __init__(self, dim: int, hidden_dim: int, num_blocks: int):
        super().__init__()
        self.concat = nn.Linear(2 * dim, dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim)) for _ in range(num_blocks)
        )
        self.zero_output_layers()

    def zero_output_layers(self) -> None:
        # (the ModuleList is typed as holding Modules: its blocks are the Sequentials built above)
        for layer in (self.concat, *(cast(nn.Linear, cast(nn.Sequential, block)[-1]) for block in self.blocks)):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, codewords: Tensor, previous: Tensor) -> Tensor:
        """``codewords (..., dim)``, ``previous`` broadcastable to it -> ``(..., dim)``."""
        previous = previous.expand_as(codewords)
        v = codewords + self.concat(torch.cat([codewords, previous], dim=-1))
        for block in self.blocks:
            v = v + block(v)
        return v


@register_quantizer("qinco")
class QINCo(Quantizer):
    """Residual quantization with implicit neural codebooks.

    Args:
        dim, codebook_size: dimension and codes per stage K.
        num_quantizers: number of stages M (4, as ``residual``).
        hidden_dim: width of the residual MLP blocks (256, the paper's h).
        num_blocks: residual blocks per stage network (2, the paper's lightest L).
        candidates: codewords pre-selected per stage for the network search (32); None: all K.
        beta: commitment weight (0.25, VQ-VAE's, as the other quantizers).
        init_scale, seed, channel_first, check_finite: as in :class:`Quantizer`. The base codebooks
            start as ``N(0, init_scale^2)``, default ``dim**-0.5`` like ``vq`` (the paper initialises
            them from a trained RQ; the recipe trains end to end instead); ``seed`` seeds them and
            the networks.
    """

    code_ndim = 1

    def __init__(self, dim: int, codebook_size: int, *, num_quantizers: int = 4, hidden_dim: int = 256,
                 num_blocks: int = 2, candidates: int | None = 32, beta: float = 0.25, **options):
        super().__init__(dim, codebook_size, **options)
        self.num_quantizers = num_quantizers = check_int("num_quantizers", num_quantizers, minimum=1)
        hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
        num_blocks = check_int("num_blocks", num_blocks, minimum=0)
        self.candidates = check_int("candidates", candidates, minimum=1, optional=True)  # None: exhaustive search
        self.beta = check_float("beta", beta, low=0.0)
        # the codebooks and every network draw from the global RNG: nn.Linear takes no generator
        with seeded_global_rng(self.seed, offset=0):
            scale = self.init_scale if self.init_scale is not None else dim**-0.5
            self.codebooks = nn.Parameter(torch.randn(num_quantizers, codebook_size, dim) * scale)
            # stage 0 has nothing to condition on: a plain codebook
            self.networks = nn.ModuleList(ImplicitCodebook(dim, hidden_dim, num_blocks) for _ in range(num_quantizers - 1))

    # -- one stage --------------------------------------------------------------------------------

    def codeword(self, stage: int, codes: Tensor, previous: Tensor) -> Tensor:
        """Stage ``stage``'s codewords ``(N, dim)`` for ``codes (N,)`` given ``x_hat_{m-1} (N, dim)``."""
        base = F.embedding(codes, self.codebooks[stage].float())
        return base if stage == 0 else self.networks[stage - 1](base, previous)

    @torch.no_grad()
    def search_stage(self, stage: int, residual: Tensor, previous: Tensor, *, checked: bool = False) -> Tensor:
        """Codes ``(N,)`` of the candidates nearest to ``residual`` at stage ``stage``. ``checked``:
        ``residual`` is the input ``_flatten`` checked (stage 0's is), so only the codebook is."""
        codebook = self.codebooks[stage].detach().float()
        if stage == 0:
            # return_distances=False: the indices alone (nearest's return type does not say so)
            return cast(Tensor, nearest(residual, codebook, return_distances=False, x_checked=checked))
        # (the ModuleLists are typed as holding Modules: these are the ImplicitCodebooks built above)
        network = cast(ImplicitCodebook, self.networks[stage - 1])
        num_candidates = self.codebook_size if self.candidates is None else min(self.candidates, self.codebook_size)
        # a list, not max(generator, default=...): torch.compile cannot trace the latter
        width = max([2 * self.dim, *(cast(nn.Linear, cast(nn.Sequential, block)[0]).out_features for block in network.blocks)])
        # bounded twice: the candidates through the network, and the pre-selection's distance table
        token_chunk = max(1, min(SEARCH_ELEMENTS // (num_candidates * width), SEARCH_ELEMENTS // self.codebook_size))
        codes = []
        for start in range(0, residual.shape[0], token_chunk):
            r, p = residual[start : start + token_chunk], previous[start : start + token_chunk]
            if num_candidates == self.codebook_size:
                chosen = torch.arange(self.codebook_size, device=r.device).expand(r.shape[0], -1)
            else:
                base_distances = r.pow(2).sum(1, keepdim=True) - 2 * r @ codebook.t() + codebook.pow(2).sum(1)
                chosen = base_distances.topk(num_candidates, dim=1, largest=False).indices
            candidates = network(codebook[chosen], p[:, None, :])  # (n, A, dim)
            best = (r[:, None, :] - candidates).pow(2).sum(-1).argmin(1, keepdim=True)
            codes.append(chosen.gather(1, best).squeeze(1))
        return torch.cat(codes)

    # -- Quantizer interface ------------------------------------------------------------------------

    def _run(self, x: Tensor, *, with_losses: bool):
        reconstruction = torch.zeros_like(x)
        codes, reconstruction_loss, metrics = [], x.new_zeros(()), {}
        target = x.detach()
        for stage in range(self.num_quantizers):
            residual = target - reconstruction.detach()
            metrics[f"residual_rms_{stage}"] = residual.pow(2).mean().sqrt()
            stage_codes = self.search_stage(stage, residual, reconstruction.detach(), checked=stage == 0 and self.check_finite)
            reconstruction = reconstruction + self.codeword(stage, stage_codes, reconstruction)
            codes.append(stage_codes)
            if with_losses:
                reconstruction_loss = reconstruction_loss + F.mse_loss(reconstruction, target)
        metrics[f"residual_rms_{self.num_quantizers}"] = (target - reconstruction.detach()).pow(2).mean().sqrt()
        return reconstruction, torch.stack(codes, dim=-1), reconstruction_loss, metrics

    def quantize(self, x: Tensor) -> FlatOutput:
        with fp32(x.device.type):
            z = x.float()
            reconstruction, codes, reconstruction_loss, metrics = self._run(z, with_losses=self.training)
            losses = {}
            if self.training:
                losses["reconstruction"] = reconstruction_loss
                if self.beta > 0:
                    losses["commitment"] = self.beta * F.mse_loss(z, reconstruction.detach())
            quantized = z + (reconstruction - z).detach()
        return FlatOutput(quantized=quantized, codes=codes, losses=losses, metrics=metrics)

    def encode_flat(self, x: Tensor) -> Tensor:
        with torch.no_grad(), fp32(x.device.type):
            return self._run(x.float(), with_losses=False)[1]

    def decode_flat(self, codes: Tensor) -> Tensor:
        if codes.shape[-1] != self.num_quantizers:
            raise ValueError(f"codes must have shape (..., num_quantizers={self.num_quantizers}), got {tuple(codes.shape)}")
        with fp32(codes.device.type):
            reconstruction = self.codebooks.new_zeros(codes.shape[0], self.dim).float()
            for stage in range(self.num_quantizers):
                reconstruction = reconstruction + self.codeword(stage, codes[:, stage], reconstruction)
            return reconstruction

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_quantizers={self.num_quantizers}, candidates={self.candidates}, "
            f"beta={self.beta}"
        )


__all__ = ["ImplicitCodebook", "QINCo"]
