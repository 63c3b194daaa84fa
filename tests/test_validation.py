"""Defects found by probing: wrong option types and values, extreme inputs, dtypes, state dicts and
the search's guards. Each test failed before its fix."""

import pytest
import torch
import torch.nn.functional as F

from simvq import search
from simvq.quantizers import build_quantizer, list_quantizers
from simvq.search import (
    _search_fp32,
    _search_fp32_device,
    _search_screened,
    max_abs_value,
    nearest,
)

SMALL = {"dim": 16, "codebook_size": 16}


def decode(quantizer, out):
    """``decode`` of an output, with the extra inputs some quantizers need (sparse coefficients)."""
    return quantizer.decode(out.codes, **{name: getattr(out, name) for name in quantizer.decode_inputs})


def unit_codebook(num_codes=64, dim=16, seed=0):
    return F.normalize(torch.randn(num_codes, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


# ----------------------------------------------------------------------------- the search


def test_screened_search_falls_back_when_its_bound_overflows():
    """At |x| ~ 1e20 the screen's bound was inf and every token got code 0; the nearest code of
    ``s * c_j`` among unit codes is ``j`` at any scale ``s``."""
    codebook = unit_codebook()
    target = torch.arange(40) % 64
    for scale in (1.0, 1e19, 1e20, 1e30):
        x = codebook[target] * scale
        assert torch.equal(_search_screened(x, codebook, None), target), scale
        assert torch.equal(_search_fp32(x, codebook, None), target), scale


@pytest.mark.parametrize("argument", ["x", "codebook"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_nearest_refuses_nan_inf_and_overflowing_values_naming_the_argument(argument, value):
    x, codebook = torch.randn(5, 16), unit_codebook()
    (x if argument == "x" else codebook)[1, 3] = value
    with pytest.raises(ValueError, match=rf"^{argument} (contains NaN or Inf|holds values)"):
        nearest(x, codebook)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nearest_told_x_was_checked_still_refuses_a_bad_codebook_and_by_default_checks_x(value):
    x, codebook = torch.randn(5, 16), unit_codebook()
    bad_x, bad_codebook = x.clone(), codebook.clone()
    bad_x[1, 3] = bad_codebook[1, 3] = value
    with pytest.raises(ValueError, match="^x contains NaN or Inf"):
        nearest(bad_x, codebook)  # the public default
    with pytest.raises(ValueError, match="^codebook contains NaN or Inf"):
        nearest(x, bad_codebook, x_checked=True)
    assert torch.equal(nearest(x, codebook, x_checked=True)[0], nearest(x, codebook)[0])


def test_nearest_told_x_was_checked_still_rescales_tiny_inputs():
    """The rescale needs x's largest value: with a tiny codebook x is read after all."""
    codebook = unit_codebook() * 2.0**-60
    target = torch.arange(40) % 64
    x = codebook[target] * 0.9
    assert torch.equal(nearest(x, codebook, x_checked=True)[0], target)
    assert torch.equal(nearest(x, codebook)[0], target)


def test_nearest_accepts_values_up_to_its_limit_and_is_right_there():
    codebook = unit_codebook()
    scale = max_abs_value(16) / 2
    x = codebook[:8] * scale
    indices, distances = nearest(x, codebook)
    assert torch.equal(indices, torch.arange(8)) and torch.isfinite(distances).all()


def test_nearest_on_an_empty_batch_returns_empty_results():
    indices, distances = nearest(torch.empty(0, 16), unit_codebook())
    assert indices.shape == (0,) and indices.dtype == torch.long and distances.shape == (0,)


def test_device_search_path_runs_on_cpu_and_matches_the_reference():
    """The accelerator path (no host sync) forced on CPU, tiles of every shape, against float64."""
    generator = torch.Generator().manual_seed(1)
    x, codebook = torch.randn(300, 8, generator=generator), torch.randn(257, 8, generator=generator)
    reference = torch.cdist(x.double(), codebook.double()).argmin(1)
    for chunk_size in (None, 7, 64, 257):
        assert torch.equal(_search_fp32_device(x, codebook, chunk_size), reference), chunk_size


def test_device_search_path_needs_no_host_sync():
    """On the meta device any data-dependent host read (``bool(t)``, ``.item()``, ``.nonzero()``)
    raises: the whole search must be expressible without one. Settling near ties syncs, but inside
    a custom op that a graph holds whole (its fake form runs here); without it nothing syncs at all
    (an accelerator with ``check_finite=False``)."""
    x, codebook = torch.empty(300, 8, device="meta"), torch.empty(257, 8, device="meta")
    assert _search_fp32_device(x, codebook, 64, settle=False).shape == (300,)
    assert _search_fp32_device(x, codebook, 64).shape == (300,)
    with pytest.raises((RuntimeError, NotImplementedError)):
        _search_fp32(x, codebook, 64)  # the CPU path does sync per tile: the probe can tell
    with pytest.raises((RuntimeError, NotImplementedError)):
        search._settle(x, codebook, x, codebook, codebook[:, 0], x[:, 0].long(), x[:, 0], x[:, 0].bool(), 64)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "name, option, value, error",
    [
        ("simvq", "rotation_trick", "no", TypeError),
        ("vq", "rotation_trick", 1, TypeError),
        ("simvq", "beta", "0.25", TypeError),
        ("simvq", "beta", -1, ValueError),
        ("simvq", "seed", "0", TypeError),
        ("vq", "seed", "0", TypeError),
        ("residual", "seed", "0", TypeError),
        ("vq_ema", "ema_decay", "0.99", TypeError),
        ("vq_ema", "ema_decay", 1.5, ValueError),
        ("cvq", "temperature", 0, ValueError),
        ("affine", "affine_momentum", 5, ValueError),
        ("fsq", "codebook_size", 16.0, TypeError),
        ("fsq", "seed", "0", TypeError),
        ("lfq", "seed", 1.5, TypeError),
        ("simvq", "codebook_size", 16.0, TypeError),
        ("lfq", "beta", float("nan"), ValueError),
        ("sqvae", "kl_weight", -1, ValueError),
        ("simvq", "channel_first", "yes", TypeError),
        ("simvq", "chunk_size", 0, ValueError),
    ],
)
def test_bad_options_fail_at_construction_naming_the_option(name, option, value, error):
    with pytest.raises(error, match=option):
        build_quantizer(name, **{**SMALL, option: value})


def test_a_codebook_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match="codebook_size=2147483648 needs .* GiB"):
        build_quantizer("vq", dim=8, codebook_size=2**31)


def test_unknown_options_fail_naming_the_option():
    for name in list_quantizers():
        with pytest.raises(TypeError, match="no_such_option"):
            build_quantizer(name, **SMALL, no_such_option=1)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("name", list_quantizers())
def test_huge_inputs_are_refused_not_turned_into_inf_or_nan(name):
    quantizer = build_quantizer(name, **SMALL)
    with pytest.raises(ValueError, match="z holds values up to .* rescale"):
        quantizer(torch.randn(32, 16) * 1e20)


@pytest.mark.parametrize("name", list_quantizers())
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused_naming_z(name, value):
    z = torch.randn(4, 8, 16)
    z[2, 5, 7] = value
    for training in (True, False):
        with pytest.raises(ValueError, match="^z contains NaN or Inf"):
            build_quantizer(name, **SMALL).train(training)(z)


# Searches whose query is not z, so they check it: vq_l2 searches a learned projection of z;
# cvq's training anchor search swaps the roles (the code table asks for its nearest batch rows).
OTHER_QUERIES = {("vq_l2", True): 1, ("vq_l2", False): 1, ("cvq", True): 1}


@pytest.fixture
def checked_values(monkeypatch):
    """The names of the arguments ``check_values`` is called on, in order (one pass and one host
    sync each)."""
    import simvq.quantizers.base as base
    import simvq.search as search

    names = []
    original = search.check_values

    def recording(argument, t, **options):
        names.append(argument)
        return original(argument, t, **options)

    monkeypatch.setattr(search, "check_values", recording)
    monkeypatch.setattr(base, "check_values", recording)
    return names


@pytest.mark.parametrize("name", list_quantizers())
def test_a_forward_checks_its_input_once(name, checked_values):
    """``z`` is checked where it comes in; a search on it must not check it again, only the
    codebook. (A first training step's k-means is left out: ``test_kmeans_checks_its_data_once``.)"""
    torch.manual_seed(0)
    quantizer = build_quantizer(name, **SMALL)
    quantizer(torch.randn(4, 8, 16))  # k-means initialisations happen on this step
    for training in (True, False):
        checked_values.clear()
        quantizer.train(training)(torch.randn(4, 8, 16))
        assert checked_values.count("z") == 1, (training, checked_values)
        assert checked_values.count("x") == OTHER_QUERIES.get((name, training), 0), (training, checked_values)
    checked_values.clear()
    quantizer.encode(torch.randn(4, 8, 16))
    assert checked_values.count("z") == 1, checked_values
    assert checked_values.count("x") == OTHER_QUERIES.get((name, False), 0), checked_values


def test_kmeans_checks_its_data_once(checked_values):
    from simvq.quantizers.codebook_updates import kmeans

    kmeans(torch.randn(64, 16), 8, iters=5, generator=torch.Generator().manual_seed(0))
    assert checked_values == ["codebook", "x"] + ["codebook"] * 4  # then the moved centroids only


@pytest.mark.parametrize("name", list_quantizers())
def test_the_largest_accepted_inputs_give_finite_outputs_and_losses(name):
    quantizer = build_quantizer(name, **SMALL).eval()
    z = (torch.rand(32, 16) * 2 - 1) * max_abs_value(16)
    out = quantizer(z.requires_grad_(True))
    assert torch.isfinite(out.quantized).all() and torch.isfinite(out.loss)
    torch.testing.assert_close(out.quantized, decode(quantizer, out), rtol=1e-4, atol=1e-3 * max_abs_value(16))


@pytest.mark.parametrize("name", list_quantizers())
def test_the_largest_accepted_inputs_train_with_finite_gradients_or_a_clear_error(name):
    torch.manual_seed(0)
    quantizer = build_quantizer(name, **SMALL).train()
    z = ((torch.rand(32, 16) * 2 - 1) * max_abs_value(16)).requires_grad_(True)
    try:
        out = quantizer(z)
    except ValueError as error:  # refusing is allowed (k-means data beyond the bound), naming what it checked
        assert "in magnitude" in str(error)
        return
    (out.loss + out.quantized.mean()).backward()  # fsq has no loss: its gradient comes through the values
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()
    for param_name, param in quantizer.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), param_name


def test_channel_first_errors_report_the_callers_shape():
    quantizer = build_quantizer("simvq", dim=4, codebook_size=8, channel_first=True)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 3, 4\)"):
        quantizer(torch.randn(2, 3, 3, 4))


