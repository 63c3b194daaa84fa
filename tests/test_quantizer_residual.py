"""Residual quantization (residual, residual_simvq): stage-wise nearest codes, per-stage error,
summed losses, one straight-through, options and the shared frozen basis."""

import pytest
import torch

from quantizer_references import brute_force_codes
from simvq import build_quantizer
from simvq.quantizers.residual import ResidualQuantizer, ResidualSimVQ

DIM, CODEBOOK_SIZE = 8, 16


def stage_errors(quantizer, x):
    """Mean squared error of the partial sums of the stages' decoded codes, stage by stage."""
    codes = quantizer.encode(x)
    partial = torch.zeros_like(x)
    errors = [x.pow(2).mean().item()]
    for index, stage in enumerate(quantizer.stages):
        partial = partial + stage.decode(codes[:, index])
        errors.append((x - partial).pow(2).mean().item())
    return errors


@pytest.mark.parametrize("name", ["residual", "residual_simvq"])
def test_residual_error_decreases_with_every_stage(name):
    torch.manual_seed(0)
    quantizer = build_quantizer(name, dim=DIM, codebook_size=64, num_quantizers=5, seed=0)
    x = torch.randn(2000, DIM)
    errors = stage_errors(quantizer, x)
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    out = quantizer(x)
    torch.testing.assert_close((x - out.quantized).pow(2).mean().item(), errors[-1], rtol=1e-4, atol=1e-6)


def test_residual_codes_are_the_stagewise_nearest_codes():
    quantizer = ResidualQuantizer(DIM, 32, num_quantizers=3, inner="vq", seed=5)
    x = torch.randn(100, DIM)
    codes = quantizer(x).codes
    residual = x.clone()
    for index, stage in enumerate(quantizer.stages):
        codebook = stage.codebook().detach()
        expected = brute_force_codes(residual, codebook)
        assert (codes[:, index] == expected).float().mean() > 0.99
        residual = residual - codebook[codes[:, index]]


def test_residual_losses_are_summed_over_stages_and_gradient_reaches_input_once():
    quantizer = ResidualQuantizer(DIM, 32, num_quantizers=3, inner="vq", seed=1, beta=0.25)
    x = torch.randn(50, DIM, requires_grad=True)
    out = quantizer(x)
    residual, commitment = x.detach(), 0.0
    for index, stage in enumerate(quantizer.stages):
        q = stage.codebook().detach()[out.codes[:, index]]
        commitment = commitment + 0.25 * (residual - q).pow(2).mean()
        residual = residual - q
    torch.testing.assert_close(out.losses["commitment"], commitment)
    upstream = torch.randn_like(x)
    (out.quantized * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream)  # one straight-through, not num_quantizers of them


def test_residual_passes_options_to_stages():
    quantizer = build_quantizer("residual", dim=DIM, codebook_size=32, inner="simvq", num_quantizers=2, rotation_trick=True, seed=0)
    assert all(stage.rotation_trick for stage in quantizer.stages)
    # seeds are offset per stage: the stages do not start as copies
    assert not torch.equal(quantizer.stages[0].basis, quantizer.stages[1].basis)
    fsq_stages = build_quantizer("residual", dim=DIM, codebook_size=256, inner="fsq", num_quantizers=2)
    assert fsq_stages.codebook_size == 240  # FSQ's table: [8, 6, 5]
    with pytest.raises(ValueError, match="num_quantizers"):
        ResidualQuantizer(DIM, 32, num_quantizers=0)
    with pytest.raises(ValueError, match="num_quantizers=2"):
        fsq_stages.decode(torch.zeros(4, 3, dtype=torch.long))


def test_residual_simvq_shares_one_frozen_basis_and_learns_a_w_per_stage():
    quantizer = ResidualSimVQ(DIM, 64, num_quantizers=3, seed=0)
    bases = [stage.basis for stage in quantizer.stages]
    assert all(basis is bases[0] for basis in bases)
    assert not any(basis.requires_grad for basis in bases)
    assert not torch.equal(quantizer.stages[0].proj.weight, quantizer.stages[1].proj.weight)
    out = quantizer(torch.randn(40, DIM))
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert all(stage.proj.weight.grad.abs().sum() > 0 for stage in quantizer.stages)
    # dtype/device moves convert each stage's buffer separately; the basis must stay one tensor
    quantizer.double()
    assert all(stage.basis is quantizer.stages[0].basis for stage in quantizer.stages)
    assert quantizer.basis.dtype == torch.float64
    quantizer.float()
    assert all(stage.basis is quantizer.stages[0].basis for stage in quantizer.stages)
    # state round trip
    clone = ResidualSimVQ(DIM, 64, num_quantizers=3, seed=1)
    clone.load_state_dict(quantizer.state_dict())
    assert all(stage.basis is clone.stages[0].basis for stage in clone.stages)
    x = torch.randn(30, DIM)
    assert torch.equal(clone.encode(x), quantizer.encode(x))
    with pytest.raises(ValueError, match="frozen basis"):
        ResidualSimVQ(DIM, 64, train_codebook=True)


@pytest.mark.parametrize("inner", ["vq", "simvq", "fsq", "lfq", "sqvae"])
def test_residual_over_any_inner_quantizer_keeps_the_contract(inner):
    torch.manual_seed(0)
    quantizer = build_quantizer("residual", dim=DIM, codebook_size=CODEBOOK_SIZE, inner=inner, num_quantizers=3).eval()
    z = torch.randn(5, 7, DIM)
    out = quantizer(z)
    assert out.codes.shape == (5, 7, 3)
    assert torch.equal(quantizer.encode(z), out.codes)
    torch.testing.assert_close(quantizer.decode(out.codes), out.quantized, rtol=1e-5, atol=1e-5)
