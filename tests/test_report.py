"""``simvq report`` on a hand-built results CSV + curves JSON with known numbers (no training).

Layout: K in {1024, 8192}; simvq and vq with 3 seeds, vq_reset and cvq with seed 0 only; one
simvq seed at K=8192 hit the step cap; ablations at K=1024. The numbers are chosen so that the
seed-0 PSNR ranking differs from a ranking of means (the report must use seed 0).
"""

import csv
import json

import pytest

from simvq.experiments.report import aggregate, findings, write_report

TOKENS, TOKENS_TEST = 70_000, 10_000
FIELDS = [
    "variant", "method", "codebook_size", "codes", "seed", "steps", "max_steps", "plateau", "usage", "tokens",
    "tokens_per_code", "usage_test", "tokens_test", "usage_chao1", "coverage", "usage_reference", "perplexity",
    "dead_fraction", "psnr", "ssim", "rfid", "rfid_images", "train_seconds", "seconds_per_step", "device", "run_dir",
]
REFERENCE = {1024: 1.0, 8192: 0.9998}


def run(method, k, seed, usage, psnr, variant="main", plateau="true", steps=1000):
    return {
        "variant": variant, "method": method, "codebook_size": k, "codes": k, "seed": seed, "steps": steps,
        "max_steps": 2000, "plateau": plateau, "usage": usage, "tokens": TOKENS, "tokens_per_code": TOKENS / k,
        "usage_test": usage, "tokens_test": TOKENS_TEST, "usage_chao1": min(1.0, usage + 0.004), "coverage": 0.999,
        "usage_reference": REFERENCE[k], "perplexity": usage * k / 2, "dead_fraction": 1 - usage, "psnr": psnr,
        "ssim": 0.7, "rfid": "", "rfid_images": "", "train_seconds": 100, "seconds_per_step": 0.1, "device": "cpu",
        "run_dir": "",
    }


ROWS = [
    *[run("simvq", 1024, s, u, p) for s, u, p in [(0, 0.990, 20.0), (1, 0.995, 20.2), (2, 1.000, 20.4)]],
    *[run("vq", 1024, s, u, p) for s, u, p in [(0, 0.30, 19.0), (1, 0.35, 19.1), (2, 0.40, 19.2)]],
    run("vq_reset", 1024, 0, 0.98, 21.0),
    run("cvq", 1024, 0, 0.60, 20.1),
    *[run("simvq", 8192, s, u, p, plateau=f, steps=st) for s, u, p, f, st in
      [(0, 0.78, 21.0, "true", 1500), (1, 0.79, 21.5, "true", 1600), (2, 0.80, 22.0, "false", 2000)]],
    *[run("vq", 8192, s, u, p) for s, u, p in [(0, 0.05, 19.5), (1, 0.06, 19.6), (2, 0.07, 19.7)]],
    run("vq_reset", 8192, 0, 0.40, 20.5),
    run("cvq", 8192, 0, 0.50, 20.9),
    run("simvq", 1024, 0, 0.97, 20.9, variant="train C and W"),
    run("vq", 1024, 0, 0.36, 19.05, variant="dim=8"),
    run("vq_reset", 1024, 0, 0.99, 21.1, variant="lr x10"),
]


def curve(usage, psnr, steps=(100, 200, 300)):
    return [{"step": s, "usage": usage * s / steps[-1], "psnr": psnr, "perplexity": 10.0} for s in steps]


CURVES = {
    **{f"main/simvq/K1024/seed{s}": curve(0.99, 20.0) for s in range(3)},
    "main/vq/K1024/seed0": curve(0.3, 19.0),
    "main/simvq/K8192/seed0": curve(0.78, 21.0),
}


def write_csv(path, rows, fields=FIELDS):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# the untrained-Gaussian references at the rows' K and N (a prepared cache: nothing is computed)
GAUSSIAN = {
    "K=1024 N=70000 d=64": [{"seed": s, "usage": 1.0, "usage_at_50": 0.99, "perplexity_per_code": p, "entropy_bits": 8.6}
                            for s, p in enumerate((0.38, 0.39, 0.40))],
    "K=8192 N=70000 d=64": [{"seed": s, "usage": 0.9998, "usage_at_50": float("nan"), "perplexity_per_code": 0.35, "entropy_bits": 11.5}
                            for s in range(3)],
}


