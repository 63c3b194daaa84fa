"""LibriTTS from its directory layout (simvq.data.speech.libritts) on a tiny generated tree: split
selection, 24 kHz out of 16 kHz files, seeded clips, whole utterances, transcripts, in-memory batches."""

import numpy as np
import pytest
import soundfile
import torch

from simvq.data import InMemorySpeech, MissingDatasetError, RandomClipBatches, pad_collate
from simvq.data.speech.libritts import LibriTTS

pytestmark = pytest.mark.usefixtures("one_thread")


def tone(seconds, rate, frequency=440.0, amplitude=0.3):
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


# split -> (speaker, chapter, utterance, seconds, rate, frequency)
TREE = {
    "train-clean-100": [(19, 198, 0, 2.5, 24000, 300.0), (19, 198, 1, 0.6, 24000, 500.0), (26, 495, 0, 3.0, 16000, 440.0)],
    "train-clean-360": [(100, 7, 0, 1.5, 24000, 250.0)],
    "test-clean": [(1089, 134686, 0, 2.0, 24000, 350.0), (121, 121726, 3, 1.2, 16000, 600.0)],
}


@pytest.fixture(scope="module")
def libritts(tmp_path_factory):
    """``<tmp>/LibriTTS/<split>/<speaker>/<chapter>/<id>.wav`` + ``.normalized.txt`` (+ an unrelated file)."""
    top = tmp_path_factory.mktemp("corpora")
    for split, utterances in TREE.items():
        for speaker, chapter, number, seconds, rate, frequency in utterances:
            directory = top / "LibriTTS" / split / str(speaker) / str(chapter)
            directory.mkdir(parents=True, exist_ok=True)
            name = f"{speaker}_{chapter}_{number:06d}_000000"
            soundfile.write(directory / f"{name}.wav", tone(seconds, rate, frequency), rate, subtype="PCM_16")
            (directory / f"{name}.normalized.txt").write_text(f"Utterance {number} of speaker {speaker}.")
            (directory / f"{name}.original.txt").write_text("ignored")
        (top / "LibriTTS" / split / "SPEAKERS.txt").write_text("not audio")
    return top


def test_splits_are_selected_from_the_layout(libritts):
    train = LibriTTS(libritts, "train-clean-100", clip_seconds=None)  # the folder holding LibriTTS/
    assert [train.utterance(i) for i in range(len(train))] == ["19_198_000000_000000", "19_198_000001_000000", "26_495_000000_000000"]
    assert [train.speaker(i) for i in range(len(train))] == ["19", "19", "26"]
    assert train.transcript(2) == "Utterance 0 of speaker 26."
    both = LibriTTS(libritts / "LibriTTS", ("train-clean-100", "train-clean-360"), clip_seconds=None)
    assert len(both) == 4 and both.files[:3] == train.files and both.splits == ("train-clean-100", "train-clean-360")
    test = LibriTTS(libritts, "test-clean", clip_seconds=None)
    assert len(test) == 2 and not set(test.files) & set(both.files)
    assert len({train.cache_key, both.cache_key, test.cache_key}) == 3 and "24000hz" in test.cache_key
    with pytest.raises(MissingDatasetError, match="split test-other not found .*present: train-clean-100, train-clean-360, test-clean"):
        LibriTTS(libritts, "test-other")
    with pytest.raises(ValueError, match="splits must be one or more of"):
        LibriTTS(libritts, "train-clean-50")
    with pytest.raises(ValueError, match="twice"):
        LibriTTS(libritts, ["test-clean", "test-clean"])


def test_whole_utterances_at_24_khz_including_resampled_16_khz_files(libritts):
    test = LibriTTS(libritts, "test-clean", clip_seconds=None)
    assert test.sample_rate == 24000
    lengths = [test[i].shape for i in range(len(test))]
    assert lengths == [(1, 48000), (1, round(1.2 * 24000))]  # the second file is 16 kHz
    resampled = test[1][0].numpy()
    reference = tone(1.2, 24000, 600.0)
    middle = slice(1000, -1000)  # away from the filter's edges
    assert np.abs(resampled[middle] - reference[middle]).max() < 2e-3
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(np.argmax(spectrum) * 24000 / len(resampled) - 600.0) < 2
    batch, sizes = pad_collate([test[0], test[1]])
    assert batch.shape == (2, 1, 48000) and sizes.tolist() == [48000, 28800]
    at_16k = LibriTTS(libritts, "test-clean", clip_seconds=None, sample_rate=16000)
    assert at_16k[1].shape == (1, round(1.2 * 16000))


def test_one_second_clips_repeat_for_a_seed(libritts):
    def clips(seed):
        data = LibriTTS(libritts, "train-clean-100", seed=seed)
        return torch.cat([data[i] for i in (0, 2, 0, 2, 1)])

    first = clips(4)
    assert first.shape == (5, 24000)
    assert torch.equal(first, clips(4))
    assert not torch.equal(first, clips(5))
    assert not torch.equal(first[0], first[2])  # a new position each time an item is read
    assert torch.equal(first[4, 14400:], torch.zeros(9600))  # the 0.6 s utterance, zero-padded
    # the clips are pieces of the utterances
    whole = LibriTTS(libritts, "train-clean-100", clip_seconds=None)[0][0]
    starts = [p for p in range(len(whole) - 24000 + 1) if whole[p] == first[0, 0] and torch.equal(whole[p : p + 24000], first[0])]
    assert starts


def test_in_memory_batches_from_libritts(libritts):
    data = LibriTTS(libritts, ("train-clean-100", "train-clean-360"))
    memory = InMemorySpeech(data)
    assert len(memory) == 4 and memory.cache_key == data.cache_key
    assert memory.offsets[-1] == round((2.5 + 0.6 + 3.0 + 1.5) * 24000)
    batches = iter(RandomClipBatches(memory, batch_size=3, clip_samples=24000, seed=1))
    batch = next(batches)
    assert batch.shape == (3, 1, 24000) and batch.abs().max() <= 0.31
    again = next(iter(RandomClipBatches(memory, batch_size=3, clip_samples=24000, seed=1)))
    assert torch.equal(batch, again)
