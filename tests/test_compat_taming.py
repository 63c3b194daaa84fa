"""``simvq.compat.VectorQuantizer2`` against taming-transformers' ``VectorQuantizer2`` interface.

taming-transformers does not install cleanly with a modern torch; diffusers (a test dependency,
the ``compat`` extra) ships the same class as ``diffusers.models.autoencoders.vae.VectorQuantizer``
(its ``__init__``, ``forward`` and ``get_codebook_entry`` are taming's, distances by ``cdist``), so
the reference here is that class, as pip installs it. Then a taming-style VQGAN (taming's
``VQModel`` layout: encoder, quant_conv, quantize, post_quant_conv, decoder, ``decode_code``)
trains a few steps on Fashion-MNIST with the README snippet's quantizer.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simvq.compat import VectorQuantizer, VectorQuantizer2
from test_compat_readme import TAMING, run_snippet

pytestmark = pytest.mark.usefixtures("one_thread")

N_E, E_DIM = 32, 4


def taming_reference(**kwargs):
    """taming's VectorQuantizer2, as diffusers ships it."""
    vae = pytest.importorskip("diffusers.models.autoencoders.vae")
    torch.manual_seed(0)
    return vae.VectorQuantizer(N_E, E_DIM, beta=0.25, **kwargs)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sane_index_shape", [False, True])
def test_same_return_structure_as_taming(sane_index_shape):
    reference = taming_reference(sane_index_shape=sane_index_shape)
    ours = VectorQuantizer2(N_E, E_DIM, beta=0.25, sane_index_shape=sane_index_shape, seed=0)
    z = randn(2, E_DIM, 5, 6).requires_grad_()
    expected, got = reference(z), ours(z)
    assert isinstance(got, tuple) and len(got) == len(expected) == 3
    (ref_q, ref_loss, ref_info), (z_q, loss, info) = expected, got
    assert z_q.shape == ref_q.shape == z.shape and z_q.dtype == ref_q.dtype and z_q.is_contiguous()
    assert loss.shape == ref_loss.shape == () and loss.dtype == ref_loss.dtype
    assert isinstance(info, tuple) and len(info) == len(ref_info) == 3
    perplexity, min_encodings, indices = info
    assert min_encodings is None and ref_info[1] is None
    assert perplexity.ndim == 0 and 1 <= perplexity.item() <= N_E  # taming's VectorQuantizer2 gives None here
    assert indices.shape == ref_info[2].shape == ((2, 5, 6) if sane_index_shape else (60,))
    assert indices.dtype == ref_info[2].dtype == torch.int64
    assert 0 <= int(indices.min()) and int(indices.max()) < N_E
    # get_codebook_entry: (B, H, W, C) -> channel-first, None -> flat (N, C)
    shape = (2, 5, 6, E_DIM)
    for indices_of in (indices, ref_info[2]):
        entry = ours.get_codebook_entry(indices_of, shape)
        assert entry.shape == reference.get_codebook_entry(indices_of, shape).shape == z.shape and entry.is_contiguous()
        assert ours.get_codebook_entry(indices_of.reshape(-1), None).shape == reference.get_codebook_entry(indices_of.reshape(-1), None).shape
    torch.testing.assert_close(ours.get_codebook_entry(indices, shape), z_q)  # up to the straight-through's rounding
    # gradients reach z through the output and the loss, as in taming
    (z_q.sum() + loss).backward()
    assert z.grad is not None and (z.grad != 0).all()
    # taming's attribute names
    assert (ours.n_e, ours.e_dim, ours.beta, ours.remap, ours.sane_index_shape) == (N_E, E_DIM, 0.25, None, sane_index_shape)
    assert VectorQuantizer is VectorQuantizer2


@pytest.mark.parametrize("legacy", [False, True])
def test_same_codebook_gives_tamings_indices_outputs_and_loss(legacy):
    """With quantizer="vq" holding taming's codebook: taming's indices, z_q and loss value; with
    legacy=False (VQ-VAE's weighting) its gradients too."""
    reference = taming_reference(legacy=legacy)
    ours = VectorQuantizer2(N_E, E_DIM, quantizer="vq", seed=0)
    with torch.no_grad():
        ours.quantizer.embedding.copy_(reference.embedding.weight)
    z = (randn(2, E_DIM, 5, 6, seed=1) * 0.05).requires_grad_()  # the scale of taming's U(-1/K, 1/K) codes
    z_ours = z.detach().clone().requires_grad_()
    ref_q, ref_loss, (_, _, ref_indices) = reference(z)
    z_q, loss, (_, _, indices) = ours(z_ours)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(z_q, ref_q)
    torch.testing.assert_close(loss, ref_loss)  # (1 + beta) * mse under both weightings
    torch.testing.assert_close(
        ours.get_codebook_entry(indices, (2, 5, 6, E_DIM)), reference.get_codebook_entry(ref_indices, (2, 5, 6, E_DIM))
    )
    if not legacy:
        weight = randn(*z.shape, seed=2)
        (ref_q * weight).sum().add(ref_loss).backward()
        (z_q * weight).sum().add(loss).backward()
        torch.testing.assert_close(z_ours.grad, z.grad)
        torch.testing.assert_close(ours.quantizer.embedding.grad, reference.embedding.weight.grad)


