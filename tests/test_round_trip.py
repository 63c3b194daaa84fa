"""Round-trip guarantee: in eval mode ``decode(encode(x))`` is ``forward(x).quantized``.

For every name in ``list_quantizers()`` and each of its option variants: the default, and every
variant below that the quantizer accepts (a low ``codebook_dim``, 1 and 3 residual stages, the
rotation trick, found by building it), plus a few per-method ones (``EXTRA_VARIANTS``). A quantizer
registered tomorrow is covered the day it registers.

``encode(x)`` must give ``forward(x).codes`` exactly, and ``decode`` of them (with the extra inputs
a method declares in ``decode_inputs``: sc_vae's coefficients, taken from the forward) must give
``forward(x).quantized`` exactly, or within ``k * eps * S`` (``eps`` float32's, ``S`` the largest
magnitude of ``x`` and the decoded vectors) where the forward computes the same vectors in another
order of operations. ``k`` and the reason are stated per case in ``tolerance``; a method without an
entry must be exact, and the failure says where to add one.

Where the order differs, it is the straight-through estimator: the forward returns
``x + sg(q - x)``, two float32 roundings away from ``q`` (``|fl(x + fl(q - x)) - q| <= 2 eps
max(|x|, |q|)``), while ``decode`` returns ``q``. Any real disagreement (another code, a missing bias,
a stale codebook) is of the order of the code spacing, ~1e-1 here, against tolerances of ~1e-5.
"""

from __future__ import annotations

import pytest
import torch

from simvq import build_quantizer, list_quantizers
from test_quantizer_contract import REQUIRED_OPTIONS

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, CODEBOOK_SIZE = 8, 16
EPS = torch.finfo(torch.float32).eps
SCALES = (0.1, 1.0, 10.0)  # input magnitudes: the tolerance is relative, so it must hold at each

# Options probed on every quantizer: a quantizer that takes the keyword gets these variants.
PROBED_VARIANTS: dict[str, tuple[dict, ...]] = {
    "codebook_dim": ({"codebook_dim": 2},),  # factorised low-dim search space (ViT-VQGAN)
    "num_quantizers": ({"num_quantizers": 1}, {"num_quantizers": 3}),  # residual stages
    "rotation_trick": ({"rotation_trick": True},),
}
# Who has each probed option today: losing one (a refactor of the shared options) fails loudly.
MUST_ACCEPT = {
    "codebook_dim": {"vq", "vq_ema", "vq_reset", "vq_kmeans", "vq_l2", "residual"},
    "num_quantizers": {"residual", "residual_simvq", "qinco"},
    "rotation_trick": {"simvq", "vq", "vq_ema", "vq_reset", "vq_kmeans", "vq_l2", "vq_lc", "cvq", "affine", "sqvae", "hqa", "vq_wae"},
}
# Per-method variants beyond the probed ones ("dim" overrides DIM).
EXTRA_VARIANTS: dict[str, tuple[dict, ...]] = {
    "fsq": ({"levels": [3, 4, 5]}, {"dim": 3, "levels": [3, 4, 5]}),  # odd and even levels; no projections when dim == len(levels)
    "lfq": ({"dim": 4},),  # dim == log2(codebook_size): no projections
    "residual": ({"inner": "fsq", "num_quantizers": 2}, {"inner": "simvq", "num_quantizers": 2}),
    "qinco": ({"candidates": None},),  # exhaustive search over every code
    "sc_vae": ({"num_atoms": 2},),
}

# ----------------------------------------------------------------------------- tolerances, per case

STRAIGHT_THROUGH = "forward returns the straight-through x + sg(q - x): <= 2 eps max(|x|, |q|) from q, which decode returns"
TOLERANCE: dict[str, tuple[int, str]] = {
    # exact: forward and decode compute the same vectors with the same operations
    "fsq": (0, "forward's bounded + (round(bounded) - bounded) is round(bounded) exactly (the difference of a value and its nearest "
                "integer is exact: 0, or within a factor 2 of it, Sterbenz), and both paths divide the same integers by the same half-width"),
    "lfq": (0, "forward's z + (s - z) with s = sign(z) = +-1 is s exactly (z and s share the sign, so both roundings land on s), "
               "then the same project_out as decode"),
    "sc_vae": (0, "no straight-through: forward and decode both compute sum_s coefficient_s * D[code_s]"),
    # one straight-through on the code vector
    **{name: (2, STRAIGHT_THROUGH) for name in ("simvq", "vq", "vq_ema", "vq_reset", "vq_kmeans", "vq_lc", "cvq", "affine", "sqvae", "hqa", "vq_wae")},
    "vq_l2": (4, STRAIGHT_THROUGH + ", taken on the unit sphere of the codebook_dim space and carried to dim by project_out "
                 "(a Linear whose rows have norm ~1 at these sizes): twice the margin"),
    "qinco": (2, STRAIGHT_THROUGH + "; once, on the whole reconstruction, which decode rebuilds stage by stage with the same ops"),
}
RESIDUAL_INNER = {"residual": None, "residual_simvq": "simvq"}  # None: the "inner" option, "vq" by default


