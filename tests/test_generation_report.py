"""The generation section of ``simvq report`` on a hand-built ``simvq bench generation`` CSV.

Layout: K=1,024 with simvq and vq at 2 seeds each and fsq at seed 0; K=8,192 with simvq only. The
numbers are chosen so that SimVQ's domain FID is better than VQ's beyond twice the seed std, its
class accuracy is within the spread, and the FSQ comparison rests on one run.
"""

import pytest
from PIL import Image

from helpers import report_section_twice
from simvq.experiments.generation_bench import GENERATION_FIELDS
from simvq.experiments.generation_report import findings, group_rows


def prior_run(method, k, seed, *, fid, accuracy, bits=4.0, entropy=7.0, run_dir="", steps=3000):
    return {"method": method, "codebook_size": k, "seed": seed, "steps": steps, "nll_bits_per_token": bits,
            "nll_bits_per_image": bits * 49, "test_entropy_bits": entropy, "test_usage": 0.9, "domain_fid": fid,
            "domain_fid_samples": 1000, "domain_fid_train": 2.0, "class_accuracy": accuracy, "train_seconds": 600,
            "device": "cpu", "run_dir": run_dir}


@pytest.fixture
def rows(tmp_path):
    run_dir = tmp_path / "runs" / "simvq-K1024-seed0"
    run_dir.mkdir(parents=True)
    Image.new("L", (8, 8), 128).save(run_dir / "samples.png")
    return [
        prior_run("simvq", 1024, 0, fid=10.0, accuracy=0.80, run_dir=str(run_dir)),
        prior_run("simvq", 1024, 1, fid=11.0, accuracy=0.78),
        prior_run("vq", 1024, 0, fid=20.0, accuracy=0.79),
        prior_run("vq", 1024, 1, fid=21.0, accuracy=0.81),
        prior_run("fsq", 1024, 0, fid=9.0, accuracy=0.70, bits=5.0),
        prior_run("simvq", 8192, 0, fid=12.0, accuracy=0.75),
        prior_run("simvq", 1024, 0, fid=99.0, accuracy=0.1, steps=100),  # a shorter budget: superseded
    ]


def test_verdicts_follow_the_seed_spread(rows):
    notes = findings(group_rows(rows))
    fid_vq = next(n for n in notes if "domain FID" in n and " vs vq " in n)
    # 10.5 ± 0.7 vs 20.5 ± 0.7 (2 seeds each): Welch t = -14.1 on 2 degrees of freedom, p = 0.005
    assert "simvq better: -10.0 (95% CI [-13.0, -7.0], p = 0.005, Welch, 2 vs 2 seeds)" in fid_vq and "(2)" in fid_vq
    accuracy_vq = next(n for n in notes if "class accuracy" in n and " vs vq " in n)
    assert "no significant difference" in accuracy_vq
    fid_fsq = next(n for n in notes if "domain FID" in n and " vs fsq " in n)
    assert fid_fsq.endswith("+1.5 (one run on a side: no test).")
    assert not any("K=8,192" in n for n in notes)  # no rival at 8,192: no verdict


def table_row(text: str, title: str, method: str) -> str:
    table = text.split(title, 1)[1].split("\n\n", 2)[1]
    return next(line for line in table.splitlines() if line.startswith(f"| {method} |"))


def test_cli_writes_tables_grids_and_keeps_the_sweep_block(rows, tmp_path):
    text, figures = report_section_twice("--generation", "generation-report", rows, GENERATION_FIELDS, tmp_path)
    assert "3.000 ± 0.000 (2)" in table_row(text, "**K=1,024**: the prior and its likelihood", "simvq")  # entropy − bits
    assert "10.5 ± 0.7 (2)" in table_row(text, "**K=1,024**: samples at the default setting", "simvq")  # domain FID
    assert "tuned" not in text.split("### SimVQ", 1)[0].split("Cells:", 1)[1]  # no tuned columns in these rows: no table
    assert "99.0" not in text  # the 100-step prior is superseded by the 3,000-step one
    assert (figures / "generation_samples_simvq_K1024.png").is_file() and "tuned setting" not in text.split("### Samples", 1)[1]
    assert "](figures/generation_samples_simvq_K1024.png)" in text


