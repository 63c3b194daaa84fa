"""The codebook VQ family: a learnable ``(K, dim)`` table searched by nearest neighbour.

``vq``: VQ-VAE (van den Oord et al. 2017), straight-through, ``codebook + beta * commitment`` loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import CodebookQuantizer
from .registry import register_quantizer


@register_quantizer("vq")
class VQ(CodebookQuantizer):
    """Plain VQ-VAE codebook trained by the codebook loss.

    Args:
        dim, codebook_size: code dimension and number of codes.
        beta: commitment weight (0.25, VQ-VAE's default).
        init_scale: codes start as ``N(0, init_scale**2)``; default ``dim**-0.5`` (unit-norm rows,
            the same scale as SimVQ's frozen basis so the two start from the same picture).
        seed: seed of the initial codebook.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        beta: float = 0.25,
        init_scale: float | None = None,
        seed: int | None = None,
        rotation_trick: bool = False,
        chunk_size: int | None = None,
        channel_first: bool = False,
        check_finite: bool = True,
    ):
        super().__init__(
            dim,
            codebook_size,
            beta=beta,
            rotation_trick=rotation_trick,
            chunk_size=chunk_size,
            channel_first=channel_first,
            check_finite=check_finite,
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        scale = init_scale if init_scale is not None else dim**-0.5
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim, generator=generator) * scale)

    def codebook(self) -> Tensor:
        return self.embedding