def write_references(path):
    path.write_text(json.dumps(GAUSSIAN))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results = write_csv(root / "results.csv", ROWS)
    (root / "results_curves.json").write_text(json.dumps(CURVES))  # the default curves path
    out = root / "results.md"
    out.write_text("# Results\n\nhand-written intro stays\n")
    write_report(results, out, figures_dir=root / "figures", references_file=write_references(root / "gaussian.json"))
    return root, out.read_text()


def section(text, title):
    return text.split(f"### {title}", 1)[1].split("\n### ", 1)[0]


def main_rows(text):
    """{(K label, method): cells} of the opening table."""
    cells = [[c.strip() for c in line.strip()[1:-1].split("|")] for line in section(text, "Main comparison").splitlines()
             if line.startswith("| K=")]
    return {tuple(row[:2]): row[2:] for row in cells}


def welch_p(a, b):
    """Welch's two-sided p-value from its textbook formula (not scipy's ttest_ind)."""
    from scipy.stats import t

    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * t.sf(abs(ma - mb) / (va + vb) ** 0.5, dof)


def test_opening_table_has_every_method_by_k_with_seeds_and_the_reference(report):
    _, text = report
    rows = main_rows(text)
    simvq = rows[("K=1,024", "simvq")]
    assert simvq[:2] == ["3", "99.5 ± 0.5 (3)"]  # seeds, usage
    # entropy from perplexity (older rows lack the column): log2 of 506.88, 509.44 and 512 codes
    assert simvq[4] == "8.99 ± 0.01 (3)"
    assert simvq[5] == "20.20 ± 0.20 (3)"  # PSNR
    assert rows[("K=8,192", "simvq")][1] == "79.0 ± 1.0 (3)†"  # an old-protocol run that hit its cap
    assert rows[("K=1,024", "vq_reset")][:2] == ["1", "98.0 (1)"]
    # perplexity / K from perplexity and K (older rows lack the column): usage * K / 2 / K
    assert rows[("K=1,024", "vq")][3] == "0.175 ± 0.025 (3)"
    gaussian = rows[("K=1,024", "*untrained Gaussian*")]
    assert gaussian[:5] == ["3", "100.0 ± 0.0 (3)", "99.0 ± 0.0 (3)", "0.390 ± 0.010 (3)", "8.60 ± 0.00 (3)"]
    assert rows[("K=8,192", "*untrained Gaussian*")][:3] == ["3", "100.0 ± 0.0 (3)", "–"]  # N/K < 50: no usage at 50
    assert "hand-written intro stays" in text and text.count("sweep-report:begin") == 1


def test_simvq_is_tested_against_each_method_by_welch(report):
    _, text = report
    rows = main_rows(text)
    p = welch_p([20.0, 20.2, 20.4], [19.0, 19.1, 19.2])
    # the only PSNR test at K=1,024 (the other rivals are one run): Holm's adjustment leaves it as it is
    assert rows[("K=1,024", "vq")][-3] == f"+1.10, p = {p:.3f}, Holm p = {p:.3f}: SimVQ higher"
    p_usage = welch_p([0.99, 0.995, 1.0], [0.30, 0.35, 0.40])
    assert rows[("K=1,024", "vq")][-2].startswith("+64.5, p") and (p_usage < 0.001) == ("p < 0.001" in rows[("K=1,024", "vq")][-2])
    assert rows[("K=1,024", "cvq")][-3] == "+0.10 (one run: no test)"  # a single seed gets no verdict
    assert rows[("K=1,024", "simvq")][-3:] == ["", "", ""]
    assert "2σ" not in text and "beyond the seed spread" not in text


def test_header_states_runs_seeds_budget_and_tokens(report):
    _, text = report
    head = text.split("sweep-report:begin -->", 1)[1].split("###", 1)[0]
    assert f"Runs: {len(ROWS)}" in head
    assert "3 seeds: simvq, vq; 1 seed: cvq, vq_reset" in head
    assert "Budget: 2,000 steps" in head and "Devices: cpu" in head
    assert "N = 70,000 at K=1,024, 70,000 at K=8,192; N/K = 68.4 at K=1,024, 8.5 at K=8,192" in head
    assert "Welch's t-test" in head