def test_cli_empty_generation_csv_is_one_line(tmp_path, capsys):
    from simvq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--generation", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r.md")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "simvq bench generation" in err


def test_a_single_seed_difference_that_rounds_to_zero_takes_no_side():
    from simvq.experiments.comparison import verdict
    from simvq.experiments.report import summarize

    same = verdict(summarize([67.35, 69.89]), summarize([68.58]), scale=1.0, digits=1, lower=False)
    assert same == "0.0 (one run on a side: no test)"  # not "-0.0" or "+0.0"
    assert verdict(summarize([67.43, 69.97]), summarize([68.5]), scale=1.0, digits=1, lower=False) == "+0.2 (one run on a side: no test)"


def test_an_old_csv_renders_beside_new_rows_with_the_new_columns_and_floors(rows, tmp_path):
    """Rows written before the tuned setting, KID, floors and rFID existed (the old header) and rows
    with every new column, in one file: the old ones' new cells read as missing."""
    import csv

    old_fields = ["method", "codebook_size", "seed", "steps", "nll_bits_per_token", "nll_bits_per_image", "nll_bits_per_token_unconditional",
                  "test_entropy_bits", "test_usage", "test_perplexity", "domain_fid", "domain_fid_samples", "domain_fid_train",
                  "class_accuracy", "fid", "fid_samples", "train_seconds", "device", "tokenizer_run", "run_dir"]
    results = tmp_path / "old.csv"
    with results.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=old_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[2:4])  # vq, seeds 0 and 1
    from simvq.experiments.results_file import append_result

    for seed, (fid, tuned, setting) in enumerate([(10.0, 8.0, "T=0.9 top-p=0.9"), (11.0, 8.5, "T=0.9 top-p=0.9")]):
        row = prior_run("simvq", 1024, seed, fid=fid, accuracy=0.8)
        row.update({"domain_fid_samples": 5000, "fid_samples": 1000, "prior_parameters": 930_000, "trained_steps": 1500, "best_step": 1250,
                    "best_val_nll_bits_per_token": 3.9,
                    "stop_reason": "plateau", "domain_kid": 0.5, "domain_kid_std": 0.1, "domain_precision": 0.7, "domain_recall": 0.6,
                    "sampling": "T=1", "sampling_tuned": setting, "tune_grid": "T {0.8, 0.9, 1} x top-p {none, 0.9} x CFG {none, 1.5, 3}",
                    "tune_seed": 1, "tune_samples": 1000, "sample_seed": 0, "tune_domain_fid": 7.0, "domain_fid_tuned": tuned,
                    "domain_kid_tuned": 0.3, "domain_kid_std_tuned": 0.05, "class_accuracy_tuned": 0.85, "domain_fid_train": 2.5,
                    "domain_kid_train": 0.01, "domain_precision_train": 0.75, "domain_recall_train": 0.76, "fid_train": 4.0,
                    "domain_rfid": 5.0, "rfid": 9.0, "eval_seconds": 900})
        append_result(results, row, fields=GENERATION_FIELDS)  # rewrites the file under the new header
    from simvq.experiments.results_file import read_results

    stored = read_results(results)
    assert list(stored[0]) == GENERATION_FIELDS and stored[0]["domain_fid_tuned"] == "" and stored[0]["domain_fid"] == "20.0"
    from simvq.cli import main

    out = tmp_path / "results.md"
    assert main(["report", "--generation", str(results), "--out", str(out), "--figures", str(tmp_path / "figures")]) == 0
    text = out.read_text()
    prior = table_row(text, "**K=1,024**: the prior and its likelihood", "simvq")
    assert "0.93 ± 0.00 (2)" in prior and "1,500 ± 0 (2)" in prior and "3.900 ± 0.000 (2)" in prior and "plateau (2)" in prior
    vq_prior = table_row(text, "**K=1,024**: the prior and its likelihood", "vq")
    assert vq_prior.count("–") == 4  # parameters, steps, best validation bits, stop reason: not in the old rows
    default = table_row(text, "**K=1,024**: samples at the default setting", "simvq")
    assert "10.5 ± 0.7 (2)" in default and "0.50 ± 0.00 (2)" in default and "70.0 ± 0.0 (2)" in default and "5.0 ± 0.0 (2)" in default
    assert table_row(text, "**K=1,024**: samples at the default setting", "vq").startswith("| vq | 20.5 ± 0.7 (2) | – |")
    tuned = table_row(text, "**K=1,024**: samples at each prior's tuned setting (fresh set)", "simvq")
    assert "8.2 ± 0.4 (2)" in tuned and "T=0.9 top-p=0.9 (2)" in tuned
    assert "–" in table_row(text, "**K=1,024**: samples at each prior's tuned setting (fresh set)", "vq")
    # floors per image count: the old rows' at 1,000 samples, the new rows' at 5,000
    assert ("domain FID 2.0 ± 0.0 (2) at 1,000 images; domain FID 2.5 ± 0.0 (2) at 5,000 images; domain KID 0.01 ± 0.00 (2) at 5,000 "
            "images; precision % 75.0 ± 0.0 (2) at 5,000 images") in text and "Inception FID 4.0 ± 0.0 (2) at 1,000 images" in text
    assert "T {0.8, 0.9, 1} x top-p {none, 0.9} x CFG {none, 1.5, 3} on 1,000 samples at seed 1" in text
    assert "fresh set at seed 0" in text and "0.5 h of evaluation" in text
    # the tuned domain FID has a verdict only where both sides have it: none against the old vq rows
    assert not any("domain FID, tuned" in note for note in findings(group_rows(read_results(results))))


