"""Models around the quantizers. Imports torch and einops (and the quantizer registry) only."""

from .classifier import ImageClassifier
from .discriminator import PatchDiscriminator
from .image_autoencoder import ImageAutoencoder
from .prior import TokenPrior

__all__ = ["ImageAutoencoder", "ImageClassifier", "PatchDiscriminator", "TokenPrior"]