def test_findings_state_the_verdicts(report):
    _, text = report
    notes = section(text, "Findings")
    # 99.5 ± 0.5 over 3 seeds: the mean's 95% t-interval is 99.5 ± 4.303 x 0.5 / sqrt(3) = [98.3, 100.7]
    assert "SimVQ at K=1,024: 99.5% ± 0.5 (3 seeds)" in notes and "no verdict on ≥ 99%: the 95% CI of the mean [98.3%, 100.0%] spans it" in notes
    assert "N = 70,000 tokens (N/K = 68.4)" in notes
    assert "does NOT keep ~100% usage: 20.0 percentage points short of 99% (95% CI of the mean [76.5%, 81.5%])" in notes
    assert "An untrained quantizer at the same K and N uses 100.0% ± 0.0 (3 seeds)" in notes
    # perplexity / K: SimVQ 0.4975 against 0.39 for random codes at K=1,024; 0.395 against 0.35 at 8,192
    ratio_p = welch_p([506.88 / 1024, 509.44 / 1024, 512 / 1024], [0.38, 0.39, 0.40])  # perplexity / K, SimVQ against the reference
    assert ("Perplexity / K is 0.497 against 0.390 (3 seeds) for the untrained quantizer: the trained tokenizer spreads its tokens "
            f"more evenly than random codes do (p = {ratio_p:.3f}, Welch)") in notes
    assert "collapsed (the seeds' 95% CI of the mean below 10% of codes) at K=8,192" in notes
    p = welch_p([20.0, 20.2, 20.4], [19.0, 19.1, 19.2])
    assert f"higher than vq (+1.10 dB, p = {p:.3f})" in notes  # the only test at this K: no Holm
    assert "not tested against cvq (+0.10 dB), vq_reset (-0.80 dB) (one run on a side)" in notes


def test_ablations_sit_under_their_baseline_with_tests(report):
    _, text = report
    rows = [line for line in section(text, "Ablations").splitlines() if line.startswith("| ")]
    joint = next(line for line in rows if line.startswith("| train C and W"))
    # perplexity / K: 496.6 / 1,024 = 0.485 against the baseline seeds' 0.4975: -0.013
    assert "| -2.5 (one run: no test) | -0.013 (one run: no test) | +0.70 (one run: no test) |" in joint
    assert "| 97.0 (1) | 0.485 (1) | 20.90 (1) |" in joint  # perplexity / K (496.6 codes of 1,024) and PSNR beside usage
    assert rows.index(joint) == rows.index(next(line for line in rows if line.startswith("| main (baseline) | simvq | 1,024"))) + 1
    (note,) = [n for n in section(text, "Findings").splitlines() if n.startswith("- C trained jointly with W")]
    assert "PSNR 20.90 dB (1) against 20.20 dB (3): +0.70 (one run on a side: no test)" in note


def test_ablation_deltas_are_tested_when_both_sides_have_seeds(tmp_path):
    joint = [run("simvq", 1024, s, 0.97, p, variant="train C and W") for s, p in ((0, 20.9), (1, 21.0), (2, 21.1))]
    results = write_csv(tmp_path / "results.csv", ROWS + joint)
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures",
                        references_file=write_references(tmp_path / "g.json")).read_text()
    line = next(line for line in section(text, "Ablations").splitlines() if line.startswith("| train C and W"))
    p = welch_p([20.9, 21.0, 21.1], [20.0, 20.2, 20.4])
    assert f"+0.80 (p = {p:.3f}, significant)" in line
    # the reviewers' question, answered in the findings with the same test
    (joint_note,) = [n for n in section(text, "Findings").splitlines() if n.startswith("- C trained jointly with W")]
    assert joint_note.startswith("- C trained jointly with W (the paper's Remark 4.1) at K=1,024, against SimVQ with C frozen")
    assert "PSNR 21.00 dB (3) against 20.20 dB (3): training C better: +0.80 (95% CI [" in joint_note and f"p = {p:.3f}, Welch, 3 vs 3 seeds)" in joint_note
    usage_p = welch_p([0.97] * 3, [0.990, 0.995, 1.000])
    assert "usage 97.0% (3) against 99.5% (3): freezing C better: -2.5 (95% CI [" in joint_note and f"p = {usage_p:.3f}" in joint_note
    assert "Plain VQ at that K uses" in joint_note


