"""The speech section of ``simvq report`` on a hand-built ``simvq bench audio`` CSV.

Layout: K=4,096 with simvq and vq at 2 seeds each and fsq at seed 0; K=65,536 with simvq and vq at
seed 0. The numbers are chosen so that at K=4,096 SimVQ's usage and mel distance beat VQ's beyond
twice the larger seed std, its PESQ is within the spread, and every FSQ comparison rests on one run.
"""

import pytest
from PIL import Image

from helpers import report_section_twice
from simvq.experiments.comparison import group_rows
from simvq.experiments.speech_report import findings
from simvq.experiments.sweep import AUDIO_FIELDS


def codec_run(method, k, seed, *, usage, pesq, mel, dnsmos=3.0, run_dir="", budget=2000):
    return {"method": method, "codebook_size": k, "codes": 4375 if method == "fsq" else k, "seed": seed, "steps": budget, "max_steps": budget, "usage": usage,
            "tokens": 100_000, "tokens_per_code": 100_000 / k, "perplexity": 100.0, "pesq": pesq, "stoi": 0.9,
            "mel_distance": mel, "dnsmos_ovrl": dnsmos, "dnsmos_ovrl_reference": 3.5, "train_seconds": 4000,
            "seconds_per_step": 2.0, "device": "cpu (2 cores)", "run_dir": run_dir}


@pytest.fixture
def rows(tmp_path):
    run_dir, vq_dir = tmp_path / "runs" / "simvq-K4096-seed0", tmp_path / "runs" / "vq-K4096-seed0"
    for directory in (run_dir, vq_dir):
        (directory / "samples").mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(directory / "samples" / "00_spectrogram.png")
    return [
        codec_run("simvq", 4096, 0, usage=0.95, pesq=2.00, mel=0.50, dnsmos=3.0, run_dir=str(run_dir)),
        codec_run("simvq", 4096, 1, usage=0.97, pesq=2.10, mel=0.52, dnsmos=3.2),
        codec_run("vq", 4096, 0, usage=0.30, pesq=2.02, mel=0.60, dnsmos=2.9, run_dir=str(vq_dir)),
        codec_run("vq", 4096, 1, usage=0.34, pesq=2.06, mel=0.62, dnsmos=3.1),
        codec_run("fsq", 4096, 0, usage=1.00, pesq=2.30, mel=0.55),
        codec_run("simvq", 65536, 0, usage=0.60, pesq=1.90, mel=0.70, run_dir=str(tmp_path / "no-samples")),
        codec_run("vq", 65536, 0, usage=0.02, pesq=1.80, mel=0.80),
        codec_run("simvq", 4096, 0, usage=0.01, pesq=9.99, mel=9.0, budget=100),  # a shorter budget: superseded
    ]


def test_verdicts_follow_the_seed_spread(rows):
    notes = findings(group_rows(rows, budget="max_steps"))
    usage = next(n for n in notes if n.startswith("K=4,096, usage %") and " vs vq " in n)
    # 96.0 ± 1.4 vs 32.0 ± 2.8 (2 seeds each): Welch p = 0.005
    assert usage.endswith("→ simvq better: +64.0 (95% CI [+50.2, +77.8], p = 0.005, Welch, 2 vs 2 seeds).") and "simvq 96.0 ± 1.4 (2)" in usage
    mel = next(n for n in notes if n.startswith("K=4,096, mel distance") and " vs vq " in n)
    assert "→ simvq better: -0.100" in mel  # lower is better
    pesq = next(n for n in notes if n.startswith("K=4,096, PESQ") and " vs vq " in n)
    assert "→ no significant difference (+0.01; " in pesq
    dnsmos = next(n for n in notes if n.startswith("K=4,096, DNSMOS OVRL") and " vs vq " in n)
    assert "no significant difference" in dnsmos  # 3.10 vs 3.00, both ± 0.14
    fsq = next(n for n in notes if n.startswith("K=4,096, PESQ") and " vs fsq " in n)
    assert fsq.endswith("→ -0.25 (one run on a side: no test).")
    big = next(n for n in notes if n.startswith("K=65,536, usage %"))
    assert big.endswith("→ +58.0 (one run on a side: no test).")
    assert not any("tokens counted" in n for n in notes)  # a property of the split, not a score


