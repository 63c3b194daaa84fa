"""``simvq bench generation`` picks its tokenizers from the image benchmark's CSV, appends one row per
prior and skips finished rows (training and evaluation are stubbed: the recipe has its own tests)."""

import json

from simvq.experiments import generation_bench
from simvq.experiments.results_file import append_result, read_results
from simvq.experiments.sweep import RESULT_FIELDS


def test_generation_bench_selects_appends_and_resumes(tmp_path, monkeypatch):
    tokenizers = tmp_path / "results.csv"
    for variant, method, size, seed in [("main", "simvq", 1024, 0), ("main", "simvq", 1024, 1), ("main", "vq", 1024, 0),
                                        ("main", "simvq", 8192, 0), ("dim=8", "simvq", 1024, 0), ("main", "cvq", 1024, 0)]:
        append_result(tokenizers, {"variant": variant, "method": method, "codebook_size": size, "seed": seed,
                                   "run_dir": f"runs/{variant}/{method}-K{size}-seed{seed}"}, fields=RESULT_FIELDS)
    assert list(read_results(tokenizers)[0]) == RESULT_FIELDS
    trained = []

    def fake_train(config, progress=None):
        trained.append((config.tokenizer, config.trainer.max_steps, config.trainer.seed, config.model.layers))
        run = tmp_path / config.out_dir
        run.mkdir(parents=True, exist_ok=True)
        (run / "progress.json").write_text(json.dumps({"sessions": [{"seconds": 2.5}]}))
        return run

    evaluated = []

    def fake_evaluate(run_dir, **options):
        evaluated.append(options)
        return {"nll_bits_per_token": 7.5, "domain_fid": 12.0, "class_accuracy": 0.8, "unrelated": 1, "sampling_tuned": "T=0.9",
                "domain_fid_tuned": 10.0, "prior_parameters": 1234, "stop_reason": "plateau"}

    monkeypatch.setattr("simvq.train.prior.train_prior", fake_train)
    monkeypatch.setattr("simvq.train.prior.evaluate_prior_run", fake_evaluate)
    spec = generation_bench.GenerationSpec(tokenizers=str(tokenizers), sizes=[1024], seeds=[0, 1], budget=50,
                                           out=str(tmp_path / "gen"), results=str(tmp_path / "gen.csv"), overrides=["model.layers=1"])
    added = generation_bench.run_generation_bench(spec, progress=False)
    assert [(r["method"], r["seed"]) for r in added] == [("simvq", 0), ("vq", 0), ("simvq", 1)]
    assert trained[0] == ("runs/main/simvq-K1024-seed0", 50, 0, 1) and trained[2][2] == 1
    rows = read_results(spec.results)
    assert list(rows[0]) == generation_bench.GENERATION_FIELDS
    assert rows[0]["nll_bits_per_token"] == "7.5" and rows[0]["train_seconds"] == "2.5" and rows[0]["steps"] == "50"
    assert rows[0]["prior"] == "prior" and rows[0]["run_dir"] == str(tmp_path / "gen" / "prior" / "simvq-K1024-seed0-steps50")
    assert (rows[0]["sampling_tuned"], rows[0]["domain_fid_tuned"], rows[0]["prior_parameters"], rows[0]["stop_reason"]) == (
        "T=0.9", "10.0", "1234", "plateau")
    sweep = evaluated[0]["sweep"]  # the default grid, tuned on 1,000 samples at seed 1; 5,000 fresh samples
    assert (sweep.temperatures, sweep.top_ps, sweep.cfg_scales, sweep.samples, sweep.seed) == ([0.8, 0.9, 1.0], [None, 0.9], [None, 1.5, 3.0], 1000, 1)
    assert evaluated[0]["samples"] == 5000 and evaluated[0]["fid_samples"] == 0
    assert generation_bench.run_generation_bench(spec, progress=False) == []  # finished rows are skipped
    assert len(trained) == 3
    spec.seeds = [0, 1, 2]
    spec.sizes = [1024, 8192]
    assert [(r["method"], r["codebook_size"]) for r in generation_bench.run_generation_bench(spec, progress=False)] == [("simvq", 8192)]
    spec.config = "configs/bench/prior_small.yaml"  # another prior size: its own rows and run directories
    assert [(r["prior"], r["method"]) for r in generation_bench.run_generation_bench(spec, progress=False)][:2] == [
        ("prior_small", "simvq"), ("prior_small", "vq")]


def test_bench_generation_cli_needs_the_tokenizer_csv(tmp_path):
    import pytest

    from simvq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "generation", "--results", str(tmp_path / "g.csv")])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "generation", "--tokenizers", str(tmp_path / "missing.csv")])
    assert exit_info.value.code == 2


def test_a_selection_without_tokenizers_is_refused_naming_what_the_csv_holds(tmp_path, capsys):
    import pytest

    from simvq.cli import main

    tokenizers = tmp_path / "results.csv"
    append_result(tokenizers, {"variant": "main", "method": "vq", "codebook_size": 1024, "seed": 0, "run_dir": "runs/vq"},
                  fields=RESULT_FIELDS)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "generation", "--tokenizers", str(tokenizers), "--sizes", "77", "--results", str(tmp_path / "g.csv")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "sizes [77]" in error and "('vq', 1024)" in error
    assert not (tmp_path / "g.csv").exists()


def test_the_default_benchmark_prior_recipe_loads_and_is_the_stated_size():
    from simvq.models.prior import TokenPrior
    from simvq.train.prior import load_prior_config

    spec = generation_bench.GenerationSpec()
    config = load_prior_config(spec.config, [f"trainer.max_steps={spec.budget}"])
    assert (config.model.dim, config.model.layers, config.model.heads, config.trainer.max_steps) == (128, 4, 4, 2000)
    for size, stated in [(1024, 0.93e6), (8192, 1.85e6)]:  # the recipe's comment
        model = TokenPrior(size, grid=(7, 7), num_classes=10, dim=config.model.dim, layers=config.model.layers, heads=config.model.heads)
        assert abs(sum(p.numel() for p in model.parameters()) / stated - 1) < 0.01, size


def test_bench_settings_come_from_bench_overrides_and_the_rest_goes_to_the_recipe():
    import pytest

    spec = generation_bench.GenerationSpec()
    recipe = generation_bench.split_bench_overrides(spec, ["model.layers=2", "bench.samples=200", "bench.tune=false",
                                                           "bench.cfg_scales=[null, 2]", "bench.temperatures=1.0", "bench.tune_seed=5"])
    assert recipe == ["model.layers=2"]
    assert (spec.samples, spec.tune, spec.cfg_scales, spec.temperatures, spec.tune_seed) == (200, False, [None, 2], [1.0], 5)
    assert spec.sweep() is None
    spec.tune = True
    assert spec.sweep().settings(conditional=True)[-1].cfg_scale == 2 and len(spec.sweep().settings(conditional=False)) == 2
    for bad in ["bench.budget=10", "bench.nope=1", "bench.samples", "bench.samples=many", "bench.tune=3"]:
        with pytest.raises((ValueError, TypeError), match="bench"):
            generation_bench.split_bench_overrides(generation_bench.GenerationSpec(), [bad])
