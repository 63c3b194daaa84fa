"""Faults: killed and resumed runs end where an uninterrupted run ends; empty, truncated, random or
garbage files give one error naming the file; the CLI reports user mistakes in one line."""

import json
import random
import signal
import struct

import pytest
import torch

from helpers import assert_same_state, crash_at, tiny_image_config, train
from simvq.train.config import load_config

pytest.importorskip("lightning")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


# small batches and a single downsampling keep each resumed step cheap; 32-bit on the CPU so
# an interrupted run and an uninterrupted one agree exactly
FAULT_RUN = (
    "data.batch_size=8",
    "model.channel_multipliers=[1,1]",
    "model.downsamplings=1",
    "model.dim=8",
    "quantizer.codebook_size=32",
    "trainer.log_every=2",
    "trainer.checkpoint_every=100",
    "trainer.precision=32-true",
    "trainer.accelerator=cpu",
    "eval.max_images=16",
    "eval.grid_images=4",
)


def tiny_config(out_dir, *overrides):
    return tiny_image_config(out_dir, *FAULT_RUN, *overrides)


def crash_image_training_at(monkeypatch, step, error=None):
    from simvq.train import image

    return crash_at(monkeypatch, image.ImageTokenizerModule, step, error)


def checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


# ----------------------------------------------------------------------------- kill and resume


# EMA codebook buffers besides weights (vq_ema); the seeded random stream of dead-code restarts
# (vq_reset: fails when the checkpoint does not carry the generator state); restarts drawn from
# torch's global RNG (vq_reset without a seed: fails when the checkpoint does not carry its state)
@pytest.mark.parametrize("quantizer", ["vq_ema", "vq_reset", "vq_reset-unseeded"])
def test_a_run_killed_at_a_random_step_and_resumed_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, quantizer):
    """Weights, weight EMA, quantizer buffers, optimizer moments, LR schedule, usage history and
    the global random state."""
    name, _, variant = quantizer.partition("-")
    overrides = ["trainer.max_steps=10", "optim.ema_decay=0.9", "optim.warmup_steps=4", f"quantizer.name={name}"]
    if variant == "unseeded":
        # a threshold above the mean usage (8 x 14 x 14 tokens over 32 codes): restarts on every
        # step, so every step after the kill draws from the global RNG
        overrides += ["quantizer.options.seed=null", "quantizer.options.dead_code_threshold=64"]
    train(tiny_config(tmp_path / "straight", *overrides), evaluate=False)

    killed_at = random.Random(f"h3-{quantizer}").randint(1, 9)
    original = crash_image_training_at(monkeypatch, killed_at)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tmp_path / "resumed", *overrides), evaluate=False)
    monkeypatch.setattr(__import__("simvq.train.image", fromlist=["x"]).ImageTokenizerModule, "training_step", original)
    assert checkpoint(tmp_path / "resumed")["global_step"] == killed_at
    train(tiny_config(tmp_path / "resumed", *overrides), evaluate=False)

    straight, resumed = checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "resumed")
    assert resumed["global_step"] == straight["global_step"] == 10
    assert_same_state(straight["state_dict"], resumed["state_dict"], "state_dict")
    assert_same_state(straight["optimizer_states"], resumed["optimizer_states"], "optimizer")
    assert_same_state(straight["lr_schedulers"], resumed["lr_schedulers"], "lr_schedulers")
    assert_same_state(straight["simvq"], resumed["simvq"], "usage")
    assert_same_state(straight["callbacks"]["GlobalRandomState"], resumed["callbacks"]["GlobalRandomState"], "rng")
    from safetensors.torch import load_file

    exported = [load_file(tmp_path / run / "model.safetensors") for run in ("straight", "resumed")]
    assert_same_state(*exported, "model.safetensors")  # (the header's metadata order is not stable)
    history = [(tmp_path / run / "usage_history.json").read_text() for run in ("straight", "resumed")]
    assert history[0] == history[1]
    # the logged rows too: every second step, none lost or repeated across the checkpoint saved mid-batch
    logs = [(tmp_path / run / "logs" / "csv" / "version_0" / "metrics.csv").read_text() for run in ("straight", "resumed")]
    assert logs[0] == logs[1] and [row.split(",")[1] for row in logs[0].splitlines()] == ["step", "1", "3", "5", "7", "9"]
    sessions = json.loads((tmp_path / "resumed" / "progress.json").read_text())["sessions"]
    assert [(s["start_step"], s["end_step"]) for s in sessions] == [(0, killed_at), (killed_at, 10)]


