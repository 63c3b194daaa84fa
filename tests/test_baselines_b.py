"""Implicit-codebook and compositional baselines: FSQ, LFQ, SQ-VAE, residual, residual SimVQ.

Shared contract per quantizer, then each method's defining behaviour against an independent
computation (an enumerated codebook, a hand-written softmax, brute-force distances).
"""

import itertools
import math

import pytest
import torch

from simvq import build_quantizer
from simvq.quantizers import sqvae as sqvae_module
from simvq.quantizers.fsq import FSQ, RECOMMENDED_LEVELS, levels_for
from simvq.quantizers.lfq import LFQ
from simvq.quantizers.residual import ResidualQuantizer, ResidualSimVQ
from simvq.quantizers.sqvae import SQVAE

NAMES = ["fsq", "lfq", "sqvae", "residual", "residual_simvq"]
DIM, CODEBOOK_SIZE = 8, 16


def build(name, seed=0, **options):
    torch.manual_seed(seed)
    quantizer = build_quantizer(name, dim=DIM, codebook_size=CODEBOOK_SIZE, **options)
    if name == "sqvae":
        quantizer.eval()  # training-mode SQ-VAE is stochastic and outputs the relaxed sample
    return quantizer


def brute_force_nearest(x, codebook):
    return torch.cdist(x.double(), codebook.double()).argmin(1)


# ----------------------------------------------------------------------------- shared contract