def test_figures_one_per_k_and_no_mixed_curve(report):
    root, text = report
    figures = root / "figures"
    for name in ["sweep_usage_vs_k", "sweep_psnr_vs_k", "sweep_usage_over_steps_K1024", "sweep_usage_over_steps_K8192",
                 "sweep_psnr_over_steps_K1024"]:
        assert (figures / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in text
    assert not (figures / "sweep_usage_over_steps.png").exists()


def test_old_schema_rows_do_not_crash(tmp_path):
    old = ["variant", "method", "codebook_size", "codes", "seed", "steps", "usage", "usage_cap", "perplexity", "psnr", "ssim", "run_dir"]
    rows = [{**run("simvq", 1024, s, 0.85 + s / 100, 18.6), "usage_cap": 1.0, "steps": 300} for s in range(2)]
    rows.append({**run("vq", 1024, 0, 0.35, 18.5), "steps": 300})
    results = write_csv(tmp_path / "old.csv", rows, fields=old)
    out = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures")
    text = out.read_text()
    assert main_rows(text)[("K=1,024", "simvq")][1] == "85.5 ± 0.7 (2)"
    assert main_rows(text)[("K=1,024", "*untrained Gaussian*")][1] == "–"
    assert "plateau not recorded (older rows)" in text and "Budget: 300 steps" in text
    assert (tmp_path / "figures" / "sweep_usage_vs_k.png").is_file()


def test_a_finer_grid_is_its_own_column(tmp_path):
    grid = [{**run(m, 8192, 0, u, p, variant="grid=14x14"), "tokens": 4 * TOKENS} for m, u, p in (("simvq", 0.99, 25.0), ("vq", 0.02, 23.0))]
    results = write_csv(tmp_path / "results.csv", ROWS + grid)
    references = write_references(tmp_path / "g.json")
    cache = json.loads(references.read_text())
    cache["K=8192 N=280000 d=64"] = [{"seed": s, "usage": 1.0, "usage_at_50": float("nan"), "perplexity_per_code": 0.37,
                                      "entropy_bits": 11.6} for s in range(3)]
    references.write_text(json.dumps(cache))
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures", references_file=references).read_text()
    rows = main_rows(text)
    assert rows[("K=8,192 (14x14 tokens)", "simvq")][:2] == ["1", "99.0 (1)"]
    assert rows[("K=8,192", "simvq")][1] == "79.0 ± 1.0 (3)†"  # the 7x7 runs are not mixed in
    assert "SimVQ at K=8,192 (14x14 tokens): 99.0% (1 seed) of codes used over N = 280,000 tokens" in section(text, "Findings")
    assert "An untrained quantizer at the same K and N uses 100.0% ± 0.0 (3 seeds)" in section(text, "Findings")

    # before its reference is measured, the finer grid's finding names the row's own estimate for what it is
    del cache["K=8192 N=280000 d=64"]
    references.write_text(json.dumps(cache))
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures", references_file=references,
                        compute_references=False).read_text()
    note = next(n for n in section(text, "Findings").splitlines() if n.startswith("- SimVQ at K=8,192 (14x14 tokens)"))
    assert "An untrained quantizer at the same N/K (the run's own estimate, on at most 8,192 codes) uses" in note


def test_the_finer_grid_is_linked_to_the_recipes_grid_and_across_k_by_tests(tmp_path):
    """At a K both grids have, the grid's own change of usage; on the finer grid, K's; each by Welch's
    test over seeds (scipy's), one run on a side untested."""
    from scipy import stats as scipy_stats

    from simvq.experiments.stats import p_text

    grid = [{**run("simvq", k, s, u, 25.0, variant="grid=14x14"), "tokens": 4 * TOKENS}
            for k, s, u in ((8192, 0, 0.99), (8192, 1, 0.97), (1024, 0, 1.0))]
    grid.append({**run("vq", 8192, 0, 0.02, 23.0, variant="grid=14x14"), "tokens": 4 * TOKENS})
    results = write_csv(tmp_path / "results.csv", ROWS + grid)
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures", compute_references=False).read_text()
    note = next(n for n in section(text, "Findings").splitlines() if n.startswith("- The finer grid beside the recipe's"))
    reference = scipy_stats.ttest_ind([0.99, 0.97], [0.78, 0.79, 0.80], equal_var=False)
    low, high = (100 * x for x in reference.confidence_interval(0.95))
    assert (f"simvq at K=8,192, the recipe's grid → 14x14 tokens: usage 79.0% ± 1.0 (3 seeds) → 98.0% ± 1.4 (2 seeds) "
            f"(+19.0 points, 95% CI [{low:+.1f}, {high:+.1f}], {p_text(reference.pvalue)}: higher)") in note
    assert "simvq on the 14x14 grid, K=1,024 → 8,192: usage 100.0% (1 seed) → 98.0% ± 1.4 (2 seeds) (-2.0 points; one run on a side: no test)" in note
    assert "vq at K=8,192, the recipe's grid → 14x14 tokens: usage 6.0% ± 1.0 (3 seeds) → 2.0% (1 seed) (-4.0 points; one run" in note
    assert "at 50 tokens per code" not in note  # these rows have no such column: no empty clause


