"""`simvq export-onnx`: encode.onnx and decode.onnx of tiny trained runs (a few Adam steps), run by
onnxruntime against PyTorch on the test split: every code equal, decoded outputs within the stated
tolerance; dynamic batch, and dynamic length for audio (ragged lengths, down to one sample); simvq,
vq, fsq and residual images and a simvq speech codec; the quantizers that cannot export refused."""

import json

import pytest
import torch

from helpers import quick_run, tiny_audio_overrides, tiny_image_config, write_voice_folders
from simvq.cli import main
from simvq.data import FashionMNIST
from simvq.runs import load_recipe
from simvq.tokenizer import Tokenizer

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")

TEST_ITEMS = 64  # the first 64 Fashion-MNIST test images


@pytest.fixture(scope="module")
def training_batches():
    images = FashionMNIST("test")
    return [torch.stack([images[i] for i in range(start, start + 16)]) for start in range(1000, 1048, 16)]


def image_run(root, name, batches, *overrides, steps=3):
    config = tiny_image_config(root / name, "model.channel_multipliers=[1,1,2]", "model.dim=16", "quantizer.codebook_size=64",
                               f"quantizer.name={name}", *overrides)
    return quick_run(config, batches, steps=steps)


def session(path):
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_export_onnx_gives_pytorchs_codes_on_the_test_split_at_any_batch_size(training_batches, tmp_path, capsys):
    run = image_run(tmp_path, "simvq", training_batches)
    assert main(["export-onnx", str(run), "--check", str(TEST_ITEMS)]) == 0
    out = run / "onnx"
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert report["items"] == TEST_ITEMS and report["codes"] == TEST_ITEMS * 49
    assert report["codes_equal"] and report["mismatched_codes"] == 0
    assert report["decode_max_abs_error"] <= report["decode_tolerance"] == 1e-4
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["check"] == report and meta["encode"]["inputs"] == {"images": ["batch", 1, 28, 28]}
    assert meta["codebook_size"] == 64 and meta["recipe"] == "image"

    tokenizer, encode, decode = Tokenizer.from_run(run), session(out / "encode.onnx"), session(out / "decode.onnx")
    images = torch.stack([FashionMNIST("test")[i] for i in range(100, 107)])
    for batch in (images[:1], images):  # dynamic batch
        codes = torch.from_numpy(encode.run(None, {"images": batch.numpy()})[0])
        assert codes.dtype == torch.int64 and torch.equal(codes, tokenizer.encode(batch))
        decoded = torch.from_numpy(decode.run(None, {"codes": codes.numpy()})[0])
        torch.testing.assert_close(decoded, tokenizer.decode(codes), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, options", [
    ("vq", []),
    ("fsq", ["quantizer.options={levels: [4, 4, 4]}"]),
    ("residual", ["quantizer.options.num_quantizers=2"]),
])
def test_vq_fsq_and_residual_export_exactly(name, options, training_batches, tmp_path):
    from simvq.export.onnx import check_onnx, export_onnx

    run = image_run(tmp_path, name, training_batches, *options)
    out = export_onnx(run, tmp_path / "graphs")
    report = check_onnx(run, out, count=TEST_ITEMS)
    stages = 2 if name == "residual" else 1
    assert report["codes"] == TEST_ITEMS * 49 * stages
    assert report["codes_equal"] and report["decode_within_tolerance"], report
    if name == "residual":
        assert json.loads((out / "onnx.json").read_text())["encode"]["outputs"]["codes"] == ["batch", 7, 7, "stages"]


def test_a_speech_codec_exports_with_dynamic_batch_and_length(tmp_path):
    from simvq.export.onnx import check_onnx, export_onnx

    root = write_voice_folders(tmp_path / "voices")
    config = load_recipe("configs/speech.yaml", tiny_audio_overrides(root, steps=3))
    clips = torch.randn(2, 1, 3200, generator=torch.Generator().manual_seed(0)) * 0.1
    run = quick_run(config, [clips])
    out = export_onnx(run)
    # the test split's utterances (whole, and cut to ragged lengths)
    report = check_onnx(run, out, count=8)
    assert report["items"] == 4 and report["codes_equal"] and report["decode_within_tolerance"], report
    tokenizer, encode, decode = Tokenizer.from_run(run), session(out / "encode.onnx"), session(out / "decode.onnx")
    generator = torch.Generator().manual_seed(1)
    for batch, samples in ((1, 1), (2, 319), (1, 320), (3, 321), (2, 5000)):
        wav = (torch.rand(batch, samples, generator=generator) * 2 - 1) * 0.3
        codes = torch.from_numpy(encode.run(None, {"wav": wav.numpy()})[0])
        assert codes.shape == (batch, -(-samples // 320)) and torch.equal(codes, tokenizer.encode(wav)), samples
        decoded = torch.from_numpy(decode.run(None, {"codes": codes.numpy()})[0])
        assert decoded.shape == (batch, codes.shape[1] * 320)
        torch.testing.assert_close(decoded, tokenizer.decode(codes), rtol=0, atol=1e-4)
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["sample_rate"] == 16000 and meta["hop_length"] == 320 and meta["encode"]["inputs"] == {"wav": ["batch", "samples"]}


def test_a_quantizer_that_cannot_export_is_refused_by_name(training_batches, tmp_path, capsys):
    run = image_run(tmp_path, "qinco", training_batches, "quantizer.options.num_quantizers=2", steps=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["export-onnx", str(run)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "quantizer 'qinco' cannot be exported to ONNX" in message and "exportable: affine, fsq" in message
    assert not (run / "onnx").exists()
