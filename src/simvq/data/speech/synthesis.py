"""Speech synthesis by subprocess: espeak-ng (an accent crossed with a voice variant) and flite
(built-in voices), one utterance at a time, with the voices the corpus draws from and the engines'
versions (part of a corpus's identity)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..fashion_mnist import MissingDatasetError

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


__all__ = [
    "ESPEAK_ACCENTS",
    "ESPEAK_VARIANTS",
    "FLITE_VOICES",
    "INSTALL_HINT",
    "espeak_variants",
    "program_version",
    "require_program",
    "synthesize",
]
