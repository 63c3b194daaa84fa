"""vector-quantize-pytorch's ``VectorQuantize`` interface (lucidrains), with a simvq quantizer inside.

    vq = VectorQuantize(dim=256, codebook_size=512)          # quantizer="simvq" by default
    quantized, indices, loss = vq(x)                          # x: (B, N, 256) -> (B, N, 256), (B, N), ()
    vq.get_output_from_indices(indices)                       # == quantized in eval mode

Layouts as in ``VectorQuantize``: channel-last ``(B, ..., dim)`` by default (``(B, dim)`` is one
token per sample); ``channel_last=False`` takes ``(B, dim, N)``; ``accept_image_fmap=True`` takes
``(B, dim, H, W)`` and returns indices ``(B, H, W)``; ``accept_3d_fmap=True`` ``(B, dim, D, H, W)``.
``mask``/``lens`` mark the valid tokens of padded sequences ``(B, N)``: padding gets zeros and index
``-1``, and the quantizer (its loss, usage, EMA or k-means statistics) sees only valid tokens.
Multi-stage quantizers (``residual``, ``residual_simvq``, ``qinco``) give one index per stage,
``(..., num_quantizers)``, as vector-quantize-pytorch's ``ResidualVQ`` does (the loss stays one
scalar, the stages' terms summed, where ``ResidualVQ`` returns one per stage).

``get_codes_from_indices`` equals ``get_output_from_indices``: simvq's ``decode`` returns vectors
in the input space (any projection included), as ``VectorQuantize`` does without ``codebook_dim``.
The loss is the quantizer's (computed in eval mode too, where ``VectorQuantize`` returns 0). In eval
mode, with no gradient able to reach ``x``, ``quantized`` is the looked-up codes bit for bit, as in
``VectorQuantize``. Peer options without a simvq counterpart (``heads``, ``decay``, ...) are not
accepted; pass the wrapped quantizer's own (``ema_decay`` for ``quantizer="vq_ema"``, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..quantizers import Quantizer
from ._common import build_wrapped, quantize


class VectorQuantize(nn.Module):
    """A simvq quantizer with vector-quantize-pytorch's ``VectorQuantize`` interface.

    Args:
        dim, codebook_size: as in ``VectorQuantize``.
        codebook_dim: passed on as the quantizer's ``codebook_dim`` (the ``vq`` family's
            factorised codes); quantizers without the option refuse it.
        quantizer: a registered name (``"simvq"``) or a built channel-last :class:`Quantizer`.
        channel_last, accept_image_fmap, accept_3d_fmap: input layouts, as in ``VectorQuantize``.
        **options: the registered quantizer's options (``seed=0``, ``beta=0.25``, ...).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        *,
        quantizer: str | Quantizer = "simvq",
        channel_last: bool = True,
        accept_image_fmap: bool = False,
        accept_3d_fmap: bool = False,
        **options,
    ):
        super().__init__()
        if accept_image_fmap and accept_3d_fmap:
            raise ValueError("VectorQuantize: accept_image_fmap and accept_3d_fmap exclude each other")
        if codebook_dim is not None:
            options["codebook_dim"] = codebook_dim
        self.quantizer = build_wrapped(
            quantizer, dim=dim, codebook_size=codebook_size, options=options, channel_first=False, adapter="VectorQuantize"
        )
        self.dim = dim
        self.codebook_size = self.quantizer.codebook_size
        self.channel_last = channel_last
        self.accept_image_fmap = accept_image_fmap
        self.accept_3d_fmap = accept_3d_fmap

    @property
    def _channel_first(self) -> bool:
        return not self.channel_last or self.accept_image_fmap or self.accept_3d_fmap

    def _to_channel_last(self, x: Tensor) -> Tensor:
        if self.accept_image_fmap and x.ndim != 4:
            raise ValueError(f"VectorQuantize: accept_image_fmap takes (B, dim, H, W), got shape {tuple(x.shape)}")
        if self.accept_3d_fmap and x.ndim != 5:
            raise ValueError(f"VectorQuantize: accept_3d_fmap takes (B, dim, D, H, W), got shape {tuple(x.shape)}")
        return x.movedim(1, -1) if self._channel_first and x.ndim > 2 else x

    def _from_channel_last(self, x: Tensor) -> Tensor:
        return x.movedim(-1, 1) if self._channel_first and x.ndim > 2 else x

    def forward(self, x: Tensor, mask: Tensor | None = None, lens: Tensor | None = None):
        """``(quantized, indices, loss)``: ``quantized`` in ``x``'s layout and dtype, int64
        ``indices`` (``-1`` at padding), scalar ``loss``."""
        x_last = self._to_channel_last(x)
        if mask is None and lens is None:
            out = quantize(self, self.quantizer, x_last)
            return self._from_channel_last(out.quantized), out.codes, out.loss
        if mask is not None and lens is not None:
            raise ValueError("VectorQuantize: give mask or lens, not both")
        if x_last.ndim != 3 or self.accept_image_fmap or self.accept_3d_fmap:
            raise ValueError("VectorQuantize: mask and lens are for sequences (B, N, dim) (or (B, dim, N))")
        batch, length = x_last.shape[:2]
        if lens is not None:
            mask = torch.arange(length, device=x.device) < lens.reshape(-1, 1)
        if mask.dtype != torch.bool or tuple(mask.shape) != (batch, length):
            raise ValueError(f"VectorQuantize: mask must be a bool tensor of shape {(batch, length)}, got {mask.dtype} {tuple(mask.shape)}")
        # the quantizer's own padding mask: it sees the valid tokens only; zeros and -1 at padding
        out = quantize(self, self.quantizer, x_last, mask=mask)
        return self._from_channel_last(out.quantized), out.codes, out.loss

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Code vectors of ``indices``, in the forward's layout (channels at dim 1 for channel-first
        layouts): ``(B, N) -> (B, N, dim)``, ``(B, H, W) -> (B, dim, H, W)`` with ``accept_image_fmap``."""
        return self._from_channel_last(self.quantizer.decode(indices))

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """The same vectors as ``get_output_from_indices`` (see the module docstring)."""
        return self.get_output_from_indices(indices)

    @property
    def codebook(self) -> Tensor:
        """``(codebook_size, dim)``: every code's vector (one-index quantizers only)."""
        if self.quantizer.code_ndim != 0:
            raise TypeError("VectorQuantize.codebook: a multi-stage quantizer has no single table; decode per stage")
        device = next((t.device for t in self.quantizer.state_dict().values()), torch.device("cpu"))
        with torch.no_grad():
            return self.quantizer.decode(torch.arange(self.codebook_size, device=device))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, channel_last={self.channel_last}, "
            f"accept_image_fmap={self.accept_image_fmap}, accept_3d_fmap={self.accept_3d_fmap}"
        )


__all__ = ["VectorQuantize"]
