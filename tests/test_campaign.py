"""benchmarks/campaign.py: the queues' order, one key per results row, claims, and landing a finished
run (its row, its small artifacts and its CPU time committed to a repository, nothing else)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simvq.experiments.generation_bench import GENERATION_FIELDS
from simvq.experiments.results_file import append_result, read_results
from simvq.runs import get_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def campaign():
    spec = importlib.util.spec_from_file_location("campaign", ROOT / "benchmarks" / "campaign.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["campaign"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_image_queue_runs_simvq_and_vq_seeds_first_then_every_method_at_8192(campaign):
    plan = campaign.image_plan()
    assert len(plan) == len({run.key for run in plan}) == 69 + 16 + 1 + 4 + 2 + 2  # + the float32 baselines
    assert {(r.method, r.size, r.seed) for r in plan[:18]} == {(m, k, s) for m in ("simvq", "vq") for k in (1024, 8192, 65536) for s in (0, 1, 2)}
    assert all(r.size == 8192 for r in plan[18:38]) and {r.seed for r in plan[18:38]} == {0, 1}
    # then the K=1,024 tokenizers the generation campaign's priors wait on, once each
    assert [(r.method, r.size, r.seed) for r in plan[38:41]] == [(m, 1024, 0) for m in campaign.GENERATION_METHODS]
    generation = {(r.method, r.size) for r in campaign.generation_plan()}
    assert {(r.method, r.size) for r in plan[:41] if r.seed == 0 and not r.ablation} >= generation
    # then simvq's three seeds at K=262,144 on the finer grid (vq's seed 0 beside its first), the linking
    # K=65,536 runs after seed 0
    assert [(r.method, r.size, r.seed, r.grid) for r in plan[41:47]] == [
        ("simvq", 262144, 0, 14), ("vq", 262144, 0, 14), ("simvq", 65536, 0, 14), ("vq", 65536, 0, 14),
        ("simvq", 262144, 1, 14), ("simvq", 262144, 2, 14)]
    ablations = plan[47:65]
    assert all(r.ablation and r.size == 8192 and r.bench_args()[-2] == "--variants" and r.bench_kind("image") == "ablations" for r in ablations)
    from simvq.experiments.sweep import ABLATIONS, ABLATIONS_FOR_VQ, JOINT_TRAINING

    assert {r.ablation for r in ablations} == set(ABLATIONS) - {"lr x0.1", "lr x10"}
    assert all(r.method == "simvq" or r.ablation in ABLATIONS_FOR_VQ for r in ablations)
    # then C trained with W (the reviewers' question) to three seeds, so its verdict is a test
    assert [(r.ablation, r.method, r.seed) for r in plan[65:67]] == [(JOINT_TRAINING, "simvq", 1), (JOINT_TRAINING, "simvq", 2)]
    # vq's K=262,144 seeds 1-2 after the other methods at K=65,536, then vq_lc there
    later = [r for r in plan if r.grid and r not in plan[41:47]]
    assert [(r.method, r.size, r.seed) for r in later] == [("vq", 262144, 1), ("vq", 262144, 2), ("vq_lc", 262144, 0)]
    assert all(plan.index(r) < plan.index(later[0]) for r in plan if r.size == 65536 and not r.grid and (r.method, r.size) not in campaign.COSTLY)
    for method in ("simvq", "vq"):  # the issue's >= 3 seeds at every K, K=262,144 included
        for size in (1024, 8192, 65536, 262144):
            assert {r.seed for r in plan if (r.method, r.size, r.stages, r.ablation) == (method, size, None, None)} == {0, 1, 2}
    # the costly cells last, after sc_vae's one affordable run
    assert [(r.method, r.size) for r in plan[-3:]] == [("sc_vae", 1024), *campaign.COSTLY]


def test_a_stream_starts_a_run_only_if_the_cap_covers_it(campaign, tmp_path):
    image = {**campaign.CAMPAIGNS["image"], "artifacts": "ledger"}
    (tmp_path / "ledger").mkdir()
    ledger = tmp_path / "ledger" / "spend.csv"
    cheap, costly = campaign.Run("vq", 8192, 1, 2000), campaign.Run(*campaign.COSTLY[0], 0, 2000)
    for recorded, fits in ((0.0, True), (30.0 - image["unrecorded"] - 4.0, False), (30.0 - image["unrecorded"], False)):
        ledger.write_text(f"run,cpu_seconds,wall_seconds,finished\nx,{recorded * 3600},0,now\n")
        spent = campaign.spent_cpu_hours(image, tmp_path)
        assert spent == pytest.approx(recorded + image["unrecorded"])
        assert campaign.affordable(image, costly, spent) is fits
        assert campaign.affordable(image, cheap, spent) is (recorded < 30.0 - image["unrecorded"])


def test_generation_queue_puts_prior_size_first_and_three_seeds_at_the_chosen_size(campaign):
    plan = campaign.generation_plan()
    assert len(plan) == len({run.key for run in plan})
    axis = plan[:12]
    assert {(r.prior, r.method, r.size) for r in axis} == {(p, m, k) for p in campaign.PRIOR_SIZES for m in ("simvq", "vq") for k in (1024, 8192)}
    for method in ("simvq", "vq"):
        for size in (1024, 8192):
            assert sorted(r.seed for r in plan if (r.method, r.size, r.prior) == (method, size, campaign.CHOSEN_PRIOR)) == [0, 1, 2]
    assert {r.method for r in plan} == {"simvq", "vq", "vq_ema", "fsq", "lfq"} and plan[-1].method == "lfq"
    for prior in campaign.PRIOR_SIZES:  # two seeds at every size at least: the change of the gap with size is a test
        for method in ("simvq", "vq"):
            for size in (1024, 8192):
                assert len([r for r in plan if (r.prior, r.method, r.size) == (prior, method, size)]) >= 2
    assert all((r.prior, r.size) in campaign.PRIOR_CPU_HOURS for r in plan)  # every prior has a measured cost
    # the seed-1 priors off the chosen size: K=1,024's complete its test of the change before K=8,192's start
    off_size = [r.size for r in plan if r.seed == 1 and r.prior != campaign.CHOSEN_PRIOR]
    assert len(off_size) == 8 and off_size == sorted(off_size)
    generation = campaign.CAMPAIGNS["generation"]
    large = next(r for r in plan if r.prior == "prior_large" and r.size == 8192)
    assert not campaign.affordable(generation, large, 15.0 - 0.5) and campaign.affordable(generation, plan[-1], 15.0 - 0.5)
    assert plan[0].tokenizer.key == ("main", "simvq", "8192", "0", str(campaign.BUDGET))
    assert plan[0].bench_args()[-2:] == ["--config", "configs/bench/prior.yaml"]
    assert all((ROOT / "configs" / "bench" / f"{p}.yaml").is_file() for p in campaign.PRIOR_SIZES)


def test_speech_queue_is_the_issue_table(campaign):
    plan = campaign.speech_plan()
    assert sorted((r.method, r.size, r.seed) for r in plan) == sorted(
        [(m, 4096, s) for m in ("simvq", "vq", "vq_ema", "fsq") for s in (0, 1)] + [("simvq", 65536, 0), ("vq", 65536, 0)])
    assert [r.seed for r in plan[:4]] == [0] * 4


def test_a_speech_run_with_no_landed_seed_is_planned_at_its_measured_cost(campaign, tmp_path):
    """The K=65,536 codecs have no landed seed: planned at the measured cost of a codec run, a session
    with 2.5 hours before its stop time starts one (at twice a typical run it never would)."""
    speech = campaign.CAMPAIGNS["speech"]
    large = next(r for r in campaign.speech_plan() if r.size == 65536)
    assert speech["estimate"](large) == campaign.SPEECH_CPU_HOURS
    assert campaign.expected_wall_seconds(speech, tmp_path, large) < 2.5 * 3600  # an empty ledger: 1.5 wall per CPU second
    assert campaign.affordable(speech, large, 15.0 - 2.0) and not campaign.affordable(speech, large, 15.0 - 1.0)


@pytest.mark.parametrize("kind", ["image", "generation", "audio"])
def test_every_results_row_keys_as_its_run(campaign, tmp_path, kind):
    run = {"image": campaign.Run("vq", 8192, 1, 2000, grid=14), "generation": campaign.Run("vq", 8192, 1, 4000, prior="prior_small"),
           "audio": campaign.Run("fsq", 4096, 1, 3000)}[kind]
    fields = GENERATION_FIELDS if kind == "generation" else get_recipe(kind).result_columns
    row = {"variant": run.variant, "method": run.method, "codebook_size": run.size, "seed": run.seed, "max_steps": run.budget,
           "steps": run.budget, "prior": run.prior}
    append_result(tmp_path / "r.csv", row, fields=fields)  # the row as the CSV gives it back: strings, the kind's columns
    assert campaign.done_keys(tmp_path / "r.csv") == {run.key}


def test_a_dead_streams_claim_is_free_and_a_live_ones_is_not(campaign, tmp_path):
    run = campaign.Run("simvq", 1024, 0, 2000)
    (tmp_path / run.slug).write_text(str(os.getpid()))
    assert not campaign.claim(tmp_path, run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / run.slug).write_text(str(dead.pid))
    assert campaign.claim(tmp_path, run) and (tmp_path / run.slug).read_text() == str(os.getpid())


def test_a_prior_waits_for_its_tokenizers_row(campaign, tmp_path):
    prior = campaign.Run("vq", 1024, 2, 4000, prior="prior")
    assert not campaign.ready(tmp_path, prior) and campaign.ready(tmp_path, campaign.Run("vq", 1024, 2, 2000))
    row = {"variant": "main", "method": "vq", "codebook_size": 1024, "seed": 2, "max_steps": 2000}
    append_result(tmp_path / "docs" / "results.csv", row, fields=get_recipe("image").result_columns)
    assert campaign.ready(tmp_path, prior)


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def new_repo(path, **files):
    """A git repository at ``path`` whose first commit holds ``files`` (name: text)."""
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "t@t")
    git(path, "config", "user.name", "t")
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "add", *files)
    git(path, "commit", "-qm", "init")
    return path


def test_landing_commits_the_row_its_artifacts_and_its_cpu_time_only(campaign, tmp_path):
    # ignoring runs/ as the project does: kept files under docs/*/runs/ must still land
    repo = new_repo(tmp_path / "repo", README="x", **{".gitignore": "runs/\n"})
    (repo / "README").write_text("the user's edit, not to be committed")
    run = campaign.Run("simvq", 8192, 0, 4000, prior="prior")
    work = repo / "runs" / "campaign" / "generation"
    run_dir = work / "runs" / run.run_subdir
    run_dir.mkdir(parents=True)
    for name in ("validation.json", "samples.png"):
        (run_dir / name).write_text(name)
    (run_dir / "model.safetensors").write_text("big")  # not an artifact
    stream = work / "stream_G.csv"
    append_result(stream, {"prior": "prior", "method": "simvq", "codebook_size": 8192, "seed": 0, "steps": 4000, "domain_fid": 30.5,
                           "domain_fid_tuned": 20.25, "best_val_nll_bits_per_token": 9.1, "best_step": 3000, "train_seconds": 100,
                           "run_dir": "elsewhere"}, fields=GENERATION_FIELDS)
    row = campaign.land(repo, campaign.CAMPAIGNS["generation"], run, stream, run_dir, spend=(1234.4, 2000.0))
    assert row["run_dir"] == "runs/campaign/generation/runs/prior/simvq-K8192-seed0-steps4000"
    committed = set(git(repo, "show", "--name-only", "--format=", "HEAD").split())
    kept = "docs/generation/runs/prior-simvq-K8192-seed0-steps4000"
    assert committed == {"docs/generation/generation.csv", "docs/generation/spend.csv", f"{kept}/validation.json", f"{kept}/samples.png"}
    assert "domain FID 30.5 default, 20.2 tuned" in git(repo, "log", "-1", "--format=%s")
    assert git(repo, "status", "--porcelain", "--untracked-files=no").split() == ["M", "README"]  # the user's edit left alone
    assert campaign.done_keys(repo / "docs" / "generation" / "generation.csv") == {run.key}
    with (repo / "docs" / "generation" / "spend.csv").open() as handle:
        ledger = list(csv.DictReader(handle))
    assert (ledger[0]["run"], ledger[0]["cpu_seconds"], ledger[0]["wall_seconds"]) == (run.slug, "1234", "2000")
    assert read_results(repo / "docs" / "generation" / "generation.csv")[0]["domain_fid"] == "30.5"


def test_rows_landed_without_a_kept_file_get_it_from_their_run_directory_once(campaign, tmp_path):
    """A row landed before ``usage_history.json`` joined the image campaign's kept files (or by a
    stream running older code) gets it from its run directory, committed alone; a row whose run
    directory is gone is left as it is."""
    repo = new_repo(tmp_path / "repo", README="x", **{".gitignore": "runs/\n"})
    fields = get_recipe("image").result_columns
    for seed in (0, 1):
        run = campaign.Run("simvq", 8192, seed, 2000)
        run_dir = repo / "runs" / "campaign" / "image" / "runs" / run.run_subdir
        if seed == 0:
            run_dir.mkdir(parents=True)
            (run_dir / "usage_history.json").write_text("[]")
        append_result(repo / "docs" / "results.csv", {"variant": "main", "method": "simvq", "codebook_size": 8192, "seed": seed,
                                                      "max_steps": 2000, "run_dir": str(run_dir.relative_to(repo))}, fields=fields)
    git(repo, "add", "docs/results.csv")
    git(repo, "commit", "-qm", "rows")
    assert campaign.keep_missing("image", repo) == 0
    kept = "docs/image/runs/main-simvq-K8192-seed0-steps2000/usage_history.json"
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == [kept]
    head = git(repo, "rev-parse", "HEAD")
    assert campaign.keep_missing("image", repo) == 0 and git(repo, "rev-parse", "HEAD") == head  # nothing missing: no commit


def test_the_finer_grid_references_are_measured_once_cached_and_charged_to_the_ledger(campaign, tmp_path):
    import json

    from simvq.experiments.report import references as refs
    from simvq.metrics.coverage import gaussian_reference_counts

    # both 14x14 cells, 52 tokens a code: Fashion-MNIST's 70,000 train + test images at the recipe's d = 64
    assert campaign.reference_cells() == [(65536, 13_720_000, 64), (262144, 13_720_000, 64)]
    repo = new_repo(tmp_path / "repo", README="x")
    cheap, dear = (16, 800, 8), (int(refs.CHEAP_WORK // 800) + 1, 800)  # 3 seeds; 2 above CHEAP_WORK
    assert campaign.measure_references(repo, [cheap]) == 0
    cache = json.loads((repo / refs.DEFAULT_CACHE).read_text())
    entries = cache[refs.key(*cheap)]
    assert [e["seed"] for e in entries] == [0, 1, 2]
    counts = gaussian_reference_counts(*cheap, seed=1)  # the measurement the cache holds
    assert entries[1]["usage"] == pytest.approx(float((counts > 0).double().mean()))
    assert refs.seeds_for(*dear) == refs.SEEDS_LARGE == 2
    with (repo / "docs" / "image" / "spend.csv").open() as handle:
        ledger = list(csv.DictReader(handle))
    assert [e["run"] for e in ledger] == [f"reference-K16-N800-seed{seed}" for seed in range(3)]  # each seed charged as it is cached
    assert set(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == {refs.DEFAULT_CACHE, "docs/image/spend.csv"}
    head = git(repo, "rev-parse", "HEAD")
    assert campaign.measure_references(repo, [cheap]) == 0 and git(repo, "rev-parse", "HEAD") == head  # cached: nothing measured again


def test_an_interrupted_runs_earlier_sessions_count_once(campaign, tmp_path):
    import json

    assert campaign.interrupted_cpu_seconds(tmp_path) == 0.0
    sessions = [{"start_step": 0, "end_step": 500, "seconds": 90.0, "cpu_seconds": 60.5}, {"start_step": 500, "end_step": 700, "seconds": 30.0}]
    (tmp_path / "progress.json").write_text(json.dumps({"global_step": 700, "sessions": sessions}))
    assert campaign.interrupted_cpu_seconds(tmp_path) == 60.5  # a session from before the CPU clock: none counted, not its wall time


def test_check_smoke_trains_each_queued_configuration_once_and_names_failures(campaign, tmp_path, monkeypatch, capsys):
    """Seeds of one configuration are checked once; a configuration ``simvq bench`` refuses fails the check."""
    plan = [campaign.Run("simvq", 64, 0, 2000), campaign.Run("simvq", 64, 1, 2000), campaign.Run("simvq", 64, 0, 2000, ablation="no such ablation")]
    monkeypatch.setitem(campaign.CAMPAIGNS["image"], "plan", lambda: plan)
    assert campaign.check_plan("image", tmp_path) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("main-simvq-K64-seed0-steps2000: ok")
    assert lines[1].startswith("no_such_ablation-simvq-K64-seed0-steps2000: FAIL") and "unknown ablation" in lines[1]
    assert lines[2] == "check: 1 of 2 pending configuration(s) trained 3 steps"
    assert campaign.check_plan("generation", tmp_path) == 2


def test_pages_regenerates_each_campaigns_section_and_checks_the_listening_page(campaign, tmp_path, monkeypatch):
    calls, committed = [], []

    def fake_run(command, cwd, env):
        calls.append((command[1:], cwd, env["MPLBACKEND"]))
        return subprocess.CompletedProcess(command, 3 if "listening" in command[2] else 0)

    monkeypatch.setattr(campaign.subprocess, "run", fake_run)
    monkeypatch.setattr(campaign, "git_commit", lambda repo, paths, message: committed.extend(paths))
    assert campaign.write_pages("image", tmp_path) == 0
    # the cap and the spend before the ledger, beside it, for the report's one total against the cap
    assert committed == ["docs/image/budget.json"]
    assert json.loads((tmp_path / "docs" / "image" / "budget.json").read_text()) == {"cap": 30.0, "before_ledger": 1.3}
    assert calls == [(["-m", "simvq.cli", "report", "--results", "docs/results.csv", "--cached-references", "--spend", "docs/image/spend.csv",
                       "--kept", "docs/image/runs", "--out", "docs/results.md", "--figures", "docs/figures"], tmp_path, "Agg")]
    calls.clear()
    assert campaign.write_pages("speech", tmp_path) == 3  # the listening check's failure is the exit code
    assert [c[0][:5] for c in calls] == [["-m", "simvq.cli", "report", "--speech", "docs/speech/results.csv"],
                                         ["-m", "simvq.experiments.listening", "docs/speech/results.csv", "--check"]]


def test_where_the_tokens_land_is_measured_once_per_landed_row_and_committed(campaign, tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from helpers import tiny_tokenizer
    from simvq.experiments.analysis import run_geometry

    repo = new_repo(tmp_path / "repo", README="x")
    (repo / "runs").mkdir()
    run_dir = tiny_tokenizer(repo / "runs", "quantizer.name=simvq", "quantizer.codebook_size=16")
    run = campaign.Run("simvq", 8192, 0, campaign.BUDGET)  # a queued row; its model here is the tiny one
    counts = torch.tensor([0] * 4 + [3] * 12)
    (repo / "docs" / "image" / "counts").mkdir(parents=True)
    save_file({"counts": counts}, str(repo / "docs" / "image" / "counts" / f"{run.slug}.safetensors"))
    row = {"variant": "main", "method": "simvq", "codebook_size": 8192, "seed": 0, "steps": campaign.BUDGET, "max_steps": campaign.BUDGET,
           "tokens": 2 * 8192,
           "run_dir": str(run_dir.relative_to(repo))}
    append_result(repo / "docs" / "results.csv", row, fields=get_recipe("image").result_columns)
    git(repo, "add", "docs")
    git(repo, "commit", "-qm", "row")
    assert campaign.measure_geometry(repo) == 0
    stored = json.loads((repo / "docs" / "data" / "codebook_geometry.json").read_text())
    entry = stored["main/simvq/K8192/seed0"]
    assert entry["usage_by_radius"] == run_geometry(run_dir, counts)["usage_by_radius"]
    assert (entry["reference"]["codes"], entry["reference"]["tokens"], entry["reference"]["dim"]) == (8192, 2 * 8192, 64)  # the row's N/K and d
    assert set(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == {"docs/data/codebook_geometry.json"}
    head = git(repo, "rev-parse", "HEAD")
    assert campaign.measure_geometry(repo) == 0 and git(repo, "rev-parse", "HEAD") == head  # measured once


def test_a_stream_near_its_stop_time_starts_only_runs_expected_to_land_before_it(campaign, tmp_path):
    """The expected wall time is the slowest landed seed of the run's cell, else its CPU estimate at the
    ledger's wall/CPU ratio; ``--stop-by`` reads the next HH:MM on the clock."""
    image = {**campaign.CAMPAIGNS["image"], "artifacts": "ledger"}
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / "spend.csv").write_text(
        "run,cpu_seconds,wall_seconds,finished\n"
        "main-vq-K8192-seed0-steps2000,250,300,t\nmain-vq-K8192-seed1-steps2000,260,500,t\nmain-cvq-K8192-seed0-steps2000,700,40,t\n"
        "reference-K16-N800-seed0,10,9000,t\nlost-main-vq-K8192-seed2-steps2000,100,0,t\n")
    assert campaign.expected_wall_seconds(image, tmp_path, campaign.Run("vq", 8192, 2, 2000)) == 500.0
    ratio = 800 / 510  # the wall over CPU of runs landed in one session; references, lost and resumed runs left out
    large = campaign.Run("simvq", 262144, 1, 2000, grid=14)
    assert campaign.expected_wall_seconds(image, tmp_path, large) == pytest.approx(campaign.estimated_hours(image, large) * 3600 * ratio)
    assert campaign.expected_wall_seconds(image, tmp_path, campaign.Run("cvq", 8192, 1, 2000)) == 700.0  # resumed: its CPU, not its last session
    # no seed and no estimate: twice the median run at its K (300, 500, 700: 500), else in the ledger
    assert campaign.expected_wall_seconds(image, tmp_path, campaign.Run("vq_lc", 8192, 0, 2000)) == 1000.0
    assert campaign.expected_wall_seconds(image, tmp_path, campaign.Run("vq_lc", 1024, 0, 2000)) == 1000.0
    noon = time.mktime((2026, 12, 7, 12, 0, 0, 0, 0, -1))
    assert campaign.deadline("13:30", now=noon) == noon + 5400
    assert campaign.deadline("11:00", now=noon) == noon + 23 * 3600  # past today: tomorrow
    with pytest.raises(SystemExit):
        campaign.main(["run", "image", "--stop-by", "25:00"])


