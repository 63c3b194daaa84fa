"""Every numeric option of every registered quantizer, driven at the bounds its check states.

The domains are not listed here: they are read from the quantizers themselves. Building a quantizer
with :func:`recorded_domains` active records, for each option, the interval its ``check_int`` /
``check_float`` call states (the ones in its error messages). Then, per option and finite end:

* at the end (the end itself when closed, the nearest float64 inside when open) the quantizer
  builds, and a training forward, its backward and an eval forward are finite, with codes in range;
* just beyond it (the nearest float64 or integer outside) the constructor raises a ValueError
  naming the option.

A quantizer registered later, or an option added later, is covered without editing this file;
``test_every_numeric_option_states_its_domain`` fails when a numeric option is checked some other
way. ``VARIANTS`` switches on the options that the defaults leave unused (``cvq``'s temperature
only enters with ``contrastive=True``).
"""

from __future__ import annotations

import inspect
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

import simvq.quantizers.options as options_module
from simvq.quantizers import build_quantizer, list_quantizers
from simvq.quantizers.registry import _REGISTRY

DIM, CODEBOOK_SIZE, TOKENS = 8, 16, 48
STRUCTURAL = {"dim", "codebook_size"}  # the contract tests cover these
NUMERIC_ANNOTATIONS = {"int", "float", "int | None", "float | None"}

# option sets that put to use what the defaults leave unused
VARIANTS: dict[str, list[dict]] = {
    "cvq": [{}, {"contrastive": True}, {"contrastive": True, "distance": "l2"}],
    "affine": [{}, {"affine": "running"}, {"alternating_lr": 1.0}],
    "lfq": [{}, {"entropy_mode": "factorized"}],
    "vq": [{}, {"ema_decay": 0.99, "dead_code_threshold": 1.0, "kmeans_init": True, "codebook_dim": 4}],
}


@dataclass(frozen=True)
class Domain:
    low: float | None
    high: float | None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def intersect(self, other: Domain) -> Domain:
        low, low_open = max((self.low, self.low_open), (other.low, other.low_open), key=_lower_end)
        high, high_open = min((self.high, self.high_open), (other.high, other.high_open), key=_upper_end)
        return Domain(low, high, low_open, high_open, self.integer and other.integer)

    def ends(self):
        """``(which, at, beyond)`` for each finite end."""
        if self.integer:
            if self.low is not None:
                yield "low", self.low, self.low - 1
            if self.high is not None:
                yield "high", self.high, self.high + 1
            return
        if self.low is not None:
            inside = math.nextafter(self.low, math.inf)
            yield "low", (inside if self.low_open else self.low), (self.low if self.low_open else math.nextafter(self.low, -math.inf))
        if self.high is not None:
            inside = math.nextafter(self.high, -math.inf)
            yield "high", (inside if self.high_open else self.high), (self.high if self.high_open else math.nextafter(self.high, math.inf))


def _lower_end(end):  # the larger lower end is the tighter one; at a tie the open one
    value, is_open = end
    return (-math.inf if value is None else value, is_open)


def _upper_end(end):  # the smaller upper end is the tighter one; at a tie the open one
    value, is_open = end
    return (math.inf if value is None else value, not is_open)


@contextmanager
def recorded_domains():
    """Record ``{option: Domain}`` for every ``check_int``/``check_float`` call while the block
    builds quantizers (each module that imported the checks sees the recording ones). An option
    checked twice (a base class's check, then a subclass's tighter one) gets both domains' common part."""
    recorded: dict[str, Domain] = {}
    originals = {"check_int": options_module.check_int, "check_float": options_module.check_float}

    def record(name: str, domain: Domain) -> None:
        recorded[name] = recorded[name].intersect(domain) if name in recorded else domain

    def check_int(name, value, *, minimum=None, maximum=None, **options):
        record(name, Domain(minimum, maximum, integer=True))
        return originals["check_int"](name, value, minimum=minimum, maximum=maximum, **options)

    def check_float(name, value, *, low=None, high=None, low_open=False, high_open=False, **options):
        record(name, Domain(low, high, low_open, high_open))
        return originals["check_float"](name, value, low=low, high=high, low_open=low_open, high_open=high_open, **options)

    replacements = {"check_int": check_int, "check_float": check_float}
    patched = []
    for module in [module for name, module in sys.modules.items() if name.startswith("simvq.quantizers")]:
        for attribute, original in originals.items():
            if getattr(module, attribute, None) is original:
                setattr(module, attribute, replacements[attribute])
                patched.append((module, attribute, original))
    try:
        yield recorded
    finally:
        for module, attribute, original in patched:
            setattr(module, attribute, original)


