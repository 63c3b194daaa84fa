"""Run a measurement campaign as resumable background streams, committing every finished row.

    python benchmarks/campaign.py plan image                 # the queue, what is done, the cost so far
    python benchmarks/campaign.py run image --stream A --repo /work/main   # from a snapshot of the code
    python benchmarks/campaign.py run generation --stream G --repo /work/main --stop-by 02:50   # no run that would not land by then
    python benchmarks/campaign.py check image                # every pending configuration, 3 steps each
    python benchmarks/campaign.py pages image                # regenerate the campaign's section of docs/results.md
    python benchmarks/campaign.py references image           # the untrained-Gaussian references of the finer-grid rows
    python benchmarks/campaign.py geometry image             # where each row's tokens land in its codebook (pages does it first)

A campaign is an ordered queue of single runs (one `simvq bench` call each). Each stream takes the
next run nobody has claimed (a claim is a file holding the stream's pid; a dead pid's claim is
free again), runs it from the code it was started from (copy the tree first, so edits to the
repository do not change a running stream) with one thread, and when the row lands appends it to
the repository's results CSV, copies its small artifacts (the code histogram, the learning curve;
a prior's validation curve and sample grids) and commits just those files, with the run's CPU time in
the campaign's spend ledger (``spend.csv``: the child process's user + system seconds, so a loaded
machine's wall clock does not inflate it). A killed stream loses only the run in flight, and that
run resumes from its last checkpoint (the run directories live under the repository's ignored runs/).
A new machine has no runs/: ``pages`` (run it after stopping the streams) records each part-trained
run's checkpointed CPU in ``in_flight.csv`` beside the ledger, and the next stream charges the ones
this machine lost to the ledger as ``lost-`` lines; ``--stop-by`` keeps a stream from starting a run
the ledger expects to land after the session ends.

The generation campaign trains priors on the image campaign's tokenizers: a prior is claimable once
its tokenizer's row is in the image results; a tokenizer whose run directory is gone (a new machine)
is retrained first, from the same recipe and seed.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# the simvq this script's tree holds: a stream started from a snapshot lands its rows with the
# snapshot's code, not with whatever the installed package is edited into meanwhile
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from simvq.experiments.results_file import IN_FLIGHT, IN_FLIGHT_FIELDS, LOST, PROBE, REFERENCE, in_flight_cpu_hours, variant_folder  # noqa: E402


@dataclass(frozen=True)
class Run:
    method: str
    size: int
    seed: int
    budget: int
    grid: int | None = None
    stages: int | None = None
    prior: str | None = None  # generation: the prior recipe, configs/bench/<prior>.yaml
    ablation: str | None = None  # image: one of `simvq bench ablations`' variants (simvq.experiments.sweep.ABLATIONS)

    @property
    def variant(self) -> str:
        if self.ablation:
            return self.ablation
        parts = [f"stages={self.stages}"] if self.stages else []
        parts += [f"grid={self.grid}x{self.grid}"] if self.grid else []
        return " ".join(parts) or "main"

    @property
    def key(self) -> tuple:
        if self.prior:
            return (self.prior, self.method, str(self.size), str(self.seed), str(self.budget))
        return (self.variant, self.method, str(self.size), str(self.seed), str(self.budget))

    @property
    def slug(self) -> str:
        return f"{self.prior or variant_folder(self.variant)}-{self.method}-K{self.size}-seed{self.seed}-steps{self.budget}"

    @property
    def run_subdir(self) -> str:
        """Where ``simvq bench`` puts this run under its ``--out``."""
        return f"{self.prior or variant_folder(self.variant)}/{self.method}-K{self.size}-seed{self.seed}-steps{self.budget}"

    @property
    def tokenizer(self) -> Run:
        """A prior's tokenizer: the image campaign's main run of the same method, K and seed."""
        return Run(self.method, self.size, self.seed, BUDGET)

    def bench_args(self) -> list[str]:
        args = ["--methods", self.method, "--sizes", str(self.size), "--seeds", str(self.seed), "--budget", str(self.budget)]
        args += ["--grid", str(self.grid)] if self.grid else []
        args += ["--stages", str(self.stages)] if self.stages else []
        args += ["--config", f"configs/bench/{self.prior}.yaml"] if self.prior else []
        args += ["--variants", self.ablation] if self.ablation else []
        return args

    def bench_kind(self, kind: str) -> str:
        """``simvq bench``'s first argument: the campaign's kind, or ``ablations`` for an ablation."""
        return "ablations" if self.ablation else kind


BUDGET = 2000  # steps per image run, every method and K (warm-up + cosine: configs/bench/fmnist.yaml)
OTHERS = ["vq_ema", "vq_reset", "vq_lc", "cvq", "fsq", "lfq", "sqvae", "affine", "vq_wae", "hqa"]
GENERATION_METHODS = ("vq_ema", "fsq", "lfq")  # beside simvq and vq, at the chosen prior size; lfq last


# the ablations at K=8,192, one seed: (variant, methods) as `simvq bench ablations` runs them. float32
# first among those left: the ablations a CPU without native bf16 trains in float32 compare with it
ABLATION_RUNS = [("float32", ["simvq", "vq"]), ("train C and W", ["simvq"]), ("no bias", ["simvq"]), ("C scale x0.1", ["simvq"]),
                 ("C scale x10", ["simvq"]), ("init=uniform", ["simvq"]), ("init=orthogonal", ["simvq"]), ("dim=8", ["simvq", "vq"]),
                 ("dim=32", ["simvq", "vq"]), ("dim=128", ["simvq", "vq"]), ("rotation trick", ["simvq", "vq"]), ("official recipe", ["simvq", "vq"])]


# Cells whose full (tokens x K) posterior makes one run cost a large part of the cap, from the
# quantizer's own step measured on a 3,136-token batch, one thread, under two other streams (about
# 2x a quiet core: sqvae's whole K=8,192 run measured 2,046 CPU-s): sqvae 19 s and hqa 20 s a step
# at K=65,536 (2.2 and 2.0 at 8,192), so ~4.5 CPU-hours a run quiet; sc_vae's 30 unrolled ISTA
# steps 52 s a step at K=8,192 (3.4 at 1,024) and a 3.43M-token count of ~7 h: that cell is not run.
# estimated CPU-hours of the runs that need one before a stream starts them (the rest cost < 1)
# simvq at K=262,144: seed 0's measured 1.82 (6,538 CPU-s, bf16 screen), not the 1.7 first planned
ESTIMATED_CPU_HOURS = {("sqvae", 65536): 4.5, ("hqa", 65536): 4.5, ("sc_vae", 1024): 1.2, ("simvq", 262144): 1.85,
                       ("vq", 262144): 1.7, ("vq_lc", 262144): 1.7,
                       # the other K=65,536 cells, from vq_ema/vq_lc/vq_reset there on the AVX2 machine (1,978-3,458
                       # CPU-s in the ledger, the dearest beside another stream) and vq_wae's ~3.3x a plain run at
                       # 1,024: with no estimate a run starts on any remainder of the cap, and could spend into
                       # what the runs ahead of it hold
                       **{(m, 65536): 1.0 for m in ("cvq", "fsq", "lfq", "affine")}, ("vq_wae", 65536): 3.3}
COSTLY = [cell for cell, hours in ESTIMATED_CPU_HOURS.items() if hours >= 4.0]  # queued last
# the residual table's runs (4 stages), from a 60-step probe of each at 4 x 1,024 on the AVX2 machine,
# two side by side (the ledger's probe- line): residual and residual_simvq 0.37 CPU-s a step and ~130 s
# of evaluation; qinco 1.85 a step (its codebook network runs for every code of every stage), and its
# evaluation had not ended after 7 CPU-minutes when the probe was stopped, so ~1.15 CPU-hours at least;
# at 4 x 8,192 scaled by the one-index runs' K=8,192 / 1,024 cost there (~1.3x; qinco's network by K: 8x)
STAGED_CPU_HOURS = {("residual", 1024): 0.27, ("residual_simvq", 1024): 0.27, ("qinco", 1024): 1.4,
                    ("residual", 8192): 0.35, ("residual_simvq", 8192): 0.35, ("qinco", 8192): 10.0}


def image_plan() -> list[Run]:
    """The image campaign's order: simvq/vq seeds at K up to 65,536 first, then every method at
    K=8,192 (two seeds), the K=1,024 tokenizers the generation campaign's priors wait on, simvq/vq
    seeds at K=262,144 (14x14 grid, with the K=65,536 runs on that grid that link the two tables after
    seed 0), the ablations at 8,192 (C trained with W, the reviewers' question, with three seeds), then
    the rest; what the cap cuts comes off the end."""
    runs = [Run(m, k, s, BUDGET) for s in (0, 1, 2) for k in (1024, 8192, 65536) for m in ("simvq", "vq")]
    runs += [Run(m, 8192, s, BUDGET) for s in (0, 1) for m in OTHERS]
    runs += [Run(m, 1024, 0, BUDGET) for m in GENERATION_METHODS]
    runs += [Run(m, 262144, 0, BUDGET, grid=14) for m in ("simvq", "vq")]
    runs += [Run(m, 65536, 0, BUDGET, grid=14) for m in ("simvq", "vq")]
    runs += [Run("simvq", 262144, s, BUDGET, grid=14) for s in (1, 2)]
    runs += [Run(m, 8192, 0, BUDGET, ablation=variant) for variant, methods in ABLATION_RUNS for m in methods]
    runs += [Run("simvq", 8192, s, BUDGET, ablation="train C and W") for s in (1, 2)]  # the reviewers' question, tested
    runs += [Run(m, k, 0, BUDGET) for k in (1024, 65536) for m in OTHERS if (m, k) not in COSTLY
             and not (k == 1024 and m in GENERATION_METHODS)]
    # vq's seeds at K=262,144 come after the other methods at 65,536: where a CPU without native bf16
    # ran the queue the cap no longer covers all four seeds there (``Where the budget stands``), and
    # simvq's decide the open question (seed 0 used 78.6% of the codes, below the untrained 91.1%),
    # while vq's collapse (1.2%) is ~77 points from it, and its seeds at 65,536 span 0.16 points
    runs += [Run("vq", 262144, s, BUDGET, grid=14) for s in (1, 2)]
    runs += [Run("vq_lc", 262144, 0, BUDGET, grid=14)]
    runs += [Run(m, k, 0, BUDGET, stages=4) for k in (1024, 8192) for m in ("residual", "residual_simvq", "qinco")]
    runs += [Run("sc_vae", 1024, 0, BUDGET)]  # its own table: a token carries more than one index
    runs += [Run(m, k, 0, BUDGET) for m, k in COSTLY]  # last: each only if what is left of the cap covers it
    return runs


PRIOR_BUDGET = 3000  # steps cap per prior (3.5 epochs of the 55,000 training grids; the cap that fits 15 CPU-h); the held-out early stop may end it first
PRIOR_SIZES = ["prior", "prior_small", "prior_large"]  # ~1M, ~0.3M, ~3-4M parameters (configs/bench/)
CHOSEN_PRIOR = "prior"  # fixed before any result: the size for the seeds and the other methods


# measured CPU-hours of a whole prior (training to the cap + evaluation; docs/generation/spend.csv),
# so a stream does not start one that what is left of the cap cannot cover
PRIOR_CPU_HOURS = {("prior_small", 1024): 0.13, ("prior_small", 8192): 0.43, ("prior", 1024): 0.23, ("prior", 8192): 0.56,
                   ("prior_large", 1024): 0.52, ("prior_large", 8192): 0.87}


def generation_plan() -> list[Run]:
    """Prior size as an axis for simvq and vq (seed 0, both K), then seeds 1-2 of both at the chosen
    size, then vq_ema and fsq at it; then seed 1 of simvq and vq at the other two sizes, so whether the
    gap changes with size is a test: K=1,024's cells first (the cheaper K's test to complete; a slower
    machine left the cap short of both K's), cheapest first within a K, and lfq last."""
    runs = [Run(m, k, 0, PRIOR_BUDGET, prior=p) for k in (8192, 1024) for p in PRIOR_SIZES for m in ("simvq", "vq")]
    runs += [Run(m, k, s, PRIOR_BUDGET, prior=CHOSEN_PRIOR) for s in (1, 2) for k in (8192, 1024) for m in ("simvq", "vq")]
    runs += [Run(m, k, 0, PRIOR_BUDGET, prior=CHOSEN_PRIOR) for m in GENERATION_METHODS if m != "lfq" for k in (8192, 1024)]
    others = sorted(((p, k) for p in PRIOR_SIZES if p != CHOSEN_PRIOR for k in (1024, 8192)), key=lambda cell: (cell[1], PRIOR_CPU_HOURS[cell]))
    runs += [Run(m, k, 1, PRIOR_BUDGET, prior=p) for p, k in others for m in ("simvq", "vq")]
    runs += [Run("lfq", k, 0, PRIOR_BUDGET, prior=CHOSEN_PRIOR) for k in (8192, 1024)]
    return runs


# a codec's listening samples (the same first test utterances for every run) and its training log
SPEECH_KEEP = [f"samples/{i:02d}_{part}" for i in range(4) for part in ("original.wav", "reconstruction.wav", "spectrogram.png")]
SPEECH_KEEP += ["logs/csv/version_0/metrics.csv", "quality_curve.csv", "config.json", "metrics.json", "usage_history.json"]
SPEECH_BUDGET = 3000  # configs/bench/speech_codec.yaml: discriminators from step 1,000, cosine to the last step
# measured CPU-hours of a whole codec run (docs/speech/spend.csv): 3,900-5,000 CPU-s at K=4,096 on the
# machines with native bf16, 7,100 on an AVX2 one; at K=65,536 the search adds little (800 tokens a step).
# Without it a stream would plan a K=65,536 run at twice the median run and never start it in a session
SPEECH_CPU_HOURS = 1.4


def speech_plan() -> list[Run]:
    """The speech table: simvq, vq, vq_ema, fsq at K=4,096 x 2 seeds (seed 0 of each first), then simvq
    and vq at K=65,536."""
    runs = [Run(m, 4096, s, SPEECH_BUDGET) for s in (0, 1) for m in ("simvq", "vq", "fsq", "vq_ema")]
    runs += [Run(m, 65536, 0, SPEECH_BUDGET) for m in ("simvq", "vq")]
    return runs


def speech_quality_curve(run: Run, run_dir: Path) -> None:
    """PESQ/STOI of the reconstructions the codec wrote every 500 steps (``quality_curve.csv``)."""
    from simvq.experiments.speech_curve import CURVE_FILE, quality_curve, write_curve

    write_curve(quality_curve(run_dir, final_step=run.budget), run_dir / CURVE_FILE)


# cap: the campaign's CPU-hour budget; unrecorded: CPU-hours spent before the ledger existed (the
# pages' estimates), counted against the cap with the ledger
CAMPAIGNS = {
    # usage_history.json: each logging window's usage over the same number of training tokens, which
    # follows usage at K where the progress checks count too few tokens a code
    # unrecorded: the 14 rows before the ledger, at the ledger's own CPU cost of the same configurations
    "image": dict(plan=image_plan, kind="image", results="docs/results.csv", artifacts="docs/image", cap=30.0, unrecorded=1.3,
                  estimate=lambda run: (STAGED_CPU_HOURS if run.stages else ESTIMATED_CPU_HOURS).get((run.method, run.size), 0.0),
                  keep=["usage_history.json"]),
    "generation": dict(plan=generation_plan, kind="generation", results="docs/generation/generation.csv", artifacts="docs/generation",
                       cap=15.0, unrecorded=0.35, estimate=lambda run: PRIOR_CPU_HOURS.get((run.prior, run.size), 0.0),
                       keep=["validation.json", "validation_nll.png", "samples.png", "samples_tuned.png", "gen_metrics.json"]),
    # the corpus is built once, in the repository (not in each snapshot)
    "speech": dict(plan=speech_plan, kind="audio", results="docs/speech/results.csv", artifacts="docs/speech", cap=15.0, unrecorded=0.35,
                   estimate=lambda run: SPEECH_CPU_HOURS,
                   overrides=lambda repo: [f"data.root={repo / 'data' / 'speech'}"], keep=SPEECH_KEEP, after=speech_quality_curve),
}


def recipe_overrides(campaign: dict, repo: Path) -> list[str]:
    """The campaign's recipe overrides for ``simvq bench`` (the speech corpus's place in ``repo``)."""
    return campaign.get("overrides", lambda _: [])(repo)


def ledger_path(campaign: dict, repo: Path) -> Path:
    """The campaign's spend ledger: one entry per landed run, with its CPU and wall seconds."""
    return repo / campaign["artifacts"] / "spend.csv"


def ledger_entries(campaign: dict, repo: Path) -> list[dict]:
    ledger = ledger_path(campaign, repo)
    with ledger.open(newline="") if ledger.is_file() else open(os.devnull) as handle:
        return list(csv.DictReader(handle))


def spent_cpu_hours(campaign: dict, repo: Path) -> float:
    """CPU-hours counted against the cap: the ledger's, the unrecorded ones and those of runs left
    part-trained (``in_flight.csv``): spent whether such a run lands later or is lost."""
    done = done_keys(repo / campaign["results"])
    landed = {run.slug for run in campaign["plan"]() if run.key in done}
    ledger = ledger_path(campaign, repo)
    return (sum(float(e["cpu_seconds"]) for e in ledger_entries(campaign, repo)) / 3600 + campaign["unrecorded"]
            + in_flight_cpu_hours(ledger, landed=landed))


def in_flight_path(campaign: dict, repo: Path) -> Path:
    """Beside the ledger: the runs a stopped stream left part-trained, with their checkpointed CPU."""
    return ledger_path(campaign, repo).with_name(IN_FLIGHT)


def cell(slug: str) -> str:
    """A run's slug without its seed: the runs whose cost predicts one another's."""
    return re.sub(r"-seed\d+-", "-", slug)


def expected_wall_seconds(campaign: dict, repo: Path, run: Run) -> float:
    """How long ``run`` should take on the clock: the slowest landed run of its cell (another seed)
    in the ledger, else its CPU estimate at the ledger's wall/CPU ratio, else twice the median landed run
    at its K (or in the ledger).
    A resumed run's wall seconds cover its last session only, so a run counts at least its CPU seconds."""
    entries = [(float(e["wall_seconds"]), float(e["cpu_seconds"]), e["run"]) for e in ledger_entries(campaign, repo)
               if e.get("wall_seconds") and not e["run"].startswith((REFERENCE, LOST, PROBE))]
    same = [max(wall, cpu) for wall, cpu, slug in entries if cell(slug) == cell(run.slug)]
    if same:
        return max(same)
    whole = [(wall, cpu) for wall, cpu, _ in entries if wall >= cpu]  # runs that landed in one session
    ratio = sum(wall for wall, _ in whole) / max(sum(cpu for _, cpu in whole), 1.0) if whole else 1.5
    estimate = estimated_hours(campaign, run)
    if estimate:
        return estimate * 3600 * ratio
    # no seed of its own and no estimate (the costly cells have one): twice the typical run at its K
    at_k = [max(wall, cpu) for wall, cpu, slug in entries if f"-K{run.size}-" in slug] or [max(wall, cpu) for wall, cpu, _ in entries]
    return 2 * statistics.median(at_k) if at_k else 3600.0


def deadline(clock: str, *, now: float | None = None) -> float:
    """The epoch seconds of the next ``HH:MM`` on this machine's clock (today, or tomorrow if past)."""
    hours, minutes = (int(part) for part in clock.split(":"))
    now = time.time() if now is None else now
    day = time.localtime(now)
    target = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, hours, minutes, 0, 0, 0, -1))
    return target if target > now else target + 86400


