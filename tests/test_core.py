"""Core: search against brute force, SimVQ's gradients, decode, caching, state round trip, errors."""

import pytest
import torch

from simvq import SimVQ, build_quantizer, list_quantizers, nearest
from simvq.quantizers.base import straight_through


def brute_force(x, codebook):
    distances = torch.cdist(x.double(), codebook.double()).pow(2)
    return distances.argmin(1), distances.min(1).values


# ----------------------------------------------------------------------------- search


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_nearest_matches_brute_force(chunk_size, dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator).to(dtype)
    codebook = torch.randn(257, 16, generator=generator).to(dtype)
    indices, distances = nearest(x, codebook, chunk_size=chunk_size)
    ref_indices, ref_distances = brute_force(x.float(), codebook.float())
    assert indices.dtype == torch.int64 and distances.dtype == torch.float32
    assert indices.shape == (300,) and distances.shape == (300,)
    # ties aside: where the index differs, the distance must be equal to the reference's
    mismatch = indices != ref_indices
    assert mismatch.float().mean() < 0.01
    torch.testing.assert_close(distances.double(), ref_distances, rtol=1e-4, atol=1e-4)


SCREEN_CASES = {
    "random": lambda g: (torch.randn(700, 64, generator=g) * 3, torch.randn(5000, 64, generator=g) * 0.1),
    "near_codes": lambda g: _near_codes(g, 700, 4500, 32, noise=0.01),
    "near_ties": lambda g: _near_codes(g, 600, 4097, 16, noise=1e-4),
    "tiny_scale": lambda g: (torch.randn(500, 24, generator=g) * 1e-6, torch.randn(4200, 24, generator=g) * 1e-6),
    "huge_scale": lambda g: (torch.randn(500, 8, generator=g) * 1e6, torch.randn(4100, 8, generator=g) * 1e5),
    "duplicate_codes": lambda g: (torch.randn(400, 16, generator=g), torch.randn(64, 16, generator=g).repeat(70, 1)),
}


def _near_codes(generator, num_tokens, num_codes, dim, noise):
    codebook = torch.randn(num_codes, dim, generator=generator)
    picks = torch.randint(0, num_codes, (num_tokens,), generator=generator)
    return codebook[picks] + noise * torch.randn(num_tokens, dim, generator=generator), codebook


@pytest.mark.parametrize("case", sorted(SCREEN_CASES))
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_screened_search_equals_fp32_search(case, chunk_size):
    """The bf16 screen must never change the float32 answer: its pruning rests on an error bound."""
    x, codebook = SCREEN_CASES[case](torch.Generator().manual_seed(3))
    exact, exact_distances = nearest(x, codebook, chunk_size=chunk_size, method="fp32")
    screened, screened_distances = nearest(x, codebook, chunk_size=chunk_size, method="screened")
    ref, _ = brute_force(x, codebook)
    same = screened == exact
    # ties aside: a differing index must be at the same float32 distance
    torch.testing.assert_close(screened_distances[~same], exact_distances[~same], rtol=1e-6, atol=0)
    if case != "duplicate_codes":
        assert same.float().mean() > 0.999
        assert (exact == ref).float().mean() > 0.99


@pytest.mark.parametrize("case", sorted(SCREEN_CASES))
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_accelerator_search_path_equals_the_cpu_path(case, chunk_size, monkeypatch):
    """The sync-free path GPUs take (large tiles, running minimum by ``torch.where``), run on CPU
    with tiles small enough to walk several token blocks and code chunks."""
    from simvq import search

    monkeypatch.setattr(search, "DEVICE_TILE_ELEMENTS", 100_000)
    x, codebook = SCREEN_CASES[case](torch.Generator().manual_seed(3))
    expected, _ = nearest(x, codebook, chunk_size=chunk_size, method="fp32")
    got = search._search_fp32_device(x.float(), codebook.float(), chunk_size)
    assert torch.equal(got, expected)


def test_nearest_method_argument():
    with pytest.raises(ValueError, match="method must be one of"):
        nearest(torch.randn(3, 3), torch.randn(4, 3), method="approx")


