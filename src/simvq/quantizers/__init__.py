"""Quantizers, one per file, all behind ``build_quantizer``. Importing this package registers them."""

from .affine import AffineVQ
from .base import CodebookQuantizer, FlatOutput, Quantizer, QuantizerOutput, straight_through
from .cvq import CVQ
from .fsq import FSQ
from .lc import LCVQ
from .lfq import LFQ
from .registry import build_quantizer, list_quantizers, register_quantizer
from .residual import ResidualQuantizer, ResidualSimVQ
from .simvq import SimVQ
from .sqvae import SQVAE
from .vq import EMAVQ, VQ, FactorizedVQ, KMeansVQ, ResetVQ

__all__ = [
    "AffineVQ",
    "CVQ",
    "CodebookQuantizer",
    "EMAVQ",
    "FSQ",
    "FactorizedVQ",
    "FlatOutput",
    "KMeansVQ",
    "LCVQ",
    "LFQ",
    "Quantizer",
    "QuantizerOutput",
    "ResetVQ",
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