def estimated_hours(campaign: dict, run: Run) -> float:
    """The CPU-hours the campaign plans for ``run`` (0 where it keeps no estimate: a run costing < 1)."""
    return campaign.get("estimate", lambda _: 0.0)(run)


def affordable(campaign: dict, run: Run, spent: float) -> bool:
    """Whether what is left of the cap after ``spent`` CPU-hours covers ``run``'s estimate (any run
    while something is left)."""
    left = campaign["cap"] - spent
    return left > 0 and estimated_hours(campaign, run) <= left


def holding_runs(campaign: dict, plan: list[Run], done: set, run: Run | None = None, *, startable: set | None = None,
                 spent: float | None = None) -> list[Run]:
    """The runs ahead of ``run`` in the queue (all of it without one) that cannot start now and hold
    their share of the cap: those this machine does not run (``machine_fits``), or, given ``startable``
    (the keys a stream can start before its stop time), every run not in it. Given ``spent``, only those
    the cap still covers after it and the holds ahead of them: a run it can no longer cover holds nothing."""
    ahead = plan if run is None else plan[: plan.index(run)]
    waits = [r for r in ahead if r.key not in done and (not machine_fits(r) if startable is None else r.key not in startable)]
    if spent is None:
        return waits
    holding, held = [], 0.0
    for r in waits:
        if affordable(campaign, r, spent + held):
            holding.append(r)
            held += estimated_hours(campaign, r)
    return holding


