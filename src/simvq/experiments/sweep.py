"""The comparison benchmark: quantizers x codebook sizes x seeds (and ablations) on the image recipe.

Every run trains the tokenizer of ``configs/bench/image.yaml`` for a fixed step budget, evaluates
it on the test split and appends one row to ``results.csv``. Runs are independent and resumable:
a row whose key is already in the file is never recomputed, and a killed run resumes from its
own checkpoint (``train_tokenizer`` does that), so a killed sweep picks up where it stopped.

    simvq bench image                                   # the default sweep of the config
    simvq bench image --methods simvq vq --sizes 1024 8192 --seeds 0 --budget 300
    simvq bench ablations --budget 300                  # d, C init, joint C+W, bias, lr
    simvq report                                         # results.csv -> docs/results.md + plots
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# quantizers whose codes are not one index per token into a K-code book; left out by default
NOT_COMPARABLE = ("residual", "residual_simvq")

RESULT_FIELDS = [
    "variant",
    "method",
    "codebook_size",
    "codes",
    "seed",
    "steps",
    "usage",
    "usage_cap",
    "perplexity",
    "dead_fraction",
    "tokens",
    "psnr",
    "ssim",
    "rfid",
    "rfid_images",
    "train_seconds",
    "run_dir",
]

# The ablations the paper skipped, as (variant name, quantizer-independent overrides). Each is run
# for SimVQ; those that make sense for plain VQ too (d, lr) also run for "vq" as the contrast.
ABLATIONS: dict[str, list[str]] = {
    "dim=8": ["model.dim=8"],
    "dim=32": ["model.dim=32"],
    "dim=128": ["model.dim=128"],
    "init=uniform": ["quantizer.options.init=uniform"],
    "init=orthogonal": ["quantizer.options.init=orthogonal"],
    "train C and W": ["quantizer.options.train_codebook=true"],
    "no bias": ["quantizer.options.bias=false"],
    "lr x0.1": ["optim.lr=1.0e-4"],
    "lr x10": ["optim.lr=1.0e-2"],
}
ABLATIONS_FOR_VQ = ("dim=8", "dim=32", "dim=128", "lr x0.1", "lr x10")


@dataclass
class SweepSpec:
    config: str = "configs/bench/image.yaml"  # the sweep file: a `recipe:` path and a `bench:` section
    recipe: str = "configs/bench/fmnist.yaml"  # the tokenizer recipe every run starts from
    methods: list[str] = field(default_factory=list)  # empty: every comparable registered quantizer
    sizes: list[int] = field(default_factory=lambda: [1024, 8192, 65536, 262144])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: int = 1500  # training steps per run
    fid_images: int = 2000  # rFID subset of the test split (fixed, seeded)
    out: str = "runs/bench"
    results: str = "results.csv"
    overrides: list[str] = field(default_factory=list)


@dataclass
class RunSpec:
    variant: str
    method: str
    codebook_size: int
    seed: int
    overrides: list[str]

    def key(self, budget: int) -> tuple:
        return (self.variant, self.method, str(self.codebook_size), str(self.seed), str(budget))

    def directory(self, root: str | Path, budget: int) -> Path:
        slug = self.variant.replace(" ", "_").replace("=", "-")
        return Path(root) / slug / f"{self.method}-K{self.codebook_size}-seed{self.seed}-steps{budget}"


def default_methods() -> list[str]:
    from ..quantizers import list_quantizers

    return [name for name in list_quantizers() if name not in NOT_COMPARABLE]


def image_runs(spec: SweepSpec) -> list[RunSpec]:
    methods = spec.methods or default_methods()
    return [
        RunSpec("main", method, size, seed, [])
        for method, size, seed in itertools.product(methods, spec.sizes, spec.seeds)
    ]


def ablation_runs(spec: SweepSpec, variants: list[str] | None = None) -> list[RunSpec]:
    runs = []
    for variant in variants or list(ABLATIONS):
        if variant not in ABLATIONS:
            raise ValueError(f"unknown ablation {variant!r}; known: {', '.join(ABLATIONS)}")
        methods = ["simvq", "vq"] if variant in ABLATIONS_FOR_VQ else ["simvq"]
        methods = [m for m in methods if not spec.methods or m in spec.methods]  # --methods narrows
        for method, size, seed in itertools.product(methods, spec.sizes, spec.seeds):
            runs.append(RunSpec(variant, method, size, seed, ABLATIONS[variant]))
    return runs


# ----------------------------------------------------------------------------- results file


def read_results(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def append_result(path: str | Path, row: dict) -> None:
    """Append one row; the file is rewritten through a temp file so a kill never leaves half a row."""
    path = Path(path)
    rows = read_results(path) + [{name: row.get(name, "") for name in RESULT_FIELDS}]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def finished_keys(path: str | Path) -> set[tuple]:
    return {(r["variant"], r["method"], r["codebook_size"], r["seed"], r["steps"]) for r in read_results(path)}


# ----------------------------------------------------------------------------- running


def run_one(spec: SweepSpec, run: RunSpec) -> dict:
    """Train + evaluate one configuration and return its result row."""
    from ..train.config import load_config
    from ..train.image import evaluate_run, train_tokenizer

    run_dir = run.directory(spec.out, spec.budget)
    overrides = [
        *spec.overrides,
        f"quantizer.name={run.method}",
        f"quantizer.codebook_size={run.codebook_size}",
        f"trainer.seed={run.seed}",
        f"trainer.max_steps={spec.budget}",
        f"eval.fid_images={spec.fid_images}",
        *run.overrides,
    ]
    config = load_config(spec.recipe, overrides)
    config.out_dir = str(run_dir)
    train_tokenizer(config, evaluate=False, progress=False)
    metrics = evaluate_run(run_dir, progress=False)
    return {
        "variant": run.variant,
        "method": run.method,
        "codebook_size": run.codebook_size,
        "codes": metrics.get("codebook_size", run.codebook_size),
        "seed": run.seed,
        "steps": spec.budget,
        "run_dir": str(run_dir),
        **{name: metrics.get(name, "") for name in RESULT_FIELDS if name in metrics and name != "codebook_size"},
    }


def run_sweep(spec: SweepSpec, runs: list[RunSpec], *, progress: bool = True) -> list[dict]:
    """Run every configuration not yet in ``spec.results``; returns the rows added."""
    from tqdm.auto import tqdm

    done = finished_keys(spec.results)
    todo = [run for run in runs if run.key(spec.budget) not in done]
    added = []
    bar = tqdm(todo, desc="sweep", unit="run", disable=not progress)
    for run in bar:
        bar.set_postfix_str(f"{run.variant} {run.method} K={run.codebook_size} seed={run.seed}")
        started = time.time()
        row = run_one(spec, run)
        row.setdefault("train_seconds", round(time.time() - started, 1))
        append_result(spec.results, row)
        added.append(row)
    return added


# ----------------------------------------------------------------------------- CLI


def _spec_from_args(args) -> SweepSpec:
    spec = SweepSpec(config=args.config, out=args.out, results=args.results, overrides=args.overrides)
    sweep_file = _read_sweep_file(args.config)
    if sweep_file.get("recipe"):
        spec.recipe = sweep_file["recipe"]
    bench = sweep_file.get("bench", {}) or {}
    for name in ("methods", "sizes", "seeds", "budget", "fid_images"):
        value = getattr(args, name)
        if value is None:
            value = bench.get(name)
        if value is not None:
            setattr(spec, name, value)
    return spec


def _read_sweep_file(config_path: str) -> dict:
    """A sweep file: ``recipe:`` (tokenizer YAML) and ``bench:`` (methods, sizes, seeds, budget)."""
    import yaml

    values = yaml.safe_load(Path(config_path).read_text()) or {}
    unknown = set(values) - {"recipe", "bench"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in {config_path}; a sweep file has `recipe:` and `bench:`")
    return values


def _bench(args) -> int:
    spec = _spec_from_args(args)
    runs = image_runs(spec) if args.kind == "image" else ablation_runs(spec, args.variants)
    added = run_sweep(spec, runs, progress=not args.quiet)
    print(f"{len(added)} new run(s); results in {spec.results}")
    for row in added:
        print(json.dumps({k: row[k] for k in ("variant", "method", "codebook_size", "seed", "usage", "psnr") if k in row}))
    return 0


def _report(args) -> int:
    from .report import write_report

    path = write_report(args.results, args.out, figures_dir=args.figures)
    print(f"report written to {path}")
    return 0


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="the comparison sweep (quantizers x sizes x seeds) and ablations")
    bench.add_argument("kind", choices=["image", "ablations"])
    bench.add_argument("overrides", nargs="*", help="recipe overrides applied to every run (section.key=value)")
    bench.add_argument("--config", default="configs/bench/image.yaml")
    bench.add_argument("--methods", nargs="+", default=None, help="quantizer names (default: the config's list)")
    bench.add_argument("--sizes", nargs="+", type=int, default=None, help="codebook sizes")
    bench.add_argument("--seeds", nargs="+", type=int, default=None)
    bench.add_argument("--budget", type=int, default=None, help="training steps per run")
    bench.add_argument("--fid-images", type=int, default=None, help="rFID subset size (0: skip rFID)")
    bench.add_argument("--variants", nargs="+", default=None, help=f"ablations to run (default all): {', '.join(ABLATIONS)}")
    bench.add_argument("--out", default="runs/bench", help="where the run directories go")
    bench.add_argument("--results", default="results.csv", help="the CSV every finished run is appended to")
    bench.add_argument("--quiet", action="store_true")
    bench.set_defaults(func=_bench)

    report = subparsers.add_parser("report", help="results.csv -> docs/results.md tables and PNG plots")
    report.add_argument("--results", default="results.csv")
    report.add_argument("--out", default="docs/results.md")
    report.add_argument("--figures", default="docs/figures")
    report.set_defaults(func=_report)
