"""LFQ (Yu et al. 2023, MAGVIT-v2, "Language Model Beats Diffusion -- Tokenizer is Key to Visual
Generation"): lookup-free quantization. Each of ``log2(K)`` channels is quantized to its sign, so
the implicit codebook is ``{-1, +1}^log2(K)`` and the code is the bit pattern of the signs.

An entropy penalty keeps the codes in use: ``E[H(q(z))] - gamma * H(E[q(z)])`` with the soft
assignment ``q(c | z) = softmax_c(-||z - c||^2 / tau)`` over all ``K`` codes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (
    FlatOutput,
    Quantizer,
    commitment_losses,
    fp32,
    linear_fp32,
    projections,
    straight_through,
)
from .options import DATA_LIMIT, check_choice, check_divisor, check_float
from .registry import register_quantizer

ENTROPY_MODES = ("auto", "exact", "grouped", "factorized")
# up to this many codes the batch (codebook) entropy is computed exactly over all K codes: the
# (N, K) probability table costs N * K floats (16 MiB for N=4096 tokens at K=1024) and its time
# grows with K (one thread, 3,136 tokens: ~1 s a step at K=8,192 and ~9 s at K=65,536, where the
# rest of a small tokenizer's step is ~0.2 s); "grouped" keeps each group within it
EXACT_ENTROPY_MAX_CODES = 2**12
GROUP_MAX_BITS = 12


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Entropy (nats) of distributions along ``dim``; finite value and gradient where a probability is 0."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(dim)


def binary_entropy(p: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(p), elementwise."""
    return entropy(torch.stack([p, 1 - p], dim=-1))


