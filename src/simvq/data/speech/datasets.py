"""The speech data sets: ``WavFolder`` (a folder of audio files), ``SpeechCorpus`` (a split of a
built corpus), ``InMemorySpeech`` and ``RandomClipBatches`` (the train split held as int16, clips
gathered in batches), the per-worker seeded clip sampling and ``pad_collate``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..fashion_mnist import MissingDatasetError
from ..folders import files_digest, folder_files
from .corpus import rate_dir, read_manifest
from .waveform import PCM_SCALE, read_audio, to_int16

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def list_audio(root: Path, suffixes=AUDIO_SUFFIXES) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


class _Clipper:
    """Random fixed-length clips, from a generator seeded per DataLoader worker.

    In a worker, the generator is seeded with ``(seed, worker seed)``; torch draws worker seeds
    from the main process's RNG for each new iterator, so clips differ between epochs and workers
    yet repeat for the same ``torch.manual_seed``. In the main process it is seeded with ``seed``.
    """

    def __init__(self, clip_samples: int | None, seed: int):
        self.clip_samples, self.seed = clip_samples, seed
        self._rng, self._key = None, ()

    def rng(self) -> np.random.Generator:
        info = get_worker_info()
        key = None if info is None else (info.id, info.seed)
        if self._rng is None or key != self._key:
            self._rng = np.random.default_rng([self.seed] + ([] if info is None else [info.seed % 2**63]))
            self._key = key
        return self._rng

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.clip_samples is None:
            return samples
        excess = samples.shape[0] - self.clip_samples
        if excess < 0:  # shorter than a clip: zero-pad at the end
            return np.pad(samples, (0, -excess))
        start = int(self.rng().integers(0, excess + 1))
        return samples[start : start + self.clip_samples]


def _clip_samples(clip_seconds: float | None, sample_rate: int) -> int | None:
    if clip_seconds is None:
        return None
    if not clip_seconds > 0:
        raise ValueError(f"clip_seconds must be positive (or None for whole utterances), got {clip_seconds!r}")
    return round(clip_seconds * sample_rate)


class WavFolder(Dataset):
    """Audio files under ``root`` (recursively: .wav, .flac, .ogg), as float32 ``(1, S)`` at ``sample_rate``.

    Args:
        root: directory of audio files (e.g. a LibriTTS split).
        sample_rate: files at other rates are resampled (``resample_poly``); stereo is averaged.
        clip_seconds: random clips of this length (zero-padded when an utterance is shorter);
            None gives whole utterances (evaluation; batch them with ``pad_collate``).
        seed: seeds the clip positions (per DataLoader worker, see ``_Clipper``).
        files: an explicit file list instead of scanning ``root``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        sample_rate: int = 16000,
        clip_seconds: float | None = 1.0,
        seed: int = 0,
        files: list[Path] | None = None,
    ):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1000:
            raise ValueError(f"sample_rate must be an integer rate in Hz, got {sample_rate!r}")
        self.root = Path(root)
        files = folder_files(self.root, files, list_audio, folder="audio", nouns="audio files", suffixes=AUDIO_SUFFIXES)
        self.files = [Path(f) for f in files]
        self.sample_rate = sample_rate
        self.clip_samples = _clip_samples(clip_seconds, sample_rate)
        self.clipper = _Clipper(self.clip_samples, seed)
        self.cache_key = f"wavs-{files_digest(self.files)}-{sample_rate}hz"

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        """The whole utterance ``index`` as float32 samples."""
        return read_audio(self.files[index], self.sample_rate)

    def __getitem__(self, index: int) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.clipper(self.load(index)))).unsqueeze(0)


