"""Padding masks, checked for every registered quantizer (and a few option variants).

The reference for a masked batch is the unmasked path on the batch of its real tokens alone,
``z[mask]`` as one ``(N_real, dim)`` input: a padded, masked batch must give the same outputs at its
real positions (quantized, codes, sc_vae's coefficients), the same loss, loss terms and metrics, the
same gradients, and leave the quantizer (every parameter and buffer, the seeded training streams
included) and the global random stream where that batch leaves them, bit for bit. Padded positions
hold NaN, so a quantizer that looked at them would show it. Masked positions hold the documented
fill: code -1 in every stage, zero vectors, zero coefficients, and no gradient.
"""

from __future__ import annotations

import pytest
import torch

from simvq.quantizers import PADDING_CODE, build_quantizer
from test_quantizer_contract import CODEBOOK_SIZE, DIM, NAMES, batch, build, decode_like_forward, warmed_up

# options that take other code paths than a preset's defaults (draws from the global RNG, random
# anchors, the contrastive term, running affine statistics, the in-forward SGD step, exact entropy)
VARIANTS = {
    "vq_reset-unseeded": ("vq_reset", {"seed": None}),
    "vq_kmeans-unseeded": ("vq_kmeans", {"seed": None}),
    "vq_kmeans-ema": ("vq_kmeans", {"ema_decay": 0.99}),
    "cvq-random-contrastive": ("cvq", {"anchor": "random", "contrastive": True}),
    "affine-running": ("affine", {"affine": "running"}),
    "affine-alternating": ("affine", {"alternating_lr": 50.0}),
    "lfq-exact": ("lfq", {"entropy_mode": "exact"}),
    "residual-vq_reset": ("residual", {"inner": "vq_reset", "num_quantizers": 2}),
}
CASES = {**{name: (name, {}) for name in NAMES}, **VARIANTS}
STEPS = 2


def construct(name: str, *, training: bool, **options):
    """``name`` built as the contract tests build it (``seed=None`` in ``options``: unseeded, the
    global RNG at 0); out of training mode after one training forward, as ``warmed_up``."""
    if "seed" in options:
        torch.manual_seed(0)
        quantizer = build_quantizer(name, dim=DIM, codebook_size=CODEBOOK_SIZE, **options)
    else:
        quantizer = build(name, **options)
    if not training:
        quantizer(batch(256, DIM, seed=5))
        quantizer.eval()
    return quantizer


def padded_batch(*, channel_first: bool, seed: int):
    """``(z, mask)``: 4 sequences of lengths 40, 7, 23 and 1 padded to 40 (channel-last ``(B, T,
    dim)``), or a ``(B, dim, 6, 7)`` feature map with a random mask (channel-first); padding is NaN."""
    generator = torch.Generator().manual_seed(seed)
    if channel_first:
        mask = torch.rand(3, 6, 7, generator=generator) < 0.7
        mask[0, 0, 0] = True
        z = torch.randn(3, 6, 7, DIM, generator=generator)
    else:
        lengths = torch.tensor([40, 7, 23, 1])
        mask = torch.arange(40) < lengths[:, None]
        z = torch.randn(4, 40, DIM, generator=generator)
    z[~mask] = float("nan")
    return (z.movedim(-1, 1) if channel_first else z), mask


def real_tokens(z: torch.Tensor, mask: torch.Tensor, *, channel_first: bool) -> torch.Tensor:
    """The batch of the real tokens alone, ``(N_real, dim)`` (also a channel-first ``(B, dim)``)."""
    return (z.movedim(1, -1) if channel_first else z)[mask]


