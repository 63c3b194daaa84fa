"""`make demo`: SimVQ against plain VQ on Fashion-MNIST at K=8,192, a few minutes per method on CPU.

Both runs use the recipe ``simvq/configs/demo_fmnist.yaml`` (package data; ``configs/demo_fmnist.yaml``
in the repository links to it) and differ only in ``quantizer.name``. Prints a table (usage and perplexity over all test tokens,
PSNR, SSIM, rFID on a small subset) and writes ``results.json``, ``results.md`` and PNGs.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

METHODS = ("simvq", "vq")
# the one demo recipe, shipped inside the package so an installed simvq runs the demo with no repository
DEMO_RECIPE = resources.files("simvq") / "configs" / "demo_fmnist.yaml"


def format_table(results: dict[str, dict]) -> str:
    header = f"{'method':8s} {'usage':>7s} {'ref':>6s} {'perplexity':>10s} {'PSNR dB':>8s} {'SSIM':>6s} {'rFID':>7s} {'steps':>6s} {'train s':>7s}"
    lines = [header, "-" * len(header)]
    for name, m in results.items():
        rfid = f"{m['rfid']:7.1f}" if "rfid" in m else f"{'-':>7s}"
        lines.append(
            f"{name:8s} {m['usage']:7.1%} {m['usage_reference']:6.1%} {m['perplexity']:10.1f} {m['psnr']:8.2f} "
            f"{m['ssim']:6.3f} {rfid} {m.get('global_step', 0):6d} {m.get('train_seconds', 0):7.0f}"
        )
    return "\n".join(lines)


def run_demo(out_dir: str = "runs/demo", *, steps: int = 1000, fid_images: int = 100, progress: bool = True) -> dict:
    from ..runs import load_config, read_usage_history
    from ..train import plots
    from ..train.image import train_tokenizer
    from ..utils import atomic_write_text, write_json

    out = Path(out_dir)
    results, histories = {}, {}
    started = time.time()
    for method in METHODS:
        config = load_config(DEMO_RECIPE, [
            f"out_dir={out / method}",
            f"quantizer.name={method}",
            f"trainer.max_steps={steps}",
            f"eval.fid_images={fid_images}",
            f"trainer.progress_bar={progress}",
        ])
        print(f"== training {method} for {steps} steps -> {config.out_dir}", flush=True)
        run_dir = train_tokenizer(config, progress=progress)
        results[method] = json.loads((run_dir / "metrics.json").read_text())
        histories[method] = read_usage_history(run_dir)
    plots.usage_over_steps(histories, out / "usage_over_steps.png")
    table = format_table(results)
    tokens = results[METHODS[0]]["tokens"]
    note = (
        f"usage/perplexity over {tokens:,} tokens; ref = the usage an untrained quantizer reaches on Gaussian "
        f"data at the same tokens per code; rFID on {results[METHODS[0]].get('rfid_images', 0)} test images (a small, biased subset: "
        f"compare methods, not papers); {time.time() - started:.0f} s in all"
    )
    print()
    print(table)
    print(note)
    write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", f"```\n{table}\n```\n\n{note}\n")
    print(f"report: {out}/results.md, PNGs in {out}/<method>/ and {out}/usage_over_steps.png")
    return results


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="SimVQ vs plain VQ on Fashion-MNIST (K=8192), a few minutes on CPU")
    parser.add_argument("--out", default="runs/demo", help="run directory for the report")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per method")
    parser.add_argument("--fid-images", type=int, default=100, help="rFID subset size (0 skips rFID)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_demo)


def _demo(args) -> int:
    from ..utils import check_count, check_out_dir_option

    check_count(args.steps, "--steps")  # before anything is trained
    check_count(args.fid_images, "--fid-images", minimum=0)
    check_out_dir_option(args.out, "--out")
    run_demo(out_dir=args.out, steps=args.steps, fid_images=args.fid_images, progress=not args.no_progress)
    return 0
