"""Mixed precision and torch.compile: codes under bf16 autocast equal the float32 codes (the search
and losses run in float32), a bf16-mixed training run works, and every quantizer compiles with
``fullgraph=True`` in train and eval mode, giving eager mode's results."""

import shutil

import pytest
import torch

from simvq.quantizers import CodebookQuantizer, build_quantizer, list_quantizers

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

HAS_CXX = any(shutil.which(compiler) for compiler in ("g++", "c++", "clang++"))


@pytest.mark.parametrize("name", list_quantizers())
def test_codes_under_bf16_autocast_equal_float32_codes(name):
    torch.manual_seed(0)
    quantizer = build_quantizer(name, dim=16, codebook_size=64).eval()
    z = torch.randn(4, 9, 16)
    reference = quantizer(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = quantizer(z)
    assert torch.equal(mixed.codes, reference.codes)
    assert mixed.loss.dtype == torch.float32
    torch.testing.assert_close(mixed.quantized, reference.quantized)
    if isinstance(quantizer, CodebookQuantizer):  # bf16 inputs are searched exactly, in float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(quantizer.encode(z.bfloat16()), quantizer.encode(z.bfloat16().float()))


def _compare_compiled(name, *, training, backend, steps=1, **options):
    """``steps`` forwards (and backwards) of an eager and a compiled copy, both seeded alike and
    fed the same global random stream: codes, outputs, losses, gradients and buffers must match."""
    options = {"dim": 8, "codebook_size": 64, "seed": 0, **options}
    torch.manual_seed(0)
    eager = build_quantizer(name, **options).train(training)
    torch.manual_seed(0)
    compiled_module = build_quantizer(name, **options).train(training)
    compiled = torch.compile(compiled_module, fullgraph=True, backend=backend)
    # aot_eager runs the very ops eager runs: bit for bit; inductor fuses and may round otherwise
    close = (lambda a, b, **kw: torch.testing.assert_close(a, b, rtol=0, atol=0, **kw)) if backend == "aot_eager" else torch.testing.assert_close
    for step in range(steps):
        z = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(step))
        z_eager, z_compiled = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        # the same global random stream for both calls (Gumbel noise, unseeded draws)
        torch.manual_seed(100 + step)
        expected = eager(z_eager)
        torch.manual_seed(100 + step)
        got = compiled(z_compiled)
        assert torch.equal(got.codes, expected.codes), step
        close(got.quantized, expected.quantized)
        close(got.loss, expected.loss)
        if training:
            (expected.loss + expected.quantized.square().mean()).backward()
            (got.loss + got.quantized.square().mean()).backward()
            close(z_compiled.grad, z_eager.grad)
            for (param_name, a), b in zip(eager.named_parameters(), compiled_module.parameters()):
                if a.grad is not None:
                    close(b.grad, a.grad, msg=f"{param_name} (step {step})")
        for (buffer_name, a), b in zip(eager.named_buffers(), compiled_module.buffers()):
            close(b, a, msg=f"{buffer_name} (step {step})")  # EMA statistics, restarts, k-means alike


# Options that take other code paths than a preset's defaults: draws without a seed (the global
# RNG), steps without a dead code (with 20 tokens for 64 codes some die on every step otherwise),
# restarts on a loss-trained codebook, k-means into an EMA codebook, random anchors.
VARIANTS = {
    "vq_reset-unseeded": ("vq_reset", {"seed": None}),
    "vq_reset-none-dead": ("vq_reset", {"dead_code_threshold": 0.0}),
    "vq_reset-no-ema": ("vq_reset", {"ema_decay": None}),
    "vq_kmeans-ema": ("vq_kmeans", {"ema_decay": 0.99}),
    "vq_kmeans-unseeded": ("vq_kmeans", {"seed": None}),
    "cvq-random-anchor": ("cvq", {"anchor": "random"}),
    "affine-running": ("affine", {"affine": "running"}),
    "affine-alternating": ("affine", {"alternating_lr": 50.0}),
}
# What does not capture, and why. The alternating step is vqtorch's in-place SGD on E inside the
# forward: it takes ``torch.autograd.grad``, which dynamo traces only when asked to (below).
NOT_CAPTURED = {
    ("affine-alternating", True): "torch.autograd.grad inside forward; dynamo's trace_autograd_ops is off by default",
}


def _capture_cases():
    for case in [*list_quantizers(), *VARIANTS]:
        for training in (True, False):
            reason = NOT_CAPTURED.get((case, training))
            marks = [pytest.mark.xfail(strict=True, raises=torch._dynamo.exc.Unsupported, reason=reason)] if reason else []
            yield pytest.param(case, training, marks=marks, id=f"{case}-{'train' if training else 'eval'}")


@pytest.mark.parametrize(("case", "training"), _capture_cases())
def test_fullgraph_capture(case, training):
    """The whole forward (and backward) in one graph, checked without code generation (fast), over
    three steps: the first k-means step and the later ones, restarts and EMA updates in between.
    Data-dependent draws (restarts, k-means, anchors) are custom ops, so they capture too."""
    name, options = VARIANTS.get(case, (case, {}))
    torch._dynamo.reset()
    _compare_compiled(name, training=training, backend="aot_eager", steps=3, **options)


def test_alternating_step_captures_with_traced_autograd():
    """The one case above that does not capture by default does once dynamo traces autograd."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        _compare_compiled("affine", training=True, backend="aot_eager", steps=3, alternating_lr=50.0)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CXX, reason="torch.compile's CPU backend (inductor) needs a C++ compiler; none on PATH")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ["simvq", "vq_reset", "vq_kmeans"])  # the last two: the draws' custom ops
def test_inductor_compiles(name, training):
    torch._dynamo.reset()
    _compare_compiled(name, training=training, backend="inductor", steps=3)


def test_bf16_mixed_training_run(tmp_path):
    pytest.importorskip("lightning")
    import json

    from simvq.train.config import load_config
    from simvq.train.image import train_tokenizer

    config = load_config(None, [
        f"out_dir={tmp_path}", "data.batch_size=8", "model.channels=8", "model.channel_multipliers=[1,1]",
        "model.downsamplings=1", "model.num_res_blocks=0", "model.dim=8", "quantizer.codebook_size=32",
        "trainer.max_steps=3", "trainer.log_every=1", "trainer.progress_bar=false", "trainer.accelerator=cpu",
        "trainer.precision=bf16-mixed",
    ])
    train_tokenizer(config, evaluate=False)
    assert json.loads((tmp_path / "progress.json").read_text())["global_step"] == 3
    from simvq.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_run(tmp_path)
    images = torch.rand(2, 1, 28, 28)
    model = tokenizer.model
    latents = model.encode_latents(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.quantizer.encode(latents)
    assert torch.equal(mixed, model.quantizer.encode(latents))
