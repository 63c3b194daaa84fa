"""The comparison benchmark: quantizers x codebook sizes x seeds (and ablations) on the image recipe,
and the same table for the speech codec (``simvq bench audio``, the audio recipe).

Every run trains the tokenizer of ``configs/bench/image.yaml`` (``configs/bench/speech.yaml``) for a
fixed step budget, evaluates it on the test split and appends one row to ``results.csv``
(``speech_results.csv``; the columns are the recipe kind's). Runs are independent and resumable:
a row whose key is already in the file is never recomputed, and a killed run resumes from its
own checkpoint (``train_tokenizer`` does that), so a killed sweep picks up where it stopped.

    simvq bench image                                   # the default sweep of the config
    simvq bench image --methods simvq vq --sizes 1024 8192 --seeds 0 --budget 300
    simvq bench ablations --budget 300                  # d, C init, joint C+W, bias, lr
    simvq bench image --stages 4 --sizes 1024           # residual table: qinco, residual, residual_simvq
    simvq bench audio --methods simvq vq --sizes 4096 --seeds 0 --budget 200   # the speech codec
    simvq report                                         # results.csv -> docs/results.md + plots
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..runs.registry import AUDIO_RESULT_COLUMNS, DEFAULT_RECIPE, IMAGE_RESULT_COLUMNS, get_recipe, recipe_names
from ..utils import atomic_write_text, read_json
from .results_file import append_result, device_name, read_results, trained_precision, variant_folder

# quantizers whose codes are not one index per token into a K-code book; left out by default
NOT_COMPARABLE = ("residual", "residual_simvq", "qinco", "sc_vae")
# multi-stage quantizers, compared among themselves at equal stages and K per stage (`--stages`)
RESIDUAL_METHODS = ("residual", "residual_simvq", "qinco")

# the CSV columns of each recipe kind's table (the kind's ``result_columns`` in simvq.runs.registry)
RESULT_FIELDS = IMAGE_RESULT_COLUMNS
AUDIO_FIELDS = AUDIO_RESULT_COLUMNS
ABLATIONS_BENCH = "ablations"  # `simvq bench ablations`: the default recipe kind's sweep file and table
GENERATION_BENCH = "generation"  # `simvq bench generation`: priors over the tokenizers of an image table

# The ablations the paper skipped, as (variant name, quantizer-independent overrides). Each is run
# for SimVQ; those that make sense for plain VQ too (d, lr) also run for "vq" as the contrast.
JOINT_TRAINING = "train C and W"  # the paper's Remark 4.1: C trained jointly with W, not frozen
ABLATIONS: dict[str, list[str]] = {
    "dim=8": ["model.dim=8"],
    "dim=32": ["model.dim=32"],
    "dim=128": ["model.dim=128"],
    "init=uniform": ["quantizer.options.init=uniform"],
    "init=orthogonal": ["quantizer.options.init=orthogonal"],
    JOINT_TRAINING: ["quantizer.options.train_codebook=true"],
    "no bias": ["quantizer.options.bias=false"],
    "lr x0.1": ["optim.lr=1.0e-4"],
    "lr x10": ["optim.lr=1.0e-2"],
    "C scale x0.1": ["quantizer.options.basis_scale=0.1"],
    "C scale x10": ["quantizer.options.basis_scale=10.0"],
    "rotation trick": ["quantizer.options.rotation_trick=true"],
    # the official SimVQ/VQGAN training choices on the same tokenizer (configs/bench/fmnist.yaml's header)
    "official recipe": ["model.num_res_blocks=1", "optim.betas=[0.5,0.9]", "optim.ema_decay=0.999", "loss.reconstruction_range=[-1, 1]"],
    # the network in float32 on any machine ("auto" trains it in bf16-mixed where bf16 is native): the
    # baseline beside ablations that a machine without native bf16 trained in float32
    "float32": ["trainer.precision=32-true"],
}
ABLATIONS_FOR_VQ = ("dim=8", "dim=32", "dim=128", "lr x0.1", "lr x10", "rotation trick", "official recipe", "float32")


@dataclass
class SweepSpec:
    config: str = "configs/bench/image.yaml"  # the sweep file: a `recipe:` path and a `bench:` section
    recipe: str = "configs/bench/fmnist.yaml"  # the tokenizer recipe every run starts from
    methods: list[str] = field(default_factory=list)  # empty: every comparable registered quantizer
    sizes: list[int] = field(default_factory=lambda: [1024, 8192, 65536, 262144])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    replicate: list[str] = field(default_factory=list)  # methods run at every seed; the rest at the first seed only (empty: all)
    budget: int = 1500  # training steps per run (the cap with until_plateau)
    stages: int | None = None  # the residual table: every run gets num_quantizers=stages (variant "stages=N")
    grid: int | None = None  # tokens per image side (variant "grid=GxG"): fewer downsamplings, more tokens to count
    until_plateau: bool = False  # stop each run when usage and PSNR stop improving (the recipe's `plateau:`)
    checks: int = 10  # progress checks per run (image recipes with plateau checks on; the last at the final step)
    fid_images: int = 2000  # rFID subset of the test split (fixed, seeded)
    out: str = "runs/bench"
    results: str = "results.csv"
    workers: int = 1  # runs trained side by side (processes); each gets cores // workers threads
    overrides: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """The recipe's kind (``image`` or ``audio``): it picks the overrides and the result columns."""
        from ..runs import recipe_kind

        return recipe_kind(self.recipe)

    @property
    def curves(self) -> Path:
        """Per-run usage/PSNR-over-steps points, beside the results file."""
        path = Path(self.results)
        return path.with_name(path.stem + "_curves.json")


