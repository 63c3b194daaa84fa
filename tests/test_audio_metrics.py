"""Audio metrics: PESQ/STOI/mel distance at their extremes and falling with noise, DNSMOS where
installed, usage over the real tokens only, and the files a run writes."""

import math
import os
import shutil

import numpy as np
import pytest
import soundfile
import torch

from simvq.data.speech import pad_collate, resample, synthesize
from simvq.metrics.audio import (
    PESQ_MAX,
    AudioMetrics,
    dnsmos,
    dnsmos_available,
    evaluate_codec,
    evenly_spaced,
    log_mel_distance,
    pesq_wideband,
    save_spectrogram_comparison,
    split_code_counts,
    stoi,
    write_wav,
)
from simvq.models import AudioCodec

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("pesq")
pytest.importorskip("pystoi")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

NOISE_LEVELS = (0.003, 0.02, 0.1)


@pytest.fixture(scope="module")
def speech():
    """About 2 s of espeak-ng speech at 16 kHz, float64 in [-1, 1]."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    samples, rate = synthesize("espeak-ng", "en-us+f3", "Please call Stella and ask her to bring these things.",
                               speed=170, pitch=50)
    return resample(samples / 32768.0, rate, 16000)


@pytest.fixture(scope="module")
def corpus_utterance():
    """The first test utterance of the default corpus (``SpeechCorpusSpec()``), synthesised as
    ``build_speech_corpus`` writes it at 16 kHz (16-bit), float64: 3.5 s, 9% of its mel frames digital
    silence."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from simvq.data.speech import SpeechCorpusSpec, corpus_plan, to_int16

    row = next(row for row in corpus_plan(SpeechCorpusSpec()) if row["split"] == "test")
    samples, rate = synthesize(row["engine"], row["voice"], row["sentence"], speed=row["speed"], pitch=row["pitch"])
    return to_int16(resample(samples, rate, 16000)) / 32768.0


def at_dbfs(clean, level_dbfs, seed=0):
    """``clean`` plus white noise whose RMS is ``level_dbfs`` dB re full scale (1.0)."""
    return clean + 10 ** (level_dbfs / 20) * np.random.default_rng(seed).standard_normal(clean.size)


def noisy(clean, level, seed=0):
    return clean + level * np.random.default_rng(seed).standard_normal(clean.size)


def test_pesq_and_stoi_are_at_their_maxima_for_the_clip_itself(speech):
    assert pesq_wideband(speech, speech, 16000) == pytest.approx(PESQ_MAX, abs=0.01)
    assert stoi(speech, speech, 16000) == pytest.approx(1.0, abs=1e-6)
    assert log_mel_distance(speech, speech, 16000) == 0.0
    # at 24 kHz PESQ resamples to 16 kHz first; STOI works at any rate
    speech24 = resample(speech, 16000, 24000)
    assert pesq_wideband(speech24, speech24, 24000) == pytest.approx(PESQ_MAX, abs=0.01)


def test_scores_fall_monotonically_with_noise(speech):
    pesq_scores = [pesq_wideband(speech, noisy(speech, level), 16000) for level in NOISE_LEVELS]
    stoi_scores = [stoi(speech, noisy(speech, level), 16000) for level in NOISE_LEVELS]
    mel_distances = [log_mel_distance(speech, noisy(speech, level), 16000) for level in NOISE_LEVELS]
    assert PESQ_MAX > pesq_scores[0] > pesq_scores[1] > pesq_scores[2] >= -0.5
    assert 1.0 > stoi_scores[0] > stoi_scores[1] > stoi_scores[2] > 0
    assert 0 < mel_distances[0] < mel_distances[1] < mel_distances[2]


def test_inaudible_noise_moves_the_mel_distance_by_under_0_05_and_audible_noise_still_counts(corpus_utterance):
    # The stated bound (docs and metrics.audio): white noise at or below -80 dBFS moves the distance
    # by at most 0.05 (8 corpus utterances, benchmarks/mel_floor.py: mean 0.023, largest 0.037).
    clean = corpus_utterance
    assert (clean == 0).mean() > 0.1  # the digital silence the absolute floor turned into distance
    for level in (-100, -90, -80):
        for seed in (0, 1):
            assert log_mel_distance(clean, at_dbfs(clean, level, seed), 16000) < 0.05, (level, seed)
        # the old metric (the absolute 1e-5 floor), on the same noise: what the floor removed
        assert log_mel_distance(clean, at_dbfs(clean, level), 16000, floor_dbfs=None) > 0.3
    distances = [log_mel_distance(clean, at_dbfs(clean, level), 16000) for level in (-80, -70, -50, -30)]
    assert distances[0] < distances[1] < distances[2] < distances[3] and distances[3] > 1.0, distances
    metrics = AudioMetrics(16000, codebook_size=8, use_dnsmos=False)
    reference = torch.from_numpy(clean).float().view(1, 1, -1)
    metrics.update(reference, torch.from_numpy(at_dbfs(clean, -90)).float().view(1, 1, -1))
    result = metrics.compute()  # the evaluation's metric is this one, and says so
    assert result["mel_distance"] < 0.05 and result["mel_floor_dbfs"] == -80.0


