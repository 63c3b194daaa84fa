"""LibriTTS (Zen et al. 2019; openslr.org/60) read from its extracted layout

    LibriTTS/<split>/<speaker>/<chapter>/<speaker>_<chapter>_<utterance>.wav  (24 kHz, 16-bit)
                                        .../<same name>.normalized.txt      (its transcript)

as a ``WavFolder`` (``simvq.data.speech.datasets``): random ``clip_seconds`` clips for training, whole
utterances when ``clip_seconds`` is None (evaluation), files at other rates resampled, the train
split held in memory with ``InMemorySpeech`` and batched with ``RandomClipBatches`` as any wav folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..fashion_mnist import MissingDatasetError
from ..folders import files_digest
from .datasets import WavFolder

LIBRITTS_SPLITS = (
    "train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean", "test-other",
)
LIBRITTS_RATE = 24000


def libritts_root(root: str | os.PathLike) -> Path:
    """``root`` itself, or its ``LibriTTS`` folder (where the openslr archives extract) when ``root``
    holds no split folder but that."""
    root = Path(root).expanduser()
    if not any((root / split).is_dir() for split in LIBRITTS_SPLITS) and (root / "LibriTTS").is_dir():
        return root / "LibriTTS"
    return root


def libritts_files(root: Path, splits: Sequence[str]) -> list[Path]:
    """The utterances ``<split>/<speaker>/<chapter>/*.wav`` of ``splits``: split by split, sorted within each."""
    files = []
    for split in splits:
        directory = root / split
        if not directory.is_dir():
            present = [s for s in LIBRITTS_SPLITS if (root / s).is_dir()]
            raise MissingDatasetError(
                f"LibriTTS split {split} not found under {root} (present: {', '.join(present) or 'none'}); "
                f"extract {split}.tar.gz from openslr.org/60 there"
            )
        found = sorted(p for p in directory.glob("*/*/*.wav") if p.is_file())
        if not found:
            raise MissingDatasetError(f"LibriTTS split {directory} holds no <speaker>/<chapter>/*.wav files")
        files += found
    return files


class LibriTTS(WavFolder):
    """Utterances of LibriTTS ``splits`` as float32 ``(1, S)`` at ``sample_rate``.

    Args:
        root: the ``LibriTTS`` folder (or the folder holding it).
        splits: one split name or several (e.g. ``("train-clean-100", "train-clean-360")`` for
            training, ``"test-clean"`` for evaluation); see ``LIBRITTS_SPLITS``.
        sample_rate: LibriTTS is 24 kHz; files at another rate are resampled (as any ``WavFolder``).
        clip_seconds: random clips of this length (zero-padded when shorter), seeded per DataLoader
            worker from ``seed``; None gives whole utterances (batch them with ``pad_collate``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        splits: str | Sequence[str] = "train-clean-100",
        *,
        sample_rate: int = LIBRITTS_RATE,
        clip_seconds: float | None = 1.0,
        seed: int = 0,
    ):
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        unknown = [s for s in splits if s not in LIBRITTS_SPLITS]
        if not splits or unknown:
            raise ValueError(f"splits must be one or more of {LIBRITTS_SPLITS}, got {splits!r}")
        if len(set(splits)) != len(splits):
            raise ValueError(f"splits lists a split twice: {splits!r}")
        root = libritts_root(root)
        super().__init__(root, sample_rate=sample_rate, clip_seconds=clip_seconds, seed=seed, files=libritts_files(root, splits))
        self.splits = splits
        self.cache_key = f"libritts-{'+'.join(splits)}-{files_digest(self.files)}-{sample_rate}hz"

    def utterance(self, index: int) -> str:
        """The utterance id, e.g. ``19_198_000000_000000``."""
        return self.files[index].stem

    def speaker(self, index: int) -> str:
        return self.files[index].parent.parent.name

    def transcript(self, index: int) -> str:
        """The normalized transcript (``.normalized.txt`` beside the wav)."""
        path = self.files[index].with_suffix(".normalized.txt")
        if not path.is_file():
            raise FileNotFoundError(f"no transcript {path} beside {self.files[index].name}")
        return path.read_text(encoding="utf-8").strip()


__all__ = ["LIBRITTS_RATE", "LIBRITTS_SPLITS", "LibriTTS", "libritts_files", "libritts_root"]