class TamingStyleVQModel(nn.Module):
    """taming.models.vqgan.VQModel's layout, tiny: 28x28 images, 14x14 latents of ``embed_dim``."""

    def __init__(self, embed_dim: int, quantize: nn.Module | None = None):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.SiLU(), nn.Conv2d(16, 16, 3, 1, 1))
        self.quant_conv = nn.Conv2d(16, embed_dim, 1)
        self.quantize = quantize
        self.post_quant_conv = nn.Conv2d(embed_dim, 16, 1)
        self.decoder = nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(16, 16, 4, 2, 1), nn.SiLU(), nn.Conv2d(16, 1, 3, 1, 1))

    def encode(self, x):
        h = self.quant_conv(self.encoder(x))
        quant, emb_loss, info = self.quantize(h)
        return quant, emb_loss, info

    def decode(self, quant):
        return self.decoder(self.post_quant_conv(quant))

    def decode_code(self, code_b, shape):
        return self.decode(self.quantize.get_codebook_entry(code_b, shape))

    def forward(self, x):
        quant, diff, _ = self.encode(x)
        return self.decode(quant), diff


def fashion_batch(count: int) -> torch.Tensor:
    from simvq.data.fashion_mnist import FashionMNIST, MissingDatasetError

    try:
        dataset = FashionMNIST("test")
    except MissingDatasetError as error:  # the Debian package dataset-fashion-mnist (make system-deps)
        pytest.skip(str(error))
    return dataset.images[:count].unsqueeze(1).float() / 255.0


def test_readme_snippet_in_a_taming_style_training_loop():
    torch.manual_seed(0)
    n_embed, embed_dim = 64, 4
    model = TamingStyleVQModel(embed_dim)
    x = fashion_batch(64)
    namespace = run_snippet(TAMING, {"model": model, "n_embed": n_embed, "embed_dim": embed_dim, "x": x})
    assert isinstance(model.quantize, VectorQuantizer2) and type(model.quantize.quantizer).__name__ == "SimVQ"
    quant, indices = namespace["quant"], namespace["indices"]
    assert quant.shape == (64, embed_dim, 14, 14) and indices.shape == (64 * 14 * 14,)
    torch.testing.assert_close(namespace["z_q"], quant)
    assert namespace["emb_loss"].ndim == 0 and namespace["perplexity"].ndim == 0

    # taming's training step: reconstruction + codebook loss (taming adds LPIPS and a GAN on top)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    reconstruction_losses, losses = [], []
    for _ in range(40):
        xrec, qloss = model(x)
        reconstruction = (x - xrec).abs().mean()
        loss = reconstruction + qloss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        reconstruction_losses.append(reconstruction.item())
        losses.append(loss.item())
    # the codebook term rises for a while as the encoder's outputs grow, then falls with them
    assert sum(reconstruction_losses[-5:]) < 0.6 * sum(reconstruction_losses[:5]), reconstruction_losses
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5]), losses
    assert model.quantize.last_metrics["usage"] > 0 and set(model.quantize.last_losses) == {"commitment", "codebook"}

    # the round trip through the model's own API: codes -> decode_code == the forward's reconstruction
    model.eval()
    with torch.no_grad():
        quant, _, (_, _, indices) = model.encode(x)
        rec = model.decode(quant)
        assert torch.equal(model.decode_code(indices, (64, 14, 14, embed_dim)), rec)
        assert torch.equal(model.quantize.quantizer.encode(model.quant_conv(model.encoder(x))).reshape(-1), indices)


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="remap"):
        VectorQuantizer2(N_E, E_DIM, remap="used.npy")
    with pytest.raises(ValueError, match="legacy"):
        VectorQuantizer2(N_E, E_DIM, legacy=True)
    with pytest.raises(ValueError, match="one index"):
        VectorQuantizer2(N_E, E_DIM, quantizer="residual")
    with pytest.raises(ValueError, match="no commitment weight"):
        VectorQuantizer2(N_E, E_DIM, beta=0.5, quantizer="fsq")
    VectorQuantizer2(16, E_DIM, quantizer="fsq")  # taming's default beta: accepted, nothing to weight
    with pytest.raises(ValueError, match="Gumbel"):
        VectorQuantizer2(N_E, E_DIM)(randn(1, E_DIM, 2, 2), temp=0.5)
    with pytest.raises(ValueError, match="channel-first"):
        VectorQuantizer2(N_E, E_DIM)(randn(4, E_DIM))