def held_for_waiting(campaign: dict, plan: list[Run], done: set, run: Run | None = None, *, startable: set | None = None,
                     spent: float | None = None) -> float:
    """The CPU-hours of the cap held back for ``holding_runs``. The queue's order is the issue's
    priority, so a run behind them spends only what they leave: the K=262,144 seeds come before the
    ablations, and a prior skipped for the clock keeps its share from cheaper ones behind it."""
    return sum(estimated_hours(campaign, r) for r in holding_runs(campaign, plan, done, run, startable=startable, spent=spent))


def covered(campaign: dict, plan: list[Run], done: set, spent: float, run: Run, startable: set | None = None) -> bool:
    """Whether what is left of the cap, after ``spent`` and what the runs ahead that cannot start now
    hold (``held_for_waiting``; without ``startable``, those this machine does not run), covers ``run``."""
    return affordable(campaign, run, spent + held_for_waiting(campaign, plan, done, run, startable=startable, spent=spent))


def runs_left_covered(campaign: dict, plan: list[Run], done: set, spent: float) -> list[Run]:
    """The runs left in the queue that what is left of the cap covers, beside what the runs ahead of
    each that this machine does not run hold: none means the cap is spent for this plan."""
    return [r for r in plan if r.key not in done and machine_fits(r) and covered(campaign, plan, done, spent, r)]


