"""FSQ (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple"): no codebook at all.

Each of ``len(levels)`` channels is squashed into a bounded range and rounded to one of ``L_i``
integer levels; the implicit codebook is the grid of ``prod(levels)`` points, so every code is
reachable by construction. ``dim`` is projected down to ``len(levels)`` channels and back up.
"""

from __future__ import annotations

import functools
import math
import struct

import torch
from torch import Tensor

from .base import (
    FlatOutput,
    Quantizer,
    fp32,
    linear_fp32,
    projections,
    straight_through,
)
from .options import check_float, check_int, is_integer_at_least
from .registry import register_quantizer

# Mentzer et al. 2023, Table 1: recommended levels for a target codebook size. Note the products
# only approximate the target (e.g. 2^10 -> 8*5*5*5 = 1000 codes): the paper prefers L_i >= 5.
RECOMMENDED_LEVELS: dict[int, list[int]] = {
    2**8: [8, 6, 5],
    2**10: [8, 5, 5, 5],
    2**12: [7, 5, 5, 5, 5],
    2**14: [8, 8, 8, 6, 5],
    2**16: [8, 8, 8, 5, 5, 5],
}


def levels_for(codebook_size: int) -> list[int]:
    """Levels for a target ``codebook_size``.

    The paper's table where it has an entry. Any other power of two ``2^n`` gets an exact
    factorisation into as few channels as possible: ``n // 3`` levels of 8, then a 4 (n % 3 == 2)
    or one 8 swapped for 4, 4 (n % 3 == 1; n = 1 gives [2], n = 4 gives [4, 4]). That keeps
    ``prod(levels) == codebook_size`` and L_i >= 4 wherever possible. Anything else: ValueError.
    """
    if codebook_size in RECOMMENDED_LEVELS:
        return list(RECOMMENDED_LEVELS[codebook_size])
    if codebook_size < 2 or codebook_size & (codebook_size - 1):
        raise ValueError(
            f"fsq: no recommended levels for codebook_size={codebook_size}; the paper's table covers "
            f"{sorted(RECOMMENDED_LEVELS)} and other powers of two get an exact rule. "
            "Pass levels=[...] explicitly (codebook_size = prod(levels))."
        )
    bits = codebook_size.bit_length() - 1
    eights, rest = divmod(bits, 3)
    if rest == 0:
        return [8] * eights
    if rest == 2:
        return [8] * eights + [4]
    if eights == 0:  # 2^1
        return [2]
    return [8] * (eights - 1) + [4, 4]


