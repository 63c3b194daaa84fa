"""Waveform discriminators for the speech codec, with hinge and feature-matching losses, as Vocos
(and WavTokenizer, whose recipe the official SimVQ audio code follows) trains its generator.

``MultiPeriodDiscriminator``      HiFi-GAN (Kong et al. 2020): the waveform folded into
                                  ``(S / p, p)`` for prime periods p, 2-D convs along time.
``MultiResolutionDiscriminator``  UnivNet (Jang et al. 2021): 2-D convs on magnitude spectrograms
                                  at three STFT resolutions.
Both return, per sub-discriminator, the logits and the feature maps (for feature matching);
``CodecDiscriminator`` runs both.
Widths are scaled down by ``channels`` (HiFi-GAN's MPD is 32..1024 wide, ~41 M parameters; the
defaults here are 16..128) so they train beside a tiny codec on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spectral import stft_magnitude

MPD_PERIODS = (2, 3, 5, 7, 11)
MRD_RESOLUTIONS = ((2048, 512, 2048), (1024, 256, 1024), (512, 128, 512))  # (n_fft, hop, window), Vocos's


def _weight_norm(module: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.weight_norm(module)


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, *, channels: int = 16, max_channels: int = 128):
        super().__init__()
        self.period = period
        widths = [1] + [min(channels * 4**i, max_channels) for i in range(4)]
        self.convs = nn.ModuleList(
            _weight_norm(nn.Conv2d(a, b, (5, 1), stride=(3, 1), padding=(2, 0))) for a, b in zip(widths[:-1], widths[1:])
        )
        self.convs.append(_weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0))))
        self.out = _weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        batch, _, length = wav.shape
        x = F.pad(wav, (0, (-length) % self.period), mode="reflect" if length > 1 else "constant")
        x = x.view(batch, 1, -1, self.period)
        return _conv_stack(self.convs, self.out, x)


def _conv_stack(convs: nn.ModuleList, out: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """``(flat logits, every layer's output)``: both discriminators keep each feature map for the
    feature-matching loss."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    x = out(x)
    features.append(x)
    return x.flatten(1), features


class ResolutionDiscriminator(nn.Module):
    def __init__(self, resolution: tuple[int, int, int], *, channels: int = 16):
        super().__init__()
        self.resolution = resolution
        self.convs = nn.ModuleList([
            _weight_norm(nn.Conv2d(1, channels, (7, 5), padding=(3, 2))),
            _weight_norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            _weight_norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            _weight_norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            _weight_norm(nn.Conv2d(channels, channels, 3, padding=1)),
        ])
        self.out = _weight_norm(nn.Conv2d(channels, 1, 3, padding=1))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        n_fft, hop, window = self.resolution
        x = stft_magnitude(wav, n_fft, hop, window).unsqueeze(1)  # (B, 1, freq, frames)
        return _conv_stack(self.convs, self.out, x)


class MultiPeriodDiscriminator(nn.Module):
    """``wav (B, 1, S) -> (logits per period, feature maps per period)``."""

    def __init__(self, periods=MPD_PERIODS, *, channels: int = 16, max_channels: int = 128):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels=channels, max_channels=max_channels) for p in periods)

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outputs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


class MultiResolutionDiscriminator(nn.Module):
    """``wav (B, 1, S) -> (logits per resolution, feature maps per resolution)``."""

    def __init__(self, resolutions=MRD_RESOLUTIONS, *, channels: int = 16):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(tuple(r), channels=channels) for r in resolutions)

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outputs = [d(wav) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


class CodecDiscriminator(nn.Module):
    """Both waveform discriminators as one: ``wav -> (logits, feature maps)`` of every period and
    every resolution (what the codec recipe trains against)."""

    def __init__(self, *, channels: int = 16):
        super().__init__()
        self.period = MultiPeriodDiscriminator(channels=channels)
        self.resolution = MultiResolutionDiscriminator(channels=channels)

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        period_logits, period_features = self.period(wav)
        resolution_logits, resolution_features = self.resolution(wav)
        return period_logits + resolution_logits, period_features + resolution_features


def discriminator_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
    """Hinge loss, averaged over sub-discriminators (pass the fake waveform detached)."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)]
    return torch.stack(terms).mean()


def generator_loss(fake_logits: list[Tensor]) -> Tensor:
    """Hinge generator loss ``mean relu(1 - D(G(z)))``, averaged over sub-discriminators."""
    return torch.stack([F.relu(1 - f).mean() for f in fake_logits]).mean()


def feature_matching_loss(real_features: list[list[Tensor]], fake_features: list[list[Tensor]]) -> Tensor:
    """Mean L1 between the discriminators' feature maps of real (treated as constants) and
    generated audio (Larsen et al. 2016; MelGAN), averaged over layers and sub-discriminators."""
    terms = [F.l1_loss(f, r.detach()) for rs, fs in zip(real_features, fake_features) for r, f in zip(rs, fs)]
    return torch.stack(terms).mean()


__all__ = [
    "CodecDiscriminator",
    "MPD_PERIODS",
    "MRD_RESOLUTIONS",
    "MultiPeriodDiscriminator",
    "MultiResolutionDiscriminator",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_loss",
]
