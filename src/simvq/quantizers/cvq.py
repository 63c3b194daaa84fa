"""CVQ-VAE (Zheng & Vedaldi 2023, "Online Clustered Codebook"): codes that are rarely chosen are
pulled towards anchors sampled from the current encoder features, at a rate that decays with the
code's running average usage. Faithful to the official ``VectorQuantiser`` (lyndonzheng/CVQ-VAE):
cosine search, usage EMA decay 0.99, ``alpha = exp(-10 K p / (1 - 0.99) - 1e-3)``, closest-feature
anchors, optional contrastive term with temperature 0.07.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..search import nearest
from .base import (
    CodebookQuantizer,
    FlatOutput,
    fp32,
    register_training_stream,
    uniform_codebook,
)
from .codebook_updates import all_reduce_sum_, broadcast_, ema_, sample_rows_when
from .options import DATA_LIMIT, check_bool, check_choice, check_decay, check_divisor
from .registry import register_quantizer

DISTANCES = ("cos", "l2")
ANCHORS = ("closest", "random")


@register_quantizer("cvq")
class CVQ(CodebookQuantizer):
    """Online clustered codebook.

    Args:
        dim, codebook_size: latent dimension and number of codes.
        distance: "cos" (official default: nearest by cosine similarity, the code vector itself
            stays unnormalised) or "l2".
        anchor: "closest" (each code's anchor is the batch feature nearest to it, the paper's best
            variant) or "random" (uniform random batch features; a simplification of the official
            feature pool, which keeps a history of features).
        usage_decay: decay of the running average usage ``p`` (0.99, official).
        contrastive: add the official contrastive term (costs an ``(N, K)`` similarity matrix).
        temperature: temperature of that term (0.07, official); at least ``2 / 2**127`` with
            ``distance="cos"`` and ``2**64 / 2**127`` with "l2" (see ``options.check_divisor``).
        init_scale: codes start uniform in ``[-init_scale, init_scale]``; default ``1/K`` (official).
        beta, seed, channel_first, rotation_trick, chunk_size, check_finite: as in
            :class:`CodebookQuantizer` (``beta`` 0.25, as the official configs).

    Under DDP the usage counts are summed over processes and the anchors are rank 0's (one
    broadcast), so every process applies the same update.
    """

    # registered buffers, declared for the type checker (nn.Module.__getattr__ is typed ``Tensor | Module``)
    usage: Tensor
    training_rng_state: Tensor | None

    def __init__(self, dim: int, codebook_size: int, *, distance: str = "cos", anchor: str = "closest",
                 usage_decay: float = 0.99, contrastive: bool = False, temperature: float = 0.07, **options):
        super().__init__(dim, codebook_size, **options)
        self.distance = check_choice("distance", distance, DISTANCES)
        self.anchor = check_choice("anchor", anchor, ANCHORS)
        self.usage_decay = check_decay("usage_decay", usage_decay)
        self.contrastive = check_bool("contrastive", contrastive)
        # the contrastive logits are similarity / temperature and the cross-entropy takes their
        # differences: cosines differ by at most 2, (minus) squared distances scale with the data
        if self.distance == "cos":
            dividend, divides = 2.0, "differences of cosine similarities"
        else:
            dividend, divides = DATA_LIMIT, "squared distances (data-scaled: covered up to 2**64)"
        self.temperature = check_divisor("temperature", temperature, dividend=dividend, divides=divides)
        register_training_stream(self, self.seed)
        bound = self.init_scale if self.init_scale is not None else 1.0 / codebook_size
        self.embedding = nn.Parameter(uniform_codebook(codebook_size, dim, bound=bound, seed=self.seed))
        # running average of each code's share of the tokens (sums to ~1); resumes with the model
        self.register_buffer("usage", torch.zeros(codebook_size))

    def codebook(self) -> Tensor:
        return self.embedding

    def _search_space(self, t: Tensor) -> Tensor:
        return F.normalize(t.detach().float(), dim=-1) if self.distance == "cos" else t.detach()

    def search(self, x: Tensor, *, checked: bool = False) -> Tensor:
        # return_distances=False: the indices alone (nearest's return type does not say so)
        return cast(Tensor, nearest(
            self._search_space(x), self._search_space(self.embedding), chunk_size=self.chunk_size, return_distances=False, x_checked=checked
        ))

    def quantize(self, x: Tensor) -> FlatOutput:
        result = super().quantize(x)  # search, losses and straight-through against the codes as searched
        if self.training:
            if self.contrastive:
                with fp32(x.device.type):
                    result.losses["contrastive"] = self._contrastive_loss(x)
            self._reanchor(x.detach(), result.codes)
        return result

    @torch.no_grad()
    def _reanchor(self, x: Tensor, codes: Tensor) -> None:
        """``e <- (1 - alpha) e + alpha anchor`` with ``alpha = exp(-10 K p / (1 - decay) - 1e-3)``:
        alpha ~ 1 for a code nobody uses, ~0 as soon as a code takes a noticeable share."""
        counts = all_reduce_sum_(torch.bincount(codes, minlength=self.codebook_size).float())
        ema_(self.usage, counts / counts.sum().clamp_min(1.0), self.usage_decay)
        if self.anchor == "closest":
            # nearest feature to each code: the same search with the roles swapped
            feature_index, _ = nearest(self._search_space(self.embedding), self._search_space(x), chunk_size=self.chunk_size)
            anchors = broadcast_(x.float()[feature_index].contiguous())
        else:
            anchors = sample_rows_when(torch.tensor(True), x, self.codebook_size, stream=self.training_rng_state)
        alpha = torch.exp(-(self.usage * self.codebook_size * 10.0) / (1.0 - self.usage_decay) - 1e-3)[:, None]
        self.embedding.data.mul_(1.0 - alpha).add_(alpha * anchors)

    def _similarity(self, x: Tensor) -> Tensor:
        """``(N, K)`` similarity with a graph to the codes: cosine, or minus the squared distance."""
        codebook = self.embedding.float()
        features = x.detach().float()
        if self.distance == "cos":
            return F.normalize(features, dim=-1) @ F.normalize(codebook, dim=-1).t()
        return -torch.cdist(features, codebook).pow(2)

    def _contrastive_loss(self, x: Tensor) -> Tensor:
        """Official term: for each code, the mean similarity of its N/K most similar features is the
        positive, its N/2 least similar features the negatives; InfoNCE at temperature 0.07."""
        similarity = self._similarity(x)  # (N, K)
        num_tokens = similarity.shape[0]
        positive = similarity.topk(max(1, num_tokens // self.codebook_size), dim=0).values.mean(0, keepdim=True)
        negative = similarity.topk(max(1, num_tokens // 2), dim=0, largest=False).values
        logits = torch.cat([positive, negative], dim=0).t() / self.temperature  # (K, 1 + N/2)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, beta={self.beta}, distance={self.distance!r}, anchor={self.anchor!r}, "
            f"usage_decay={self.usage_decay}, contrastive={self.contrastive}"
        )
