"""The quantizer of HQA (Williams et al. 2020, "Hierarchical Quantized Autoencoders", NeurIPS).

Training quantizes stochastically. The posterior over codes is ``q(k | z) = softmax_k(-||z - c_k||^2)``
(negative squared distances as logits, no scale: the official ``VQCodebook``), and the decoder
sees a Gumbel-softmax relaxed sample ``sum_k w_k c_k``, ``w = softmax((log q + G) / temperature)``.
Two latent terms come with it, per token (summed over codes, averaged over tokens):

``kl``          ``KL(q || uniform) = sum_k q_k (log q_k + log K)``: the codebook prior is uniform, so
                this rewards posteriors that spread their mass (the prior's entropy term);
``commitment``  ``sum_k q_k ||z - c_k||^2``: the probability-weighted commitment of the official code.

The reported code in training is the sampled one (argmax of the relaxed sample, as the official
code does); in eval mode quantization is deterministic: the nearest code (``simvq.search``), with a
straight-through gradient, and ``decode(codes)`` gives the same vectors.

A hierarchy (HQA proper) is a stack of these: layer ``l + 1`` is a separate tokenizer trained on
layer ``l``'s (frozen) encoder outputs, normalised to zero mean / unit variance, and its decoder
predicts layer ``l``'s latents; decoding goes down the stack through each lower layer's
quantizer. With the recipe: train the bottom layer (``quantizer.name=hqa``), encode the data set
to latents with the trained encoder, and train the next layer's tokenizer on those latents as
its inputs (``model.downsamplings`` sets the extra compression); at generation decode top-down.
This module is the per-layer quantizer, which is what the comparison table measures.

Cost: the training forward needs the full ``(N, K)`` logit table; it is walked in token chunks of
about 2M entries under activation checkpointing, so extra memory stays at one chunk at any K.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .base import GUMBEL_RANGE, CodebookQuantizer, FlatOutput, fp32, gaussian_codebook, gumbel_noise, squared_distances, straight_through
from .options import check_divisor, check_float
from .registry import register_quantizer

CHUNK_ELEMENTS = 2048 * 1024  # entries of the (tokens x codes) logit tile per checkpointed chunk


def _posterior_chunk(z: Tensor, codebook: Tensor, temperature: float):
    """One token chunk: relaxed sample ``(n, dim)``, sampled codes ``(n,)``, summed KL and commitment."""
    distances = squared_distances(z, codebook)
    log_probs = F.log_softmax(-distances, dim=-1)
    probs = log_probs.exp()
    kl = (probs * (log_probs + math.log(codebook.shape[0]))).sum()
    commitment = (probs * distances).sum()
    weights = F.softmax((log_probs + gumbel_noise(log_probs.shape, device=z.device)) / temperature, dim=-1)
    return weights @ codebook, weights.argmax(-1), kl, commitment


@register_quantizer("hqa")
class HQA(CodebookQuantizer):
    """One HQA layer's quantizer: Gumbel-softmax posterior from negative squared distances.

    Args:
        dim, codebook_size: code dimension and number of codes (the official default is 256).
        temperature: Gumbel-softmax temperature (0.667, the official ``gs_temp``). Settable. At
            least ``max(15.94, log K + 3.14) / 2**127`` (~1e-37): it divides log-probabilities
            perturbed by Gumbel noise, whose row maxima are bounded so.
        kl_weight, commitment_weight: weights of the per-token ``kl`` and ``commitment`` terms.
            The official loss is ``recon/D + 0.001 KL/D + 0.001 commit/D`` with the reconstruction
            error and both terms *summed* over an image (D = its values); simvq's recipes use a
            *mean* reconstruction error and these terms are per-token means, which keeps the
            official balance with ``0.001 * tokens / D``, i.e. ``0.001 / v`` at ``v`` data values
            per token. Default 0.001 for both (the official constant, ``v = 1``); pass
            ``0.001 / v`` to reproduce the official balance exactly.
        init_scale: codes start as ``N(0, init_scale^2)``; default ``dim**-0.5`` like ``vq`` (the
            official code uses ``randn`` codes against inputs normalised to unit variance per
            channel; simvq's encoders emit latents on the ``dim**-0.5`` scale instead).
        seed: seed of the initial codebook.
        rotation_trick: rotation-trick gradient for the eval-mode (hard) path.
        chunk_size: codes per tile of the nearest-code search (eval, encode).
        channel_first, check_finite: as in :class:`Quantizer`. There is no ``beta``: the commitment
            term is ``commitment_weight``'s.
    """

    excluded_options = ("beta",)
    sampled_training_codes = True

    def __init__(self, dim: int, codebook_size: int, *, temperature: float = 0.667, kl_weight: float = 0.001,
                 commitment_weight: float = 0.001, **options):
        super().__init__(dim, codebook_size, **options)
        # it divides Gumbel-perturbed log-probabilities; the largest of each row (what the softmax
        # subtracts) lies in [-log K + least noise, largest noise]
        least_noise, largest_noise = GUMBEL_RANGE
        self.temperature = check_divisor(
            "temperature",
            temperature,
            dividend=max(largest_noise, math.log(codebook_size) - least_noise),
            divides="each row's largest Gumbel-perturbed log-probability",
        )
        self.kl_weight = check_float("kl_weight", kl_weight, low=0.0)
        self.commitment_weight = check_float("commitment_weight", commitment_weight, low=0.0)
        self.embedding = nn.Parameter(gaussian_codebook(codebook_size, dim, init_scale=self.init_scale, seed=self.seed))

    def codebook(self) -> Tensor:
        return self.embedding

    def quantize(self, x: Tensor) -> FlatOutput:
        with fp32(x.device.type):
            z = x.float()
            if not self.training:
                codes = self.search(z, checked=self.check_finite)
                q = self.lookup(codes).float()
                return FlatOutput(quantized=straight_through(z, q, rotation_trick=self.rotation_trick), codes=codes)
            quantized, codes, kl, commitment = self._relaxed(z)
            num_tokens = z.shape[0]
            losses = {
                "kl": self.kl_weight * kl / num_tokens,
                "commitment": self.commitment_weight * commitment / num_tokens,
            }
        metrics = {"temperature": torch.tensor(self.temperature), "kl": (kl / num_tokens).detach()}
        return FlatOutput(quantized=quantized, codes=codes, losses=losses, metrics=metrics)

    def _relaxed(self, z: Tensor):
        codebook = self.embedding.float()
        token_chunk = max(1, CHUNK_ELEMENTS // self.codebook_size)
        if z.shape[0] <= token_chunk:
            return _posterior_chunk(z, codebook, self.temperature)
        samples, codes, kl, commitment = [], [], z.new_zeros(()), z.new_zeros(())
        for start in range(0, z.shape[0], token_chunk):
            # the backward recomputes the chunk (RNG state replayed: the same Gumbel noise)
            sample, chunk_codes, chunk_kl, chunk_commitment = checkpoint(
                _posterior_chunk, z[start : start + token_chunk], codebook, self.temperature, use_reentrant=False
            )
            samples.append(sample)
            codes.append(chunk_codes)
            kl = kl + chunk_kl
            commitment = commitment + chunk_commitment
        return torch.cat(samples), torch.cat(codes), kl, commitment

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, temperature={self.temperature}, kl_weight={self.kl_weight}, "
            f"commitment_weight={self.commitment_weight}"
        )


__all__ = ["HQA"]
