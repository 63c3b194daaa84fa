"""Stand-in demo until the image recipe lands: SimVQ vs a collapsing codebook on a toy MLP."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..quantizers import SimVQ


def _train(quantizer, steps=300, seed=0):
    torch.manual_seed(seed)
    encoder = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.GELU(), torch.nn.Linear(64, 16))
    decoder = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters(), *quantizer.parameters()], lr=1e-3)
    for _ in range(steps):
        x = torch.rand(256, 8) * 2 - 1
        out = quantizer(encoder(x))
        loss = (decoder(out.quantized) - x).pow(2).mean() + out.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = torch.rand(8192, 8) * 2 - 1
        out = quantizer(encoder(x))
        mse = (decoder(out.quantized) - x).pow(2).mean().item()
    return {"usage": out.metrics["usage"].item(), "perplexity": out.metrics["perplexity"].item(), "mse": mse}


def run_demo(out_dir: str = "runs/demo") -> dict:
    simvq = SimVQ(16, 1024, seed=0)
    plain = SimVQ(16, 1024, seed=0, train_codebook=True)
    plain.proj.requires_grad_(False)
    results = {"simvq": _train(simvq), "plain (C trained, W frozen)": _train(plain)}
    print(f"{'method':30s} {'usage':>8s} {'perplexity':>11s} {'mse':>8s}")
    for name, row in results.items():
        print(f"{name:30s} {row['usage']:8.3f} {row['perplexity']:11.1f} {row['mse']:8.4f}")
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps(results, indent=2))
    return results


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="SimVQ vs a collapsing codebook, a few minutes on CPU")
    parser.add_argument("--out", default="runs/demo", help="run directory for the report")
    parser.set_defaults(func=lambda args: run_demo(out_dir=args.out) and 0)
