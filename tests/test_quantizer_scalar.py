"""Implicit-codebook quantizers: FSQ (scalar grid) and LFQ (sign bits), against an enumerated
codebook and a hand-written softmax."""

import itertools
import math

import numpy as np
import pytest
import torch

import simvq.quantizers.lfq as lfq_module
from simvq import build_quantizer
from simvq.quantizers.fsq import FSQ, RECOMMENDED_LEVELS, eps_domain, levels_for
from simvq.quantizers.lfq import LFQ
from simvq.search import max_abs_value

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


def rounded_extremes(levels, eps):
    """Reference, written out in numpy float32 (torch's arithmetic: the Python float ``1 + eps``
    rounded to float32, products rounded, ``round`` half to even): the level index the largest and
    the least bounded value of each channel rounds to, i.e. at ``tanh = +1`` and ``-1``."""
    levels_int = np.array(levels)
    half_width = (levels_int.astype(np.float32) - np.float32(1)) * np.float32(1 + eps) / np.float32(2)
    offset = np.where(levels_int % 2 == 0, np.float32(0.5), np.float32(0.0))
    return np.round(half_width - offset) + levels_int // 2, np.round(-half_width - offset) + levels_int // 2


def on_grid(levels, eps) -> bool:
    top, bottom = rounded_extremes(levels, eps)
    return bool((top <= np.array(levels) - 1).all() and (bottom >= 0).all())


@pytest.mark.parametrize("levels", [[2], [3], [4, 4], [5, 5, 5], [8, 5, 5, 5], [8, 6, 5], [7, 5, 5, 5, 5], [2, 3], [16]])
def test_fsq_eps_domain_ends_exactly_where_rounding_leaves_the_grid(levels):
    """The largest ``eps`` accepted is ``1 / (L - 1)`` (L the largest level) up to float32 rounding
    of ``1 + eps``,
    the reference keeps every channel on its grid there and not one float64 step above, and the
    constructor accepts the one and refuses the other naming ``eps``."""
    least, largest = eps_domain(levels)
    assert largest == pytest.approx(1 / (max(levels) - 1), abs=2**-21)  # 2 float32 steps of 1 + eps
    assert on_grid(levels, largest) and not on_grid(levels, math.nextafter(largest, 1.0))
    FSQ(len(levels), levels=levels, eps=largest)
    with pytest.raises(ValueError, match=r"^eps must be a finite number in .* round off the grid of the largest level"):
        FSQ(len(levels), levels=levels, eps=math.nextafter(largest, 1.0))
    with pytest.raises(ValueError, match="^eps must"):
        FSQ(len(levels), levels=levels, eps=1.0)  # accepted before: codes off the grid
    if 2 not in levels:
        assert least == 0.0
        return
    # a level of 2 at eps = 0: the bound's shift is atanh(0.5 / 0.5) = inf and every value lands on
    # one level; the least eps is where 1 + eps first rounds above 1 in float32 (2**-24 and a bit)
    assert np.float32(1 + least) > 1 and np.float32(1 + math.nextafter(least, 0.0)) == 1
    FSQ(len(levels), levels=levels, eps=least)
    with pytest.raises(ValueError, match="a level of 2 needs 1 \\+ eps > 1"):
        FSQ(len(levels), levels=levels, eps=0.0)


@pytest.mark.parametrize("levels", [[3], [4, 4], [5, 5, 5], [8, 5, 5, 5], [2, 3]])
@pytest.mark.parametrize("projected", [False, True])
def test_fsq_at_the_largest_eps_extreme_inputs_stay_on_the_grid_and_decode_to_the_forward(levels, projected):
    """At the bound of ``eps`` the saturated channels round to the outermost levels and no further:
    codes in range, every channel's index in ``0 .. L - 1``, ``decode(encode(z))`` equal to the
    forward's output. (Above the bound, ``eps=0.3`` with levels ``[5, 5]``, code 30 came out of a
    25-code grid.)"""
    eps = eps_domain(levels)[1]
    dim = len(levels) + (3 if projected else 0)
    quantizer = FSQ(dim, levels=levels, eps=eps, seed=0)
    generator = torch.Generator().manual_seed(0)
    limit = np.float32(max_abs_value(dim))
    limit = float(limit) if float(limit) <= max_abs_value(dim) else float(np.nextafter(limit, np.float32(0)))  # a float32
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=dim)))
    z = torch.cat([
        signs * limit,  # the largest accepted inputs, every sign pattern: each channel saturates both ways
        signs * 20.0,  # saturated (tanh(20) == 1 in float32) but small
        (torch.randn(256, dim, generator=generator) * 10.0 ** torch.randint(-3, 18, (256, 1), generator=generator)).clamp(-limit, limit),
    ])
    for training in (True, False):
        out = quantizer.train(training)(z)
        assert 0 <= int(out.codes.min()) and int(out.codes.max()) < quantizer.codebook_size
        indices = (out.codes[:, None] // quantizer._radix) % quantizer._levels
        rounded = quantizer.bound(quantizer.project_in(z) if projected else z).round()
        torch.testing.assert_close(rounded + quantizer._half(), indices.float(), rtol=0, atol=0)
        assert torch.equal(quantizer.encode(z), out.codes)
        assert torch.equal(quantizer.decode(quantizer.encode(z)), out.quantized.detach())
    if not projected:  # both outermost levels of every channel are reached
        for channel, level in enumerate(levels):
            assert set(indices[:, channel].tolist()) >= {0, level - 1}


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


def test_lfq_grouped_entropy_sums_each_groups_exact_marginal(monkeypatch):
    """Groups of at most GROUP_MAX_BITS bits (2 here: 5 bits -> 3 + 2): the batch entropy is the sum
    of each group's marginal entropy of the exact batch-mean distribution over all 32 codes, between
    the exact joint entropy and the one-bit bound."""
    monkeypatch.setattr(lfq_module, "GROUP_MAX_BITS", 2)
    z = torch.randn(11, 5, generator=torch.Generator().manual_seed(3))
    grouped = LFQ(5, 32, temperature=1.0, entropy_mode="grouped")
    assert grouped.entropy_groups() == [2, 2, 1]
    _, batch = grouped.entropy_terms(z)
    _, _, codebook = lfq_reference_losses(z, temperature=1.0, entropy_weight=1.0, diversity_gamma=1.0, beta=0.0)
    joint = torch.softmax(-torch.cdist(z.double(), codebook).pow(2), dim=1).mean(0)  # over the 32 codes
    bits = (codebook > 0).long()
    expected = 0.0
    for first, width in ((0, 2), (2, 2), (4, 1)):
        value = (bits[:, first : first + width] * 2 ** torch.arange(width - 1, -1, -1)).sum(1)
        marginal = torch.zeros(2**width, dtype=torch.float64).index_add_(0, value, joint)
        expected += -(marginal * marginal.log()).sum()
    torch.testing.assert_close(batch.double(), expected, rtol=1e-5, atol=1e-6)
    _, exact = LFQ(5, 32, temperature=1.0, entropy_mode="exact").entropy_terms(z)
    _, factorized = LFQ(5, 32, temperature=1.0, entropy_mode="factorized").entropy_terms(z)
    assert exact - 1e-6 <= batch <= factorized + 1e-6


def test_lfq_auto_entropy_is_exact_to_4096_codes_then_balanced_groups():
    assert LFQ(12, 4096).entropy_groups() == [12]
    assert LFQ(13, 8192).entropy_groups() == [7, 6]
    assert LFQ(16, 65536).entropy_groups() == [8, 8]
    assert LFQ(18, 2**18).entropy_groups() == [9, 9]


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
