"""A user's mistakes, reported as such: every CLI verb through a table of bad arguments (one line on
stderr naming the argument, exit status 2, no traceback), the one place that sorts a failure into a
user's mistake or a bug (``simvq.cli.user_error``), runs that are never silently trained over,
evaluations that never write numbers that measured nothing, and the inference API naming ``images``,
``wav``, ``codes`` and ``length``."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
SMALL_IMAGE_RUN = ["model.channels=8", "model.norm_groups=4", "model.dim=8", "quantizer.codebook_size=16"]
QUICK_TRAIN = ["trainer.max_steps=2", "trainer.log_every=1", "trainer.checkpoint_every=1", "trainer.progress_bar=false",
               "trainer.accelerator=cpu", "trainer.precision=32-true", "data.batch_size=8", "eval.fid_images=0",
               "eval.grid_images=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Untrained run directories, written without training: an image tokenizer over a folder of 48
    random images (its config also saved as a recipe), a prior on it, and an audio codec; plus a
    plain file and a plain folder where the commands want something else."""
    from PIL import Image

    from simvq.models.prior import TokenPrior
    from simvq.runs import (
        WEIGHTS_FILE,
        build_model,
        load_config,
        load_recipe,
        save_config,
        save_weights,
    )
    from simvq.runs.prior import load_prior_config
    from simvq.train.prior import tokenizer_fingerprint

    root = tmp_path_factory.mktemp("user_errors")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(48):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(images / f"{i:02d}.png")
    config = load_config(ROOT / "configs/fmnist.yaml", ["data.name=image_folder", f"data.root={images}", "data.test_fraction=0.25",
                                                        "data.batch_size=8", *SMALL_IMAGE_RUN, f"out_dir={root / 'tokenizer'}"])
    tokenizer = root / "tokenizer"
    tokenizer.mkdir()
    save_config(config, tokenizer)
    (root / "recipe.yaml").write_text((tokenizer / "config.yaml").read_text())
    torch.manual_seed(0)
    save_weights(build_model(config), tokenizer / WEIGHTS_FILE)

    prior = root / "prior"
    prior.mkdir()
    prior_config = load_prior_config(ROOT / "configs/prior.yaml", [f"tokenizer={tokenizer}", "model.dim=16", "model.layers=1", "model.heads=2"])
    save_config(prior_config, prior)
    meta = {"tokenizer": str(tokenizer), "tokenizer_sha256": tokenizer_fingerprint(tokenizer), "codebook_size": 16, "grid": [7, 7],
            "num_classes": 0, "train_tokens": 36 * 49}
    (prior / "tokens.json").write_text(json.dumps(meta))
    save_weights(TokenPrior(16, grid=(7, 7), num_classes=0, dim=16, layers=1, heads=2), prior / WEIGHTS_FILE)

    audio = root / "audio"
    audio.mkdir()
    audio_config = load_recipe(ROOT / "configs/speech.yaml", [
        "model.channels=4", "model.dim=16", "model.decoder_width=32", "model.decoder_blocks=1", "quantizer.codebook_size=64"])
    save_config(audio_config, audio)
    save_weights(build_model(audio_config), audio / WEIGHTS_FILE)

    (root / "a_file").write_text("not a directory\n")
    (root / "a_folder").mkdir()
    return {"root": root, "tokenizer": tokenizer, "prior": prior, "audio": audio, "recipe": root / "recipe.yaml",
            "file": root / "a_file", "folder": root / "a_folder"}


def run_cli(argv, capsys):
    from simvq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(item) for item in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


NO_GPU = not torch.cuda.is_available()

