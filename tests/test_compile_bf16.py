"""Mixed precision and torch.compile: codes under bf16 autocast equal the float32 codes (the search
and losses run in float32), a bf16-mixed training run works, and SimVQ and the VQ family compile
with ``fullgraph=True`` in train and eval mode."""

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


def _compare_compiled(name, *, training, backend):
    torch.manual_seed(0)
    eager = build_quantizer(name, dim=8, codebook_size=64, seed=0).train(training)
    torch.manual_seed(0)
    compiled_module = build_quantizer(name, dim=8, codebook_size=64, seed=0).train(training)
    compiled = torch.compile(compiled_module, fullgraph=True, backend=backend)
    z = torch.randn(4, 5, 8)
    z_eager, z_compiled = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    expected, got = eager(z_eager), compiled(z_compiled)
    assert torch.equal(got.codes, expected.codes)
    torch.testing.assert_close(got.quantized, expected.quantized)
    torch.testing.assert_close(got.loss, expected.loss)
    if training:
        (expected.loss + expected.quantized.square().mean()).backward()
        (got.loss + got.quantized.square().mean()).backward()
        torch.testing.assert_close(z_compiled.grad, z_eager.grad)
        for (param_name, a), b in zip(eager.named_parameters(), compiled_module.parameters()):
            if a.grad is not None:
                torch.testing.assert_close(b.grad, a.grad, msg=param_name)
        for (buffer_name, a), b in zip(eager.named_buffers(), compiled_module.buffers()):
            torch.testing.assert_close(b, a, msg=buffer_name)  # EMA statistics updated alike


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ["simvq", "vq", "vq_ema", "vq_l2"])
def test_fullgraph_capture(name, training):
    """The whole forward (and backward) in one graph, checked without code generation (fast)."""
    torch._dynamo.reset()
    _compare_compiled(name, training=training, backend="aot_eager")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CXX, reason="torch.compile's CPU backend (inductor) needs a C++ compiler; none on PATH")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_inductor_compiles_simvq(training):
    torch._dynamo.reset()
    _compare_compiled("simvq", training=training, backend="inductor")


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