def test_sigterm_session_is_recorded_in_progress(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, "trainer.max_steps=6")
    crash_image_training_at(monkeypatch, 3, error=signal.SIGTERM)
    with pytest.raises(BaseException):  # noqa: B017 (Lightning's SIGTERM exception type is internal)
        train(config, evaluate=False)
    sessions = json.loads((tmp_path / "progress.json").read_text())["sessions"]
    assert sessions[-1]["start_step"] == 0 and sessions[-1]["end_step"] == checkpoint(tmp_path)["global_step"] >= 3


def test_progress_records_the_checkpointed_steps_while_training_runs(tmp_path, monkeypatch):
    # a process killed outright (SIGKILL) runs no `finally`: what progress.json holds mid-run is
    # what such a kill leaves, and it must match the checkpoint the resume starts from
    from simvq.train import image

    original, seen = image.ImageTokenizerModule.training_step, {}

    def watching_step(self, batch, batch_idx):
        if self.global_step == 6:  # 6 steps done, the last checkpoint at step 4
            seen["progress"] = json.loads((tmp_path / "progress.json").read_text())
            seen["checkpoint_step"] = checkpoint(tmp_path)["global_step"]
        return original(self, batch, batch_idx)

    monkeypatch.setattr(image.ImageTokenizerModule, "training_step", watching_step)
    train(tiny_config(tmp_path, "trainer.max_steps=8", "trainer.checkpoint_every=4"), evaluate=False)
    session = seen["progress"]["sessions"][-1]
    assert seen["checkpoint_step"] == seen["progress"]["global_step"] == 4
    assert (session["start_step"], session["end_step"], session["steps_run"]) == (0, 4, 4) and session["seconds"] > 0
    final = json.loads((tmp_path / "progress.json").read_text())
    assert len(final["sessions"]) == 1 and final["sessions"][0]["end_step"] == final["global_step"] == 8


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from simvq.train.core import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)

    def failing_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


# ----------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("small_run")
    train(tiny_config(run_dir, "trainer.max_steps=3"), evaluate=False)
    return run_dir


def damaged_copies(source, tmp_path):
    data = source.read_bytes()
    yield "empty", b""
    yield "truncated", data[: len(data) // 2]
    yield "random", random.Random(0).randbytes(4096)


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_a_damaged_checkpoint_gives_one_error_naming_the_file(small_run, tmp_path, kind):
    from simvq.tokenizer import Tokenizer

    (tmp_path / "checkpoints").mkdir()
    for name in ("config.json", "config.yaml"):
        (tmp_path / name).write_bytes((small_run / name).read_bytes())
    data = dict(damaged_copies(small_run / "checkpoints" / "last.ckpt", tmp_path))[kind]
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=str(path)) as error:
        Tokenizer.from_run(tmp_path)
    assert "weights_only" not in str(error.value)
    with pytest.raises(ValueError, match="last.ckpt"):  # resuming a run with a damaged checkpoint
        train(tiny_config(tmp_path, "trainer.max_steps=3"), evaluate=False)


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "garbage_values"])
def test_a_damaged_safetensors_file_gives_one_error_naming_the_file(small_run, tmp_path, kind):
    from simvq.tokenizer import Tokenizer

    for name in ("config.json", "config.yaml"):
        (tmp_path / name).write_bytes((small_run / name).read_bytes())
    source = (small_run / "model.safetensors").read_bytes()
    if kind == "garbage_values":
        # a valid header, every data byte 0xFF: float32 NaNs where the weights were
        header_size = struct.unpack("<Q", source[:8])[0]
        data = source[: 8 + header_size] + b"\xff" * (len(source) - 8 - header_size)
    else:
        data = dict(damaged_copies(small_run / "model.safetensors", tmp_path))[kind]
    (tmp_path / "model.safetensors").write_bytes(data)
    with pytest.raises(ValueError, match="model.safetensors"):
        Tokenizer.from_run(tmp_path)