def test_aggregate_keeps_the_largest_cap_and_the_last_row_per_seed():
    rows = [run("simvq", 1024, 0, 0.1, 10.0) | {"max_steps": 100}, run("simvq", 1024, 0, 0.5, 20.0), run("simvq", 1024, 0, 0.7, 22.0)]
    group = aggregate(rows)[("main", "simvq", 1024)]
    assert len(group.rows) == 1 and group.stat("usage").mean == pytest.approx(0.7)
    # the one row left is one run: its number against the bar, and no verdict
    assert any("SimVQ at K=1,024: 70.0% (1 seed)" in note and "one run, 29.0 percentage points below 99%: no verdict before its seeds land" in note
               and "does NOT keep" not in note for note in findings(aggregate(rows)))


def test_a_second_report_replaces_its_block(report, tmp_path):
    root, _ = report
    out = tmp_path / "results.md"
    out.write_text((root / "results.md").read_text())
    write_report(root / "results.csv", out, figures_dir=tmp_path / "figures", curves=tmp_path / "none.json",
                 references_file=root / "gaussian.json")
    text = out.read_text()
    assert text.count("sweep-report:begin") == 1 and "hand-written intro stays" in text
    assert "over_steps" not in text  # no curves file: no over-steps figures, no crash


def test_cli_reports_a_user_mistake_in_one_line(tmp_path, capsys):
    from simvq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--results", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r.md")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results in" in err and "Traceback" not in err


def test_residual_methods_get_their_own_table_not_the_ablations(tmp_path):
    stages = [run(m, 1024, 0, u, p, variant="stages=4") for m, u, p in
              [("qinco", 0.90, 23.0), ("residual", 0.50, 22.0), ("residual_simvq", 1.00, 23.5)]]
    results = write_csv(tmp_path / "results.csv", ROWS + stages)
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures",
                        references_file=write_references(tmp_path / "g.json")).read_text()
    residual = [line for line in section(text, "Residual table").splitlines() if line.startswith("| ")]
    assert residual[1:] == [  # after the header; methods in the report's order (residual before residual_simvq)
        "| 4 | qinco | 1,024 | 1 | 90.0 (1) | 460.8 (1) | 23.00 (1) | 0.700 (1) | 1,000 (1) |",
        "| 4 | residual | 1,024 | 1 | 50.0 (1) | 256.0 (1) | 22.00 (1) | 0.700 (1) | 1,000 (1) |",
        "| 4 | residual_simvq | 1,024 | 1 | 100.0 (1) | 512.0 (1) | 23.50 (1) | 0.700 (1) | 1,000 (1) |",
    ]
    assert "qinco" not in section(text, "Ablations")
    assert "qinco" not in section(text, "Main comparison")  # not ranked against single-stage quantizers


def test_a_method_whose_tokens_carry_more_than_one_index_is_tabled_apart_not_ranked(tmp_path):
    sparse = run("sc_vae", 1024, 0, 0.86, 30.0)  # the best PSNR by far: it must not top a ranking
    results = write_csv(tmp_path / "results.csv", ROWS + [sparse])
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures",
                        references_file=write_references(tmp_path / "g.json")).read_text()
    richer = [line for line in section(text, "More than one index per token").splitlines() if line.startswith("| ")]
    assert richer[1:] == ["| sc_vae | 1,024 | 1 | 86.0 (1) | 440.3 (1) | 30.00 (1) | 0.700 (1) | 1,000 (1) |"]
    for name in ("Main comparison", "Findings", "Ablations"):
        assert "sc_vae" not in section(text, name), name


