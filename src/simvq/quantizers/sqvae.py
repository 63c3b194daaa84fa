"""SQ-VAE (Takida et al. 2022, "SQ-VAE: Variational Bayes on Discrete Representation with
Self-annealed Stochastic Quantization"), Gaussian variant with one learnable variance ("gaussian_1").

Training quantizes stochastically: ``P(k | z) = softmax_k(-||z - b_k||^2 / (2 sigma^2))`` and the
decoder sees a Gumbel-softmax relaxed sample ``sum_k w_k b_k``. ``sigma^2`` is learned; as the
reconstruction term rewards sharper samples it shrinks on its own ("self-annealing"), so the
stochastic quantizer turns deterministic without a schedule. Evaluation is the argmin code.

Losses (the ELBO's latent terms, as in the official code, per token: summed over channels and
codes, averaged over tokens; the official code averages per image instead):
``kl_continuous = ||z - z_q||^2 / (2 sigma^2)`` and ``kl_discrete = sum_k P log P`` (minus the entropy).

Cost: the training forward needs the full ``(N, K)`` logit table for the softmax. It is walked in
token chunks of about 2M entries under activation checkpointing, so extra memory stays at one
chunk (~ tens of MiB) at any K, at the price of recomputing each chunk in the backward:
about 3 ``N x K x dim`` GEMM passes forward and 3 backward, versus 1 for a plain VQ search.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .base import (
    GUMBEL_RANGE,
    CodebookQuantizer,
    FlatOutput,
    fp32,
    gaussian_codebook,
    gumbel_noise,
    squared_distances,
    straight_through,
)
from .options import DATA_LIMIT, QUOTIENT_LIMIT, check_divisor, check_float
from .registry import register_quantizer

# entries of the (tokens x codes) logit tile per checkpointed chunk
TILE_ELEMENTS = 2048 * 1024
# the least init_variance (check_divisor's bound for squared distances)
LEAST_VARIANCE = DATA_LIMIT / QUOTIENT_LIMIT


def _least_scale() -> float:
    """The least ``init_scale`` whose default variance ``20 * init_scale**2`` is ``LEAST_VARIANCE``
    or more, in float64 arithmetic as the constructor computes it."""
    scale = math.sqrt(LEAST_VARIANCE / 20.0)
    while 20.0 * scale**2 < LEAST_VARIANCE:
        scale = math.nextafter(scale, math.inf)
    while 20.0 * math.nextafter(scale, 0.0) ** 2 >= LEAST_VARIANCE:
        scale = math.nextafter(scale, 0.0)
    return scale


def _relaxed_chunk(z: Tensor, codebook: Tensor, precision: Tensor, temperature: float):
    """One token chunk: relaxed sample ``(n, dim)``, ``sum P log P`` and ``sum ||z - z_q||^2``."""
    squared = squared_distances(z, codebook)
    # softmax is shift-invariant: measuring from each row's nearest code changes no probability, and
    # keeps the logits' gradient times ``squared`` (the precision's gradient) finite for huge |z|
    # (a ~1e31 distance times a ~1e16 gradient overflowed to inf - inf = NaN)
    logits = -0.5 * precision * (squared - squared.detach().amin(1, keepdim=True))
    log_probs = F.log_softmax(logits, dim=-1)
    neg_entropy = (log_probs.exp() * log_probs).sum()
    weights = F.softmax((logits + gumbel_noise(logits.shape, device=z.device)) / temperature, dim=-1)
    sample = weights @ codebook
    return sample, neg_entropy, (z - sample).pow(2).sum()


@register_quantizer("sqvae")
class SQVAE(CodebookQuantizer):
    """Gaussian SQ-VAE quantizer with a learnable scalar variance.

    Args:
        dim, codebook_size: code dimension and number of codes.
        temperature: Gumbel-softmax temperature (1.0, the official ``temperature_init``; the official
            schedule decays it by ``exp(-1e-5 * step)``, so it stays ~1 for short runs). Settable.
            At least ``15.94 / 2**127`` (9.4e-38): it divides logits perturbed by Gumbel noise,
            whose row maxima are bounded so.
        init_scale: codebook starts as ``N(0, init_scale^2)``; default ``dim**-0.5`` like ``vq``.
        init_variance: initial ``sigma^2``; default ``20 * init_scale^2``, the official CIFAR-10 and
            CelebA ratio (``log_param_q_init = log 20`` against a ``randn`` codebook; its MNIST and
            Fashion-MNIST configs use log 10, and its "gaussian_1" variance is ``1 + exp(param)``,
            floored at the codes' unit variance, where this one is ``exp(param)``, unfloored). At
            least ``2**-63``: it divides squared distances (see ``options.check_divisor``).
        kl_weight: multiplies both latent terms. The ELBO weighs them against a Gaussian
            reconstruction term ``||x - x_hat||^2 / (2 sigma_x^2)`` summed over the data values; a
            task loss that is a *mean* squared error keeps that balance when the per-token terms
            are scaled by ``2 sigma_x^2 / (data values per token)``. The official code does not fix
            ``sigma_x``: it fits it to the reconstruction (ARELBO, ``sigma_x^2 = MSE``), and so does
            the image recipe by default (``loss.elbo_weight: arelbo`` replaces this weight, and
            refuses one given explicitly; see :mod:`simvq.train.image`). This fixed weight is for
            other uses. Default 0.01:
            sigma_x^2 ~ 0.04 at 8 values per token. With 1.0 under a mean-squared error the latent
            terms dominate and the posterior collapses to the uniform one (measured on a toy
            autoencoder of the 8-D cube, 32-D latent, K = 1,024: 0.2% usage and no reconstruction
            at all); too large a weight more mildly keeps ``sigma^2`` from annealing, and the
            decoder trains on blends of many codes.
        seed: seed of the initial codebook.
        rotation_trick: rotation-trick gradient for the eval-mode (hard) path; training uses the
            relaxed sample, whose gradient needs no estimator.
        chunk_size: codes per tile of the nearest-code search (eval, encode, reported codes).
        channel_first, check_finite: as in :class:`Quantizer`. There is no ``beta``: the latent
            terms are ``kl_weight``'s.

    In training mode ``quantized`` is the relaxed sample (it is not ``decode(codes)``) and ``codes``
    are the deterministic nearest codes; in eval mode both are the argmin code, exactly as ``decode``.
    """

    excluded_options = ("beta",)
    elbo_losses = ("kl_continuous", "kl_discrete")

    def __init__(self, dim: int, codebook_size: int, *, temperature: float = 1.0, init_variance: float | None = None,
                 kl_weight: float = 0.01, **options):
        super().__init__(dim, codebook_size, **options)
        # the logits are <= 0 with each row's nearest code at 0, so the largest Gumbel-perturbed
        # logit of a row (what the softmax subtracts) is bounded by the noise
        temperature = check_divisor(
            "temperature",
            temperature,
            dividend=max(abs(bound) for bound in GUMBEL_RANGE),
            divides="each row's largest Gumbel-perturbed logit",
        )
        scale = self.init_scale if self.init_scale is not None else dim**-0.5
        if init_variance is None:
            # the default variance 20 * init_scale**2 must be one too (a tiny init_scale made it 0)
            why = f"the default init_variance, 20 * init_scale**2, must be at least {LEAST_VARIANCE:.4g} (or pass init_variance)"
            check_float("init_scale", scale, low=_least_scale(), why=why)
        variance = check_divisor(
            "init_variance",
            init_variance if init_variance is not None else 20.0 * scale**2,
            dividend=DATA_LIMIT,
            divides="squared distances between latents and codes (data-scaled: covered up to 2**64)",
        )
        kl_weight = check_float("kl_weight", kl_weight, low=0.0)
        self.embedding = nn.Parameter(gaussian_codebook(codebook_size, dim, init_scale=scale, seed=self.seed))
        self.log_variance = nn.Parameter(torch.tensor(math.log(variance)))
        self.temperature = temperature
        self.kl_weight = kl_weight

    @property
    def variance(self) -> Tensor:
        return self.log_variance.exp()

    def codebook(self) -> Tensor:
        return self.embedding

    def quantize(self, x: Tensor) -> FlatOutput:
        codes = self.encode_flat(x)
        with fp32(x.device.type):
            z = x.float()
            if not self.training:
                # deterministic: the argmin code (simvq.search.nearest), no noise; straight-through keeps a graph to z
                q = self.lookup(codes).float()
                return FlatOutput(quantized=straight_through(z, q, rotation_trick=self.rotation_trick), codes=codes)
            quantized, neg_entropy, squared_error = self._relaxed(z)
            num_tokens = z.shape[0]
            precision = self.log_variance.float().neg().exp()
            losses = {
                "kl_continuous": self.kl_weight * 0.5 * precision * squared_error / num_tokens,
                "kl_discrete": self.kl_weight * neg_entropy / num_tokens,
            }
        metrics = {"variance": self.variance.detach(), "temperature": torch.tensor(self.temperature)}
        return FlatOutput(quantized=quantized, codes=codes, losses=losses, metrics=metrics)

    def _relaxed(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        codebook = self.embedding.float()
        precision = self.log_variance.float().neg().exp()
        token_chunk = max(1, TILE_ELEMENTS // self.codebook_size)
        if z.shape[0] <= token_chunk:
            return _relaxed_chunk(z, codebook, precision, self.temperature)
        samples, neg_entropy, squared_error = [], z.new_zeros(()), z.new_zeros(())
        for start in range(0, z.shape[0], token_chunk):
            # recompute the chunk in the backward instead of storing its (chunk, K) tables; the RNG
            # state is replayed, so the recomputed Gumbel noise is the same sample
            sample, chunk_entropy, chunk_error = checkpoint(
                _relaxed_chunk, z[start : start + token_chunk], codebook, precision, self.temperature, use_reentrant=False
            )
            samples.append(sample)
            neg_entropy = neg_entropy + chunk_entropy
            squared_error = squared_error + chunk_error
        return torch.cat(samples), neg_entropy, squared_error

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}, kl_weight={self.kl_weight}"
