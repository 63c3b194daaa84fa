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


def __getattr__(name):
    # the tokenizer API pulls in safetensors and the image models: load it only when asked for
    if name == "Tokenizer":
        from .tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'simvq' has no attribute {name!r}")


__all__ = [
    "CodebookQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "SimVQ",
    "Tokenizer",
    "build_quantizer",
    "list_quantizers",
    "nearest",
]
