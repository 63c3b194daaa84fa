"""VQGAN-LC (Zhu et al. 2024, "Scaling the Codebook Size of VQGAN to 100,000 with a Utilization
Rate of 99%"): a large codebook of frozen feature vectors (k-means centres of pre-trained features)
mapped into the latent space by a trainable projector; only the projector learns.

Structurally this is SimVQ with a different frozen table — features from data instead of Gaussian
noise, and a projector ``Linear(feature_dim, dim)`` — so it reuses SimVQ's search, lookup and eval
cache unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import FlatOutput, register_training_stream
from .codebook_updates import kmeans_when
from .options import check_int
from .registry import register_quantizer
from .simvq import SimVQ, check_table


@register_quantizer("vq_lc")
class LCVQ(SimVQ):
    """Frozen feature codebook + trainable linear projector.

    Args:
        dim, codebook_size: latent dimension and number of codes.
        features: ``(codebook_size, feature_dim)`` frozen code features (VQGAN-LC: 100k k-means
            centres of CLIP/ViT patch features). The projector is then a default-initialised
            ``Linear(feature_dim, dim)``, as in VQGAN-LC.
            If ``None``, the table is the k-means centres of the first training batch of encoder
            outputs (the offline stand-in when no pre-trained feature extractor exists) and the
            projector starts as the identity, so the first codebook *is* those centres. Until that
            first training batch the table is SimVQ's Gaussian basis (eval before training has
            nothing to cluster). A batch with fewer vectors than codes (K = 8,192 from 64 images
            of 7 x 7 tokens) starts Lloyd from rows drawn with replacement, each repeat jittered
            (``sample_rows``), so the table holds the batch's centres and near copies of them;
            VQGAN-LC's own table clusters features of the whole dataset.
        kmeans_iters: Lloyd iterations of that init (10).
        bias: whether the projector has a bias.
        beta, seed, channel_first, rotation_trick, chunk_size, check_finite: as in :class:`SimVQ`
            (``beta`` 0.25: VQGAN-LC keeps taming's VQ loss).
    """

    # and SimVQ's options for its own table: here the table is ``features`` (or k-means centres)
    excluded_options = (*SimVQ.excluded_options, "basis", "train_codebook", "init", "basis_scale")

    # registered buffers, declared for the type checker (nn.Module.__getattr__ is typed ``Tensor | Module``)
    features_ready: Tensor
    training_rng_state: Tensor | None

    def __init__(self, dim: int, codebook_size: int, *, features: Tensor | None = None, kmeans_iters: int = 10,
                 **options):
        if features is not None:
            check_table(features, codebook_size, "features")
        super().__init__(dim, codebook_size, basis=features, **options)
        self.kmeans_iters = check_int("kmeans_iters", kmeans_iters, minimum=0)
        register_training_stream(self, self.seed)
        # clustering the first batch is this module's job only when no features were given: the
        # masked writes below would otherwise copy a (possibly 100k-row) table on every step
        self._features_from_data = features is None
        if features is None:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(dim))
                if self.proj.bias is not None:
                    self.proj.bias.zero_()
        self.register_buffer("features_ready", torch.tensor(features is not None))

    @property
    def feature_dim(self) -> int:
        return self.basis.shape[1]

    def quantize(self, x: Tensor) -> FlatOutput:
        if self.training and self._features_from_data:
            # on the first training batch only (the op decides); masked writes, no branch on data
            with torch.no_grad():
                pending = ~self.features_ready
                centroids = kmeans_when(
                    pending, x, self.codebook_size, iters=self.kmeans_iters, chunk_size=self.chunk_size, stream=self.training_rng_state
                )
                self.basis.copy_(torch.where(pending, centroids, self.basis))
                self.features_ready.fill_(True)
        return super().quantize(x)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, feature_dim={self.feature_dim}, "
            f"channel_first={self.channel_first}, beta={self.beta}, bias={self.proj.bias is not None}"
        )
