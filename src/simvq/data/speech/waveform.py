"""Waveform helpers shared by the corpus, the data sets and the audio metrics: polyphase
resampling, 16-bit PCM conversion, WAV bytes out and audio files in (spectral features live in
``simvq.data.spectral``)."""

from __future__ import annotations

import io
import math
import os

import numpy as np

PCM_SCALE = 32768.0  # int16 <-> float as soundfile (and libsndfile) convert: x / 32768


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``, its default Kaiser window) of a 1-D
    array; float64 out."""
    from scipy.signal import resample_poly

    samples = np.asarray(samples, dtype=np.float64)
    if source_rate == target_rate:
        return samples
    divisor = math.gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // divisor, source_rate // divisor)


def to_int16(samples: np.ndarray, *, scale: float = 1.0) -> np.ndarray:
    """Round ``samples * scale`` to 16-bit integers, clipping at the limits."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * scale), -32768, 32767).astype(np.int16)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit PCM WAV file's bytes (int16 samples, or floats in [-1, 1])."""
    import soundfile

    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        samples = to_int16(samples, scale=PCM_SCALE)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """A file as float32 mono samples at ``sample_rate`` (channels averaged, resampled when needed).
    A file soundfile cannot decode raises a ``ValueError`` naming it."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError) as error:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read audio file {path}: {error}") from error
    if samples.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


__all__ = ["PCM_SCALE", "read_audio", "resample", "to_int16", "wav_bytes"]
