"""Property tests (hypothesis) over shapes, dtypes, NaN/Inf, empty batches, huge and tiny magnitudes
and non-contiguous views, for ``simvq.search.nearest`` and every registered quantizer (taken from
the registry, so a new quantizer is covered without editing this file), and for the recipe config.

The contract: a clear error naming the argument, or a result checked against an independent
float64 computation -- never silent garbage. Derandomized and database-free, so CI is reproducible.
Run with ``--hypothesis-show-statistics`` to see how many cases each test ran.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from simvq.quantizers import CodebookQuantizer, build_quantizer, list_quantizers
from simvq.search import max_abs_value, nearest

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SPECIALS = [float("nan"), float("inf"), float("-inf")]
FLOAT32_EPS = 2.0**-23


@st.composite
def tensors(draw, shape, *, name):
    """A tensor of ``shape`` (possibly a non-contiguous view), values ``randn * 10^e``, sometimes
    holding a NaN/Inf. Returns ``(tensor, has_special)``."""
    dtype = draw(st.sampled_from(DTYPES), label=f"{name}.dtype")
    # half precision spans 6e-8 .. 6.5e4: keep its draws inside, other dtypes range much wider
    exponents = st.integers(-4, 3) if dtype == torch.float16 else st.integers(-30, 21)
    exponent = draw(exponents, label=f"{name}.exponent")
    seed = draw(st.integers(0, 2**16), label=f"{name}.seed")
    generator = torch.Generator().manual_seed(seed)
    transposed = draw(st.booleans(), label=f"{name}.non_contiguous") and len(shape) == 2 and min(shape) > 1
    base_shape = shape[::-1] if transposed else shape
    values = torch.randn(*base_shape, generator=generator, dtype=torch.float64) * 10.0**exponent
    tensor = values.to(dtype)
    # one draw in eight holds a NaN/Inf, so most cases reach the float64 comparison
    special = draw(st.sampled_from([None] * 21 + SPECIALS), label=f"{name}.special") if tensor.numel() else None
    if special is not None:
        flat_index = draw(st.integers(0, tensor.numel() - 1), label=f"{name}.special_index")
        tensor.view(-1)[flat_index] = special
    return (tensor.t() if transposed else tensor), special is not None


def largest(t: torch.Tensor) -> float:
    return t.double().abs().max().item() if t.numel() else 0.0


def assert_nearest(x, codebook, indices, distances=None):
    """Each index is a nearest code in float64, up to float32's rounding of the scores."""
    x64, codebook64 = x.double(), codebook.double()
    all_distances = torch.cdist(x64, codebook64).pow(2)
    chosen = all_distances.gather(1, indices[:, None]).squeeze(1)
    best = all_distances.min(1).values
    scale = (x64.norm(dim=1) + codebook64.norm(dim=1).max()).pow(2)
    tolerance = 8 * (x.shape[1] + 2) * FLOAT32_EPS * scale
    assert ((chosen - best) <= tolerance).all(), (chosen - best).max()
    if distances is not None:
        assert torch.allclose(distances.double(), chosen, rtol=1e-3, atol=tolerance.max().item())


# ----------------------------------------------------------------------------- nearest


@FUZZ
@given(
    shapes=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 12)),
    empty=st.sampled_from([False] * 7 + [True]),
    method=st.sampled_from(["auto", "fp32", "screened"]),
    chunk=st.one_of(st.none(), st.integers(1, 48)),
    data=st.data(),
)
def test_nearest_is_exact_or_refuses_naming_the_argument(shapes, empty, method, chunk, data):
    num_tokens, num_codes, dim = shapes
    num_tokens = 0 if empty else num_tokens
    x, x_special = data.draw(tensors((num_tokens, dim), name="x"))
    codebook, code_special = data.draw(tensors((num_codes, dim), name="codebook"))
    limit = max_abs_value(dim)
    too_large = largest(codebook) > limit or largest(codebook) + largest(x) > limit
    if num_tokens == 0 and not code_special:
        event("empty batch")
        indices, distances = nearest(x, codebook, chunk, method=method)
        assert indices.shape == distances.shape == (0,)
        return
    if code_special or x_special:
        event("refused: NaN/Inf")
        with pytest.raises(ValueError, match="^codebook contains NaN or Inf" if code_special else "^x contains NaN or Inf"):
            nearest(x, codebook, chunk, method=method)
        return
    if too_large:
        event("refused: too large")
        with pytest.raises(ValueError, match="^(x|codebook) holds values up to"):
            nearest(x, codebook, chunk, method=method)
        return
    event("checked against float64")
    indices, distances = nearest(x, codebook, chunk, method=method)
    assert indices.dtype == torch.long and indices.shape == (num_tokens,) and distances.dtype == torch.float32
    assert_nearest(x, codebook, indices)
    if largest(x) + largest(codebook) > 1e-15:  # below that the true distances are not float32 numbers
        assert_nearest(x, codebook, indices, distances)


# ----------------------------------------------------------------------------- quantizers

