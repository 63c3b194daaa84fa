"""A speech run's learning curve from the reconstructions it wrote while training, and its projection."""

import math
import shutil

import numpy as np
import pytest

from simvq.data.speech import resample, synthesize
from simvq.data.speech.waveform import read_audio
from simvq.experiments.speech_curve import CURVE_FIELDS, projected_step, quality_curve, sample_steps, write_curve
from simvq.metrics.audio import pesq_wideband, stoi, write_wav

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def speech():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    samples, rate = synthesize("espeak-ng", "en-us+m3", "The birch canoe slid on the smooth planks.", speed=170, pitch=50)
    return resample(samples / 32768.0, rate, 16000)


def test_the_curve_scores_each_steps_pairs_as_the_evaluation_does(tmp_path, speech):
    rng = np.random.default_rng(0)
    noise = {500: 0.1, 1000: 0.02, 1500: 0.005}  # the later, the cleaner
    expected = {}
    for step, level in noise.items():
        directory = tmp_path / "samples" / (f"step_{step}" if step < 1500 else "")
        for index in range(2):
            degraded = np.clip(speech + level * rng.standard_normal(speech.size), -1, 1)
            write_wav(directory / f"{index:02d}_original.wav", speech, 16000)
            write_wav(directory / f"{index:02d}_reconstruction.wav", degraded, 16000)
        # the files are 16-bit: the expected scores are of what was written, as the curve reads it back
        originals = [read_audio(directory / f"{i:02d}_original.wav", 16000) for i in range(2)]
        degradeds = [read_audio(directory / f"{i:02d}_reconstruction.wav", 16000) for i in range(2)]
        expected[step] = (np.mean([pesq_wideband(o, d, 16000) for o, d in zip(originals, degradeds)]),
                          np.mean([stoi(o, d, 16000) for o, d in zip(originals, degradeds)]))
    assert [step for step, _ in sample_steps(tmp_path)] == [500, 1000]  # the final samples/ need their step
    rows = quality_curve(tmp_path, final_step=1500)
    assert [row["step"] for row in rows] == [500, 1000, 1500] and all(row["utterances"] == 2 for row in rows)
    for row in rows:
        assert (row["pesq"], row["stoi"]) == pytest.approx(expected[row["step"]], abs=1e-6)
    assert rows[0]["pesq"] < rows[1]["pesq"] < rows[2]["pesq"] and rows[0]["stoi"] < rows[2]["stoi"]
    write_curve(rows, tmp_path / "curve.csv")
    assert (tmp_path / "curve.csv").read_text().splitlines()[0] == ",".join(CURVE_FIELDS)


def test_no_pairs_is_an_error_naming_the_directory(tmp_path):
    (tmp_path / "samples" / "step_500").mkdir(parents=True)
    with pytest.raises(ValueError, match="step_500"):
        quality_curve(tmp_path)


def test_projection_of_a_log_linear_curve_is_exact_and_refuses_a_flat_one():
    rows = [{"step": s, "pesq": 1.0 + 0.1 * math.log(s / 500)} for s in (500, 1000, 1500, 2000, 2500, 3000)]
    assert projected_step(rows, "pesq", 1.5) == pytest.approx(500 * math.exp(5), rel=1e-6)
    assert projected_step(rows, "pesq", 1.1) == 3000  # already reached: the curve's last step
    assert projected_step([{**row, "pesq": 1.05} for row in rows], "pesq", 1.5) is None
    assert projected_step(rows[:3], "pesq", 1.5) is None  # too few points in the second half