def test_nearest_many_token_tiles():
    # more tokens than one token tile holds at chunk_size=4096 (2M / 4096 = 512 tokens per tile)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1500, 8, generator=generator)
    codebook = torch.randn(5000, 8, generator=generator)
    indices, _ = nearest(x, codebook, chunk_size=4096)
    ref_indices, _ = brute_force(x, codebook)
    assert (indices == ref_indices).float().mean() > 0.999


def test_nearest_is_fp32_under_autocast():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(200, 32, generator=generator)
    # codes so close together that bf16 distances could not tell them apart (fp32 can)
    base = torch.randn(1, 32, generator=generator)
    codebook = base + 0.05 * torch.randn(64, 32, generator=generator)
    x = base + 0.05 * x
    ref_indices, _ = brute_force(x, codebook)
    bf16_scores = (codebook.bfloat16().pow(2).sum(1) - 2 * x.bfloat16() @ codebook.bfloat16().T)
    assert (bf16_scores.argmin(1) == ref_indices).float().mean() < 0.9  # the case is hard in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices, distances = nearest(x, codebook)
    assert distances.dtype == torch.float32
    assert (indices == ref_indices).float().mean() > 0.99


def test_nearest_rejects_bad_shapes():
    with pytest.raises(ValueError, match="x must have shape"):
        nearest(torch.randn(3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="share dim"):
        nearest(torch.randn(3, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        nearest(torch.randn(3, 3), torch.randn(4, 3), chunk_size=0)


# ----------------------------------------------------------------------------- SimVQ


def make(dim=16, codebook_size=64, **kw):
    return SimVQ(dim, codebook_size, seed=0, **kw)


def test_forward_shapes_and_codes():
    quantizer = make()
    z = torch.randn(2, 5, 3, 16)
    out = quantizer(z)
    assert out.quantized.shape == z.shape
    assert out.codes.shape == (2, 5, 3) and out.codes.dtype == torch.int64
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < 64
    assert out.loss.ndim == 0
    assert set(out.losses) == {"commitment", "codebook"}
    torch.testing.assert_close(out.loss, out.losses["commitment"] + out.losses["codebook"])
    # codes are the argmin against the effective codebook W(C), not against C
    effective = quantizer.proj(quantizer.basis)
    ref, _ = brute_force(z.reshape(-1, 16), effective.detach())
    assert torch.equal(out.codes.reshape(-1), ref)


def test_loss_values_match_definition():
    quantizer = make(beta=0.25)
    z = torch.randn(10, 16)
    out = quantizer(z)
    q = quantizer.proj(quantizer.basis)[out.codes]
    mse = (z - q).pow(2).mean()
    torch.testing.assert_close(out.losses["commitment"], 0.25 * mse)
    torch.testing.assert_close(out.losses["codebook"], mse)


def test_metrics_usage_and_perplexity():
    quantizer = make(codebook_size=8)
    out = quantizer(torch.randn(50, 16))
    counts = torch.bincount(out.codes, minlength=8).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    assert out.metrics["usage"].item() == pytest.approx((counts > 0).double().mean().item())
    assert out.metrics["perplexity"].item() == pytest.approx(entropy.exp().item(), rel=1e-5)


def test_gradients_reach_z_and_w_but_not_c():
    quantizer = make()
    basis_before = quantizer.basis.clone()
    z = torch.randn(4, 7, 16, requires_grad=True)
    out = quantizer(z)
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert quantizer.proj.weight.grad is not None and quantizer.proj.weight.grad.abs().sum() > 0
    assert quantizer.proj.bias.grad is not None
    assert not quantizer.basis.requires_grad and quantizer.basis.grad is None
    assert "basis" not in dict(quantizer.named_parameters())
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.5)
    optimizer.step()
    assert torch.equal(quantizer.basis, basis_before)


def test_straight_through_gradient_is_identity():
    quantizer = make()
    z = torch.randn(6, 16, requires_grad=True)
    out = quantizer(z)
    upstream = torch.randn_like(z)
    (out.quantized * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)


def test_quantized_forward_value_is_the_code():
    quantizer = make()
    z = torch.randn(6, 16)
    out = quantizer(z)
    torch.testing.assert_close(out.quantized, quantizer.proj(quantizer.basis)[out.codes], rtol=1e-5, atol=1e-5)


def test_rotation_trick_forward_value_and_rotated_gradient():
    quantizer = make(rotation_trick=True)
    z = torch.randn(6, 16, requires_grad=True)
    out = quantizer(z)
    q = quantizer.proj(quantizer.basis)[out.codes].detach()
    torch.testing.assert_close(out.quantized, q, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(z)
    (out.quantized * upstream).sum().backward()
    # gradient = lambda * R^T upstream: its norm is |q|/|z| * |upstream|, not |upstream|
    expected_norm = (q.norm(dim=-1) / z.detach().norm(dim=-1)) * upstream.norm(dim=-1)
    torch.testing.assert_close(z.grad.norm(dim=-1), expected_norm, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(z.grad, upstream)


def test_straight_through_rotation_maps_z_direction_onto_q():
    z = torch.randn(5, 8)
    q = torch.randn(5, 8)
    out = straight_through(z, q, rotation_trick=True)
    torch.testing.assert_close(out, q)


def test_decode_of_encode_equals_forward():
    quantizer = make()
    z = torch.randn(3, 4, 16)
    out = quantizer(z)
    codes = quantizer.encode(z)
    assert torch.equal(codes, out.codes)
    torch.testing.assert_close(quantizer.decode(codes), out.quantized.detach())


def test_decode_goes_through_w():
    quantizer = make()
    with torch.no_grad():
        quantizer.proj.weight.mul_(3.0)
    codes = torch.tensor([0, 5, 63])
    torch.testing.assert_close(quantizer.decode(codes), quantizer.proj(quantizer.basis)[codes].detach())
    assert not torch.allclose(quantizer.decode(codes), quantizer.basis[codes])


def test_channel_first_layout():
    quantizer = make(channel_first=True)
    z = torch.randn(2, 16, 5, 6)
    out = quantizer(z)
    assert out.quantized.shape == z.shape and out.codes.shape == (2, 5, 6)
    channel_last = make()
    ref = channel_last(z.permute(0, 2, 3, 1))
    assert torch.equal(out.codes, ref.codes)
    torch.testing.assert_close(out.quantized, ref.quantized.permute(0, 3, 1, 2))
    assert quantizer.decode(out.codes).shape == z.shape


def test_eval_cache_matches_train_and_invalidates():
    quantizer = make()
    z = torch.randn(40, 16)
    train_out = quantizer(z)
    quantizer.eval()
    eval_out = quantizer(z)
    assert torch.equal(eval_out.codes, train_out.codes)
    torch.testing.assert_close(eval_out.quantized, train_out.quantized)
    cached = quantizer.codebook()
    assert quantizer.codebook() is cached  # cached, not recomputed
    with torch.no_grad():
        quantizer.proj.weight.add_(0.1)
    fresh = quantizer.codebook()
    assert fresh is not cached
    torch.testing.assert_close(fresh, quantizer.proj(quantizer.basis).detach())
    quantizer.load_state_dict(make().state_dict())
    torch.testing.assert_close(quantizer.codebook(), make().proj(make().basis).detach())


def test_state_dict_round_trip_reproduces_codes():
    quantizer = SimVQ(16, 128)  # unseeded basis: it must travel in the state dict
    with torch.no_grad():
        quantizer.proj.weight.normal_()
    z = torch.randn(100, 16)
    codes = quantizer.encode(z)
    clone = SimVQ(16, 128)
    clone.load_state_dict(quantizer.state_dict())
    assert torch.equal(clone.encode(z), codes)


def test_seed_reproduces_basis():
    assert torch.equal(SimVQ(8, 32, seed=3).basis, SimVQ(8, 32, seed=3).basis)
    assert not torch.equal(SimVQ(8, 32, seed=3).basis, SimVQ(8, 32, seed=4).basis)
    basis = SimVQ(64, 4096, seed=0).basis
    assert basis.std().item() == pytest.approx(64**-0.5, rel=0.05)


@pytest.mark.parametrize("init", ["gaussian", "uniform", "orthogonal"])
def test_basis_inits_have_unit_scale_rows(init):
    basis = SimVQ(32, 256, seed=0, init=init).basis
    assert basis.pow(2).sum(1).mean().item() == pytest.approx(1.0, rel=0.15)


def test_train_codebook_ablation_trains_c():
    quantizer = make(train_codebook=True)
    assert "basis" in dict(quantizer.named_parameters())
    out = quantizer(torch.randn(10, 16))
    out.loss.backward()
    assert quantizer.basis.grad is not None and quantizer.basis.grad.abs().sum() > 0


def test_bias_option():
    assert make(bias=False).proj.bias is None
    assert make().proj.bias is not None


def test_bf16_autocast_forward_distances_in_fp32():
    quantizer = make()
    z = torch.randn(30, 16)
    ref = quantizer(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(z)
    assert torch.equal(out.codes, ref.codes)
    assert out.loss.dtype == torch.float32


def test_float64_module_and_input():
    quantizer = make().double()
    z = torch.randn(30, 16, dtype=torch.float64)
    out = quantizer(z)
    assert out.quantized.dtype == torch.float64
    assert torch.equal(out.codes, quantizer.encode(z))


def test_bf16_input():
    quantizer = make()
    z = torch.randn(30, 16).bfloat16()
    out = quantizer(z)
    assert out.quantized.dtype == torch.bfloat16
    assert torch.equal(out.codes, quantizer.encode(z.float()))


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    quantizer = make()
    with pytest.raises(ValueError, match="z must have 16 channels"):
        quantizer(torch.randn(4, 15))
    with pytest.raises(TypeError, match="z must be a floating-point"):
        quantizer(torch.ones(4, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantizer(torch.full((4, 16), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantizer(torch.full((4, 16), float("inf")))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        quantizer(torch.randn(16))
    with pytest.raises(ValueError, match="empty"):
        quantizer(torch.randn(0, 16))
    with pytest.raises(ValueError, match="codebook_size must be an integer >= 2"):
        SimVQ(16, 1)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        SimVQ(0, 16)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 63\]"):
        quantizer.decode(torch.tensor([0, 64]))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 63\]"):
        quantizer.decode(torch.tensor([-1]))
    with pytest.raises(TypeError, match="codes must be an integer tensor"):
        quantizer.decode(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="init must be one of"):
        SimVQ(4, 8, init="zeros")
    with pytest.raises(ValueError, match="channels in its second dimension"):
        make(channel_first=True)(torch.randn(2, 5, 16))


# ----------------------------------------------------------------------------- registry


def test_registry_builds_simvq():
    assert "simvq" in list_quantizers()
    quantizer = build_quantizer("simvq", dim=8, codebook_size=32)
    assert isinstance(quantizer, SimVQ) and quantizer.codebook_size == 32
    with pytest.raises(ValueError, match="unknown quantizer 'nope'"):
        build_quantizer("nope", dim=8, codebook_size=32)


# ----------------------------------------------------------------------------- collapse picture


def _train_toy(quantizer, steps=300, seed=0):
    """Tiny autoencoder on uniform 8-D data; returns final usage over a held-out batch."""
    torch.manual_seed(seed)
    encoder = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.GELU(), torch.nn.Linear(64, 16))
    decoder = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    params = [*encoder.parameters(), *decoder.parameters(), *quantizer.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for _ in range(steps):
        x = torch.rand(256, 8) * 2 - 1
        out = quantizer(encoder(x))
        loss = (decoder(out.quantized) - x).pow(2).mean() + out.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        codes = quantizer.encode(encoder(torch.rand(8192, 8) * 2 - 1))
    return torch.unique(codes).numel() / quantizer.codebook_size


def test_simvq_usage_rises_where_plain_codebook_collapses():
    """Same net, same seed, K=1024: SimVQ (W learned, C frozen) against the same module with the
    roles swapped (C learned, W frozen), which is plain VQ by SGD seen through a fixed linear map.
    Only the codes that are selected get gradients there, so most of the codebook dies."""
    simvq_usage = _train_toy(SimVQ(16, 1024, seed=0))
    plain = SimVQ(16, 1024, seed=0, train_codebook=True)
    plain.proj.requires_grad_(False)
    plain_usage = _train_toy(plain)
    assert simvq_usage > 0.45
    assert simvq_usage > 3 * plain_usage