def test_pesq_on_silence_is_nan_not_an_error():
    assert math.isnan(pesq_wideband(np.zeros(16000), np.zeros(16000), 16000))
    with pytest.raises(ValueError, match="lengths differ"):
        pesq_wideband(np.zeros(100), np.zeros(101), 16000)


@pytest.mark.skipif(not dnsmos_available(), reason="DNSMOS needs speechmos and onnxruntime")
def test_dnsmos_scores_lie_on_the_mos_scale_and_background_noise_lowers_bak(speech):
    clean, loud_noise = dnsmos(speech, 16000), dnsmos(noisy(speech, 0.05), 16000)
    assert set(clean) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
    assert all(1.0 <= v <= 5.0 for v in (*clean.values(), *loud_noise.values()))
    assert loud_noise["dnsmos_bak"] < clean["dnsmos_bak"]


def test_reference_dnsmos_is_scored_once_per_utterance_across_runs(speech, monkeypatch):
    from simvq.metrics import audio

    calls = []

    def fake_dnsmos(wav, sample_rate):
        calls.append(float(np.abs(np.asarray(wav)).sum()))
        return {"dnsmos_sig": calls[-1], "dnsmos_bak": 1.0, "dnsmos_ovrl": 2.0}

    monkeypatch.setattr(audio, "dnsmos", fake_dnsmos)
    monkeypatch.setattr(audio, "_REFERENCE_DNSMOS", {})
    reference = torch.from_numpy(speech[:16000]).float().view(1, 1, -1)
    results = []
    for gain in (0.5, 0.25):  # two "runs": other reconstructions of the same test utterance
        metrics = AudioMetrics(16000, codebook_size=8, hop_length=320, use_dnsmos=True)
        metrics.update(reference, reference * gain)
        results.append(metrics.compute())
    assert len(calls) == 3  # two reconstructions, the reference once
    assert results[0]["dnsmos_sig_reference"] == results[1]["dnsmos_sig_reference"] == pytest.approx(float(reference.abs().sum()), rel=1e-5)
    assert results[0]["dnsmos_sig"] == pytest.approx(2 * results[1]["dnsmos_sig"], rel=1e-5)
    metrics.update(reference * 0.9, reference)  # another reference: scored anew
    assert len(calls) == 5


def test_usage_counts_only_the_tokens_of_real_audio(speech):
    metrics = AudioMetrics(16000, codebook_size=8, hop_length=320, use_dnsmos=False)
    length, short = 40 * 320, 12000  # the second utterance is zero-padded after ceil(12000 / 320) = 38 tokens
    reference = torch.zeros(2, 1, length)
    reference[0, 0] = torch.from_numpy(speech[:length])
    reference[1, 0, :short] = torch.from_numpy(speech[:short])
    codes = torch.stack([torch.arange(40) % 8, torch.tensor([7] * 38 + [0] * 2)])
    metrics.update(reference, reference.clone(), codes, lengths=torch.tensor([length, short]))
    result = metrics.compute()
    assert result["tokens"] == 40 + 38 and result["utterances"] == 2
    expected = np.bincount(np.concatenate([np.arange(40) % 8, [7] * 38]), minlength=8)
    assert metrics.histogram().tolist() == expected.tolist()
    assert result["usage"] == 1.0 and result["pesq"] == pytest.approx(PESQ_MAX, abs=0.01)
    assert result["stoi"] == pytest.approx(1.0, abs=1e-6) and result["mel_distance"] == 0.0
    assert result["pesq_failures"] == result["stoi_failures"] == 0
    probabilities = expected / expected.sum()
    assert result["perplexity"] == pytest.approx(math.exp(-(probabilities * np.log(probabilities)).sum()), rel=1e-5)


def test_stoi_of_too_little_speech_is_nan_and_left_out(speech):
    assert math.isnan(stoi(speech[:3000], speech[:3000], 16000))


