"""``simvq train CONFIG [section.key=value ...]`` and ``simvq eval RUN_DIR|CHECKPOINT``."""

from __future__ import annotations

import argparse
import json

from ..utils import UsageError


def _split_flags(args) -> None:
    """Options may also come after the overrides (argparse stops at the first positional list)."""
    rest = []
    items = iter(args.overrides)
    for item in items:
        if item == "--no-eval":
            args.no_eval = True
        elif item == "--overwrite":
            args.overwrite = True
        elif item == "--out":
            args.out = next(items, None)
        elif item.startswith("--out="):
            args.out = item.split("=", 1)[1]
        elif item.startswith("-"):
            raise UsageError(item, "unknown option (options may come before or after the overrides)")
        else:
            rest.append(item)
    args.overrides = rest


def _train(args) -> int:
    from ..runs import get_recipe, load_recipe
    from ..runs.files import METRICS_FILE

    _split_flags(args)
    config = load_recipe(args.config, args.overrides)
    if args.out is not None:
        config.out_dir = args.out
    if args.overwrite:
        from .core import overwrite_run

        overwrite_run(config.out_dir)
    run_dir = get_recipe(config.recipe).train(config, evaluate=not args.no_eval)
    from .core import print_once

    metrics_file = run_dir / METRICS_FILE
    if metrics_file.is_file():
        print_once(json.dumps(json.loads(metrics_file.read_text()), indent=2))
    print_once(f"run directory: {run_dir}")
    return 0


def _eval(args) -> int:
    from ..runs import get_recipe, read_run_config, resolve_run
    from ..utils import check_count, check_device

    # every option is checked before the run is read or written: a bad value is refused, never defaulted
    check_count(args.batch_size, "--batch-size")
    check_count(args.max_images, "--max-images")
    check_count(args.fid_images, "--fid-images", minimum=0)
    check_device(args.device, "--device")
    _, run_dir = resolve_run(args.run)
    recipe = get_recipe(read_run_config(run_dir).recipe)
    for option in ("fid_images", "max_images", "batch_size"):
        if getattr(args, option) is not None and option not in recipe.eval_options:
            raise UsageError(f"--{option.replace('_', '-')}", f"{args.run} is an {recipe.name} run, which takes no such option")
    # the `simvq eval` options this kind takes, under its evaluate_run's names
    options = {keyword: getattr(args, option) for option, keyword in recipe.eval_options.items()}
    recipe.evaluate_run(
        args.run,
        **options,
        device=args.device,
        progress=not args.quiet,
        # printed before the files are written: a read-only run directory loses nothing
        report=lambda metrics: print(json.dumps(metrics, indent=2), flush=True),
    )
    return 0


def add_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a tokenizer from a YAML recipe",
        description="Train (or resume) a tokenizer; the recipe's `recipe:` key (image when absent) picks the kind. "
        "Example: simvq train configs/fmnist.yaml quantizer.name=vq_ema quantizer.codebook_size=65536",
    )
    train.add_argument("config", help="YAML recipe, e.g. configs/fmnist.yaml")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="dotted overrides: section.key=value (quantizer.options.beta=0.5)")
    train.add_argument("--out", default=None, help="run directory (overrides out_dir)")
    train.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation after training")
    train.add_argument("--overwrite", action="store_true",
                       help="out_dir holds another run (or finished weights with no checkpoint): delete its files first and train from scratch "
                       "(without it such a directory is refused; the same run with its checkpoint resumes)")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("eval", help="evaluate a run directory (or .safetensors/.ckpt) on its test split (image or audio)")
    evaluate.add_argument("run", help="run directory, or its model.safetensors / checkpoints/last.ckpt")
    evaluate.add_argument("--fid-images", type=int, default=None, help="rFID subset size (0 skips rFID)")
    evaluate.add_argument("--max-images", type=int, default=None, help="evaluate only the first N test images (utterances of an audio run)")
    evaluate.add_argument("--batch-size", type=int, default=None, help="images per batch (default: the run's eval.batch_size)")
    evaluate.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cpu)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=_eval)
