"""SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One
Linear Layer"): the codebook is ``W(C)`` with ``C`` frozen at random init and only the linear map
``W`` learned, so every step moves every code and none is left behind to die.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    SEED_OFFSET_CODEBOOK,
    CodebookQuantizer,
    fp32,
    gaussian_codebook,
    seeded_global_rng,
    uniform_codebook,
)
from .options import check_bool, check_choice, check_float
from .registry import register_quantizer

C_INITS = ("gaussian", "uniform", "orthogonal")


def frozen_basis(codebook_size: int, dim: int, *, init: str = "gaussian", seed: int | None = None) -> Tensor:
    """The fixed basis ``C: (K, dim)``. Gaussian ``N(0, 1/dim)`` is the official init; the others
    (same per-entry variance) exist for the ablation."""
    check_choice("init", init, C_INITS)
    if init == "gaussian":
        return gaussian_codebook(codebook_size, dim, seed=seed)
    if init == "uniform":
        # U(-a, a) has variance a^2/3: a = sqrt(3/dim) matches the gaussian's 1/dim
        return uniform_codebook(codebook_size, dim, bound=(3.0 / dim) ** 0.5, seed=seed)
    # orthogonal: rows orthogonal where K <= dim, columns orthogonal otherwise; scaled to the same row norm ~1
    basis = torch.empty(codebook_size, dim)
    with seeded_global_rng(seed, SEED_OFFSET_CODEBOOK):  # orthogonal_ takes no generator
        nn.init.orthogonal_(basis)
    return basis * (codebook_size / dim) ** 0.5 if codebook_size > dim else basis


def check_table(table: Tensor, codebook_size: int, name: str) -> None:
    """A given frozen table must be a float ``(codebook_size, feature_dim)`` tensor."""
    if not isinstance(table, Tensor) or not table.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor of shape (codebook_size, feature_dim)")
    if table.ndim != 2 or table.shape[0] != codebook_size:
        raise ValueError(f"{name} must have shape (codebook_size={codebook_size}, feature_dim), got {tuple(table.shape)}")


@register_quantizer("simvq")
class SimVQ(CodebookQuantizer):
    """SimVQ quantizer.

    Args:
        dim: latent dimension ``d``.
        codebook_size: number of codes ``K``.
        bias: whether ``W`` has a bias (the official code uses ``nn.Linear(d, d)``, with bias).
        train_codebook: also train ``C`` ("Remark 4.1" ablation; off in the paper's method).
        init: distribution of ``C``: "gaussian" (official), "uniform" or "orthogonal".
        basis_scale: ``C`` times this factor (the ablation of ``C``'s scale; 1 is the official
            ``N(0, 1/dim)``). ``W`` starts at the same init whatever the scale, so it sets the scale of
            the initial codebook ``W(C)`` against the encoder's outputs.
        basis: a given ``(codebook_size, feature_dim)`` table to use as ``C`` instead of a random
            one (``init`` is then unused); ``W`` becomes ``Linear(feature_dim, dim)``. VQGAN-LC's
            frozen features (:class:`~simvq.quantizers.lc.LCVQ`) are such a table.
        beta, rotation_trick, chunk_size, seed, channel_first, check_finite: as in
            :class:`CodebookQuantizer` (``beta`` 0.25, the official default); ``seed`` seeds the
            frozen basis ``C`` and ``W``'s init. No ``init_scale``: ``C``'s scale is ``init``'s.

    The effective codebook ``W(C)`` is recomputed for every training forward and cached in eval
    mode; the cache is keyed on the tensors' versions and storage, and ``W`` is compared with the
    copy the cache was built from, so an optimiser step, ``load_state_dict``, ``train()`` and writes
    through ``.data`` (``p.data.copy_(ema)``, which bumps no version) all invalidate it.
    """

    # typed as the base's, so that a subclass (LCVQ) may exclude more
    excluded_options: tuple[str, ...] = ("init_scale",)
    # ``C``: a buffer, or a parameter with ``train_codebook`` (declared for the type checker:
    # nn.Module.__getattr__ is typed ``Tensor | Module``)
    basis: Tensor

    def __init__(self, dim: int, codebook_size: int, *, bias: bool = True, train_codebook: bool = False,
                 init: str = "gaussian", basis: Tensor | None = None, basis_scale: float = 1.0, **options):
        super().__init__(dim, codebook_size, **options)
        check_bool("bias", bias)
        check_choice("init", init, C_INITS)
        basis_scale = check_float("basis_scale", basis_scale, low=0.0, low_open=True)
        if basis is None:
            basis = frozen_basis(codebook_size, dim, init=init, seed=self.seed)
        else:
            check_table(basis, codebook_size, "basis")
            basis = basis.detach().float().clone()
        basis = basis * float(basis_scale)
        self.basis_scale = float(basis_scale)
        self.train_codebook = check_bool("train_codebook", train_codebook)
        self.init = init
        if train_codebook:
            self.basis = nn.Parameter(basis)
        else:
            self.register_buffer("basis", basis)
        # with a seed the whole module (C and W's init) is reproducible, not just C
        with seeded_global_rng(self.seed):
            self.proj = nn.Linear(basis.shape[1], dim, bias=bias)
        self._cache: tuple[tuple, Tensor, tuple[Tensor, ...]] | None = None

    # -- the effective codebook ---------------------------------------------------------------

    def _version_key(self) -> tuple:
        tensors = [self.basis, *self.proj.parameters()]
        return tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in tensors)

    def _cache_is_current(self) -> bool:
        if self._cache is None or self._cache[0] != self._version_key():
            return False
        # ``.data`` writes bypass the version counter: compare W itself (dim^2 values, cheap beside
        # the K x dim table it guards). C is a frozen buffer, keyed on version and storage only.
        return all(torch.equal(saved, live) for saved, live in zip(self._cache[2], self.proj.parameters()))

    def codebook(self) -> Tensor:
        """Effective codebook ``W(C): (K, dim)``, float32.

        Training mode: recomputed on every call (differentiable). Eval mode: computed once without
        a graph and cached until the parameters change; gradients still reach ``W`` through
        ``lookup``, which never uses this table.
        """
        if self.training:
            self._cache = None
            return self._project(self.basis)
        if torch.compiler.is_compiling():  # a compiled graph recomputes it: no Python-side cache to trace
            return self._project(self.basis)
        cache = self._cache
        if cache is None or not self._cache_is_current():
            with torch.no_grad():
                weights = tuple(p.detach().clone() for p in self.proj.parameters())
                cache = self._cache = (self._version_key(), self._project(self.basis), weights)
        return cache[1]

    def _project(self, rows: Tensor) -> Tensor:
        """``W(rows)`` in float32 whatever the module's dtype or autocast state."""
        bias = None if self.proj.bias is None else self.proj.bias.float()
        with fp32(rows.device.type):
            return F.linear(rows.float(), self.proj.weight.float(), bias)

    def lookup(self, codes: Tensor) -> Tensor:
        # W(C[codes]) == W(C)[codes] (bit for bit): project whichever is smaller, the selected rows
        # or the whole table, so forward and backward cost O(min(N, K) d^2); decode never skips W
        # (the official code's bug).
        if codes.numel() < self.codebook_size:
            return self._project(self.basis[codes])
        return F.embedding(codes, self._project(self.basis))

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, beta={self.beta}, bias={self.proj.bias is not None}, "
            f"train_codebook={self.train_codebook}, init={self.init!r}, rotation_trick={self.rotation_trick}"
        )