def test_a_run_lost_in_flight_stays_counted_and_one_that_lands_is_not_counted_twice(campaign, tmp_path):
    """``record_in_flight`` writes the part-trained runs with their checkpointed CPU; on the next
    machine ``reconcile_in_flight`` charges the ledger with one whose directory is gone or restarted,
    keeps one still there, and drops one that landed."""
    import json

    repo = new_repo(tmp_path / "repo", README="x", **{".gitignore": "runs/\n"})
    lost, restarted, alive, landed = (campaign.Run(method, 8192, seed, 2000) for method in ("vq", "simvq") for seed in (0, 1))
    runs = repo / "runs" / "campaign" / "image" / "runs"

    def progress(run, step, cpu):
        (runs / run.run_subdir).mkdir(parents=True, exist_ok=True)
        sessions = [{"start_step": 0, "end_step": step, "cpu_seconds": cpu}]
        (runs / run.run_subdir / "progress.json").write_text(json.dumps({"global_step": step, "sessions": sessions}))

    for run, step, cpu in ((lost, 1500, 900.0), (restarted, 1000, 600.0), (alive, 500, 300.0), (landed, 1900, 1000.0)):
        progress(run, step, cpu)
    changed = campaign.record_in_flight("image", repo)
    assert changed == ["docs/image/in_flight.csv"]
    assert {(e["run"], e["cpu_seconds"], e["steps"]) for e in read_results(repo / changed[0])} == {
        (landed.slug, "1000", "1900"), (lost.slug, "900", "1500"), (restarted.slug, "600", "1000"), (alive.slug, "300", "500")}
    assert campaign.record_in_flight("image", repo) == []  # unchanged: nothing to commit
    # the next session's machine: the lost run's directory is gone, another restarted from scratch,
    # one resumed and landed (its ledger line counts its earlier sessions)
    import shutil

    shutil.rmtree(runs / lost.run_subdir)
    progress(restarted, 100, 60.0)
    append_result(repo / "docs" / "results.csv", {"variant": "main", "method": "simvq", "codebook_size": 8192, "seed": 1, "max_steps": 2000},
                  fields=get_recipe("image").result_columns)
    assert campaign.reconcile_in_flight("image", repo) == ["docs/image/in_flight.csv", "docs/image/spend.csv"]
    ledger = read_results(repo / "docs" / "image" / "spend.csv")
    assert {(e["run"], e["cpu_seconds"]) for e in ledger} == {("lost-" + lost.slug, "900"), ("lost-" + restarted.slug, "600")}
    assert [e["run"] for e in read_results(repo / "docs" / "image" / "in_flight.csv")] == [alive.slug]
    assert campaign.reconcile_in_flight("image", repo) == []  # settled once
    from simvq.experiments.results_file import spend_text

    assert "2 runs lost in flight" in spend_text(repo / "docs" / "image" / "spend.csv")
    (repo / "docs" / "image" / "budget.json").write_text('{"cap": 30.0, "before_ledger": 1.3}')
    # 900 + 600 CPU-seconds lost: 0.42 CPU-hours in the ledger, 1.72 with the spend before it, and the
    # 300 of the run still in flight: spent too, whether it lands or is lost
    assert spend_text(repo / "docs" / "image" / "spend.csv").endswith(
        "Against the cap of 30 CPU-hours: 1.80 counted (the ledger's 0.42 + 1.3 spent before it + 0.08 in runs left "
        "part-trained, `in_flight.csv` beside the ledger), 28.20 left.")
    image = campaign.CAMPAIGNS["image"]
    assert campaign.spent_cpu_hours(image, repo) == pytest.approx((1500 + 300) / 3600 + 1.3)
    # it lands: its ledger line counts its earlier sessions, and the in-flight entry goes with it
    append_result(repo / "docs" / "results.csv", {"variant": "main", "method": "simvq", "codebook_size": 8192, "seed": 0, "max_steps": 2000},
                  fields=get_recipe("image").result_columns)
    assert campaign.spent_cpu_hours(image, repo) == pytest.approx(1500 / 3600 + 1.3)  # not counted twice before it is dropped
    assert campaign.drop_in_flight(repo, image, alive) == ["docs/image/in_flight.csv"]
    assert read_results(repo / "docs" / "image" / "in_flight.csv") == [] and campaign.drop_in_flight(repo, image, alive) == []
    # a cost probe's CPU counts against the cap too, named as such, not as a landed run
    campaign.record_spend(repo, image, "probe-stages-4-K1024-steps60", 360.0, 300.0)
    text = spend_text(repo / "docs" / "image" / "spend.csv")
    assert "2 runs lost in flight and 1 cost probe" in text and "1.82 counted" in text


