"""Models around the quantizers. Imports torch and einops (and the quantizer registry) only."""

from .discriminator import PatchDiscriminator
from .image_autoencoder import ImageAutoencoder

__all__ = ["ImageAutoencoder", "PatchDiscriminator"]
