"""``simvq bench generation``: priors of equal size and budget on the tokens of trained tokenizers.

The tokenizers are the rows of an image-benchmark results CSV (``simvq bench image``; its
``run_dir`` column): every ``main`` row whose method, codebook size and seed are selected gets one
prior (``configs/bench/prior.yaml``, the CPU-sized benchmark prior, plus overrides, ``trainer.max_steps = budget``, the tokenizer's seed),
is measured by ``evaluate_prior_run`` and appended as one row to the results CSV. Resumable like
the image sweep: a row already in the file is skipped, a killed prior resumes from its checkpoint.

Each prior's sampling is tuned on its own (``simvq.train.prior.evaluate.SamplingSweep``: temperature
{0.8, 0.9, 1.0} x top-p {none, 0.9} x guidance {none, 1.5, 3.0}, 1,000 samples at seed 1 each, by
domain FID), then the default setting (temperature 1, no truncation, no guidance) and the chosen one
are both measured on a fresh set of 5,000 samples at seed 0. Settings of the benchmark itself (not
of the prior recipe) are given as ``bench.NAME=VALUE`` among the overrides: ``bench.samples``,
``bench.fid_samples``, ``bench.tune`` (false: the default setting only), ``bench.tune_samples``,
``bench.tune_seed``, ``bench.temperatures``, ``bench.top_ps``, ``bench.cfg_scales`` (YAML lists,
``null`` for none). The grid's size was set from a measurement (K=8,192, one core of a loaded 2-core
EPYC, CPU seconds): 158 s for the 18 settings, 105 s for the rest of the samples' evaluation (the two
fresh sets, KID, precision/recall, floors, the tokenizer's domain rFID), ~100 s for the test-split
NLL; Inception FID adds ~0.16 s an image per measured setting.

    simvq bench generation --tokenizers runs/bench/results.csv --sizes 1024 8192 --seeds 0 1 --budget 2000
    simvq bench generation --tokenizers runs/bench/results.csv bench.samples=1000 bench.tune=false
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..runs.files import training_facts
from .results_file import append_result, device_name, read_results, trained_precision

DEFAULT_METHODS = ["simvq", "vq", "vq_ema", "fsq", "lfq"]

# one row per prior; an older file's rows keep their columns (the new ones read as missing)
GENERATION_FIELDS = [
    "method",
    "codebook_size",
    "seed",
    "steps",  # the prior's step budget
    "prior",  # the prior recipe: its config file's stem (prior_small, prior, prior_large)
    # the prior and its training (from the run: the model, progress.json, validation.json)
    "prior_parameters",
    "trained_steps",
    "best_step",
    "best_val_nll_bits_per_token",
    "stop_reason",
    "val_nll_last20",  # how much the validation NLL still moved over the last 20% of the steps (bits/token)
    # likelihood of the test split's tokens
    "nll_bits_per_token",
    "nll_bits_per_image",
    "nll_bits_per_token_unconditional",
    "test_entropy_bits",  # unigram entropy of the test tokens: what a prior that learned nothing scores
    "test_usage",
    "test_perplexity",
    # samples at the default setting (temperature 1, no truncation, no guidance), at sample_seed
    "sampling",
    "sample_seed",
    "domain_fid",
    "domain_fid_samples",
    "domain_kid",
    "domain_kid_std",  # over the KID subsets
    "domain_precision",
    "domain_recall",
    "class_accuracy",
    "fid",
    "fid_samples",
    # the tuned setting: chosen on tune_samples samples at tune_seed by domain FID, measured on the fresh set
    "sampling_tuned",
    "tune_grid",
    "tuned_temperature",
    "tuned_top_p",
    "tuned_cfg_scale",
    "tune_seed",
    "tune_samples",
    "tune_domain_fid",  # its score on the tuning set (optimistic: it was picked there)
    "domain_fid_tuned",
    "domain_kid_tuned",
    "domain_kid_std_tuned",
    "domain_precision_tuned",
    "domain_recall_tuned",
    "class_accuracy_tuned",
    "fid_tuned",
    # floors: real training images in place of samples, as many
    "domain_fid_train",
    "domain_kid_train",
    "domain_kid_std_train",
    "domain_precision_train",
    "domain_recall_train",
    "fid_train",
    # the tokenizer's reconstructions of those training images in place of samples
    "domain_rfid",
    "rfid",
    "rfid_images",
    "eval_seconds",
    "train_seconds",
    "device",
    "precision",  # the prior's, as trained (trainer.precision "auto" follows the machine)
    "tokenizer_run",
    "run_dir",
]

BENCH_PREFIX = "bench."
BENCH_OPTIONS = {"tokenizers", "config", "methods", "sizes", "seeds", "budget", "out", "results", "overrides"}  # set by the CLI's options


@dataclass
class GenerationSpec:
    tokenizers: str = "runs/bench/results.csv"  # an image-benchmark results CSV
    config: str = "configs/bench/prior.yaml"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    sizes: list[int] = field(default_factory=lambda: [1024, 8192])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    budget: int = 2000
    samples: int = 5000  # domain FID / KID / precision-recall / class accuracy samples of each measured setting
    fid_samples: int = 0  # Inception FID samples (slow on CPU: ~0.4 s an image on one loaded core)
    tune: bool = True  # tune the sampling (the sweep below), then measure the default and the chosen setting
    tune_samples: int = 1000
    tune_seed: int = 1  # the tuning set; the fresh set is drawn at the prior recipe's eval.seed (0)
    temperatures: list[float] = field(default_factory=lambda: [0.8, 0.9, 1.0])
    top_ps: list[float | None] = field(default_factory=lambda: [None, 0.9])
    cfg_scales: list[float | None] = field(default_factory=lambda: [None, 1.5, 3.0])
    out: str = "runs/bench/generation"
    results: str = "runs/bench/generation.csv"
    overrides: list[str] = field(default_factory=list)

    def sweep(self):
        from ..train.prior.evaluate import SamplingSweep

        if not self.tune:
            return None
        return SamplingSweep(temperatures=list(self.temperatures), top_ps=list(self.top_ps), cfg_scales=list(self.cfg_scales),
                             samples=self.tune_samples, seed=self.tune_seed)


def split_bench_overrides(spec: GenerationSpec, overrides: list[str]) -> list[str]:
    """Applies the ``bench.NAME=VALUE`` items (YAML values) to ``spec``; returns the prior recipe's overrides."""
    import dataclasses

    import yaml

    settable = {f.name for f in dataclasses.fields(GenerationSpec)} - BENCH_OPTIONS
    recipe = []
    for item in overrides:
        if not item.startswith(BENCH_PREFIX):
            recipe.append(item)
            continue
        name, sep, value = item[len(BENCH_PREFIX):].partition("=")
        if not sep or name not in settable:
            raise ValueError(f"{item!r}: a generation benchmark setting is bench.NAME=VALUE with NAME one of {sorted(settable)}")
        parsed = yaml.safe_load(value)
        current = getattr(spec, name)
        if isinstance(current, list):
            parsed = parsed if isinstance(parsed, list) else [parsed]
        elif isinstance(current, bool):
            if not isinstance(parsed, bool):
                raise TypeError(f"{item!r}: bench.{name} is true or false")
        elif isinstance(current, int) and not isinstance(parsed, int):
            raise TypeError(f"{item!r}: bench.{name} is a whole number")
        setattr(spec, name, parsed)
    return recipe


