"""The corpus (``build_speech_corpus``) crosses English espeak-ng accents with voice variants (the
timbre: formants, breathiness, pitch range), and draws a sentence, a speed and a pitch for each
utterance from one seeded RNG. The test split holds *variants never heard in training*, with every
accent, so it measures generalisation to unseen voices. Audio is synthesised at the engine's rate
(22,050 Hz for espeak-ng, 16 kHz for flite), resampled with ``scipy.signal.resample_poly`` to each
requested rate and stored as 16-bit PCM under ``root/<rate>hz/``; ``root/manifest.csv`` lists
every utterance. The same seed gives the same manifest and the same bytes (same engine versions).
Building is resumable (finished files are kept) and runs ``workers`` syntheses at once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ...utils import atomic_write_bytes, atomic_write_text, write_json
from ..fashion_mnist import MissingDatasetError
from .sentences import speech_sentences
from .synthesis import ESPEAK_ACCENTS, ESPEAK_VARIANTS, FLITE_VOICES, INSTALL_HINT, espeak_variants, program_version, synthesize
from .waveform import resample, to_int16, wav_bytes

MANIFEST_FIELDS = ("id", "file", "engine", "voice", "variant", "speed", "pitch", "sentence", "split", "duration")


@dataclass(frozen=True)
class SpeechCorpusSpec:
    """What a synthetic corpus holds. Everything random is drawn from ``seed``.

    The defaults give 8 accents x 83 variants = 664 voices, 4 sentences each: 2,656 utterances,
    2.8 h (train 2.2 h from 528 voices, test 0.6 h from 136 unseen ones).

    ``variants``: espeak-ng variants to use (default all of ``ESPEAK_VARIANTS``); each is crossed
    with every accent in ``accents``. ``test_fraction`` of the variants (at least one) form the test
    split, with all accents; with ``flite``, flite's voices are split the same way (at least one in
    each split when there are two or more). ``utterances_per_voice`` sentences per voice, from
    ``speech_sentences(sentences)``. ``speed`` (words per minute) and ``pitch`` (0-99) are drawn
    uniformly from their inclusive ranges per utterance.
    """

    seed: int = 0
    accents: tuple[str, ...] = ESPEAK_ACCENTS
    variants: tuple[str, ...] = ESPEAK_VARIANTS
    utterances_per_voice: int = 4
    sentences: int = 400
    test_fraction: float = 0.2
    speed: tuple[int, int] = (130, 200)
    pitch: tuple[int, int] = (25, 75)
    sample_rates: tuple[int, ...] = (16000, 24000)
    flite: bool = False
    flite_utterances_per_voice: int = 40

    def __post_init__(self):
        for name in ("accents", "variants", "sample_rates", "speed", "pitch"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.accents or not self.variants:
            raise ValueError("a corpus needs at least one accent and one variant")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must be distinct, got {self.variants}")
        if len(self.variants) < 2:
            raise ValueError("a corpus needs at least two variants: one for training and one unseen at test")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        for name, (low, high), (lo, hi) in (("speed", self.speed, (80, 450)), ("pitch", self.pitch, (0, 99))):
            if not lo <= low <= high <= hi:
                raise ValueError(f"{name} must be an inclusive range within [{lo}, {hi}], got {(low, high)}")
        if not self.sample_rates or any(rate < 8000 for rate in self.sample_rates):
            raise ValueError(f"sample_rates must be rates of at least 8000 Hz, got {self.sample_rates}")
        if self.utterances_per_voice < 1 or self.sentences < 1:
            raise ValueError("utterances_per_voice and sentences must be positive")


def _split_units(units: list[str], test_fraction: float, rng: random.Random) -> set[str]:
    """The test units: a seeded random ``test_fraction`` of ``units`` (at least one, never all)."""
    if len(units) < 2:
        return set()
    count = min(len(units) - 1, max(1, round(test_fraction * len(units))))
    return set(rng.sample(sorted(units), count))


def corpus_plan(spec: SpeechCorpusSpec) -> list[dict]:
    """The manifest rows of ``spec`` without durations (every field but ``duration``), in order."""
    rng = random.Random(spec.seed)
    sentences = speech_sentences(spec.sentences, seed=spec.seed)
    test_variants = _split_units(list(spec.variants), spec.test_fraction, rng)
    voices = [("espeak-ng", f"{accent}+{variant}", variant) for variant in spec.variants for accent in spec.accents]
    per_voice = {voice: spec.utterances_per_voice for _, voice, _ in voices}
    test_units = set(test_variants)
    if spec.flite:
        test_units |= {f"flite-{v}" for v in _split_units(list(FLITE_VOICES), spec.test_fraction, rng)}
        voices += [("flite", voice, f"flite-{voice}") for voice in FLITE_VOICES]
        per_voice.update({voice: spec.flite_utterances_per_voice for voice in FLITE_VOICES})
    rows = []
    for engine, voice, variant in voices:
        split = "test" if variant in test_units else "train"
        for sentence in rng.sample(sentences, min(per_voice[voice], len(sentences))):
            index = len(rows)
            utterance_id = f"{index:06d}"
            rows.append({
                "id": utterance_id,
                "file": f"{split}/{utterance_id}.wav",
                "engine": engine,
                "voice": voice,
                "variant": variant,
                "speed": rng.randint(*spec.speed),
                "pitch": rng.randint(*spec.pitch),
                "sentence": sentence,
                "split": split,
            })
    return rows


def rate_dir(root: str | os.PathLike, sample_rate: int) -> Path:
    return Path(root) / f"{sample_rate}hz"


def _build_one(root: Path, row: dict, sample_rates: tuple[int, ...]) -> float:
    """Synthesise one utterance into every rate's directory (skipped when all exist); its duration
    in seconds (at the first rate)."""
    import soundfile

    paths = [rate_dir(root, rate) / row["file"] for rate in sample_rates]
    if not all(path.is_file() for path in paths):
        samples, source_rate = synthesize(row["engine"], row["voice"], row["sentence"], speed=int(row["speed"]), pitch=int(row["pitch"]))
        for rate, path in zip(sample_rates, paths):
            if not path.is_file():  # written atomically: an existing file is a finished one
                atomic_write_bytes(path, wav_bytes(to_int16(resample(samples, source_rate, rate)), rate))
    return round(soundfile.info(str(paths[0])).frames / sample_rates[0], 4)


def build_speech_corpus(
    root: str | os.PathLike,
    spec: SpeechCorpusSpec | None = None,
    *,
    workers: int = 1,
    progress: bool = False,
) -> list[dict]:
    """Synthesise ``spec``'s corpus under ``root`` (resuming a partial build) and return the manifest.

    Writes ``root/<rate>hz/<split>/<id>.wav`` for every rate in ``spec.sample_rates``,
    ``root/manifest.csv`` (columns ``MANIFEST_FIELDS``; ``file`` is relative to a rate directory,
    ``duration`` in seconds) and ``root/corpus.json`` (the spec and the engine versions). A ``root``
    holding a different corpus (other spec or engine version) is refused rather than mixed.
    ``workers`` syntheses run at once (threads: the work is in subprocesses and numpy).
    """
    spec = spec or SpeechCorpusSpec()
    root = Path(root)
    identity = {"spec": asdict(spec), "engines": {"espeak-ng": program_version("espeak-ng")}}
    if spec.flite:
        identity["engines"]["flite"] = program_version("flite")
    unknown = sorted(set(spec.variants) - espeak_variants())
    if unknown:
        raise ValueError(f"espeak-ng has no variant(s) {', '.join(unknown)} (see `espeak-ng --voices=variant`)")
    identity_path = root / "corpus.json"
    if identity_path.is_file():
        existing = json.loads(identity_path.read_text())
        existing.pop("utterances", None)
        if existing != json.loads(json.dumps(identity)):
            raise ValueError(
                f"{root} holds a different speech corpus (see {identity_path}); build into another directory "
                f"or delete it first"
            )
    else:
        root.mkdir(parents=True, exist_ok=True)
        write_json(identity_path, identity)
    rows = corpus_plan(spec)
    iterator = range(len(rows))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        durations = pool.map(lambda i: _build_one(root, rows[i], spec.sample_rates), iterator)
        if progress:
            from tqdm.auto import tqdm

            durations = tqdm(durations, total=len(rows), desc="speech corpus")
        for row, duration in zip(rows, durations):
            row["duration"] = duration
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "manifest.csv", buffer.getvalue())
    write_json(identity_path, {**identity, "utterances": len(rows)})
    return rows


def read_manifest(root: str | os.PathLike) -> list[dict]:
    """The rows of ``root/manifest.csv`` (numbers parsed), or a ``MissingDatasetError`` saying how to build it."""
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise MissingDatasetError(
            f"no speech corpus at {root} (no manifest.csv); build it with "
            f"`simvq.data.build_speech_corpus({str(root)!r})` (needs espeak-ng: {INSTALL_HINT['espeak-ng']})"
        )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["speed"], row["pitch"], row["duration"] = int(row["speed"]), int(row["pitch"]), float(row["duration"])
    return rows


__all__ = [
    "MANIFEST_FIELDS",
    "SpeechCorpusSpec",
    "build_speech_corpus",
    "corpus_plan",
    "rate_dir",
    "read_manifest",
]