def tolerance(name: str, options: dict) -> tuple[int, str]:
    """``(k, why)``: decode may differ from forward by ``k * eps * S``; ``k == 0``: bit for bit."""
    if name in RESIDUAL_INNER:
        inner = RESIDUAL_INNER[name] or options.get("inner", "vq")
        stages = options.get("num_quantizers", 4)
        k, why = tolerance(inner, {key: value for key, value in options.items() if key not in ("inner", "num_quantizers")})
        if k == 0:
            return 0, f"{stages} exact {inner} stages ({why}), summed in the same order by forward and decode"
        # every stage's output carries its own straight-through rounding, and each of the
        # forward's partial sums rounds once more than decode's
        return (k + 1) * stages, f"{stages} {inner} stages, each: {why}; plus one rounding per partial sum"
    if name not in TOLERANCE:
        return 0, "no entry in TOLERANCE: must be exact"
    k, why = TOLERANCE[name]
    if k and options.get("codebook_dim") is not None and name != "vq_l2":
        k, why = 2 * k, why + "; taken in the codebook_dim space and carried to dim by project_out: twice the margin"
    return k, why


# ----------------------------------------------------------------------------- variants


def build(name: str, options: dict):
    options = dict(options)
    dim = options.pop("dim", DIM)
    torch.manual_seed(0)  # the quantizers without a seed option draw from the global RNG
    return build_quantizer(name, dim=dim, codebook_size=CODEBOOK_SIZE, seed=0, **REQUIRED_OPTIONS.get(name, {}), **options)


def accepts(name: str, option: str) -> bool:
    """Whether ``name`` takes ``option``: built with the probed variant, a quantizer without it
    raises TypeError (an unexpected keyword); any other failure propagates."""
    try:
        build(name, PROBED_VARIANTS[option][0])
    except TypeError as error:
        if option in str(error):
            return False
        raise
    return True


def variants(name: str) -> list[dict]:
    found = [{}]
    for option, option_variants in PROBED_VARIANTS.items():
        if accepts(name, option):
            found.extend(option_variants)
    found.extend(EXTRA_VARIANTS.get(name, ()))
    return found


CASES = [pytest.param(name, options, id=f"{name}-{options}" if options else name) for name in list_quantizers() for options in variants(name)]


# ----------------------------------------------------------------------------- the guarantee


@pytest.mark.parametrize(("name", "options"), CASES)
def test_decode_of_encode_is_the_forward_output(name, options):
    quantizer = build(name, options)
    dim = quantizer.dim
    quantizer(torch.randn(256, dim, generator=torch.Generator().manual_seed(5)))  # first-batch inits (k-means, ...)
    quantizer.eval()
    k, why = tolerance(name, options)
    for scale in SCALES:
        x = torch.randn(3, 5, 7, dim, generator=torch.Generator().manual_seed(2)) * scale
        with torch.no_grad():
            out = quantizer(x)
            codes = quantizer.encode(x)
            assert torch.equal(codes, out.codes), f"{name} {options}: encode(x) is not forward(x).codes at scale {scale}"
            missing = [key for key in quantizer.decode_inputs if not hasattr(out, key)]
            assert not missing, f"{name} declares decode_inputs {missing} that its forward output does not carry"
            decoded = quantizer.decode(codes, **{key: getattr(out, key) for key in quantizer.decode_inputs})
        assert decoded.shape == out.quantized.shape and decoded.dtype == out.quantized.dtype
        if k == 0:
            assert torch.equal(decoded, out.quantized), (
                f"{name} {options}: decode(encode(x)) differs from forward(x).quantized by "
                f"{(decoded - out.quantized).abs().max().item():.3g} at scale {scale} ({why}). If the forward "
                "legitimately computes the vectors in another order, add the name to TOLERANCE with the reason."
            )
        else:
            bound = k * EPS * max(x.abs().max().item(), decoded.abs().max().item())
            error = (decoded - out.quantized).abs().max().item()
            assert error <= bound, f"{name} {options}: |decode - forward| = {error:.3g} > {k} eps S = {bound:.3g} at scale {scale} ({why})"


# ----------------------------------------------------------------------------- coverage


def test_every_registered_quantizer_is_covered():
    registered = set(list_quantizers())
    covered = {name for name, _ in (case.values for case in CASES)}
    assert covered == registered, f"not covered: {sorted(registered - covered)}"
    for option, names in MUST_ACCEPT.items():
        missing = {name for name in names & registered if not accepts(name, option)}
        assert not missing, f"{sorted(missing)} no longer take {option}: their {option} variants would go untested"
    stale = (set(TOLERANCE) | set(EXTRA_VARIANTS) | set(RESIDUAL_INNER)) - registered
    assert not stale, f"entries for quantizers that are not registered: {sorted(stale)}"
    # the multi-stage and sparse methods are exercised with their stage counts and coefficients
    params = {(name, tuple(sorted(options))) for name, options in (case.values for case in CASES)}
    for name in ("residual", "residual_simvq", "qinco"):
        assert (name, ("num_quantizers",)) in params, name
    assert build("sc_vae", {}).decode_inputs == ("coefficients",)