def tokenizer_runs(spec: GenerationSpec) -> list[dict]:
    """The selected ``main`` rows of the tokenizer CSV (one per method, size and seed; the last row wins)."""
    rows = read_results(spec.tokenizers)
    if not rows:
        raise FileNotFoundError(f"{spec.tokenizers} holds no tokenizer results (run `simvq bench image` first)")
    trained = [row for row in rows if row.get("variant", "main") == "main" and row.get("run_dir")]
    chosen = {}
    for row in trained:
        if row["method"] in spec.methods and int(row["codebook_size"]) in spec.sizes and int(row["seed"]) in spec.seeds:
            chosen[(row["method"], int(row["codebook_size"]), int(row["seed"]))] = row
    if not chosen:
        held = sorted({(row["method"], int(row["codebook_size"])) for row in trained})
        raise ValueError(f"{spec.tokenizers} has no tokenizer for methods {spec.methods}, sizes {spec.sizes}, seeds {spec.seeds}; "
                         f"it holds (method, K): {held}")
    return [chosen[key] for key in sorted(chosen, key=lambda k: (k[2], k[1], spec.methods.index(k[0])))]


def prior_name(config: str | Path) -> str:
    """The ``prior`` column: the prior recipe's file stem, e.g. ``prior_small``."""
    return Path(config).stem