def state(quantizer) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, non-persistent ones (the seeded training streams) included."""
    return {**dict(quantizer.named_parameters()), **dict(quantizer.named_buffers())}


def assert_same_state(got, expected, where: str) -> None:
    got, expected = state(got), state(expected)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), f"{key} ({where})"


def run(quantizer, z, *, seed: int, **kwargs):
    """One forward from the global random stream at ``seed``; the draw that comes after it."""
    torch.manual_seed(seed)
    out = quantizer(z, **kwargs)
    return out, torch.rand(8)


def backward(out, weight) -> None:
    (out.loss + (out.quantized.float() * weight).sum()).backward()


@pytest.mark.parametrize("channel_first", [False, True], ids=["channel_last", "channel_first"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", CASES)
def test_a_masked_batch_equals_the_batch_of_its_real_tokens(case, training, channel_first):
    name, options = CASES[case]
    masked = construct(name, training=training, channel_first=channel_first, **options)
    reference = construct(name, training=training, channel_first=channel_first, **options)
    assert_same_state(masked, reference, "start")
    for step in range(STEPS):
        z, mask = padded_batch(channel_first=channel_first, seed=step)
        z = z.requires_grad_()
        z_real = real_tokens(z, mask, channel_first=channel_first).detach().requires_grad_()
        out, next_draw = run(masked, z, mask=mask, seed=100 + step)
        expected, expected_draw = run(reference, z_real, seed=100 + step)

        quantized = out.quantized.movedim(1, -1) if channel_first else out.quantized
        expected_quantized = expected.quantized.movedim(1, -1) if channel_first else expected.quantized
        assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
        assert torch.equal(quantized[mask], expected_quantized), step
        assert torch.equal(out.codes[mask], expected.codes), step
        assert out.codes.shape[: mask.ndim] == mask.shape
        assert (out.codes[~mask] == PADDING_CODE).all() and (quantized[~mask] == 0).all()
        for field in masked.decode_inputs:  # sc_vae's coefficients: the real ones, 0 at padding
            assert torch.equal(getattr(out, field)[mask], getattr(expected, field)) and (getattr(out, field)[~mask] == 0).all()
        assert torch.equal(out.loss, expected.loss), step
        assert out.losses.keys() == expected.losses.keys() and out.metrics.keys() == expected.metrics.keys()
        for key, value in expected.losses.items():
            assert torch.equal(out.losses[key], value), f"loss {key} (step {step})"
        for key, value in expected.metrics.items():
            assert torch.equal(out.metrics[key], value), f"metric {key} (step {step})"
        assert torch.equal(next_draw, expected_draw), f"the global random stream (step {step})"
        assert_same_state(masked, reference, f"after step {step}")

        weight = torch.randn(quantized.shape, generator=torch.Generator().manual_seed(50 + step))
        backward(out, weight.movedim(-1, 1) if channel_first else weight)
        backward(expected, weight[mask])
        grad = z.grad.movedim(1, -1) if channel_first else z.grad
        assert torch.equal(grad[mask], z_real.grad), step
        assert (grad[~mask] == 0).all(), "a gradient from a masked position"
        for (key, a), b in zip(masked.named_parameters(), reference.parameters()):
            assert (a.grad is None) == (b.grad is None), key
            if a.grad is not None:
                assert torch.equal(a.grad, b.grad), f"{key}.grad (step {step})"


@pytest.mark.parametrize("name", NAMES)
def test_a_mask_of_real_tokens_only_is_the_unmasked_path(name):
    masked, plain = build(name), build(name)
    z = batch(3, 20, DIM, seed=1)
    out, next_draw = run(masked, z, mask=torch.ones(3, 20, dtype=torch.bool), seed=5)
    expected, expected_draw = run(plain, z, seed=5)
    assert torch.equal(out.quantized, expected.quantized) and torch.equal(out.codes, expected.codes)
    assert torch.equal(out.loss, expected.loss) and torch.equal(next_draw, expected_draw)
    assert_same_state(masked, plain, "after one step")


@pytest.mark.parametrize("name", NAMES)
def test_masked_encode_and_decode(name):
    quantizer = warmed_up(name)
    z, mask = padded_batch(channel_first=False, seed=3)
    out = quantizer(z, mask=mask)
    codes = quantizer.encode(z, mask=mask)
    assert torch.equal(codes, out.codes)
    assert torch.equal(codes[mask], quantizer.encode(z[mask]))
    # decode ignores the codes (and coefficients) at masked positions and gives zeros there
    decoded = quantizer.decode(codes, mask=mask, **{n: getattr(out, n) for n in quantizer.decode_inputs})
    reference = decode_like_forward(quantizer, quantizer(z[mask]))
    assert torch.equal(decoded[mask], reference) and (decoded[~mask] == 0).all()
    torch.testing.assert_close(decoded, out.quantized, rtol=1e-5, atol=1e-5)
    scrambled = codes.masked_fill((~mask).reshape(*mask.shape, *([1] * quantizer.code_ndim)), 10**6)
    assert torch.equal(quantizer.decode(scrambled, mask=mask, **{n: getattr(out, n) for n in quantizer.decode_inputs}), decoded)
    # padding codes without the mask are refused, with the way out in the message
    with pytest.raises(ValueError, match=r"codes must lie in .*-1 marks padding: pass the mask"):
        quantizer.decode(codes, **{n: getattr(out, n) for n in quantizer.decode_inputs})
    # a real position's bad code is still reported
    bad = codes.clone()
    bad[0, 0] = quantizer.codebook_size
    with pytest.raises(ValueError, match="codes must lie in"):
        quantizer.decode(bad, mask=mask, **{n: getattr(out, n) for n in quantizer.decode_inputs})


def test_sc_vae_encode_sparse_takes_the_mask():
    quantizer = warmed_up("sc_vae")
    z, mask = padded_batch(channel_first=False, seed=4)
    codes, coefficients = quantizer.encode_sparse(z, mask=mask)
    real_codes, real_coefficients = quantizer.encode_sparse(z[mask])
    assert torch.equal(codes[mask], real_codes) and torch.equal(coefficients[mask], real_coefficients)
    assert (codes[~mask] == PADDING_CODE).all() and (coefficients[~mask] == 0).all()
    out = quantizer(z, mask=mask)
    assert torch.equal(codes, out.codes) and torch.equal(coefficients, out.coefficients)


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_mask_is_refused_naming_mask(name):
    quantizer = build(name)
    z = batch(3, 6, DIM)
    good = torch.ones(3, 6, dtype=torch.bool)
    for call in (quantizer, quantizer.encode):
        with pytest.raises(ValueError, match=r"mask must have the shape of z's token grid.*\(3, 6\), got \(3, 5\)"):
            call(z, mask=good[:, :5])
        with pytest.raises(ValueError, match=r"mask must have the shape .*got \(3, 6, 8\)"):
            call(z, mask=torch.ones(3, 6, DIM, dtype=torch.bool))
        with pytest.raises(TypeError, match="mask must be a bool tensor .*got torch.int64"):
            call(z, mask=good.long())
        with pytest.raises(TypeError, match="mask must be a bool torch.Tensor .*got list"):
            call(z, mask=good.tolist())
        with pytest.raises(ValueError, match="mask marks no real token"):
            call(z, mask=torch.zeros_like(good))
    codes = quantizer.encode(z)
    extra = {n: getattr(quantizer(z), n) for n in quantizer.decode_inputs}
    with pytest.raises(ValueError, match=r"mask must have the shape of the codes' token grid.*\(3, 6\), got \(6,\)"):
        quantizer.decode(codes, mask=good[0], **extra)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        quantizer.decode(codes, mask=good.float(), **extra)


def test_channel_first_masks_are_the_grid_without_the_channel_dimension():
    quantizer = build("vq", channel_first=True)
    z = batch(2, DIM, 5)  # (B, dim, T): the grid is (B, T)
    quantizer(z, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have the shape of z's token grid .*\(2, 5\), got \(2, 8\)"):
        quantizer(z, mask=torch.ones(2, DIM, dtype=torch.bool))


def test_values_at_masked_positions_are_not_checked_but_real_ones_are():
    quantizer = build("simvq")
    z = batch(2, 5, DIM)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    z[1, 3:] = float("inf")
    assert torch.isfinite(quantizer(z, mask=mask).loss)
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantizer(z)
    z[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantizer(z, mask=mask)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_masked_call_compiled_without_fullgraph_gives_eager_results():
    """The gather breaks the graph (fullgraph=True cannot capture it, see ``Quantizer``); without
    fullgraph the compiled module steps exactly as the eager one."""
    eager, compiled_module = build("vq_reset"), build("vq_reset")
    compiled = torch.compile(compiled_module, backend="aot_eager")
    try:
        for step in range(2):
            z, mask = padded_batch(channel_first=False, seed=step)
            expected, got = eager(z, mask=mask), compiled(z, mask=mask)
            assert torch.equal(got.codes, expected.codes) and torch.equal(got.quantized, expected.quantized)
            assert torch.equal(got.loss, expected.loss)
            assert_same_state(compiled_module, eager, f"after step {step}")
    finally:
        torch._dynamo.reset()
