"""``simvq prior train TOKENIZER_RUN [section.key=value ...]``, ``simvq sample PRIOR_RUN`` and
``simvq eval-gen PRIOR_RUN``."""

from __future__ import annotations

import argparse
import json

from ..utils import UsageError


def _prior_train(args) -> int:
    from .core import print_once
    from .prior import load_prior_config, train_prior

    overrides, items = [], iter(args.overrides)
    for item in items:  # options may also come after the overrides (argparse stops at the first positional list)
        name, _, value = item.partition("=")
        if name in ("--config", "--out"):
            setattr(args, name[2:], value or next(items, None))
        elif item == "--quiet":
            args.quiet = True
        elif item == "--overwrite":
            args.overwrite = True
        elif item.startswith("-"):
            raise UsageError(item, "unknown option (options may come before or after the overrides)")
        else:
            overrides.append(item)
    config = load_prior_config(args.config, overrides)
    config.tokenizer = args.tokenizer
    if args.out is not None:
        config.out_dir = args.out
    if args.overwrite:
        from .core import overwrite_run
        from .prior.train import check_prior_out_dir

        check_prior_out_dir(config)  # never the tokenizer's own directory
        overwrite_run(config.run_dir)
    run_dir = train_prior(config, progress=False if args.quiet else None)
    print_once(f"prior run directory: {run_dir}")
    return 0


def _sample(args) -> int:
    from pathlib import Path

    import torch

    from ..utils import check_count
    from .prior import (
        balanced_labels,
        decode_codes,
        load_prior,
        load_tokenizer_for,
        sample_codes,
        save_image_grid,
    )

    # every option is checked before the run is read: a bad value is refused, never defaulted
    check_count(args.num_samples, "-n/--num-samples", allow_none=False)
    check_count(args.per_row, "--per-row")
    if args.out is not None and Path(args.out).is_dir():
        raise UsageError("--out", f"{args.out} is a directory; give the PNG file to write, e.g. {Path(args.out) / 'samples.png'}")
    _check_sampling_options(args)
    prior, _, meta = load_prior(args.run, device=args.device)
    tokenizer = load_tokenizer_for(meta, device=args.device)
    if args.class_index is not None:
        if not 0 <= args.class_index < meta["num_classes"]:
            raise ValueError(f"--class must lie in [0, {meta['num_classes'] - 1}] for this prior, got {args.class_index}"
                             if meta["num_classes"] else "this prior is unconditional: it takes no --class")
        labels = torch.full((args.num_samples,), args.class_index)
    elif args.unconditional:
        labels = None
    else:
        labels = balanced_labels(args.num_samples, meta["num_classes"])
    if args.cfg is not None and labels is None:
        raise ValueError("--cfg needs a class-conditional prior sampled with labels (not --unconditional)")
    codes = sample_codes(prior, args.num_samples, labels=labels, cfg_scale=args.cfg, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    name = "samples" + (f"-class{args.class_index}" if args.class_index is not None else "") + (f"-cfg{args.cfg:g}" if args.cfg is not None else "")
    out = args.out or f"{args.run}/{name}-seed{args.seed}.png"
    save_image_grid(decode_codes(tokenizer, codes), out, per_row=args.per_row or (10 if labels is not None and args.class_index is None else 8))
    print(f"{args.num_samples} samples: {out}")
    return 0


def _check_sampling_options(args) -> None:
    """``_sampling_options``' values, refused naming the option (before any run is read)."""
    from ..models.prior import check_sampling
    from ..utils import check_device

    check_sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg,
                   names={"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "cfg_scale": "--cfg"})
    if args.seed is not None and not -(2**63) <= args.seed < 2**64:
        raise UsageError("--seed", f"must fit in 64 bits, got {args.seed}")
    check_device(args.device, "--device")


def _eval_gen(args) -> int:
    from ..utils import check_count
    from .prior import evaluate_prior_run

    check_count(args.samples, "--samples", minimum=0)
    check_count(args.fid_samples, "--fid-samples", minimum=0)
    _check_sampling_options(args)

    sweep = None
    if args.tune:
        from .prior.evaluate import SamplingSweep

        given = [flag for flag, value in (("--cfg", args.cfg), ("--temperature", args.temperature), ("--top-k", args.top_k),
                                          ("--top-p", args.top_p)) if value is not None]
        if given:
            raise UsageError(given[0], "is not taken with --tune, which measures the default setting and the tuned one")
        check_count(args.tune_samples, "--tune-samples", minimum=1)
        if args.tune_seed == (0 if args.seed is None else args.seed):
            raise UsageError("--tune-seed", f"must differ from the evaluation seed ({args.tune_seed}): a fresh set measures the choice")
        sweep = SamplingSweep(samples=args.tune_samples, seed=args.tune_seed)

    def report(metrics):
        print(json.dumps(metrics, indent=2), flush=True)

    evaluate_prior_run(args.run, samples=args.samples, fid_samples=args.fid_samples, cfg_scale=args.cfg,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                       device=args.device, progress=not args.quiet, report=report, sweep=sweep)
    return 0


def _sampling_options(parser, *, defaults: bool) -> None:
    parser.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1: none; default: the conditional model alone)")
    parser.add_argument("--temperature", type=float, default=1.0 if defaults else None, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0 if defaults else None)
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cpu)")