def _key(method, size, seed, budget, prior, tokenizer_run) -> tuple:
    return (str(method), str(size), str(seed), str(budget), str(prior), str(tokenizer_run))


def run_generation_bench(spec: GenerationSpec, *, progress: bool = True) -> list[dict]:
    """Train and evaluate a prior for every selected tokenizer not yet in ``spec.results``; returns the rows added."""
    from ..train.prior import evaluate_prior_run, load_prior_config, train_prior

    done = {_key(r["method"], r["codebook_size"], r["seed"], r["steps"], r.get("prior") or prior_name(GenerationSpec.config), r["tokenizer_run"])
            for r in read_results(spec.results)}  # a row from before the prior column: the default recipe
    recipe_overrides = split_bench_overrides(spec, spec.overrides)  # a wrong bench.NAME is refused before any training
    added, prior = [], prior_name(spec.config)
    for tokenizer in tokenizer_runs(spec):
        method, size, seed = tokenizer["method"], int(tokenizer["codebook_size"]), int(tokenizer["seed"])
        if _key(method, size, seed, spec.budget, prior, tokenizer["run_dir"]) in done:
            continue
        run_dir = Path(spec.out) / prior / f"{method}-K{size}-seed{seed}-steps{spec.budget}"
        config = load_prior_config(spec.config, [*recipe_overrides, f"trainer.max_steps={spec.budget}", f"trainer.seed={seed}"])
        config.tokenizer, config.out_dir = tokenizer["run_dir"], str(run_dir)
        train_prior(config, progress=progress)
        metrics = evaluate_prior_run(run_dir, samples=spec.samples, fid_samples=spec.fid_samples, sweep=spec.sweep(), progress=progress)
        row = {
            **{name: metrics[name] for name in GENERATION_FIELDS if name in metrics},
            "method": method,
            "codebook_size": size,
            "seed": seed,
            "steps": spec.budget,
            "prior": prior,
            "train_seconds": round(training_facts(run_dir)["train_seconds"], 1),
            "device": device_name(),
            "precision": trained_precision(run_dir),
            "tokenizer_run": tokenizer["run_dir"],
            "run_dir": str(run_dir),
        }
        append_result(spec.results, row, fields=GENERATION_FIELDS)
        added.append(row)
    return added


def bench_generation(args) -> int:
    """The ``simvq bench generation`` entry (its options live on the ``bench`` parser)."""
    spec = GenerationSpec(overrides=list(args.overrides))
    if args.tokenizers is None:
        raise ValueError("simvq bench generation needs --tokenizers RESULTS_CSV (the results of `simvq bench image`)")
    spec.tokenizers = args.tokenizers
    for name in ("methods", "sizes", "seeds", "budget"):
        if getattr(args, name) is not None:
            setattr(spec, name, getattr(args, name))
    if args.fid_images is not None:
        spec.fid_samples = args.fid_images
    for name in ("config", "out", "results"):  # the bench parser's shared options; None: the generation default
        if getattr(args, name) is not None:
            setattr(spec, name, getattr(args, name))
    added = run_generation_bench(spec, progress=not args.quiet)
    print(f"{len(added)} new prior(s); results in {spec.results}")
    for row in added:
        print(json.dumps({k: row.get(k) for k in ("method", "codebook_size", "seed", "nll_bits_per_token", "domain_fid", "domain_fid_tuned",
                                                  "sampling_tuned", "class_accuracy")}))
    return 0
