"""Models around the quantizers. Import torch and einops, the quantizer registry and (for the codec's
losses) the torch-only spectral features of ``simvq.data.spectral``."""

from .classifier import ImageClassifier
from .codec import AudioCodec
from .codec_losses import CodecLoss
from .discriminator import PatchDiscriminator
from .image_autoencoder import ImageAutoencoder
from .prior import TokenPrior

__all__ = ["AudioCodec", "CodecLoss", "ImageAutoencoder", "ImageClassifier", "PatchDiscriminator", "TokenPrior"]