def row_key(row: dict) -> tuple:
    """A results row's key, as ``Run.key`` spells it."""
    if "prior" in row:  # a generation row
        return (row["prior"], row["method"], row["codebook_size"], row["seed"], row["steps"])
    return (row.get("variant") or "main", row["method"], row["codebook_size"], row["seed"], row["max_steps"])


def done_keys(results: Path) -> set[tuple]:
    if not results.is_file():
        return set()
    with results.open(newline="") as handle:
        return {row_key(r) for r in csv.DictReader(handle)}


def claim(claims: Path, run: Run) -> bool:
    """Take ``run`` for this process unless a live process holds it."""
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / run.slug
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if live_claim(path):
            return False  # a live stream runs it
        path.unlink(missing_ok=True)  # its stream died: free again
        return claim(claims, run)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def live_claim(path: Path) -> bool:
    """Whether the process a claim file names is alive."""
    try:
        os.kill(int(path.read_text() or 0), 0)
    except (ProcessLookupError, ValueError, FileNotFoundError):
        return False
    except PermissionError:
        pass  # alive, another user's
    return True


def claimed_hours(campaign: dict, claims: Path, plan: list[Run], done: set) -> float:
    """The planned CPU-hours of the runs live streams are making and have not landed: spent once they
    land, so a stream counts them before it starts a run beside them (two streams checking the same
    remainder would otherwise both spend it)."""
    return sum(estimated_hours(campaign, r) for r in plan if r.key not in done and live_claim(claims / r.slug))


def git_commit(repo: Path, paths: list[str], message: str) -> None:
    """Commit exactly ``paths`` (the user's other changes stay as they are; added with ``-f``: the
    campaign names each file, whatever an ignore pattern says); retried while another git command
    holds the index."""
    for _ in range(60):
        add = subprocess.run(["git", "-C", str(repo), "add", "-f", "--", *paths], capture_output=True, text=True)
        commit = add.returncode == 0 and subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message, "--only", "--", *paths],
                                                        capture_output=True, text=True)
        if commit and commit.returncode == 0:
            return
        time.sleep(5)
    print(f"campaign: could not commit {paths}: {(commit or add).stderr.strip()}", file=sys.stderr)


def summary(row: dict) -> str:
    """The commit message's numbers."""
    if "prior" in row:
        return (f"domain FID {float(row['domain_fid']):.1f} default, {float(row['domain_fid_tuned'] or 'nan'):.1f} tuned, "
                f"best val NLL {float(row['best_val_nll_bits_per_token'] or 'nan'):.3f} at step {row['best_step']}, "
                f"{float(row['train_seconds']):.0f} s")
    quality = ("PSNR", row["psnr"]) if row.get("psnr") else ("PESQ", row.get("pesq"))
    return f"usage {100 * float(row['usage']):.1f}%, {quality[0]} {float(quality[1]):.2f}, {float(row['train_seconds']):.0f} s"


def record_spend(repo: Path, campaign: dict, name: str, cpu_seconds: float, wall_seconds: float) -> str:
    """Append a run's (or a reference's) CPU and wall seconds to the campaign's ledger; returns its
    repository path."""
    ledger = ledger_path(campaign, repo)
    new = not ledger.is_file()
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["run", "cpu_seconds", "wall_seconds", "finished"])
        writer.writerow([name, f"{cpu_seconds:.0f}", f"{wall_seconds:.0f}", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())])
    return str(ledger.relative_to(repo))


def keep_files(repo: Path, campaign: dict, run: Run, run_dir: Path, *, missing_only: bool = False) -> list[str]:
    """Copy the run's small files (the campaign's ``keep``) to ``<artifacts>/runs/<slug>/``, the same
    layout, where the reports find them once the run directory is gone; the copies' repository paths."""
    paths = []
    for name in campaign.get("keep", []):
        source, target = run_dir / name, repo / campaign["artifacts"] / "runs" / run.slug / name
        if source.is_file() and not (missing_only and target.is_file()):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            paths.append(str(target.relative_to(repo)))
    return paths