def test_a_stream_counts_the_runs_other_live_streams_are_making(campaign, tmp_path, monkeypatch):
    """Two streams checking one remainder of the cap would both spend it: the planned hours of runs a
    live process has claimed count as spent until they land; a dead stream's claim does not."""
    image, plan = campaign.CAMPAIGNS["image"], campaign.image_plan()
    cvq, fsq = (next(r for r in plan if (r.method, r.size) == (m, 65536)) for m in ("cvq", "fsq"))
    claims = tmp_path / "claims"
    assert campaign.claim(claims, cvq)
    assert campaign.claimed_hours(image, claims, plan, set()) == pytest.approx(1.0)
    assert campaign.claimed_hours(image, claims, plan, {cvq.key}) == 0.0  # landed: in the ledger instead
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (claims / fsq.slug).write_text(dead)
    assert campaign.claimed_hours(image, claims, plan, set()) == pytest.approx(1.0)  # the dead stream's claim is not counted
    import simvq.cpu

    monkeypatch.setattr(simvq.cpu, "cpu_has_native_bf16", lambda: False)
    seeds = [r for r in plan if (r.method, r.size) == ("simvq", 262144) and r.seed]
    done = {r.key for r in plan[: plan.index(cvq)] if r not in seeds}  # simvq's K=262,144 seeds 1-2 wait ahead: 3.4 held
    spent = 30.0 - 3.4 - 1.5  # 1.5 left beside the hold: fsq's 1.0 fits alone, not beside cvq's in flight
    assert campaign.covered(image, plan, done, spent, fsq)
    assert not campaign.covered(image, plan, done, spent + campaign.claimed_hours(image, claims, plan, done), fsq)


