"""The contract every registered quantizer keeps, checked for each name in the registry.

Parametrized over ``list_quantizers()``: a quantizer is under test the moment it registers. The only
per-name knowledge is ``REQUIRED_OPTIONS`` (constructor arguments without a default), and
``test_every_required_argument_has_an_entry`` fails when a registered constructor needs an
argument the table does not give.
"""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch

from simvq import SimVQ, build_quantizer, list_quantizers
from simvq.quantizers import VQ, CodebookQuantizer, Quantizer
from simvq.quantizers.registry import _REGISTRY

DIM, CODEBOOK_SIZE = 8, 16
NAMES = list_quantizers()

# constructor arguments a quantizer cannot be built without (beyond dim and codebook_size)
REQUIRED_OPTIONS: dict[str, dict] = {}


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_REGISTRY[name]).parameters)


def _accepts_seed(name: str) -> bool:
    parameters = _parameters(name)
    if "seed" in parameters:
        return True
    # wrappers (residual) hand **options on to stage quantizers, which take a seed
    return any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())


def build(name: str, *, seed: int = 0, **options):
    """``name`` at dim 8, K 16, seeded (the global RNG too, for the quantizers without a seed)."""
    torch.manual_seed(seed)
    if _accepts_seed(name):
        options.setdefault("seed", seed)
    return build_quantizer(name, dim=DIM, codebook_size=CODEBOOK_SIZE, **REQUIRED_OPTIONS.get(name, {}), **options)


