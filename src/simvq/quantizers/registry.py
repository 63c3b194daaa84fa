"""One registry for every quantizer: ``build_quantizer(name, **options)``, ``list_quantizers()``."""

from __future__ import annotations

from collections.abc import Callable

_REGISTRY: dict[str, Callable] = {}


def register_quantizer(name: str):
    """Class decorator registering a quantizer (or factory) under ``name``."""

    def wrap(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"quantizer name {name!r} is already registered to {_REGISTRY[name]!r}")
        _REGISTRY[name] = factory
        return factory

    return wrap


def build_quantizer(name: str, **options):
    """Build the quantizer registered as ``name`` with keyword ``options``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantizer {name!r}; registered: {', '.join(list_quantizers())}")
    return _REGISTRY[name](**options)


def list_quantizers() -> list[str]:
    return sorted(_REGISTRY)


def sampled_training_codes(name: str) -> bool:
    """Whether ``name`` reports sampled codes in training mode (its ``sampled_training_codes``): what
    a count over training batches measures is then its sampling, not its nearest codes."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantizer {name!r}; registered: {', '.join(list_quantizers())}")
    return bool(getattr(_REGISTRY[name], "sampled_training_codes", False))


def one_index_per_token(name: str) -> bool:
    """Whether ``name``'s tokens are one code index each (no stage axis, nothing else needed to
    decode): the codes a comparison of codebooks ranks like with like. Residual stacks carry one
    index per stage and sc_vae several atoms with real coefficients: more information per token."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantizer {name!r}; registered: {', '.join(list_quantizers())}")
    factory = _REGISTRY[name]
    return getattr(factory, "code_ndim", 0) == 0 and not getattr(factory, "decode_inputs", ())
