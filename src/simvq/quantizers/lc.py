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
from .codebook_updates import fill_rows_, kmeans_when
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
            If ``None``, the table comes from the encoder's outputs in training (the offline
            stand-in when no pre-trained feature extractor exists) and the projector starts as the
            identity, so the first codebook *is* that table: the k-means centres of the first
            batch when it holds at least ``codebook_size`` vectors; otherwise distinct vectors of
            the first training batches, as many batches as it takes to fill the table (K = 8,192
            from 64 images of 7 x 7 tokens: 3 batches), the limit k-means reaches with at least as
            many centres as vectors. VQGAN-LC's own table clusters features of the whole dataset.
            Rows not yet written are SimVQ's Gaussian basis (eval before training has no data).
        kmeans_iters: Lloyd iterations of that init (10).
        bias: whether the projector has a bias.
        beta, seed, channel_first, rotation_trick, chunk_size, check_finite: as in :class:`SimVQ`
            (``beta`` 0.25: VQGAN-LC keeps taming's VQ loss).
    """

    # and SimVQ's options for its own table: here the table is ``features`` (or k-means centres)
    excluded_options = (*SimVQ.excluded_options, "basis", "train_codebook", "init", "basis_scale")

    # registered buffers, declared for the type checker (nn.Module.__getattr__ is typed ``Tensor | Module``)
    features_filled: Tensor
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
        # rows of the table written from data (all of them when features were given)
        self.register_buffer("features_filled", torch.tensor(codebook_size if features is not None else 0))

    @property
    def features_ready(self) -> Tensor:
        """Whether the whole table holds data (0-dim bool)."""
        return self.features_filled >= self.codebook_size

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # checkpoints before the table could fill over several batches kept a bool ``features_ready``
        ready = state_dict.pop(prefix + "features_ready", None)
        if ready is not None and prefix + "features_filled" not in state_dict:
            state_dict[prefix + "features_filled"] = torch.tensor(self.codebook_size if bool(ready) else 0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    @property
    def feature_dim(self) -> int:
        return self.basis.shape[1]

    def quantize(self, x: Tensor) -> FlatOutput:
        if self.training and self._features_from_data:
            # on the first training batches only (the ops decide); masked writes, no branch on data
            with torch.no_grad():
                if x.shape[0] >= self.codebook_size:  # a static shape: one batch holds enough vectors to cluster
                    pending = self.features_filled == 0
                    centroids = kmeans_when(
                        pending, x, self.codebook_size, iters=self.kmeans_iters, chunk_size=self.chunk_size, stream=self.training_rng_state
                    )
                    self.basis.copy_(torch.where(pending, centroids, self.basis))
                    self.features_filled.copy_(torch.where(pending, self.codebook_size, self.features_filled))
                fill_rows_(self.basis, self.features_filled, x, stream=self.training_rng_state)  # a no-op once full
        return super().quantize(x)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, feature_dim={self.feature_dim}, "
            f"channel_first={self.channel_first}, beta={self.beta}, bias={self.proj.bias is not None}"
        )
