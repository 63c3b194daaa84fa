"""Image-recipe training step: today's recipe against the recipe before the speed work, a bare
PyTorch loop of the same model, the quantizer's share, and the K=1,024 quantizer against a GEMM.

Every number is a ratio of two timings taken in this one run, on this machine:

  * before / after: seconds per step of ``train_tokenizer`` (Lightning, data, logging, EMA: the
    whole recipe) from the source tree at ``--baseline-ref`` (the recipe before the speed work)
    and from this tree, same config. Each is measured as the time difference of two runs of
    ``--steps`` and ``3 x --steps`` steps, so start-up (data loading, compilation) cancels; a
    first, untimed run in the same process pays the one-off costs.
  * Lightning overhead: the recipe's step against a bare PyTorch loop running the same module's
    loss, optimiser and EMA on the same batches (target <= 10%).
  * quantizer share: the quantizer's forward + backward on the step's latents, over the bare step.
  * K=1,024 quantizer: SimVQ forward + backward on 16,384 tokens, d=64, over a plain chunked
    float32 GEMM of the same shape (``benchmarks/search.py``'s reference; target <= 1.3x).

    python benchmarks/train_step.py                        # demo recipe, K=8,192, this machine
    python benchmarks/train_step.py --compile --steps 40   # also the torch.compile'd recipe
    python benchmarks/train_step.py --baseline-src /path/to/old/src   # baseline from a copy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
BASELINE_REF = "4fe32a9"  # main before issue 9's speed work
RECIPE = ROOT / "configs" / "demo_fmnist.yaml"
# the config both trees understand (the baseline knows none of the new options)
COMMON = ["trainer.checkpoint_every=1000000", "trainer.progress_bar=false", "trainer.log_every=50", "eval.fid_images=0"]

RECIPE_TIMER = """
import json, sys, tempfile, time
sys.path.insert(0, {src!r})
import torch
torch.set_num_threads({threads})
from simvq.train.config import load_config
from simvq.train.image import train_tokenizer
seconds = []
for steps in ({short}, {short}, {long}):  # the first run pays one-off costs (CUDA context, kernel tuning)
    with tempfile.TemporaryDirectory() as out:
        config = load_config({recipe!r}, {overrides!r} + [f"out_dir={{out}}", f"trainer.max_steps={{steps}}"])
        start = time.perf_counter()
        train_tokenizer(config, evaluate=False, progress=False)
        seconds.append(time.perf_counter() - start)
