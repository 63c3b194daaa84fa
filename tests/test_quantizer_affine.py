"""Affine-reparameterised VQ (affine): learned and running affine codebooks, the synchronised
update's gradient and the alternating step, against direct computations."""

import pytest
import torch

from quantizer_references import brute_force_codes
from simvq.quantizers import AffineVQ


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="affine"):
        AffineVQ(8, 16, affine="projective")


def test_affine_learned_scale_and_shift_are_applied():
    quantizer = AffineVQ(6, 20, seed=0, affine_lr=10.0)
    with torch.no_grad():
        quantizer.scale_param.copy_(torch.linspace(-0.05, 0.05, 6))
        quantizer.shift_param.copy_(torch.linspace(0.1, -0.1, 6))
    expected = quantizer.embedding * (1 + 10 * quantizer.scale_param) + 10 * quantizer.shift_param
    torch.testing.assert_close(quantizer.codebook(), expected)
    z = torch.randn(30, 6)
    out = quantizer(z)
    assert torch.equal(out.codes, brute_force_codes(z, expected.detach()))
    torch.testing.assert_close(out.quantized, expected[out.codes].detach())


def test_affine_running_statistics_match_the_codebook_to_the_inputs():
    quantizer = AffineVQ(5, 64, seed=0, affine="running")
    z = torch.randn(500, 5) * torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]) + torch.tensor([1.0, -1.0, 0.0, 5.0, 2.0])
    quantizer(z)
    torch.testing.assert_close(quantizer.input_mean, z.mean(0))
    torch.testing.assert_close(quantizer.input_var, z.var(0, unbiased=False), rtol=1e-4, atol=1e-5)
    codebook = quantizer.codebook()
    torch.testing.assert_close(codebook.mean(0), z.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(codebook.var(0, unbiased=False), z.var(0, unbiased=False), rtol=1e-3, atol=1e-4)
    # later batches: EMA with momentum 0.1
    second = torch.randn(500, 5)
    quantizer(second)
    torch.testing.assert_close(quantizer.input_mean, 0.9 * z.mean(0) + 0.1 * second.mean(0), rtol=1e-5, atol=1e-5)


def test_affine_sync_update_gradient_matches_direct_computation():
    nu, beta = 0.2, 0.25
    quantizer = AffineVQ(6, 20, seed=0, sync_nu=nu, beta=beta)
    with torch.no_grad():
        quantizer.scale_param.fill_(0.03)
        quantizer.shift_param.fill_(-0.02)
    z = torch.randn(30, 6, requires_grad=True)
    upstream = torch.randn(30, 6)
    out = quantizer(z)
    torch.testing.assert_close(out.quantized, quantizer.codebook()[out.codes].detach())  # forward value unchanged
    (out.quantized * upstream).sum().add(out.loss).backward()
    # direct: task gradient reaches the chosen codes scaled by nu, plus the codebook loss
    embedding = quantizer.embedding.detach().clone().requires_grad_()
    scale, shift = 1 + 10 * quantizer.scale_param.detach(), 10 * quantizer.shift_param.detach()
    q = embedding[out.codes] * scale + shift
    direct = nu * (q * upstream).sum() + (q - z.detach()).pow(2).mean()
    direct.backward()
    torch.testing.assert_close(quantizer.embedding.grad, embedding.grad)
    # and the encoder gets the plain straight-through gradient plus its commitment term
    expected_z_grad = upstream + beta * 2 * (z.detach() - q.detach()) / z.numel()
    torch.testing.assert_close(z.grad, expected_z_grad)
    assert quantizer.scale_param.grad.abs().sum() > 0 and quantizer.shift_param.grad.abs().sum() > 0


def test_affine_alternating_step_updates_the_codes_in_place():
    lr, momentum = 5.0, 0.9
    quantizer = AffineVQ(6, 20, seed=0, alternating_lr=lr, alternating_momentum=momentum)
    with torch.no_grad():
        quantizer.scale_param.fill_(0.02), quantizer.shift_param.fill_(0.01)
    scale, shift = 1 + 10 * quantizer.scale_param.detach(), 10 * quantizer.shift_param.detach()
    velocity = torch.zeros(20, 6)
    for step in range(2):
        z = torch.randn(30, 6, generator=torch.Generator().manual_seed(step))
        embedding = quantizer.embedding.detach().clone().requires_grad_()
        codes = brute_force_codes(z, (embedding * scale + shift).detach())
        (grad,) = torch.autograd.grad((embedding[codes] * scale + shift - z).pow(2).mean(), [embedding])
        velocity = momentum * velocity + grad
        out = quantizer(z)
        assert torch.equal(out.codes, codes)
        torch.testing.assert_close(quantizer.embedding.detach(), embedding.detach() - lr * velocity)
        torch.testing.assert_close(quantizer.alternating_velocity, velocity)
        # the output is recomputed with the updated codes; affine parameters untouched in place
        torch.testing.assert_close(out.quantized, quantizer.codebook()[codes].detach())
        torch.testing.assert_close(quantizer.scale_param.detach(), torch.full((6,), 0.02))
    assert quantizer.embedding.grad is None  # the in-place step leaves .grad alone
    # the codebook term left in the loss trains the affine parameters, not E
    out = quantizer(torch.randn(30, 6))
    out.losses["codebook"].backward()
    assert quantizer.embedding.grad is None or quantizer.embedding.grad.abs().sum() == 0
    assert quantizer.scale_param.grad.abs().sum() > 0