def test_prior_sizes_get_their_own_tables_verdicts_and_an_axis_table(tmp_path):
    kept = tmp_path / "runs" / "prior_small-vq-K1024-seed0-steps3000"  # a campaign's kept copy: the run directory is gone
    kept.mkdir(parents=True)
    Image.new("L", (8, 8), 64).save(kept / "samples.png")
    Image.new("L", (8, 8), 32).save(kept / "validation_nll.png")
    rows = []
    for prior, simvq_fid, params in (("prior_small", (30.0, 31.0), 270000), ("prior_large", (10.0, 11.0), 2880000)):
        for seed in (0, 1):
            rows.append({**prior_run("simvq", 1024, seed, fid=simvq_fid[seed], accuracy=0.8), "prior": prior, "prior_parameters": params})
            rows.append({**prior_run("vq", 1024, seed, fid=20.0 + seed, accuracy=0.8, run_dir="gone" if prior == "prior_small" else ""),
                         "prior": prior, "prior_parameters": params})
    text, figures = report_section_twice("--generation", "generation-report", rows, GENERATION_FIELDS, tmp_path)
    assert "in 2 sizes (`prior_small`: 0.27M at K=1,024; `prior_large`: 2.88M at K=1,024)" in text
    axis = text.split("### Prior size as an axis", 1)[1].split("###", 1)[0]
    assert axis.index("`prior_small`") < axis.index("`prior_large`")
    assert "| simvq | 30.5 ± 0.7 (2) | 10.5 ± 0.7 (2) |" in axis
    verdicts = next(line for line in axis.splitlines() if line.startswith("| simvq − vq |"))
    small, large = [cell.strip() for cell in verdicts.split("|")[2:4]]
    assert small.startswith("vq better: +10.0") and large.startswith("simvq better: -10.0")  # the gap reverses with size
    assert "**K=1,024, `prior_large` prior**: samples at the default setting" in text
    assert "- `prior_small` prior, K=1,024, domain FID: simvq 30.5" in text
    assert (figures / "generation_samples_prior_small_vq_K1024.png").is_file()
    assert "vq, K=1,024, seed 0, `prior_small` prior](figures/generation_samples_prior_small_vq_K1024.png)" in text
    assert "(figures/generation_validation_nll_prior_small_vq_K1024.png)" in text.split("### Held-out NLL over training", 1)[1]