@pytest.mark.parametrize("name", ["fsq", "lfq", "vq_l2", "simvq", "vq", "sqvae"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_converted_modules_still_quantize(name, dtype):
    quantizer = build_quantizer(name, **SMALL).to(dtype).eval()
    out = quantizer(torch.randn(8, 16, dtype=dtype))
    assert out.quantized.dtype == dtype
    torch.testing.assert_close(out.quantized.float(), decode(quantizer, out).float(), rtol=1e-2, atol=1e-2)


def test_fsq_refuses_a_state_dict_of_other_levels_and_loads_old_ones():
    saved = build_quantizer("fsq", dim=8, levels=[8, 5, 5, 5])
    other = build_quantizer("fsq", dim=8, levels=[5, 5, 5, 8])  # same projection shapes
    with pytest.raises(RuntimeError, match=r"levels \[8, 5, 5, 5\]"):
        other.load_state_dict(saved.state_dict())
    with pytest.raises(RuntimeError, match="levels"):
        build_quantizer("fsq", dim=8, levels=[8, 5, 5]).load_state_dict(saved.state_dict(), strict=False)
    old_format = {k: v for k, v in saved.state_dict().items() if k != "_levels"}  # saved before levels were
    build_quantizer("fsq", dim=8, levels=[8, 5, 5, 5]).load_state_dict(old_format)


def test_simvq_eval_cache_notices_writes_through_data():
    """The weight-EMA swap of the official code writes ``p.data.copy_()``: no version bump."""
    quantizer = build_quantizer("simvq", dim=4, codebook_size=8, seed=0).eval()
    z = torch.randn(6, 4)
    quantizer.encode(z)
    for parameter in quantizer.proj.parameters():
        parameter.data.copy_(torch.randn_like(parameter))
    expected = F.linear(quantizer.basis, quantizer.proj.weight, quantizer.proj.bias)
    assert torch.equal(quantizer.codebook(), expected)
    reference = torch.cdist(z.double(), expected.double()).argmin(1)
    assert torch.equal(quantizer.encode(z), reference)
