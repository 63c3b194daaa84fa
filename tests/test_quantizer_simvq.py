"""SimVQ (codebook W(C), C frozen) and VQGAN-LC (a frozen feature table + a learned projector):
codes against a brute-force argmin over W(C), losses by definition, gradients, decode through W,
the eval cache, seeds and inits."""

import pytest
import torch

from quantizer_references import brute_force, brute_force_codes, clustered_data, distortion
from simvq import SimVQ, build_quantizer
from simvq.quantizers import LCVQ


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


def test_decode_goes_through_w():
    quantizer = make()
    with torch.no_grad():
        quantizer.proj.weight.mul_(3.0)
    codes = torch.tensor([0, 5, 63])
    torch.testing.assert_close(quantizer.decode(codes), quantizer.proj(quantizer.basis)[codes].detach())
    assert not torch.allclose(quantizer.decode(codes), quantizer.basis[codes])


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


def test_basis_scale_scales_c_and_the_initial_codebook_alone():
    base, scaled = SimVQ(16, 64, seed=2), SimVQ(16, 64, seed=2, basis_scale=10.0)
    assert torch.allclose(scaled.basis, 10 * base.basis) and torch.equal(scaled.proj.weight, base.proj.weight)
    assert torch.allclose(scaled.codebook() - scaled.proj.bias, 10 * (base.codebook() - base.proj.bias), atol=1e-5)  # W(10 C) = 10 W C + b
    for bad in (0, -1.0, float("inf"), True, "2"):
        with pytest.raises((TypeError, ValueError), match="basis_scale"):
            SimVQ(16, 64, basis_scale=bad)
    with pytest.raises((TypeError, ValueError), match="basis_scale"):
        build_quantizer("vq_lc", dim=16, codebook_size=64, basis_scale=2.0)  # VQGAN-LC's frozen features keep their scale


def test_train_codebook_ablation_trains_c():
    quantizer = make(train_codebook=True)
    assert "basis" in dict(quantizer.named_parameters())
    out = quantizer(torch.randn(10, 16))
    out.loss.backward()
    assert quantizer.basis.grad is not None and quantizer.basis.grad.abs().sum() > 0


def test_bias_option():
    assert make(bias=False).proj.bias is None
    assert make().proj.bias is not None


def test_float64_module_and_input():
    quantizer = make().double()
    z = torch.randn(30, 16, dtype=torch.float64)
    out = quantizer(z)
    assert out.quantized.dtype == torch.float64
    assert torch.equal(out.codes, quantizer.encode(z))


def test_registry_builds_simvq():
    quantizer = build_quantizer("simvq", dim=8, codebook_size=32)
    assert isinstance(quantizer, SimVQ) and quantizer.codebook_size == 32


# ----------------------------------------------------------------------------- vq_lc


def test_lc_bad_features_raise_clear_errors():
    with pytest.raises(ValueError, match=r"features must have shape \(codebook_size=16"):
        LCVQ(8, 16, features=torch.randn(15, 4))
    with pytest.raises(TypeError, match="features"):
        LCVQ(8, 16, features=torch.zeros(16, 4, dtype=torch.long))


def test_lc_keeps_the_feature_codebook_frozen_and_trains_only_the_projector():
    features = torch.randn(32, 12, generator=torch.Generator().manual_seed(0))
    quantizer = LCVQ(8, 32, features=features, seed=0)
    assert quantizer.proj.in_features == 12 and quantizer.proj.out_features == 8
    assert {name for name, _ in quantizer.named_parameters()} == {"proj.weight", "proj.bias"}
    torch.testing.assert_close(quantizer.basis, features)
    projector_before = quantizer.proj.weight.clone()
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    z = torch.randn(64, 8)
    for _ in range(3):
        out = quantizer(z)
        optimizer.zero_grad(), out.loss.backward(), optimizer.step()
    torch.testing.assert_close(quantizer.basis, features)
    assert not torch.allclose(quantizer.proj.weight, projector_before)
    out = quantizer(z)
    assert torch.equal(out.codes, brute_force_codes(z, quantizer.proj(features).detach()))