def test_a_psnr_verdict_holm_does_not_keep_is_listed_as_such(tmp_path):
    """Three rivals tested at K=1,024: vq's raw p stays below α after Holm's correction, fsq's raw
    p is below α alone but not over the three tests, vq_ema's is not below α at all."""
    from simvq.experiments.stats import holm

    simvq = [20.0, 20.2, 20.4]
    rivals = {"fsq": [19.5, 19.8, 19.85], "vq_ema": [19.9, 20.3, 20.35]}
    rows = ROWS + [run(m, 1024, s, 0.99, v) for m, values in rivals.items() for s, v in enumerate(values)]
    text = write_report(write_csv(tmp_path / "results.csv", rows), tmp_path / "results.md", figures_dir=tmp_path / "figures",
                        references_file=write_references(tmp_path / "g.json")).read_text()
    (note,) = [n for n in section(text, "Findings").splitlines() if n.startswith("- PSNR at K=1,024")]
    raw = [welch_p(simvq, [19.0, 19.1, 19.2]), welch_p(simvq, rivals["fsq"]), welch_p(simvq, rivals["vq_ema"])]
    adjusted = holm(raw)
    assert raw[1] < 0.05 <= adjusted[1] and adjusted[0] < 0.05 and raw[2] >= 0.05
    assert note.startswith("- PSNR at K=1,024 (Welch, α = 0.05, Holm's correction over the 3 tests at this K): SimVQ's 20.20 dB (3 seeds): ")
    assert f"higher than vq (+1.10 dB, p = {raw[0]:.3f}, Holm p = {adjusted[0]:.3f})" in note
    assert "significant alone but not after Holm's correction: fsq (+0.48 dB, 95% CI" in note and f"Holm p = {adjusted[1]:.3f})" in note
    assert "not different from vq_ema (+0.02 dB, 95% CI" in note


def test_a_no_difference_verdict_shows_the_interval_the_seeds_leave_open(tmp_path):
    fsq = [run("fsq", 1024, s, 0.99, p) for s, p in ((0, 19.9), (1, 20.3))]
    results = write_csv(tmp_path / "results.csv", ROWS + fsq)
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures",
                        references_file=write_references(tmp_path / "g.json")).read_text()
    from scipy import stats as scipy_stats

    test = scipy_stats.ttest_ind([20.0, 20.2, 20.4], [19.9, 20.3], equal_var=False)
    interval = test.confidence_interval(0.95)
    # two tests at K=1,024 (vq's and fsq's): fsq's is the larger p, which Holm leaves as it is
    assert (f"not different from fsq (+0.10 dB, 95% CI [{interval.low:+.2f}, {interval.high:+.2f}], p = {test.pvalue:.2f}, "
            f"Holm p = {test.pvalue:.2f})") in section(text, "Findings")


def test_the_header_states_the_spend_of_the_ledger_it_is_given_or_finds_beside_the_results(tmp_path):
    results = write_csv(tmp_path / "results.csv", ROWS)
    references = write_references(tmp_path / "g.json")

    def spent(**options):
        text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures", references_file=references, **options).read_text()
        return [line for line in text.splitlines() if line.startswith("- Spent")]

    assert spent() == []
    (tmp_path / "campaign").mkdir()
    (tmp_path / "campaign" / "spend.csv").write_text("run,cpu_seconds,wall_seconds,finished\na,1800,2000,t\n")
    assert spent(spend=tmp_path / "campaign" / "spend.csv")[0].startswith("- Spent: 0.50 CPU-hours recorded over 1 landed run (")
    (tmp_path / "spend.csv").write_text("run,cpu_seconds,wall_seconds,finished\na,3600,2000,t\nb,3600,2000,t\n")
    assert spent()[0].startswith("- Spent: 2.00 CPU-hours recorded over 2 landed runs (")
    (tmp_path / "spend.csv").write_text("run,cpu_seconds,wall_seconds,finished\na,3600,2000,t\nreference-K8-N9,1800,2000,t\n")
    assert spent()[0].startswith("- Spent: 1.50 CPU-hours recorded over 1 landed run and 1 reference measurement (")
    (tmp_path / "spend.csv").write_text("run,cpu_seconds,wall_seconds,finished\na,3600,2000,t\nb,1800,2000,t\na,1800,2000,t\n")
    assert spent()[0].startswith("- Spent: 2.00 CPU-hours recorded over 3 landed runs (")
    assert spent()[0].endswith(" 1 of the runs is the first try of a run measured again, its row replaced; that CPU stays counted.")
    # the block names the command that regenerates it, with the inputs it read
    (tmp_path / "kept").mkdir()
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures", references_file=references,
                        compute_references=False, kept=tmp_path / "kept").read_text()
    assert (f"Generated by `simvq report --results {results.as_posix()} --spend {(tmp_path / 'spend.csv').as_posix()} "
            f"--kept {(tmp_path / 'kept').as_posix()} --cached-references`.") in text


