"""The codebook VQ family: a ``(K, dim)`` table searched by nearest neighbour, and the classic fixes
for its collapse. One class, :class:`VQ`, holds every mechanism as a keyword option; the registered
names are presets of it (thin subclasses that only change defaults):

``vq``         VQ-VAE (van den Oord et al. 2017): codebook trained by ``||sg(z) - q||^2``.
``vq_ema``     VQ-VAE-2 / Sonnet ``VectorQuantizerEMA``: codebook = EMA of assigned encoder outputs.
``vq_reset``   Jukebox (Dhariwal et al. 2020): EMA codebook + restart of dead codes from the batch.
``vq_kmeans``  k-means initialisation of the codebook from the first training batch.
``vq_l2``      ViT-VQGAN (Yu et al. 2022): factorised low-dim, l2-normalised codes.

Order of one training step: (k-means init, first step only) -> search -> losses/straight-through
with the codebook as it was searched -> in-place updates (EMA, dead-code restart) under no_grad.
So ``out.quantized`` always equals the code vectors the codes were chosen against; a ``decode``
after the step sees the updated codebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    CodebookQuantizer,
    FlatOutput,
    commitment_losses,
    fp32,
    gaussian_codebook,
    linear_fp32,
    projections,
    register_training_stream,
    straight_through,
)
from .codebook_updates import cluster_sums, ema_, kmeans_when, sample_rows_when
from .options import check_bool, check_decay, check_float, check_int
from .registry import register_quantizer


@register_quantizer("vq")
class VQ(CodebookQuantizer):
    """Codebook VQ with the classic anti-collapse options (all off by default: plain VQ-VAE).

    Args:
        dim, codebook_size: input dimension and number of codes.
        ema_decay: if set, the codebook is a buffer updated as the EMA of its assigned vectors
            (VQ-VAE-2 uses 0.99) and the loss is the commitment term only.
        ema_eps: Laplace smoothing of the EMA cluster sizes (1e-5, Sonnet's default).
        dead_code_threshold: if set, a code whose EMA usage (assignments per step) is below it is
            restarted from a random vector of the current batch (Jukebox: 1.0). The threshold is in
            tokens per step, so it only makes sense when a batch holds several tokens per code.
        dead_code_decay: decay of that usage EMA (Jukebox: 0.99, shared with its EMA codebook).
        kmeans_init: replace the codebook by k-means centroids of the first training batch.
        kmeans_iters: Lloyd iterations of that init (10, as lucidrains' ``kmeans_init``).
        codebook_dim: if set, search in a learned ``codebook_dim``-dim projection of the input and
            project the codes back (ViT-VQGAN's factorised codes).
        l2_normalize: l2-normalise the (projected) input and the codes before the search, so the
            search is by cosine similarity on the unit sphere (ViT-VQGAN).
        beta, rotation_trick, chunk_size, init_scale, seed, channel_first, check_finite: as in
            :class:`CodebookQuantizer` and :class:`Quantizer`. Here ``beta`` is 0.25, VQ-VAE's, in
            every preset too, so a comparison isolates the codebook mechanism (Jukebox itself used
            0.02); ``init_scale`` defaults to ``codebook_dim**-0.5`` (unit-norm rows, the scale of
            SimVQ's frozen basis, so all start from the same picture); ``seed`` seeds the initial
            codebook, the projections and the random draws (restarts, k-means).

    Buffers that a resumed run needs (EMA sizes and sums, usage EMA, the k-means-done flag) are
    registered buffers, so they travel in ``state_dict``.
    """

    # registered buffers (and the codebook, a parameter or a buffer), declared for the type checker:
    # nn.Module.__getattr__ is typed ``Tensor | Module``. Which exist depends on the options.
    embedding: Tensor
    ema_cluster_size: Tensor
    ema_embed_sum: Tensor
    code_usage: Tensor
    kmeans_done: Tensor
    training_rng_state: Tensor | None

    def __init__(self, dim: int, codebook_size: int, *, ema_decay: float | None = None, ema_eps: float = 1e-5,
                 dead_code_threshold: float | None = None, dead_code_decay: float = 0.99, kmeans_init: bool = False,
                 kmeans_iters: int = 10, codebook_dim: int | None = None, l2_normalize: bool = False, **options):
        super().__init__(dim, codebook_size, **options)
        codebook_dim = check_int("codebook_dim", codebook_dim, minimum=1, optional=True)
        self.ema_decay = check_decay("ema_decay", ema_decay, allow_none=True)
        self.ema_eps = check_float("ema_eps", ema_eps, low=0.0, low_open=True)
        self.dead_code_threshold = check_float("dead_code_threshold", dead_code_threshold, low=0.0, optional=True)
        self.dead_code_decay = check_decay("dead_code_decay", dead_code_decay)
        self.kmeans_init = check_bool("kmeans_init", kmeans_init)
        self.kmeans_iters = check_int("kmeans_iters", kmeans_iters, minimum=0)
        self.l2_normalize = check_bool("l2_normalize", l2_normalize)
        self.codebook_dim = codebook_dim if codebook_dim is not None else dim
        register_training_stream(self, self.seed)
        # ViT-VQGAN: Linear(dim, codebook_dim) before the lookup, Linear(codebook_dim, dim) after
        self.project_in, self.project_out = projections(dim, self.codebook_dim, enabled=codebook_dim is not None, seed=self.seed)
        self._register_codebook(gaussian_codebook(codebook_size, self.codebook_dim, init_scale=self.init_scale, seed=self.seed))
        self._register_update_state()

    def _register_codebook(self, initial: Tensor) -> None:
        """The ``(K, codebook_dim)`` table: a parameter, or with an EMA codebook a buffer and its EMA state."""
        if self.ema_decay is None:
            self.embedding = nn.Parameter(initial)
            return
        # the codebook is a statistic, not a parameter: no optimizer ever touches it
        self.register_buffer("embedding", initial)
        # Cluster sizes start at 1 and the sums at the initial codes, so a code nobody picks
        # keeps its place (both decay alike). Zero-initialised ports divide a decayed code by
        # ~eps on the first step and throw unused codes far away.
        self.register_buffer("ema_cluster_size", torch.ones(self.codebook_size))
        self.register_buffer("ema_embed_sum", initial.clone())

    def _register_update_state(self) -> None:
        """Buffers of the dead-code restart and the k-means init, so a resumed run continues."""
        if self.dead_code_threshold is not None:
            # Jukebox starts the usage EMA at 1: a code is alive until the batches say otherwise
            self.register_buffer("code_usage", torch.ones(self.codebook_size))
        if self.kmeans_init:
            self.register_buffer("kmeans_done", torch.tensor(False))

    # -- the codebook ---------------------------------------------------------------------------

    def _normalize(self, t: Tensor) -> Tensor:
        return F.normalize(t, dim=-1) if self.l2_normalize else t

    def codebook(self) -> Tensor:
        """The searched table ``(K, codebook_dim)`` (unit rows with ``l2_normalize``)."""
        return self._normalize(self.embedding.float())

    def lookup(self, codes: Tensor) -> Tensor:
        # normalise only the selected rows: O(N d), not O(K d), and the same values as codebook()[codes]
        return self._normalize(F.embedding(codes, self.embedding).float())

    def to_latent(self, x: Tensor) -> Tensor:
        """Input ``(N, dim)`` -> search space ``(N, codebook_dim)``, float32."""
        return self._normalize(linear_fp32(self.project_in, x))

    def from_latent(self, q: Tensor) -> Tensor:
        return linear_fp32(self.project_out, q)

    # -- forward --------------------------------------------------------------------------------

    def quantize(self, x: Tensor) -> FlatOutput:
        latent = self.to_latent(x)
        if self.training and self.kmeans_init:
            self._initialise_by_kmeans(latent.detach())
        codes = self.search(latent, checked=self._latent_checked())
        with fp32(x.device.type):
            q = self.lookup(codes).float()
            losses = commitment_losses(latent, q, beta=self.beta)
            if self.ema_decay is not None:
                del losses["codebook"]  # the EMA moves the codes; there is nothing to differentiate
            quantized = self.from_latent(straight_through(latent, q, rotation_trick=self.rotation_trick))
        if self.training:
            self._update_codebook(latent.detach(), codes)
        return FlatOutput(quantized=quantized, codes=codes, losses=losses)

    def encode_flat(self, x: Tensor) -> Tensor:
        return self.search(self.to_latent(x), checked=self._latent_checked())

    def _latent_checked(self) -> bool:
        """Whether the search space holds the checked input's values (or its unit rows): yes
        without a projection; a projection's output is another tensor, which the search checks."""
        return self.check_finite and isinstance(self.project_in, nn.Identity)

    def decode_flat(self, codes: Tensor) -> Tensor:
        with fp32(codes.device.type):
            return self.from_latent(self.lookup(codes).float())

    # -- in-place codebook updates (training mode only) -----------------------------------------

    @torch.no_grad()
    def _initialise_by_kmeans(self, latent: Tensor) -> None:
        """On the first training batch only (the op decides): the codebook becomes k-means centroids.
        Masked writes rather than a Python ``if``, so a compiled graph holds no branch on data."""
        pending = ~self.kmeans_done
        centroids = kmeans_when(
            pending, latent, self.codebook_size, iters=self.kmeans_iters, chunk_size=self.chunk_size, stream=self.training_rng_state
        )
        self.embedding.data.copy_(torch.where(pending, centroids, self.embedding.data))
        if self.ema_decay is not None:
            self.ema_cluster_size.copy_(torch.where(pending, 1.0, self.ema_cluster_size))
            self.ema_embed_sum.copy_(torch.where(pending, centroids, self.ema_embed_sum))
        self.kmeans_done.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, latent: Tensor, codes: Tensor) -> None:
        if self.ema_decay is None and self.dead_code_threshold is None:
            return
        counts, sums = cluster_sums(latent, codes, self.codebook_size)
        if self.ema_decay is not None:
            self._ema_update(counts, sums)
        if self.dead_code_threshold is not None:
            self._restart_dead_codes(latent, counts)

    def _ema_update(self, counts: Tensor, sums: Tensor) -> None:
        """Sonnet/VQ-VAE-2: N <- EMA(counts), m <- EMA(sums), e = m / laplace(N)."""
        assert self.ema_decay is not None  # called with an EMA codebook only (for the type checker)
        ema_(self.ema_cluster_size, counts, self.ema_decay)
        ema_(self.ema_embed_sum, sums, self.ema_decay)
        self.embedding.copy_(self.ema_embed_sum / self._smoothed_cluster_size()[:, None])

    def _smoothed_cluster_size(self) -> Tensor:
        # Laplace smoothing keeps the division finite and the total mass unchanged
        size = self.ema_cluster_size
        total = size.sum()
        return (size + self.ema_eps) / (total + self.codebook_size * self.ema_eps) * total

    def _restart_dead_codes(self, latent: Tensor, counts: Tensor) -> None:
        """Jukebox: codes whose usage EMA fell below the threshold take random batch vectors."""
        assert self.dead_code_threshold is not None  # called with restarts on only (for the type checker)
        ema_(self.code_usage, counts, self.dead_code_decay)
        dead = self.code_usage < self.dead_code_threshold
        any_dead = dead.any()
        # drawn for every code (as Jukebox does) so all processes draw the same amount, then masked;
        # drawn only on steps where a code died (the op decides), and written with masks rather
        # than under a Python ``if``, so a compiled graph holds no branch on data
        replacement = sample_rows_when(any_dead, latent, self.codebook_size, stream=self.training_rng_state)
        self.embedding.data.copy_(torch.where(dead[:, None], replacement, self.embedding.data))
        if self.ema_decay is not None:
            # keep the EMA consistent: m / laplace(N) must reproduce the new code
            rebuilt = self.embedding * self._smoothed_cluster_size()[:, None]
            self.ema_embed_sum.copy_(torch.where(any_dead, rebuilt, self.ema_embed_sum))

    def extra_repr(self) -> str:
        parts = [super().extra_repr(), f"beta={self.beta}"]
        if self.ema_decay is not None:
            parts.append(f"ema_decay={self.ema_decay}, ema_eps={self.ema_eps}")
        if self.dead_code_threshold is not None:
            parts.append(f"dead_code_threshold={self.dead_code_threshold}, dead_code_decay={self.dead_code_decay}")
        if self.kmeans_init:
            parts.append(f"kmeans_iters={self.kmeans_iters}")
        if self.codebook_dim != self.dim or self.l2_normalize:
            parts.append(f"codebook_dim={self.codebook_dim}, l2_normalize={self.l2_normalize}")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- presets


@register_quantizer("vq_ema")
class EMAVQ(VQ):
    """VQ-VAE-2 (Razavi et al. 2019; Sonnet ``VectorQuantizerEMA``): EMA codebook, decay 0.99,
    Laplace eps 1e-5, loss ``beta * commitment`` only. Sonnet also zero-debiases its EMAs; we start
    the cluster sizes at 1 and the sums at the initial codes instead (see :class:`VQ`)."""

    def __init__(self, dim: int, codebook_size: int, *, ema_decay: float = 0.99, **options):
        super().__init__(dim, codebook_size, ema_decay=ema_decay, **options)


@register_quantizer("vq_reset")
class ResetVQ(VQ):
    """Jukebox's bottleneck (Dhariwal et al. 2020): EMA codebook (decay 0.99) plus random restart
    of codes whose usage EMA drops below 1 assignment per step, from random vectors of the current
    batch. Set ``ema_decay=None`` for restarts on a loss-trained codebook instead. As in Jukebox the
    threshold counts tokens per step: give batches with several tokens per code."""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        ema_decay: float | None = 0.99,
        dead_code_threshold: float = 1.0,
        **options,
    ):
        super().__init__(dim, codebook_size, ema_decay=ema_decay, dead_code_threshold=dead_code_threshold, **options)


@register_quantizer("vq_kmeans")
class KMeansVQ(VQ):
    """Plain VQ-VAE whose codebook is initialised by 10 Lloyd iterations of k-means on the first
    training batch (the init of SoundStream / lucidrains' ``kmeans_init``). A batch with fewer
    vectors than codes gives duplicated centroids: use large first batches."""

    def __init__(self, dim: int, codebook_size: int, *, kmeans_init: bool = True, **options):
        super().__init__(dim, codebook_size, kmeans_init=kmeans_init, **options)


@register_quantizer("vq_l2")
class FactorizedVQ(VQ):
    """ViT-VQGAN's factorised codes (Yu et al. 2022): Linear(dim, 32) -> l2-normalise -> nearest
    code on the unit sphere -> Linear(32, dim). 32-d is the lookup space ViT-VQGAN uses (it reports
    that shrinking the lookup space from 256-d improves reconstruction and usage; pass
    ``codebook_dim=8`` for the smaller setting). Losses are taken in the normalised space. With
    ``dim <= 32`` the "projection" does not reduce the dimension, but it is kept so the preset
    means the same thing at every ``dim``."""

    def __init__(self, dim: int, codebook_size: int, *, codebook_dim: int = 32, l2_normalize: bool = True, **options):
        super().__init__(dim, codebook_size, codebook_dim=codebook_dim, l2_normalize=l2_normalize, **options)
