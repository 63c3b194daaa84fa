"""Quantizers, one per file, all behind ``build_quantizer``. Importing this package registers them."""

from .affine import AffineVQ
from .base import PADDING_CODE, CodebookQuantizer, FlatOutput, Quantizer, QuantizerOutput, straight_through
from .cvq import CVQ
from .fsq import FSQ
from .hqa import HQA
from .lc import LCVQ
from .lfq import LFQ
from .qinco import QINCo
from .registry import build_quantizer, list_quantizers, one_index_per_token, register_quantizer, sampled_training_codes
from .residual import ResidualQuantizer, ResidualSimVQ
from .sc_vae import SCVAE, SparseQuantizerOutput
from .simvq import SimVQ
from .sqvae import SQVAE
from .vq import EMAVQ, VQ, FactorizedVQ, KMeansVQ, ResetVQ
from .vq_wae import VQWAE

__all__ = [
    "PADDING_CODE",
    "AffineVQ",
    "CVQ",
    "CodebookQuantizer",
    "EMAVQ",
    "FSQ",
    "FactorizedVQ",
    "FlatOutput",
    "HQA",
    "KMeansVQ",
    "LCVQ",
    "LFQ",
    "Quantizer",
    "QINCo",
    "QuantizerOutput",
    "ResetVQ",
    "ResidualQuantizer",
    "ResidualSimVQ",
    "SCVAE",
    "SQVAE",
    "SimVQ",
    "SparseQuantizerOutput",
    "VQ",
    "VQWAE",
    "build_quantizer",
    "list_quantizers",
    "one_index_per_token",
    "register_quantizer",
    "sampled_training_codes",
    "straight_through",
]
