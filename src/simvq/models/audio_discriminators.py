"""Waveform discriminators for the speech codec, with hinge and feature-matching losses, as Vocos
(and WavTokenizer, whose recipe the official SimVQ audio code follows) trains its generator.

``MultiPeriodDiscriminator``      HiFi-GAN (Kong et al. 2020): the waveform folded into
                                  ``(S / p, p)`` for prime periods p, 2-D convs along time.
``MultiResolutionDiscriminator``  UnivNet (Jang et al. 2021): 2-D convs on magnitude spectrograms
                                  at three STFT resolutions.
``DACDiscriminator``              DAC (Kumar et al. 2023), as the official SimVQ audio recipe adds it
                                  beside the two above: its own multi-period discriminator and a
                                  multi-band discriminator on complex STFTs at three window sizes,
                                  each split into five frequency bands; trained with least-squares
                                  GAN losses and feature matching (``lsgan_*``, ``dac_feature_matching_loss``).
All return, per sub-discriminator, the logits and the feature maps (for feature matching);
``CodecDiscriminator`` runs the first two and holds the third when asked (``dac=True``).
Widths are scaled down by ``channels`` (HiFi-GAN's MPD is 32..1024 wide, ~41 M parameters; the
defaults here are 16..128) so they train beside a tiny codec on a CPU; ``channels=32,
max_channels=1024, resolution_channels=64`` are Vocos's (and the official recipe's) widths.
"""

from __future__ import annotations

from typing import cast

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
        # channels-last: oneDNN's 2-D convs over these few channels run ~35% faster so, forward and
        # backward (measured on one CPU thread, batch 16 x 1 s); the values are the same convolution's
        return _conv_stack(self.convs, self.out, x.contiguous(memory_format=torch.channels_last))


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
    every resolution (what the codec recipe trains against). ``max_channels`` caps the multi-period
    widths, ``resolution_channels`` (default ``channels``) sets the multi-resolution width. With
    ``dac``, ``self.dac`` holds a ``DACDiscriminator`` of width ``dac_channels``, trained with its own
    losses (``forward`` leaves it out); without, ``self.dac`` is None and the parameters are those of
    the two alone."""

    def __init__(self, *, channels: int = 16, max_channels: int = 128, resolution_channels: int | None = None,
                 dac: bool = False, dac_channels: int = 32):
        super().__init__()
        self.period = MultiPeriodDiscriminator(channels=channels, max_channels=max_channels)
        self.resolution = MultiResolutionDiscriminator(channels=channels if resolution_channels is None else resolution_channels)
        self.dac = DACDiscriminator(channels=dac_channels) if dac else None

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        period_logits, period_features = self.period(wav)
        resolution_logits, resolution_features = self.resolution(wav)
        return period_logits + resolution_logits, period_features + resolution_features


# ----------------------------------------------------------------------------- DAC's discriminator

DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))  # fractions of the STFT bins
DAC_FFT_SIZES = (2048, 1024, 512)


class BandDiscriminator(nn.Module):
    """DAC's ``MRD``: the complex STFT (real and imaginary parts as two channels; window ``n_fft``, hop
    ``n_fft // 4``, rectangular window and centred frames, as the official SimVQ code calls
    ``torch.stft``) split into frequency bands, a stack of 2-D convs per band (strided along
    frequency), the bands joined along frequency and one last conv to the logits."""

    window: Tensor

    def __init__(self, n_fft: int, *, channels: int = 32, bands=DAC_BANDS):
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        self.bands = tuple((int(low * bins), int(high * bins)) for low, high in bands)

        def stack() -> nn.ModuleList:
            return nn.ModuleList([
                _weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4))),
                _weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
                _weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
                _weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
                _weight_norm(nn.Conv2d(channels, channels, 3, padding=1)),
            ])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.out = _weight_norm(nn.Conv2d(channels, 1, 3, padding=1))
        self.register_buffer("window", torch.ones(n_fft), persistent=False)  # torch.stft's window=None, said explicitly

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spectrum = torch.stft(wav.squeeze(1).float(), self.n_fft, hop_length=self.n_fft // 4, window=self.window,
                                  return_complex=True, center=True)
        x = torch.view_as_real(spectrum).permute(0, 3, 2, 1)  # (B, 2, frames, bins)
        features, outputs = [], []
        for (low, high), convs in zip(self.bands, self.band_convs):
            band = x[..., low:high]
            for conv in cast(nn.ModuleList, convs):  # each entry is a stack() ModuleList
                band = F.leaky_relu(conv(band), 0.1)
                features.append(band)
            outputs.append(band)
        logits = self.out(torch.cat(outputs, dim=-1))
        return logits.flatten(1), features


class DACDiscriminator(nn.Module):
    """DAC's discriminator as the official SimVQ audio recipe uses it: multi-period discriminators
    (DAC's widths ``channels .. 32 x channels``: 32..1024 by default) and multi-band STFT
    discriminators at ``fft_sizes``, on audio with its DC offset removed and peak-normalised to 0.8.
    ``wav -> (logits per sub-discriminator, feature maps per sub-discriminator)``; the feature maps
    leave out the logits, as DAC's feature matching does."""

    def __init__(self, *, channels: int = 32, periods=MPD_PERIODS, fft_sizes=DAC_FFT_SIZES, bands=DAC_BANDS):
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(p, channels=channels, max_channels=32 * channels) for p in periods)
        self.bands = nn.ModuleList(BandDiscriminator(n, channels=channels, bands=bands) for n in fft_sizes)

    @staticmethod
    def preprocess(wav: Tensor) -> Tensor:
        wav = wav - wav.mean(dim=-1, keepdim=True)
        return 0.8 * wav / (wav.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        wav = self.preprocess(wav)
        logits, features = [], []
        for discriminator in [*self.periods, *self.bands]:
            out, maps = discriminator(wav)
            logits.append(out)
            features.append(maps[:-1] if isinstance(discriminator, PeriodDiscriminator) else maps)
        return logits, features


def lsgan_discriminator_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
    """DAC's: ``sum over sub-discriminators of mean (1 - D(x))^2 + mean D(G(z))^2`` (pass the fake detached)."""
    return torch.stack([(1 - r).pow(2).mean() + f.pow(2).mean() for r, f in zip(real_logits, fake_logits)]).sum()


def lsgan_generator_loss(fake_logits: list[Tensor]) -> Tensor:
    """DAC's: ``sum over sub-discriminators of mean (1 - D(G(z)))^2``."""
    return torch.stack([(1 - f).pow(2).mean() for f in fake_logits]).sum()


def dac_feature_matching_loss(real_features: list[list[Tensor]], fake_features: list[list[Tensor]]) -> Tensor:
    """DAC's: the mean L1 of every feature map (real ones as constants), summed over layers and sub-discriminators."""
    return torch.stack([F.l1_loss(f, r.detach()) for rs, fs in zip(real_features, fake_features) for r, f in zip(rs, fs)]).sum()


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
    "BandDiscriminator",
    "CodecDiscriminator",
    "DACDiscriminator",
    "DAC_BANDS",
    "DAC_FFT_SIZES",
    "MPD_PERIODS",
    "MRD_RESOLUTIONS",
    "MultiPeriodDiscriminator",
    "MultiResolutionDiscriminator",
    "dac_feature_matching_loss",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_loss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
]
