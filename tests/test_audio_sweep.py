"""`simvq bench audio`'s plumbing on a tiny codec, a folder of synthetic voices and a few steps: one row
per run with the speech columns, and a rerun recomputes nothing (the report: test_speech_report.py)."""

import json
from pathlib import Path

import pytest

pytest.importorskip("lightning")
soundfile = pytest.importorskip("soundfile")
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"), pytest.mark.usefixtures("one_thread")]

from helpers import tiny_audio_overrides, write_voice_folders
from simvq.experiments import sweep
from simvq.experiments.results_file import read_results

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 4


@pytest.fixture(scope="module")
def audio_sweep(tmp_path_factory):
    from simvq.cli import build_parser

    root = write_voice_folders(tmp_path_factory.mktemp("audio_sweep"))
    args = build_parser().parse_args([
        "bench", "audio", *tiny_audio_overrides(root, steps=BUDGET), "--config", str(ROOT / "configs/bench/speech.yaml"),
        "--methods", "simvq", "vq", "--sizes", "64", "--seeds", "0", "--budget", str(BUDGET),
        "--out", str(root / "runs"), "--results", str(root / "speech.csv"),
    ])
    spec = sweep._spec_from_args(args)
    spec.recipe = str(ROOT / spec.recipe)  # the sweep file names it relative to the repository
    return root, spec, sweep.run_sweep(spec, sweep.audio_runs(spec), progress=False)


@pytest.mark.slow  # ~30 s: two codecs trained and evaluated
def test_audio_sweep_appends_one_row_per_run_with_the_speech_columns(audio_sweep):
    root, spec, added = audio_sweep
    assert [row["method"] for row in added] == ["simvq", "vq"]
    rows = read_results(spec.results)
    assert list(rows[0]) == sweep.AUDIO_FIELDS
    # the bench recipe counts usage over the train and test splits (the test split: 0.6 s and 0.7 s at 16 kHz,
    # 65 tokens of 320 samples)
    test = sum(-(-soundfile.info(path).frames // 320) for path in (root / "test").glob("*.wav"))
    tokens = test + sum(-(-soundfile.info(path).frames // 320) for path in (root / "train").glob("*.wav"))
    for row, method in zip(rows, ["simvq", "vq"]):
        assert (row["method"], row["codebook_size"], row["seed"], row["steps"], row["max_steps"]) == (method, "64", "0", "4", "4")
        assert test == 65 and int(row["tokens"]) == tokens > test and float(row["tokens_per_code"]) == pytest.approx(tokens / 64)
        assert 0 < float(row["usage"]) <= 1 and 1 <= float(row["perplexity"]) <= 64
        assert row["utterances"] == "2" and -0.5 <= float(row["pesq"]) <= 4.65 and 0 <= float(row["stoi"]) <= 1
        assert float(row["mel_distance"]) > 0 and row["dnsmos_ovrl"] == ""  # eval.dnsmos=false
        assert float(row["train_seconds"]) > 0 and float(row["seconds_per_step"]) == pytest.approx(float(row["train_seconds"]) / 4, abs=1e-3)
        assert row["device"] and Path(row["run_dir"], "samples", "00_spectrogram.png").is_file()
        metrics = json.loads(Path(row["run_dir"], "metrics.json").read_text())
        assert float(row["usage"]) == pytest.approx(metrics["usage"]) and metrics["quantizer"] == method


@pytest.mark.slow
def test_audio_sweep_never_recomputes_a_finished_row(audio_sweep):
    _, spec, _ = audio_sweep
    assert sweep.run_sweep(spec, sweep.audio_runs(spec), progress=False) == []
    assert len(read_results(spec.results)) == 2


def test_bench_audio_reads_its_sweep_file_and_refuses_what_the_audio_recipe_lacks(capsys):
    from simvq.cli import build_parser, main

    spec = sweep._spec_from_args(build_parser().parse_args(["bench", "audio", "--config", str(ROOT / "configs/bench/speech.yaml")]))
    assert (spec.kind, spec.out, spec.results, spec.until_plateau) == ("audio", "runs/bench/speech", "speech_results.csv", False)
    runs = sweep.audio_runs(spec)
    assert {run.method for run in runs} == {"simvq", "vq", "vq_ema", "fsq"} and {run.codebook_size for run in runs} == {4096, 65536}
    assert len(runs) == 4 * 2 + 2 * 2  # seed 1 for simvq and vq only
    for argv, named in ((["--until-plateau"], "--until-plateau"), (["--stages", "2"], "--stages"),
                        (["--config", str(ROOT / "configs/bench/image.yaml")], "--config")):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", "audio", "--config", str(ROOT / "configs/bench/speech.yaml"), *argv, "--quiet"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"simvq bench: error: {named}")


def test_bench_overrides_may_follow_its_options_and_an_unknown_option_is_still_refused(capsys):
    from simvq.cli import build_parser, parse

    parser = build_parser()
    args = parse(parser, ["bench", "audio", "eval.samples=2", "--budget", "2000", "--quiet", "eval.max_utterances=100", "trainer.checkpoint_every=250"])
    assert args.overrides == ["eval.samples=2", "eval.max_utterances=100", "trainer.checkpoint_every=250"] and args.budget == 2000
    for extra in (["--bogus"], ["not-an-override"]):
        with pytest.raises(SystemExit) as exit_info:
            parse(parser, ["bench", "audio", "--quiet", "eval.max_utterances=100", *extra])
        assert exit_info.value.code == 2 and f"unrecognized arguments: eval.max_utterances=100 {extra[0]}" in capsys.readouterr().err