def test_cli_writes_tables_verdicts_and_the_spectrogram_and_keeps_the_other_blocks(rows, tmp_path):
    text, figures = report_section_twice("--speech", "speech-report", rows, AUDIO_FIELDS, tmp_path)
    table = text.split("**K=4,096**", 1)[1].split("**K=65,536**", 1)[0]
    lines = table.strip().splitlines()
    assert lines[0] == "| method | usage % ↑ | tokens counted | PESQ ↑ | STOI ↑ | mel distance ↓ | DNSMOS OVRL ↑ |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| simvq", "| vq", "| fsq"]
    assert lines[2] == "| simvq | 96.0 ± 1.4 (2) | 100,000 ± 0 (2) | 2.05 ± 0.07 (2) | 0.900 ± 0.000 (2) | 0.510 ± 0.014 (2) | 3.10 ± 0.14 (2) |"
    assert lines[4] == "| fsq | 100.0 (1) | 100,000 (1) | 2.30 (1) | 0.900 (1) | 0.550 (1) | 3.00 (1) |"
    assert "9.99" not in text  # the 100-step run is superseded by the 2,000-step one
    assert "every codec trained for 2,000 steps" in text and "the test utterances themselves: 3.50" in text
    assert "tokens per code: 24.4 at K=4,096, 1.5 at K=65,536); methods whose codebook is not K codes: fsq K=4,096: 4,375 codes." in text
    assert (figures / "speech_spectrogram_simvq_K4096.png").is_file()
    assert "](figures/speech_spectrogram_simvq_K4096.png)" in text
    assert not (figures / "speech_spectrogram_simvq_K65536.png").exists()  # its run directory holds no samples
    # every method's spectrogram of the same utterance, side by side in the method order of the tables
    assert sorted(path.name for path in figures.iterdir()) == ["speech_spectrogram_simvq_K4096.png", "speech_spectrogram_vq_K4096.png"]
    assert text.index("](figures/speech_spectrogram_simvq_K4096.png)") < text.index("](figures/speech_spectrogram_vq_K4096.png)")


def test_cli_empty_speech_csv_is_one_line(tmp_path, capsys):
    from simvq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--speech", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r.md")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("simvq report: error: --speech:") and "simvq bench audio" in err


def test_a_capped_evaluation_with_fewer_tokens_than_codes_states_the_usage_ceiling(rows):
    from simvq.experiments.speech_report import header

    assert not any("Fewer test tokens" in line for line in header(group_rows(rows, budget="max_steps"), "x.csv"))
    for row in rows:
        if row["codebook_size"] == 65536:
            row.update(tokens=20_000, tokens_per_code=20_000 / 65536, usage_reference=0.18)
    lines = header(group_rows(rows, budget="max_steps"), "x.csv")
    usage = next(line for line in lines if line.startswith("- Usage"))
    assert "(the test utterances themselves: 3.50)" in next(line for line in lines if line.startswith("- PESQ"))  # not the usage ceiling
    assert usage.endswith("at the same K and token count uses 18.0% at K=65,536 of its codes. "
                          "Fewer test tokens than codes cap usage at tokens / codes: 30.5% at K=65,536.")


def test_the_usage_line_names_the_splits_the_runs_counted(rows):
    import json
    from pathlib import Path

    from simvq.experiments.speech_report import header

    usage = lambda: next(line for line in header(group_rows(rows, budget="max_steps"), "x.csv") if line.startswith("- Usage"))  # noqa: E731
    assert usage().startswith("- Usage: codes used over every token of the test split (")
    for row in rows:
        if row["run_dir"]:
            Path(row["run_dir"]).mkdir(parents=True, exist_ok=True)
            (Path(row["run_dir"]) / "metrics.json").write_text(json.dumps({"usage_splits": ["train", "test"]}))
    assert usage().startswith("- Usage: codes used over every token of the test split / the train + test splits (")


