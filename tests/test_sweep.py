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
        budget=4,
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
        assert row["codebook_size"] == "32" and row["steps"] == "4" and row["seed"] == "0"
        assert 0 < float(row["usage"]) <= 1
        assert float(row["psnr"]) > 0
        assert Path(row["run_dir"], "model.safetensors").is_file()


def test_sweep_never_recomputes_a_finished_row(tiny_sweep):
    spec, _ = tiny_sweep
    again = sweep.run_sweep(spec, sweep.image_runs(spec), progress=False)
    assert again == []
    assert len(sweep.read_results(spec.results)) == 2


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