def test_the_questions_are_answered_at_the_chosen_size_with_the_decoders_share(tmp_path):
    """SimVQ − VQ: +20 at the small prior, +10 at the chosen (`prior`) size, -5 at the large one; at
    the chosen size the decoders alone favour SimVQ by 5 (rFID 10.25 vs 15.25), so the priors' part
    of the +10 gap is +15."""
    rows = []
    for prior, simvq_fid in (("prior_small", (40.0, 42.0)), ("prior", (30.0, 32.0)), ("prior_large", (15.0, 17.0))):
        for seed in (0, 1):
            rows.append({**prior_run("simvq", 1024, seed, fid=simvq_fid[seed], accuracy=0.8), "prior": prior,
                         "domain_rfid": 10.0 + seed / 2})
            rows.append({**prior_run("vq", 1024, seed, fid=20.0 + 2 * seed, accuracy=0.8), "prior": prior,
                         "domain_rfid": 15.0 + seed / 2})
    text, _ = report_section_twice("--generation", "generation-report", rows, GENERATION_FIELDS, tmp_path)
    answers = text.split("### The questions, answered from the numbers", 1)[1].split("###", 1)[0]
    assert "**K=1,024, at the chosen size (`prior`)**: domain FID (default sampling), simvq 31.0 ± 1.4 (2) vs vq 21.0 ± 1.4 (2) → vq better: +10.0" in answers
    assert ("over prior sizes** (seeds 0, 1, the ones every size has): SimVQ − VQ, `prior_small` +20.0, `prior` +10.0, `prior_large` "
            "-5.0: in the means the gap changes sign as the prior grows") in answers
    # the change tested: (-5) - (+20) over four cells of two seeds, each of variance 2: SE 2, 4 degrees of freedom
    assert ("The gap at `prior_large` minus the gap at `prior_small`: -25.0 → the gap changes with the prior's size "
            "(95% CI [-30.6, -19.4], p < 0.001; a difference of differences, Welch-Satterthwaite, 2 + 2 + 2 + 2 seeds).") in answers
    one_small = [r for r in rows if not (r["prior"] == "prior_small" and r["seed"] == 1)]
    (tmp_path / "one_small").mkdir()
    text, _ = report_section_twice("--generation", "generation-report", one_small, GENERATION_FIELDS, tmp_path / "one_small")
    assert "minus the gap at `prior_small`: -25.0 (a cell with one seed: no test of the change)." in text
    assert "`prior_large` -5.0: one run a size, so no trend is read from these means (each size's test" in text  # seed 0 alone
    assert "domain rFID simvq 10.2 ± 0.4 (2) vs vq 15.2 ± 0.4 (2) → simvq better: -5.0" in answers
    assert ("The samples' gap of +10.0 is the rFID gap (-5.0) plus the gap in excess (+15.0): an identity of differences of "
            "means, not a split of causes") in answers
    excess = answers.split("the samples' excess over their decoder's rFID, ", 1)[1]
    assert excess.startswith("simvq 20.8 ± 1.1 (2) vs vq 5.8 ± 1.1 (2) → vq better: +15.0")

    # a third seed at the chosen size alone moves that size's mean, not the comparison across sizes
    rows += [{**prior_run(m, 1024, 2, fid=fid, accuracy=0.8), "prior": "prior", "domain_rfid": 10.0} for m, fid in (("simvq", 10.0), ("vq", 40.0))]
    text, _ = report_section_twice("--generation", "generation-report", rows, GENERATION_FIELDS, tmp_path)
    answers = text.split("### The questions, answered from the numbers", 1)[1].split("###", 1)[0]
    assert "simvq 24.0 ± 12.2 (3) vs vq 27.3 ± 11.0 (3)" in answers  # the chosen size: all its seeds
    assert "(seeds 0, 1, the ones every size has): SimVQ − VQ, `prior_small` +20.0, `prior` +10.0, `prior_large` -5.0" in answers