@dataclass
class RunSpec:
    variant: str
    method: str
    codebook_size: int
    seed: int
    overrides: list[str]

    def key(self, budget: int) -> tuple:
        return (self.variant, self.method, str(self.codebook_size), str(self.seed), str(budget))

    @property
    def name(self) -> str:
        """The run's key in the curves file."""
        return f"{self.variant}/{self.method}/K{self.codebook_size}/seed{self.seed}"

    def directory(self, root: str | Path, budget: int) -> Path:
        return Path(root) / variant_folder(self.variant) / f"{self.method}-K{self.codebook_size}-seed{self.seed}-steps{budget}"


def default_methods() -> list[str]:
    from ..quantizers import list_quantizers

    return [name for name in list_quantizers() if name not in NOT_COMPARABLE]


def image_runs(spec: SweepSpec) -> list[RunSpec]:
    methods = spec.methods or default_methods()
    variant, overrides = "main", []
    if spec.stages is not None:
        # the residual table: its own variant, so rows at different stage counts never share a key
        methods = spec.methods or list(RESIDUAL_METHODS)
        others = [m for m in methods if m not in RESIDUAL_METHODS]
        if others:
            raise ValueError(f"--stages applies to the residual methods {', '.join(RESIDUAL_METHODS)}; got {', '.join(others)}")
        if isinstance(spec.stages, bool) or not isinstance(spec.stages, int) or spec.stages < 1:
            raise ValueError(f"stages must be a positive integer, got {spec.stages!r}")
        variant, overrides = f"stages={spec.stages}", [f"quantizer.options.num_quantizers={spec.stages}"]
    if spec.grid is not None:
        grid_variant, grid_overrides = grid_settings(spec)
        variant = grid_variant if variant == "main" else f"{variant} {grid_variant}"
        overrides = [*overrides, *grid_overrides]
    return [
        RunSpec(variant, method, size, seed, list(overrides))
        for method, size, seed in itertools.product(methods, spec.sizes, spec.seeds)
        if not spec.replicate or method in spec.replicate or seed == spec.seeds[0]
    ]


