"""``simvq.compat.VectorQuantize`` against the real vector-quantize-pytorch (the bench extra's 1.32.0).

Same inputs to both: the same call signature and return structure (shapes, dtypes, scalar loss),
indices that index the codebook, ``get_output_from_indices(indices) == quantized`` in eval mode, the
layouts (``channel_last``, ``accept_image_fmap``, ``accept_3d_fmap``, one token), padding masks,
``SimVQ``'s and ``ResidualVQ``'s conventions, and a training loop written for the peer.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simvq.compat import VectorQuantize
from test_compat_readme import VECTOR_QUANTIZE, run_snippet

vqp = pytest.importorskip("vector_quantize_pytorch")
pytestmark = pytest.mark.usefixtures("one_thread")

DIM, K = 8, 32
LAYOUTS = {
    "sequence": ({}, (2, 7, DIM)),
    "channel_first_sequence": ({"channel_last": False}, (2, DIM, 7)),
    "one_token": ({}, (3, DIM)),
    "image_fmap": ({"accept_image_fmap": True}, (2, DIM, 5, 6)),
    "3d_fmap": ({"accept_3d_fmap": True}, (2, DIM, 3, 4, 5)),
}


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def check_like_peer(peer_out, ours_out, peer, ours):
    (pq, pi, pl), (oq, oi, ol) = peer_out, ours_out
    assert oq.shape == pq.shape and oq.dtype == pq.dtype
    assert oi.shape == pi.shape and oi.dtype == pi.dtype == torch.int64
    assert ol.shape == pl.shape == () and ol.dtype == pl.dtype
    assert 0 <= int(oi.min()) and int(oi.max()) < ours.codebook_size
    for method in ("get_output_from_indices", "get_codes_from_indices"):
        assert getattr(ours, method)(oi).shape == getattr(peer, method)(pi).shape, method


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_structure_as_vector_quantize_in_training(layout):
    kwargs, shape = LAYOUTS[layout]
    torch.manual_seed(0)
    peer = vqp.VectorQuantize(dim=DIM, codebook_size=K, **kwargs)
    ours = VectorQuantize(DIM, K, seed=0, **kwargs)
    x = randn(*shape).requires_grad_()
    peer_out, ours_out = peer(x), ours(x)
    check_like_peer(peer_out, ours_out, peer, ours)
    # both route the task gradient to the input, and the loss to it too
    for quantized, _, loss in (peer_out, ours_out):
        x.grad = None
        (quantized * randn(*shape, seed=1)).sum().add(loss).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_eval_indices_decode_to_the_quantized_output_as_in_the_peer(layout):
    kwargs, shape = LAYOUTS[layout]
    torch.manual_seed(0)
    peer = vqp.VectorQuantize(dim=DIM, codebook_size=K, **kwargs).eval()
    ours = VectorQuantize(DIM, K, seed=0, **kwargs).eval()
    x = randn(*shape, seed=2)
    peer_out, ours_out = peer(x), ours(x)
    check_like_peer(peer_out, ours_out, peer, ours)
    assert torch.equal(peer.get_output_from_indices(peer_out[1]), peer_out[0])  # the peer's property ...
    assert torch.equal(ours.get_output_from_indices(ours_out[1]), ours_out[0])  # ... holds for the adapter
    assert torch.equal(ours.get_codes_from_indices(ours_out[1]), ours_out[0])
    # the indices are the wrapped quantizer's codes, and index its codebook
    channel_last = x.movedim(1, -1) if ours._channel_first and x.ndim > 2 else x
    assert torch.equal(ours.quantizer.encode(channel_last), ours_out[1])
    assert ours.codebook.shape == peer.codebook.shape == (K, DIM)
    picked = ours.codebook[ours_out[1]]
    assert torch.equal(picked.movedim(-1, 1) if ours._channel_first and x.ndim > 2 else picked, ours_out[0])


@pytest.mark.parametrize("name", ["vq", "vq_ema", "cvq", "fsq", "lfq", "affine"])
def test_any_registered_quantizer_behind_the_interface(name):
    peer = vqp.VectorQuantize(dim=DIM, codebook_size=K).eval()
    ours = VectorQuantize(DIM, K, quantizer=name, seed=0)
    x = randn(2, 7, DIM, seed=3)
    ours(x)  # one training step (k-means, EMA, ...)
    ours.eval()
    out = ours(x)
    check_like_peer(peer(x), out, peer, ours)
    assert torch.equal(ours.get_output_from_indices(out[1]), out[0])


def test_residual_stages_give_indices_like_residual_vq():
    peer = vqp.ResidualVQ(dim=DIM, codebook_size=K, num_quantizers=3).eval()
    ours = VectorQuantize(DIM, K, quantizer="residual", num_quantizers=3, seed=0).eval()
    x = randn(2, 7, DIM, seed=4)
    (pq, pi, _), (oq, oi, ol) = peer(x), ours(x)
    assert oq.shape == pq.shape and oi.shape == pi.shape == (2, 7, 3) and oi.dtype == pi.dtype
    assert ol.ndim == 0  # one scalar; ResidualVQ returns one loss per stage
    assert ours.get_output_from_indices(oi).shape == peer.get_output_from_indices(pi).shape
    assert torch.equal(ours.get_output_from_indices(oi), oq)


def test_padding_mask_and_lens_like_the_peer():
    torch.manual_seed(0)
    peer = vqp.VectorQuantize(dim=DIM, codebook_size=K).eval()
    ours = VectorQuantize(DIM, K, seed=0).eval()
    x = randn(2, 7, DIM, seed=5)
    lens = torch.tensor([3, 7])
    mask = torch.arange(7) < lens[:, None]
    for keywords in ({"lens": lens}, {"mask": mask}):
        (pq, pi, _), (oq, oi, _) = peer(x, **keywords), ours(x, **keywords)
        assert oq.shape == pq.shape and oi.shape == pi.shape
        assert torch.equal(oi == -1, pi == -1) and torch.equal(oi == -1, ~mask)
        assert (oq[~mask] == 0).all() and (pq[~mask] == 0).all()  # padding: zeros
        # the quantizer saw the valid tokens only: the first sequence's codes are those of its 3 tokens alone
        assert torch.equal(oi[0, :3], ours.quantizer.encode(x[0, :3]))
        assert torch.equal(oq[mask], ours(x[mask])[0])
    # (B, dim, N) with a mask: the peer 1.32.0 builds its mask from x.shape[1] (dim) there and fails;
    # the adapter gives the channel-last result, transposed
    channel_first = VectorQuantize(DIM, K, seed=0, channel_last=False).eval()
    quantized, indices, _ = channel_first(x.transpose(1, 2), lens=lens)
    assert torch.equal(indices, oi) and torch.equal(quantized, oq.transpose(1, 2))


def test_same_structure_as_simvq_of_the_peer():
    for peer_kwargs, ours_kwargs, shape in (
        ({}, {}, (2, 7, DIM)),
        ({"channel_first": True}, {"channel_last": False}, (2, DIM, 5, 6)),
    ):
        torch.manual_seed(0)
        peer = vqp.SimVQ(dim=DIM, codebook_size=K, **peer_kwargs)
        ours = VectorQuantize(DIM, K, seed=0, **ours_kwargs)
        x = randn(*shape, seed=6)
        (pq, pi, pl), (oq, oi, ol) = peer(x), ours(x)
        assert oq.shape == pq.shape and oi.shape == pi.shape and oi.dtype == pi.dtype and ol.shape == pl.shape == ()
        assert ours.get_output_from_indices(oi).shape == peer.indices_to_codes(pi).shape


class SequenceAutoencoder(nn.Module):
    """A model written for vector-quantize-pytorch: its ``vq`` is swapped, nothing else changes."""

    def __init__(self, vq):
        super().__init__()
        self.encoder, self.vq, self.decoder = nn.Linear(4, DIM), vq, nn.Linear(DIM, 4)

    def forward(self, x):
        quantized, indices, commit_loss = self.vq(self.encoder(x))
        return self.decoder(quantized), indices, commit_loss


def test_drop_in_training_loop():
    data = randn(64, 16, 4, seed=7)
    for vq in (vqp.VectorQuantize(dim=DIM, codebook_size=K), VectorQuantize(DIM, K, seed=0)):
        torch.manual_seed(0)
        model = SequenceAutoencoder(vq)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):
            reconstruction, indices, commit_loss = model(data)
            loss = (reconstruction - data).pow(2).mean() + commit_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert indices.shape == (64, 16)
        assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), (type(vq).__module__, losses)


def test_readme_snippet_runs_as_written():
    namespace = run_snippet(VECTOR_QUANTIZE, {"torch": torch})
    assert namespace["quantized"].shape == (1, 1024, 256) and namespace["indices"].shape == (1, 1024)
    assert namespace["commit_loss"].ndim == 0 and namespace["vq"].quantizer.__class__.__name__ == "SimVQ"


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="coefficients"):
        VectorQuantize(DIM, K, quantizer="sc_vae")
    with pytest.raises(ValueError, match="layout"):
        VectorQuantize(DIM, K, channel_first=True)
    with pytest.raises(ValueError, match="exclude"):
        VectorQuantize(DIM, K, accept_image_fmap=True, accept_3d_fmap=True)
    with pytest.raises(ValueError, match=r"\(B, dim, H, W\)"):
        VectorQuantize(DIM, K, accept_image_fmap=True)(randn(2, 7, DIM))
    with pytest.raises(TypeError):
        VectorQuantize(DIM, K, codebook_dim=2)  # simvq has no factorised codes ...
    assert VectorQuantize(DIM, K, codebook_dim=2, quantizer="vq").quantizer.codebook_dim == 2  # ... vq has
    with pytest.raises(TypeError, match="multi-stage"):
        _ = VectorQuantize(DIM, K, quantizer="residual").codebook
