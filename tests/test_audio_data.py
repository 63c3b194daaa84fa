"""Speech data: the synthetic corpus (deterministic, split by voice, resumable, install hint), wav
folders (resampling, corrupt files), clips and the in-memory variant."""

import shutil

import numpy as np
import pytest
import soundfile
import torch

from simvq.data import (
    InMemorySpeech,
    MissingDatasetError,
    RandomClipBatches,
    SpeechCorpus,
    SpeechCorpusSpec,
    WavFolder,
    build_speech_corpus,
    pad_collate,
    read_manifest,
)
from simvq.data.speech import corpus_plan, speech_sentences

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

# 3 variants x 1 accent x 2 sentences = 6 utterances; the test split holds one variant
TINY = SpeechCorpusSpec(seed=3, accents=("en-us",), variants=("m3", "f2", "klatt"), utterances_per_voice=2,
                        sentences=20, sample_rates=(16000, 24000))


def corpus_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, build_speech_corpus(root, TINY, workers=2)


@needs_espeak
def test_corpus_is_deterministic_for_a_seed_and_resumes(tiny_corpus, tmp_path):
    root, rows = tiny_corpus
    again = build_speech_corpus(tmp_path / "again", TINY)
    assert again == rows == read_manifest(root)
    assert (root / "manifest.csv").read_bytes() == (tmp_path / "again" / "manifest.csv").read_bytes()
    assert corpus_bytes(root) == corpus_bytes(tmp_path / "again")
    assert len(corpus_bytes(root)) == 2 * len(rows) == 12  # every utterance at both rates
    # a resumed build keeps finished files and redoes the missing ones, byte for byte
    lost = tmp_path / "again" / "24000hz" / rows[0]["file"]
    lost.unlink()
    assert build_speech_corpus(tmp_path / "again", TINY) == rows
    assert lost.read_bytes() == (root / "24000hz" / rows[0]["file"]).read_bytes()


@needs_espeak
def test_corpus_splits_by_voice_and_records_what_it_synthesised(tiny_corpus):
    root, rows = tiny_corpus
    train = {row["voice"] for row in rows if row["split"] == "train"}
    test = {row["voice"] for row in rows if row["split"] == "test"}
    assert train and test and not train & test
    train_variants = {row["variant"] for row in rows if row["split"] == "train"}
    assert not train_variants & {row["variant"] for row in rows if row["split"] == "test"}
    for row in rows:
        assert row["voice"] == f"en-us+{row['variant']}"
        assert 130 <= row["speed"] <= 200 and 25 <= row["pitch"] <= 75
        assert row["sentence"] in speech_sentences(20, seed=3)
        for rate in (16000, 24000):
            info = soundfile.info(str(root / f"{rate}hz" / row["file"]))
            assert info.samplerate == rate and info.channels == 1
            assert abs(info.frames / rate - row["duration"]) < 1e-3
        assert 0.5 < row["duration"] < 15
    assert len({(r["sentence"], r["voice"]) for r in rows}) == len(rows)  # no sentence twice for a voice


@needs_espeak
@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
def test_flite_voices_join_the_corpus_split_by_voice_too(tmp_path):
    spec = SpeechCorpusSpec(seed=0, accents=("en-us",), variants=("m1", "f1"), utterances_per_voice=1, sentences=10,
                            sample_rates=(24000,), flite=True, flite_utterances_per_voice=1)
    rows = build_speech_corpus(tmp_path, spec)
    flite = [r for r in rows if r["engine"] == "flite"]
    assert [r["voice"] for r in flite] == ["awb", "rms", "slt", "kal16"]
    assert {r["split"] for r in flite} == {"train", "test"}  # one of the four flite voices is held out
    for row in flite:  # synthesised at 16 kHz, stored at 24 kHz
        assert soundfile.info(str(tmp_path / "24000hz" / row["file"])).samplerate == 24000 and row["duration"] > 0.5