def test_the_k262144_runs_wait_for_a_cpu_with_native_bf16(campaign, tmp_path, monkeypatch):
    """Their planned cost is the bf16-screened search's; without native bf16 the plan marks them as
    waiting for such a machine, and the other runs stay ready."""
    import simvq.cpu

    large, small = campaign.Run("simvq", 262144, 1, 2000, grid=14), campaign.Run("simvq", 8192, 0, 2000, ablation="no bias")
    for native in (True, False):
        monkeypatch.setattr(simvq.cpu, "cpu_has_native_bf16", lambda native=native: native)
        assert campaign.ready(tmp_path, large) is native and campaign.ready(tmp_path, small)


def test_the_runs_behind_those_waiting_for_a_machine_spend_only_what_they_leave(campaign, monkeypatch):
    """The queue's order is the issue's priority: on a CPU without native bf16 the K=262,144 runs
    (1.7-1.85 CPU-hours each planned; seed 0 counts here, as nothing has landed) keep their share of the cap, which the ablations queued behind them
    cannot spend; on a CPU with native bf16 nothing is held."""
    import simvq.cpu

    image, plan = campaign.CAMPAIGNS["image"], campaign.image_plan()
    waiting = [r for r in plan if r.size == 262144]
    ablation = next(r for r in plan if r.ablation == "no bias")
    first = plan[0]
    monkeypatch.setattr(simvq.cpu, "cpu_has_native_bf16", lambda: False)
    before_ablation = [r for r in waiting if plan.index(r) < plan.index(ablation)]
    def hours(runs):
        return sum(campaign.estimated_hours(image, r) for r in runs)

    assert len(before_ablation) == 4 and campaign.held_for_waiting(image, plan, set(), ablation) == pytest.approx(hours(before_ablation))
    assert campaign.held_for_waiting(image, plan, set(), first) == 0.0  # nothing is ahead of the queue's head
    assert campaign.held_for_waiting(image, plan, {waiting[0].key}, ablation) == pytest.approx(hours(before_ablation[1:]))  # landed: not held
    assert campaign.held_for_waiting(image, plan, set()) == pytest.approx(hours(waiting))
    spent = 30.0 - 6.0  # 6 CPU-hours left: enough for an ablation alone, not beside the 7.25 held
    held = campaign.held_for_waiting(image, plan, set(), ablation)
    assert campaign.affordable(image, ablation, spent) and not campaign.affordable(image, ablation, spent + held)
    # a waiting run the cap can no longer cover holds nothing: with 4.0 left the first two hold 3.55, and
    # the 0.45 beyond goes to the runs behind; with 0.5 left none holds
    assert [r.key for r in campaign.holding_runs(image, plan, set(), ablation, spent=26.0)] == [r.key for r in before_ablation[:2]]
    assert campaign.held_for_waiting(image, plan, set(), ablation, spent=26.0) == pytest.approx(hours(before_ablation[:2]))
    assert campaign.covered(image, plan, set(), 26.0, ablation) and campaign.covered(image, plan, set(), 29.5, ablation)
    assert not campaign.covered(image, plan, set(), 30.0, ablation)
    monkeypatch.setattr(simvq.cpu, "cpu_has_native_bf16", lambda: True)
    assert campaign.held_for_waiting(image, plan, set(), ablation) == 0.0


