"""taming-transformers' ``VectorQuantizer2`` interface (VQGAN; diffusers' ``VQModel.quantize`` too).

taming (``taming/modules/vqvae/quantize.py``) and diffusers (``models/autoencoders/vae.py``,
``VectorQuantizer``) share one class and one calling convention, which this adapter keeps:

    quantize = VectorQuantizer2(n_e, e_dim, beta=0.25, sane_index_shape=False)
    z_q, loss, (perplexity, min_encodings, indices) = quantize(z)    # z: (B, e_dim, H, W)
    z_q = quantize.get_codebook_entry(indices, shape=(B, H, W, e_dim))  # -> (B, e_dim, H, W)

``z_q`` is channel-first and contiguous like ``z``; ``loss`` a scalar to add to the task loss;
``indices`` int64, flat ``(B*H*W,)`` (``(B, H, W)`` with ``sane_index_shape=True``);
``min_encodings`` is ``None`` as in ``VectorQuantizer2``; ``perplexity`` is the batch's (taming's
``VectorQuantizer2`` returns ``None`` there). ``get_codebook_entry(indices, None)`` gives the flat
``(N, e_dim)`` vectors. Inputs with more spatial axes (``(B, C, T, H, W)``) work the same way.

Differences, on purpose: ``remap`` (a .npy of used indices) is not supported, and neither is
``legacy=True`` (taming's default, which weights the codebook term by ``beta`` instead of the
commitment term): the loss is the wrapped quantizer's own (``beta * commitment + codebook`` for
the codebook methods, equal in value to either taming convention, with VQ-VAE's gradients).
There is no ``embedding`` ``nn.Embedding``: SimVQ's codebook is ``W(C)``; use ``.quantizer``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..quantizers import Quantizer
from ..quantizers.registry import one_index_per_token
from ._common import accepts_option, build_wrapped, quantize

TAMING_BETA = 0.25  # taming's and diffusers' VQModel both build their quantizer with beta=0.25


class VectorQuantizer2(nn.Module):
    """A simvq quantizer with taming's ``VectorQuantizer2`` interface.

    Args:
        n_e: number of codes (``codebook_size``).
        e_dim: channels of ``z`` (``dim``).
        beta: commitment weight, passed to the quantizer when it takes one; a quantizer without
            one (fsq, lfq, ...) accepts only taming's default 0.25, which it then ignores.
        remap, unknown_index: taming's index remapping; only ``remap=None`` is supported.
        sane_index_shape: indices ``(B, H, W)`` instead of flat ``(B*H*W,)``.
        legacy: only ``False`` (see the module docstring).
        quantizer: a registered name (``"simvq"``) or a built channel-first :class:`Quantizer`.
        **options: the registered quantizer's options (``seed=0``, ``rotation_trick=True``, ...).
    """

    def __init__(
        self,
        n_e: int,
        e_dim: int,
        beta: float = TAMING_BETA,
        remap=None,
        unknown_index: str = "random",
        sane_index_shape: bool = False,
        legacy: bool = False,
        *,
        quantizer: str | Quantizer = "simvq",
        **options,
    ):
        super().__init__()
        if remap is not None:
            raise ValueError("VectorQuantizer2: remap is not supported; every code of the quantizer is used as is")
        if legacy:
            raise ValueError(
                "VectorQuantizer2: legacy=True (beta on the codebook term) is not supported; "
                "the loss is the quantizer's own beta * commitment + codebook (taming's legacy=False)"
            )
        if isinstance(quantizer, str):
            if not one_index_per_token(quantizer):
                raise ValueError(
                    f"VectorQuantizer2: {quantizer!r} does not give one index per position; "
                    "taming's interface carries one index per (b, h, w)"
                )
            if accepts_option(quantizer, "beta"):
                options.setdefault("beta", beta)
            elif beta != TAMING_BETA:
                raise ValueError(f"VectorQuantizer2: {quantizer!r} has no commitment weight; beta={beta} would be ignored")
        elif quantizer.code_ndim != 0:
            raise ValueError("VectorQuantizer2: the quantizer must give one index per position")
        self.quantizer = build_wrapped(
            quantizer, dim=e_dim, codebook_size=n_e, options=options, channel_first=True, adapter="VectorQuantizer2"
        )
        # taming's attribute names, read by code around the quantizer
        self.n_e = self.re_embed = n_e
        self.e_dim = self.vq_embed_dim = e_dim
        self.beta = beta
        self.remap = None
        self.unknown_index = unknown_index
        self.sane_index_shape = sane_index_shape
        self.legacy = legacy
        # detached losses and metrics of the last forward, for logging
        self.last_losses: dict[str, Tensor] = {}
        self.last_metrics: dict[str, Tensor] = {}

    def forward(self, z: Tensor, temp=None, rescale_logits: bool = False, return_logits: bool = False):
        # the keywords exist in taming for interface compatibility with its Gumbel quantizer
        if not (temp is None or temp == 1.0) or rescale_logits or return_logits:
            raise ValueError("VectorQuantizer2: temp, rescale_logits and return_logits are only for taming's Gumbel quantizer")
        if z.ndim < 3:
            raise ValueError(f"VectorQuantizer2: z must be channel-first (B, C, H, W), got shape {tuple(z.shape)}")
        out = quantize(self, self.quantizer, z)
        self.last_losses = {name: value.detach() for name, value in out.losses.items()}
        self.last_metrics = dict(out.metrics)
        indices = out.codes if self.sane_index_shape else out.codes.reshape(-1)
        return out.quantized.contiguous(), out.loss, (out.metrics["perplexity"], None, indices)

    def get_codebook_entry(self, indices: Tensor, shape) -> Tensor:
        """Code vectors of ``indices`` (any shape, ``B*H*W`` values): ``(B, C, H, W)`` for
        ``shape=(B, H, W, C)``, flat ``(N, C)`` for ``shape=None``."""
        flat = self.quantizer.decode(indices.reshape(-1))  # (N, C): no spatial axes to move
        if shape is None:
            return flat
        return flat.view(*shape).movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        return f"n_e={self.n_e}, e_dim={self.e_dim}, beta={self.beta}, sane_index_shape={self.sane_index_shape}"


VectorQuantizer = VectorQuantizer2  # diffusers' name for the same class

__all__ = ["VectorQuantizer", "VectorQuantizer2"]