def grid_settings(spec: SweepSpec) -> tuple[str, list[str]]:
    """The variant name and model overrides that give ``spec.grid`` x ``spec.grid`` tokens per image:
    as many stride-2 levels as the image size allows, the recipe's first level widths kept."""
    from ..runs import load_recipe

    recipe = load_recipe(spec.recipe, spec.overrides)
    size, grid = recipe.data.image_size, spec.grid
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1 or size % grid or (size // grid) & (size // grid - 1):
        raise ValueError(f"grid must divide the image size {size} by a power of two, got {grid!r}")
    downsamplings = (size // grid).bit_length() - 1
    multipliers = list(recipe.model.channel_multipliers)[: downsamplings + 1]
    if len(multipliers) < downsamplings + 1:
        raise ValueError(f"grid {grid}: model.channel_multipliers has {len(multipliers)} levels, {downsamplings + 1} needed")
    return f"grid={grid}x{grid}", [f"model.downsamplings={downsamplings}", f"model.channel_multipliers=[{','.join(map(str, multipliers))}]"]


def recipe_runs(spec: SweepSpec) -> list[RunSpec]:
    """``image_runs``'s methods x sizes x seeds on the recipe of any kind, refusing the settings its
    kind's sweep does not take (``sweep_options``): the speech codec's table trains every run to the
    step cap (the audio recipe has no plateau criterion) and has no residual or grid variants."""
    kind = spec.kind
    options = get_recipe(kind).sweep_options
    if spec.until_plateau and "plateau" not in options:
        raise ValueError(f"--until-plateau: the {kind} recipe has no plateau criterion; its runs train to --budget")
    for name in ("stages", "grid"):
        if getattr(spec, name) is not None and name not in options:
            takers = " / ".join(other for other in recipe_names() if name in get_recipe(other).sweep_options)
            raise ValueError(f"--{name}: an {takers} benchmark option")
    return image_runs(spec)


audio_runs = recipe_runs  # the speech codec's table


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


def finished_keys(path: str | Path) -> set[tuple]:
    # the budget is `max_steps` (rows of plateau runs stop earlier); older rows only had `steps`
    # speech rows have no variant: they are all main runs
    return {(r.get("variant") or "main", r["method"], r["codebook_size"], r["seed"], r.get("max_steps") or r["steps"])
            for r in read_results(path)}


def read_curves(path: str | Path) -> dict[str, list[dict]]:
    return read_json(path, {})


def add_curve(path: str | Path, name: str, points: list[dict]) -> None:
    curves = read_curves(path)
    curves[name] = points
    lines = [f"{json.dumps(key)}: {json.dumps(curves[key])}" for key in sorted(curves)]  # one run per line
    atomic_write_text(path, "{\n" + ",\n".join(lines) + "\n}\n")


# ----------------------------------------------------------------------------- running


def recipe_overrides(spec: SweepSpec) -> list[str]:
    """The sweep's options that are recipe settings, those the kind's ``sweep_options`` take (the
    audio recipe has neither rFID nor a plateau). ``until_plateau`` turns the recipe's plateau stop on;
    otherwise its progress checks (if the recipe has them on) only measure, ``spec.checks`` times a
    run, so every row has learning curves and its last-20% change while the step budget alone ends it."""
    options = get_recipe(spec.kind).sweep_options
    overrides = [f"eval.fid_images={spec.fid_images}"] if "fid_images" in options else []
    if "plateau" not in options:
        return overrides
    if spec.until_plateau:
        return [*overrides, "plateau.enabled=true", "plateau.stop=true"]
    return [*overrides, "plateau.stop=false", f"plateau.check_every={max(1, spec.budget // max(1, spec.checks))}"]


def last_fraction_change(history: list[dict], key: str, steps: int, fraction: float = 0.2):
    """How much ``key`` moved over the last ``fraction`` of a run's steps: its value at the last check
    minus at the latest check no later than ``(1 - fraction) x steps`` ('' without such checks)."""
    points = [p for p in history if p.get(key) is not None]
    before = [p for p in points if p["step"] <= (1 - fraction) * steps]
    if not before or points[-1]["step"] < steps:
        return ""
    return points[-1][key] - before[-1][key]


def schedule_text(optim, steps: int) -> str:
    """The learning-rate schedule of a run in words."""
    warmup = f"warmup {optim.warmup_steps} + " if optim.warmup_steps else ""
    decay = f"cosine to {optim.min_lr_fraction:g}" if optim.schedule == "cosine" else "constant"
    return f"{warmup}{decay} x {optim.lr:g} over {steps}"


def run_config(spec: SweepSpec, run: RunSpec):
    """The recipe config one run of the sweep trains: the recipe, the sweep's overrides, the run's."""
    from ..runs import load_recipe

    overrides = [
        *spec.overrides,
        f"quantizer.name={run.method}",
        f"quantizer.codebook_size={run.codebook_size}",
        f"trainer.seed={run.seed}",
        f"trainer.max_steps={spec.budget}",
        *recipe_overrides(spec),
        *run.overrides,
    ]
    config = load_recipe(spec.recipe, overrides)
    config.out_dir = str(run.directory(spec.out, spec.budget))
    return config


def run_one(spec: SweepSpec, run: RunSpec, threads: int | None = None) -> tuple[dict, list[dict]]:
    """Train + evaluate one configuration of a recipe of any kind; returns its result row and its
    usage/PSNR curve (empty without plateau checks)."""
    import torch

    from ..runs.files import PLATEAU_FILE

    if threads:
        torch.set_num_threads(threads)
    config = run_config(spec, run)
    run_dir = Path(config.out_dir)
    recipe = get_recipe(config.recipe)
    recipe.train(config, evaluate=False, progress=False)
    metrics = recipe.evaluate_run(run_dir, progress=False)
    plateau_file = run_dir / PLATEAU_FILE
    plateau = json.loads(plateau_file.read_text()) if plateau_file.is_file() else {"plateau": False, "history": []}
    steps = metrics.get("global_step", spec.budget)
    row = {
        "variant": run.variant,
        "method": run.method,
        "codebook_size": run.codebook_size,
        "codes": metrics.get("codebook_size", run.codebook_size),
        "seed": run.seed,
        "steps": steps,
        "max_steps": spec.budget,
        "plateau": str(plateau["plateau"]).lower(),
        "seconds_per_step": round(metrics["train_seconds"] / max(1, steps), 4) if "train_seconds" in metrics else "",
        "device": device_name(),
        "precision": trained_precision(run_dir),
        "run_dir": str(run_dir),
        **{name: metrics[name] for name in recipe.result_columns if name in metrics and name not in ("codebook_size", "steps")},
    }
    curve = [{k: p[k] for k in ("step", "usage", "psnr", "perplexity", "tokens") if k in p} for p in plateau["history"]]
    row.update(table_facts(recipe, config, curve, steps=steps, budget=spec.budget))
    return row, curve


def table_facts(recipe, config, curve: list[dict], *, steps: int, budget: int) -> dict:
    """The sweep's own columns of a row (schedule, token grid, last-20% changes), those the kind's
    table has."""
    facts = {
        "schedule": schedule_text(config.optim, budget),
        "grid": recipe.token_grid(config) if recipe.token_grid else "",
        "psnr_last20": last_fraction_change(curve, "psnr", steps),
        "usage_last20": last_fraction_change(curve, "usage", steps),
        "check_tokens": curve[-1].get("tokens", "") if curve else "",
    }
    return {name: value for name, value in facts.items() if name in recipe.result_columns}


def _record(spec: SweepSpec, run: RunSpec, row: dict, curve: list[dict]) -> None:
    append_result(spec.results, row, fields=get_recipe(spec.kind).result_columns)
    if curve:
        add_curve(spec.curves, run.name, curve)


def run_sweep(spec: SweepSpec, runs: list[RunSpec], *, progress: bool = True) -> list[dict]:
    """Run every configuration not yet in ``spec.results``, ``spec.workers`` at a time; every
    finished run's row is written at once. Returns the rows added."""
    from tqdm.auto import tqdm

    done = finished_keys(spec.results)
    # every method's first seed before any replicate; within a seed the largest (slowest) K first
    todo = sorted((run for run in runs if run.key(spec.budget) not in done), key=lambda r: (r.seed, -r.codebook_size))
    added = []
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)
    if spec.workers <= 1:
        for run in todo:
            bar.set_postfix_str(f"{run.variant} {run.method} K={run.codebook_size} seed={run.seed}")
            row, curve = run_one(spec, run)
            _record(spec, run, row, curve)
            added.append(row)
            bar.update()
        return added
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # an explicit OMP_NUM_THREADS wins (e.g. one per worker when a GPU does the work)
    threads = None if os.environ.get("OMP_NUM_THREADS") else max(1, (os.cpu_count() or 1) // spec.workers)
    # "spawn": a forked worker would inherit the parent's threads and CUDA state
    with ProcessPoolExecutor(spec.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, spec, run, threads): run for run in todo}
        for future in as_completed(futures):
            run = futures[future]
            row, curve = future.result()
            _record(spec, run, row, curve)
            added.append(row)
            bar.set_postfix_str(f"done {run.name}")
            bar.update()
    return added


def smoke_runs(spec: SweepSpec, runs: list[RunSpec], steps: int) -> list[tuple[RunSpec, str | None, float]]:
    """Train each run ``steps`` steps in a temporary directory, with no progress checks, evaluation or
    results row: ``(run, error or None, seconds)`` each. A long campaign learns here, in seconds, that
    a run far down its queue would crash (features that switch on later, e.g. the speech
    discriminators' start step, are reached only if the overrides move them)."""
    import tempfile
    import time as clock

    report = []
    for run in runs:
        config = run_config(spec, run)
        config.trainer.max_steps = steps
        if "plateau" in get_recipe(spec.kind).sweep_options:
            config.plateau.enabled = False
        started = clock.time()
        with tempfile.TemporaryDirectory(prefix="simvq-smoke-") as scratch:
            config.out_dir = scratch
            try:
                get_recipe(config.recipe).train(config, evaluate=False, progress=False)
                error = None
            except Exception as exc:  # the report names every failure; nothing is raised past it
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        report.append((run, error, clock.time() - started))
    return report


# ----------------------------------------------------------------------------- CLI


def bench_kind(name: str) -> str:
    """The recipe kind ``simvq bench NAME`` sweeps: ``NAME`` itself, the default kind for the ablations."""
    return DEFAULT_RECIPE if name == ABLATIONS_BENCH else name


def bench_names() -> list[str]:
    """``simvq bench``'s choices: every kind with a table (the ablations after the default kind's), and the priors."""
    names = [name for name in recipe_names() if get_recipe(name).bench is not None]
    names.insert(names.index(DEFAULT_RECIPE) + 1, ABLATIONS_BENCH)
    return [*names, GENERATION_BENCH]


def _spec_from_args(args) -> SweepSpec:
    config, out, results = get_recipe(bench_kind(args.kind)).bench
    spec = SweepSpec(config=args.config or config, out=args.out or out, results=args.results or results, overrides=args.overrides)
    sweep_file = _read_sweep_file(spec.config)
    if sweep_file.get("recipe"):
        spec.recipe = sweep_file["recipe"]
    bench = sweep_file.get("bench", {}) or {}
    for name in ("methods", "sizes", "seeds", "replicate", "budget", "fid_images", "until_plateau", "workers", "stages", "checks", "grid"):
        value = getattr(args, name)
        if value is None:
            value = bench.get(name)
        if value is not None:
            setattr(spec, name, value)
    if spec.stages is not None and args.methods is None:
        spec.methods = []  # the residual table's methods, not the config's one-index-per-token list
    return spec


def _read_sweep_file(config_path: str) -> dict:
    """A sweep file: ``recipe:`` (tokenizer YAML) and ``bench:`` (methods, sizes, seeds, budget)."""
    import yaml

    values = yaml.safe_load(Path(config_path).read_text()) or {}
    unknown = set(values) - {"recipe", "bench"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in {config_path}; a sweep file has `recipe:` and `bench:`")
    return values


def _check_bench_options(args) -> None:
    """The command line's counts and paths, refused naming the option before any run starts."""
    from ..utils import check_count, check_out_dir_option

    for name, minimum in (("budget", 1), ("workers", 1), ("checks", 1), ("stages", 1), ("grid", 1), ("fid_images", 0), ("smoke", 1)):
        check_count(getattr(args, name), f"--{name.replace('_', '-')}", minimum=minimum)
    for size in args.sizes or []:
        check_count(size, "--sizes", minimum=2)
    for seed in args.seeds or []:
        check_count(seed, "--seeds", minimum=0)
    check_out_dir_option(args.out, "--out")


def _bench(args) -> int:
    _check_bench_options(args)
    if args.kind == GENERATION_BENCH:
        from .generation_bench import bench_generation

        return bench_generation(args)
    spec = _spec_from_args(args)
    expected = bench_kind(args.kind)
    if spec.kind != expected:
        raise ValueError(f"--config: {spec.config} names the {spec.kind} recipe {spec.recipe}; simvq bench {args.kind} needs an {expected} recipe")
    runs = ablation_runs(spec, args.variants) if args.kind == ABLATIONS_BENCH else recipe_runs(spec)
    if args.smoke:
        failed = 0
        for run, error, seconds in smoke_runs(spec, runs, args.smoke):
            failed += error is not None
            print(f"{'FAIL' if error else 'ok  '} {run.name} ({seconds:.0f} s){': ' + error if error else ''}", flush=True)
        print(f"smoke: {len(runs) - failed} of {len(runs)} run(s) trained {args.smoke} step(s)")
        return 1 if failed else 0
    added = run_sweep(spec, runs, progress=not args.quiet)
    print(f"{len(added)} new run(s); results in {spec.results}")
    for row in added:
        print(json.dumps({k: row[k] for k in ("variant", "method", "codebook_size", "seed", "usage", "psnr", "pesq", "stoi") if k in row}))
    return 0


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="the comparison sweep (quantizers x sizes x seeds) and ablations")
    bench.add_argument("kind", choices=bench_names())
    bench.add_argument("overrides", nargs="*", help="recipe overrides applied to every run (section.key=value)")
    bench.add_argument("--config", default=None, help="the sweep file (default configs/bench/image.yaml; audio: configs/bench/speech.yaml; "
                       "generation: the prior recipe, default configs/bench/prior.yaml)")
    bench.add_argument("--methods", nargs="+", default=None, help="quantizer names (default: the config's list)")
    bench.add_argument("--sizes", nargs="+", type=int, default=None, help="codebook sizes")
    bench.add_argument("--seeds", nargs="+", type=int, default=None)
    bench.add_argument("--replicate", nargs="+", default=None, help="methods run at every seed (the rest: the first seed only)")
    bench.add_argument("--budget", type=int, default=None, help="training steps per run")
    bench.add_argument("--fid-images", type=int, default=None, help="rFID subset size (0: skip rFID)")
    bench.add_argument("--until-plateau", action="store_const", const=True, default=None,
                       help="stop each run once usage and PSNR stop improving (criterion: the recipe's `plateau:` section); --budget is the cap")
    bench.add_argument("--grid", type=int, default=None, help="tokens per image side (variant 'grid=GxG'), e.g. 14 on 28x28 images: "
                       "4x the tokens to count usage over")
    bench.add_argument("--checks", type=int, default=None, help="progress checks per image run (learning curves, last-20%% change; default 10)")
    bench.add_argument("--workers", type=int, default=None, help="runs trained side by side (default 1)")
    bench.add_argument("--stages", type=int, default=None,
                       help=f"the residual table: {', '.join(RESIDUAL_METHODS)} (default) at this many stages, variant 'stages=N'")
    bench.add_argument("--variants", nargs="+", default=None, help=f"ablations to run (default all): {', '.join(ABLATIONS)}")
    bench.add_argument("--tokenizers", default=None, help="generation: the image benchmark's results CSV whose run_dir rows get a prior each")
    bench.add_argument("--out", default=None, help="where the run directories go (default runs/bench; audio: runs/bench/speech)")
    bench.add_argument("--results", default=None,
                       help="the CSV every finished run is appended to (default results.csv; audio: speech_results.csv)")
    bench.add_argument("--smoke", type=int, default=None, metavar="STEPS",
                       help="train each run STEPS steps in a temporary directory (no evaluation, no results row) and "
                            "report which fail; exit 1 if any does")
    bench.add_argument("--quiet", action="store_true")
    bench.set_defaults(func=_bench)