def test_evaluate_codec_over_whole_utterances(speech):
    torch.manual_seed(0)
    model = AudioCodec(channels=4, dim=16, decoder_width=32, decoder_blocks=1, codebook_size=64)
    utterances = [torch.from_numpy(speech[:16000]).float().view(1, -1), torch.from_numpy(speech[:12345]).float().view(1, -1)]
    metrics, counts = evaluate_codec(model, utterances, use_dnsmos=False, coverage_dim=16, progress=False)
    assert metrics["tokens"] == counts.sum() == math.ceil(16000 / 320) + math.ceil(12345 / 320)
    assert metrics["utterances"] == 2 and 0 < metrics["usage"] <= 1 and counts.shape == (64,)
    for name in ("pesq", "stoi", "mel_distance", "usage_chao1", "coverage", "usage_reference"):
        assert name in metrics
    assert model.training  # put back as found


def test_a_capped_evaluation_spreads_its_utterances_across_the_split(speech):
    # a corpus stores its test split voice by voice: the first N utterances would hold few voices
    torch.manual_seed(0)
    model = AudioCodec(channels=4, dim=16, decoder_width=32, decoder_blocks=1, codebook_size=64)
    lengths = [3200, 6400, 9600, 12800, 16000, 19200]  # 10, 20, ... 60 tokens: the count names the picks
    utterances = [torch.from_numpy(speech[:n]).float().view(1, -1) for n in lengths]
    metrics, _ = evaluate_codec(model, utterances, max_utterances=3, use_dnsmos=False, coverage_dim=16, progress=False)
    assert metrics["utterances"] == 3 and metrics["tokens"] == 10 + 30 + 50  # utterances 0, 2, 4
    assert evenly_spaced(544, 100)[:3] == [0, 5, 10] and len(set(evenly_spaced(544, 100))) == 100
    assert evenly_spaced(3, 10) == [0, 1, 2]


def test_wav_writer_round_trips_and_leaves_no_temporary_file(tmp_path):
    wav = torch.linspace(-1.2, 1.2, 1000).view(1, 1, -1)  # out-of-range values are clipped
    write_wav(tmp_path / "out" / "a.wav", wav, 24000)
    samples, rate = soundfile.read(str(tmp_path / "out" / "a.wav"), dtype="float64")
    assert rate == 24000 and samples.shape == (1000,)
    assert np.allclose(samples, np.clip(np.linspace(-1.2, 1.2, 1000), -1, 1), atol=1 / 32768)
    assert os.listdir(tmp_path / "out") == ["a.wav"]


def test_spectrogram_figure_is_written(tmp_path, speech):
    save_spectrogram_comparison(tmp_path / "spec.png", speech, noisy(speech, 0.01), 16000, title="utterance 0")
    assert (tmp_path / "spec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["spec.png"]


def test_batched_evaluation_leaves_the_padded_frames_out(speech):
    """``batch_size`` > 1 pads utterances of unequal length together: the padded frames are masked
    in the quantizer and counted nowhere; utterances of one length (no padding) give the numbers of
    one-at-a-time evaluation."""
    torch.manual_seed(0)
    model = AudioCodec(channels=4, dim=16, decoder_width=32, decoder_blocks=1, codebook_size=64)
    lengths = [16000, 6000, 12345]
    utterances = [torch.from_numpy(speech[:n]).float().view(1, -1) for n in lengths]
    metrics, counts = evaluate_codec(model, utterances, use_dnsmos=False, progress=False, batch_size=2)
    assert metrics["utterances"] == 3 and metrics["tokens"] == counts.sum() == sum(math.ceil(n / 320) for n in lengths)
    assert model.training  # put back as found
    split = split_code_counts(model, utterances, batch_size=3)
    assert split.sum() == sum(math.ceil(n / 320) for n in lengths)
    model.eval()
    wav, sizes = pad_collate(utterances)
    codes = model.encode(wav, lengths=sizes)
    assert torch.equal(split, torch.bincount(codes[codes >= 0], minlength=64))
    model.train()
    same = [torch.from_numpy(speech[i * 100 : i * 100 + 9000]).float().view(1, -1) for i in range(3)]
    batched, batched_counts = evaluate_codec(model, same, use_dnsmos=False, progress=False, batch_size=3)
    single, single_counts = evaluate_codec(model, same, use_dnsmos=False, progress=False)
    assert torch.equal(batched_counts, single_counts) and torch.equal(split_code_counts(model, same, batch_size=2), single_counts)
    for name, value in single.items():
        assert batched[name] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), name
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluate_codec(model, same, progress=False, batch_size=0)
