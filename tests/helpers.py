"""Plain helpers shared by several test files (fixtures live in conftest.py)."""

from pathlib import Path

import numpy as np
import torch

from simvq.train.config import load_config

RATE = 16000  # the sample rate of the synthetic voices


def tiny_image_config(out_dir, *overrides):
    """An image-tokenizer recipe small enough to train for a few steps on the CPU in seconds.

    Only the settings every such test shares are here; ``overrides`` come last, so they win."""
    return load_config(None, [
        f"out_dir={out_dir}",
        "model.channels=8",
        "model.num_res_blocks=0",
        "quantizer.options.seed=0",
        "optim.lr=3e-3",
        "trainer.progress_bar=false",
        "eval.fid_images=0",
        *overrides,
    ])


def train(config, **kwargs):
    # imported here: collecting a test file must not load lightning (its tests skip without it)
    from simvq.train.image import train_tokenizer

    return train_tokenizer(config, **kwargs)


def crash_at(monkeypatch, module_class, step, error=None):
    """Make ``module_class.training_step`` raise ``error`` (a RuntimeError "simulated crash" by default;
    a signal number sends that signal) when it is about to run step ``step + 1``. Returns the original
    method, for ``monkeypatch.setattr(module_class, "training_step", original)`` to undo it."""
    import os

    error = RuntimeError("simulated crash") if error is None else error
    original = module_class.training_step

    def crashing_step(self, batch, batch_idx):
        if self.global_step == step:
            if isinstance(error, int):
                os.kill(os.getpid(), error)  # a real signal, handled by Lightning
            else:
                raise error
        return original(self, batch, batch_idx)

    monkeypatch.setattr(module_class, "training_step", crashing_step)
    return original


def assert_same_state(left, right, where=""):
    """Nested checkpoint state (tensors, dicts, lists, plain values) equal exactly; ``where`` names the first difference."""
    import torch

    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor) and torch.equal(left, right), where
    elif isinstance(left, dict):
        assert set(left) == set(right), where
        for key in left:
            assert_same_state(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right)):
            assert_same_state(a, b, f"{where}[{index}]")
    else:
        assert left == right, where


def voiced_clip(seconds: float, seed: int) -> np.ndarray:
    """A gliding harmonic tone with a syllable-rate envelope (a voiced-speech stand-in)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    f0 = 110 + rng.uniform(40, 100) * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t)
    return (0.3 * envelope * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


def write_voice_folders(root: Path) -> Path:
    """``root/train`` (6 clips) and ``root/test`` (2 clips, 0.6 and 0.7 s) of voiced clips; returns ``root``."""
    import soundfile

    for split, count, seed in (("train", 6, 0), ("test", 2, 100)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            soundfile.write(root / split / f"{i}.wav", voiced_clip(0.6 + 0.1 * i, seed + i), RATE)
    return root


def tiny_audio_overrides(root: Path, *, steps: int) -> list[str]:
    """configs/speech.yaml overrides for a tiny codec on ``write_voice_folders(root)``, run in ``root/run``."""
    return [
        f"out_dir={root / 'run'}",
        "data.name=wav_folder", f"data.root={root / 'train'}", f"data.test_root={root / 'test'}",
        "data.clip_seconds=0.32", "data.batch_size=4",
        "model.channels=4", "model.dim=16", "model.decoder_width=32", "model.decoder_blocks=1",
        "quantizer.codebook_size=64", "quantizer.options.seed=0",
        f"trainer.max_steps={steps}", "trainer.log_every=1", "trainer.sample_every=15", "trainer.progress_bar=false",
        "optim.lr=3e-3", "optim.warmup_steps=2", "eval.samples=2", "eval.dnsmos=false",
        "loss.discriminator_channels=4",  # the recipe trains its discriminators; narrow ones keep the tests quick
    ]


def report_section_twice(option: str, marker: str, rows: list[dict], fields: list[str], tmp_path: Path) -> tuple[str, Path]:
    """``simvq report OPTION CSV`` (``rows`` written with ``fields``) run twice on a page that holds
    hand-written text and the sweep's block; checks that the section's ``marker`` block appears once
    and the rest stays. Returns the page's text and the figures folder."""
    from simvq.cli import main
    from simvq.experiments.results_file import append_result

    results, out, figures = tmp_path / "results.csv", tmp_path / "results.md", tmp_path / "figures"
    for row in rows:
        append_result(results, row, fields=fields)
    out.write_text("# Results\n\nhand-written\n\n<!-- sweep-report:begin -->\nsweep\n<!-- sweep-report:end -->\n")
    for _ in range(2):  # a second report replaces its own block
        assert main(["report", option, str(results), "--out", str(out), "--figures", str(figures)]) == 0
    text = out.read_text()
    assert text.count(f"{marker}:begin") == 1 and "hand-written" in text and "\nsweep\n" in text
    return text, figures


def quick_run(config, batches, *, steps: int = 3, lr: float = 3e-3):
    """A run directory of ``config`` (at ``config.out_dir``) trained ``steps`` plain Adam steps on
    ``batches`` (inputs of its model: images ``(B, C, H, W)`` or waveforms ``(B, 1, S)``), without
    Lightning: ``config.json``/``config.yaml`` and ``model.safetensors``, what every reader of runs takes."""
    import torch

    from simvq.runs import WEIGHTS_FILE, build_model, save_config, save_weights

    torch.manual_seed(config.trainer.seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        inputs = batches[step % len(batches)]
        reconstruction, out = model(inputs)
        loss = (reconstruction - inputs).abs().mean() + out.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)
    save_weights(model.eval(), run_dir / WEIGHTS_FILE)
    return run_dir


def tiny_tokenizer(root, *quantizer, images: int = 48, seed: int = 0):
    """A run directory under ``root`` holding an untrained tiny tokenizer over ``images`` random 28x28
    images (``quantizer``: its overrides, e.g. ``quantizer.codebook_size=16``)."""
    from PIL import Image

    from simvq.tokenizer import WEIGHTS_FILE, save_weights
    from simvq.train.config import load_config, save_config
    from simvq.train.run_files import build_model

    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    config = load_config("configs/fmnist.yaml", [
        "data.name=image_folder", f"data.root={folder}", "data.test_fraction=0.25", "model.channels=8",
        "model.norm_groups=4", "model.dim=8", *quantizer])
    run = root / "tokenizer"
    run.mkdir()
    save_config(config, run)
    torch.manual_seed(0)
    save_weights(build_model(config), run / WEIGHTS_FILE)
    return run