def keep_missing(name: str, repo: Path) -> int:
    """Keep the small files of landed rows that lack them (rows landed before a file joined the
    campaign's ``keep``, or by a stream running older code) from their run directories; committed."""
    from simvq.experiments.results_file import read_results

    campaign, planned = CAMPAIGNS[name], {run.key: run for run in CAMPAIGNS[name]["plan"]()}
    paths = []
    for row in read_results(repo / campaign["results"]):
        run, run_dir = planned.get(row_key(row)), repo / (row.get("run_dir") or "-")
        if run is not None and run_dir.is_dir():
            paths += keep_files(repo, campaign, run, run_dir, missing_only=True)
    if paths:
        git_commit(repo, paths, f"{campaign['kind']} campaign: kept {len(paths)} small file(s) its rows lacked")
    return 0


def land(repo: Path, campaign: dict, run: Run, stream_results: Path, run_dir: Path, spend: tuple[float, float] | None = None) -> dict | None:
    """Move a finished run's row and artifacts into the repository and commit them."""
    from simvq.experiments.generation_bench import GENERATION_FIELDS
    from simvq.experiments.results_file import append_result, read_results
    from simvq.experiments.sweep import add_curve, read_curves
    from simvq.runs import get_recipe

    row = next((r for r in read_results(stream_results) if row_key(r) == run.key), None)
    if row is None:
        return None
    artifacts = repo / campaign["artifacts"]
    paths = [campaign["results"], *keep_files(repo, campaign, run, run_dir)]
    counts = run_dir / "code_counts.safetensors"
    if counts.is_file():
        (artifacts / "counts").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(counts, artifacts / "counts" / f"{run.slug}.safetensors")
        paths.append(f"{campaign['artifacts']}/counts/{run.slug}.safetensors")
    curve = read_curves(stream_results.with_name(stream_results.stem + "_curves.json")).get(f"{run.variant}/{run.method}/K{run.size}/seed{run.seed}")
    results = repo / campaign["results"]
    if curve:
        curves = results.with_name(results.stem + "_curves.json")
        add_curve(curves, f"{run.variant}/{run.method}/K{run.size}/seed{run.seed}", curve)
        paths.append(str(curves.relative_to(repo)))
    row["run_dir"] = str(run_dir.resolve().relative_to(repo))
    fields = GENERATION_FIELDS if campaign["kind"] == "generation" else get_recipe(campaign["kind"]).result_columns
    append_result(results, row, fields=fields)
    if spend:
        paths.append(record_spend(repo, campaign, run.slug, *spend))
    paths += drop_in_flight(repo, campaign, run)  # its ledger line now counts its earlier sessions
    git_commit(repo, paths, f"{campaign['kind']} campaign: {run.prior or run.variant} {run.method} K={run.size} seed {run.seed}, "
                            f"{run.budget} steps ({summary(row)})")
    return row


def interrupted_cpu_seconds(run_dir: Path) -> float:
    """The training CPU time of a run's earlier, interrupted sessions (``progress.json``), which no
    ledger line holds yet: a killed stream's run resumes here and its whole cost is recorded once."""
    from simvq.runs import read_progress

    return sum(float(s.get("cpu_seconds") or 0.0) for s in read_progress(run_dir).get("sessions", []))


def record_in_flight(name: str, repo: Path) -> list[str]:
    """Write the campaign's part-trained runs (not landed, with a ``progress.json``) and the training
    CPU their last checkpoints record: the next session may run on a new machine, which loses them,
    and ``reconcile_in_flight`` then charges that CPU to the ledger. Evaluation CPU before a kill is not
    checkpointed, so not counted. Returns the file's repository path if it changed."""
    from simvq.experiments.results_file import read_results, write_results

    campaign = CAMPAIGNS[name]
    done, runs = done_keys(repo / campaign["results"]), repo / "runs" / "campaign" / campaign["kind"] / "runs"
    rows = [dict(run=run.slug, cpu_seconds=f"{interrupted_cpu_seconds(runs / run.run_subdir):.0f}", steps=str(steps))
            for run in campaign["plan"]() if run.key not in done and (steps := checkpointed_steps(runs / run.run_subdir))]
    path = in_flight_path(campaign, repo)
    if rows == read_results(path) or not (rows or path.is_file()):
        return []
    write_results(path, rows, fields=IN_FLIGHT_FIELDS)
    return [str(path.relative_to(repo))]


def drop_in_flight(repo: Path, campaign: dict, run: Run) -> list[str]:
    """Remove a landed run from ``in_flight.csv``; the file's repository path if it changed."""
    from simvq.experiments.results_file import read_results, write_results

    path = in_flight_path(campaign, repo)
    entries = read_results(path) if path.is_file() else []
    kept = [e for e in entries if e["run"] != run.slug]
    if kept == entries:
        return []
    write_results(path, kept, fields=IN_FLIGHT_FIELDS)
    return [str(path.relative_to(repo))]


def mixes_precision(run_dir: Path) -> bool:
    """Whether resuming a part-trained run on this machine would train one row in two precisions:
    its earlier sessions trained in another precision than its recipe resolves to here (``auto``:
    bf16-mixed only with native bf16), or in one not recorded (sessions from before it was)."""
    from simvq.runs import read_progress
    from simvq.train.core import resolve_precision
    from simvq.utils import read_json

    sessions = read_progress(run_dir).get("sessions", [])
    trainer = read_json(run_dir / "config.json", {}).get("trainer", {})
    here = resolve_precision(trainer.get("precision", "auto"), trainer.get("accelerator", "auto"))
    return any(session.get("precision") != here for session in sessions)


def restart_if_mixed(repo: Path, campaign: dict, run: Run, run_dir: Path) -> list[str]:
    """Start ``run`` afresh where resuming it would mix precisions (``mixes_precision``): its seeds
    then compare in one precision. Its checkpointed CPU stays counted, charged as lost. Returns the
    repository paths that changed."""
    if not run_dir.is_dir() or not mixes_precision(run_dir):
        return []
    cpu = interrupted_cpu_seconds(run_dir)
    shutil.rmtree(run_dir)
    return [record_spend(repo, campaign, LOST + run.slug, cpu, 0.0), *drop_in_flight(repo, campaign, run)]