def build(name: str, **options):
    torch.manual_seed(0)
    options.setdefault("seed", 0)
    return build_quantizer(name, dim=DIM, codebook_size=CODEBOOK_SIZE, **options)


def domains_of(name: str, variant: dict) -> dict[str, Domain]:
    """The options ``name`` takes (its signature's, or all a wrapper passes on) and their domains."""
    with recorded_domains() as recorded:
        build(name, **variant)
    factory = _REGISTRY[name]
    parameters = inspect.signature(factory).parameters
    passes_on = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    # base classes check the options a subclass excludes too (at their defaults): leave those out
    taken = [option for option in recorded if option in parameters or (passes_on and option not in factory.excluded_options)]
    return {option: recorded[option] for option in taken if option not in STRUCTURAL}


CASES = [
    pytest.param(name, variant, option, which, at, beyond, id=f"{name}{sorted(variant.items()) if variant else ''}-{option}-{which}")
    for name in list_quantizers()
    for variant in VARIANTS.get(name, [{}])
    for option, domain in domains_of(name, variant).items()
    for which, at, beyond in domain.ends()
]


def test_the_cases_cover_the_options_this_file_knows_to_be_bounded():
    """The recording works: the options these changes bounded are among the cases."""
    covered = {(case.values[0], case.values[2], case.values[3]) for case in CASES}
    for expected in [
        ("fsq", "eps", "low"), ("fsq", "eps", "high"), ("sqvae", "temperature", "low"), ("sqvae", "init_variance", "low"),
        ("hqa", "temperature", "low"), ("lfq", "temperature", "low"), ("cvq", "temperature", "low"),
        ("vq", "seed", "low"), ("vq", "seed", "high"), ("residual", "seed", "high"), ("sc_vae", "num_atoms", "high"),
        ("vq_ema", "ema_decay", "high"), ("vq", "init_scale", "low"),
    ]:
        assert expected in covered, expected


@pytest.mark.parametrize("name", list_quantizers())
def test_every_numeric_option_states_its_domain(name):
    """A numeric keyword option whose check is not ``check_int``/``check_float`` would escape the
    bound tests: none may."""
    stated = set().union(*(domains_of(name, variant) for variant in VARIANTS.get(name, [{}])))
    numeric = {
        option
        for option, parameter in inspect.signature(_REGISTRY[name]).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and str(parameter.annotation) in NUMERIC_ANNOTATIONS
    }
    assert numeric - STRUCTURAL <= stated, sorted(numeric - STRUCTURAL - stated)


def assert_finite_forward(quantizer):
    z = torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(1)).requires_grad_()
    out = quantizer.train()(z)
    assert torch.isfinite(out.quantized).all() and torch.isfinite(out.loss), {k: float(v) for k, v in out.losses.items()}
    assert all(torch.isfinite(value).all() for value in out.metrics.values()), out.metrics
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < quantizer.codebook_size
    (out.quantized * torch.randn_like(out.quantized)).sum().add(out.loss).backward()
    assert torch.isfinite(z.grad).all()
    for parameter_name, parameter in quantizer.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), parameter_name
    evaluated = quantizer.eval()(z.detach())
    assert torch.isfinite(evaluated.quantized).all() and torch.isfinite(evaluated.loss)
    assert 0 <= int(evaluated.codes.min()) and int(evaluated.codes.max()) < quantizer.codebook_size


@pytest.mark.parametrize("name, variant, option, which, at, beyond", CASES)
def test_an_option_at_its_stated_bound_gives_a_finite_forward_and_beyond_it_is_refused(name, variant, option, which, at, beyond):
    assert_finite_forward(build(name, **{**variant, option: at}))
    with pytest.raises(ValueError, match=rf"\b{option}\b"):
        build(name, **{**variant, option: beyond})


# ----------------------------------------------------------------------------- the derived bounds


