"""The speech table's listening page: a player per codec and utterance, from run folders or kept copies,
and a headless-Chromium check that reports each player's outcome."""

import numpy as np
import pytest

from simvq.experiments.listening import check_listening_page, chromium, codec_samples, write_listening_page
from simvq.experiments.results_file import append_result
from simvq.experiments.sweep import AUDIO_FIELDS
from simvq.metrics.audio import write_wav


def codec(tmp_path, method, seed, *, utterances, run_dir=None):
    row = {"method": method, "codebook_size": 4096, "seed": seed, "steps": 3000, "max_steps": 3000, "pesq": 1.25, "stoi": 0.713,
           "run_dir": str(run_dir) if run_dir else "gone"}
    append_result(tmp_path / "results.csv", row, fields=AUDIO_FIELDS)
    folder = (run_dir or tmp_path / "runs" / f"main-{method}-K4096-seed{seed}-steps3000") / "samples"
    folder.mkdir(parents=True)
    tone = 0.1 * np.sin(np.linspace(0, 2000, 8000))
    for index in utterances:
        write_wav(folder / f"{index:02d}_original.wav", tone, 16000)
        write_wav(folder / f"{index:02d}_reconstruction.wav", 0.9 * tone, 16000)
    return folder


@pytest.fixture
def table(tmp_path):
    codec(tmp_path, "simvq", 0, utterances=[0, 1])
    codec(tmp_path, "simvq", 1, utterances=[0, 1])  # a second seed: the page plays the first
    codec(tmp_path, "fsq", 0, utterances=[0], run_dir=tmp_path / "elsewhere" / "fsq")  # the run directory itself
    return tmp_path / "results.csv"


def test_the_page_plays_each_codecs_first_seed_on_the_same_utterances(table, tmp_path):
    codecs = codec_samples(table)
    assert [(c["method"], c["row"]["seed"], c["utterances"]) for c in codecs] == [("simvq", "0", [0, 1]), ("fsq", "0", [0])]
    page = write_listening_page(table)
    text = page.read_text()
    assert page == tmp_path / "index.html" and text.count("<audio") == 3 + 2  # utterance 1: original, simvq, fsq; utterance 2: original, simvq
    assert 'src="runs/main-simvq-K4096-seed0-steps3000/samples/00_reconstruction.wav"' in text
    assert 'src="elsewhere/fsq/samples/00_reconstruction.wav"' in text and "seed1" not in text
    assert "<td>1.25</td><td>0.71</td>" in text


def test_no_samples_is_an_error_naming_the_file(tmp_path):
    append_result(tmp_path / "results.csv", {"method": "vq", "codebook_size": 4096, "seed": 0, "max_steps": 10, "run_dir": "gone"}, fields=AUDIO_FIELDS)
    with pytest.raises(ValueError, match="results.csv: no run"):
        write_listening_page(tmp_path / "results.csv")


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine")
def test_headless_chromium_loads_every_player_and_reports_a_missing_file(table, tmp_path):
    page = write_listening_page(table)
    outcome = check_listening_page(page)
    assert outcome["summary"] == "5 ok, 0 failed" and set(outcome["players"].values()) == {"ok"}
    (tmp_path / "elsewhere" / "fsq" / "samples" / "00_reconstruction.wav").unlink()
    outcome = check_listening_page(page)
    assert outcome["players"]["elsewhere/fsq/samples/00_reconstruction.wav"] == "error" and outcome["summary"] == "4 ok, 1 failed"


def test_the_page_plays_the_committed_kept_copy_even_where_the_run_directory_exists(tmp_path):
    """A page built on the machine that trained the codec must still play in a fresh checkout, which
    has the campaign's kept copies (docs/speech/runs/<slug>/) but not the ignored run directories."""
    run_dir = tmp_path / "runs" / "campaign" / "audio" / "runs" / "main" / "vq-K4096-seed0-steps3000"
    codec(tmp_path, "vq", 0, utterances=[0], run_dir=run_dir)
    kept = tmp_path / "runs" / "main-vq-K4096-seed0-steps3000" / "samples"
    kept.mkdir(parents=True)
    for name in ("00_original.wav", "00_reconstruction.wav"):
        (kept / name).write_bytes((run_dir / "samples" / name).read_bytes())
    text = write_listening_page(tmp_path / "results.csv").read_text()
    assert 'src="runs/main-vq-K4096-seed0-steps3000/samples/00_reconstruction.wav"' in text and "campaign" not in text