print(json.dumps({{"step_s": (seconds[2] - seconds[1]) / ({long} - {short}), "first_run_s": seconds[0]}}))
"""


def recipe_step_seconds(src: Path, overrides: list[str], steps: int, threads: int) -> dict:
    """Seconds per step of the whole recipe from the source tree ``src`` (in a fresh process)."""
    code = RECIPE_TIMER.format(src=str(src), threads=threads, short=steps, long=3 * steps, recipe=str(RECIPE), overrides=COMMON + overrides)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode:
        raise RuntimeError(f"timing {src} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def baseline_tree(ref: str, into: Path) -> Path:
    """``src/`` of git revision ``ref``, extracted under ``into``."""
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    tar_path = into / "baseline.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> float:
    """Mean seconds of ``fn`` over ``repeats`` calls after three warm-ups."""
    for _ in range(3):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def bare_loop_seconds(overrides: list[str], repeats: int, device) -> tuple[float, float]:
    """``(bare step, quantizer forward+backward)`` seconds for the recipe's module without Lightning."""
    import torch

    from simvq.data import build_image_dataset
    from simvq.data.in_memory import ShuffledBatches, uint8_images
    from simvq.train.config import load_config
    from simvq.train.core import resolve_precision
    from simvq.train.image import ImageTokenizerModule

    config = load_config(RECIPE, COMMON + overrides)
    module = ImageTokenizerModule(config).to(device)
    optimizer = torch.optim.Adam(module.model.parameters(), lr=config.optim.lr, betas=tuple(config.optim.betas))
    batches = iter(ShuffledBatches(uint8_images(build_image_dataset(config.data, "train")), config.data.batch_size))
    precision = resolve_precision(config.trainer.precision, config.trainer.accelerator)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))

    def step():
        images = module.modality.prepare(next(batches).to(device, non_blocking=True), config)
        with autocast:
            loss, _, out, _ = module.generator_loss(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module.update_ema()
        module.window_usage.update(out.codes, check=False)

    bare = timed(step, device, repeats)
    quantizer = module.model.quantizer
    factor = 2**config.model.downsamplings
    side = config.data.image_size // factor
    z = torch.randn(config.data.batch_size, side, side, config.model.dim, device=device, requires_grad=True)

    def quantizer_step():
        out = quantizer(z)
        (out.quantized.square().mean() + out.loss).backward()

    return bare, timed(quantizer_step, device, repeats)


def small_codebook_ratio(repeats: int, device) -> dict:
    """SimVQ step at K=1,024 (16,384 tokens, d=64) over the chunked float32 GEMM reference."""
    import torch

    from search import DIM, TOKENS, chunked_gemm
    from simvq import SimVQ

    torch.manual_seed(0)
    quantizer = SimVQ(DIM, 1024, seed=0).to(device)
    z = torch.randn(TOKENS // 1024, 1024, DIM, device=device, requires_grad=True)

    def step():
        out = quantizer(z)
        (out.quantized.square().mean() + out.loss).backward()

    with torch.no_grad():
        codebook = quantizer.codebook().detach().clone()
    x = z.detach().reshape(-1, DIM)
    step_s = timed(step, device, repeats)
    gemm_s = timed(lambda: chunked_gemm(x, codebook), device, repeats) if device.type == "cpu" else timed(lambda: x @ codebook.t(), device, repeats)
    return {"step_s": step_s, "gemm_s": gemm_s, "ratio": step_s / gemm_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps of the shorter timed run (the longer one runs 3x)")
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats of the bare and quantizer steps")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git revision of the 'before' recipe")
    parser.add_argument("--baseline-src", default=None, help="a src/ tree of the 'before' recipe (instead of --baseline-ref)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the before/after comparison")
    parser.add_argument("--compile", action="store_true", help="also time the recipe with trainer.compile=true")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = torch.get_num_threads()
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    new = [f"trainer.accelerator={accelerator}"]
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {threads} threads",
               "recipe": str(RECIPE.relative_to(ROOT))}

    results["after"] = recipe_step_seconds(ROOT / "src", new, args.steps, threads)
    if args.compile:
        results["after_compiled"] = recipe_step_seconds(ROOT / "src", new + ["trainer.compile=true"], args.steps, threads)
    if not args.no_baseline:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(args.baseline_src) if args.baseline_src else baseline_tree(args.baseline_ref, Path(tmp))
            results["before"] = recipe_step_seconds(src, [f"trainer.accelerator={accelerator}"], args.steps, threads)
    bare, quantizer = bare_loop_seconds(new, args.repeats, device)
    results.update(bare_step_s=bare, quantizer_step_s=quantizer)
    results["small_codebook"] = small_codebook_ratio(args.repeats, device)

    after = results["after"]["step_s"]
    print(f"device: {results['device']}; recipe {results['recipe']} (K=8,192, batch 64, 7x7 tokens)")
    if "before" in results:
        before = results["before"]["step_s"]
        print(f"recipe step   before {1000 * before:7.1f} ms   after {1000 * after:7.1f} ms   speed-up {before / after:.2f}x")
    if "after_compiled" in results:
        compiled = results["after_compiled"]["step_s"]
        print(f"compiled      {1000 * compiled:7.1f} ms   speed-up over after {after / compiled:.2f}x")
    print(f"bare loop     {1000 * bare:7.1f} ms   Lightning overhead {100 * (after / bare - 1):+.1f}%")
    print(f"quantizer     {1000 * quantizer:7.1f} ms   share of the bare step {100 * quantizer / bare:.1f}%")
    small = results["small_codebook"]
    print(f"K=1,024 quantizer step {1000 * small['step_s']:.1f} ms / GEMM {1000 * small['gemm_s']:.1f} ms = {small['ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
