"""The Lightning recipe end to end on a tiny model: loss falls, checkpoints round-trip through the
Tokenizer, interrupted runs resume without redoing steps, GAN + EMA steps count once."""

import csv
import json
import subprocess
import sys

import pytest
import torch

import simvq
from helpers import crash_at, tiny_image_config, train
from simvq.data import FashionMNIST
from simvq.tokenizer import Tokenizer, checkpoint_model_state

pytest.importorskip("lightning")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


IMAGE_RUN = (
    "data.batch_size=16",
    "model.channel_multipliers=[1,1,2]",
    "model.dim=16",
    "quantizer.codebook_size=64",
    "trainer.log_every=1",
    "trainer.checkpoint_every=10",
    "eval.max_images=64",
    "eval.grid_images=8",
)


def tiny_config(out_dir, *overrides):
    return tiny_image_config(out_dir, *IMAGE_RUN, *overrides)


def read_log(run_dir, key):
    with open(run_dir / "logs" / "csv" / "version_0" / "metrics.csv") as handle:
        return [(int(row["step"]), float(row[key])) for row in csv.DictReader(handle) if row.get(key)]


def test_import_simvq_does_not_load_training_libraries():
    code = (
        "import sys, simvq; from simvq import Tokenizer; "
        "heavy = [m for m in ('lightning', 'torchmetrics', 'matplotlib', 'scipy') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(simvq.__file__).parents[1])})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(tiny_config(run_dir, "trainer.max_steps=60"))
    return run_dir


def test_short_training_lowers_the_loss_and_writes_the_run_directory(trained_run):
    losses = [value for _, value in read_log(trained_run, "train/reconstruction")]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5
    for name in ("model.safetensors", "config.yaml", "config.json", "metrics.json", "reconstructions.png",
                 "code_usage_histogram.png", "usage_over_steps.png", "checkpoints/last.ckpt"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "logs" / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["global_step"] == 60 and metrics["tokens"] == 64 * 7 * 7
    assert 0 < metrics["usage"] <= 1 and metrics["psnr"] > 10


def test_tokenizer_round_trip_matches_a_brute_force_search(trained_run):
    tokenizer = simvq.Tokenizer.from_run(trained_run)
    images = torch.stack([FashionMNIST("test")[i] for i in range(8)])
    codes = tokenizer.encode(images)
    assert codes.shape == (8, 7, 7) and codes.dtype == torch.int64
    # independent computation: argmin of torch.cdist against the effective codebook W(C)
    model = tokenizer.model
    latents = model.encode_latents(images).reshape(-1, 16)
    quantizer = model.quantizer
    codebook = quantizer.basis @ quantizer.proj.weight.T + quantizer.proj.bias
    assert torch.equal(codes.flatten(), torch.cdist(latents, codebook).argmin(1))
    decoded = tokenizer.decode(codes)
    expected = model.decode_latents(codebook[codes]).clamp(0, 1)
    assert torch.allclose(decoded, expected, atol=1e-5)
    # the Lightning checkpoint holds the same weights as the exported safetensors
    from_checkpoint = Tokenizer.from_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    assert torch.equal(from_checkpoint.encode(images), codes)
    with pytest.raises(ValueError, match="channel"):
        tokenizer.encode(torch.rand(2, 3, 28, 28))


def test_eval_cli_and_evaluate_run_agree(trained_run):
    from simvq.cli import main
    from simvq.train.image import evaluate_run

    metrics = evaluate_run(trained_run, fid_images=0, max_images=32, progress=False, write=False)
    assert main(["eval", str(trained_run / "model.safetensors"), "--fid-images", "0", "--max-images", "32", "--quiet"]) == 0
    written = json.loads((trained_run / "metrics.json").read_text())
    assert written["images"] == 32 and written["psnr"] == pytest.approx(metrics["psnr"])


def test_interrupted_training_resumes_without_redoing_steps(tmp_path, monkeypatch):
    from simvq.train import image

    train(tiny_config(tmp_path, "trainer.max_steps=20"), evaluate=False)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["global_step"] == 20 and progress["sessions"][0]["steps_run"] == 20

    # continue towards 40 but crash at step 30: the exception hook saves a checkpoint at step 30
    original = crash_at(monkeypatch, image.ImageTokenizerModule, 30)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tmp_path, "trainer.max_steps=40"), evaluate=False)
    monkeypatch.setattr(image.ImageTokenizerModule, "training_step", original)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 30

    train(tiny_config(tmp_path, "trainer.max_steps=40"), evaluate=False)
    sessions = json.loads((tmp_path / "progress.json").read_text())["sessions"]
    assert sessions[-1] == {**sessions[-1], "start_step": 30, "end_step": 40, "steps_run": 10}
    assert all(0 < s["cpu_seconds"] for s in sessions)  # each session's own CPU time, for a campaign's ledger
    # each session's precision as trained ("auto" follows the machine), which a results row records
    from simvq.experiments.results_file import trained_precision
    from simvq.train.core import resolve_precision

    assert {s["precision"] for s in sessions} == {resolve_precision("auto", "cpu")} == {trained_precision(tmp_path)}
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
    # every step from 1 to 40 was logged once: none lost, none redone
    steps = [step for step, _ in read_log(tmp_path, "train/reconstruction")]
    assert sorted(steps) == list(range(40))

    # a finished run asked for no more steps trains nothing; a changed model is refused
    train(tiny_config(tmp_path, "trainer.max_steps=40"), evaluate=False)
    assert json.loads((tmp_path / "progress.json").read_text())["sessions"][-1]["steps_run"] == 0
    with pytest.raises(ValueError, match="different `model` config"):
        train(tiny_config(tmp_path, "trainer.max_steps=50", "model.dim=32"), evaluate=False)