QUANTIZER_OPTIONS = {  # only what a name needs to build at a small size; everything else default
    "lfq": {"codebook_size": 16},
    "fsq": {"codebook_size": 16},
}


def build(name, dim, channel_first):
    options = {"dim": dim, "codebook_size": 16, "channel_first": channel_first, **QUANTIZER_OPTIONS.get(name, {})}
    torch.manual_seed(0)
    return build_quantizer(name, **options)


def search_space(quantizer, flat):
    """``(vectors, codebook)`` in the space the quantizer searches, float64."""
    if hasattr(quantizer, "to_latent"):  # the VQ family (projections, l2 normalisation)
        return quantizer.to_latent(flat.float()).double(), quantizer.codebook().double()
    if hasattr(quantizer, "_search_space"):  # cvq (cosine)
        return quantizer._search_space(flat).double(), quantizer._search_space(quantizer.embedding).double()
    return flat.double(), quantizer.codebook().double()


@pytest.mark.parametrize("name", list_quantizers())
@FUZZ
@given(
    leading=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    empty=st.sampled_from([False] * 7 + [True]),
    dim=st.sampled_from([4, 8]),
    channel_first=st.booleans(),
    training=st.booleans(),
    data=st.data(),
)
def test_quantizer_output_is_right_or_refused(name, leading, empty, dim, channel_first, training, data):
    quantizer = build(name, dim, channel_first).train(training)
    leading = [0, *leading[1:]] if empty else leading
    shape = (leading[0], dim, *leading[1:]) if channel_first else (*leading, dim)
    z, special = data.draw(tensors(shape, name="z"))
    if z.numel() == 0:
        event("refused: empty")
        with pytest.raises(ValueError, match="z is empty"):
            quantizer(z)
        return
    if special:
        event("refused: NaN/Inf")
        with pytest.raises(ValueError, match="z contains NaN or Inf"):
            quantizer(z)
        return
    if largest(z) > max_abs_value(dim):
        event("refused: too large")
        with pytest.raises(ValueError, match="z holds values up to"):
            quantizer(z)
        return
    event("checked (float64 reference, decode)")
    out = quantizer(z.requires_grad_(z.dtype != torch.float16))
    code_shape = (shape[0], *shape[2:]) if channel_first else shape[:-1]
    assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
    assert out.codes.shape[: len(code_shape)] == code_shape and out.codes.dtype == torch.long
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < quantizer.codebook_size
    assert torch.isfinite(out.loss) and torch.isfinite(out.quantized.float()).all()
    quantizer.eval()
    eval_out = quantizer(z.detach())
    codes = quantizer.encode(z)
    extra = {name: getattr(eval_out, name) for name in quantizer.decode_inputs}  # e.g. sparse coefficients
    decoded = quantizer.decode(codes, **extra)
    assert decoded.shape == z.shape and torch.isfinite(decoded).all()
    flat_layout = "b d ... -> (b ...) d" if channel_first else "... d -> (...) d"
    flat = __import__("einops").rearrange(z.detach(), flat_layout)
    if isinstance(quantizer, CodebookQuantizer) and not hasattr(quantizer, "stages"):
        vectors, codebook = search_space(quantizer, flat)
        assert_nearest(vectors, codebook, codes.reshape(-1))
    assert torch.equal(eval_out.codes, codes)
    tolerance = 1e-3 * (1 + largest(z))
    torch.testing.assert_close(eval_out.quantized.double(), decoded.to(z.dtype).double(), rtol=1e-2, atol=tolerance)


# ----------------------------------------------------------------------------- recipe config

def _config_fields():
    import dataclasses

    from simvq.train.config import TokenizerConfig

    fields = []
    for section in dataclasses.fields(TokenizerConfig):
        if dataclasses.is_dataclass(section.default_factory if section.default_factory is not dataclasses.MISSING else None):
            for field in dataclasses.fields(section.default_factory):
                fields.append(f"{section.name}.{field.name}")
    return fields


@FUZZ
@given(
    key=st.sampled_from(_config_fields() + ["trainer.no_such_key", "nowhere.key", "data.imag_size"]),
    value=st.one_of(
        st.sampled_from(["abc", "[1, 2", "{a: 1}", "-1", "0", "1e400", "nan", "true", "null", "[]", "3.5"]),
        st.text(alphabet="abc019.-[]{}: ", max_size=8),
    ),
)
def test_config_overrides_load_or_fail_naming_the_key(key, value):
    pytest.importorskip("yaml")
    from simvq.train.config import load_config

    try:
        config = load_config(None, [f"{key}={value}"])
    except (ValueError, TypeError) as error:
        event("refused, naming the key")
        section, name = key.split(".")
        assert name in str(error) or section in str(error), (key, value, str(error))
        return
    event("loaded")
    section, name = key.split(".")
    loaded = getattr(getattr(config, section), name)
    if isinstance(loaded, float):
        assert math.isfinite(loaded) or name in ("grad_clip",), (key, value, loaded)