class SpeechCorpus(WavFolder):
    """One split of a corpus built by ``build_speech_corpus``, read from disk.

    ``self.manifest`` holds the split's manifest rows (voice, sentence, ...), in file order.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        sample_rate: int = 16000,
        clip_seconds: float | None = 1.0,
        seed: int = 0,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        directory = rate_dir(root, sample_rate)
        rows = [row for row in read_manifest(root) if row["split"] == split]
        if not directory.is_dir():
            built = sorted(p.name for p in Path(root).glob("*hz"))
            raise MissingDatasetError(
                f"the speech corpus at {root} has no {sample_rate} Hz audio (has: {', '.join(built) or 'none'}); "
                f"rebuild it with sample_rates including {sample_rate}"
            )
        self.manifest = rows
        super().__init__(directory, sample_rate=sample_rate, clip_seconds=clip_seconds, seed=seed,
                         files=[directory / row["file"] for row in rows])
        self.split = split
        manifest_digest = hashlib.sha1((Path(root) / "manifest.csv").read_bytes()).hexdigest()[:12]
        self.cache_key = f"speech-{manifest_digest}-{split}-{sample_rate}hz"


class InMemorySpeech(Dataset):
    """Every utterance of a data set held in memory as one int16 tensor, with the same items as the
    data set it came from. The default corpus's train split (2.2 h) takes 258 MB at 16 kHz.

    ``audio``: (total samples,) int16; ``offsets``: (N + 1,) int64 start of each utterance.
    """

    def __init__(self, dataset: WavFolder, *, clip_seconds: float | None | str = "same", seed: int | None = None):
        pieces = [to_int16(dataset.load(i), scale=PCM_SCALE) for i in range(len(dataset))]
        lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
        self.audio = torch.from_numpy(np.concatenate(pieces))
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self.sample_rate = dataset.sample_rate
        self.clip_samples = dataset.clip_samples if clip_seconds == "same" else _clip_samples(clip_seconds, self.sample_rate)
        self.clipper = _Clipper(self.clip_samples, dataset.clipper.seed if seed is None else seed)
        self.cache_key = dataset.cache_key

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def load(self, index: int) -> np.ndarray:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.audio[start:end].numpy().astype(np.float32) / np.float32(PCM_SCALE)

    def __getitem__(self, index: int) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.clipper(self.load(index)))).unsqueeze(0)


class RandomClipBatches(IterableDataset):
    """Endless batches ``(batch_size, 1, clip_samples)`` float32 of random clips from an
    ``InMemorySpeech``, each gathered with one indexing op. Utterances are drawn uniformly and a
    clip position uniformly within each (shorter utterances are zero-padded). Draws use a
    ``torch.Generator`` seeded with ``seed`` + 1000 * rank under ``torch.distributed``.
    ``start``: batches (per rank) already consumed, e.g. by the steps of a resumed run; their draws
    are replayed without gathering, so the stream continues exactly where it stopped."""

    def __init__(self, speech: InMemorySpeech, batch_size: int, clip_samples: int, *, seed: int = 0, start: int = 0):
        if batch_size < 1 or clip_samples < 1:
            raise ValueError(f"batch_size and clip_samples must be positive, got {batch_size}, {clip_samples}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative integer, got {start!r}")
        self.speech, self.batch_size, self.clip_samples, self.seed, self.start = speech, batch_size, clip_samples, seed, start

    def __iter__(self):
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        generator = torch.Generator().manual_seed(self.seed + 1000 * rank)
        offsets, audio = self.speech.offsets, self.speech.audio
        lengths = offsets[1:] - offsets[:-1]
        steps = torch.arange(self.clip_samples)
        for _ in range(self.start):
            self._draw(lengths, generator)
        while True:
            chosen, fractions = self._draw(lengths, generator)
            room = (lengths[chosen] - self.clip_samples).clamp_min(0)
            starts = offsets[chosen] + (fractions * (room + 1)).long().clamp_max(room)
            positions = starts[:, None] + steps
            inside = steps[None, :] < lengths[chosen][:, None]
            clips = audio[positions.clamp_max(audio.numel() - 1)].float().div_(PCM_SCALE) * inside
            yield clips.unsqueeze(1)

    def _draw(self, lengths: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One batch's random numbers: the utterances and where in each the clip starts (a fraction)."""
        chosen = torch.randint(0, lengths.numel(), (self.batch_size,), generator=generator)
        return chosen, torch.rand(self.batch_size, generator=generator)


class FileClipBatches(IterableDataset):
    """Endless batches ``(batch_size, 1, clip_samples)`` float32 of random clips read from the files of
    a ``WavFolder`` (e.g. ``LibriTTS``), for corpora too large to hold in memory; use
    ``DataLoader(batches, batch_size=None, num_workers=W)``. Batch ``k`` of rank ``r`` draws its
    utterances (uniformly) and clip positions (uniformly within each; shorter utterances are
    zero-padded) from a generator seeded by ``(seed, r, k)``; worker ``w`` of ``W`` builds batches
    ``w, w + W, ...``, the order the DataLoader returns them in. So the stream depends on neither the
    number of workers nor the batches before it, and ``start`` (batches this rank already consumed,
    the steps of a resumed run) continues it exactly. The rank is torch.distributed's, else ``$RANK``."""

    def __init__(self, dataset: WavFolder, batch_size: int, clip_samples: int, *, seed: int = 0, start: int = 0):
        if batch_size < 1 or clip_samples < 1:
            raise ValueError(f"batch_size and clip_samples must be positive, got {batch_size}, {clip_samples}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative integer, got {start!r}")
        self.dataset, self.batch_size, self.clip_samples, self.seed, self.start = dataset, batch_size, clip_samples, seed, start

    def batch(self, step: int, rank: int = 0) -> Tensor:
        """The rank's batch ``step``."""
        rng = np.random.default_rng([self.seed, rank, step])
        chosen = rng.integers(0, len(self.dataset), self.batch_size)
        fractions = rng.random(self.batch_size)
        clips = np.zeros((self.batch_size, 1, self.clip_samples), np.float32)
        for row, (index, fraction) in enumerate(zip(chosen, fractions)):
            samples = self.dataset.load(int(index))
            room = max(0, samples.shape[0] - self.clip_samples)
            first = min(int(fraction * (room + 1)), room)
            clip = samples[first : first + self.clip_samples]
            clips[row, 0, : clip.shape[0]] = clip
        return torch.from_numpy(clips)

    def __iter__(self):
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.start + worker
        while True:
            yield self.batch(step, rank)
            step += workers


def pad_collate(batch: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Whole utterances ``(1, S_i)`` to ``(B, 1, max S)`` (zero-padded at the end) and their lengths ``(B,)``."""
    lengths = torch.tensor([item.shape[-1] for item in batch], dtype=torch.long)
    out = batch[0].new_zeros(len(batch), 1, int(lengths.max()))
    for i, item in enumerate(batch):
        out[i, :, : item.shape[-1]] = item
    return out, lengths


__all__ = [
    "AUDIO_SUFFIXES",
    "FileClipBatches",
    "InMemorySpeech",
    "RandomClipBatches",
    "SpeechCorpus",
    "WavFolder",
    "list_audio",
    "pad_collate",
]
