"""Every registered quantizer trains on one toy, and the collapse picture holds there.

Toy: data uniform in the 8-D cube [-1, 1]^8, a tiny MLP encoder/decoder, a 32-D latent, K = 1024
codes, Adam 1e-3, batch 256. Usage is counted over a 16,384-sample held-out batch (a perfectly
uniform quantizer would hit 1 - exp(-16) of the codes, i.e. all of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from simvq import build_quantizer, list_quantizers

pytestmark = pytest.mark.slow


@dataclass
class ToyConfig:
    data_dim: int = 8
    hidden: int = 64
    latent: int = 32
    codebook_size: int = 1024
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    eval_samples: int = 16384
    seed: int = 0


@dataclass
class ToyResult:
    initial_mse: float  # held-out reconstruction MSE before training
    mse: float  # after training, eval mode
    usage: float  # distinct codes over the held-out batch / codebook_size (mean over stages)
    codes: torch.Tensor
    codebook_size: int


def sample_cube(num, dim, generator):
    return torch.rand(num, dim, generator=generator) * 2 - 1


@torch.no_grad()
def evaluate(encoder, quantizer, decoder, x):
    was_training = quantizer.training
    quantizer.eval()
    out = quantizer(encoder(x))
    quantizer.train(was_training)
    return (decoder(out.quantized) - x).pow(2).mean().item(), out.codes


def train_toy(name: str, config: ToyConfig = ToyConfig(), **options) -> ToyResult:
    torch.manual_seed(config.seed)
    quantizer = build_quantizer(name, dim=config.latent, codebook_size=config.codebook_size, **options)
    encoder = nn.Sequential(nn.Linear(config.data_dim, config.hidden), nn.GELU(), nn.Linear(config.hidden, config.latent))
    decoder = nn.Sequential(nn.Linear(config.latent, config.hidden), nn.GELU(), nn.Linear(config.hidden, config.data_dim))
    parameters = [*encoder.parameters(), *decoder.parameters(), *quantizer.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    held_out = sample_cube(config.eval_samples, config.data_dim, torch.Generator().manual_seed(10_000 + config.seed))
    initial_mse, _ = evaluate(encoder, quantizer, decoder, held_out)
    data = torch.Generator().manual_seed(config.seed + 1)
    for _ in range(config.steps):
        x = sample_cube(config.batch_size, config.data_dim, data)
        out = quantizer(encoder(x))
        loss = (decoder(out.quantized) - x).pow(2).mean() + out.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    mse, codes = evaluate(encoder, quantizer, decoder, held_out)
    per_stage = codes.reshape(codes.shape[0], -1)
    usage = sum(torch.unique(column).numel() for column in per_stage.T) / (per_stage.shape[1] * quantizer.codebook_size)
    return ToyResult(initial_mse, mse, usage, codes, quantizer.codebook_size)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny matrices: one thread is as fast as two here and leaves the other core to the rest of CI
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def collapse_runs(one_thread):
    return {name: train_toy(name) for name in ("simvq", "vq")}


def test_simvq_uses_the_codebook_where_plain_vq_collapses(collapse_runs):
    simvq, vq = collapse_runs["simvq"], collapse_runs["vq"]
    assert simvq.usage >= 0.6, f"SimVQ usage {simvq.usage:.3f}"
    assert vq.usage * 3 <= simvq.usage, f"vq usage {vq.usage:.3f} vs SimVQ {simvq.usage:.3f}"
    assert simvq.mse < vq.mse, f"SimVQ MSE {simvq.mse:.4f} vs vq {vq.mse:.4f}"


# the per-method check needs the training to work, not to converge: fewer steps keep the file short
SHORT = ToyConfig(steps=500)


@pytest.mark.parametrize("name", list_quantizers())
def test_every_quantizer_trains_on_the_toy(name, collapse_runs):
    result = collapse_runs[name] if name in collapse_runs else train_toy(name, SHORT)
    assert result.mse < 0.9 * result.initial_mse, f"{name}: MSE {result.initial_mse:.4f} -> {result.mse:.4f}"
    assert result.codes.dtype == torch.int64
    assert int(result.codes.min()) >= 0 and int(result.codes.max()) < result.codebook_size
