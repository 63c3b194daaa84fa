"""Quantizers, one per file, all behind ``build_quantizer``. Importing this package registers them."""

from .affine import AffineVQ
from .base import CodebookQuantizer, FlatOutput, Quantizer, QuantizerOutput, straight_through
from .cvq import CVQ
from .lc import LCVQ
from .registry import build_quantizer, list_quantizers, register_quantizer
from .simvq import SimVQ
from .vq import VQ, EMAVQ, FactorizedVQ, KMeansVQ, ResetVQ

__all__ = [
    "AffineVQ",
    "CVQ",
    "CodebookQuantizer",
    "EMAVQ",
    "FactorizedVQ",
    "FlatOutput",
    "KMeansVQ",
    "LCVQ",
    "Quantizer",
    "QuantizerOutput",
    "ResetVQ",
    "SimVQ",
    "VQ",
    "build_quantizer",
    "list_quantizers",
    "register_quantizer",
    "straight_through",
]
