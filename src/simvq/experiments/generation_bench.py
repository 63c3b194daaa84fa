"""``simvq bench generation``: priors of equal size and budget on the tokens of trained tokenizers.

The tokenizers are the rows of an image-benchmark results CSV (``simvq bench image``; its
``run_dir`` column): every ``main`` row whose method, codebook size and seed are selected gets one
prior (``configs/bench/prior.yaml``, the CPU-sized benchmark prior, plus overrides, ``trainer.max_steps = budget``, the tokenizer's seed),
is measured by ``evaluate_prior_run`` and appended as one row to the results CSV. Resumable like
the image sweep: a row already in the file is skipped, a killed prior resumes from its checkpoint.

    simvq bench generation --tokenizers runs/bench/results.csv --sizes 1024 8192 --seeds 0 1 --budget 2000
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .results_file import append_result, device_name, read_results

DEFAULT_METHODS = ["simvq", "vq", "vq_ema", "fsq", "lfq"]

GENERATION_FIELDS = [
    "method",
    "codebook_size",
    "seed",
    "steps",  # the prior's step budget
    "nll_bits_per_token",
    "nll_bits_per_image",
    "nll_bits_per_token_unconditional",
    "test_entropy_bits",  # unigram entropy of the test tokens: what a prior that learned nothing scores
    "test_usage",
    "test_perplexity",
    "domain_fid",
    "domain_fid_samples",
    "domain_fid_train",  # the floor: real training images against the test split
    "class_accuracy",
    "fid",
    "fid_samples",
    "train_seconds",
    "device",
    "tokenizer_run",
    "run_dir",
]


@dataclass
class GenerationSpec:
    tokenizers: str = "runs/bench/results.csv"  # an image-benchmark results CSV
    config: str = "configs/bench/prior.yaml"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    sizes: list[int] = field(default_factory=lambda: [1024, 8192])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    budget: int = 2000
    samples: int = 1000  # domain FID / class accuracy samples
    fid_samples: int = 0  # Inception FID samples (slow on CPU)
    out: str = "runs/bench/generation"
    results: str = "runs/bench/generation.csv"
    overrides: list[str] = field(default_factory=list)


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


def _key(method, size, seed, budget, tokenizer_run) -> tuple:
    return (str(method), str(size), str(seed), str(budget), str(tokenizer_run))


def run_generation_bench(spec: GenerationSpec, *, progress: bool = True) -> list[dict]:
    """Train and evaluate a prior for every selected tokenizer not yet in ``spec.results``; returns the rows added."""
    from ..train.prior import evaluate_prior_run, load_prior_config, train_prior

    done = {_key(r["method"], r["codebook_size"], r["seed"], r["steps"], r["tokenizer_run"]) for r in read_results(spec.results)}
    added = []
    for tokenizer in tokenizer_runs(spec):
        method, size, seed = tokenizer["method"], int(tokenizer["codebook_size"]), int(tokenizer["seed"])
        if _key(method, size, seed, spec.budget, tokenizer["run_dir"]) in done:
            continue
        run_dir = Path(spec.out) / f"{method}-K{size}-seed{seed}-steps{spec.budget}"
        config = load_prior_config(spec.config, [*spec.overrides, f"trainer.max_steps={spec.budget}", f"trainer.seed={seed}"])
        config.tokenizer, config.out_dir = tokenizer["run_dir"], str(run_dir)
        train_prior(config, progress=progress)
        metrics = evaluate_prior_run(run_dir, samples=spec.samples, fid_samples=spec.fid_samples, progress=progress)
        sessions = json.loads((run_dir / "progress.json").read_text())["sessions"]
        row = {
            **{name: metrics[name] for name in GENERATION_FIELDS if name in metrics},
            "method": method,
            "codebook_size": size,
            "seed": seed,
            "steps": spec.budget,
            "train_seconds": round(sum(s["seconds"] for s in sessions), 1),
            "device": device_name(),
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
        print(json.dumps({k: row.get(k) for k in ("method", "codebook_size", "seed", "nll_bits_per_token", "domain_fid", "class_accuracy")}))
    return 0
