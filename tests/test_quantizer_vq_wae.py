"""VQ-WAE: the contract, and the Sinkhorn solver against a naive dense Sinkhorn written out here."""

import pytest
import torch

from quantizer_references import backward_through_an_encoder, squared_distances
from simvq import build_quantizer
from simvq.quantizers.vq_wae import VQWAE, sinkhorn_potentials, transport_cost

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, CODEBOOK_SIZE = 6, 16


def build(seed=0, **options):
    torch.manual_seed(seed)
    return build_quantizer("vq_wae", dim=DIM, codebook_size=CODEBOOK_SIZE, seed=seed, **options)



def naive_sinkhorn(x, codes, epsilon, iterations):
    """Textbook scaling-form Sinkhorn in float64: u <- a / (K v), v <- b / (K^T u), P = u K v."""
    kernel = torch.exp(-squared_distances(x, codes) / epsilon)
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64)
    b = torch.full((codes.shape[0],), 1.0 / codes.shape[0], dtype=torch.float64)
    v = torch.ones_like(b)
    for _ in range(iterations):
        u = a / (kernel @ v)
        v = b / (kernel.t() @ u)
    return u[:, None] * kernel * v[None, :]


def plan_from_potentials(x, codes, f, g, epsilon):
    return torch.exp((f.double()[:, None] + g.double()[None, :] - squared_distances(x, codes)) / epsilon)


# ----------------------------------------------------------------------------- the solver


@pytest.mark.parametrize("tile_elements", [2**22, 4, 9])  # one cached tile; streamed tiles of 1 and of 9
def test_plan_equals_naive_dense_sinkhorn(tile_elements):
    generator = torch.Generator().manual_seed(0)
    x, codes = torch.randn(5, 3, generator=generator), torch.randn(7, 3, generator=generator)
    epsilon = 0.7
    for iterations in (1, 3, 25):  # the same iterates, not only the same limit
        f, g = sinkhorn_potentials(x, codes, epsilon=epsilon, iterations=iterations, tile_elements=tile_elements)
        expected = naive_sinkhorn(x, codes, epsilon, iterations)
        torch.testing.assert_close(plan_from_potentials(x, codes, f, g, epsilon), expected, rtol=1e-4, atol=1e-7)


def test_plan_marginals_are_uniform():
    generator = torch.Generator().manual_seed(1)
    x, codes = torch.randn(40, 4, generator=generator), torch.randn(12, 4, generator=generator) + 1.0
    epsilon = 0.1 * float(squared_distances(x, codes).mean())
    f, g = sinkhorn_potentials(x, codes, epsilon=epsilon, iterations=200, tile_elements=64)
    plan = plan_from_potentials(x, codes, f, g, epsilon)
    torch.testing.assert_close(plan.sum(0), torch.full((12,), 1 / 12, dtype=torch.float64), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(plan.sum(1), torch.full((40,), 1 / 40, dtype=torch.float64), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("tile_elements", [2**22, 8])
def test_transport_cost_value_and_gradient_are_those_of_the_fixed_plan(tile_elements):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(9, 3, generator=generator, requires_grad=True)
    codes = torch.randn(6, 3, generator=generator, requires_grad=True)
    epsilon, iterations = 0.5, 30
    cost = transport_cost(x, codes, epsilon=epsilon, iterations=iterations, tile_elements=tile_elements)
    grad_x, grad_codes = torch.autograd.grad(cost, (x, codes))

    plan = naive_sinkhorn(x.detach(), codes.detach(), epsilon, iterations)  # held fixed
    x64, codes64 = x.detach().double().requires_grad_(), codes.detach().double().requires_grad_()
    reference = (plan * (x64[:, None, :] - codes64[None, :, :]).pow(2).sum(-1)).sum()
    expected_x, expected_codes = torch.autograd.grad(reference, (x64, codes64))
    torch.testing.assert_close(cost.double(), reference.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_x.double(), expected_x, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(grad_codes.double(), expected_codes, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- the quantizer


def test_codes_are_the_nearest_codes_and_decode_equals_forward():
    quantizer = build()
    z = torch.randn(4, 5, DIM)
    for training in (True, False):
        quantizer.train(training)
        out = quantizer(z)
        expected = squared_distances(z.reshape(-1, DIM), quantizer.embedding.detach()).argmin(1).reshape(4, 5)
        assert out.codes.dtype == torch.int64 and torch.equal(out.codes, expected)
        torch.testing.assert_close(quantizer.decode(out.codes), out.quantized, rtol=1e-6, atol=1e-6)
        assert torch.equal(quantizer.encode(z), out.codes)
    assert not out.losses  # eval mode: no transport is solved


def test_gradients_reach_the_encoder_and_every_code():
    quantizer = build()
    out = backward_through_an_encoder(quantizer, DIM, count=64)
    assert set(out.losses) == {"commitment", "wasserstein"}
    # the transport gives every code mass, so every code moves, used or not (a VQ codebook
    # loss would move only the codes this batch selected)
    per_code = quantizer.embedding.grad.abs().sum(1)
    assert torch.isfinite(per_code).all() and bool((per_code > 0).all())
    assert out.codes.unique().numel() < CODEBOOK_SIZE  # ... including unselected ones


def test_subsampled_transport_moves_only_the_drawn_codes():
    quantizer = build(max_transport_codes=4)
    out = quantizer(torch.randn(64, DIM))
    out.losses["wasserstein"].backward()
    assert int((quantizer.embedding.grad.abs().sum(1) > 0).sum()) == 4


def test_transport_spreads_codes_over_the_data_where_the_vq_codebook_loss_collapses():
    # codes start far from the data; the VQ codebook loss only ever moves the single nearest
    # code, the transport term moves all of them onto the data
    generator = torch.Generator().manual_seed(3)
    data = torch.randn(256, 2, generator=generator)
    usage = {}
    for loss_name in ("codebook", "wasserstein"):
        quantizer = build_quantizer("vq_wae", dim=2, codebook_size=16, seed=0, beta=0.0)
        with torch.no_grad():
            quantizer.embedding.mul_(0.1).add_(torch.tensor([4.0, 4.0]))
        optimizer = torch.optim.Adam(quantizer.parameters(), lr=0.2)
        for _ in range(60):
            out = quantizer(data)
            loss = out.losses["wasserstein"] if loss_name == "wasserstein" else (quantizer.embedding[out.codes] - data).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        quantizer.eval()
        usage[loss_name] = quantizer(data).codes.unique().numel() / 16
    assert usage["codebook"] <= 0.25 and usage["wasserstein"] >= 0.9, usage


def test_state_dict_round_trip_and_channel_first():
    quantizer = build().eval()
    clone = build(seed=5).eval()
    clone.load_state_dict(quantizer.state_dict())
    z = torch.randn(2, DIM, 3, 4)
    first = build(channel_first=True).eval()
    first.load_state_dict(quantizer.state_dict())
    torch.testing.assert_close(clone(z.movedim(1, -1)).quantized, quantizer(z.movedim(1, -1)).quantized)
    torch.testing.assert_close(first(z).quantized.movedim(1, -1), quantizer(z.movedim(1, -1)).quantized)


@pytest.mark.parametrize(
    "option, value",
    [("epsilon", 0.0), ("iterations", 0), ("max_transport_codes", 1), ("wasserstein_weight", -1.0),
     ("tile_elements", 0), ("beta", -0.1), ("init_scale", 0.0)],
)
def test_invalid_options_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        VQWAE(DIM, CODEBOOK_SIZE, **{option: value})