def test_plan_says_the_cap_is_held_not_spent_when_only_runs_for_another_machine_fit(campaign, tmp_path, monkeypatch, capsys):
    """On a CPU without native bf16, once the runs it can make are done or behind the K=262,144 runs'
    hold, ``plan`` says the rest is held for a machine that fits them, with the hours left and held,
    rather than calling the cap spent; where the ledger reaches the cap it is spent."""
    import simvq.cpu

    monkeypatch.setattr(simvq.cpu, "cpu_has_native_bf16", lambda: False)
    image, plan = campaign.CAMPAIGNS["image"], campaign.image_plan()
    waiting = [r for r in plan if r.size == 262144]
    behind = plan[plan.index(waiting[-1]) + 1:]  # residual table, sc_vae, the costly cells
    results = tmp_path / image["results"]
    results.parent.mkdir(parents=True)
    for run in plan:
        if run not in waiting and run not in behind:
            append_result(results, {"variant": run.variant, "method": run.method, "codebook_size": run.size, "seed": run.seed,
                                    "max_steps": run.budget}, fields=get_recipe("image").result_columns)
    ledger = campaign.ledger_path(image, tmp_path)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    # 5.60 left: the first three waiting runs hold 5.4, the rest the cap no longer covers, and the 0.2
    # beyond the hold covers none of the runs behind (the cheapest planned at 0.27)
    held = sum(campaign.estimated_hours(image, r) for r in waiting[:3])
    for counted, line in ((24.4, f"nothing left is for this machine: of the 5.60 CPU-hours left, {held:.2f} are held for the "
                                 f"3 run(s) waiting for a machine that fits them ({len(waiting) - 3} more wait there, which the cap no "
                                 f"longer covers), and the {len(behind)} queued for this machine get only what that leaves"),
                          (30.5, "the cap is spent for this plan: what is left of it (0.00 CPU-hours) covers no run left")):
        ledger.write_text(f"run,cpu_seconds,wall_seconds,finished\nx,{(counted - image['unrecorded']) * 3600},0,now\n")
        campaign.show_plan("image", tmp_path)
        assert line in capsys.readouterr().out


