"""VQGAN-style convolutional autoencoder (Esser et al. 2021, taming-transformers) with any
registered quantizer in the bottleneck.

    images (B, C, H, W) in [0, 1] -> encoder -> z (B, h, w, dim) -> quantizer -> decoder -> images

``h = H / 2**downsamplings``. Widths per level are ``channels * channel_multipliers[level]``; each
level holds ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3x3 convs), and ``mid_blocks`` more
sit at the latent resolution (the encoder's end, the decoder's start). No attention blocks: with
``channels=128, channel_multipliers=(1, 2, 2, 4), downsamplings=3, num_res_blocks=2, mid_blocks=2,
norm_groups=32`` the stacks have the widths and depths of Open-MAGVIT2's encoder and decoder, the
official SimVQ image tokenizer's (its resampling layers differ: 4x4 strided convs and nearest
upsampling + conv here, 3x3 strided convs and conv + depth-to-space there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..quantizers import build_quantizer

# ----------------------------------------------------------------------------- blocks


def norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            norm(in_channels, groups),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            norm(out_channels, groups),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def level_widths(channels: int, channel_multipliers, downsamplings: int) -> list[int]:
    multipliers = tuple(channel_multipliers)
    if len(multipliers) != downsamplings + 1:
        raise ValueError(
            f"channel_multipliers needs one entry per level (downsamplings + 1 = {downsamplings + 1}), "
            f"got {multipliers}"
        )
    return [channels * m for m in multipliers]


def _add_levels(layers: list[nn.Module], widths: list[int], width: int, *, num_res_blocks: int, groups: int, resample) -> int:
    """Append the per-level stack shared by encoder and decoder (residual blocks, then a width
    change and ``resample`` between levels); returns the final width."""
    for level, level_width in enumerate(widths):
        for _ in range(num_res_blocks):
            layers.append(ResBlock(width, level_width, groups=groups))
            width = level_width
        if level < len(widths) - 1:
            if width != widths[level + 1] and num_res_blocks == 0:
                layers.append(nn.Conv2d(width, widths[level + 1], 1))
                width = widths[level + 1]
            layers.append(resample(width))
    return width


def mid_block_count(num_res_blocks: int, mid_blocks: int | None) -> int:
    """Residual blocks at the latent resolution: ``mid_blocks``, by default 1 (none without ``num_res_blocks``)."""
    if mid_blocks is None:
        return 1 if num_res_blocks else 0
    if isinstance(mid_blocks, bool) or not isinstance(mid_blocks, int) or mid_blocks < 0:
        raise ValueError(f"mid_blocks must be a non-negative integer or None, got {mid_blocks!r}")
    return mid_blocks


class Encoder(nn.Module):
    def __init__(self, *, in_channels, channels, channel_multipliers, downsamplings, num_res_blocks, groups, dim, mid_blocks=None):
        super().__init__()
        widths = level_widths(channels, channel_multipliers, downsamplings)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        width = widths[0]
        width = _add_levels(layers, widths, width, num_res_blocks=num_res_blocks, groups=groups, resample=Downsample)
        layers += [ResBlock(width, width, groups=groups) for _ in range(mid_block_count(num_res_blocks, mid_blocks))]
        layers += [norm(width, groups), nn.SiLU(), nn.Conv2d(width, dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    def __init__(self, *, out_channels, channels, channel_multipliers, downsamplings, num_res_blocks, groups, dim, mid_blocks=None):
        super().__init__()
        widths = level_widths(channels, channel_multipliers, downsamplings)[::-1]
        width = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(dim, width, 3, padding=1)]
        layers += [ResBlock(width, width, groups=groups) for _ in range(mid_block_count(num_res_blocks, mid_blocks))]
        width = _add_levels(layers, widths, width, num_res_blocks=num_res_blocks, groups=groups, resample=Upsample)
        layers += [norm(width, groups), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


# ----------------------------------------------------------------------------- the tokenizer model


class ImageAutoencoder(nn.Module):
    """Encoder, quantizer, decoder. Images are ``(B, C, H, W)`` in ``[0, 1]``; H and W must be
    multiples of ``2**downsamplings``.

    Args:
        quantizer: registered name (``simvq.list_quantizers()``).
        codebook_size: number of codes K.
        quantizer_options: extra keyword options for ``build_quantizer`` (only those given are passed,
            since not every quantizer takes ``seed`` or ``beta``).
        in_channels: 1 (grayscale) or 3 (RGB).
        channels, channel_multipliers, downsamplings, num_res_blocks, norm_groups: the conv stacks.
        dim: latent (code) dimension.
        mid_blocks: residual blocks at the latent resolution; None: 1 (0 when ``num_res_blocks`` is 0).
    """

    def __init__(
        self,
        *,
        quantizer: str = "simvq",
        codebook_size: int = 8192,
        quantizer_options: dict | None = None,
        in_channels: int = 3,
        channels: int = 64,
        channel_multipliers=(1, 2, 2),
        downsamplings: int = 2,
        num_res_blocks: int = 1,
        norm_groups: int = 8,
        dim: int = 64,
        mid_blocks: int | None = None,
    ):
        super().__init__()
        stack = dict(
            channels=channels,
            channel_multipliers=channel_multipliers,
            downsamplings=downsamplings,
            num_res_blocks=num_res_blocks,
            groups=norm_groups,
            dim=dim,
            mid_blocks=mid_blocks,
        )
        self.in_channels = in_channels
        self.downsamplings = downsamplings
        self.encoder = Encoder(in_channels=in_channels, **stack)
        self.decoder = Decoder(out_channels=in_channels, **stack)
        self.quantizer = build_quantizer(quantizer, dim=dim, codebook_size=codebook_size, **(quantizer_options or {}))

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor (B, C, H, W) in [0, 1], got {type(images).__name__}"
                            + (f" of dtype {images.dtype}" if isinstance(images, Tensor) else ""))
        factor = 2**self.downsamplings
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, H, W) ({self.in_channels} channel(s)), got {tuple(images.shape)}"
            )
        if images.shape[2] % factor or images.shape[3] % factor:
            raise ValueError(f"image height and width must be multiples of {factor}, got {tuple(images.shape[2:])}")

    def encode_latents(self, images: Tensor) -> Tensor:
        """Continuous latents ``(B, h, w, dim)`` before quantization."""
        self._check_images(images)
        return rearrange(self.encoder(images * 2 - 1), "b d h w -> b h w d")

    def decode_latents(self, quantized: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` (roughly in [0, 1], not clamped) from quantized ``(B, h, w, dim)``."""
        return (self.decoder(rearrange(quantized, "b h w d -> b d h w")) + 1) / 2

    def forward(self, images: Tensor):
        """``(reconstruction (B, C, H, W), QuantizerOutput)``."""
        out = self.quantizer(self.encode_latents(images))
        return self.decode_latents(out.quantized), out

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Codes ``(B, h, w)`` (``(B, h, w, stages)`` for multi-stage quantizers)."""
        return self.quantizer.encode(self.encode_latents(images))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in ``[0, 1]`` from codes."""
        return self.decode_latents(self.quantizer.decode(codes)).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """``decode(encode(images))``. A quantizer whose codes need more than the indices to decode
        (it names those outputs in ``decode_inputs``, e.g. sc_vae's coefficients) is run forward
        instead, which gives the same values in eval mode."""
        if self.quantizer.decode_inputs:
            reconstruction, _ = self(images)
            return reconstruction.clamp(0, 1)
        return self.decode(self.encode(images))
