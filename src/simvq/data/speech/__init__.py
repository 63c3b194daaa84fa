"""Speech data: a synthetic English corpus built offline with espeak-ng (and optionally flite),
users' own wav folders, and LibriTTS from its directory layout (``libritts``). Every data set yields
float32 waveforms ``(1, S)`` in ``[-1, 1]`` at its ``sample_rate``: random ``clip_seconds`` clips for
training, whole utterances when ``clip_seconds`` is None (evaluation).

Modules: ``sentences`` (the corpus's text), ``synthesis`` (the espeak-ng and flite subprocesses,
their voices), ``waveform`` (resampling, 16-bit PCM, WAV bytes and audio files), ``corpus`` (its
spec, building it on disk, its manifest) and ``datasets`` (the torch data sets and clip sampling).
"""

from .corpus import MANIFEST_FIELDS, SpeechCorpusSpec, build_speech_corpus, corpus_plan, rate_dir, read_manifest
from .datasets import AUDIO_SUFFIXES, FileClipBatches, InMemorySpeech, RandomClipBatches, SpeechCorpus, WavFolder, list_audio, pad_collate
from .libritts import LIBRITTS_SPLITS, LibriTTS
from .sentences import speech_sentences
from .synthesis import (
    ESPEAK_ACCENTS,
    ESPEAK_VARIANTS,
    FLITE_VOICES,
    INSTALL_HINT,
    espeak_variants,
    program_version,
    require_program,
    synthesize,
)
from .waveform import PCM_SCALE, read_audio, resample, to_int16, wav_bytes

__all__ = [
    "ESPEAK_ACCENTS",
    "ESPEAK_VARIANTS",
    "FLITE_VOICES",
    "FileClipBatches",
    "InMemorySpeech",
    "LIBRITTS_SPLITS",
    "LibriTTS",
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
