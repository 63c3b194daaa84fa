"""SC-VAE: sparse codes by LISTA, checked against plain ISTA and the LASSO objective written out here."""

import pytest
import torch

from quantizer_references import assert_channel_first_agrees, backward_through_an_encoder
from simvq import build_quantizer
from simvq.metrics.usage import CodebookUsage
from simvq.quantizers.sc_vae import SCVAE, SparseQuantizerOutput, ista, lasso_objective, overcomplete_dct, soft_threshold

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, CODEBOOK_SIZE = 8, 24


def build(**options):
    torch.manual_seed(0)
    return build_quantizer("sc_vae", dim=DIM, codebook_size=CODEBOOK_SIZE, **options)


def hand_ista(z, dictionary, lam, iterations):
    """ISTA with the textbook names: gradient step on 1/2||z - D^T a||^2, then soft threshold."""
    d = dictionary.double().t()  # (dim, K), atoms as columns
    step = 1.0 / torch.linalg.eigvalsh(d.t() @ d).max()
    a = torch.zeros(d.shape[1], z.shape[0], dtype=torch.float64)
    history = []
    for _ in range(iterations):
        u = a - step * d.t() @ (d @ a - z.double().t())
        a = torch.sign(u) * torch.clamp(u.abs() - lam * step, min=0)
        history.append(a.t().clone())
    return history


def test_ista_matches_the_textbook_form_and_decreases_the_lasso_objective():
    dictionary = overcomplete_dct(DIM, CODEBOOK_SIZE)
    z = torch.randn(10, DIM, generator=torch.Generator().manual_seed(0))
    lam = 0.5
    history = hand_ista(z, dictionary, lam, 40)
    objectives = [lasso_objective(z.double(), dictionary.double(), a, lam) for a in history]
    for before, after in zip(objectives, objectives[1:]):
        assert bool((after <= before + 1e-10).all())  # ISTA with step 1/L is monotone
    assert bool((objectives[-1] < objectives[0] - 1e-3).all())
    torch.testing.assert_close(ista(z, dictionary, lam=lam, iterations=40).double(), history[-1], rtol=1e-4, atol=1e-5)
    sparsity = (history[-1] != 0).float().mean()
    assert 0 < sparsity < 0.5  # sparse, not empty


def test_untrained_lista_is_ista():
    quantizer = build(lam=0.2, iterations=12)
    z = torch.randn(10, DIM)
    torch.testing.assert_close(
        quantizer.lista(z), ista(z, quantizer.dictionary.detach(), lam=0.2, iterations=12), rtol=1e-4, atol=1e-6
    )
    quantizer.log_step_scale.data += 0.5  # a trained step changes the result: the check can fail
    assert not torch.allclose(quantizer.lista(z), ista(z, quantizer.dictionary.detach(), lam=0.2, iterations=12), atol=1e-4)