@pytest.mark.parametrize("name", NAMES)
def test_codes_in_range_and_shape(name):
    quantizer = build(name)
    out = quantizer(torch.randn(3, 5, DIM))
    expected_shape = (3, 5, quantizer.num_quantizers) if quantizer.code_ndim else (3, 5)
    assert out.codes.shape == expected_shape and out.codes.dtype == torch.int64
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < quantizer.codebook_size
    assert out.quantized.shape == (3, 5, DIM)
    torch.testing.assert_close(out.loss, sum(out.losses.values()) if out.losses else torch.tensor(0.0))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_encoder_side(name):
    quantizer = build(name)
    if name == "sqvae":
        quantizer.train()
    encoder = torch.nn.Linear(4, DIM)
    out = quantizer(encoder(torch.randn(32, 4)))
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert encoder.weight.grad is not None
    assert torch.isfinite(encoder.weight.grad).all() and encoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_decode_of_codes_equals_forward_quantized(name):
    quantizer = build(name)
    z = torch.randn(4, 6, DIM)
    out = quantizer(z)
    torch.testing.assert_close(quantizer.decode(out.codes), out.quantized, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_encode_equals_forward_codes(name):
    quantizer = build(name)
    z = torch.randn(4, 6, DIM)
    assert torch.equal(quantizer.encode(z), quantizer(z).codes)


@pytest.mark.parametrize("name", NAMES)
def test_channel_first_matches_channel_last(name):
    last = build(name)
    first = build(name, channel_first=True)
    z = torch.randn(2, DIM, 3, 5)  # (B, D, H, W)
    out_first = first(z)
    out_last = last(z.permute(0, 2, 3, 1))
    assert torch.equal(out_first.codes, out_last.codes)
    torch.testing.assert_close(out_first.quantized, out_last.quantized.permute(0, 3, 1, 2))
    assert torch.equal(first.encode(z), out_first.codes)
    torch.testing.assert_close(first.decode(out_first.codes), out_first.quantized, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_rejected(name):
    quantizer = build(name)
    with pytest.raises(ValueError, match="channels"):
        quantizer(torch.randn(4, DIM + 1))
    with pytest.raises(ValueError, match="codes must lie"):
        shape = (2, quantizer.num_quantizers) if quantizer.code_ndim else (2,)
        quantizer.decode(torch.full(shape, quantizer.codebook_size))


# ----------------------------------------------------------------------------- FSQ


def test_fsq_recommended_levels_and_rule():
    assert levels_for(2**8) == [8, 6, 5] and levels_for(2**10) == [8, 5, 5, 5]
    assert levels_for(2**12) == [7, 5, 5, 5, 5] and levels_for(2**14) == [8, 8, 8, 6, 5]
    assert levels_for(2**16) == [8, 8, 8, 5, 5, 5]
    # the table is approximate: the built quantizer reports prod(levels)
    assert build_quantizer("fsq", dim=32, codebook_size=1024).codebook_size == 1000
    # other powers of two: exact products of 8s and 4s
    for bits in range(1, 20):
        if 2**bits in RECOMMENDED_LEVELS:
            continue
        levels = levels_for(2**bits)
        assert math.prod(levels) == 2**bits and set(levels) <= {2, 4, 8}
    assert levels_for(2**13) == [8, 8, 8, 4, 4]
    with pytest.raises(ValueError, match="levels"):
        FSQ(8, 1000)
    with pytest.raises(ValueError, match="levels"):
        FSQ(8, levels=[5, 1])


@pytest.mark.parametrize("levels", [[3], [8, 5], [4, 3, 5], [8, 6, 5]])
def test_fsq_every_code_is_reached_decodes_distinctly_and_round_trips(levels):
    # dim == len(levels): no projection, so an input hitting each grid point can be built by
    # inverting the bound by hand: z = atanh((k + offset) / half_width) - shift, k the centred level
    quantizer = FSQ(len(levels), levels=levels)
    assert quantizer.codebook_size == math.prod(levels)
    axes = []
    for level in levels:
        half_width = (level - 1) * (1 + quantizer.eps) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        shift = math.atanh(offset / half_width)
        centred = [index - level // 2 for index in range(level)]
        axes.append([math.atanh((k + offset) / half_width) - shift for k in centred])
    # mixed radix, channel 0 least significant: itertools.product varies the LAST axis fastest
    grid_inputs = torch.tensor([list(reversed(p)) for p in itertools.product(*reversed(axes))])
    codes = quantizer.encode(grid_inputs)
    assert torch.equal(codes, torch.arange(quantizer.codebook_size))  # every code, in order
    decoded = quantizer.decode(codes)
    assert torch.unique(decoded, dim=0).shape[0] == quantizer.codebook_size  # distinct vectors
    torch.testing.assert_close(quantizer(grid_inputs).quantized, decoded)
    # code -> grid -> code is the identity
    assert torch.equal(quantizer.grid_to_codes(quantizer.codes_to_grid(codes) * (quantizer._levels // 2)), codes)


def test_fsq_straight_through_gradient_is_identity_through_the_grid():
    quantizer = FSQ(3, levels=[8, 5, 5])
    z = (torch.randn(10, 3) * 0.5).requires_grad_()
    upstream = torch.randn(10, 3)
    (quantizer(z).quantized * upstream).sum().backward()
    # quantized = round_ste(bound(z)) / half: the gradient is bound'(z) / half, rounding ignored
    z_ref = z.detach().requires_grad_()
    (quantizer.bound(z_ref) / quantizer._half() * upstream).sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


# ----------------------------------------------------------------------------- LFQ


def lfq_reference_losses(z, *, temperature, entropy_weight, diversity_gamma, beta):
    """Enumerate the {-1, 1}^n codebook and compute MAGVIT-v2's penalty with a plain softmax."""
    num_bits = z.shape[1]
    codebook = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=num_bits)), dtype=torch.float64)
    probs = torch.softmax(-torch.cdist(z.double(), codebook).pow(2) / temperature, dim=1)
    entropy = lambda p: -(p * p.clamp_min(1e-300).log()).sum(-1)  # noqa: E731
    per_sample = entropy(probs).mean()
    batch = entropy(probs.mean(0))
    commitment = beta * (z.double() - torch.sign(z.double())).pow(2).mean()
    return entropy_weight * (per_sample - diversity_gamma * batch), commitment, codebook


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_lfq_entropy_loss_matches_direct_computation(temperature):
    quantizer = LFQ(4, 16, temperature=temperature, entropy_weight=0.3, diversity_gamma=0.7, beta=0.25)
    assert quantizer._exact_mode()
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    out = quantizer(z)
    entropy_loss, commitment, _ = lfq_reference_losses(
        z, temperature=temperature, entropy_weight=0.3, diversity_gamma=0.7, beta=0.25
    )
    torch.testing.assert_close(out.losses["entropy"].double(), entropy_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.losses["commitment"].double(), commitment, rtol=1e-5, atol=1e-7)


def test_lfq_factorized_entropy_is_the_per_bit_bound():
    z = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    exact = LFQ(4, 16, temperature=1.0, entropy_mode="exact")
    factorized = LFQ(4, 16, temperature=1.0, entropy_mode="factorized")
    per_sample_exact, batch_exact = exact.entropy_terms(z)
    per_sample_fact, batch_fact = factorized.entropy_terms(z)
    torch.testing.assert_close(per_sample_exact, per_sample_fact)  # exact in both modes
    p = torch.sigmoid(4 * z.double()).mean(0)  # P(bit = 1) averaged over the batch
    torch.testing.assert_close(batch_fact.double(), -(p * p.log() + (1 - p) * (1 - p).log()).sum())
    assert batch_fact >= batch_exact - 1e-6  # sum of marginal entropies bounds the joint


def test_lfq_codes_are_the_binary_digits_of_the_sign_pattern():
    quantizer = LFQ(5, 32)
    z = torch.randn(50, 5, generator=torch.Generator().manual_seed(2))
    codes = quantizer(z).codes
    expected = [int("".join("1" if value > 0 else "0" for value in row), 2) for row in z.tolist()]
    assert codes.tolist() == expected
    torch.testing.assert_close(quantizer.decode(codes), torch.where(z > 0, 1.0, -1.0))


def test_lfq_with_projection_and_default_temperature_has_finite_gradients():
    quantizer = LFQ(32, 1024)  # tau = 0.01 saturates the sigmoids in float32
    z = (torch.randn(64, 32) * 3).requires_grad_()
    out = quantizer(z)
    out.loss.backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(quantizer.project_in.weight.grad).all()
    with pytest.raises(ValueError, match="power of two"):
        LFQ(8, 1000)


# ----------------------------------------------------------------------------- SQ-VAE


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
    assert torch.equal(out.codes, brute_force_nearest(z, codebook))


def test_sqvae_train_is_stochastic_eval_is_deterministic_argmin():
    quantizer = SQVAE(DIM, CODEBOOK_SIZE, seed=0)
    z = torch.randn(20, DIM)
    assert not torch.allclose(quantizer(z).quantized, quantizer(z).quantized)
    quantizer.eval()
    first, second = quantizer(z), quantizer(z)
    assert torch.equal(first.quantized, second.quantized)
    expected = brute_force_nearest(z, quantizer.embedding.detach())
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


# ----------------------------------------------------------------------------- residual


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
        expected = brute_force_nearest(residual, codebook)
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


# ----------------------------------------------------------------------------- rotation trick


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


@pytest.mark.parametrize("inner", ["vq", "simvq", "fsq", "lfq", "sqvae"])
def test_residual_over_any_inner_quantizer_keeps_the_contract(inner):
    torch.manual_seed(0)
    quantizer = build_quantizer("residual", dim=DIM, codebook_size=CODEBOOK_SIZE, inner=inner, num_quantizers=3).eval()
    z = torch.randn(5, 7, DIM)
    out = quantizer(z)
    assert out.codes.shape == (5, 7, 3)
    assert torch.equal(quantizer.encode(z), out.codes)
    torch.testing.assert_close(quantizer.decode(out.codes), out.quantized, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_codes_are_the_float32_codes(name):
    quantizer = build(name)
    z = torch.randn(64, DIM).bfloat16()  # what a bf16 encoder hands over
    reference = quantizer(z.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(z)
    assert out.quantized.dtype == torch.bfloat16
    assert torch.equal(out.codes, reference.codes)
    assert out.loss.dtype == torch.float32
