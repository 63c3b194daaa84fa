"""Quantizers, one per file, all behind ``build_quantizer``. Importing this package registers them."""

from .base import CodebookQuantizer, FlatOutput, Quantizer, QuantizerOutput, straight_through
from .fsq import FSQ
from .lfq import LFQ
from .registry import build_quantizer, list_quantizers, register_quantizer
from .residual import ResidualQuantizer, ResidualSimVQ
from .simvq import SimVQ
from .sqvae import SQVAE
from .vq import VQ

__all__ = [
    "CodebookQuantizer",
    "FSQ",
    "FlatOutput",
    "LFQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualQuantizer",
    "ResidualSimVQ",
    "SQVAE",
    "SimVQ",
    "VQ",
    "build_quantizer",
    "list_quantizers",
    "register_quantizer",
    "straight_through",
]