def batch(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def warmed_up(name: str, **options):
    """After one training forward (first-batch inits such as k-means done), in eval mode: the state
    in which forward, encode and decode must agree exactly."""
    quantizer = build(name, **options)
    quantizer(batch(256, DIM, seed=5))
    return quantizer.eval()


def codes_shape(quantizer, leading: tuple[int, ...]) -> tuple[int, ...]:
    # residual stacks give one code per stage, sparse codes one per active atom
    per_token = getattr(quantizer, "num_atoms", None) or getattr(quantizer, "num_quantizers", None)
    return (*leading, per_token) if quantizer.code_ndim else leading


def decode_like_forward(quantizer, out):
    """``decode`` with the extra inputs a quantizer declares (sc_vae's coefficients), taken from ``out``."""
    return quantizer.decode(out.codes, **{name: getattr(out, name) for name in quantizer.decode_inputs})


# ----------------------------------------------------------------------------- the registry


def test_every_required_argument_has_an_entry():
    for name in NAMES:
        required = {
            key
            for key, parameter in _parameters(name).items()
            if parameter.default is inspect.Parameter.empty
            and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and key not in ("dim", "codebook_size")
        }
        missing = required - set(REQUIRED_OPTIONS.get(name, {}))
        assert not missing, f"{name!r} needs {sorted(missing)}: add them to REQUIRED_OPTIONS in this file"


def test_registry_lists_the_methods_and_rejects_unknown_names():
    expected = {"simvq", "vq", "vq_ema", "vq_reset", "vq_kmeans", "vq_l2", "vq_lc", "cvq", "affine", "fsq", "lfq", "sqvae"}
    assert expected | {"residual", "residual_simvq"} <= set(NAMES)
    with pytest.raises(ValueError, match="unknown quantizer 'nope'"):
        build_quantizer("nope", dim=DIM, codebook_size=CODEBOOK_SIZE)


# ----------------------------------------------------------------------------- shared options


def _keyword_options(function) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(function).parameters
    return {key: p for key, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("name", NAMES)
def test_the_signature_lists_the_shared_options_with_the_base_defaults(name):
    """Subclasses pass the shared options on in ``**options``; their signatures still list them,
    less the ones a class excludes (HQA has no ``beta``, SimVQ no ``init_scale``)."""
    factory = _REGISTRY[name]
    shared = _keyword_options(Quantizer.__init__)
    if issubclass(factory, CodebookQuantizer):
        shared.update(_keyword_options(CodebookQuantizer.__init__))
    assert {"seed", "init_scale", "channel_first", "check_finite"} <= set(shared)
    parameters = _parameters(name)
    for option, declared in shared.items():
        if option in factory.excluded_options:
            assert option not in parameters, option
        else:
            assert parameters[option].kind is inspect.Parameter.KEYWORD_ONLY, option
            assert parameters[option].default == declared.default, option


@pytest.mark.parametrize("name", NAMES)
def test_every_option_is_documented_on_the_class_or_a_base(name):
    documented = " ".join(cls.__doc__ or "" for cls in _REGISTRY[name].__mro__ if issubclass(cls, Quantizer))
    for option, parameter in _parameters(name).items():
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD:
            assert re.search(rf"\b{option}\b", documented), option


EXCLUDED_VALUES = {"beta": 0.25, "init_scale": 0.1, "inner": "vq", "basis": None, "train_codebook": False, "init": "gaussian", "basis_scale": 2.0}


@pytest.mark.parametrize("name, option", [(name, option) for name in NAMES for option in _REGISTRY[name].excluded_options])
def test_an_excluded_option_is_refused_naming_it(name, option):
    with pytest.raises((TypeError, ValueError), match=rf"\b{option}\b"):
        build(name, **{option: EXCLUDED_VALUES[option]})


def test_an_unknown_option_is_refused_naming_it_and_listing_the_options():
    with pytest.raises(TypeError, match=r"^HQA got an unexpected option 'beta'; its options are: dim, codebook_size, temperature, "):
        build_quantizer("hqa", dim=DIM, codebook_size=CODEBOOK_SIZE, beta=0.5)
    with pytest.raises(TypeError, match=r"^VQ got an unexpected option 'betta'; its options are: .*\bbeta\b.*\bseed\b"):
        build_quantizer("residual", dim=DIM, codebook_size=CODEBOOK_SIZE, betta=0.5)  # the stages check


def test_shared_options_reach_the_base_classes():
    quantizer = build_quantizer("vq", dim=DIM, codebook_size=CODEBOOK_SIZE, beta=0.5, seed=3, chunk_size=4, init_scale=0.5)
    assert (quantizer.beta, quantizer.seed, quantizer.chunk_size, quantizer.init_scale) == (0.5, 3, 4, 0.5)
    direct = VQ(DIM, CODEBOOK_SIZE, beta=0.5, seed=3, chunk_size=4, init_scale=0.5)
    assert torch.equal(quantizer.embedding, direct.embedding)
    # init_scale scales the initial codes, drawn from the seed's codebook stream
    unit = VQ(DIM, CODEBOOK_SIZE, seed=3, init_scale=1.0)
    torch.testing.assert_close(quantizer.embedding, unit.embedding * 0.5, rtol=0, atol=0)
    preset = build_quantizer("vq_ema", dim=DIM, codebook_size=CODEBOOK_SIZE, beta=0.5, seed=3)
    assert preset.beta == 0.5 and preset.ema_decay == 0.99 and _parameters("vq_ema")["ema_decay"].default == 0.99


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("name", NAMES)
def test_shapes_codes_loss_and_metrics(name):
    quantizer = build(name)
    z = batch(3, 5, DIM)
    out = quantizer(z)
    assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
    assert out.codes.shape == codes_shape(quantizer, (3, 5)) and out.codes.dtype == torch.int64
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < quantizer.codebook_size
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, sum(out.losses.values()) if out.losses else torch.tensor(0.0))
    # usage and perplexity of this batch's histogram, computed here from the codes
    counts = torch.bincount(out.codes.reshape(-1), minlength=quantizer.codebook_size).double()
    probs = counts[counts > 0] / counts.sum()
    assert out.metrics["usage"].item() == pytest.approx(torch.unique(out.codes).numel() / quantizer.codebook_size)
    assert out.metrics["perplexity"].item() == pytest.approx(math.exp(-(probs * probs.log()).sum().item()), rel=1e-5)
    assert all(not value.requires_grad for value in out.metrics.values())


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_input(name):
    quantizer = build(name)
    z = batch(4, 6, DIM).requires_grad_()
    out = quantizer(z)
    (out.quantized * batch(4, 6, DIM, seed=1)).sum().add(out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    # every vector gets a gradient: the quantizer does not cut the encoder off anywhere
    assert (z.grad.abs().sum(-1) > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_decode_and_encode_agree_with_forward(name):
    quantizer = warmed_up(name)
    z = batch(3, 7, DIM, seed=2)
    out = quantizer(z)
    assert torch.equal(quantizer.encode(z), out.codes)
    torch.testing.assert_close(decode_like_forward(quantizer, out), out.quantized, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_channel_first_matches_channel_last(name):
    channel_last = warmed_up(name)
    channel_first = build(name, channel_first=True)
    channel_first.load_state_dict(channel_last.state_dict())
    channel_first.eval()
    z = batch(2, DIM, 5, 3, seed=3)  # (B, D, H, W)
    out = channel_first(z)
    reference = channel_last(z.permute(0, 2, 3, 1))
    assert out.quantized.shape == z.shape and torch.equal(out.codes, reference.codes)
    torch.testing.assert_close(out.quantized, reference.quantized.permute(0, 3, 1, 2))
    assert torch.equal(channel_first.encode(z), out.codes)
    torch.testing.assert_close(decode_like_forward(channel_first, out), out.quantized, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic_and_never_updates_state(name):
    quantizer = warmed_up(name)
    before = {key: value.clone() for key, value in quantizer.state_dict().items()}
    z = batch(200, DIM, seed=4) + 2.0  # far from the data seen so far: an update would show
    first, second = quantizer(z), quantizer(z)
    assert torch.equal(first.codes, second.codes) and torch.equal(first.quantized, second.quantized)
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_carries_everything_needed_to_resume(name):
    quantizer = build(name)
    for step in range(3):
        quantizer(batch(128, DIM, seed=10 + step))
    clone = build(name, seed=1)  # a different start: everything must come from the state
    clone.load_state_dict(quantizer.state_dict())
    quantizer.eval(), clone.eval()
    z = batch(64, DIM, seed=6)
    assert torch.equal(clone.encode(z), quantizer.encode(z))
    torch.testing.assert_close(clone(z).quantized, quantizer(z).quantized)


@pytest.mark.parametrize("name", [name for name in NAMES if _accepts_seed(name)])
def test_seed_reproduces_the_quantizer_whatever_the_global_rng(name):
    z = batch(64, DIM, seed=9)
    first = build(name)
    torch.manual_seed(123)  # the global RNG elsewhere must not matter
    second = build_quantizer(name, dim=DIM, codebook_size=CODEBOOK_SIZE, seed=0, **REQUIRED_OPTIONS.get(name, {}))
    first.eval(), second.eval()
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), key
    first.train(), second.train()
    torch.manual_seed(7)  # the same global stream for stochastic training forwards (SQ-VAE's noise)
    out_first = first(z)
    torch.manual_seed(7)
    torch.testing.assert_close(out_first.quantized, second(z).quantized)  # seeded k-means, restarts
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_gives_the_float32_codes_and_a_float32_loss(name):
    quantizer = warmed_up(name)
    z = batch(64, DIM, seed=8)
    reference = quantizer(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(z)
        from_bf16 = quantizer(z.bfloat16())  # what a bf16 encoder hands over
    assert out.loss.dtype == torch.float32 and out.quantized.dtype == torch.float32
    assert torch.equal(out.codes, reference.codes)
    torch.testing.assert_close(out.quantized, reference.quantized)
    assert from_bf16.quantized.dtype == torch.bfloat16 and from_bf16.loss.dtype == torch.float32
    assert torch.equal(from_bf16.codes, quantizer(z.bfloat16().float()).codes)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_rejected(name):
    quantizer = build(name)
    with pytest.raises(ValueError, match="channels"):
        quantizer(torch.randn(4, DIM + 1))
    with pytest.raises(ValueError, match="codes must lie"):
        quantizer.decode(torch.full(codes_shape(quantizer, (2,)), quantizer.codebook_size))


# ----------------------------------------------------------------------------- input checks (the base class's, shown on SimVQ)


def test_input_errors_name_the_argument():
    quantizer = SimVQ(16, 64, seed=0)
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
        SimVQ(16, 64, channel_first=True)(torch.randn(2, 5, 16))
