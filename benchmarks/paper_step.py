"""The paper recipes' training step (configs/paper/*.yaml) at full model size, on this machine's CPU:
the FLOPs of one step per example, the seconds of a few steps at a small batch, and the memory they
take; docs/gpu.md scales these to GPUs on paper.

What one step is: the recipe's ``training_step`` without Lightning around it: the generator's loss
(autoencoder forward, reconstruction + quantizer + perceptual / mel terms, the adversarial terms
through the discriminators), its backward and Adam step, the discriminators' loss, backward and
Adam step, and the weight EMA. The FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``
over one such step at batch 1 (matrix products and convolutions, forward and backward: what runs on
a GPU's tensor cores; the element-wise work and the optimisers are left out), so they are the
model's own, whatever the hardware. The image recipe's LPIPS-VGG gets random weights written to a
temporary torchvision-format file (a VGG16's FLOPs do not depend on its weights).

Memory: each batch size runs in its own child process, which reports its peak resident set size
(``ru_maxrss``); the difference between two batch sizes is the memory per example (activations kept
for the backward pass, float32 on a CPU), the rest the fixed part (weights, Adam's two moments, the
EMA copy, the discriminators, the library).

    PYTHONPATH=src python benchmarks/paper_step.py image --batches 1 2 --steps 2
    PYTHONPATH=src python benchmarks/paper_step.py speech --batches 1 2 --steps 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CONFIGS = {"image": ROOT / "configs" / "paper" / "imagenet128_simvq.yaml", "speech": ROOT / "configs" / "paper" / "libritts24k_simvq.yaml"}


def build(kind: str, folder: Path, overrides: list[str]):
    """The recipe's module and one example's input, at the config's sizes."""
    from simvq.train.config import load_recipe

    if kind == "image":
        from simvq.models.perceptual import vgg16_features
        from simvq.train.image import ImageTokenizerModule

        backbone = folder / "random_vgg16.pth"
        torch.save({f"features.{k}": torch.randn(v.shape) * 0.02 for k, v in vgg16_features().state_dict().items()}, backbone)
        config = load_recipe(CONFIGS[kind], [f"loss.perceptual_backbone={backbone}", "trainer.channels_last=false", *overrides])
        module = ImageTokenizerModule(config)
        example = torch.rand(1, 3, config.data.image_size, config.data.image_size)
    else:
        from simvq.train.audio import AudioModality
        from simvq.train.recipe import TokenizerModule

        config = load_recipe(CONFIGS[kind], overrides)
        module = TokenizerModule(config, AudioModality(config))
        t = torch.arange(round(config.data.clip_seconds * config.data.sample_rate)) / config.data.sample_rate
        example = (0.3 * torch.sin(2 * torch.pi * 180 * t) * (0.6 + 0.4 * torch.sin(2 * torch.pi * 4 * t))).view(1, 1, -1)
    return module, example, config


def one_step(module, optimisers, batch) -> None:
    generator, discriminator = optimisers
    inputs = module.modality.prepare(batch, module.config)
    loss, reconstruction, _, _ = module.generator_loss(inputs)
    generator.zero_grad(set_to_none=True)
    loss.backward()
    generator.step()
    d_loss = module.modality.discriminator_loss(module.discriminator, inputs, reconstruction.detach())
    discriminator.zero_grad(set_to_none=True)
    d_loss.backward()
    discriminator.step()
    module.update_ema()


def parameters(module) -> dict:
    def count(part):
        return sum(p.numel() for p in part.parameters()) if part is not None else 0

    model = module.model
    return {"encoder": count(model.encoder), "decoder": count(model.decoder), "quantizer": count(model.quantizer),
            "discriminator": count(module.discriminator), "perceptual": count(getattr(module, "perceptual", None))}


def count_flops(kind: str, overrides: list[str]) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory() as folder:
        module, example, _ = build(kind, Path(folder), overrides)
        optimisers, _ = module.configure_optimizers()
        counter = FlopCounterMode(display=False)
        with counter:
            one_step(module, optimisers, example)
        return {"flops_per_example": counter.get_total_flops(), "parameters": parameters(module)}


def timed(kind: str, batch: int, steps: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        module, example, _ = build(kind, Path(folder), overrides)
        optimisers, _ = module.configure_optimizers()
        inputs = example.repeat(batch, *([1] * (example.ndim - 1))) + 0.01 * torch.randn(batch, *example.shape[1:])
        seconds = []
        for _ in range(steps + 1):  # the first step (allocation, first touch) is left out
            start = time.perf_counter()
            one_step(module, optimisers, inputs)
            seconds.append(time.perf_counter() - start)
    return {"batch": batch, "seconds_per_step": statistics.median(seconds[1:]), "steps": seconds[1:],
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(CONFIGS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--override", action="append", default=[], help="a config override, e.g. quantizer.codebook_size=262144")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(timed(args.kind, args.child, args.steps, args.override)))
        return
    report = {"kind": args.kind, "config": str(CONFIGS[args.kind].relative_to(ROOT)), "overrides": args.override,
              "cpu": _cpu_name(), **count_flops(args.kind, args.override), "runs": []}
    for batch in args.batches:
        child = [sys.executable, __file__, args.kind, "--child", str(batch), "--steps", str(args.steps)]
        child += [f"--override={o}" for o in args.override]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        report["runs"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    if len(report["runs"]) >= 2:
        first, last = report["runs"][0], report["runs"][-1]
        per_example = (last["peak_rss_bytes"] - first["peak_rss_bytes"]) / (last["batch"] - first["batch"])
        report["memory_per_example_bytes"] = per_example
        report["memory_fixed_bytes"] = first["peak_rss_bytes"] - per_example * first["batch"]
    print(json.dumps(report, indent=1))


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
