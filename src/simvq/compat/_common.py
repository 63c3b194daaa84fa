"""What the adapters share: building the wrapped quantizer, and the eval-mode exact lookup."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from ..quantizers import Quantizer, QuantizerOutput, build_quantizer
from ..quantizers.registry import _REGISTRY


def accepts_option(name: str, option: str) -> bool:
    """Whether the registered factory ``name`` takes keyword ``option`` (directly or through ``**options``)."""
    parameters = inspect.signature(_REGISTRY[name]).parameters.values()
    return any(p.name == option or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def build_wrapped(
    quantizer: str | Quantizer,
    *,
    dim: int,
    codebook_size: int,
    options: dict,
    channel_first: bool,
    adapter: str,
) -> Quantizer:
    """The quantizer an adapter wraps: the registered ``quantizer`` built with ``options``, or a built
    :class:`Quantizer` checked against ``dim``/``codebook_size``. The adapter owns the layout, so
    ``channel_first`` is set here and refused among ``options``."""
    if "channel_first" in options:
        raise ValueError(f"{adapter}: the layout is the adapter's keyword (see its docstring), not channel_first")
    if isinstance(quantizer, Quantizer):
        if options:
            raise ValueError(f"{adapter}: options {sorted(options)} given with an already built quantizer")
        if quantizer.channel_first != channel_first:
            raise ValueError(f"{adapter}: the given quantizer must be built with channel_first={channel_first}")
        built = quantizer
    elif isinstance(quantizer, str):
        built = build_quantizer(quantizer, dim=dim, codebook_size=codebook_size, channel_first=channel_first, **options)
    else:
        raise TypeError(f"{adapter}: quantizer must be a registered name or a simvq Quantizer, got {type(quantizer).__name__}")
    if built.dim != dim or built.codebook_size != codebook_size:
        raise ValueError(
            f"{adapter}: the quantizer has dim={built.dim}, codebook_size={built.codebook_size}; "
            f"the adapter was asked for dim={dim}, codebook_size={codebook_size}"
        )
    if built.decode_inputs:
        raise ValueError(
            f"{adapter}: {type(built).__name__} needs {built.decode_inputs} besides the indices to decode, "
            "which this interface cannot carry; use the simvq API directly"
        )
    return built


def quantize(adapter: nn.Module, quantizer: Quantizer, z: Tensor, *, mask: Tensor | None = None) -> QuantizerOutput:
    """``quantizer(z, mask=mask)``; in eval mode with no gradient able to reach ``z``, ``quantized``
    is the looked-up code vectors themselves (``decode(codes, mask=mask)``: zeros at padding), so the
    output equals the decode of its indices bit for bit. Otherwise it is the straight-through value
    ``z + sg(q - z)``, which equals them up to one float32 rounding (see tests/test_round_trip.py)."""
    out = quantizer(z, mask=mask)
    if adapter.training or (torch.is_grad_enabled() and z.requires_grad):
        return out
    with torch.no_grad():
        out.quantized = quantizer.decode(out.codes, mask=mask).to(z.dtype)
    return out
