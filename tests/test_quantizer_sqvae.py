"""SQ-VAE (sqvae): the stochastic training forward and its ELBO terms against a hand-written
softmax with the same Gumbel noise; deterministic argmin in eval; self-annealing variance."""

import torch

from quantizer_references import brute_force_codes
from simvq.quantizers import sqvae as sqvae_module
from simvq.quantizers.sqvae import SQVAE

DIM, CODEBOOK_SIZE = 8, 16


def test_sqvae_losses_match_direct_computation_with_the_same_noise():
    quantizer = SQVAE(DIM, CODEBOOK_SIZE, seed=0, kl_weight=0.5, temperature=0.7)
    z = torch.randn(12, DIM, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(11)
    out = quantizer(z)
    # the reference draws the same uniforms (nearest() uses no RNG)
    torch.manual_seed(11)
    uniform = torch.rand(12, CODEBOOK_SIZE).clamp(1e-10, 1 - 1e-7).double()
    gumbel = -torch.log(-torch.log(uniform))
    codebook = quantizer.embedding.detach().double()
    variance = quantizer.log_variance.detach().double().exp()
    logits = -torch.cdist(z.double(), codebook).pow(2) / (2 * variance)
    probs = torch.softmax(logits, 1)
    sample = torch.softmax((logits + gumbel) / 0.7, 1) @ codebook
    torch.testing.assert_close(out.quantized.double(), sample, rtol=1e-4, atol=1e-5)
    kl_discrete = 0.5 * (probs * probs.log()).sum(1).mean()
    kl_continuous = 0.5 * ((z.double() - sample).pow(2).sum(1) / (2 * variance)).mean()
    torch.testing.assert_close(out.losses["kl_discrete"].double(), kl_discrete, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.losses["kl_continuous"].double(), kl_continuous, rtol=1e-4, atol=1e-5)
    assert torch.equal(out.codes, brute_force_codes(z, codebook))


def test_sqvae_train_is_stochastic_eval_is_deterministic_argmin():
    quantizer = SQVAE(DIM, CODEBOOK_SIZE, seed=0)
    z = torch.randn(20, DIM)
    assert not torch.allclose(quantizer(z).quantized, quantizer(z).quantized)
    quantizer.eval()
    first, second = quantizer(z), quantizer(z)
    assert torch.equal(first.quantized, second.quantized)
    expected = brute_force_codes(z, quantizer.embedding.detach())
    assert torch.equal(first.codes, expected)
    torch.testing.assert_close(first.quantized, quantizer.embedding.detach()[expected])


def test_sqvae_variance_is_learned_and_anneals():
    torch.manual_seed(0)
    quantizer = SQVAE(DIM, 64, seed=0)
    encoder = torch.nn.Linear(4, DIM)
    decoder = torch.nn.Linear(DIM, 4)
    optimizer = torch.optim.Adam([*quantizer.parameters(), *encoder.parameters(), *decoder.parameters()], lr=1e-2)
    start = quantizer.variance.item()
    for _ in range(150):
        x = torch.randn(128, 4)
        out = quantizer(encoder(x))
        loss = (decoder(out.quantized) - x).pow(2).mean() + out.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # the reconstruction term rewards sharper samples: sigma^2 shrinks without any schedule
    assert quantizer.variance.item() < 0.8 * start


def test_sqvae_chunked_training_forward_equals_one_tile(monkeypatch):
    # On CPU, uniforms drawn chunk by chunk continue one stream, so under the same seed the chunked
    # path sees the same Gumbel noise as one tile; its backward recomputes each chunk under
    # checkpoint and must replay that noise too, or the gradients would differ.
    z = torch.randn(40, DIM, generator=torch.Generator().manual_seed(4))
    results = []
    for tile in (10**9, 3 * CODEBOOK_SIZE):  # one tile, then chunks of 3 tokens
        monkeypatch.setattr(sqvae_module, "TILE_ELEMENTS", tile)
        quantizer = SQVAE(DIM, CODEBOOK_SIZE, seed=0)
        torch.manual_seed(5)
        z_leaf = z.clone().requires_grad_()
        out = quantizer(z_leaf)
        (out.quantized.pow(2).sum() + out.loss).backward()
        results.append((out.quantized.detach(), out.loss.detach(), z_leaf.grad, quantizer.log_variance.grad))
    for one_tile, chunked in zip(*results):
        torch.testing.assert_close(one_tile, chunked, rtol=1e-5, atol=1e-6)