def binary_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of Bernoulli(sigmoid(l)) as ``p softplus(-l) + (1-p) softplus(l)``: exact and with a
    finite gradient even where the sigmoid saturates in float32 (tau = 0.01 makes that common)."""
    p = torch.sigmoid(logits)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def all_sign_patterns(num_bits: int, device=None) -> Tensor:
    """``(2^num_bits, num_bits)`` bits of every code, most significant bit first (channel 0)."""
    codes = torch.arange(2**num_bits, device=device)
    weights = 2 ** torch.arange(num_bits - 1, -1, -1, device=device)
    return (codes.unsqueeze(-1) // weights) % 2


@register_quantizer("lfq")
class LFQ(Quantizer):
    """Lookup-free quantization.

    Args:
        dim: input/output dimension; projected to ``log2(codebook_size)`` channels and back when different.
        codebook_size: a power of two ``K``; there are ``log2(K)`` binary channels.
        entropy_weight: weight of the entropy penalty (0.1, MAGVIT-v2).
        diversity_gamma: weight of the batch (codebook) entropy inside the penalty (1.0, MAGVIT-v2).
        temperature: ``tau`` of the soft assignment (0.01, the widely used reference setting); at
            least ``num_bits * 2**-61`` (see ``options.check_divisor``).
        beta: commitment weight ``beta * ||z - sg(sign z)||^2`` (0.25).
        entropy_mode: how the batch entropy ``H(E[q(z)])`` is computed. "exact": over all K codes
            (``O(N K log K)`` time, ``O(N K)`` memory); "grouped": the bits split into equal groups
            of at most 12, the sum of each group's exact entropy over its own sub-codebook (Open-
            MAGVIT2's factorisation of a 2^18 vocabulary into two of 2^9); "factorized": groups of
            one bit, the sum of per-channel binary entropies. Both are upper bounds of the exact
            value, equal when the groups are independent over the batch; one-bit groups are the
            loosest: a tokenizer can keep every bit balanced while its bits move together, and at
            K = 8,192 one collapsed to a perplexity of 27 codes. "auto": exact up to ``K = 4096``
            codes, grouped above. The per-sample term is exact in every mode (the soft assignment
            factorises over channels because the codebook is a product set).
        seed: seed of the projections' initialisation (``None``: the global RNG).
        channel_first, check_finite: as in :class:`Quantizer`.

    Code ``k`` has bit ``i`` (channel ``i``, most significant first) set when channel ``i`` is
    positive; zero counts as negative. Code vectors are ``+-1`` in the binary space.
    """

    excluded_options = ("init_scale",)  # no codes to draw: they are the sign patterns

    # a registered buffer, declared for the type checker (nn.Module.__getattr__ is typed ``Tensor | Module``)
    _place: Tensor

    def __init__(self, dim: int, codebook_size: int, *, entropy_weight: float = 0.1, diversity_gamma: float = 1.0,
                 temperature: float = 0.01, beta: float = 0.25, entropy_mode: str = "auto", **options):
        super().__init__(dim, codebook_size, **options)
        if codebook_size & (codebook_size - 1):
            raise ValueError(f"lfq: codebook_size must be a power of two, got {codebook_size}")
        self.num_bits = int(math.log2(codebook_size))
        self.entropy_weight = check_float("entropy_weight", entropy_weight, low=0.0)
        self.diversity_gamma = check_float("diversity_gamma", diversity_gamma, low=0.0)
        # the bit logits 4 z / temperature are summed over the bits (exact batch entropy)
        self.temperature = check_divisor(
            "temperature",
            temperature,
            dividend=4 * self.num_bits * DATA_LIMIT,
            divides=f"4 x the latents summed over the {self.num_bits} bits (data-scaled: covered up to 2**64)",
        )
        self.beta = check_float("beta", beta, low=0.0)
        self.entropy_mode = check_choice("entropy_mode", entropy_mode, ENTROPY_MODES)
        self.register_buffer("_place", 2 ** torch.arange(self.num_bits - 1, -1, -1), persistent=False)
        self.project_in, self.project_out = projections(dim, self.num_bits, enabled=dim != self.num_bits, seed=self.seed)

    # -- entropy penalty --------------------------------------------------------------------------

    def bit_logits(self, z: Tensor) -> Tensor:
        """Logit of ``P(bit_i = 1 | z)``, ``(N, num_bits)``. The softmax over the product codebook
        factorises: the logit gap between ``+1`` and ``-1`` in channel i is
        ``((z+1)^2 - (z-1)^2) / tau = 4 z / tau``."""
        return 4 * z / self.temperature

    def _exact_mode(self) -> bool:
        return self.entropy_groups() == [self.num_bits]

    def entropy_groups(self) -> list[int]:
        """The bit counts of the groups whose batch entropies are summed (most significant first)."""
        mode = self.entropy_mode
        if mode == "auto":
            mode = "exact" if self.codebook_size <= EXACT_ENTROPY_MAX_CODES else "grouped"
        if mode == "exact":
            return [self.num_bits]
        if mode == "factorized":
            return [1] * self.num_bits
        count = math.ceil(self.num_bits / GROUP_MAX_BITS)
        return [self.num_bits // count + (i < self.num_bits % count) for i in range(count)]

    def entropy_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean per-sample entropy, batch entropy)`` of the soft assignment, nats, float32."""
        logits = self.bit_logits(z)
        per_sample = binary_entropy_from_logits(logits).sum(-1).mean()
        groups = self.entropy_groups()
        if max(groups) == 1:  # one-bit groups: each bit's binary entropy of its batch-mean probability, at once
            return per_sample, binary_entropy(torch.sigmoid(logits).mean(0)).sum()
        batch = logits.new_zeros(())
        for group in torch.split(logits, groups, dim=-1):
            # log q(c | z) = sum_i log P(bit_i = c_i | z) = sum_i log(1 - p_i) + sum_i c_i l_i, as
            # logsigmoid(l) - logsigmoid(-l) = l: one (N, bits) x (bits, 2^bits) product
            bits = all_sign_patterns(group.shape[-1], device=z.device).to(logits.dtype)
            log_probs = F.logsigmoid(-group).sum(-1, keepdim=True) + group @ bits.t()
            # exp below -80 would land in float32 denormals, which are many times slower to
            # produce; the clamp changes each probability by < 2e-35
            batch = batch + entropy(log_probs.clamp_min(-80.0).exp().mean(0))
        return per_sample, batch

    # -- Quantizer interface ----------------------------------------------------------------------

    def _signs(self, z: Tensor) -> Tensor:
        return torch.where(z > 0, 1.0, -1.0).to(z.dtype)

    def bits_to_codes(self, bits: Tensor) -> Tensor:
        return (bits.long() * self._place).sum(-1)

    def codes_to_signs(self, codes: Tensor) -> Tensor:
        bits = (codes.unsqueeze(-1) // self._place) % 2
        return bits.float() * 2 - 1

    def quantize(self, x: Tensor) -> FlatOutput:
        with fp32(x.device.type):
            z = linear_fp32(self.project_in, x)
            signs = self._signs(z).detach()
            per_sample, batch = self.entropy_terms(z)
            losses = {
                "commitment": commitment_losses(z, signs, beta=self.beta)["commitment"],
                "entropy": self.entropy_weight * (per_sample - self.diversity_gamma * batch),
            }
            quantized = linear_fp32(self.project_out, straight_through(z, signs))
        metrics = {"per_sample_entropy": per_sample.detach(), "batch_entropy": batch.detach()}
        return FlatOutput(quantized=quantized, codes=self.bits_to_codes(signs > 0), losses=losses, metrics=metrics)

    def encode_flat(self, x: Tensor) -> Tensor:
        with fp32(x.device.type):
            return self.bits_to_codes(linear_fp32(self.project_in, x) > 0)

    def decode_flat(self, codes: Tensor) -> Tensor:
        with fp32(codes.device.type):
            return linear_fp32(self.project_out, self.codes_to_signs(codes))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_bits={self.num_bits}, entropy_weight={self.entropy_weight}, "
            f"diversity_gamma={self.diversity_gamma}, temperature={self.temperature}, entropy_mode={self.entropy_mode!r}"
        )