def test_usage_over_training_is_one_figure_per_k_of_every_run_with_a_history(rows, tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from simvq.experiments.speech_report import usage_figures
    from simvq.train import plots

    histories = {}
    for row in rows:  # simvq seed 0 and vq seed 0 at K=4,096 get a history; the K=65,536 run dir has none
        if row["run_dir"] and Path(row["run_dir"]).is_dir():
            history = [{"step": 50 * i, "usage": 0.1 * i, "perplexity": 10.0 * i, "dead_fraction": 1 - 0.1 * i, "tokens": 800} for i in (1, 2, 3)]
            (Path(row["run_dir"]) / "usage_history.json").write_text(json.dumps(history))
            histories[f"{row['method']} seed {row['seed']}"] = history
    drawn = {}
    real = plots.usage_over_steps
    monkeypatch.setattr(plots, "usage_over_steps", lambda runs, path: (drawn.update({path.name: runs}), real(runs, path)))
    figures = usage_figures(group_rows(rows, budget="max_steps"), tmp_path / "figs")
    assert [(label, path.name) for label, path in figures] == [
        ("usage per logging window during training, K=4,096", "speech_usage_over_steps_K4096.png")]
    assert drawn == {"speech_usage_over_steps_K4096.png": histories}  # both runs, in the tables' method order
    assert list(drawn["speech_usage_over_steps_K4096.png"]) == ["simvq seed 0", "vq seed 0"]
    with Image.open(figures[0][1]) as image:
        assert image.width > 100 and image.height > 100


def test_the_header_states_each_runs_gan_quantizer_loss_and_mel_floor(rows):
    import json
    from pathlib import Path

    from simvq.experiments.speech_report import header

    lines = lambda: header(group_rows(rows, budget="max_steps"), "x.csv")  # noqa: E731
    line = lambda start: next((text for text in lines() if text.startswith(start)), None)  # noqa: E731
    # without run files the methods' quantizer losses are still stated; nothing else is guessed
    assert line("- Quantizer loss: `loss.quantizer_weight` times each method's own: simvq: 0.25 MSE")
    assert "fsq: nothing: FSQ has no quantizer loss" in line("- Quantizer loss") and "vq_ema" not in line("- Quantizer loss")
    assert line("- Discriminators") is None and line("- Mel distance") is None
    simvq_dir, vq_dir = (Path(rows[i]["run_dir"]) for i in (0, 2))
    for directory, gan, floor in ((simvq_dir, True, -80.0), (vq_dir, False, None)):
        loss = {"quantizer_weight": 1000.0, "discriminator": gan, "discriminator_start": 0}
        (directory / "config.json").write_text(json.dumps({"loss": loss}))
        (directory / "metrics.json").write_text(json.dumps({"mel_floor_dbfs": floor} if floor else {"pesq": 1.0}))
    assert line("- Quantizer loss: `loss.quantizer_weight` (1000) times each method's own: ")
    assert line("- Discriminators") == "- Discriminators (multi-period + multi-resolution, feature matching): off (1 run); on from step 0 (1 run)."
    mel = line("- Mel distance")
    assert "each mel band floored at its response to white noise at -80 dBFS (1 run); the old absolute 1e-5 floor (1 run)" in mel
    assert mel.endswith("Distances under different floors are not comparable.")


def test_the_target_section_reads_kept_copies_and_projects_the_best_codecs_curve(tmp_path):
    """Run directories gone: the report reads the campaign's kept copies beside the CSV (config, metrics,
    the learning curve) and states the target against the best codec at K=4,096 (fsq here)."""
    import json
    import math

    from simvq.experiments.speech_curve import write_curve

    rows = [codec_run("simvq", 4096, 0, usage=0.9, pesq=1.20, mel=0.5, run_dir="gone", budget=3000),
            codec_run("fsq", 4096, 0, usage=1.0, pesq=1.30, mel=0.5, run_dir="gone", budget=3000)]
    for row in rows:
        kept = tmp_path / "runs" / f"main-{row['method']}-K4096-seed0-steps3000"
        (kept / "samples").mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(kept / "samples" / "00_spectrogram.png")
        (kept / "config.json").write_text(json.dumps({"loss": {"quantizer_weight": 1000.0, "discriminator": True, "discriminator_start": 1000}}))
        (kept / "metrics.json").write_text(json.dumps({"usage_splits": ["train", "test"], "mel_floor_dbfs": -80.0}))
        # PESQ rises by 0.1 per e-fold of steps from 1.0 at step 500: 1.5 at step 500 e^5
        write_curve([{"step": s, "utterances": 8, "pesq": 1.0 + 0.1 * math.log(s / 500), "stoi": 0.7} for s in range(500, 3001, 500)],
                    kept / "quality_curve.csv")
    text, figures = report_section_twice("--speech", "speech-report", rows, AUDIO_FIELDS, tmp_path)
    assert "every token of the train + test splits" in text and "on from step 1000 (2 runs)" in text
    target = text.split("### Quality against the target", 1)[1].split("###", 1)[0]
    assert "is **fsq**'s (whether it is above the others is the tests' word, above): PESQ 1.30 (1)" in target
    assert "**not reached** at this budget" in target
    # P.862.2: raw 0 maps to 0.999 + 4 / (1 + e^3.8224) = 1.0846; the means 1.20 and 1.30 sit 0.12 and 0.22 above it
    assert "sends raw scores of −0.5 and 0 to 1.04 and 1.08, and the codecs' means (1.20–1.30) sit only 0.12–0.22 above" in target
    assert f"PESQ 1.5 at step ~{500 * math.exp(5):,.0f}" in target and "STOI 0.8 not projected" in target  # 74,207: within 100x
    # the 100 test utterances score 1.30 where the curve's 8 score 1.0 + 0.1 ln 6: the target shifted by that offset
    offset = 1.0 + 0.1 * math.log(6) - 1.30
    assert (f"(the test utterances score 1.300 at that step, {abs(offset):.3f} above the curve; shifted by that, at step "
            f"~{500 * math.exp((0.5 + offset) / 0.1):,.0f})") in target
    assert "simvq seed 0: at step" not in target  # the projection is the best codec's
    assert (figures / "speech_quality_over_steps_K4096.png").is_file() and (figures / "speech_spectrogram_fsq_K4096.png").is_file()


def test_a_projection_far_beyond_the_budget_is_not_given(tmp_path, monkeypatch):
    import math

    from simvq.experiments import speech_report

    nearly_flat = [{"step": s, "utterances": 8, "pesq": 1.17 + 0.001 * math.log(s), "stoi": 0.7} for s in range(500, 3001, 500)]
    monkeypatch.setattr(speech_report, "read_curve", lambda row, kept=None: nearly_flat)
    groups = {("fsq", 4096): {"0": codec_run("fsq", 4096, 0, usage=1.0, pesq=1.2, mel=0.5)}}
    text = "\n".join(speech_report.quality_target(groups, tmp_path, tmp_path))
    assert "PESQ 1.5 not within 100x the steps trained" in text and "STOI 0.8 not projected" in text


def test_the_question_is_answered_per_rival_on_the_quality_measures(rows):
    from simvq.experiments.comparison import rival_summaries
    from simvq.experiments.speech_report import QUALITY

    notes = rival_summaries(group_rows(rows, budget="max_steps"), QUALITY)
    vq = next(n for n in notes if n.startswith("K=4,096, SimVQ − vq "))
    # mel 0.51 vs 0.61, each mean's variance 1e-4: t = 0.1 / sqrt(2e-4) = 7.07 on 2 dof, p = 0.019;
    # lower is better, so SimVQ's -0.100 is the better side
    assert vq.startswith("K=4,096, SimVQ − vq (2 vs 2 seeds, Welch): SimVQ better on mel distance -0.100, p = 0.019; ")
    assert "; no significant difference on PESQ +0.01, p = 0.88; STOI 0.000, p = 1.00; DNSMOS OVRL +0.10, p = 0.55." in vq
    assert "usage" not in vq and "vq better" not in vq
    fsq = next(n for n in notes if n.startswith("K=4,096, SimVQ − fsq"))
    assert fsq == "K=4,096, SimVQ − fsq: one run on a side, no test: PESQ -0.25; STOI 0.000; mel distance -0.040; DNSMOS OVRL +0.10."


def test_the_header_states_the_campaigns_spend_from_its_ledger(rows, tmp_path):
    from simvq.experiments.speech_report import header

    results = tmp_path / "results.csv"
    spend = lambda: [line for line in header(group_rows(rows, budget="max_steps"), results) if line.startswith("- Spent")]  # noqa: E731
    assert spend() == []  # no ledger, no line
    (tmp_path / "spend.csv").write_text("run,cpu_seconds,wall_seconds,finished\na,3600,4000,t\nb,5400,6000,t\n")
    assert spend() == [f"- Spent: 2.50 CPU-hours recorded over 2 landed runs (`{(tmp_path / 'spend.csv').as_posix()}`: each run's CPU "
                       "seconds, training and evaluation; the protocol states any spend before the ledger)."]


def test_verdicts_read_holms_adjustment_over_the_ks_rivals_on_each_measure():
    """Two rivals tested on the mel distance: fsq's raw p is below α, but not once Holm's correction
    covers both tests, so no side is taken; usage, where both pass, keeps its verdicts."""
    from scipy.stats import ttest_ind

    from simvq.experiments.comparison import rival_summaries
    from simvq.experiments.speech_report import QUALITY
    from simvq.experiments.stats import holm

    mels = {"simvq": [0.670, 0.684], "vq": [0.730, 0.736], "fsq": [0.612, 0.618]}
    rows = [codec_run(m, 4096, s, usage=0.5, pesq=1.2, mel=v) for m, values in mels.items() for s, v in enumerate(values)]
    raw = [ttest_ind(mels["simvq"], mels[m], equal_var=False).pvalue for m in ("vq", "fsq")]
    adjusted = holm(raw)
    assert raw[1] < 0.05 <= adjusted[1]
    (fsq,) = [n for n in rival_summaries(group_rows(rows, budget="max_steps"), QUALITY) if "SimVQ − fsq" in n]
    assert "fsq better" not in fsq and f"mel distance +0.062, p = {raw[1]:.3f}, Holm p = {adjusted[1]:.3f}" in fsq
    (line,) = [n for n in findings(group_rows(rows, budget="max_steps")) if "mel distance" in n and "vs fsq" in n]
    assert "→ no significant difference" in line and f"Holm p = {adjusted[1]:.3f}" in line


def test_a_precision_every_recipe_fixed_is_read_from_the_kept_configs(tmp_path):
    """Rows that predate the precision column still trained in what their recipe fixed; "auto" or a
    missing config says nothing."""
    import json

    from simvq.experiments.results_file import precision_text
    from simvq.experiments.speech_report import fixed_precision

    def row(name, precision):
        folder = tmp_path / name
        folder.mkdir()
        if precision is not None:
            (folder / "config.json").write_text(json.dumps({"trainer": {"precision": precision}}))
        return {"run_dir": str(folder)}

    fixed = [row("a", "32"), row("b", "32")]
    assert fixed_precision(fixed) == "32"
    assert precision_text(fixed, fixed="32").startswith("every run trained in precision 32, which its recipe fixes")
    assert fixed_precision([*fixed, row("c", "auto")]) is None
    assert fixed_precision([*fixed, row("d", "bf16-mixed")]) is None
    assert fixed_precision([*fixed, row("e", None)]) is None
    assert "precision not recorded for 1 run" in precision_text([{"precision": ""}])


def test_the_usage_line_states_the_untrained_reference_at_each_k(rows):
    """Usage at few tokens a code has a ceiling far below 100% for any quantizer: the line gives an
    untrained quantizer's usage at each K's own token count, a span where the runs' counts differ."""
    from simvq.experiments.speech_report import header

    for row in rows:
        row["usage_reference"] = 0.967 if row["codebook_size"] == 4096 else 0.70 + 0.01 * row["seed"] + (0.02 if row["method"] == "vq" else 0)
    usage = next(line for line in header(group_rows(rows, budget="max_steps"), "x.csv") if line.startswith("- Usage"))
    assert usage.endswith("at the same K and token count uses 96.7% at K=4,096, 70.0–72.0% at K=65,536 of its codes.")