@pytest.mark.parametrize(
    "name, option, extra",
    [
        ("sqvae", "temperature", {}),
        ("sqvae", "init_variance", {}),
        ("hqa", "temperature", {}),
        ("lfq", "temperature", {}),
        ("cvq", "temperature", {"contrastive": True}),
        ("cvq", "temperature", {"contrastive": True, "distance": "l2"}),
    ],
)
def test_a_tiny_temperature_or_variance_is_refused_stating_its_bound(name, option, extra):
    """1e-38 passed the old "positive" checks and gave NaN in the forward."""
    with pytest.raises(ValueError, match=rf"^{option} must be a finite number in \[\S+, inf\), got 1e-38; {option} divides .* 2\*\*127 = "):
        build(name, **extra, **{option: 1e-38})


def test_the_gumbel_noise_bounds_are_float32s_at_the_clamped_uniforms():
    """Reference: the noise ``-log(-log(u))`` at the clamp's ends, in numpy float32."""
    import numpy as np

    from simvq.quantizers.base import GUMBEL_CLAMP, GUMBEL_RANGE

    ends = np.array(GUMBEL_CLAMP, dtype=np.float32)
    assert GUMBEL_RANGE == pytest.approx(tuple(-np.log(-np.log(ends))), rel=1e-6)
    assert GUMBEL_RANGE == pytest.approx((-3.1366, 15.9424), abs=1e-4)


def test_the_hqa_temperature_bound_grows_with_log_k():
    """The row maximum of log-probabilities is at least -log K: past K = e^(15.94 - 3.14) that term
    sets the bound."""
    from simvq.quantizers.base import GUMBEL_RANGE

    with recorded_domains() as recorded:
        build_quantizer("hqa", dim=2, codebook_size=2**19)
    assert recorded["temperature"].low == (math.log(2**19) - GUMBEL_RANGE[0]) / 2**127
    assert domains_of("hqa", {})["temperature"].low == GUMBEL_RANGE[1] / 2**127  # K = 16


def largest_inputs(dim: int, tokens: int = TOKENS) -> torch.Tensor:
    from simvq.search import max_abs_value

    generator = torch.Generator().manual_seed(2)
    return (torch.rand(tokens, dim, generator=generator) * 2 - 1) * max_abs_value(dim)


@pytest.mark.parametrize("name, dim, codebook_size", [("sqvae", DIM, CODEBOOK_SIZE), ("hqa", DIM, CODEBOOK_SIZE), ("lfq", 4, 16)])
def test_temperatures_at_their_least_keep_the_largest_accepted_inputs_finite(name, dim, codebook_size):
    """The Gumbel bounds do not depend on the data, and LFQ's covers latents up to 2**64: at the
    least temperature the training forward and backward of the largest inputs the quantizer
    accepts stay finite (LFQ at dim = log2 K, so that its latents are those inputs)."""
    with recorded_domains() as recorded:
        build_quantizer(name, dim=dim, codebook_size=codebook_size)
    torch.manual_seed(0)
    quantizer = build_quantizer(name, dim=dim, codebook_size=codebook_size, seed=0, temperature=recorded["temperature"].low)
    z = largest_inputs(dim).requires_grad_()
    out = quantizer.train()(z)
    assert torch.isfinite(out.quantized).all() and torch.isfinite(out.loss)
    (out.loss + out.quantized.mean()).backward()
    assert torch.isfinite(z.grad).all()
    assert all(parameter.grad is None or torch.isfinite(parameter.grad).all() for parameter in quantizer.parameters())


def test_sqvae_refuses_an_init_scale_whose_default_variance_is_too_small_naming_init_scale():
    """The default variance is 20 * init_scale**2: init_scale=1e-20 made it 2e-39, a precision of
    inf and a NaN forward. Passing init_variance lifts the constraint."""
    with pytest.raises(ValueError, match=r"^init_scale must .* the default init_variance, 20 \* init_scale\*\*2"):
        build("sqvae", init_scale=1e-20)
    assert_finite_forward(build("sqvae", init_scale=1e-20, init_variance=1.0))


def test_vq_wae_refuses_epsilon_below_float32_resolution():
    """Relative epsilon 1e-8 gave a transport cost of 78 for 5.8, 1e-9 NaN: below 2**-23 the
    potentials' rounding errors swamp it."""
    with pytest.raises(ValueError, match=r"^epsilon must be a finite number in \[1\.19209e-07, inf\), got 1e-08; .*float32's resolution"):
        build("vq_wae", epsilon=1e-8)