def test_a_stream_short_of_time_does_not_spend_the_cap_of_the_runs_it_skips(campaign):
    """Near its stop time a stream may start a cheaper run further down the queue, but not with the cap
    the runs it skipped need: with 1.4 CPU-hours left and five priors ahead of lfq's that will not land
    before the stop (3.12 CPU-hours planned), lfq's prior waits."""
    generation, plan = campaign.CAMPAIGNS["generation"], campaign.generation_plan()
    skipped = [r for r in plan if r.seed == 1 and r.prior != campaign.CHOSEN_PRIOR][3:]  # the large K=1,024 vq prior on
    lfq = next(r for r in plan if r.method == "lfq")  # the first of lfq's two
    done = {r.key for r in plan if r not in skipped and r.method != "lfq"}
    spent = 15.0 - 1.4
    assert campaign.affordable(generation, lfq, spent)  # alone it fits what is left
    assert campaign.held_for_waiting(generation, plan, done, lfq, startable={lfq.key}) == pytest.approx(
        sum(campaign.PRIOR_CPU_HOURS[(r.prior, r.size)] for r in skipped))
    assert not campaign.covered(generation, plan, done, spent, lfq, {lfq.key})
    assert campaign.covered(generation, plan, done, spent, skipped[0], {r.key for r in skipped})  # the queue's next one is


