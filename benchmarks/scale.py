"""Scale-out and mixed precision, as ratios measured in this one run on this machine:

  * image recipe, 2 processes (gloo DDP) over 1 process: training images per second of
    ``simvq train`` with ``trainer.devices=2`` against ``trainer.devices=1``, each process given
    ``cores / processes`` threads. Each is the time difference of a ``--steps`` and a
    ``3 x --steps`` run, so start-up (process launch, data loading, gloo rendezvous) cancels.
  * search under bf16 autocast over float32: ``SimVQ.encode`` on float32 latents inside
    ``torch.autocast(bfloat16)``, and on bf16 latents, against plain float32 (the search runs in
    float32 either way, so the ratio is the cost of the conversions; the codes are checked equal).

    python benchmarks/scale.py                      # demo recipe, this machine
    python benchmarks/scale.py --steps 20 --skip-ddp
    python benchmarks/scale.py --threads 1          # one thread per process in both runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "demo_fmnist.yaml"
COMMON = ["trainer.checkpoint_every=1000000", "trainer.progress_bar=false", "trainer.log_every=1000", "trainer.accelerator=cpu",
          "trainer.precision=32-true"]


def recipe_seconds(devices: int, steps: int, threads: int, extra: list[str]) -> float:
    """Wall seconds of ``simvq train`` for ``steps`` steps on ``devices`` processes (fresh run dir)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "simvq.cli", "train", str(RECIPE), "--no-eval", f"--out={out}",
                   *COMMON, *extra, f"trainer.devices={devices}", f"trainer.max_steps={steps}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        return time.perf_counter() - start


def images_per_second(devices: int, steps: int, batch_size: int, extra: list[str], threads: int | None = None) -> float:
    threads = threads or max(1, (os.cpu_count() or 1) // devices)
    short = recipe_seconds(devices, steps, threads, extra)
    long = recipe_seconds(devices, 3 * steps, threads, extra)
    return 2 * steps * batch_size * devices / max(long - short, 1e-9)  # every rank takes its own batch


def search_ratios(codebook_size: int, tokens: int, dim: int, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from simvq import SimVQ

    quantizer = SimVQ(dim=dim, codebook_size=codebook_size, seed=0).eval()
    z = torch.randn(tokens, dim)

    def best_of(fn) -> tuple[float, torch.Tensor]:
        fn()
        times, result = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        return min(times), result

    def autocast_encode(latents):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return quantizer.encode(latents)

    fp32_s, fp32_codes = best_of(lambda: quantizer.encode(z))
    autocast_s, autocast_codes = best_of(lambda: autocast_encode(z))
    bf16_s, _ = best_of(lambda: autocast_encode(z.bfloat16()))
    assert torch.equal(autocast_codes, fp32_codes), "codes under bf16 autocast differ from float32 codes"
    return {"fp32_s": fp32_s, "autocast_over_fp32": autocast_s / fp32_s, "bf16_input_over_fp32": bf16_s / fp32_s,
            "codebook_size": codebook_size, "tokens": tokens, "dim": dim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-ddp", action="store_true")
    # on a shared machine a 2-thread process can spin in OpenMP barriers while other jobs hold the
    # cores (measured: 15 img/s with 2 threads against 158 with 1): --threads 1 compares like with like
    parser.add_argument("--threads", type=int, default=None, help="threads per process (default: cores / processes)")
    parser.add_argument("--codebook-size", type=int, default=8192)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {"search": search_ratios(args.codebook_size, args.tokens, 64, args.repeats)}
    if not args.skip_ddp:
        extra = [f"data.batch_size={args.batch_size}"]
        one = images_per_second(1, args.steps, args.batch_size, extra, args.threads)
        two = images_per_second(2, args.steps, args.batch_size, extra, args.threads)
        results["recipe"] = {"images_per_s_1proc": one, "images_per_s_2proc": two, "two_over_one": two / one,
                             "cpu_count": os.cpu_count(), "batch_size_per_process": args.batch_size}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