def test_discriminator_and_ema_steps_count_once(tmp_path):
    config = tiny_config(
        tmp_path, "trainer.max_steps=8", "loss.discriminator=true", "loss.discriminator_start=4",
        "loss.discriminator_channels=8", "loss.discriminator_layers=2", "optim.ema_decay=0.5",
        "optim.warmup_steps=4", "quantizer.name=vq",
    )
    train(config, evaluate=False)
    assert json.loads((tmp_path / "progress.json").read_text())["global_step"] == 8
    assert [step for step, _ in read_log(tmp_path, "train/discriminator")] == [4, 5, 6, 7]
    lrs = [value for _, value in read_log(tmp_path, "train/lr")]
    assert lrs[:4] == pytest.approx([3e-3 * k / 4 for k in (1, 2, 3, 4)])  # linear warm-up
    # the exported weights are the EMA copy, not the live model
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    exported = Tokenizer.from_run(tmp_path).model.state_dict()
    ema = checkpoint_model_state(tmp_path / "checkpoints" / "last.ckpt")
    for name, value in exported.items():
        assert torch.equal(value, ema[name]), name
    assert any(not torch.equal(state[f"model.{n}"], ema[n]) for n in ema)


def test_the_usage_count_over_other_splits_resumes_for_the_same_weights(trained_run, tmp_path, monkeypatch):
    """evaluate_run hands each extra split's count a partial file in the run directory, named by the
    weights' content, so a killed count resumes there and stale counts of other weights are ignored."""
    import shutil

    from simvq.data.tokens import file_sha256
    from simvq.metrics import image as image_metrics
    from simvq.train.image import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    config["eval"]["usage_splits"] = ["train", "test"]
    (run / "config.json").write_text(json.dumps(config))
    seen, count = [], image_metrics.code_histogram

    def recording(*args, **kwargs):
        seen.append((kwargs.get("resume"), kwargs.get("fingerprint")))
        return count(*args, **kwargs)

    monkeypatch.setattr(image_metrics, "code_histogram", recording)
    metrics = evaluate_run(run, fid_images=0, max_images=32, progress=False, write=True)
    assert seen == [(run / "code_counts_train.rank0.partial.safetensors", file_sha256(run / "model.safetensors"))]
    assert metrics["tokens"] == (60_000 + 32) * 49 and not list(run.glob("*.partial.safetensors"))