def test_plan_says_when_the_cap_is_spent_for_what_is_left(campaign, tmp_path, capsys):
    """A campaign whose last runs each cost more than what is left of its cap is over for this plan:
    ``plan`` says so (how much is left, the cheapest run's estimate); while one run still fits, not."""
    speech, plan = campaign.CAMPAIGNS["speech"], campaign.speech_plan()
    done = {r.key for r in plan[:-2]}
    assert campaign.runs_left_covered(speech, plan, done, 15.0 - 1.5) == plan[-2:]
    assert campaign.runs_left_covered(speech, plan, done, 15.0 - 1.0) == []
    results = tmp_path / speech["results"]
    results.parent.mkdir(parents=True)
    for run in plan[:-2]:
        append_result(results, {"method": run.method, "codebook_size": run.size, "seed": run.seed, "max_steps": run.budget},
                      fields=get_recipe("audio").result_columns)
    ledger = campaign.ledger_path(speech, tmp_path)
    ledger.write_text(f"run,cpu_seconds,wall_seconds,finished\nx,{(14.0 - speech['unrecorded']) * 3600},0,now\n")
    campaign.show_plan("speech", tmp_path)
    spent = "the cap is spent for this plan: what is left of it (1.00 CPU-hours) covers no run left (2 in the queue; the cheapest planned at 1.40)"
    assert spent in capsys.readouterr().out
    ledger.write_text(f"run,cpu_seconds,wall_seconds,finished\nx,{(13.0 - speech['unrecorded']) * 3600},0,now\n")
    campaign.show_plan("speech", tmp_path)
    assert "the cap is spent" not in capsys.readouterr().out


