"""QINCo: a zero network is residual quantization; the search against brute force over every candidate."""

import pytest
import torch

from quantizer_references import assert_channel_first_agrees, backward_through_an_encoder
from simvq import build_quantizer
from simvq.quantizers.qinco import QINCo
from simvq.quantizers.residual import ResidualQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, CODEBOOK_SIZE, STAGES = 6, 16, 3


def build(**options):
    options.setdefault("num_quantizers", STAGES)
    options.setdefault("hidden_dim", 16)
    return build_quantizer("qinco", dim=DIM, codebook_size=CODEBOOK_SIZE, seed=0, **options)


def perturb_networks(quantizer, scale=0.3):
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in quantizer.networks.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def residual_with_the_same_codebooks(quantizer):
    reference = build_quantizer("residual", dim=DIM, codebook_size=CODEBOOK_SIZE, num_quantizers=STAGES, seed=3)
    with torch.no_grad():
        for stage, codebook in zip(reference.stages, quantizer.codebooks):
            stage.embedding.copy_(codebook)
    return reference


@pytest.mark.parametrize("candidates", [None, 4])
def test_zero_network_is_plain_residual_quantization(candidates):
    quantizer = build(candidates=candidates)
    reference = residual_with_the_same_codebooks(quantizer)
    z = torch.randn(40, DIM)
    out, expected = quantizer(z), reference(z)
    assert torch.equal(out.codes, expected.codes)
    torch.testing.assert_close(out.quantized, expected.quantized, rtol=1e-5, atol=1e-6)
    perturb_networks(quantizer)  # a trained network changes the codes: the comparison can fail
    assert not torch.equal(quantizer(z).codes, expected.codes)


def brute_force_codes(quantizer, z):
    """Stage by stage, every candidate f_m(C_m[k], x_hat) computed one k at a time, then argmin."""
    reconstruction = torch.zeros_like(z)
    codes = []
    with torch.no_grad():
        for stage in range(STAGES):
            candidates = []
            for k in range(CODEBOOK_SIZE):
                base = quantizer.codebooks[stage, k].expand_as(z)
                candidates.append(base if stage == 0 else quantizer.networks[stage - 1](base, reconstruction))
            candidates = torch.stack(candidates, dim=1)  # (N, K, dim)
            errors = (z[:, None, :] - reconstruction[:, None, :] - candidates).pow(2).sum(-1)
            chosen = errors.argmin(1)
            reconstruction = reconstruction + candidates[torch.arange(z.shape[0]), chosen]
            codes.append(chosen)
    return torch.stack(codes, dim=1), reconstruction


def test_exhaustive_search_is_the_argmin_over_every_implicit_codeword():
    quantizer = build(candidates=None)
    perturb_networks(quantizer)
    z = torch.randn(30, DIM)
    out = quantizer(z)
    codes, reconstruction = brute_force_codes(quantizer, z)
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.quantized, reconstruction, rtol=1e-5, atol=1e-5)


def test_preselection_picks_the_best_of_the_nearest_base_codewords():
    quantizer = build(candidates=5)
    perturb_networks(quantizer)
    z = torch.randn(30, DIM)
    codes = quantizer(z).codes
    reconstruction = torch.zeros_like(z)
    with torch.no_grad():
        for stage in range(STAGES):
            residual = z - reconstruction
            shortlist = torch.cdist(residual.double(), quantizer.codebooks[stage].double()).topk(5, largest=False).indices
            if stage > 0:
                candidates = quantizer.networks[stage - 1](quantizer.codebooks[stage][shortlist], reconstruction[:, None, :])
                best = shortlist.gather(1, (residual[:, None, :] - candidates).pow(2).sum(-1).argmin(1, keepdim=True))[:, 0]
            else:
                best = shortlist[:, 0]
            assert torch.equal(codes[:, stage], best)
            reconstruction = reconstruction + quantizer.codeword(stage, best, reconstruction)


def test_decode_and_encode_match_the_forward():
    quantizer = build()
    perturb_networks(quantizer)
    z = torch.randn(2, 5, DIM)
    for training in (True, False):
        quantizer.train(training)
        out = quantizer(z)
        assert out.codes.shape == (2, 5, STAGES) and out.codes.dtype == torch.int64
        assert int(out.codes.min()) >= 0 and int(out.codes.max()) < CODEBOOK_SIZE
        torch.testing.assert_close(quantizer.decode(out.codes), out.quantized, rtol=1e-5, atol=1e-6)
        assert torch.equal(quantizer.encode(z), out.codes)


def test_gradients_reach_the_encoder_codebooks_and_networks():
    quantizer = build()
    out = backward_through_an_encoder(quantizer, DIM)
    assert set(out.losses) == {"reconstruction", "commitment"}
    assert quantizer.codebooks.grad.abs().sum() > 0
    # from the zero init only the output layers can move first; they must get a gradient
    for network in quantizer.networks:
        assert network.concat.weight.grad.abs().sum() > 0 and network.blocks[-1][-1].weight.grad.abs().sum() > 0


def test_training_the_networks_lowers_the_error_of_the_residual_quantizer_they_started_from():
    generator = torch.Generator().manual_seed(1)
    data = torch.randn(256, DIM, generator=generator)
    quantizer = build(candidates=None)
    optimizer = torch.optim.Adam(quantizer.networks.parameters(), lr=3e-3)  # base codebooks fixed
    before = (quantizer.eval()(data).quantized - data).pow(2).mean()
    quantizer.train()
    for _ in range(40):
        loss = quantizer(data).losses["reconstruction"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = (quantizer.eval()(data).quantized - data).pow(2).mean()
    assert after < 0.95 * before, (before, after)


def test_constructor_conventions_match_residual():
    quantizer = build()
    reference = ResidualQuantizer(DIM, CODEBOOK_SIZE, num_quantizers=STAGES)
    assert quantizer.code_ndim == reference.code_ndim == 1
    assert quantizer.codebook_size == reference.codebook_size == CODEBOOK_SIZE
    assert quantizer.num_quantizers == reference.num_quantizers == STAGES


def test_channel_first_and_state_dict():
    quantizer = build()
    perturb_networks(quantizer)
    assert_channel_first_agrees(quantizer, build(channel_first=True), DIM)


@pytest.mark.parametrize(
    "option, value",
    [("num_quantizers", 0), ("hidden_dim", 0), ("num_blocks", -1), ("candidates", 0), ("beta", -1.0), ("init_scale", 0.0)],
)
def test_invalid_options_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        QINCo(DIM, CODEBOOK_SIZE, **{option: value})