def test_a_corrupt_config_json_names_the_file(small_run, tmp_path):
    from simvq.train.config import read_run_config

    (tmp_path / "config.json").write_text('{"data": {"name": ')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        read_run_config(tmp_path)


# ----------------------------------------------------------------------------- the inference API


def test_tokenizer_takes_uint8_images_and_refuses_0_255_floats(small_run):
    from simvq.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_run(small_run)
    pixels = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(tokenizer.encode(pixels), tokenizer.encode(pixels.float() / 255))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        tokenizer.encode(pixels.float())
    with pytest.raises(TypeError, match="uint8"):
        tokenizer.encode(pixels.int())


def test_tokenizer_decode_checks_the_codes_rank(small_run):
    from simvq.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_run(small_run)
    codes = tokenizer.encode(torch.rand(2, 1, 28, 28))
    assert tokenizer.decode(codes).shape == (2, 1, 28, 28)
    for wrong in (codes[0], codes[..., None], codes.flatten()):
        with pytest.raises(ValueError, match=r"codes must have shape \(B, h, w\)"):
            tokenizer.decode(wrong)


# ----------------------------------------------------------------------------- the CLI


def run_cli(argv, capsys):
    from simvq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_user_errors_end_in_one_line(tmp_path, capsys):
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    cases = [
        (["train", str(listed)], "must hold a mapping"),
        (["train", str(broken)], "is not valid YAML"),
        (["train", str(tmp_path / "missing.yaml")], "does not exist"),
        (["train", str(listed).replace("list", "none"), "trainer.max_steps=-1"], "does not exist"),
        (["eval", str(tmp_path / "nowhere")], "nowhere"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_negative_max_steps_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"trainer.max_steps must be >= 1, got -1"):
        load_config(None, ["trainer.max_steps=-1"])


def test_eval_on_a_read_only_run_prints_the_metrics_before_failing(small_run, tmp_path, capsys, monkeypatch):
    """The write is made to fail the way a read-only directory fails (tests may run as root, who
    can write anywhere); the metrics must already be on stdout."""
    from simvq.train import image

    def read_only(path, value, **options):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(image, "write_json", read_only)
    code, out, err = run_cli(["eval", str(small_run), "--quiet", "--max-images", "8"], capsys)
    assert code == 2 and "Permission denied" in err and err.count("\n") == 1
    assert json.loads(out)["images"] == 8


def test_json_records_are_written_whole_or_not_at_all(tmp_path):
    """``write_json`` replaces the file in one rename: a value JSON cannot encode leaves the old
    record and no temporary file; ``read_json`` gives the default only for a missing file."""
    from simvq.utils import read_json, write_json

    path = tmp_path / "record.json"
    assert read_json(path) is None and read_json(path, {}) == {}
    write_json(path, {"b": 1, "a": [1.5, None]}, indent=1, sort_keys=True)
    assert path.read_text() == '{\n "a": [\n  1.5,\n  null\n ],\n "b": 1\n}\n'
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert read_json(path) == {"a": [1.5, None], "b": 1} and [p.name for p in tmp_path.iterdir()] == ["record.json"]
    path.write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        read_json(path, {})


def test_nothing_unpickles_a_user_file():
    """Every ``torch.load`` in the package is ``utils.load_torch_file``'s (``weights_only=True``)."""
    from pathlib import Path

    import simvq

    calls = []
    for path in Path(simvq.__file__).parent.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if ("torch.load(" in code and "``" not in code) or "pickle.load" in code or "pickle.loads" in code:
                calls.append(f"{path.name}:{number}: {line.strip()}")
    assert [c for c in calls if not c.startswith("utils.py")] == []
    assert len([c for c in calls if "weights_only=True" in c]) == 1