def _bounding(levels: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(half_width, offset, shift)`` per channel of :meth:`FSQ.bound`, ``tanh(z + shift) *
    half_width - offset``, for integer ``levels``: the one place this float32 arithmetic is done."""
    half_width = (levels.float() - 1) * (1 + eps) / 2
    offset = (levels % 2 == 0).float() * 0.5
    return half_width, offset, torch.atanh(offset / half_width)


def keeps_grid(levels: list[int] | tuple[int, ...], eps: float) -> bool:
    """Whether every value :meth:`FSQ.bound` can give rounds onto the grid, level indices
    ``0 .. L - 1``, for these ``levels`` and ``eps`` (computed as ``bound`` does, in float32).

    ``bound`` is monotone in ``tanh``, so its extremes are at ``tanh = +-1``, which float32's tanh
    reaches: ``half_width - offset`` and ``-half_width - offset``. With ``half_width = (L - 1)(1 +
    eps) / 2`` and ``offset`` 0 (odd ``L``) or 1/2 (even), both round onto the grid while
    ``half_width < L / 2``, i.e. ``eps < 1 / (L - 1)``; above, one rounds a level past the end
    (exactly at ``L / 2`` rounding half to even decides: 2.5 rounds to 2, 1.5 to 2). A level of
    2 also needs ``half_width > offset = 1/2``, i.e. ``1 + eps > 1`` in float32, or its ``shift =
    atanh(offset / half_width)`` is infinite and every value rounds to one level. The float32
    rounding of ``1 + eps`` and of the product moves both ends by an ulp, so the test is the
    arithmetic itself rather than the formulas."""
    level_tensor = torch.tensor(list(levels), dtype=torch.long)
    half_width, offset, shift = _bounding(level_tensor, eps)
    half = level_tensor // 2  # the grid's centre: index = rounded value + half
    top, bottom = torch.round(half_width - offset) + half, torch.round(-half_width - offset) + half
    return bool(torch.isfinite(shift).all() and (top <= level_tensor - 1).all() and (bottom >= 0).all())


@functools.lru_cache(maxsize=64)
def _eps_domain(levels: tuple[int, ...]) -> tuple[float, float]:
    inside = 0.5 / (max(levels) - 1)  # half way to the bound: on the grid for every level
    least = 0.0 if keeps_grid(levels, 0.0) else _float(_edge(levels, _bits(0.0), _bits(inside))[1])
    return least, _float(_edge(levels, _bits(inside), _bits(1.0))[0])


def _edge(levels: tuple[int, ...], low: int, high: int) -> tuple[int, int]:
    """The adjacent float64 numbers (as bit patterns, ordered as the non-negative floats they
    encode) between ``low`` and ``high`` where :func:`keeps_grid` changes; bisection."""
    at_low = keeps_grid(levels, _float(low))
    while high - low > 1:
        middle = (low + high) // 2
        if keeps_grid(levels, _float(middle)) == at_low:
            low = middle
        else:
            high = middle
    return low, high


def eps_domain(levels: list[int]) -> tuple[float, float]:
    """``(least, largest)`` ``eps`` for which :func:`keeps_grid` holds: every ``eps`` between them
    does, none outside (the test is monotone in ``eps``). ``largest`` is ``1 / (L - 1)`` for the
    largest level ``L`` to within float32's rounding (0.142857 for ``[8, 5, 5, 5]``, 0.25 for
    ``[5, 5, 5]``); ``least`` is 0, or ``2**-24`` and a little with a level of 2."""
    return _eps_domain(tuple(levels))


def check_eps(eps, levels: list[int]) -> float:
    """The ``eps`` option, in :func:`eps_domain` ``(levels)``."""
    least, largest = eps_domain(levels)
    top = max(levels)
    why = (
        f"with levels {levels}, values beyond round off the grid of the largest level, L = {top}: the bound "
        f"(L - 1)(1 + eps)/2 must stay below L/2 in float32, which holds up to eps = {largest!r} (1/(L - 1) = "
        f"{1 / (top - 1):.6g})"
    )
    if least > 0:
        why += "; a level of 2 needs 1 + eps > 1 in float32, or its bound's shift atanh(1/(1 + eps)) is infinite"
    return check_float("eps", eps, low=least, high=largest, why=why)


def _bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


@register_quantizer("fsq")
class FSQ(Quantizer):
    """Finite scalar quantization.

    Args:
        dim: input/output dimension.
        codebook_size: target number of codes; used only when ``levels`` is not given (see
            :func:`levels_for`). The built quantizer's ``codebook_size`` is always ``prod(levels)``,
            which may differ from the target (the paper's table is approximate).
        levels: number of levels per channel, e.g. ``[8, 5, 5, 5]``.
        eps: widens the tanh bound by ``1 + eps`` so that the outermost levels are reached before
            tanh saturates (the reference code's 1e-3). Its domain is :func:`eps_domain`: below
            ``1 / (L - 1)`` for the largest level ``L``, so that no value rounds off the grid.
        seed: seed of the projections' initialisation (``None``: the global RNG).
        channel_first, check_finite: as in :class:`Quantizer`.

    Codes are mixed-radix integers: channel ``i``'s level index (0..L_i-1) times ``prod(levels[:i])``.
    """

    excluded_options = ("init_scale",)  # no codes to draw: the grid is fixed

    # registered buffers, declared for the type checker (nn.Module.__getattr__ is typed ``Tensor | Module``)
    _levels: Tensor
    _radix: Tensor

    def __init__(self, dim: int, codebook_size: int | None = None, *,
                 levels: list[int] | tuple[int, ...] | None = None, eps: float = 1e-3, **options):
        codebook_size = check_int("codebook_size", codebook_size, minimum=2, optional=True)
        if levels is None:
            if codebook_size is None:
                raise ValueError("fsq needs levels=[...] or codebook_size")
            levels = levels_for(codebook_size)
        levels = list(levels)
        if not levels or not all(is_integer_at_least(level, 2) for level in levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {levels!r}")
        eps = check_eps(eps, levels)
        super().__init__(dim, math.prod(levels), **options)
        self.levels = levels
        self.eps = eps
        num_channels = len(levels)
        # persistent, so a state dict records the grid it was trained on (see _load_from_state_dict)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.long))
        # mixed-radix place values: code = sum_i index_i * prod(levels[:i])
        radix = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), dim=0)
        self.register_buffer("_radix", radix, persistent=False)
        self.project_in, self.project_out = projections(dim, num_channels, enabled=dim != num_channels, seed=self.seed)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # another grid changes every code's meaning while the projections may still fit: refuse it.
        # State dicts from before levels were saved carry none and load as before.
        key = prefix + "_levels"
        saved = state_dict.get(key)
        if saved is None:
            state_dict[key] = self._levels.clone()
        elif saved.shape != self._levels.shape or not torch.equal(saved.to(self._levels), self._levels):
            error_msgs.append(f"fsq: the state dict was saved with levels {saved.tolist()}, this quantizer has {self.levels}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    # -- the scalar grid ------------------------------------------------------------------------

    def bound(self, z: Tensor) -> Tensor:
        """Squash each channel into ``(-L/2, L/2)`` (odd L: symmetric; even L: shifted by 1/2) so
        that rounding yields exactly L integers."""
        half_width, offset, shift = _bounding(self._levels, self.eps)
        return torch.tanh(z + shift) * half_width - offset

    def _half(self) -> Tensor:
        return (self._levels // 2).float()

    def grid_to_codes(self, rounded: Tensor) -> Tensor:
        """Integer grid points ``(N, C)`` (centred) -> codes ``(N,)``."""
        indices = (rounded + self._half()).round().long()
        return (indices * self._radix).sum(-1)

    def codes_to_grid(self, codes: Tensor) -> Tensor:
        """Codes ``(N,)`` -> normalised grid points ``(N, C)`` in ``[-1, 1]``."""
        indices = (codes.unsqueeze(-1) // self._radix) % self._levels
        return (indices.float() - self._half()) / self._half()

    # -- Quantizer interface ----------------------------------------------------------------------

    def _round(self, x: Tensor) -> tuple[Tensor, Tensor]:
        bounded = self.bound(linear_fp32(self.project_in, x))
        return bounded, bounded.round()

    def quantize(self, x: Tensor) -> FlatOutput:
        with fp32(x.device.type):
            bounded, rounded = self._round(x)
            grid = straight_through(bounded, rounded) / self._half()
            quantized = linear_fp32(self.project_out, grid)
        return FlatOutput(quantized=quantized, codes=self.grid_to_codes(rounded.detach()))

    def encode_flat(self, x: Tensor) -> Tensor:
        with fp32(x.device.type):
            return self.grid_to_codes(self._round(x)[1])

    def decode_flat(self, codes: Tensor) -> Tensor:
        with fp32(codes.device.type):
            return linear_fp32(self.project_out, self.codes_to_grid(codes))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, levels={self.levels}"