def test_lc_without_features_freezes_kmeans_centres_of_the_first_batch():
    data, _ = clustered_data()
    quantizer = LCVQ(8, 16, seed=0)
    assert not bool(quantizer.features_ready)
    random_distortion = distortion(data, quantizer.basis)
    out = quantizer(data)
    assert bool(quantizer.features_ready)
    # identity projector at start: the codebook is the k-means centres, which fit the clusters
    torch.testing.assert_close(quantizer.codebook(), quantizer.basis)
    assert distortion(data, quantizer.basis) < 0.25 * random_distortion
    assert torch.equal(out.codes, brute_force_codes(data, quantizer.basis))
    centres = quantizer.basis.clone()
    quantizer(torch.randn(64, 8))
    assert torch.equal(quantizer.basis, centres)


def test_lc_table_fills_from_as_many_batches_as_it_takes_with_distinct_data_vectors():
    """64 codes, batches of 20 vectors, each with the same blank vector five times (16 distinct
    vectors a batch): four batches fill the table, every row one of their vectors, the blank one
    once a batch (as k-means would make it one point) and jittered by ~1% of the spread in later
    batches (an exact copy would tie with its original and never be picked), all 64 distinct."""
    quantizer = LCVQ(8, 64, seed=0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(20, 8, generator=generator) for _ in range(4)]
    for batch in batches:
        batch[:5] = 0.5
    for i, batch in enumerate(batches[:3]):
        quantizer(batch)
        assert int(quantizer.features_filled) == 16 * (i + 1) and not bool(quantizer.features_ready)
    quantizer(batches[3])
    assert bool(quantizer.features_ready)
    table = quantizer.basis
    assert torch.unique(table, dim=0).shape[0] == 64
    gap = torch.cdist(table, torch.cat(batches)).min(1).values
    assert float(gap.max()) < 0.1 * float(torch.cat(batches).std())
    exact = (table[:, None, :] == torch.cat(batches)[None]).all(-1).any(1)
    moved = table[~exact]  # the blank vector's later batches' copies only
    assert moved.shape[0] == 3
    assert float((moved - 0.5).norm(dim=1).max()) < 0.1 * float(torch.cat(batches).std())
    before = table.clone()
    quantizer(torch.randn(20, 8))
    assert torch.equal(quantizer.basis, before)  # full: no more writes


def test_lc_loads_a_checkpoint_that_kept_a_ready_flag():
    trained = LCVQ(8, 16, seed=0)
    trained(torch.randn(40, 8))
    state = trained.state_dict()
    state["features_ready"] = torch.tensor(True)
    del state["features_filled"]
    fresh = LCVQ(8, 16, seed=1)
    fresh.load_state_dict(state)
    assert bool(fresh.features_ready) and torch.equal(fresh.basis, trained.basis)


@pytest.mark.parametrize("num_codes", [5, 200])  # fewer codes than K: W applied to the rows; more: to the whole table
def test_gradient_through_decode_equals_the_gradient_through_the_full_table(num_codes):
    quantizer = make()
    codes = torch.randint(0, 64, (num_codes,), generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(num_codes, 16, generator=torch.Generator().manual_seed(1))
    (quantizer.decode(codes) * upstream).sum().backward()
    # by hand, in float64: W(C) for every code, then the selected rows
    weight = quantizer.proj.weight.detach().double().requires_grad_()
    bias = quantizer.proj.bias.detach().double().requires_grad_()
    full_table = quantizer.basis.double() @ weight.T + bias
    (full_table[codes] * upstream.double()).sum().backward()
    torch.testing.assert_close(quantizer.proj.weight.grad, weight.grad.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(quantizer.proj.bias.grad, bias.grad.float(), rtol=1e-5, atol=1e-6)


def test_gradient_of_the_codebook_loss_to_w_equals_the_hand_computation():
    quantizer = make()
    z = torch.randn(30, 16, generator=torch.Generator().manual_seed(2))
    out = quantizer(z)
    out.losses["codebook"].backward()
    weight = quantizer.proj.weight.detach().double().requires_grad_()
    bias = quantizer.proj.bias.detach().double().requires_grad_()
    q = (quantizer.basis.double() @ weight.T + bias)[out.codes]
    (q - z.double()).pow(2).mean().backward()  # ||sg(z) - W(C)[codes]||^2
    torch.testing.assert_close(quantizer.proj.weight.grad, weight.grad.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(quantizer.proj.bias.grad, bias.grad.float(), rtol=1e-5, atol=1e-6)
