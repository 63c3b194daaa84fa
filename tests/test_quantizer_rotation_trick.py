"""The straight-through estimator and its rotation-trick variant (Fifty et al. 2024)."""

import pytest
import torch

from simvq import build_quantizer
from simvq.quantizers.base import straight_through

DIM = 8


def test_straight_through_rotation_maps_z_direction_onto_q():
    z = torch.randn(5, 8)
    q = torch.randn(5, 8)
    out = straight_through(z, q, rotation_trick=True)
    torch.testing.assert_close(out, q)


@pytest.mark.parametrize("name", ["vq", "simvq", "residual", "sqvae"])
def test_rotation_trick_same_forward_values_rotated_gradient(name):
    def run(rotation_trick):
        torch.manual_seed(0)
        quantizer = build_quantizer(name, dim=DIM, codebook_size=32, seed=0, rotation_trick=rotation_trick)
        if name == "sqvae":
            quantizer.eval()  # the hard (straight-through) path
        z = torch.randn(16, DIM, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = quantizer(z)
        upstream = torch.randn(16, DIM, generator=torch.Generator().manual_seed(2))
        (out.quantized * upstream).sum().backward()
        return out, z.grad, upstream

    plain, plain_grad, upstream = run(False)
    rotated, rotated_grad, _ = run(True)
    assert torch.equal(plain.codes, rotated.codes)
    torch.testing.assert_close(plain.quantized, rotated.quantized, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.loss, rotated.loss)
    torch.testing.assert_close(plain_grad, upstream)  # plain straight-through copies the gradient
    assert (rotated_grad - plain_grad).abs().max() > 1e-2
    if name != "residual":
        # one rotation + rescale per vector: |grad| = |q| / |z| * |upstream|
        z = torch.randn(16, DIM, generator=torch.Generator().manual_seed(1))
        ratio = rotated.quantized.detach().norm(dim=-1) / z.norm(dim=-1)
        torch.testing.assert_close(rotated_grad.norm(dim=-1), ratio * upstream.norm(dim=-1), rtol=1e-4, atol=1e-5)
