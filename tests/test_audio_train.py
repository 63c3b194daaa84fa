"""The audio recipe end to end on a tiny codec and a folder of synthetic voiced clips: the CLI trains
a run that lowers its loss and writes wavs, spectrograms and metrics; the run's codes survive the
trip through ``Tokenizer.from_run``; config mistakes name the key."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
soundfile = pytest.importorskip("soundfile")
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"), pytest.mark.usefixtures("one_thread")]

from helpers import RATE, tiny_audio_overrides, voiced_clip, write_voice_folders

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "speech.yaml"
STEPS = 30


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    from simvq.cli import main

    root = write_voice_folders(tmp_path_factory.mktemp("audio"))
    assert main(["train", str(CONFIG), *tiny_audio_overrides(root, steps=STEPS)]) == 0
    return root / "run"


def test_a_short_audio_run_lowers_the_loss_and_writes_wavs_spectrograms_and_metrics(audio_run):
    with open(audio_run / "logs" / "csv" / "version_0" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/reconstruction")]
    assert [int(row["step"]) for row in rows] == list(range(STEPS))
    losses = [float(row["train/reconstruction"]) for row in rows]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    # the recipe trains against its discriminators from step 0, and they learn: the hinge loss
    # starts at 2 (logits ~0 on both sides) and falls
    hinge = [float(row["train/discriminator"]) for row in rows]
    assert len(hinge) == STEPS and abs(hinge[0] - 2.0) < 0.05 and np.mean(hinge[-5:]) < hinge[0] - 0.05, hinge
    assert all(float(row["train/feature_matching"]) > 0 for row in rows)

    metrics = json.loads((audio_run / "metrics.json").read_text())
    assert metrics["utterances"] == 2 and metrics["global_step"] == STEPS and metrics["codebook_size"] == 64
    assert -0.5 <= metrics["pesq"] <= 4.65 and 0.0 <= metrics["stoi"] <= 1.0 and metrics["mel_distance"] > 0
    test_files = sorted((audio_run.parent / "test").glob("*.wav"))
    assert metrics["tokens"] == sum(-(-soundfile.info(p).frames // 320) for p in test_files)  # 320 samples a token
    assert 0 < metrics["usage"] <= 1

    from PIL import Image

    for directory in (audio_run / "samples", audio_run / "samples" / "step_0000015", audio_run / "samples" / "step_0000030"):
        for index in range(2):
            original, rate = soundfile.read(directory / f"{index:02d}_original.wav")
            reconstruction, _ = soundfile.read(directory / f"{index:02d}_reconstruction.wav")
            expected, _ = soundfile.read(audio_run.parent / "test" / f"{index}.wav")
            assert rate == RATE and original.shape == reconstruction.shape == expected.shape
            np.testing.assert_allclose(original, expected, atol=1 / 16384)  # the test utterance itself (16-bit)
            with Image.open(directory / f"{index:02d}_spectrogram.png") as image:
                assert image.size[0] > 100 and image.size[1] > 100


def test_discriminators_switch_on_at_their_start_step_and_a_resumed_run_ends_like_an_uninterrupted_one(audio_run, tmp_path):
    from simvq.train.audio import train_tokenizer
    from simvq.train.config import load_recipe

    def config(name, steps):
        return load_recipe(CONFIG, [*tiny_audio_overrides(audio_run.parent, steps=steps), f"out_dir={tmp_path / name}",
                                    "trainer.sample_every=0", "loss.discriminator=true", "loss.discriminator_start=3",
                                    "loss.discriminator_channels=4"])

    resumed = tmp_path / "resumed"
    train_tokenizer(config("resumed", 6), evaluate=False)
    with open(resumed / "logs" / "csv" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    adversarial = [int(row["step"]) for row in rows if row["train/discriminator"]]
    assert adversarial == [3, 4, 5] and all(float(row["train/feature_matching"]) > 0 for row in rows[3:])
    assert json.loads((resumed / "progress.json").read_text())["global_step"] == 6  # the discriminator step is not counted

    train_tokenizer(config("resumed", 8), evaluate=False)  # a raised cap resumes from the checkpoint, discriminator state included
    sessions = json.loads((resumed / "progress.json").read_text())["sessions"]
    assert [(s["start_step"], s["end_step"]) for s in sessions] == [(0, 6), (6, 8)]
    with open(resumed / "logs" / "csv" / "version_0" / "metrics.csv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == list(range(8))

    # the clip stream, optimisers, LR schedule and discriminator continue exactly: the weights of an
    # uninterrupted run, bit for bit
    train_tokenizer(config("straight", 8), evaluate=False)
    states = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in ("straight", "resumed")]
    assert states[0].keys() == states[1].keys() and any(name.startswith("discriminator.") for name in states[0])
    assert [name for name in states[0] if not torch.equal(states[0][name], states[1][name])] == []


def test_the_tokenizer_round_trips_an_audio_runs_codes(audio_run):
    from safetensors.torch import load_file

    from simvq import Tokenizer
    from simvq.tokenizer import AudioTokenizer
    from simvq.train.config import read_run_config
    from simvq.train.run_files import build_codec

    tokenizer = Tokenizer.from_run(audio_run)
    assert isinstance(tokenizer, AudioTokenizer) and tokenizer.sample_rate == RATE and tokenizer.downsampling_factor == 320
    codec = build_codec(read_run_config(audio_run))  # the reference: the codec rebuilt by hand from the files
    codec.load_state_dict(load_file(audio_run / "model.safetensors"))
    codec.eval()

    wav = torch.from_numpy(np.stack([voiced_clip(0.5, 7), voiced_clip(0.5, 8)]))
    codes = tokenizer.encode(wav)
    assert codes.shape == (2, 25) and codes.dtype == torch.int64
    assert torch.equal(codes, codec.encode(wav.unsqueeze(1)))
    decoded = tokenizer.decode(codes)
    assert decoded.shape == (2, 25 * 320) and float(decoded.abs().max()) <= 1.0
    torch.testing.assert_close(decoded, codec.decode(codes)[:, 0])
    # encode -> decode is the codec's own forward pass (quantized latents are the decoded codes)
    torch.testing.assert_close(tokenizer.reconstruct(wav), codec(wav.unsqueeze(1))[0].clamp(-1, 1)[:, 0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"codes must have shape \(B, T\)"):
        tokenizer.decode(codes[0])
    with pytest.raises(ValueError, match=r"wav must be a float tensor \(B, S\)"):
        tokenizer.encode(wav.unsqueeze(1))


def test_simvq_eval_measures_an_audio_run(audio_run, capsys):
    from simvq.cli import main

    capsys.readouterr()
    assert main(["eval", str(audio_run), "--max-images", "1", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["utterances"] == 1 and printed["quantizer"] == "simvq"
    assert json.loads((audio_run / "metrics.json").read_text())["utterances"] == 1


def test_usage_over_the_train_and_test_splits_counts_every_token_of_both(audio_run, monkeypatch):
    import soundfile

    from simvq.train import audio

    original = audio.load_run_model

    def with_train_split(*args, **kwargs):
        model, config, path = original(*args, **kwargs)
        config.eval.usage_splits = ("train", "test")
        return model, config, path

    monkeypatch.setattr(audio, "load_run_model", with_train_split)
    metrics = audio.evaluate_run(audio_run, progress=False, write=False)
    model, _, _ = original(audio_run)
    # the reference: every clip of both splits encoded on its own, its codes counted by hand
    codes = {split: [model.encode(torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None, None]).flatten()
                     for path in sorted((audio_run.parent / split).glob("*.wav"))] for split in ("train", "test")}
    assert metrics["usage_splits"] == ["train", "test"]
    assert metrics["tokens_test"] == sum(c.numel() for c in codes["test"])
    assert metrics["tokens"] == metrics["tokens_test"] + sum(c.numel() for c in codes["train"])
    used = set(torch.cat(codes["train"] + codes["test"]).tolist())
    assert round(metrics["usage"] * model.quantizer.codebook_size) == len(used)  # the union of both splits' codes
    assert metrics["usage"] >= metrics["usage_test"] and metrics["tokens_per_code"] == metrics["tokens"] / model.quantizer.codebook_size


def test_audio_config_mistakes_name_the_key(capsys):
    from simvq.cli import main
    from simvq.train.config import load_config, load_recipe

    config = load_recipe(CONFIG)
    assert config.recipe == "audio" and config.loss.quantizer_weight == 1000 and config.trainer.precision == "32"
    assert config.loss.discriminator and config.loss.discriminator_start == 0 and config.loss.floor_dbfs == -80.0
    assert load_recipe(CONFIG, ["loss.floor_dbfs=null"]).loss.floor_dbfs is None  # the old absolute floor
    for bad in ("0", "6", "-250"):
        with pytest.raises(ValueError, match=rf"^loss.floor_dbfs must be a level in dBFS in \[-200, 0\) \(e.g. -80\) or null, got {bad}"):
            load_recipe(CONFIG, [f"loss.floor_dbfs={bad}"])
    with pytest.raises(ValueError) as error:
        load_recipe(CONFIG, ["loss.mel_wieght=3"])
    assert str(error.value) == "loss.mel_wieght: unknown key (did you mean 'mel_weight'?)"
    with pytest.raises(ValueError, match=r"^data.sample_rate: expected an integer, got 'fast'$"):
        load_recipe(CONFIG, ["data.sample_rate=fast"])
    with pytest.raises(ValueError, match=r"^data.corpus.speed: expected a list of 2 items"):
        load_recipe(CONFIG, ["data.corpus.speed=[1,2,3]"])
    with pytest.raises(ValueError, match=r"^data.corpus: test_fraction must lie in \(0, 1\)"):  # the corpus spec's own check
        load_recipe(CONFIG, ["data.corpus.test_fraction=2"])
    with pytest.raises(ValueError, match=r"^eval.usage_splits must list 'train' and/or 'test', got \['valid'\]$"):  # before training
        load_recipe(CONFIG, ["eval.usage_splits=[valid]"])
    with pytest.raises(ValueError, match=r"^data.sample_rate: unknown key"):  # the image schema has no audio keys
        load_config(CONFIG)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(CONFIG), "optim.lr=abc"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "simvq train: error: optim.lr: expected a float, got 'abc'\n"