def add_parser(subparsers) -> None:
    prior = subparsers.add_parser("prior", help="a transformer prior over a trained tokenizer's codes")
    actions = prior.add_subparsers(dest="action", required=True)
    train = actions.add_parser(
        "train",
        help="train (or resume) a prior on a tokenizer run's codes",
        description="Tokenise the training split with the tokenizer (cached, keyed on its weights) and train the prior. "
        "Example: simvq prior train runs/fmnist --config configs/prior.yaml model.layers=2 trainer.max_steps=500",
    )
    train.add_argument("tokenizer", help="the tokenizer's run directory")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="dotted overrides: section.key=value (model.dim=128)")
    train.add_argument("--config", default=None, help="YAML recipe, e.g. configs/prior.yaml (default: the built-in defaults)")
    train.add_argument("--out", default=None, help="the prior's run directory (default: <tokenizer>/prior)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--overwrite", action="store_true",
                       help="the out dir holds another prior (or finished weights with no checkpoint): delete its files first and train from scratch")
    train.set_defaults(func=_prior_train)

    sample = subparsers.add_parser("sample", help="a PNG grid of a prior's samples, decoded by its tokenizer")
    sample.add_argument("run", help="the prior's run directory")
    sample.add_argument("-n", "--num-samples", type=int, default=64)
    sample.add_argument("--class", dest="class_index", metavar="C", type=int, default=None, help="every sample of this class (default: classes in turn)")
    sample.add_argument("--unconditional", action="store_true", help="sample a conditional prior with the null class")
    _sampling_options(sample, defaults=True)
    sample.add_argument("--per-row", type=int, default=None, help="images per row of the grid (default: 10 for class-balanced samples, else 8)")
    sample.add_argument("--out", default=None, help="PNG path (default: <run>/samples[-class C][-cfg S]-seedN.png)")
    sample.set_defaults(func=_sample)

    evaluate = subparsers.add_parser("eval-gen", help="generation metrics of a prior run (JSON; also <run>/gen_metrics.json)")
    evaluate.add_argument("run", help="the prior's run directory")
    evaluate.add_argument("--samples", type=int, default=None, help="class-conditional samples for the domain FID and class accuracy")
    evaluate.add_argument("--fid-samples", type=int, default=None, help="Inception FID samples (0 skips it)")
    _sampling_options(evaluate, defaults=False)
    evaluate.add_argument("--tune", action="store_true",
                          help="tune the sampling first (temperature {0.8, 0.9, 1} x top-p {none, 0.9} x CFG {none, 1.5, 3}, by domain FID on "
                               "--tune-samples samples at --tune-seed), then measure the default and the chosen setting on a fresh set")
    evaluate.add_argument("--tune-samples", type=int, default=1000, help="samples each setting is scored on (default 1000)")
    evaluate.add_argument("--tune-seed", type=int, default=1, help="the tuning set's seed, not the evaluation's (default 1)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=_eval_gen)