def test_the_convergence_finding_states_the_largest_moves_and_where_the_checks_are_too_sparse():
    rows = [{**run("simvq", 1024, s, 1.0, 20.0), "psnr_last20": move, "usage_last20": 0.01, "check_tokens": 98_000}
            for s, move in ((0, 0.1), (1, 0.3))]
    rows.append({**run("vq", 8192, 0, 0.1, 19.0), "psnr_last20": -0.5, "usage_last20": -0.02, "check_tokens": 49_000})
    from simvq.experiments.report.findings import convergence_note

    note = convergence_note(aggregate(rows))
    assert note.startswith("Over the last 20% of their budget the runs' PSNR moved by at most 0.50 dB (median 0.30 dB; largest: vq K=8,192) "
                           "and their usage on the check images by at most 2.0 points")
    assert note.endswith("The checks count too few tokens a code to follow usage at K=8,192: 6.0 a code. There the usage change "
                         "over the last 20% says little about the full count's.")  # K=1,024 has 95.7 a code: not listed


def windows(at_80: float, at_end: float, *, tokens: int = 313_600, last_tokens: int | None = None) -> list[dict]:
    """A run's logging windows every 400 steps of a 2,000-step budget (steps 1,600 and 2,000 carry
    ``at_80`` and ``at_end``)."""
    usage = {400: 0.1, 800: 0.2, 1200: 0.3, 1600: at_80, 2000: at_end}
    return [{"step": step, "usage": u, "tokens": last_tokens if step == 2000 and last_tokens else tokens} for step, u in usage.items()]


def test_the_window_change_compares_the_window_at_80_percent_with_the_last_at_the_same_count():
    from simvq.experiments.report.windows import last_change

    assert last_change(windows(0.50, 0.53), 2000) == (pytest.approx(0.03), 313_600)
    assert last_change(windows(0.50, 0.53), 2400) is None  # stopped before its budget: no last window
    assert last_change(windows(0.50, 0.53, last_tokens=100_000), 2000) is None  # a short last window: counts differ
    assert last_change(windows(0.50, 0.53)[4:], 2000) is None  # nothing at or before step 1,600


def test_the_convergence_finding_follows_usage_in_the_training_windows_where_the_checks_cannot(tmp_path):
    from simvq.experiments.report.figures import curve_key
    from simvq.experiments.report.findings import convergence_note
    from simvq.experiments.report.windows import image_kept, read_windows

    rows = [{**run("simvq", 8192, s, 0.9, 24.0), "psnr_last20": 0.1, "usage_last20": 0.0, "check_tokens": 49_000} for s in (0, 1)]
    rows += [{**run("vq", 1024, 0, 0.2, 22.0), "psnr_last20": 0.1, "usage_last20": 0.0, "check_tokens": 98_000},
             {**run("hqa", 1024, 0, 0.5, 19.0), "psnr_last20": 0.1, "usage_last20": 0.0, "check_tokens": 98_000}]
    # seed 0's history is in its run directory (with the final window written twice, as the recipe does);
    # the others' only in the campaign's kept folder, as after a machine change
    history = {0: windows(0.800, 0.810), 1: windows(0.800, 0.814)}
    for row in rows:
        points = {"simvq": history.get(row["seed"]), "vq": windows(0.30, 0.25), "hqa": windows(0.1, 1.0)}[row["method"]]
        if row["method"] == "simvq" and row["seed"] == 0:
            folder = tmp_path / "run0"
            row["run_dir"] = str(folder)
            points = points + points[-1:]
        else:
            folder = image_kept(tmp_path / "kept")(row)
        folder.mkdir(parents=True)
        (folder / "usage_history.json").write_text(json.dumps(points))
    found = read_windows(rows, image_kept(tmp_path / "kept"))
    assert len(found) == 3 and [p["step"] for p in found[curve_key(rows[0])]] == [400, 800, 1200, 1600, 2000]  # not hqa's
    note = convergence_note(aggregate(rows), found)
    # vq: 0.25 - 0.30 = -5.0 points, the largest; hqa's +90 points are its sampled codes', left out;
    # simvq (its checks: 6.0 tokens a code): +1.0 and +1.4 points, mean 1.2, std 0.28, at 313,600 / 8,192 = 38.3 a code
    assert ("usage moved by at most 5.0 points over the last 20% (largest: vq K=1,024; 2 of 3 groups have their windows; "
            "hqa: the windows count the codes sampled in training, not the nearest, and are left out)") in note
    assert note.endswith("where the checks are too sparse: simvq K=8,192 +1.2 ± 0.3 (2 seeds, 38.3 tokens a code).")
    assert convergence_note(aggregate(rows)) == convergence_note(aggregate(rows), {})  # no windows: the checks alone
    from simvq.experiments.report.figures import figures

    drawn = [p.name for p in figures(aggregate(rows), {}, tmp_path / "figures", found)]
    assert [n for n in drawn if "window" in n] == ["sweep_window_usage_over_steps_K1024.png", "sweep_window_usage_over_steps_K8192.png"]
    assert not any("window" in p.name for p in figures(aggregate(rows), {}, tmp_path / "none"))