def test_a_run_begun_in_another_precision_restarts_rather_than_mixing_two(campaign, tmp_path, monkeypatch):
    """A part-trained run resumes only where its recipe resolves to the precision its sessions trained
    in; otherwise (or where a session's precision was not recorded) it starts afresh, so its row is one
    precision, and its checkpointed CPU is charged as lost."""
    import simvq.train.core

    repo = new_repo(tmp_path / "repo", README="x", **{".gitignore": "runs/\n"})
    image, run = campaign.CAMPAIGNS["image"], campaign.Run("simvq", 262144, 1, 2000, grid=14)
    run_dir = repo / "runs" / "campaign" / "image" / "runs" / run.run_subdir
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"trainer": {"precision": "auto", "accelerator": "auto"}}))

    def sessions(*precisions):
        entries = [{"start_step": 0, "end_step": 251, "cpu_seconds": 1900.0, **({"precision": p} if p else {})} for p in precisions]
        (run_dir / "progress.json").write_text(json.dumps({"global_step": 251, "sessions": entries}))

    monkeypatch.setattr(simvq.train.core, "cpu_has_native_bf16", lambda: True)
    sessions("bf16-mixed")
    assert not campaign.mixes_precision(run_dir)
    sessions("32-true")
    assert campaign.mixes_precision(run_dir)
    monkeypatch.setattr(simvq.train.core, "cpu_has_native_bf16", lambda: False)
    assert not campaign.mixes_precision(run_dir) and campaign.restart_if_mixed(repo, image, run, run_dir) == []
    sessions(None)  # from before the precision was recorded
    assert campaign.mixes_precision(run_dir)
    (repo / "docs" / "image").mkdir(parents=True)
    (repo / "docs" / "image" / "in_flight.csv").write_text(f"run,cpu_seconds,steps\n{run.slug},1900,251\n")
    assert campaign.restart_if_mixed(repo, image, run, run_dir) == ["docs/image/spend.csv", "docs/image/in_flight.csv"]
    assert not run_dir.exists()
    assert [(e["run"], e["cpu_seconds"]) for e in read_results(repo / "docs" / "image" / "spend.csv")] == [("lost-" + run.slug, "1900")]
    assert read_results(repo / "docs" / "image" / "in_flight.csv") == []
    assert campaign.restart_if_mixed(repo, image, run, run_dir) == []  # nothing left to restart
