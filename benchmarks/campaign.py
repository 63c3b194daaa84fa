"""Run a measurement campaign as resumable background streams, committing every finished row.

    python benchmarks/campaign.py plan image                 # the queue, what is done, the cost so far
    python benchmarks/campaign.py run image --stream A --repo /work/main   # from a snapshot of the code

A campaign is an ordered queue of single runs (one `simvq bench` call each). Each stream takes the
next run nobody has claimed (a claim is a file holding the stream's pid; a dead pid's claim is
free again), runs it from the code it was started from (copy the tree first, so edits to the
repository do not change a running stream) with one thread, and when the row lands appends it to
the repository's results CSV, copies its small artifacts (the code histogram, the learning curve)
and commits just those files. A killed stream loses only the run in flight, and that run resumes
from its last checkpoint (the run directories live under the repository's ignored runs/).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    method: str
    size: int
    seed: int
    budget: int
    grid: int | None = None
    stages: int | None = None

    @property
    def variant(self) -> str:
        parts = [f"stages={self.stages}"] if self.stages else []
        parts += [f"grid={self.grid}x{self.grid}"] if self.grid else []
        return " ".join(parts) or "main"

    @property
    def key(self) -> tuple:
        return (self.variant, self.method, str(self.size), str(self.seed), str(self.budget))

    @property
    def slug(self) -> str:
        variant = self.variant.replace(" ", "_").replace("=", "-")
        return f"{variant}-{self.method}-K{self.size}-seed{self.seed}-steps{self.budget}"

    def bench_args(self) -> list[str]:
        args = ["--methods", self.method, "--sizes", str(self.size), "--seeds", str(self.seed), "--budget", str(self.budget)]
        args += ["--grid", str(self.grid)] if self.grid else []
        args += ["--stages", str(self.stages)] if self.stages else []
        return args


BUDGET = 2000  # steps per image run, every method and K (warm-up + cosine: configs/bench/fmnist.yaml)
OTHERS = ["vq_ema", "vq_reset", "vq_lc", "cvq", "fsq", "lfq", "sqvae", "affine", "vq_wae", "hqa"]


def image_plan() -> list[Run]:
    """The image campaign's order: simvq/vq seeds at every K first, then every method at K=8,192
    (two seeds), then the rest."""
    runs = [Run(m, k, s, BUDGET) for s in (0, 1, 2) for k in (1024, 8192, 65536) for m in ("simvq", "vq")]
    runs += [Run(m, 8192, s, BUDGET) for s in (0, 1) for m in OTHERS]
    runs += [Run(m, k, 0, BUDGET) for k in (1024, 65536) for m in OTHERS]
    runs += [Run(m, 262144, 0, BUDGET, grid=14) for m in ("simvq", "vq", "vq_lc")]
    runs += [Run(m, 65536, 0, BUDGET, grid=14) for m in ("simvq", "vq")]
    runs += [Run(m, k, 0, BUDGET, stages=4) for k in (1024, 8192) for m in ("residual", "residual_simvq", "qinco")]
    return runs


CAMPAIGNS = {
    "image": dict(plan=image_plan, kind="image", results="docs/results.csv", artifacts="docs/image"),
}


def row_key(row: dict) -> tuple:
    """A results row's key, as ``Run.key`` spells it."""
    return (row["variant"], row["method"], row["codebook_size"], row["seed"], row["max_steps"])


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
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False  # a live stream runs it
        except (ProcessLookupError, ValueError):
            path.unlink(missing_ok=True)  # its stream died: free again
            return claim(claims, run)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def git_commit(repo: Path, paths: list[str], message: str) -> None:
    """Commit exactly ``paths`` (the user's other changes stay as they are); retried while another
    git command holds the index."""
    for _ in range(60):
        add = subprocess.run(["git", "-C", str(repo), "add", "--", *paths], capture_output=True, text=True)
        commit = add.returncode == 0 and subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message, "--only", "--", *paths],
                                                        capture_output=True, text=True)
        if commit and commit.returncode == 0:
            return
        time.sleep(5)
    print(f"campaign: could not commit {paths}: {(commit or add).stderr.strip()}", file=sys.stderr)


