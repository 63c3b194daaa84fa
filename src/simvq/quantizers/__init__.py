"""Quantizers, one per file, all behind ``build_quantizer``. Importing this package registers them."""

from .base import CodebookQuantizer, FlatOutput, Quantizer, QuantizerOutput, straight_through
from .registry import build_quantizer, list_quantizers, register_quantizer
from .simvq import SimVQ
from .vq import VQ

__all__ = [
    "CodebookQuantizer",
    "FlatOutput",
    "Quantizer",
    "QuantizerOutput",
    "SimVQ",
    "VQ",
    "build_quantizer",
    "list_quantizers",
    "register_quantizer",
    "straight_through",
]
