"""Speech data: a synthetic English corpus built offline with espeak-ng (and optionally flite), and
users' own wav folders (e.g. LibriTTS). Every data set yields float32 waveforms ``(1, S)`` in
``[-1, 1]`` at its ``sample_rate``: random ``clip_seconds`` clips for training, whole utterances
when ``clip_seconds`` is None (evaluation).

The corpus (``build_speech_corpus``) crosses English espeak-ng accents with voice variants (the
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
import hashlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..utils import atomic_write_bytes, atomic_write_text
from .fashion_mnist import MissingDatasetError
from .folders import files_digest, folder_files

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
PCM_SCALE = 32768.0  # int16 <-> float as soundfile (and libsndfile) convert: x / 32768
MANIFEST_FIELDS = ("id", "file", "engine", "voice", "variant", "speed", "pitch", "sentence", "split", "duration")

# English espeak-ng voices (`espeak-ng --voices=en`), without the MBROLA ones (they need mbrola data).
ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)
# espeak-ng voice variants (`espeak-ng --voices=variant`, file names): the timbre of a voice. The
# novelty ones (Demonic, announcer, robots, fast_test) are left out: they are not speech-like.
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "croak", "klatt", "klatt2",
    "klatt3", "klatt4", "klatt5", "klatt6", "whisper", "whisperf", "grandma", "grandpa", "adam", "Alex", "Alicia",
    "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "Denis",
    "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3",
    "iven4", "Jacky", "john", "kaukovalta", "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael",
    "michel", "miguel", "Mike", "norbert", "Nguyen", "pablo", "paul", "pedro", "quincy", "rob", "robert",
    "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac", "anika", "AnxiousAndy", "Storm",
)
# flite's built-in voices at 16 kHz (`flite -lv`; "kal" is 8 kHz and left out).
FLITE_VOICES = ("awb", "rms", "slt", "kal16")

INSTALL_HINT = {
    "espeak-ng": "`sudo apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)",
    "flite": "`sudo apt-get install flite` (Debian/Ubuntu), or build the corpus with flite=False",
}

# ----------------------------------------------------------------------------- sentences

_SUBJECTS = (
    "the old sailor", "my neighbour", "a tired student", "the young doctor", "our teacher", "the small dog",
    "her brother", "the farmer", "a quiet child", "the baker", "his grandmother", "the new manager", "a stranger",
    "the pilot", "my best friend", "the gardener", "the girl next door", "a police officer", "the musician",
    "the cat", "the children", "two engineers", "the old man", "a nervous actor", "the librarian",
)
_VERBS = (
    "painted", "found", "carried", "opened", "cleaned", "bought", "sold", "forgot", "repaired", "dropped",
    "noticed", "borrowed", "wrapped", "measured", "described", "watched", "followed", "hid", "built", "lost",
)
_OBJECTS = (
    "a red umbrella", "the wooden box", "seven yellow apples", "an empty bottle", "the broken clock",
    "a heavy suitcase", "the blue bicycle", "a strange letter", "the kitchen window", "an old photograph",
    "three silver coins", "a warm blanket", "the garden gate", "a paper map", "the violin", "a jar of honey",
    "the last train ticket", "a pair of boots", "the morning newspaper", "a basket of fish",
)
_PLACES = (
    "near the harbour", "in the crowded market", "behind the church", "at the station", "under the bridge",
    "on the top shelf", "in the garden", "beside the river", "at the back of the shop", "in the village square",
    "on the kitchen table", "outside the museum", "in the dark cellar", "at the edge of the forest",
)
_TIMES = (
    "yesterday morning", "last winter", "after dinner", "before sunrise", "on Sunday", "at midnight",
    "during the storm", "every Tuesday", "in nineteen eighty four", "at half past seven", "two weeks ago",
)
_ADVERBS = ("quickly", "carefully", "slowly", "quietly", "happily", "suddenly", "proudly", "gently")
_QUESTION_WORDS = ("Why", "When", "Where", "How")
_FIXED_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "She sells sea shells by the sea shore.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
    "The rainbow is a division of white light into many beautiful colours.",
    "A large size in stockings is hard to sell.",
    "Is it going to rain this afternoon, or will the sun come out?",
    "Turn left at the second light, then keep going for about three miles.",
    "The meeting starts at nine fifteen, so don't be late.",
    "Could you read the numbers back to me: four, eight, fifteen, sixteen, twenty three, forty two.",
    "Thank you very much for your patience.",
    "I never said she stole my money.",
    "Wow, that was a surprisingly good film!",
    "Oh no, I left my keys in the car again.",
    "Thirty three thousand people attended the concert on the twelfth of June.",
    "Whether the weather is warm or cold, we will go outside.",
    "The judge awarded the prize to the youngest singer.",
    "Every morning, the birds sing loudly outside my window.",
)


def speech_sentences(count: int = 400, *, seed: int = 0) -> list[str]:
    """``count`` distinct short English sentences: a fixed set of pangrams and phonetically varied
    sentences, then statements, questions and commands drawn from a small grammar with
    ``random.Random(seed)``. The same arguments always give the same list."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    rng = random.Random(seed)
    sentences = list(_FIXED_SENTENCES[:count])
    seen = set(sentences)
    forms = (
        lambda: f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}.",
        lambda: f"{rng.choice(_TIMES)}, {rng.choice(_SUBJECTS)} {rng.choice(_ADVERBS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.",
        lambda: f"{rng.choice(_QUESTION_WORDS)} did {rng.choice(_SUBJECTS)} leave {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}?",
        lambda: f"Did {rng.choice(_SUBJECTS)} really say that {rng.choice(_TIMES)}?",
        lambda: f"Please put {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}, and do it {rng.choice(_ADVERBS)}.",
        lambda: f"I think {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TIMES)}.",
        lambda: f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}, but {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.",
        lambda: f"There were {rng.randint(2, 99)} people {rng.choice(_PLACES)} {rng.choice(_TIMES)}.",
    )
    while len(sentences) < count:
        sentence = rng.choice(forms)()
        sentence = sentence[0].upper() + sentence[1:]
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