def test_plan_changes_with_the_seed_and_holds_unseen_variants_at_test():
    spec = SpeechCorpusSpec(seed=0, accents=("en-us", "en-gb"), variants=tuple(f"m{i}" for i in range(1, 9)))
    plan, other = corpus_plan(spec), corpus_plan(SpeechCorpusSpec(**{**spec.__dict__, "seed": 1}))
    assert plan == corpus_plan(spec) and plan != other
    test_variants = {r["variant"] for r in plan if r["split"] == "test"}
    assert len(test_variants) == round(0.2 * 8)  # a fifth of the variants, with every accent
    assert {r["voice"] for r in plan if r["split"] == "test"} == {f"{a}+{v}" for a in spec.accents for v in test_variants}
    assert len({r["id"] for r in plan}) == len(plan) == 2 * 8 * 4


def test_sentences_are_distinct_and_reproducible():
    sentences = speech_sentences(300, seed=5)
    assert len(sentences) == len(set(sentences)) == 300
    assert sentences == speech_sentences(300, seed=5) and sentences != speech_sentences(300, seed=6)
    assert all(s[0].isupper() and s[-1] in ".?!" for s in sentences)


def test_missing_espeak_gives_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(MissingDatasetError, match=r"apt-get install espeak-ng"):
        build_speech_corpus(tmp_path / "corpus", TINY)
    with pytest.raises(FileNotFoundError, match="build_speech_corpus"):  # and an unbuilt corpus says how to build it
        SpeechCorpus(tmp_path / "corpus", "train")


@needs_espeak
def test_a_directory_holding_another_corpus_is_refused(tiny_corpus):
    root, _ = tiny_corpus
    with pytest.raises(ValueError, match="different speech corpus"):
        build_speech_corpus(root, SpeechCorpusSpec(**{**TINY.__dict__, "seed": 4}))


@needs_espeak
def test_corpus_data_sets_give_clips_or_whole_utterances(tiny_corpus):
    root, rows = tiny_corpus
    test_rows = [r for r in rows if r["split"] == "test"]
    whole = SpeechCorpus(root, "test", sample_rate=24000, clip_seconds=None)
    assert len(whole) == len(test_rows) and [r["id"] for r in whole.manifest] == [r["id"] for r in test_rows]
    item = whole[0]
    assert item.shape == (1, round(test_rows[0]["duration"] * 24000)) and item.dtype == torch.float32
    clips = SpeechCorpus(root, "train", sample_rate=16000, clip_seconds=0.5, seed=1)
    first = [clips[i] for i in range(len(clips))]
    assert all(c.shape == (1, 8000) for c in first)
    again = SpeechCorpus(root, "train", sample_rate=16000, clip_seconds=0.5, seed=1)
    assert all(torch.equal(a, again[i]) for i, a in enumerate(first))  # seeded
    # each clip is a slice of its utterance
    full = SpeechCorpus(root, "train", sample_rate=16000, clip_seconds=None)
    utterance, clip = full[0][0].numpy(), first[0][0].numpy()
    assert is_slice(clip, utterance)
    with pytest.raises(MissingDatasetError, match="8000 Hz"):
        SpeechCorpus(root, "train", sample_rate=8000)


def is_slice(clip, utterance):
    """Whether ``clip`` occurs in ``utterance``: candidates from one loud sample, then compared in full."""
    anchor = int(np.argmax(np.abs(clip)))
    candidates = np.flatnonzero(utterance[anchor : utterance.size - clip.size + anchor + 1] == clip[anchor])
    return any(np.array_equal(utterance[s : s + clip.size], clip) for s in candidates)


