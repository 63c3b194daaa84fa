"""Reconstruction losses of the speech codec: log-mel L1 and multi-resolution STFT.

``mel``   L1 between log-mel spectrograms (HiFi-GAN, Kong et al. 2020; Vocos): what the ear
          weights, fine at low frequencies.
``stft``  multi-resolution STFT loss (Yamamoto et al. 2020, Parallel WaveGAN): spectral
          convergence + L1 of log magnitudes at several window sizes, so neither time nor
          frequency resolution is favoured. Resolutions (n_fft, hop, window) are Parallel WaveGAN's.

Both floor their magnitudes before the log at the response to white noise at ``floor_dbfs``
(-80 dBFS by default, ``simvq.data.spectral``), reference and reconstruction alike: with an absolute
1e-5 floor the digital silence of the corpus dominated both terms, and the log's gradient, one over
the magnitude, was largest in those frames. ``floor_dbfs=None`` restores the absolute floor.
Everything is computed in float32 (see ``simvq.data.spectral``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spectral import FLOOR_DBFS, LogMelSpectrogram, frame_magnitudes, noise_floor_magnitude

STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


class MelLoss(nn.Module):
    """Mean ``|log mel(x) - log mel(y)|`` over batch, mels and frames (``LogMelSpectrogram``'s
    options, its per-band noise floor included)."""

    def __init__(self, sample_rate: int, **mel_options):
        super().__init__()
        self.mel = LogMelSpectrogram(sample_rate, **mel_options)

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(self.mel(reconstruction), self.mel(target))


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence ``||Y| - |X||_F / ||Y||_F`` plus mean
    ``|log |Y| - log |X||`` (X the reconstruction, Y the target), both magnitudes floored at
    ``noise_floor_magnitude(floor_dbfs, window)`` of each resolution's window."""

    def __init__(self, resolutions=STFT_RESOLUTIONS, *, floor_dbfs: float | None = FLOOR_DBFS):
        super().__init__()
        self.resolutions = tuple(tuple(int(v) for v in r) for r in resolutions)
        self.floors = tuple(noise_floor_magnitude(floor_dbfs, window) for _, _, window in self.resolutions)

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        total = reconstruction.new_zeros((), dtype=torch.float32)
        for (n_fft, hop, window), floor in zip(self.resolutions, self.floors):
            # frame-major (B, frames, F): the terms are sums over all elements, whatever their order
            x = frame_magnitudes(reconstruction, n_fft, hop, window).clamp_min(floor)
            y = frame_magnitudes(target, n_fft, hop, window).clamp_min(floor)
            convergence = torch.linalg.vector_norm(y - x, dim=(1, 2)) / torch.linalg.vector_norm(y, dim=(1, 2))
            total = total + convergence.mean() + F.l1_loss(x.log(), y.log())
        return total / len(self.resolutions)


class CodecLoss(nn.Module):
    """``mel_weight * mel + stft_weight * stft`` and its terms: ``{"loss", "mel", "stft"}``.

    A weight of 0 skips its term (it is still reported, as 0, so logs keep their columns).
    Defaults: mel 45 (HiFi-GAN/Vocos weight it 45 against a unit adversarial loss), stft 1.
    ``floor_dbfs`` floors both terms' magnitudes (the noise floor of ``simvq.data.spectral``).
    """

    def __init__(self, sample_rate: int, *, mel_weight: float = 45.0, stft_weight: float = 1.0,
                 mel_options: dict | None = None, stft_resolutions=STFT_RESOLUTIONS, floor_dbfs: float | None = FLOOR_DBFS):
        super().__init__()
        self.mel_weight, self.stft_weight = float(mel_weight), float(stft_weight)
        self.mel = MelLoss(sample_rate, **{**(mel_options or {}), "floor_dbfs": floor_dbfs})
        self.stft = MultiResolutionSTFTLoss(stft_resolutions, floor_dbfs=floor_dbfs)

    def forward(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        if reconstruction.shape != target.shape:
            raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ in shape")
        zero = reconstruction.new_zeros((), dtype=torch.float32)
        mel = self.mel(reconstruction, target) if self.mel_weight else zero
        stft = self.stft(reconstruction, target) if self.stft_weight else zero
        return {"loss": self.mel_weight * mel + self.stft_weight * stft, "mel": mel.detach(), "stft": stft.detach()}


__all__ = ["CodecLoss", "MelLoss", "MultiResolutionSTFTLoss", "STFT_RESOLUTIONS"]
