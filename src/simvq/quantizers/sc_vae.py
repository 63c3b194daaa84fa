"""SC-VAE (Xiao et al. 2023, "SC-VAE: Sparse Coding-based Variational Autoencoder with Learned ISTA").

A latent ``z (dim,)`` is represented as a sparse combination of the atoms of a dictionary
``D (K, dim)`` (one atom per row, like a codebook): ``z_hat = alpha D``. The coefficients solve the
LASSO ``min_alpha 1/2 ||z - alpha D||^2 + lambda ||alpha||_1`` approximately, by a fixed number of
unrolled, learnable ISTA steps (LISTA), as in the official code:

    alpha_0 = 0,  alpha_{t+1} = soft(alpha_t + (z - alpha_t D) D^T / c, lambda / c)

with the dictionary ``D`` and the step ``1 / c`` learned (``c`` starts at ``L = ||D||_2^2``, the
Lipschitz constant, which makes the untrained LISTA exactly ISTA). The dictionary starts as the
overcomplete DCT (atoms ``cos(pi i k / K)``, mean-free for ``k > 0``, unit norm: the official
``init_dct`` in one dimension), and it is trained (the official code makes it a parameter; the
paper calls the atoms "predetermined" because of that initialisation). Nothing is rounded: the
gradient reaches the encoder through the unrolled iterations, no straight-through is needed.

How it fits :class:`QuantizerOutput` (its "codes" are not one index per token):

``codes``         ``(..., num_atoms)`` int64: the ``num_atoms`` atoms with the largest ``|alpha|`` of
                  each token, ordered by ``|alpha|``. After LISTA only those are kept (a hard top-s
                  projection), so the codes and their coefficients *are* the representation.
                  Slots beyond a token's active atoms repeat its strongest atom with coefficient 0
                  (a token with no active atom reports the atom most correlated with it), so every
                  code is an in-range index and an atom appears in the codes iff it is active
                  somewhere (or is the best atom of an all-zero token).
``coefficients``  ``(..., num_atoms)`` float: the matching coefficients, on the returned
                  :class:`SparseQuantizerOutput` (a :class:`QuantizerOutput` with one more field).
``usage``         fraction of atoms active (non-zero coefficient) in the batch; with the codes
                  above, ``simvq.metrics.CodebookUsage`` over the codes counts the same thing over a
                  data set (the repeated slots add no new atom).
``decode``        ``decode(codes, coefficients)``: ``sum_s coefficients_s D[codes_s]``, the forward's
                  value. ``decode(codes)`` alone raises: indices without coefficients are not a
                  representation. The class declares ``decode_inputs = ("coefficients",)``: the names
                  of the output fields ``decode`` needs besides the codes, so generic code (tests,
                  the tokenizer) can pass ``q.decode(out.codes, **{n: getattr(out, n) for n in q.decode_inputs})``.
``encode``        codes only (``(..., num_atoms)``); ``encode_sparse`` returns codes and coefficients.
``mask``          (padding, as for every quantizer: ``forward``, ``encode``, ``encode_sparse``,
                  ``decode``) a masked token's codes are ``PADDING_CODE`` (-1) in every slot and its
                  coefficients 0; ``decode(codes, coefficients, mask=mask)`` gives zeros there.

Losses: ``latent = latent_weight * ||z - z_hat||^2`` (mean), the ELBO's Gaussian latent term (the
official loss_sdl); sparsity comes from the soft threshold, not from a loss term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import PADDING_CODE, FlatOutput, Quantizer, QuantizerOutput, code_statistics, fp32, real_token_index, scatter_tokens
from .options import check_bool, check_float, check_int
from .registry import register_quantizer


@dataclass
class SparseQuantizerOutput(QuantizerOutput):
    """A :class:`QuantizerOutput` whose codes need coefficients to decode (``(..., num_atoms)``)."""

    coefficients: Tensor | None = None


def overcomplete_dct(dim: int, num_atoms: int, *, seed: int = 0) -> Tensor:
    """``(num_atoms, dim)`` unit-norm atoms ``cos(pi i k / num_atoms)``, mean-free for ``k > 0``."""
    positions = torch.arange(dim, dtype=torch.float64)
    atoms = torch.stack([torch.cos(positions * k * math.pi / num_atoms) for k in range(num_atoms)])
    atoms[1:] -= atoms[1:].mean(1, keepdim=True)
    norms = atoms.norm(dim=1, keepdim=True)
    # a mean-free atom can vanish (dim=1, or k a multiple of 2 num_atoms / dim ...): use a random
    # unit direction there instead of dividing by zero
    dead = norms.squeeze(1) < 1e-8
    if dead.any():
        generator = torch.Generator().manual_seed(seed)
        atoms[dead] = torch.randn(int(dead.sum()), dim, generator=generator, dtype=torch.float64)
        norms = atoms.norm(dim=1, keepdim=True)
    return (atoms / norms).float()


def soft_threshold(x: Tensor, threshold: Tensor | float) -> Tensor:
    """``sign(x) max(|x| - t, 0)`` for a scalar threshold ``t`` (a float or a 0-d tensor)."""
    if not isinstance(threshold, Tensor):
        threshold = torch.tensor(threshold, dtype=x.dtype, device=x.device)
    return _SoftThreshold.apply(x, threshold)


class _SoftThreshold(torch.autograd.Function):
    """``x - clamp(x, -t, t)`` with a one-mask backward: LISTA applies it ``iterations`` times per
    step on ``(N, K)`` tables, where autograd's clamp backward costs six elementwise passes."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor) -> Tensor:
        out = x - torch.clamp(x, -threshold, threshold)
        ctx.save_for_backward(torch.sign(out).to(torch.int8))
        ctx.threshold_shape = threshold.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (sign,) = ctx.saved_tensors
        grad_x = grad * sign.abs() if ctx.needs_input_grad[0] else None  # 1 where |x| > t
        grad_threshold = None
        if ctx.needs_input_grad[1]:
            grad_threshold = -(grad * sign).sum().reshape(ctx.threshold_shape)
        return grad_x, grad_threshold


