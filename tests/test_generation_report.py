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


def test_cli_writes_tables_grids_and_keeps_the_sweep_block(rows, tmp_path):
    text, figures = report_section_twice("--generation", "generation-report", rows, GENERATION_FIELDS, tmp_path)
    table = text.split("**K=1,024**", 1)[1].split("**K=8,192**", 1)[0]
    simvq_row = next(line for line in table.splitlines() if line.startswith("| simvq |"))
    assert "10.5 ± 0.7 (2)" in simvq_row and "3.000 ± 0.000 (2)" in simvq_row  # domain FID; entropy − bits
    assert "99.0" not in text  # the 100-step prior is superseded by the 3,000-step one
    assert (figures / "generation_samples_simvq_K1024.png").is_file()
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