def reconcile_in_flight(name: str, repo: Path) -> list[str]:
    """Settle the runs ``record_in_flight`` wrote: one that landed since is dropped (its ledger line
    counts its earlier sessions); one this machine lost (its run directory gone, or restarted below the
    recorded step) is charged to the ledger as ``lost-<run>`` with its recorded CPU; the rest stay.
    Returns the repository paths it changed. Holds a lock: two streams may start at once."""
    import fcntl

    from simvq.experiments.results_file import read_results, write_results

    campaign = CAMPAIGNS[name]
    path = in_flight_path(campaign, repo)
    if not path.is_file():
        return []
    work = repo / "runs" / "campaign" / campaign["kind"]
    work.mkdir(parents=True, exist_ok=True)
    with (work / "in_flight.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries, planned = read_results(path), {run.slug: run for run in campaign["plan"]()}
        done, kept, changed = done_keys(repo / campaign["results"]), [], []
        for entry in entries:
            run = planned.get(entry["run"])
            if run is not None and run.key in done:
                continue
            if run is None or checkpointed_steps(work / "runs" / run.run_subdir) < int(entry["steps"]):
                changed.append(record_spend(repo, campaign, LOST + entry["run"], float(entry["cpu_seconds"]), 0.0))
                continue
            kept.append(entry)
        if kept == entries:
            return []
        write_results(path, kept, fields=IN_FLIGHT_FIELDS)
        return [str(path.relative_to(repo)), *sorted(set(changed))]


def write_budget(name: str, repo: Path) -> list[str]:
    """The campaign's cap and its spend before the ledger, beside the ledger, where the report's spend
    line reads them; its repository path if it changed."""
    from simvq.experiments.results_file import BUDGET
    from simvq.utils import read_json, write_json

    campaign = CAMPAIGNS[name]
    path, budget = ledger_path(campaign, repo).with_name(BUDGET), {"cap": campaign["cap"], "before_ledger": campaign["unrecorded"]}
    if read_json(path) == budget:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, budget)
    return [str(path.relative_to(repo))]


def checkpointed_steps(run_dir: Path) -> int:
    """The step a run's last checkpoint reached (``progress.json``), 0 if it has none."""
    from simvq.runs import read_progress

    return int(read_progress(run_dir).get("global_step") or 0)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# at K=262,144 on the 14x14 grid the nearest search is most of a run; its bf16 screen made the ledger's
# ~1.7 CPU-hours, and without native bf16 the float32 search measured ~8 CPU-s a step (first 250 steps,
# an AVX2 EPYC), ~5x: such a run would cost ~6 CPU-hours of the cap and outlast a session
SCREENED_SIZES = (262144,)


def machine_fits(run: Run) -> bool:
    """Whether this CPU runs ``run`` at the cost the plan counts on: the K=262,144 runs need native bf16."""
    from simvq.cpu import cpu_has_native_bf16

    return run.size not in SCREENED_SIZES or cpu_has_native_bf16()


def ready(repo: Path, run: Run) -> bool:
    """A prior waits for its tokenizer's row in the image campaign's results; a run this CPU would
    make several times dearer (``machine_fits``) waits for a machine that fits it."""
    return machine_fits(run) and (not run.prior or run.tokenizer.key in done_keys(repo / CAMPAIGNS["image"]["results"]))


def tokenizer_csv(repo: Path, run: Run, work: Path, code: Path, env: dict) -> Path:
    """A one-row tokenizer CSV for ``simvq bench generation`` (its run directory as an absolute path),
    retraining the tokenizer first when its run directory is gone."""
    from simvq.experiments.results_file import append_result, read_results
    from simvq.runs import get_recipe

    tokenizer = run.tokenizer
    row = next(r for r in read_results(repo / CAMPAIGNS["image"]["results"]) if row_key(r) == tokenizer.key)
    image_runs = repo / "runs" / "campaign" / "image" / "runs"
    run_dir = image_runs / tokenizer.run_subdir
    if not (run_dir / "model.safetensors").is_file():
        print(f"[{time.strftime('%H:%M:%S')}] retraining the tokenizer {tokenizer.slug} (its run directory is gone)", flush=True)
        subprocess.run([sys.executable, "-m", "simvq.cli", "bench", "image", *tokenizer.bench_args(), "--out", str(image_runs),
                        "--results", str(work / "retrained_tokenizers.csv"), "--quiet"], cwd=code, env=env, check=True)
    path = work / "tokenizers" / f"{run.slug}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    append_result(path, {**row, "run_dir": str(run_dir)}, fields=get_recipe("image").result_columns)
    return path


def run_stream(name: str, stream: str, repo: Path, *, runs: int | None = None, stop_by: float | None = None) -> None:
    """Train and land the campaign's next affordable runs, one at a time; stop after ``runs`` landed if
    given, and start only runs expected to land before ``stop_by`` (epoch seconds) if given: a session
    that ends on a new machine loses the run in flight."""
    campaign = CAMPAIGNS[name]
    code = Path(__file__).resolve().parents[1]  # the snapshot this stream runs
    sys.path.insert(0, str(code / "src"))  # its simvq, not an installed one, for landing rows too
    work = repo / "runs" / "campaign" / campaign["kind"]
    stream_results = work / f"stream_{stream}.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(code / "src"), "MPLBACKEND": "Agg"}
    settled = reconcile_in_flight(name, repo)  # before any run restarts a lost one's directory
    if settled:
        git_commit(repo, settled, f"{campaign['kind']} campaign: runs in flight settled (lost ones charged to the ledger)")
    landed = 0
    while runs is None or landed < runs:
        done = done_keys(repo / campaign["results"])
        plan = campaign["plan"]()
        todo = [run for run in plan if run.key not in done and ready(repo, run)]
        spent = spent_cpu_hours(campaign, repo) + claimed_hours(campaign, work / "claims", plan, done)
        fits = [r for r in todo if stop_by is None or time.time() + expected_wall_seconds(campaign, repo, r) <= stop_by]
        startable = {r.key for r in fits}
        run = next((r for r in fits if covered(campaign, plan, done, spent, r, startable) and claim(work / "claims", r)), None)
        if run is None and todo and not fits:
            print(f"campaign {name} stream {stream}: no run left is expected to land before {time.strftime('%H:%M', time.localtime(stop_by))}",
                  flush=True)
            return
        if run is None:
            if todo and not any(covered(campaign, plan, done, spent, r, startable) for r in fits):
                held = held_for_waiting(campaign, plan, done, startable=startable, spent=spent)
                print(f"campaign {name} stream {stream}: the cap ({campaign['cap']:g} CPU-hours) does not cover what is left "
                      f"({spent:.2f} spent" + (f", {held:.2f} held for the runs ahead in the queue that cannot start now)" if held else ")"),
                      flush=True)
                return
            waiting = [r for r in plan if r.key not in done and machine_fits(r)]
            if not waiting:
                print(f"campaign {name} stream {stream}: nothing left that this machine runs at the planned cost", flush=True)
                return
            time.sleep(300)  # the rest waits on tokenizers another campaign is still training, or on other streams
            continue
        run_dir = work / "runs" / run.run_subdir
        restarted = restart_if_mixed(repo, campaign, run, run_dir)
        if restarted:
            git_commit(repo, restarted, f"{campaign['kind']} campaign: {run.slug} restarted, its earlier sessions trained in another precision "
                                        "(their CPU charged as lost)")
        started, cpu, earlier = time.time(), children_cpu_seconds(), interrupted_cpu_seconds(run_dir)
        print(f"[{time.strftime('%H:%M:%S')}] stream {stream}: {run.slug}", flush=True)
        extra = ["--tokenizers", str(tokenizer_csv(repo, run, work, code, env))] if run.prior else []
        overrides = recipe_overrides(campaign, repo)  # right after the kind: argparse's positionals are one run
        command = [sys.executable, "-m", "simvq.cli", "bench", run.bench_kind(campaign["kind"]), *overrides, *run.bench_args(), *extra,
                   "--out", str(work / "runs"), "--results", str(stream_results), "--quiet"]
        result = subprocess.run(command, cwd=code, env=env)
        own = time.process_time()
        if result.returncode == 0 and "after" in campaign:
            campaign["after"](run, run_dir)  # in this process: its CPU time is added below
        spend = (children_cpu_seconds() - cpu + earlier + time.process_time() - own, time.time() - started)
        row = land(repo, campaign, run, stream_results, run_dir, spend) if result.returncode == 0 else None
        (work / "claims" / run.slug).unlink(missing_ok=True)
        print(f"[{time.strftime('%H:%M:%S')}] stream {stream}: {run.slug} {'landed' if row else f'FAILED (exit {result.returncode})'} "
              f"after {time.time() - started:.0f} s", flush=True)
        if row is None:
            return  # a failing run stops the stream rather than spinning through the queue
        landed += 1


