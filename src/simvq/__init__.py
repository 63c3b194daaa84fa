"""simvq: vector-quantized tokenizers that train without codebook collapse."""

from .quantizers import (
    CodebookQuantizer,
    Quantizer,
    QuantizerOutput,
    SimVQ,
    build_quantizer,
    list_quantizers,
)
from .search import nearest

__version__ = "0.1.0"

__all__ = [
    "CodebookQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "SimVQ",
    "build_quantizer",
    "list_quantizers",
    "nearest",
]
