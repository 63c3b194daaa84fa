"""PatchGAN discriminator (Isola et al. 2017, pix2pix) as used by VQGAN, with hinge losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """Per-patch real/fake logits ``(B, 1, h, w)`` for images ``(B, C, H, W)`` in ``[0, 1]``.

    ``layers`` stride-2 conv blocks (GroupNorm instead of BatchNorm, so it behaves the same at any
    batch size and under DDP without SyncBatchNorm).
    """

    def __init__(self, in_channels: int = 3, *, channels: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers):
            out = channels * min(2**i, 8)
            blocks += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.GroupNorm(min(32, out), out), nn.LeakyReLU(0.2)]
            width = out
        blocks += [nn.Conv2d(width, 1, 3, padding=1)]
        self.layers = nn.Sequential(*blocks)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images * 2 - 1)


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()