def show_plan(name: str, repo: Path) -> None:
    campaign = CAMPAIGNS[name]
    done = done_keys(repo / campaign["results"])
    with (repo / campaign["results"]).open(newline="") if (repo / campaign["results"]).is_file() else open(os.devnull) as handle:
        spent = sum(float(r.get("train_seconds") or 0) for r in csv.DictReader(handle))
    plan = campaign["plan"]()
    for run in plan:
        state = "done" if run.key in done else "todo" if ready(repo, run) else "wait" if machine_fits(run) else "wait (needs native bf16)"
        print(f"{state}  {run.slug}")
    entries = ledger_entries(campaign, repo)
    cpu = sum(float(e["cpu_seconds"]) for e in entries) / 3600
    print(f"{sum(r.key in done for r in plan)} of {len(plan)} runs done; {spent / 3600:.1f} h of training recorded in the rows "
          f"(wall clock); {cpu:.2f} CPU-hours in the ledger ({ledger_path(campaign, repo).relative_to(repo)}: {len(entries)} entries, training + evaluation)")
    counted = spent_cpu_hours(campaign, repo)
    holding = holding_runs(campaign, plan, done, spent=counted)
    held = sum(estimated_hours(campaign, r) for r in holding)
    flying = counted - cpu - campaign["unrecorded"]
    print(f"cap {campaign['cap']:g} CPU-hours: {counted:.2f} counted against it "
          f"(the ledger + {campaign['unrecorded']:g} spent before it" + (f" + {flying:.2f} in runs left part-trained, {IN_FLIGHT})" if flying > 0.005 else ")")
          + (f"; {held:.2f} held for the runs waiting for a machine that fits them, which the runs queued behind them leave" if held else ""))
    left = [r for r in plan if r.key not in done]
    if left and not runs_left_covered(campaign, plan, done, counted):
        waiting = [r for r in left if not machine_fits(r)]
        if holding and counted < campaign["cap"]:  # not spent: held for runs a machine that fits them can still make
            beyond = len(waiting) - len(holding)
            print(f"nothing left is for this machine: of the {campaign['cap'] - counted:.2f} CPU-hours left, {held:.2f} are held for "
                  f"the {len(holding)} run(s) waiting for a machine that fits them"
                  + (f" ({beyond} more wait there, which the cap no longer covers)" if beyond else "")
                  + f", and the {len(left) - len(waiting)} queued for this machine get only what that leaves")
            return
        cheapest = min(estimated_hours(campaign, r) for r in left)
        print(f"the cap is spent for this plan: what is left of it ({max(campaign['cap'] - counted, 0):.2f} CPU-hours) covers no run "
              f"left ({len(left)} in the queue; the cheapest planned at {cheapest:.2f})")


def counted_images_and_dim() -> tuple[int, int]:
    """The image rows' count: how many images their usage counts (the recipe's ``eval.usage_splits``,
    sized from the data files) and the code dimension d, both read from the recipe the rows train."""
    from simvq.data.fashion_mnist import fashion_mnist_size
    from simvq.experiments.sweep import SweepSpec
    from simvq.runs.config import load_recipe

    recipe = load_recipe(SweepSpec().recipe)
    if recipe.data.name != "fashion_mnist":
        raise ValueError(f"the image campaign counts Fashion-MNIST; its recipe trains on {recipe.data.name!r}")
    return sum(fashion_mnist_size(split, recipe.data.root) for split in recipe.eval.usage_splits), recipe.model.dim


def reference_cells() -> list[tuple[int, int, int]]:
    """(K, N, d) of the finer-grid rows: what their untrained-Gaussian references are measured at."""
    images, dim = counted_images_and_dim()
    return sorted({(run.size, images * run.grid**2, dim) for run in image_plan() if run.grid})


def measure_references(repo: Path, cells: list[tuple[int, int, int]] | None = None) -> int:
    """Measure the untrained-Gaussian references the finer-grid rows will stand beside (K x N too
    costly for ``simvq report`` to compute unasked), into the page's cache, and commit it with each
    reference's CPU seconds in the image ledger. Resumable: a cached seed is not measured again."""
    from simvq.experiments.report import references as refs

    campaign, cache = CAMPAIGNS["image"], repo / refs.DEFAULT_CACHE
    for size, tokens, dim in cells or reference_cells():
        for seed in range(len(refs.load(cache).get(refs.key(size, tokens, dim), [])), refs.seeds_for(size, tokens)):
            started, cpu = time.time(), time.process_time()
            refs.references([(size, tokens, dim)], cache, max_work=size * tokens, seeds=seed + 1)  # one seed at a time
            ledger = record_spend(repo, campaign, f"{REFERENCE}K{size}-N{tokens}-seed{seed}", time.process_time() - cpu, time.time() - started)
            git_commit(repo, [str(cache.relative_to(repo)), ledger],
                       f"image campaign: the untrained-Gaussian reference at K={size:,}, N={tokens:,}, seed {seed}")
    return 0


