"""Speech reconstruction metrics over a whole evaluation set, and the files a run writes.

``pesq_wideband``   PESQ (ITU-T P.862.2, wideband, 16 kHz) from the ``pesq`` package; -0.5 .. 4.64.
``stoi``            STOI (Taal et al. 2011) from ``pystoi``; 0 .. 1.
``log_mel_distance`` mean |log mel(ref) - log mel(rec)| (``simvq.data.spectral``; 0 for identical audio).
                    Each mel band is floored at its response to white noise at -80 dBFS, in both
                    spectra, so the digital silence between words does not rank inaudible noise
                    floors: noise at -90 / -80 dBFS moves it by 0.004 / 0.023 on corpus utterances
                    (0.57 / 0.71 with the absolute 1e-5 floor used before), -30 dBFS by 2.2
                    (``benchmarks/mel_floor.py``). ``floor_dbfs=None`` gives the old numbers (those
                    of docs/speech/ before the floor); ``metrics.json`` records ``mel_floor_dbfs``.
``dnsmos``          DNSMOS P.835 (Reddy et al. 2022: SIG, BAK, OVRL; no reference needed) from the
                    ONNX model shipped inside the ``speechmos`` wheel, run with ``onnxruntime``. The
                    ``speechmos`` module itself is not imported (it imports librosa, which it does not
                    declare); only its model file is read. Skipped when either package is absent.
``AudioMetrics``    accumulates all of them per utterance, plus codebook usage/perplexity over every
                    token (``CodebookUsage``) and, given the code dimension, ``coverage_summary``.
``evaluate_codec``  runs a codec over a data set of whole utterances and returns the metrics.

WER through pocketsphinx is not included: its wheel is 29 MB and the synthetic voices are far from
its acoustic model, so its numbers would say little here.
Optional libraries are imported when first used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..data.spectral import LogMelSpectrogram
from ..data.speech import resample, wav_bytes
from ..utils import atomic_write_bytes, pyplot, save_figure
from .coverage import coverage_summary
from .evaluation import prepare_evaluation
from .usage import CodebookUsage, usage_statistics

PESQ_RATE = 16000
PESQ_MAX = 4.644  # P.862.2's mapping of a perfect raw score (4.5)
DNSMOS_RATE = 16000
DNSMOS_SEGMENT = 144160  # 9.01 s at 16 kHz: the model's fixed input length
# speechmos's (and Microsoft's DNS-Challenge) cubic maps from raw model outputs to P.835 scores
_DNSMOS_POLYFIT = {
    "dnsmos_sig": (-0.08397278, 1.22083953, 0.0052439),
    "dnsmos_bak": (-0.13166888, 1.60915514, -0.39604546),
    "dnsmos_ovrl": (-0.06766283, 1.11546468, 0.04602535),
}


def _numpy_mono(wav) -> np.ndarray:
    """A tensor or array ``(S,)``, ``(1, S)`` or ``(1, 1, S)`` as float64 ``(S,)``."""
    array = wav.detach().float().cpu().numpy() if isinstance(wav, Tensor) else np.asarray(wav, dtype=np.float64)
    array = np.squeeze(array)
    if array.ndim != 1:
        raise ValueError(f"expected one mono waveform, got shape {np.shape(wav)}")
    return array.astype(np.float64)


def _pair(reference, degraded) -> tuple[np.ndarray, np.ndarray]:
    reference, degraded = _numpy_mono(reference), _numpy_mono(degraded)
    if reference.shape != degraded.shape:
        raise ValueError(f"reference and degraded lengths differ: {reference.shape[0]} vs {degraded.shape[0]}")
    return reference, degraded


def pesq_wideband(reference, degraded, sample_rate: int) -> float:
    """Wideband PESQ of one utterance (resampled to 16 kHz first when needed); NaN when PESQ
    finds no speech (e.g. silence or a clip under ~0.25 s)."""
    from pesq import PesqError, pesq

    reference, degraded = _pair(reference, degraded)
    if sample_rate != PESQ_RATE:
        reference, degraded = resample(reference, sample_rate, PESQ_RATE), resample(degraded, sample_rate, PESQ_RATE)
    with np.errstate(invalid="ignore", divide="ignore"):  # pesq divides by the peak: 0/0 on silence
        score = pesq(PESQ_RATE, reference, degraded, "wb", on_error=PesqError.RETURN_VALUES)
    return float(score) if score >= -0.5 else math.nan  # error codes are negative integers below -0.5


def stoi(reference, degraded, sample_rate: int, *, extended: bool = False) -> float:
    """STOI (or extended STOI) of one utterance; pystoi resamples to 10 kHz itself. NaN when the
    utterance holds too little speech (under ~0.4 s once silent frames are dropped)."""
    from pystoi import stoi as pystoi_stoi

    reference, degraded = _pair(reference, degraded)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(pystoi_stoi(reference, degraded, sample_rate, extended=extended))
    # under 30 non-silent 25.6 ms frames pystoi warns and returns 1e-5, which is not a score
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return score


def log_mel_distance(reference, degraded, sample_rate: int, **mel_options) -> float:
    """Mean absolute difference of log-mel spectrograms (``LogMelSpectrogram`` defaults: its
    -80 dBFS noise floor in every band; ``floor_dbfs=None``: the old absolute floor)."""
    reference, degraded = _pair(reference, degraded)
    mel = LogMelSpectrogram(sample_rate, **mel_options)
    pair = torch.from_numpy(np.stack([reference, degraded])).float()
    spectra = mel(pair)
    return float((spectra[0] - spectra[1]).abs().mean())


# ----------------------------------------------------------------------------- DNSMOS


def dnsmos_model_path() -> Path | None:
    """The DNSMOS P.835 ONNX file inside the installed ``speechmos`` package, or None."""
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "dnsmos_models" / "sig_bak_ovr.onnx"
    return path if path.is_file() else None


def dnsmos_available() -> bool:
    return dnsmos_model_path() is not None and importlib.util.find_spec("onnxruntime") is not None


_DNSMOS_SESSION = None


def dnsmos(wav, sample_rate: int) -> dict[str, float]:
    """DNSMOS P.835 scores ``{"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}`` (1 .. 5) of one utterance.

    As the DNS-Challenge script: audio shorter than 9.01 s is repeated to that length; longer audio
    is scored on 9.01 s windows every second and the scores averaged.
    """
    global _DNSMOS_SESSION
    if not dnsmos_available():
        raise ModuleNotFoundError("DNSMOS needs `pip install --no-deps speechmos onnxruntime` (the model ships in speechmos)")
    import onnxruntime

    if _DNSMOS_SESSION is None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # many small runs; threads only add overhead
        _DNSMOS_SESSION = onnxruntime.InferenceSession(str(dnsmos_model_path()), options, providers=["CPUExecutionProvider"])
    audio = _numpy_mono(wav)
    if sample_rate != DNSMOS_RATE:
        audio = resample(audio, sample_rate, DNSMOS_RATE)
    audio = np.clip(audio, -1.0, 1.0)
    if audio.shape[0] < DNSMOS_SEGMENT:
        audio = np.tile(audio, -(-DNSMOS_SEGMENT // max(1, audio.shape[0])))
    starts = range(0, audio.shape[0] - DNSMOS_SEGMENT + 1, DNSMOS_RATE)
    segments = np.stack([audio[s : s + DNSMOS_SEGMENT] for s in starts]).astype(np.float32)
    raw = _DNSMOS_SESSION.run(None, {"input_1": segments})[0]  # (segments, 3): sig, bak, ovrl
    return {name: float(np.polyval(coefficients, raw[:, i]).mean())
            for i, (name, coefficients) in enumerate(_DNSMOS_POLYFIT.items())}


# the references' scores: every run of a benchmark scores the same test utterances, and DNSMOS of
# one utterance costs ~1.6 s on a CPU core (a third of a speech evaluation); keyed on the bytes
_REFERENCE_DNSMOS: dict[tuple[str, int], dict[str, float]] = {}
_REFERENCE_DNSMOS_LIMIT = 8192


def reference_dnsmos(wav, sample_rate: int) -> dict[str, float]:
    """``dnsmos(wav, sample_rate)``, remembered for the process by the SHA-1 of the samples."""
    audio = np.ascontiguousarray(_numpy_mono(wav), dtype=np.float32)
    key = (hashlib.sha1(audio.tobytes()).hexdigest(), int(sample_rate))
    if key not in _REFERENCE_DNSMOS:
        if len(_REFERENCE_DNSMOS) >= _REFERENCE_DNSMOS_LIMIT:
            _REFERENCE_DNSMOS.clear()
        _REFERENCE_DNSMOS[key] = dnsmos(audio, sample_rate)
    return dict(_REFERENCE_DNSMOS[key])


# ----------------------------------------------------------------------------- accumulating


class AudioMetrics:
    """Per-utterance speech metrics averaged over an evaluation set, and codebook usage over all its tokens.

    ``update(reference, reconstruction, codes, lengths)`` takes a batch ``(B, 1, S)`` of each (the
    reconstruction trimmed to the reference's length), the codes ``(B, T)`` and the true lengths
    ``(B,)`` of zero-padded utterances (None: all ``S``); codes past ``ceil(length / hop_length)``
    are padding and are not counted. ``compute()`` returns means of ``pesq``, ``stoi``,
    ``mel_distance``, the DNSMOS scores of the reconstructions (and of the references as
    ``*_reference``, a ceiling) when available, ``utterances``, ``pesq_failures`` and
    ``stoi_failures`` (NaN scores, left out of the means), ``mel_floor_dbfs`` (the mel
    distance's noise floor; None: the old absolute floor), and ``usage``,
    ``perplexity``, ``dead_fraction``, ``tokens``; with ``coverage_dim`` also ``coverage_summary``'s
    ``usage_chao1``, ``coverage``, ``usage_reference``, ``tokens_per_code``.
    """

    def __init__(self, sample_rate: int, codebook_size: int, *, hop_length: int = 1, use_dnsmos: bool | None = None,
                 coverage_dim: int | None = None, mel_options: dict | None = None, sharded: bool = False):
        self.sample_rate, self.hop_length = sample_rate, hop_length
        self.use_dnsmos = dnsmos_available() if use_dnsmos is None else use_dnsmos
        self.coverage_dim = coverage_dim
        self.mel = LogMelSpectrogram(sample_rate, **(mel_options or {}))
        # sharded: utterance i was measured by rank i % world_size; histogram() and compute() reduce
        # over the processes (every rank must call them), otherwise one process holds the whole set
        self.sharded = sharded
        self.usage = CodebookUsage(codebook_size, distributed=sharded)
        self.scores: dict[str, list[float]] = {}

    def _add(self, name: str, value: float) -> None:
        self.scores.setdefault(name, []).append(value)

    @torch.no_grad()
    def update(self, reference: Tensor, reconstruction: Tensor, codes: Tensor | None = None, lengths: Tensor | None = None) -> None:
        if reference.shape != reconstruction.shape or reference.ndim != 3:
            raise ValueError(f"reference and reconstruction must both be (B, 1, S), got {tuple(reference.shape)} and {tuple(reconstruction.shape)}")
        batch = reference.shape[0]
        sizes = [reference.shape[-1]] * batch if lengths is None else [int(n) for n in lengths]
        reconstruction = reconstruction.float().clamp(-1, 1)
        for i, length in enumerate(sizes):
            ref, rec = reference[i, 0, :length].float().cpu(), reconstruction[i, 0, :length].cpu()
            spectra = self.mel(torch.stack([ref, rec]))
            self._add("mel_distance", float((spectra[0] - spectra[1]).abs().mean()))
            self._add("pesq", pesq_wideband(ref, rec, self.sample_rate))
            self._add("stoi", stoi(ref, rec, self.sample_rate))
            if self.use_dnsmos:
                for name, value in dnsmos(rec, self.sample_rate).items():
                    self._add(name, value)
                for name, value in reference_dnsmos(ref, self.sample_rate).items():
                    self._add(f"{name}_reference", value)
            if codes is not None:
                self.usage.update(codes[i, : -(-length // self.hop_length)], check=False)

    def histogram(self) -> Tensor:
        """``(K,)`` code counts (summed over the processes when ``sharded``)."""
        return self.usage.histogram().cpu()

    def all_scores(self) -> dict[str, list[float]]:
        """Every utterance's scores in utterance order: with ``sharded``, gathered from every rank and
        interleaved back (rank r holds utterances r, r + W, ...), so the means are one process's."""
        if not (self.sharded and dist.is_available() and dist.is_initialized()):
            return self.scores
        shards: list = [None] * dist.get_world_size()
        dist.all_gather_object(shards, self.scores)
        names = list(dict.fromkeys(name for shard in shards for name in shard))
        merged = {}
        for name in names:
            lists = [shard.get(name, []) for shard in shards]
            merged[name] = [values[i] for i in range(max(map(len, lists))) for values in lists if i < len(values)]
        return merged

    def compute(self, counts: Tensor | None = None) -> dict[str, float | None]:
        """The means and usage statistics; ``counts``: ``histogram()`` when the caller already holds
        it (each ``histogram()`` is one all-reduce when sharded)."""
        metrics: dict[str, float | None] = {}  # floats, but mel_floor_dbfs may be None
        scores = self.all_scores()
        for name, values in scores.items():
            finite = [v for v in values if not math.isnan(v)]
            metrics[name] = float(np.mean(finite)) if finite else math.nan
        metrics["utterances"] = len(scores.get("mel_distance", []))
        metrics["mel_floor_dbfs"] = self.mel.floor_dbfs  # which mel distance this is (None: the absolute 1e-5 floor)
        for name in ("pesq", "stoi"):  # utterances the score could not be computed on (left out of the mean)
            metrics[f"{name}_failures"] = sum(math.isnan(v) for v in scores.get(name, []))
        counts = self.histogram() if counts is None else counts
        metrics.update(usage_statistics(counts))
        if self.coverage_dim is not None and metrics["tokens"]:
            summary = coverage_summary(counts, dim=self.coverage_dim)
            metrics.update({k: summary[k] for k in ("tokens_per_code", "usage_chao1", "coverage", "usage_reference")})
        return metrics


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def utterance_batches(dataset, indices, batch_size: int, device):
    """``(wav (B, 1, max S), lengths (B,) or None)`` for ``indices`` in order, ``batch_size`` at a
    time: one utterance as is (``lengths`` None), several zero-padded by ``pad_collate``."""
    from ..data.speech import pad_collate

    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        if batch_size == 1:
            yield dataset[chunk[0]].unsqueeze(0).to(device), None
        else:
            wav, lengths = pad_collate([dataset[index] for index in chunk])
            yield wav.to(device), lengths


@torch.no_grad()
def split_code_counts(model, dataset, *, device=None, progress: bool = False, shard: tuple[int, int] = (0, 1),
                      batch_size: int = 1) -> Tensor:
    """``(K,)`` histogram of the codes of every utterance of ``dataset`` (encoder and quantizer only,
    no decoding, no scores): the extra tokens ``eval.usage_splits`` adds to the test split's, so a
    large codebook's usage is counted over enough tokens per code. Under ``shard=(rank, world_size)``
    each rank encodes its share and every rank gets the sum (every rank must call it).
    ``batch_size``: utterances encoded together, zero-padded, the padded frames masked in the
    quantizer and not counted (1: one at a time; batching moves the codes of an utterance's last
    frames slightly: the convolutions see zeros past its end instead of their own padding)."""
    from tqdm.auto import tqdm

    rank, world_size = shard
    check_batch_size(batch_size)
    device, was_training, count = prepare_evaluation(model, device, len(dataset), None)
    usage = CodebookUsage(model.quantizer.codebook_size, distributed=world_size > 1)
    chosen = range(count)[rank::world_size]
    progress_bar = tqdm(total=len(chosen), desc="usage", disable=not progress, leave=False)
    for wav, lengths in utterance_batches(dataset, chosen, batch_size, device):
        codes = model.encode(wav, lengths=lengths)
        usage.update(codes if lengths is None else codes[model.token_mask(lengths, wav.shape[-1]).to(codes.device)])
        progress_bar.update(wav.shape[0])
    progress_bar.close()
    model.train(was_training)
    return usage.histogram().cpu()


def evenly_spaced(size: int, count: int) -> list[int]:
    """``count`` of the indices ``0 .. size - 1``, evenly spaced from 0 (all of them when ``count >= size``)."""
    if count >= size:
        return list(range(size))
    return [index * size // count for index in range(count)]


@torch.no_grad()
def evaluate_codec(model, dataset, *, max_utterances: int | None = None, device=None, use_dnsmos: bool | None = None,
                   coverage_dim: int | None = None, progress: bool = True,
                   shard: tuple[int, int] = (0, 1), batch_size: int = 1) -> tuple[dict[str, float | None], Tensor]:
    """Reconstruct whole utterances of ``dataset`` (items ``(1, S)``, e.g. ``SpeechCorpus(...,
    clip_seconds=None)``) one at a time with ``model`` (an ``AudioCodec``) and measure them.

    Returns ``(metrics, code_counts)`` as ``AudioMetrics.compute()`` and its ``(K,)`` histogram.
    ``max_utterances`` N below the split's size measures N utterances evenly spaced across it, so a
    split stored voice by voice keeps its voices represented (the first N would hold N / 4 voices
    of a corpus with 4 utterances a voice). ``shard=(rank, world_size)``: under torch.distributed
    each process measures every ``world_size``-th of them from ``rank`` and every process gets the
    numbers one process would (the same per-utterance scores, averaged in the same order). Every
    rank must call. ``batch_size``: utterances reconstructed together, zero-padded, with the padded
    frames masked in the quantizer (codes -1, zero vectors, left out of its statistics) and out of
    the scores and usage (1, the default: one at a time, with no padding; batched, the convolutions
    see zeros past an utterance's end instead of their own padding, which moves its last frames slightly).
    """
    from tqdm.auto import tqdm

    rank, world_size = shard
    check_batch_size(batch_size)
    device, was_training, count = prepare_evaluation(model, device, len(dataset), max_utterances)
    chosen = evenly_spaced(len(dataset), count)
    metrics = AudioMetrics(model.sample_rate, model.quantizer.codebook_size, hop_length=model.hop_length,
                           use_dnsmos=use_dnsmos, coverage_dim=coverage_dim, sharded=world_size > 1)
    mine = chosen[rank::world_size]
    progress_bar = tqdm(total=len(mine), desc="eval", disable=not progress, leave=False)
    for wav, lengths in utterance_batches(dataset, mine, batch_size, device):
        reconstruction, out = model(wav, lengths=lengths)
        metrics.update(wav, reconstruction, out.codes, lengths)
        progress_bar.update(wav.shape[0])
    progress_bar.close()
    model.train(was_training)
    counts = metrics.histogram()
    return metrics.compute(counts), counts


# ----------------------------------------------------------------------------- files


def write_wav(path: str | os.PathLike, wav, sample_rate: int) -> None:
    """A mono waveform (tensor or array, values in [-1, 1], clipped) as 16-bit PCM WAV, atomically."""
    atomic_write_bytes(path, wav_bytes(np.clip(_numpy_mono(wav), -1.0, 1.0), sample_rate))


def save_spectrogram_comparison(path: str | os.PathLike, reference, reconstruction, sample_rate: int, *,
                                title: str | None = None, n_mels: int = 80) -> None:
    """A PNG (or any matplotlib format, from the suffix) of the log-mel spectrograms of an original
    and its reconstruction, one above the other on the same colour scale."""
    reference, reconstruction = _pair(reference, reconstruction)
    mel = LogMelSpectrogram(sample_rate, n_mels=n_mels)
    spectra = mel(torch.from_numpy(np.stack([reference, reconstruction])).float()).numpy()
    low, high = float(spectra.min()), float(spectra.max())
    plt = pyplot()
    figure, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True, constrained_layout=True)
    seconds = reference.shape[0] / sample_rate
    for axis, spectrum, label in zip(axes, spectra, ("original", "reconstruction")):
        image = axis.imshow(spectrum, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                            extent=(0.0, seconds, 0, spectrum.shape[0]))
        axis.set_ylabel(f"{label}\nmel bin")
    axes[-1].set_xlabel("time (s)")
    figure.colorbar(image, ax=axes, label="log magnitude")
    if title:
        figure.suptitle(title)
    save_figure(figure, path, dpi=100)


__all__ = [
    "AudioMetrics",
    "PESQ_MAX",
    "dnsmos",
    "dnsmos_available",
    "evaluate_codec",
    "evenly_spaced",
    "log_mel_distance",
    "pesq_wideband",
    "reference_dnsmos",
    "save_spectrogram_comparison",
    "stoi",
    "write_wav",
]
