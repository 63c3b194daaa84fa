"""How the log-mel distance reads inaudible and audible differences, with the absolute floor it had
(``LOG_FLOOR`` = 1e-5) and with the -80 dBFS noise floor it has now (issue #27, item 1).

The references are real corpus utterances: ``--utterances`` test utterances of the default espeak-ng
corpus (``SpeechCorpusSpec()``), evenly spaced across its test split, synthesised at 16 kHz into a
temporary directory exactly as ``build_speech_corpus`` writes them (or read from ``--corpus``, a
built corpus). Each is degraded by white noise at a level in dBFS (the noise's RMS re 1.0, seeded by
the utterance's index), by a gain, low-pass filters, 8-bit quantisation, or STFT phase randomised
with the magnitudes kept; the table gives the mean distance over the utterances (and the largest one
for the inaudible noise levels) under each floor, plus the share of frames that sit at the old floor.
A third column is the other design considered, dither at load: the reference gets white noise at
-80 dBFS (seeded per utterance), the degradations are applied to that dithered reference, and the old
floor is kept. It hides inaudible noise as well, but a reconstruction that is digitally silent where
the reference is (the last row: the clean utterance itself) then scores as badly as the old floor's
inaudible noise, and one with a noise floor of the same level but other samples does not score 0:
the codec would be trained and ranked on reproducing noise nobody hears. Hence the floor.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/mel_floor.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from simvq.data.spectral import FLOOR_DBFS, LOG_FLOOR, LogMelSpectrogram  # noqa: E402

RATE = 16000
NOISE_DBFS = (-100, -90, -80, -70, -60, -50, -40, -30)
INAUDIBLE_DBFS = -80  # at or below: the level the new floor treats as silence


def corpus_utterances(count: int, corpus: str | None) -> list[np.ndarray]:
    import soundfile

    from simvq.data.speech.corpus import SpeechCorpusSpec, _build_one, corpus_plan, rate_dir
    from simvq.metrics.audio import evenly_spaced

    rows = [row for row in corpus_plan(SpeechCorpusSpec()) if row["split"] == "test"]
    chosen = [rows[i] for i in evenly_spaced(len(rows), count)]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(corpus or scratch)
        if corpus is None:
            for row in chosen:
                _build_one(root, row, (RATE,))
        return [soundfile.read(rate_dir(root, RATE) / row["file"], dtype="float64")[0] for row in chosen]


def degrade(name: str, clean: np.ndarray, seed: int) -> np.ndarray:
    from scipy import signal

    rng = np.random.default_rng(seed)
    if name.startswith("noise "):
        return clean + 10 ** (float(name.split()[1]) / 20) * rng.standard_normal(clean.size)
    if name.startswith("gain "):
        return clean * 10 ** (float(name.split()[1]) / 20)
    if name.startswith("low-pass "):
        cutoff = float(name.split()[1])
        return signal.sosfiltfilt(signal.butter(8, cutoff, fs=RATE, output="sos"), clean)
    if name == "8-bit":
        return np.round(clean * 128) / 128
    if name == "random phase":  # the magnitudes kept, the phase of every STFT bin drawn anew
        _, _, spectrum = signal.stft(clean, fs=RATE, nperseg=512, noverlap=384)
        spectrum = np.abs(spectrum) * np.exp(2j * np.pi * rng.random(spectrum.shape))
        return signal.istft(spectrum, fs=RATE, nperseg=512, noverlap=384)[1][: clean.size]
    raise ValueError(name)


def dither(clean: np.ndarray, index: int) -> np.ndarray:
    return clean + 10 ** (FLOOR_DBFS / 20) * np.random.default_rng(10_000 + index).standard_normal(clean.size)


def distances(mel: LogMelSpectrogram, references: list[np.ndarray], name: str, *, dithered: bool = False) -> np.ndarray:
    values = []
    for index, clean in enumerate(references):
        reference = dither(clean, index) if dithered else clean
        if name == "clean":  # the undithered utterance as the reconstruction
            degraded = clean
        elif name == "other dither":  # a noise floor of the same level, other samples
            degraded = clean + (dither(clean, index + 1) - clean)[::-1].copy()
        else:
            degraded = degrade(name, reference, index)
        pair = torch.from_numpy(np.stack([reference, degraded])).float()
        spectra = mel(pair)
        values.append(float((spectra[0] - spectra[1]).abs().mean()))
    return np.array(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--corpus", help="a built default corpus (data.root) instead of synthesising the utterances")
    args = parser.parse_args()
    torch.set_num_threads(1)
    references = corpus_utterances(args.utterances, args.corpus)
    floors = {"old (1e-5)": LogMelSpectrogram(RATE, floor_dbfs=None), f"new ({FLOOR_DBFS:g} dBFS)": LogMelSpectrogram(RATE)}
    old = floors["old (1e-5)"]
    silent = [float((old(torch.from_numpy(x).float()[None])[0] <= np.log(LOG_FLOOR) + 1e-6).all(0).float().mean()) for x in references]
    seconds = sum(x.size for x in references) / RATE
    print(f"{len(references)} corpus test utterances, {seconds:.1f} s; frames at the old floor: {100 * np.mean(silent):.1f}% "
          f"({100 * min(silent):.1f}-{100 * max(silent):.1f}%)\n")
    names = [f"noise {level}" for level in NOISE_DBFS] + ["gain -1", "gain -6", "low-pass 7000", "low-pass 4000", "8-bit", "random phase"]
    designs = [(label, mel, False) for label, mel in floors.items()] + [(f"dither at load ({FLOOR_DBFS:g} dBFS), old floor", old, True)]
    print(f"| degradation | {' | '.join(f'mel distance, {label}' for label, _, _ in designs)} |")
    print("|---|" + "---|" * len(designs))
    for name in [*names, "other dither", "clean"]:
        cells = []
        for _, mel, dithered in designs:
            values = distances(mel, references, name, dithered=dithered)
            quiet = name.startswith("noise ") and float(name.split()[1]) <= INAUDIBLE_DBFS
            cells.append(f"{values.mean():.3f}" + (f" (max {values.max():.3f})" if quiet else ""))
        label = {"other dither": "another -80 dBFS noise floor", "clean": "digital silence (the clean utterance)"}.get(
            name,
            f"{name} dBFS" if name.startswith("noise") else f"{name} dB" if name.startswith("gain") else (f"{name} Hz" if name.startswith("low") else name))
        print(f"| {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