def ista(z: Tensor, dictionary: Tensor, *, lam: float, iterations: int, step: float | None = None) -> Tensor:
    """Plain ISTA on ``1/2 ||z - alpha D||^2 + lam ||alpha||_1`` from ``alpha = 0``: ``(N, K)``.

    ``step`` defaults to ``1 / ||D||_2^2``. The reference that untrained LISTA must reproduce.
    """
    lipschitz = torch.linalg.matrix_norm(dictionary.double(), ord=2).item() ** 2
    step = 1.0 / lipschitz if step is None else step
    alpha = z.new_zeros(z.shape[0], dictionary.shape[0])
    for _ in range(iterations):
        alpha = soft_threshold(alpha + step * (z - alpha @ dictionary) @ dictionary.t(), lam * step)
    return alpha


def lasso_objective(z: Tensor, dictionary: Tensor, alpha: Tensor, lam: float) -> Tensor:
    """``1/2 ||z - alpha D||^2 + lam ||alpha||_1`` per token ``(N,)``."""
    return 0.5 * (z - alpha @ dictionary).pow(2).sum(1) + lam * alpha.abs().sum(1)


@register_quantizer("sc_vae")
class SCVAE(Quantizer):
    """Sparse coding of each latent over a learned dictionary, coefficients by unrolled LISTA.

    Args:
        dim, codebook_size: latent dimension and number of atoms K (official: 512 atoms).
        num_atoms: atoms kept per token, the length of a token's code (8; our choice, the
            official code keeps every non-zero of the 30 iterations; at ``num_atoms >= dim`` the
            projection rarely removes any, since a LASSO solution has at most ``dim`` non-zeros
            in general position).
        iterations: unrolled LISTA steps (30, the official ``num_soft_thresh``).
        lam: the LASSO weight ``lambda`` (0.01, our choice; the threshold is ``lam / c``). With
            unit-norm atoms the threshold is absolute in the latent's units, and when it exceeds
            every ``|z . d_k|`` all coefficients are zero, no gradient passes and the latent term
            pulls ``z`` further to 0: at 0.1 an untrained encoder's small latents never escape
            (measured on the 2-D toy of the training tests); 0.01 leaves them room.
        latent_weight: weight of the latent term ``||z - z_hat||^2`` (1.0, the ELBO's).
        train_dictionary: learn ``D`` (True, as the official code; False keeps the DCT fixed).
        seed: seed of the random unit atoms that stand in for DCT atoms that vanish once made
            mean-free (only at tiny ``dim``; the DCT itself is deterministic).
        channel_first, check_finite: as in :class:`Quantizer`.
    """

    code_ndim = 1
    decode_inputs = ("coefficients",)
    output_type = SparseQuantizerOutput
    excluded_options = ("init_scale",)  # the dictionary starts as the DCT, unit-norm atoms

    def __init__(self, dim: int, codebook_size: int, *, num_atoms: int = 8, iterations: int = 30, lam: float = 0.01,
                 latent_weight: float = 1.0, train_dictionary: bool = True, **options):
        super().__init__(dim, codebook_size, **options)
        self.num_atoms = check_int("num_atoms", num_atoms, minimum=1, maximum=codebook_size)
        self.iterations = check_int("iterations", iterations, minimum=1)
        self.lam = check_float("lam", lam, low=0.0)
        self.latent_weight = check_float("latent_weight", latent_weight, low=0.0)
        train_dictionary = check_bool("train_dictionary", train_dictionary)
        dictionary = overcomplete_dct(dim, codebook_size, seed=self.seed if self.seed is not None else 0)
        if train_dictionary:
            self.dictionary = nn.Parameter(dictionary)
        else:
            self.register_buffer("dictionary", dictionary)
        lipschitz = torch.linalg.matrix_norm(dictionary.double(), ord=2).item() ** 2
        # learned inverse step, stored as a log so it stays positive
        self.log_step_scale = nn.Parameter(torch.tensor(math.log(lipschitz)))

    # -- sparse coding ---------------------------------------------------------------------------

    def lista(self, z: Tensor) -> Tensor:
        """Dense coefficients ``(N, K)`` after ``iterations`` LISTA steps, float32, with a graph."""
        dictionary = self.dictionary.float()
        step = self.log_step_scale.float().neg().exp()
        threshold = self.lam * step
        alpha = z.new_zeros(z.shape[0], self.codebook_size)
        for _ in range(self.iterations):
            alpha = soft_threshold(alpha + step * (z - alpha @ dictionary) @ dictionary.t(), threshold)
        return alpha

    def _sparse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes ``(N, s)`` and coefficients ``(N, s)`` (graph kept) of ``z: (N, dim)``."""
        alpha = self.lista(z)
        magnitude, order = alpha.detach().abs().topk(self.num_atoms, dim=1)
        active = magnitude > 0
        # inactive slots repeat the strongest atom; an all-zero token names its most correlated atom
        strongest = torch.where(
            active[:, :1], order[:, :1], (z.detach() @ self.dictionary.detach().float().t()).abs().argmax(1, keepdim=True)
        )
        codes = torch.where(active, order, strongest)
        coefficients = torch.where(active, alpha.gather(1, order), alpha.new_zeros(()))
        return codes, coefficients

    def _combine(self, codes: Tensor, coefficients: Tensor) -> Tensor:
        return (coefficients.unsqueeze(-1) * F.embedding(codes, self.dictionary.float())).sum(1)

    # -- Quantizer interface ------------------------------------------------------------------------

    def quantize(self, x: Tensor) -> FlatOutput:
        with fp32(x.device.type):
            z = x.float()
            codes, coefficients = self._sparse(z)
            quantized = self._combine(codes, coefficients)
            losses = {"latent": self.latent_weight * F.mse_loss(quantized, z)} if self.training else {}
            active = coefficients.detach() != 0
            counts = torch.bincount(codes[active], minlength=self.codebook_size)
            metrics = {**code_statistics(counts), "active_atoms": active.float().sum(1).mean()}
        # the coefficients become ``SparseQuantizerOutput.coefficients`` (0 at masked positions)
        return FlatOutput(quantized=quantized, codes=codes, losses=losses, metrics=metrics,
                          per_token={"coefficients": coefficients.detach()})

    def encode_flat(self, x: Tensor) -> Tensor:
        with fp32(x.device.type):
            return self._sparse(x.float())[0]

    @torch.no_grad()
    def encode_sparse(self, z: Tensor, *, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Codes and coefficients, both ``(..., num_atoms)``, no graph; with ``mask`` (as in
        ``forward``) the masked positions hold codes ``PADDING_CODE`` and coefficients 0."""
        if mask is None:
            flat, leading = self._flatten(z)
        else:
            flat, leading, index = self._flatten_masked(z, mask)
        with fp32(flat.device.type):
            codes, coefficients = self._sparse(flat.float())
        if mask is not None:
            size = math.prod(leading)
            codes, coefficients = scatter_tokens(codes, index, size, PADDING_CODE), scatter_tokens(coefficients, index, size, 0)
        return codes.reshape(*leading, self.num_atoms), coefficients.reshape(*leading, self.num_atoms)

    def decode(self, codes: Tensor, coefficients: Tensor | None = None, *, mask: Tensor | None = None) -> Tensor:
        """``sum_s coefficients[..., s] * D[codes[..., s]]``: ``(..., num_atoms) -> (..., dim)``.
        ``mask`` (the codes' shape without ``num_atoms``, True at real tokens): the codes and
        coefficients at masked positions are ignored and decode to zeros."""
        # bad indices are reported as such, with or without coefficients (at real tokens only, with a mask)
        codes = self._check_codes(codes, values=mask is None)
        if coefficients is None:
            raise ValueError(
                "sc_vae codes are atom indices and need their coefficients: "
                "decode(codes, coefficients=out.coefficients) (or encode_sparse(z))"
            )
        if not isinstance(coefficients, Tensor) or coefficients.shape != codes.shape:
            raise ValueError(
                f"coefficients must be a tensor of the codes' shape {tuple(codes.shape)}, got "
                f"{tuple(coefficients.shape) if isinstance(coefficients, Tensor) else type(coefficients).__name__}"
            )
        if codes.ndim < 1 or codes.shape[-1] != self.num_atoms:
            raise ValueError(f"codes must have shape (..., num_atoms={self.num_atoms}), got {tuple(codes.shape)}")
        leading = tuple(codes.shape[:-1])
        flat_codes, flat_coefficients = codes.reshape(-1, self.num_atoms), coefficients.reshape(-1, self.num_atoms)
        if mask is not None:
            index = real_token_index(mask, leading, device=codes.device, grid_name="the codes' token grid (codes without num_atoms)")
            flat_codes = self._check_codes(flat_codes.index_select(0, index))
            flat_coefficients = flat_coefficients.index_select(0, index)
        with fp32(codes.device.type):
            flat = self._combine(flat_codes, flat_coefficients.float())
        if mask is not None:
            flat = scatter_tokens(flat, index, math.prod(leading), 0)
        return self._unflatten(flat, leading)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_atoms={self.num_atoms}, iterations={self.iterations}, lam={self.lam}, "
            f"latent_weight={self.latent_weight}, train_dictionary={isinstance(self.dictionary, nn.Parameter)}"
        )


__all__ = ["SCVAE", "SparseQuantizerOutput", "ista", "lasso_objective", "overcomplete_dct", "soft_threshold"]