def land(repo: Path, campaign: dict, run: Run, stream_results: Path, run_dir: Path) -> dict | None:
    """Move a finished run's row and artifacts into the repository and commit them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from simvq.experiments.results_file import append_result, read_results
    from simvq.experiments.sweep import add_curve, read_curves
    from simvq.runs import get_recipe

    row = next((r for r in read_results(stream_results) if row_key(r) == run.key), None)
    if row is None:
        return None
    artifacts = repo / campaign["artifacts"]
    (artifacts / "counts").mkdir(parents=True, exist_ok=True)
    paths = [campaign["results"]]
    counts = run_dir / "code_counts.safetensors"
    if counts.is_file():
        shutil.copyfile(counts, artifacts / "counts" / f"{run.slug}.safetensors")
        paths.append(f"{campaign['artifacts']}/counts/{run.slug}.safetensors")
    curve = read_curves(stream_results.with_name(stream_results.stem + "_curves.json")).get(f"{run.variant}/{run.method}/K{run.size}/seed{run.seed}")
    results = repo / campaign["results"]
    if curve:
        curves = results.with_name(results.stem + "_curves.json")
        add_curve(curves, f"{run.variant}/{run.method}/K{run.size}/seed{run.seed}", curve)
        paths.append(str(curves.relative_to(repo)))
    row["run_dir"] = f"runs/campaign/{campaign['kind']}/{run_dir.relative_to(run_dir.parents[1])}"
    append_result(results, row, fields=get_recipe(campaign["kind"]).result_columns)
    usage, quality = float(row["usage"]), row.get("psnr") or row.get("pesq")
    git_commit(repo, paths, f"{campaign['kind']} campaign: {run.variant} {run.method} K={run.size} seed {run.seed}, {run.budget} steps "
                            f"(usage {100 * usage:.1f}%, {'PSNR' if row.get('psnr') else 'PESQ'} {float(quality):.2f}, {float(row['train_seconds']):.0f} s)")
    return row


def run_stream(name: str, stream: str, repo: Path) -> None:
    campaign = CAMPAIGNS[name]
    code = Path(__file__).resolve().parents[1]  # the snapshot this stream runs
    work = repo / "runs" / "campaign" / campaign["kind"]
    stream_results = work / f"stream_{stream}.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(code / "src"), "MPLBACKEND": "Agg"}
    while True:
        done = done_keys(repo / campaign["results"])
        todo = [run for run in campaign["plan"]() if run.key not in done]
        run = next((r for r in todo if claim(work / "claims", r)), None)
        if run is None:
            print(f"campaign {name} stream {stream}: nothing left to claim", flush=True)
            return
        started = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] stream {stream}: {run.slug}", flush=True)
        command = [sys.executable, "-m", "simvq.cli", "bench", campaign["kind"], *run.bench_args(),
                   "--out", str(work / "runs"), "--results", str(stream_results), "--quiet"]
        result = subprocess.run(command, cwd=code, env=env)
        run_dir = work / "runs" / run.variant.replace(" ", "_").replace("=", "-") / f"{run.method}-K{run.size}-seed{run.seed}-steps{run.budget}"
        row = land(repo, campaign, run, stream_results, run_dir) if result.returncode == 0 else None
        (work / "claims" / run.slug).unlink(missing_ok=True)
        print(f"[{time.strftime('%H:%M:%S')}] stream {stream}: {run.slug} {'landed' if row else f'FAILED (exit {result.returncode})'} "
              f"after {time.time() - started:.0f} s", flush=True)
        if row is None:
            return  # a failing run stops the stream rather than spinning through the queue


def show_plan(name: str, repo: Path) -> None:
    campaign = CAMPAIGNS[name]
    done = done_keys(repo / campaign["results"])
    with (repo / campaign["results"]).open(newline="") if (repo / campaign["results"]).is_file() else open(os.devnull) as handle:
        spent = sum(float(r.get("train_seconds") or 0) for r in csv.DictReader(handle))
    plan = campaign["plan"]()
    for run in plan:
        print(f"{'done' if run.key in done else 'todo'}  {run.slug}")
    print(f"{sum(r.key in done for r in plan)} of {len(plan)} runs done; {spent / 3600:.1f} h of training recorded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["plan", "run"])
    parser.add_argument("campaign", choices=sorted(CAMPAIGNS))
    parser.add_argument("--stream", default="A", help="a name for this stream (its log and CSV)")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="the repository rows are committed to")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    if args.action == "plan":
        show_plan(args.campaign, repo)
    else:
        run_stream(args.campaign, args.stream, repo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