# (argv with placeholders, text the one-line message must hold: the argument's name, or the path given)
BAD_ARGUMENTS = [
    # simvq train
    (["train", "{recipe}", *QUICK_TRAIN, "--out", "{file}"], "out_dir"),
    (["train", "{recipe}", *QUICK_TRAIN, "trainer.devices=0", "--out", "{root}/t_devices"], "trainer.devices"),
    pytest.param(["train", "{recipe}", *QUICK_TRAIN, "trainer.accelerator=gpu", "--out", "{root}/t_gpu"], "trainer.accelerator",
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    (["train", "{recipe}", *QUICK_TRAIN, "trainer.accelerator=tpu_v9", "--out", "{root}/t_accel"], "trainer.accelerator"),
    (["train", "{recipe}", *QUICK_TRAIN, "trainer.precision=99", "--out", "{root}/t_precision"], "trainer.precision"),
    (["train", "{recipe}", *QUICK_TRAIN, "model.norm_groups=3", "--out", "{root}/t_groups"], "model.norm_groups"),
    (["train", "{recipe}", *QUICK_TRAIN, "model.channels=0", "--out", "{root}/t_channels"], "model.channels"),
    # a finished run without its checkpoints, trained over by another quantizer; or by itself from scratch
    (["train", "{recipe}", *QUICK_TRAIN, "quantizer.name=vq", "--out", "{tokenizer}"], "out_dir: {tokenizer} was trained with a different `quantizer`"),
    (["train", "{recipe}", *QUICK_TRAIN, "--out", "{tokenizer}"], "out_dir: {tokenizer} holds this config's trained model.safetensors but no checkpoints"),
    (["train", "{recipe}", *QUICK_TRAIN, "--out", "{prior}"], "out_dir"),
    (["train", "{recipe}", *QUICK_TRAIN, "--bogus"], "--bogus"),
    (["train", "{root}/missing.yaml"], "missing.yaml"),
    # simvq eval
    (["eval", "{tokenizer}", "--batch-size", "-1"], "--batch-size"),
    (["eval", "{tokenizer}", "--batch-size", "0"], "--batch-size"),
    (["eval", "{tokenizer}", "--max-images", "0"], "--max-images"),
    (["eval", "{tokenizer}", "--fid-images", "-1"], "--fid-images"),
    (["eval", "{tokenizer}", "--device", "foo"], "--device"),
    pytest.param(["eval", "{tokenizer}", "--device", "cuda:0"], "--device", marks=pytest.mark.skipif(not NO_GPU, reason="has a GPU")),
    (["eval", "{prior}"], "simvq eval-gen"),
    (["eval", "{audio}", "--fid-images", "10"], "--fid-images"),
    (["eval", "{root}/nowhere"], "{root}/nowhere does not exist"),
    (["eval", "{file}"], "a_file"),
    # simvq prior train
    (["prior", "train", "{tokenizer}", "--out", "{file}"], "out_dir"),
    (["prior", "train", "{tokenizer}", "--out", "{tokenizer}", "--overwrite"], "out_dir"),
    (["prior", "train", "{tokenizer}", "--out", "{prior}", "model.dim=32", "model.heads=2", "model.layers=1"], "out_dir"),
    (["prior", "train", "{tokenizer}", "--out", "{root}/p_gpu", "trainer.devices=0", "--quiet"], "trainer.devices"),
    (["prior", "train", "{tokenizer}", "--bogus"], "--bogus"),
    (["prior", "train", "{root}/nowhere"], "nowhere"),
    # simvq sample
    (["sample", "{prior}", "--temperature", "nan"], "--temperature"),
    (["sample", "{prior}", "--temperature", "1e-45"], "--temperature"),
    (["sample", "{prior}", "--temperature", "-1"], "--temperature"),
    (["sample", "{prior}", "--out", "{folder}"], "--out"),
    (["sample", "{prior}", "--per-row", "-1"], "--per-row"),
    (["sample", "{prior}", "--per-row", "0"], "--per-row"),
    (["sample", "{prior}", "-n", "0"], "--num-samples"),
    (["sample", "{prior}", "--top-k", "0"], "--top-k"),
    (["sample", "{prior}", "--top-p", "1.5"], "--top-p"),
    (["sample", "{prior}", "--cfg", "nan"], "--cfg"),
    (["sample", "{prior}", "--seed", str(2**70)], "--seed"),
    (["sample", "{prior}", "--device", "foo"], "--device"),
    (["sample", "{prior}", "--class", "3"], "--class"),
    (["sample", "{tokenizer}"], "simvq eval"),
    # simvq eval-gen
    (["eval-gen", "{prior}", "--samples", "-1"], "--samples"),
    (["eval-gen", "{prior}", "--fid-samples", "-1"], "--fid-samples"),
    (["eval-gen", "{prior}", "--temperature", "inf"], "--temperature"),
    (["eval-gen", "{prior}", "--device", "foo"], "--device"),
    (["eval-gen", "{prior}", "--tune", "--temperature", "0.9"], "--temperature"),
    (["eval-gen", "{prior}", "--tune", "--tune-samples", "0"], "--tune-samples"),
    (["eval-gen", "{prior}", "--tune", "--tune-seed", "0"], "--tune-seed"),
    (["eval-gen", "{tokenizer}"], "simvq eval"),
    # simvq bench
    (["bench", "image", "--budget", "0"], "--budget"),
    (["bench", "image", "--sizes", "1"], "--sizes"),
    (["bench", "image", "--workers", "0"], "--workers"),
    (["bench", "image", "--seeds", "-1"], "--seeds"),
    (["bench", "image", "--out", "{file}"], "--out"),
    (["bench", "image", "--config", "{root}/missing.yaml"], "missing.yaml"),
    # simvq report
    (["report", "--results", "{root}/missing.csv"], "missing.csv"),
    (["report", "--results", "{folder}"], "--results"),
    (["report", "--speech", "{folder}"], "--speech"),
    (["report", "--results", "{file}", "--out", "{folder}"], "--out"),
    (["report", "--results", "{file}", "--out", "{root}/page.md", "--figures", "{file}"], "--figures"),
    (["report", "--results", "{file}", "--out", "{root}/page.md", "--kept", "{root}/no-such-folder"], "--kept"),
    # simvq demo
    (["demo", "--steps", "0"], "--steps"),
    (["demo", "--fid-images", "-1"], "--fid-images"),
    (["demo", "--out", "{file}"], "--out"),
    # simvq toy
    (["toy", "2d", "--steps", "0", "--out", "{root}/toy"], "--steps"),
    (["toy", "2d", "--threads", "0", "--out", "{root}/toy"], "--threads"),
    (["toy", "2d", "--codebook-size", "1", "--out", "{root}/toy"], "--codebook-size"),
    (["toy", "cluster", "--out", "{file}"], "--out"),
    (["toy", "analysis", "--batch-size", "0", "--out", "{root}/toy"], "--batch-size"),
]


def _fill(argv, runs):
    return [item.format(**{k: str(v) for k, v in runs.items()}) for item in argv]


@pytest.mark.parametrize(("argv", "named"), BAD_ARGUMENTS, ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_a_bad_argument_is_one_line_naming_it_with_exit_status_2(runs, capsys, argv, named):
    before = {path: path.stat().st_mtime_ns for path in runs["root"].rglob("*") if path.is_file()}
    code, _, err = run_cli(_fill(argv, runs), capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("simvq ") and "Traceback" not in err, err
    assert _fill([named], runs)[0] in err, err
    # refused before anything was written: the runs and files the table uses are untouched
    assert {path: path.stat().st_mtime_ns for path in before} == before


def test_the_console_script_prints_one_line_and_no_traceback(runs):
    """The real process: stderr is one line, the status 2."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "simvq.cli", "eval", str(runs["tokenizer"]), "--device", "foo"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 2 and done.stderr == "simvq eval: error: --device: not a device: 'foo' (e.g. cpu, cuda, cuda:1, mps)\n"


# ----------------------------------------------------------------------------- the one place that sorts failures


def _raised(function, *args, **kwargs) -> BaseException:
    try:
        function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the test wants the error itself
        return error
    raise AssertionError("nothing was raised")


def test_user_error_sorts_a_users_mistake_from_a_bug(tmp_path):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from simvq.cli import user_error
    from simvq.runs import read_config_file
    from simvq.utils import UsageError, check_count

    # the user's mistakes: one line
    assert user_error(UsageError("--per-row", "must be an integer >= 1, got 0")) == "--per-row: must be an integer >= 1, got 0"
    assert "must hold a mapping" in user_error(_raised(read_config_file, _list_file(tmp_path)))  # simvq's own `raise TypeError`
    assert user_error(_raised(check_count, -1, "--workers")).startswith("--workers:")
    missing = _raised(open, tmp_path / "missing.csv")  # the OS refusing a path names it
    assert user_error(missing) == f"{tmp_path / 'missing.csv'}: No such file or directory"
    assert user_error(_raised(os.mkdir, tmp_path / "missing.csv" / "x")).endswith("No such file or directory")
    assert user_error(MisconfigurationException("No supported gpu backend found!")) == "trainer: No supported gpu backend found!"
    # bugs keep their traceback: errors raised by torch or by Python on a bad call, RuntimeErrors, KeyErrors
    assert user_error(_raised(torch.Generator().manual_seed, 2**70)) is None  # a ValueError inside torch
    assert user_error(_raised(check_count)) is None  # a TypeError from a bad call
    assert user_error(_raised(torch.zeros(2).view, 3)) is None
    assert user_error(KeyError("psnr")) is None


def _list_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n")
    return path


def test_simvq_debug_shows_the_traceback_of_a_users_mistake(runs, monkeypatch):
    from simvq.cli import main
    from simvq.utils import UsageError

    monkeypatch.setenv("SIMVQ_DEBUG", "1")
    with pytest.raises(UsageError, match="--batch-size"):
        main(["eval", str(runs["tokenizer"]), "--batch-size", "0"])


# ----------------------------------------------------------------------------- runs are never silently replaced


def test_a_finished_run_without_checkpoints_is_not_trained_over_unless_asked(runs, tmp_path, capsys):
    from simvq.cli import main

    run = tmp_path / "run"
    train = ["train", str(runs["recipe"]), *QUICK_TRAIN, "--out", str(run), "--no-eval"]
    assert main(train) == 0
    stale = {"metrics.json": '{"psnr": 99}\n', "reconstructions.png": "old", "code_usage_histogram.png": "old"}
    for name, text in stale.items():
        (run / name).write_text(text)
    (run / "notes.txt").write_text("mine\n")
    # the same run resumes (raising the cap continues it)
    assert main([*train, "trainer.max_steps=3"]) == 0
    sessions = json.loads((run / "progress.json").read_text())["sessions"]
    assert [(s["start_step"], s["end_step"]) for s in sessions] == [(0, 2), (2, 3)]

    for path in (run / "checkpoints").iterdir():
        path.unlink()
    weights = (run / "model.safetensors").read_bytes()
    for extra in (["quantizer.name=vq"], []):  # another quantizer; or this run from scratch, replacing its weights
        code, _, err = run_cli([*train, "trainer.max_steps=3", *extra], capsys)
        assert code == 2 and "out_dir" in err and "--overwrite" in err and err.count("\n") == 1, err
    assert (run / "model.safetensors").read_bytes() == weights and (run / "metrics.json").read_text() == stale["metrics.json"]

    assert main([*train, "quantizer.name=vq", "--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["quantizer"]["name"] == "vq"
    assert not any((run / name).exists() for name in stale)  # nothing stale describes the old model
    assert (run / "notes.txt").read_text() == "mine\n"  # files that are not the run's are kept
    assert [s["start_step"] for s in json.loads((run / "progress.json").read_text())["sessions"]] == [0]


def test_clear_run_deletes_only_a_runs_own_files(tmp_path):
    from simvq.runs.files import clear_run, held_run_files

    (tmp_path / "logs").mkdir()
    (tmp_path / "notes.txt").write_text("mine\n")
    assert held_run_files(tmp_path) == [] and clear_run(tmp_path) == []  # holds no run: nothing is deleted
    assert (tmp_path / "logs").is_dir()
    for name in ("config.json", "model.safetensors", "metrics.json", "samples-seed0.png", "gen_metrics.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "prior").mkdir()
    (tmp_path / "prior" / "config.json").write_text("{}")
    assert sorted(clear_run(tmp_path)) == sorted(["config.json", "model.safetensors", "metrics.json", "samples-seed0.png",
                                                  "gen_metrics.json", "logs"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "prior"]


# ----------------------------------------------------------------------------- evaluations that measured nothing


def test_eval_with_a_bad_batch_size_leaves_the_metrics_as_they_were(runs, capsys):
    metrics = runs["tokenizer"] / "metrics.json"
    metrics.write_text('{"psnr": 20.0}\n')
    for size in ("-1", "0"):
        code, out, _ = run_cli(["eval", str(runs["tokenizer"]), "--batch-size", size, "--quiet"], capsys)
        assert code == 2 and out == "" and metrics.read_text() == '{"psnr": 20.0}\n'


def test_evaluate_run_checks_its_arguments_before_reading_the_run(tmp_path):
    from simvq.train.image import evaluate_run
    from simvq.utils import UsageError

    for options in ({"batch_size": -1}, {"batch_size": 0}, {"max_images": 0}, {"fid_images": -1}):
        with pytest.raises(UsageError, match=next(iter(options))):
            evaluate_run(tmp_path / "no_run_here", **options)  # refused before the missing run is noticed


def test_metrics_that_measured_nothing_are_not_written(runs, monkeypatch):
    from simvq.metrics import image as image_metrics
    from simvq.train.image import evaluate_run

    measure = image_metrics.evaluate_reconstructions

    def nan_psnr(*args, **kwargs):
        metrics, counts = measure(*args, **kwargs)
        return {**metrics, "psnr": math.nan}, counts

    metrics = runs["tokenizer"] / "metrics.json"
    metrics.write_text('{"psnr": 20.0}\n')
    monkeypatch.setattr(image_metrics, "evaluate_reconstructions", nan_psnr)
    shown = []
    with pytest.raises(ValueError, match=r"psnr=nan .* metrics.json was not written"):
        evaluate_run(runs["tokenizer"], fid_images=0, max_images=8, progress=False, report=shown.append)
    assert math.isnan(shown[0]["psnr"]) and metrics.read_text() == '{"psnr": 20.0}\n'  # shown, not written


def test_check_metrics():
    from simvq.runs.files import check_metrics

    measured = ("psnr", "usage")
    check_metrics({"images": 3, "psnr": math.inf, "usage": 0.5}, count="images", measured=measured)  # +inf: a perfect PSNR
    for bad in ({"images": 0, "psnr": 20.0, "usage": 0.5}, {"images": 3, "psnr": math.nan, "usage": 0.5},
                {"images": 3, "psnr": -math.inf, "usage": 0.5}, {"images": 3, "psnr": 20.0}):
        with pytest.raises(ValueError, match="metrics.json was not written"):
            check_metrics(bad, count="images", measured=measured)


# ----------------------------------------------------------------------------- errors name the user's argument


def test_config_mistakes_name_the_key():
    from simvq.runs import build_model, load_config
    from simvq.utils import UsageError

    with pytest.raises(UsageError, match=r"^model.norm_groups: 3 groups do not divide the level widths \[8, 16\]"):
        build_model(load_config(None, ["model.channels=8", "model.norm_groups=3"]))
    assert build_model(load_config(None, ["model.channels=8", "model.norm_groups=16"]))  # min(groups, width) groups: 8 on width 8
    with pytest.raises(UsageError, match="^trainer.devices: must be >= 1"):
        load_config(None, ["trainer.devices=0"])


def test_tokenizers_refuse_empty_batches_naming_the_argument(runs):
    from simvq.tokenizer import Tokenizer
    from simvq.utils import UsageError

    image, audio = Tokenizer.from_run(runs["tokenizer"]), Tokenizer.from_run(runs["audio"])
    for empty in (torch.zeros(0, 1, 28, 28), torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(2, 1, 0, 0)):
        with pytest.raises(UsageError, match="^images: empty input"):
            image.encode(empty)
    with pytest.raises(UsageError, match="^images: empty input"):
        image.reconstruct(torch.zeros(0, 1, 28, 28))
    with pytest.raises(UsageError, match="^codes: empty input"):
        image.decode(torch.zeros(0, 7, 7, dtype=torch.long))
    for empty in (torch.zeros(0, 1600), torch.zeros(2, 0)):
        with pytest.raises(UsageError, match="^wav: empty input"):
            audio.encode(empty)
    with pytest.raises(UsageError, match="^codes: empty input"):
        audio.decode(torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(UsageError, match=r"^images: float images must lie in \[0, 1\]"):
        image.encode(torch.full((1, 1, 28, 28), math.nan))


def test_audio_tokenizer_refuses_samples_outside_the_unit_range_and_bad_lengths(runs):
    from simvq.tokenizer import WAV_TOLERANCE, Tokenizer
    from simvq.utils import UsageError

    audio = Tokenizer.from_run(runs["audio"])
    wav = torch.rand(2, 1600, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for bad in (wav * 32768, torch.full_like(wav, math.nan), torch.full_like(wav, math.inf), wav.clamp(min=0) * (1 + 2 * WAV_TOLERANCE)):
        with pytest.raises(UsageError, match=r"^wav: samples must lie in \[-1, 1\] \(up to 1.05"):
            audio.encode(bad)
    # within the tolerance: accepted as it is (the codec's input is not clipped)
    assert audio.encode(wav * (1 + WAV_TOLERANCE / 2)).shape == (2, 5)
    codes = audio.encode(wav)
    assert audio.decode(codes, length=1234).shape == (2, 1234) and audio.decode(codes, length=np.int64(0)).shape == (2, 0)
    for length in (-100, -1, 1601, 2.5, True):
        with pytest.raises(UsageError, match=r"^length: must be an integer in \[0, 1600\]"):
            audio.decode(codes, length=length)


def test_a_prior_run_is_not_a_tokenizer_and_its_weights_load_through_the_checked_loader(runs, tmp_path):
    import shutil
    import struct

    from simvq.runs.prior import load_prior
    from simvq.tokenizer import Tokenizer

    with pytest.raises(ValueError, match="this is a prior run .*simvq eval-gen"):
        Tokenizer.from_run(runs["prior"])
    prior = tmp_path / "prior"
    shutil.copytree(runs["prior"], prior)
    source = (prior / "model.safetensors").read_bytes()
    header = struct.unpack("<Q", source[:8])[0]
    (prior / "model.safetensors").write_bytes(source[: 8 + header] + b"\xff" * (len(source) - 8 - header))  # NaN weights
    with pytest.raises(ValueError, match="model.safetensors holds non-finite values"):
        load_prior(prior)
    (prior / "model.safetensors").write_bytes((runs["tokenizer"] / "model.safetensors").read_bytes())  # another model's weights
    with pytest.raises(ValueError, match="does not match the prior"):
        load_prior(prior)