@needs_espeak
def test_in_memory_speech_matches_the_files_and_batches_clips(tiny_corpus):
    root, _ = tiny_corpus
    disk = SpeechCorpus(root, "train", sample_rate=16000, clip_seconds=None)
    memory = InMemorySpeech(disk)
    assert len(memory) == len(disk) and memory.audio.dtype == torch.int16
    for i in range(len(disk)):
        assert torch.equal(memory[i], disk[i])  # 16-bit files held as int16: exact
    batches = iter(RandomClipBatches(memory, batch_size=3, clip_samples=4000, seed=0))
    batch = next(batches)
    assert batch.shape == (3, 1, 4000) and batch.dtype == torch.float32
    utterances = [memory.load(i) for i in range(len(memory))]
    for clip in batch[:, 0].numpy():  # every clip is a slice of some utterance (searched exhaustively)
        assert any(is_slice(clip, u) for u in utterances)
    assert torch.equal(next(iter(RandomClipBatches(memory, 3, 4000, seed=0))), batch)
    # a stream started at batch 5 (a run resumed at step 5) continues the uninterrupted one exactly
    straight = [next(batches) for _ in range(6)]
    resumed = iter(RandomClipBatches(memory, 3, 4000, seed=0, start=5))
    assert torch.equal(next(resumed), straight[4]) and torch.equal(next(resumed), straight[5])
    with pytest.raises(ValueError, match="start must be a non-negative integer"):
        RandomClipBatches(memory, 3, 4000, start=-1)


def write(path, samples, rate):
    soundfile.write(str(path), samples, rate, subtype="PCM_16")


def test_wav_folder_resamples_and_mixes_to_mono(tmp_path):
    t = np.arange(8000) / 8000
    write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)  # 1 s at 8 kHz
    stereo = np.stack([0.2 * np.ones(4000), 0.4 * np.ones(4000)], axis=1)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "b.flac", stereo, 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    dataset = WavFolder(tmp_path, sample_rate=16000, clip_seconds=None)
    assert [f.name for f in dataset.files] == ["a.wav", "b.flac"]
    sine = dataset[0][0].numpy()
    assert sine.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(sine))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins: still 440 Hz after resampling
    assert np.allclose(dataset[1][0].numpy(), 0.3, atol=1e-3)
    short = WavFolder(tmp_path, sample_rate=16000, clip_seconds=1.0)[1]
    assert short.shape == (1, 16000) and torch.all(short[0, 4000:] == 0)  # zero-padded to a clip


def test_a_corrupt_file_is_named(tmp_path):
    write(tmp_path / "good.wav", np.zeros(1600), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00garbage, not a wav file" * 10)
    dataset = WavFolder(tmp_path, sample_rate=16000)
    index = [f.name for f in dataset.files].index("broken.wav")
    with pytest.raises(ValueError, match=r"broken\.wav"):
        dataset[index]
    assert dataset[1 - index].shape == (1, 16000)
    with pytest.raises(ValueError, match="no audio files"):
        WavFolder(tmp_path / "empty", files=[])


def test_clips_are_seeded_per_dataloader_worker(monkeypatch):
    from types import SimpleNamespace

    import simvq.data.speech.datasets as speech

    utterance = np.arange(10_000, dtype=np.float32)
    worker = {"info": None}
    monkeypatch.setattr(speech, "get_worker_info", lambda: worker["info"])

    def starts(seed, info, draws=5):
        worker["info"] = info
        clipper = speech._Clipper(100, seed)
        return [int(clipper(utterance)[0]) for _ in range(draws)]

    main = starts(0, None)
    assert main == starts(0, None) and main != starts(1, None)  # the main process: seeded by `seed`
    first, second = SimpleNamespace(id=0, seed=1234), SimpleNamespace(id=1, seed=1235)
    assert starts(0, first) == starts(0, first)  # a worker's clips repeat for the same worker seed
    assert len({tuple(main), tuple(starts(0, first)), tuple(starts(0, second))}) == 3  # and differ between workers
    # one clipper follows the worker it runs in (a new epoch's workers get new seeds from torch)
    clipper = speech._Clipper(100, 0)
    worker["info"] = first
    epoch_one = [int(clipper(utterance)[0]) for _ in range(5)]
    worker["info"] = SimpleNamespace(id=0, seed=9999)
    assert [int(clipper(utterance)[0]) for _ in range(5)] != epoch_one


def test_pad_collate():
    batch, lengths = pad_collate([torch.ones(1, 3), 2 * torch.ones(1, 5)])
    assert batch.shape == (2, 1, 5) and lengths.tolist() == [3, 5]
    assert batch[0, 0].tolist() == [1, 1, 1, 0, 0] and batch[1, 0].tolist() == [2] * 5
