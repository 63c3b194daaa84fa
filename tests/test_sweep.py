"""The comparison sweep's plumbing on a tiny slice (seconds): rows, resumability (the report: test_report.py)."""

import csv
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from simvq.experiments import sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.batch_size=16",
    "model.channels=8",
    "model.norm_groups=4",
    "eval.max_images=64",
    "eval.batch_size=64",
    "trainer.log_every=2",
    "trainer.checkpoint_every=2",
    # a plateau check every 2 steps that never sees an improvement after the first: stops at step 4
    "plateau.check_every=2",
    "plateau.patience=1",
    "plateau.min_steps=4",
    "plateau.usage_tolerance=1.0",
    "plateau.psnr_tolerance=1000",
    "plateau.eval_images=32",
]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = sweep.SweepSpec(
        config=str(ROOT / "configs/bench/image.yaml"),
        recipe=str(ROOT / "configs/bench/fmnist.yaml"),
        methods=["simvq", "vq"],
        sizes=[32],
        seeds=[0],
        budget=6,
        until_plateau=True,
        fid_images=0,
        out=str(root / "runs"),
        results=str(root / "results.csv"),
        overrides=TINY,
    )
    added = sweep.run_sweep(spec, sweep.image_runs(spec), progress=False)
    return spec, added


def test_sweep_appends_one_row_per_run(tiny_sweep):
    spec, added = tiny_sweep
    assert [row["method"] for row in added] == ["simvq", "vq"]
    with open(spec.results, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for row in rows:
        assert row["codebook_size"] == "32" and row["seed"] == "0"
        assert (row["steps"], row["max_steps"], row["plateau"]) == ("4", "6", "true")
        assert 0 < float(row["usage"]) <= 1 and 0 < float(row["usage_test"]) <= 1
        # usage counts the train split and the evaluated test images (recipe eval.usage_splits)
        assert int(row["tokens"]) == (60_000 + 64) * 49 and int(row["tokens_test"]) == 64 * 49
        assert float(row["tokens_per_code"]) == (60_000 + 64) * 49 / 32
        assert 0 < float(row["usage_reference"]) <= 1 and float(row["usage_chao1"]) >= float(row["usage"])
        assert float(row["psnr"]) > 0
        assert Path(row["run_dir"], "model.safetensors").is_file()
        assert not list(Path(row["run_dir"]).glob("*.partial.safetensors"))  # the resumable count's files go once it is done
    curves = sweep.read_curves(spec.curves)
    assert [point["step"] for point in curves["main/simvq/K32/seed0"]] == [2, 4]


def test_sweep_never_recomputes_a_finished_row(tiny_sweep):
    spec, _ = tiny_sweep
    again = sweep.run_sweep(spec, sweep.image_runs(spec), progress=False)
    assert again == []
    assert len(sweep.read_results(spec.results)) == 2


def test_replicate_runs_every_seed_for_named_methods_only():
    spec = sweep.SweepSpec(methods=["simvq", "vq", "fsq"], sizes=[1024, 8192], seeds=[0, 1, 2], replicate=["simvq", "vq"])
    runs = sweep.image_runs(spec)
    assert sorted({run.seed for run in runs if run.method == "fsq"}) == [0]
    assert sorted({run.seed for run in runs if run.method == "vq"}) == [0, 1, 2]
    assert len(runs) == 2 * 2 * 3 + 2
    assert len(sweep.image_runs(sweep.SweepSpec(methods=["fsq"], sizes=[1024], seeds=[0, 1]))) == 2  # empty: all seeds


def test_ablation_runs_cover_the_variants():
    spec = sweep.SweepSpec(sizes=[1024], seeds=[0])
    runs = sweep.ablation_runs(spec)
    variants = {run.variant for run in runs}
    assert variants == set(sweep.ABLATIONS)
    assert {run.method for run in runs if run.variant == "train C and W"} == {"simvq"}
    assert {run.method for run in runs if run.variant == "lr x10"} == {"simvq", "vq"}
    narrowed = sweep.ablation_runs(sweep.SweepSpec(sizes=[1024], seeds=[0], methods=["simvq"]))
    assert {run.method for run in narrowed} == {"simvq"} and len(narrowed) == len(sweep.ABLATIONS)
    with pytest.raises(ValueError, match="unknown ablation"):
        sweep.ablation_runs(spec, ["nope"])


def test_default_methods_leave_out_residual():
    methods = sweep.default_methods()
    assert "simvq" in methods and "vq" in methods
    assert not set(methods) & set(sweep.NOT_COMPARABLE)


def test_smoke_trains_each_run_a_few_steps_and_names_the_one_that_fails(tmp_path):
    """``simvq bench --smoke``'s core: no run directory, no results row, and an error that only
    appears when the model is built (an option the quantizer refuses) reported against its run."""
    spec = sweep.SweepSpec(
        config=str(ROOT / "configs/bench/image.yaml"),
        recipe=str(ROOT / "configs/bench/fmnist.yaml"),
        sizes=[32],
        seeds=[0],
        budget=2000,
        out=str(tmp_path / "runs"),
        results=str(tmp_path / "results.csv"),
        overrides=TINY,
    )
    good = sweep.RunSpec("main", "simvq", 32, 0, [])
    bad = sweep.RunSpec("no such option", "vq", 32, 0, ["quantizer.options.no_such_option=1"])
    report = sweep.smoke_runs(spec, [good, bad], steps=2)
    assert [(run.method, error is None) for run, error, _ in report] == [("simvq", True), ("vq", False)]
    assert "no_such_option" in report[1][1]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results.csv").exists()