def test_dct_dictionary_has_unit_mean_free_atoms_that_span_the_latent_space():
    dictionary = overcomplete_dct(DIM, CODEBOOK_SIZE)
    positions = torch.arange(DIM, dtype=torch.float64)
    atom = torch.cos(positions * 5 * torch.pi / CODEBOOK_SIZE)  # atom k = 5 by hand
    atom = atom - atom.mean()
    torch.testing.assert_close(dictionary[5].double(), atom / atom.norm(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dictionary.norm(dim=1), torch.ones(CODEBOOK_SIZE))
    assert torch.linalg.matrix_rank(dictionary) == DIM


def test_codes_are_the_strongest_atoms_and_the_output_their_combination():
    quantizer = build(lam=0.3, num_atoms=3)
    z = torch.randn(2, 5, DIM)
    out = quantizer(z)
    assert isinstance(out, SparseQuantizerOutput)
    assert out.codes.shape == (2, 5, 3) and out.codes.dtype == torch.int64 and out.coefficients.shape == (2, 5, 3)
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < CODEBOOK_SIZE
    alpha = quantizer.lista(z.reshape(-1, DIM)).detach()
    codes, coefficients = out.codes.reshape(-1, 3), out.coefficients.reshape(-1, 3)
    dictionary = quantizer.dictionary.detach()
    for token in range(10):
        active = coefficients[token] != 0
        expected = alpha[token].abs().topk(3).indices
        assert set(codes[token][active].tolist()) == set(expected[alpha[token, expected] != 0].tolist())
        torch.testing.assert_close(coefficients[token][active], alpha[token, codes[token][active]])
        manual = sum(c * dictionary[k] for c, k in zip(coefficients[token].tolist(), codes[token].tolist()))
        torch.testing.assert_close(out.quantized.reshape(-1, DIM)[token], manual, rtol=1e-5, atol=1e-6)


def test_with_room_for_every_non_zero_the_output_is_the_dense_lista_reconstruction():
    quantizer = build(lam=0.3, num_atoms=CODEBOOK_SIZE)
    z = torch.randn(7, DIM)
    alpha = quantizer.lista(z).detach()
    torch.testing.assert_close(quantizer(z).quantized, alpha @ quantizer.dictionary.detach(), rtol=1e-5, atol=1e-6)


def test_decode_needs_the_coefficients_and_then_equals_forward():
    quantizer = build()
    z = torch.randn(3, 4, DIM)
    for training in (True, False):
        quantizer.train(training)
        out = quantizer(z)
        assert quantizer.decode_inputs == ("coefficients",)
        torch.testing.assert_close(quantizer.decode(out.codes, coefficients=out.coefficients), out.quantized, rtol=0, atol=0)
        with pytest.raises(ValueError, match="coefficients"):
            quantizer.decode(out.codes)
        codes, coefficients = quantizer.encode_sparse(z)
        assert torch.equal(codes, out.codes) and torch.equal(quantizer.encode(z), out.codes)
        torch.testing.assert_close(coefficients, out.coefficients)


def test_usage_is_the_fraction_of_atoms_active_and_codebook_usage_agrees():
    quantizer = build(lam=0.5, num_atoms=CODEBOOK_SIZE)
    z = torch.randn(6, DIM) * 0.7
    z[0] = 0  # a token with no active atom at all
    out = quantizer(z)
    alpha = quantizer.lista(z).detach()
    assert bool((alpha[0] == 0).all())
    active_atoms = (alpha != 0).any(0)
    best_of_empty = (z[0] @ quantizer.dictionary.detach().t()).abs().argmax()
    assert bool((out.codes[0] == best_of_empty).all()) and bool((out.coefficients[0] == 0).all())
    assert out.metrics["usage"].item() == pytest.approx(active_atoms.float().mean().item())
    counter = CodebookUsage(CODEBOOK_SIZE)
    counter.update(out.codes)
    expected = active_atoms.clone()
    expected[best_of_empty] = True  # the all-zero token names its most correlated atom
    assert counter.usage() == pytest.approx(expected.float().mean().item())


def test_gradients_reach_the_encoder_the_dictionary_and_the_step():
    quantizer = build()
    backward_through_an_encoder(quantizer, DIM)
    assert quantizer.dictionary.grad.abs().sum() > 0 and quantizer.log_step_scale.grad.abs() > 0
    fixed = build(train_dictionary=False)
    assert "dictionary" in dict(fixed.named_buffers()) and "dictionary" not in dict(fixed.named_parameters())


def test_channel_first_and_state_dict():
    quantizer = build()
    with torch.no_grad():
        quantizer.dictionary.add_(0.05 * torch.randn_like(quantizer.dictionary))
    assert_channel_first_agrees(quantizer, build(channel_first=True), DIM)


@pytest.mark.parametrize(
    "option, value", [("num_atoms", 0), ("num_atoms", CODEBOOK_SIZE + 1), ("iterations", 0), ("lam", -1.0), ("latent_weight", -1.0)]
)
def test_invalid_options_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        SCVAE(DIM, CODEBOOK_SIZE, **{option: value})


def test_soft_threshold_value_and_gradient():
    x = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    threshold = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.equal(soft_threshold(x, threshold), torch.sign(x) * torch.relu(x.abs() - threshold))
    assert torch.autograd.gradcheck(soft_threshold, (x, threshold))