def test_what_the_samples_fid_tracks_is_a_rank_correlation_over_every_prior(tmp_path):
    """FID rising with the prior's bits per image in every prior but lfq's, and falling with the
    tokens' entropy: Spearman's rho is +1 and -1 without lfq, and scipy's value with it."""
    from scipy.stats import spearmanr

    rows = [prior_run(m, 1024, seed, fid=40.0 + 5 * i, accuracy=0.8, bits=3.0 + 0.1 * i, entropy=8.0 - 0.1 * i)
            for i, (m, seed) in enumerate([("simvq", 0), ("simvq", 1), ("vq", 0), ("vq", 1), ("vq_ema", 0)])]
    rows.append(prior_run("lfq", 1024, 0, fid=20.0, accuracy=0.8, bits=9.0, entropy=9.5))
    text, _ = report_section_twice("--generation", "generation-report", rows, GENERATION_FIELDS, tmp_path)
    block = text.split("### What the samples' FID tracks", 1)[1].split("###", 1)[0]
    every = spearmanr([r["domain_fid"] for r in rows], [r["nll_bits_per_image"] for r in rows])
    assert f"- Domain FID at the default setting (T = 1, no truncation, no guidance): with the prior's test bits per image ρ = {every.statistic:+.2f}" in block
    assert ("- Domain FID at the default setting (T = 1, no truncation, no guidance) without lfq: with the prior's test bits per image "
            "ρ = +1.00 (p < 0.001, 5 priors); with the tokens' unigram entropy ρ = -1.00 (p < 0.001, 5 priors).") in block
    assert "tuned setting" not in block  # these rows have no tuned samples


def test_the_header_says_whether_the_priors_converged(tmp_path):
    """Priors that ran their whole budget with the validation NLL still falling are trained to their
    budget, not converged, and the header says so; one the held-out rule stopped is counted apart."""
    from simvq.experiments.generation_report import convergence_text

    capped = [{"stop_reason": "budget: trained all 3000 steps", "best_step": "3000", "trained_steps": "3000", "val_nll_last20": v}
              for v in ("-0.041", "-0.013")]
    early = {"stop_reason": "early stop at step 2400: 3 checks in a row without a gain of more than 0.001 bits/token",
             "best_step": "1800", "trained_steps": "2400", "val_nll_last20": "0.002"}
    text = convergence_text([*capped, early])
    assert text.startswith("Convergence: 1 of 3 priors stopped early on the held-out rule; 2 ran their whole step budget, "
                           "2 of them with their best validation NLL at the last check, still moving by -0.041 to -0.013 bits per token")
    assert "not to convergence" in text
    assert convergence_text([]) is None
    rows = [{**prior_run("simvq", 1024, 0, fid=10.0, accuracy=0.8), **capped[0]}]
    section, _ = report_section_twice("--generation", "generation-report", rows, GENERATION_FIELDS, tmp_path)
    assert "- Convergence: 0 of 1 priors stopped early" in section and "Inception FID: not run. Inception-v3 at 299×299" in section


def test_the_side_still_falling_faster_at_the_cap_is_named_by_a_test():
    from simvq.experiments.generation_report import still_falling
    from simvq.experiments.stats import welch

    def side(changes):
        return {str(seed): {"val_nll_last20": change} for seed, change in enumerate(changes)}

    simvq, vq = [-0.041, -0.045, -0.038], [-0.017, -0.015, -0.019]
    line = still_falling({("simvq", 8192): side(simvq), ("vq", 8192): side(vq)}, 8192, "prior")
    p = welch(simvq, vq).p
    assert line.startswith("- **K=8,192, still improving at the cap** (`prior`): the held-out NLL's change over the last 20% "
                           "of the budget, simvq -0.041 ± 0.004 (3) vs vq -0.017 ± 0.002 (3) bits per token → simvq's priors "
                           "were still falling faster (-0.024; 95% CI [")
    assert f"p = {p:.3f}, Welch, 3 vs 3 seeds): the equal budget left them further from converged" in line
    same = still_falling({("simvq", 8192): side(simvq), ("vq", 8192): side([-0.040, -0.044, -0.039])}, 8192, "prior")
    assert "→ no significant difference (" in same
    one = still_falling({("simvq", 8192): side(simvq), ("vq", 8192): side([-0.02])}, 8192, "prior")
    assert one.endswith("(-0.021; one run on a side: no test).")
    assert still_falling({("simvq", 8192): side(simvq)}, 8192, "prior") is None
