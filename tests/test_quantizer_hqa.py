"""HQA's quantizer: the contract, and the Gumbel-softmax posterior against a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from quantizer_references import backward_through_an_encoder, squared_distances
from simvq import build_quantizer
from simvq.quantizers import hqa as hqa_module
from simvq.quantizers.hqa import HQA

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, CODEBOOK_SIZE = 4, 8


def build(seed=0, **options):
    torch.manual_seed(seed)
    return build_quantizer("hqa", dim=DIM, codebook_size=CODEBOOK_SIZE, seed=seed, **options)



def gumbel_like(shape, seed):
    """The noise HQA draws after ``torch.manual_seed(seed)``, written out."""
    torch.manual_seed(seed)
    uniform = torch.rand(shape).clamp_(1e-10, 1 - 1e-7)
    return -torch.log(-torch.log(uniform))


def test_eval_is_the_nearest_code_and_decode_equals_forward():
    quantizer = build().eval()
    z = torch.randn(3, 5, DIM)
    out = quantizer(z)
    expected = squared_distances(z.reshape(-1, DIM), quantizer.embedding.detach()).argmin(1).reshape(3, 5)
    assert out.codes.dtype == torch.int64 and torch.equal(out.codes, expected)
    assert torch.equal(quantizer(z).quantized, out.quantized)  # deterministic
    torch.testing.assert_close(quantizer.decode(out.codes), out.quantized, rtol=1e-6, atol=1e-6)
    assert torch.equal(quantizer.encode(z), out.codes)
    assert not out.losses


@pytest.mark.parametrize("name", ["hqa", "sqvae", "vq"])
def test_sampled_training_codes_says_whose_training_codes_are_not_the_nearest(name):
    """What a usage count over training batches measures: HQA's training codes are its sample's
    (many differ from the nearest code), SQ-VAE's and VQ's are the nearest codes."""
    from simvq.quantizers import sampled_training_codes

    torch.manual_seed(0)
    quantizer = build_quantizer(name, dim=DIM, codebook_size=CODEBOOK_SIZE, seed=0)
    z = torch.randn(64, DIM)
    nearest = quantizer.eval()(z).codes
    trained = quantizer.train()(z).codes
    assert sampled_training_codes(name) == bool((trained != nearest).any()) == (name == "hqa")


def test_training_sample_and_losses_match_the_hand_computation_with_the_same_noise():
    quantizer = build(temperature=0.5, kl_weight=0.3, commitment_weight=0.7)
    z = torch.randn(6, DIM)
    torch.manual_seed(11)
    out = quantizer(z)

    codebook = quantizer.embedding.detach().double()
    distances = squared_distances(z, codebook)
    probs = torch.softmax(-distances, dim=1)
    weights = torch.softmax((-distances + gumbel_like((6, CODEBOOK_SIZE), 11).double()) / 0.5, dim=1)
    torch.testing.assert_close(out.quantized.double(), weights @ codebook, rtol=1e-4, atol=1e-5)
    assert torch.equal(out.codes, weights.argmax(1))  # the sampled code, as the official code reports
    kl = (probs * (probs.log() + math.log(CODEBOOK_SIZE))).sum(1).mean()
    commitment = (probs * distances).sum(1).mean()
    torch.testing.assert_close(out.losses["kl"].double(), 0.3 * kl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.losses["commitment"].double(), 0.7 * commitment, rtol=1e-4, atol=1e-6)


def test_zero_temperature_samples_are_codes_drawn_from_the_softmax_posterior():
    # Gumbel-max: as the temperature goes to 0 the relaxed sample becomes one code vector,
    # drawn with probability softmax(-||z - c_k||^2)
    quantizer = build(temperature=1e-4)
    z = quantizer.embedding.detach()[:1] * 0.5 + quantizer.embedding.detach()[1:2] * 0.5
    out = quantizer(z.expand(4000, DIM).contiguous())
    # one code vector per token, except where two perturbed logits tie to within the temperature
    one_hot = (out.quantized - quantizer.embedding.detach()[out.codes]).abs().amax(1) < 1e-4
    assert one_hot.float().mean() > 0.99
    frequencies = torch.bincount(out.codes, minlength=CODEBOOK_SIZE).double() / 4000
    posterior = torch.softmax(-squared_distances(z, quantizer.embedding.detach())[0], dim=0)
    assert (frequencies - posterior).abs().max() < 0.03, (frequencies, posterior)


def test_sharp_posterior_at_zero_temperature_gives_the_nearest_code():
    quantizer = build(temperature=1e-4)
    with torch.no_grad():
        quantizer.embedding.mul_(30.0)  # codes far apart: the posterior is one-hot on the nearest
    z = quantizer.embedding.detach()[torch.arange(CODEBOOK_SIZE)] + 0.1 * torch.randn(CODEBOOK_SIZE, DIM)
    out = quantizer(z)
    quantizer.eval()
    nearest = quantizer(z)
    assert torch.equal(out.codes, nearest.codes) and torch.equal(nearest.codes, torch.arange(CODEBOOK_SIZE))
    torch.testing.assert_close(out.quantized, nearest.quantized, rtol=1e-4, atol=1e-4)


def test_gradients_reach_the_encoder_and_the_codebook():
    for training in (True, False):
        quantizer = build().train(training)
        backward_through_an_encoder(quantizer, DIM)
        if training:  # the relaxed sample and the KL reach every code
            assert bool((quantizer.embedding.grad.abs().sum(1) > 0).all())


def test_chunked_training_forward_equals_one_chunk(monkeypatch):
    z = torch.randn(50, DIM, requires_grad=True)
    results = []
    for chunk in (10**9, 7 * CODEBOOK_SIZE):
        monkeypatch.setattr(hqa_module, "CHUNK_ELEMENTS", chunk)
        quantizer = build()
        torch.manual_seed(5)
        out = quantizer(z)
        (out.quantized.pow(2).sum() + out.loss).backward()
        results.append((out.quantized.detach(), out.codes, out.loss.detach(), z.grad.clone(), quantizer.embedding.grad.clone()))
        z.grad = None
    for one, chunked in zip(*results):
        torch.testing.assert_close(one, chunked, rtol=1e-5, atol=1e-6)


def test_channel_first_and_state_dict():
    quantizer = build().eval()
    clone = build(seed=3, channel_first=True).eval()
    clone.load_state_dict(quantizer.state_dict())
    z = torch.randn(2, DIM, 3, 3)
    torch.testing.assert_close(clone(z).quantized.movedim(1, -1), quantizer(z.movedim(1, -1)).quantized)


@pytest.mark.parametrize(
    "option, value", [("temperature", 0.0), ("kl_weight", -1.0), ("commitment_weight", -1.0), ("init_scale", -1.0)]
)
def test_invalid_options_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        HQA(DIM, CODEBOOK_SIZE, **{option: value})


def test_log_posterior_normalisation_is_shift_invariant():
    # logits -||z - c||^2 and log-softmax of them give the same relaxed sample: a check that the
    # implementation's choice of using log-probabilities does not change the distribution
    logits = torch.randn(5, CODEBOOK_SIZE)
    noise = torch.randn(5, CODEBOOK_SIZE)
    torch.testing.assert_close(
        F.softmax((logits + noise) / 0.3, dim=1), F.softmax((F.log_softmax(logits, dim=1) + noise) / 0.3, dim=1)
    )