def measure_geometry(repo: Path) -> int:
    """Where each landed image row's tokens fall in its codebook (``simvq.experiments.analysis.
    codebook_geometry``: usage and token share by the codes' distance from the codebook's mean),
    beside an untrained quantizer's at the row's N/K and d (on at most 8,192 codes, seed 0), into
    the page's ``docs/data/codebook_geometry.json``, committed. Needs the row's run directory (its
    model) and its kept code histogram; a row measured once is not measured again. Seconds a row."""

    from safetensors.torch import load_file

    from simvq.experiments.analysis import codebook_geometry, run_geometry
    from simvq.experiments.report.figures import curve_key
    from simvq.experiments.report.geometry import DEFAULT_GEOMETRY, load_geometry
    from simvq.experiments.report.page import run_dim
    from simvq.experiments.results_file import read_results
    from simvq.metrics.coverage import DEFAULT_REFERENCE_CODEBOOK_SIZE, gaussian_reference
    from simvq.utils import write_json

    campaign, path = CAMPAIGNS["image"], repo / DEFAULT_GEOMETRY
    stored = load_geometry(path)
    references: dict[tuple, dict] = {}
    measured, planned = [], {run.key: run for run in image_plan()}
    for row in read_results(repo / campaign["results"]):
        run, key, run_dir = planned.get(row_key(row)), curve_key(row), repo / (row.get("run_dir") or "-")
        if key in stored or run is None or not (run_dir / "config.json").is_file():
            continue
        counts = repo / campaign["artifacts"] / "counts" / f"{run.slug}.safetensors"
        found = run_geometry(run_dir, load_file(counts)["counts"]) if counts.is_file() else None
        if found is None:
            continue
        # the reference at the row's N/K and d, on at most 8,192 codes
        size, dim = min(run.size, DEFAULT_REFERENCE_CODEBOOK_SIZE), run_dim(row)
        tokens = round(float(row["tokens"]) / run.size * size)
        if (size, tokens, dim) not in references:
            references[(size, tokens, dim)] = {**codebook_geometry(*gaussian_reference(size, tokens, dim)), "codes": size, "tokens": tokens,
                                               "dim": dim}
        stored[key] = {**found, "reference": references[(size, tokens, dim)]}
        measured.append(key)
        print(f"{key}: usage innermost / outermost tenth {found['usage_by_radius'][0]:.3f} / {found['usage_by_radius'][-1]:.3f}", flush=True)
    if measured:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, stored, indent=1, sort_keys=True)
        git_commit(repo, [DEFAULT_GEOMETRY], f"image campaign: where the tokens land in the codebook, {len(measured)} row(s)")
    return 0


SMOKE_STEPS = 3
# what a smoke test must reach that a run switches on later (the speech discriminators' start step)
SMOKE_OVERRIDES = {"audio": ["loss.discriminator_start=1"]}


def check_plan(name: str, repo: Path) -> int:
    """Train every pending configuration of the queue (seeds aside) a few steps (``simvq bench
    --smoke``), so a run that would crash far down the queue, and stop its stream, is found now."""
    campaign = CAMPAIGNS[name]
    if campaign["kind"] == "generation":
        print("check: the image and speech campaigns (a prior needs its tokenizer's run)")
        return 2
    done, seen, failed = done_keys(repo / campaign["results"]), set(), 0
    code = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "MPLBACKEND": "Agg"}
    for run in campaign["plan"]():
        configuration = (run.variant, run.method, run.size)
        if run.key in done or configuration in seen:
            continue
        seen.add(configuration)
        command = [sys.executable, "-m", "simvq.cli", "bench", run.bench_kind(campaign["kind"]), *recipe_overrides(campaign, repo),
                   *SMOKE_OVERRIDES.get(campaign["kind"], []), *run.bench_args(), "--smoke", str(SMOKE_STEPS)]
        result = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
        error = (result.stderr.strip().splitlines() or ["no output"])[-1]  # a failure before any run started
        lines = [line for line in result.stdout.splitlines() if line.startswith(("ok", "FAIL"))] or [f"FAIL {error}"]
        failed += result.returncode != 0
        print(f"{run.slug}: {lines[0]}", flush=True)
    print(f"check: {len(seen) - failed} of {len(seen)} pending configuration(s) trained {SMOKE_STEPS} steps")
    return 1 if failed else 0


REPORT_OPTIONS = {"image": ["--results", "{results}", "--cached-references", "--spend", "{ledger}", "--kept", "docs/image/runs"],
                  "generation": ["--generation", "{results}"], "speech": ["--speech", "{results}"]}


def write_pages(name: str, repo: Path) -> int:
    """Regenerate the campaign's section of docs/results.md (and its figures) from its results CSV;
    first keep the rows' small files that are missing (``keep_missing``), record the part-trained runs
    and their CPU (``record_in_flight``: run it after stopping the streams), for image measure where the
    new rows' tokens land in their codebooks (``measure_geometry``), for speech also write the
    listening page, loaded once in headless Chromium."""
    keep_missing(name, repo)
    in_flight = reconcile_in_flight(name, repo) + record_in_flight(name, repo) + write_budget(name, repo)
    if in_flight:
        git_commit(repo, sorted(set(in_flight)), f"{CAMPAIGNS[name]['kind']} campaign: runs in flight (with their CPU so far) and the budget recorded")
    if name == "image":
        measure_geometry(repo)
    results = CAMPAIGNS[name]["results"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    ledger = ledger_path(CAMPAIGNS[name], Path(".")).as_posix()  # relative: the commands run in the repository
    options = [option.format(results=results, ledger=ledger) for option in REPORT_OPTIONS[name]]
    commands = [[sys.executable, "-m", "simvq.cli", "report", *options, "--out", "docs/results.md", "--figures", "docs/figures"]]
    if name == "speech":
        commands.append([sys.executable, "-m", "simvq.experiments.listening", results, "--check"])
    return max(subprocess.run(command, cwd=repo, env=env).returncode for command in commands)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["plan", "run", "check", "pages", "references", "geometry"])
    parser.add_argument("campaign", choices=sorted(CAMPAIGNS))
    parser.add_argument("--stream", default="A", help="a name for this stream (its log and CSV)")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="the repository rows are committed to")
    parser.add_argument("--runs", type=int, help="run: stop after this many rows have landed (default: the whole queue)")
    parser.add_argument("--stop-by", metavar="HH:MM", help="run: start only runs the ledger expects to land before this time")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    if args.action == "plan":
        show_plan(args.campaign, repo)
    elif args.action == "check":
        return check_plan(args.campaign, repo)
    elif args.action == "pages":
        return write_pages(args.campaign, repo)
    elif args.action in ("references", "geometry"):
        if args.campaign != "image":
            parser.error(f"argument campaign: only the image campaign has {args.action} to measure")
        return measure_references(repo) if args.action == "references" else measure_geometry(repo)
    else:
        if args.runs is not None and args.runs < 1:
            parser.error(f"argument --runs: must be at least 1, got {args.runs}")
        if args.stop_by is not None and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", args.stop_by):
            parser.error(f"argument --stop-by: expected HH:MM, got {args.stop_by!r}")
        run_stream(args.campaign, args.stream, repo, runs=args.runs, stop_by=args.stop_by and deadline(args.stop_by))
    return 0


if __name__ == "__main__":
    sys.exit(main())