def test_the_precision_a_row_trained_in_is_read_from_its_sessions_and_counted_in_the_header(tmp_path):
    import json

    from simvq.experiments.results_file import precision_text, trained_precision

    assert trained_precision(tmp_path) == ""  # no progress.json: not recorded
    sessions = [{"precision": "bf16-mixed"}, {"cpu_seconds": 3.0}, {"precision": "32-true"}, {"precision": "bf16-mixed"}]
    (tmp_path / "progress.json").write_text(json.dumps({"global_step": 9, "sessions": sessions}))
    assert trained_precision(tmp_path) == "bf16-mixed+32-true"  # a run resumed on another machine
    text = precision_text([{"precision": "32-true"}, {"precision": "32-true"}, {"precision": ""}, {}])
    assert text.startswith("trained in 32-true (2 runs); precision not recorded for 2 runs (trained before it was: one or the other) "
                           "(the network's precision follows the machine")


def test_ablation_rows_say_the_precision_each_seed_trained_in(tmp_path):
    joint = [{**run("simvq", 1024, s, 0.97, 20.9, variant="train C and W"), "precision": p} for s, p in ((0, ""), (1, "32-true"))]
    float32 = {**run("simvq", 1024, 0, 0.99, 20.1, variant="float32"), "precision": "32-true"}
    results = write_csv(tmp_path / "results.csv", ROWS + joint + [float32], fields=[*FIELDS, "precision"])
    text = write_report(results, tmp_path / "results.md", figures_dir=tmp_path / "figures",
                        references_file=write_references(tmp_path / "g.json")).read_text()
    rows = {line.split(" | ")[0][2:]: line for line in section(text, "Ablations").splitlines()
            if line.startswith("| ") and " | simvq | 1,024 | " in line}
    assert rows["main (baseline)"].startswith("| main (baseline) | simvq | 1,024 | 3 | – | 99.5")  # before the record
    assert rows["train C and W"].startswith("| train C and W | simvq | 1,024 | 2 | –, 32-true | ")  # seeds differ: each
    assert rows["float32"].startswith("| float32 | simvq | 1,024 | 1 | 32-true | 99.0 (1)")


def test_a_codebook_of_another_size_than_k_is_named_in_the_header(tmp_path):
    fsq = {**run("fsq", 1024, 0, 0.95, 20.0), "codes": 1000}  # FSQ's levels 8 x 5 x 5 x 5
    plain = write_report(write_csv(tmp_path / "plain.csv", ROWS), tmp_path / "plain.md", figures_dir=tmp_path / "f1",
                         references_file=write_references(tmp_path / "g1.json")).read_text()
    assert "not K codes" not in plain
    text = write_report(write_csv(tmp_path / "results.csv", ROWS + [fsq]), tmp_path / "results.md", figures_dir=tmp_path / "f2",
                        references_file=write_references(tmp_path / "g2.json")).read_text()
    assert "- Codebooks that are not K codes (their usage and perplexity are over their own codes): fsq K=1,024: 1,000 codes." in text