# ----------------------------------------------------------------------------- synthesis


def require_program(name: str) -> str:
    """The path of ``name`` on PATH, or a ``MissingDatasetError`` saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise MissingDatasetError(
            f"{name} is not installed (not found on PATH); the speech corpus is synthesised with it. "
            f"Install it with {INSTALL_HINT.get(name, f'your package manager ({name})')}."
        )
    return path


def program_version(name: str) -> str:
    """First line of ``name --version`` (part of the corpus's identity: other versions give other bytes)."""
    result = subprocess.run([require_program(name), "--version"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else "unknown"


def espeak_variants() -> set[str]:
    """The variant names the installed espeak-ng knows (``espeak-ng --voices=variant``, file column).
    espeak-ng silently falls back to the plain voice for an unknown variant, so the builder checks."""
    result = subprocess.run([require_program("espeak-ng"), "--voices=variant"], capture_output=True, text=True, check=False)
    return {line.split()[4].removeprefix("!v/") for line in result.stdout.splitlines()[1:] if len(line.split()) >= 5}


def synthesize(engine: str, voice: str, text: str, *, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """One utterance as ``(int16 samples, sample_rate)``.

    espeak-ng: ``voice`` is "accent+variant", ``speed`` in words per minute, ``pitch`` 0-99.
    flite: ``voice`` a built-in voice; ``speed`` in words per minute maps to ``duration_stretch``
    (175 wpm = 1.0), ``pitch`` 0-99 to a mean F0 target of 70 + 1.6 * pitch Hz.
    """
    import soundfile

    if engine == "espeak-ng":
        command = [require_program("espeak-ng"), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0 or not result.stdout:
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {result.stderr.decode(errors='replace').strip()}")
        data = result.stdout
    elif engine == "flite":
        with tempfile.TemporaryDirectory(prefix="simvq-flite-") as directory:
            path = Path(directory) / "out.wav"
            command = [
                require_program("flite"), "-voice", voice, "--setf", f"duration_stretch={175 / speed:.4f}",
                "--setf", f"int_f0_target_mean={70 + 1.6 * pitch:.1f}", "-t", text, "-o", str(path),
            ]
            result = subprocess.run(command, capture_output=True, check=False)
            if result.returncode != 0 or not path.is_file():
                raise RuntimeError(f"flite failed for voice {voice!r}: {result.stderr.decode(errors='replace').strip()}")
            data = path.read_bytes()
    else:
        raise ValueError(f"engine must be 'espeak-ng' or 'flite', got {engine!r}")
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    # espeak-ng's --stdout header carries an unknown length; soundfile reads to the end regardless
    return samples[:, 0].copy(), int(rate)


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


# ----------------------------------------------------------------------------- the corpus


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
        atomic_write_text(identity_path, json.dumps(identity, indent=2) + "\n")
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
    atomic_write_text(identity_path, json.dumps({**identity, "utterances": len(rows)}, indent=2) + "\n")
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


# ----------------------------------------------------------------------------- data sets


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


def pad_collate(batch: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Whole utterances ``(1, S_i)`` to ``(B, 1, max S)`` (zero-padded at the end) and their lengths ``(B,)``."""
    lengths = torch.tensor([item.shape[-1] for item in batch], dtype=torch.long)
    out = batch[0].new_zeros(len(batch), 1, int(lengths.max()))
    for i, item in enumerate(batch):
        out[i, :, : item.shape[-1]] = item
    return out, lengths


__all__ = [
    "ESPEAK_ACCENTS",
    "ESPEAK_VARIANTS",
    "FLITE_VOICES",
    "InMemorySpeech",
    "RandomClipBatches",
    "SpeechCorpus",
    "SpeechCorpusSpec",
    "WavFolder",
    "build_speech_corpus",
    "corpus_plan",
    "pad_collate",
    "read_audio",
    "read_manifest",
    "speech_sentences",
]
