"""The paper's recipes (configs/paper/): every setting of the issue's list checked against a table,
each config trained for 2 steps on tiny generated data (tar shards and class folders of images, a
LibriTTS-layout tree of wavs), LPIPS in the loss and in the evaluation from test-only weight files.

The 2-step runs override sizes only (widths, batch, image size, clip length) plus where and how long
they run (out_dir, data.root / test_root, trainer.max_steps / devices / accelerator / strategy,
data.num_workers, the progress bar), so the configs themselves stay what a GPU run uses. The LPIPS
weights are random tensors in torchvision's and lpips's file formats written to a temporary folder
and named in the config: the network never falls back to random weights by itself.
"""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
soundfile = pytest.importorskip("soundfile")
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"), pytest.mark.usefixtures("one_thread")]

from simvq.models.perceptual import NETS, alexnet_features, vgg16_features
from simvq.train.config import load_recipe

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
IMAGE_CONFIG, SPEECH_CONFIG = PAPER / "imagenet128_simvq.yaml", PAPER / "libritts24k_simvq.yaml"
IMAGENET_TRAIN_IMAGES = 1_281_167
LIBRITTS_TRAIN_UTTERANCES = 354_780  # train-clean-100 + train-clean-360 + train-other-500


def value(config, key):
    for part in key.split("."):
        config = getattr(config, part)
    return config


# ----------------------------------------------------------------------------- the settings, item by item

# (setting in the words, config key or a function of the config, expected value)
IMAGE_SETTINGS = [
    ("128x128 images", "data.image_size", 128),
    ("RGB", "data.channels", 3),
    ("16x16 tokens", lambda c: c.data.image_size // 2**c.model.downsamplings, 16),
    ("encoder width ch 128", "model.channels", 128),
    ("ch_mult [1,2,2,4]", "model.channel_multipliers", (1, 2, 2, 4)),
    ("2 ResBlocks per level", "model.num_res_blocks", 2),
    ("Open-MAGVIT2's mid block: 2 ResBlocks", "model.mid_blocks", 2),
    ("code dimension d=128", "model.dim", 128),
    ("SimVQ", "quantizer.name", "simvq"),
    ("K=65,536 (262,144 by override)", "quantizer.codebook_size", 65_536),
    ("commitment beta 0.25", lambda c: c.quantizer.options["beta"], 0.25),
    ("L1 loss", "loss.reconstruction", "l1"),
    ("L1 on [-1, 1] pixels, as the official code", "loss.reconstruction_range", "[-1, 1]"),
    ("commit weight 1", "loss.quantizer_weight", 1.0),
    ("LPIPS weight 1.0", "loss.perceptual_weight", 1.0),
    ("LPIPS-VGG", "loss.perceptual_net", "vgg"),
    ("PatchGAN", "loss.discriminator", True),
    ("from step 0", "loss.discriminator_start", 0),
    ("generator weight 0.1", "loss.discriminator_weight", 0.1),
    ("PatchGAN ndf 64", "loss.discriminator_channels", 64),
    ("PatchGAN 3 layers", "loss.discriminator_layers", 3),
    ("Adam 1e-4", "optim.lr", 1e-4),
    ("betas (0.5, 0.9)", "optim.betas", (0.5, 0.9)),
    ("no weight decay", "optim.weight_decay", 0.0),
    ("constant LR", "optim.schedule", "constant"),
    ("no warm-up", "optim.warmup_steps", 0),
    ("model EMA 0.999", "optim.ema_decay", 0.999),
    ("4 x 64 per GPU", "data.batch_size", 64),
    ("4 GPUs", lambda c: c.trainer.devices * c.trainer.num_nodes, 4),
    ("global batch 256", lambda c: c.data.batch_size * c.trainer.devices * c.trainer.num_nodes, 256),
    ("250k steps", "trainer.max_steps", 250_000),
    ("50 epochs", lambda c: round(c.trainer.max_steps * 256 / IMAGENET_TRAIN_IMAGES), 50),
    ("mixed precision (bf16: no fp16 with a discriminator)", "trainer.precision", "bf16-mixed"),
    ("DDP", "trainer.strategy", "ddp"),
    ("rFID on the 50k val images", "eval.fid_images", 50_000),
    ("PSNR/SSIM/LPIPS on every val image", "eval.max_images", None),
]

SPEECH_SETTINGS = [
    ("LibriTTS", "data.name", "libritts"),
    ("24 kHz", "data.sample_rate", 24_000),
    ("1 s clips", "data.clip_seconds", 1.0),
    ("SEANet ratios [8,5,4,2]", lambda c: tuple(reversed(c.model.strides)), (8, 5, 4, 2)),
    ("hop 320", lambda c: int(np.prod(c.model.strides)), 320),
    ("75 tokens/s", lambda c: c.data.sample_rate / np.prod(c.model.strides), 75.0),
    ("n_filters 32", "model.channels", 32),
    ("1 residual layer per ratio", "model.residual_layers", 1),
    ("no extra blocks before the LSTM", "model.bottleneck_blocks", 0),
    ("2-layer LSTM", "model.lstm_layers", 2),
    ("Vocos decoder", "model.decoder", "vocos"),
    ("Vocos dim 768", "model.decoder_width", 768),
    ("12 ConvNeXt blocks", "model.decoder_blocks", 12),
    ("ISTFT head n_fft 1280", "model.decoder_n_fft", 1280),
    ("code dimension d=512", "model.dim", 512),
    ("SimVQ", "quantizer.name", "simvq"),
    ("K=4,096", "quantizer.codebook_size", 4_096),
    ("commitment beta 0.25", lambda c: c.quantizer.options["beta"], 0.25),
    ("commit weight 1000", "loss.quantizer_weight", 1000.0),
    ("45 x mel", "loss.mel_weight", 45.0),
    ("100 mels", "loss.mel.n_mels", 100),
    ("mel n_fft 1024", "loss.mel.n_fft", 1024),
    ("mel hop 256", "loss.mel.hop_length", 256),
    ("no multi-resolution STFT loss", "loss.stft_weight", 0.0),
    ("MPD + MRD", "loss.discriminator", True),
    ("from step 0", "loss.discriminator_start", 0),
    ("generator weight 1", "loss.discriminator_weight", 1.0),
    ("MPD widths 32..1024", lambda c: (c.loss.discriminator_channels, c.loss.discriminator_max_channels), (32, 1024)),
    ("MRD width 64", "loss.resolution_discriminator_channels", 64),
    ("DAC discriminator", "loss.dac_discriminator", True),
    ("DAC weight 1", "loss.dac_generator_weight", 1.0),
    ("DAC widths", "loss.dac_channels", 32),
    ("Adam 1e-4", "optim.lr", 1e-4),
    ("betas (0.5, 0.9)", "optim.betas", (0.5, 0.9)),
    ("constant LR", "optim.schedule", "constant"),
    ("no warm-up", "optim.warmup_steps", 0),
    ("model EMA (official use_ema)", "optim.ema_decay", 0.999),
    ("20 clips per process", "data.batch_size", 20),
    ("50 epochs at 20 clips a step", lambda c: round(c.trainer.max_steps * c.data.batch_size / LIBRITTS_TRAIN_UTTERANCES), 50),
    ("mixed precision (bf16: no fp16 with discriminators)", "trainer.precision", "bf16-mixed"),
]


@pytest.mark.parametrize(("path", "settings"), [(IMAGE_CONFIG, IMAGE_SETTINGS), (SPEECH_CONFIG, SPEECH_SETTINGS)], ids=["image", "speech"])
def test_each_paper_setting_is_in_the_config(path, settings):
    config = load_recipe(path)
    wrong = []
    for name, key, expected in settings:
        got = key(config) if callable(key) else value(config, key)
        if isinstance(expected, float) and got is not None:
            ok = got == pytest.approx(expected)
        else:
            ok = got == expected
        if not ok:
            wrong.append(f"{name}: {key if isinstance(key, str) else 'computed'} = {got!r}, expected {expected!r}")
    assert wrong == []


def test_the_image_model_has_no_attention_and_open_magvit2s_depth():
    from simvq.models.image_autoencoder import ResBlock
    from simvq.runs import build_image_model

    model = build_image_model(load_recipe(IMAGE_CONFIG, ["quantizer.codebook_size=16"]))
    assert not any("attn" in name.lower() or isinstance(m, torch.nn.MultiheadAttention) for name, m in model.named_modules())
    # Open-MAGVIT2: 4 levels x 2 ResBlocks + 2 mid ResBlocks, in the encoder and in the decoder
    for part in (model.encoder, model.decoder):
        assert sum(isinstance(m, ResBlock) for m in part.modules()) == 4 * 2 + 2
    with torch.no_grad():
        assert model.encode_latents(torch.rand(1, 3, 128, 128)).shape == (1, 16, 16, 128)


def test_the_headers_give_the_papers_numbers_for_each_k():
    image = IMAGE_CONFIG.read_text()
    for k, numbers in (("65,536", ("2.24", "0.12", "24.15", "78.4")), ("262,144", ("1.99", "0.11", "24.68", "80.3"))):
        line = next(line for line in image.splitlines() if line.startswith(f"#   K={k}"))
        assert all(n in line for n in numbers) and "100%" in line, line
    speech = SPEECH_CONFIG.read_text()
    line = next(line for line in speech.splitlines() if line.startswith("#   K=4,096"))
    assert all(n in line for n in ("2.33", "0.91", "4.00")), line


# ----------------------------------------------------------------------------- test-only weight files


def random_state(module: torch.nn.Module, prefix: str, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {f"{prefix}{k}": torch.randn(v.shape, generator=generator) * 0.05 for k, v in module.state_dict().items()}


def head_state(net: str, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for k, c in enumerate(NETS[net]["channels"])}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random VGG16 / AlexNet backbones (torchvision's ``features.*`` keys) and lpips heads."""
    folder = tmp_path_factory.mktemp("lpips_weights")
    files = {}
    for net, features, seed in (("vgg", vgg16_features(), 1), ("alex", alexnet_features(), 2)):
        files[f"{net}_backbone"] = folder / f"random_{net}.pth"
        files[f"{net}_heads"] = folder / f"random_{net}_heads.pth"
        torch.save(random_state(features, "features.", seed), files[f"{net}_backbone"])
        torch.save(head_state(net, seed), files[f"{net}_heads"])
    return files


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    """No torchvision cache: LPIPS weights come from the files the test names."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


# ----------------------------------------------------------------------------- tiny generated data


def write_pngs(directory: Path, count: int, seed: int, size=(40, 36)) -> list[Path]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        x = np.linspace(0, 1, size[0])[None, :, None] * rng.uniform(0, 255, 3) + rng.uniform(0, 60, (size[1], size[0], 3))
        path = directory / f"img{i:03d}.png"
        Image.fromarray(x.clip(0, 255).astype(np.uint8)).save(path)
        files.append(path)
    return files


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    """ImageNet-like class folders (train/<class>/, val/<class>/) and the same images in tar shards."""
    from simvq.data.webdataset_images import write_image_shards

    root = tmp_path_factory.mktemp("imagenet")
    shards = {}
    for split, per_class in (("train", 6), ("val", 2)):
        files, labels = [], []
        for label, wnid in enumerate(("n01440764", "n01443537")):
            found = write_pngs(root / split / wnid, per_class, seed=label + (10 if split == "val" else 0))
            files += found
            labels += [label] * len(found)
        shards[split] = write_image_shards(files, root / f"{split}_shards", labels=labels, per_shard=5, seed=0)
    return root


IMAGE_SIZES = ["model.channels=8", "data.batch_size=2", "loss.discriminator_channels=8"]
RUNTIME = ["trainer.max_steps=2", "trainer.devices=1", "trainer.accelerator=cpu", "trainer.strategy=auto",
           "trainer.log_every=1", "trainer.progress_bar=false", "data.num_workers=0"]


def image_overrides(out_dir, weights, *, data: str, root: Path, size: int) -> list[str]:
    if data == "webdataset":
        places = [f"data.root={root / 'train_shards'}", f"data.test_root={root / 'val_shards'}"]
    else:
        places = ["data.name=class_folders", f"data.root={root / 'train'}", f"data.test_root={root / 'val'}"]
    return [f"out_dir={out_dir}", *places, *IMAGE_SIZES, f"data.image_size={size}", *RUNTIME,
            f"loss.perceptual_backbone={weights['vgg_backbone']}", f"loss.perceptual_heads={weights['vgg_heads']}"]


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory, image_data, weights):
    """The image config, 2 steps each: on tar shards at 32x32 (with LPIPS-AlexNet weights for the
    evaluation), and on class folders at 16x16."""
    from simvq.train.image import train_tokenizer

    top = tmp_path_factory.mktemp("image_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(top / "torch_home"))
        shards = load_recipe(IMAGE_CONFIG, [*image_overrides(top / "shards", weights, data="webdataset", root=image_data, size=32),
                                            f"eval.lpips_backbone={weights['alex_backbone']}", f"eval.lpips_heads={weights['alex_heads']}"])
        folders = load_recipe(IMAGE_CONFIG, image_overrides(top / "folders", weights, data="class_folders", root=image_data, size=16))
        return {"shards": train_tokenizer(shards, evaluate=False), "folders": train_tokenizer(folders, evaluate=False)}


def log_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "logs" / "csv" / "version_0" / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/reconstruction")]


@pytest.mark.parametrize("run", ["shards", "folders"])
def test_the_image_config_trains_two_steps_with_lpips_gan_and_ema(image_runs, run):
    import json

    from simvq.utils import load_safetensors

    run_dir = image_runs[run]
    rows = log_rows(run_dir)
    assert [int(r["step"]) for r in rows] == [0, 1]
    # LPIPS-VGG, the PatchGAN (from step 0) and the quantizer all train
    assert all(float(r["train/perceptual"]) > 0 and r["train/generator"] and r["train/discriminator"] for r in rows)
    assert json.loads((run_dir / "progress.json").read_text())["global_step"] == 2
    # the perceptual network stays out of the exported weights and of the checkpoint
    exported = load_safetensors(run_dir / "model.safetensors")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert not [k for k in exported if "perceptual" in k or k.startswith("features.")]
    assert not [k for k in checkpoint["state_dict"] if k.startswith("perceptual.")]
    # ... and out of the optimiser: its parameters are the autoencoder's (and the discriminator's)
    from simvq.train.image import ImageTokenizerModule

    config = load_recipe(run_dir / "config.json")
    module = ImageTokenizerModule(config)
    optimisers, _ = module.configure_optimizers()
    optimised = {id(p) for group in optimisers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.model.parameters()}
    assert not optimised & {id(p) for p in module.perceptual.parameters()}
    assert module.ema_model is not None and not any(n.startswith("perceptual") for n, _ in module.ema_model.named_parameters())
    assert checkpoint["optimizer_states"][0]["state"].keys() == set(range(len(list(module.model.parameters()))))


def test_a_perceptual_weight_without_backbone_weights_is_refused_in_one_line(tmp_path, weights):
    from simvq.train.image import ImageTokenizerModule

    config = load_recipe(IMAGE_CONFIG, [f"out_dir={tmp_path}", *IMAGE_SIZES, "data.image_size=32", f"loss.perceptual_heads={weights['vgg_heads']}"])
    with pytest.raises(FileNotFoundError, match=r"set loss\.perceptual_backbone to a local copy of torchvision's vgg16-397923af\.pth") as error:
        ImageTokenizerModule(config)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"loss\.perceptual_net=vgg needs data\.image_size >= 16"):
        ImageTokenizerModule(load_recipe(IMAGE_CONFIG, [*IMAGE_SIZES, "data.image_size=8"]))
    # weight 0: no network, no weights needed
    module = ImageTokenizerModule(load_recipe(IMAGE_CONFIG, [*IMAGE_SIZES, "data.image_size=32", "loss.perceptual_weight=0"]))
    assert module.perceptual is None and module.modality.perceptual is None


def test_eval_measures_lpips_alexnet_where_its_weights_are_and_says_why_not_elsewhere(image_runs, weights):
    from simvq.models.perceptual import LPIPS
    from simvq.runs import load_run_model
    from simvq.train.image import evaluate_run, evaluation_lpips

    metrics = evaluate_run(image_runs["shards"], fid_images=0, progress=False, write=False)
    assert metrics["lpips_net"] == "alex" and "lpips_skipped" not in metrics and metrics["images"] == 4
    # the mean per image of LPIPS-AlexNet between the (clamped) reconstructions and the val images
    model, config, _ = load_run_model(image_runs["shards"])
    from simvq.data import build_image_dataset

    images = torch.stack([image for image in build_image_dataset(config.data, "test")])
    with torch.no_grad():
        expected = LPIPS("alex", backbone_weights=weights["alex_backbone"], head_weights=weights["alex_heads"])(
            model(images)[0].float().clamp(0, 1), images)
    assert metrics["lpips"] == pytest.approx(expected.item(), rel=1e-4)

    small = evaluate_run(image_runs["folders"], fid_images=0, progress=False, write=False)
    assert "lpips" not in small and small["lpips_skipped"] == "LPIPS-alex needs images of at least 31x31; these are 16x16"
    # no weights configured and none cached: skipped, naming the key that gives them
    network, reason = evaluation_lpips(load_recipe(IMAGE_CONFIG))
    assert network is None and "set eval.lpips_backbone to a local copy of torchvision's alexnet-owt-7be5be79.pth" in reason
    # a weights file the config names but that is not there: an error, not a skip
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluation_lpips(load_recipe(IMAGE_CONFIG, ["eval.lpips_backbone=/nowhere/alexnet.pth"]))


@pytest.mark.parametrize("data", ["webdataset", "class_folders"])
def test_image_batches_resume_mid_epoch_at_the_start_step(image_data, weights, tmp_path, data):
    from simvq.train.image import _data_loader

    config = load_recipe(IMAGE_CONFIG, image_overrides(tmp_path, weights, data=data, root=image_data, size=16))
    straight = iter(_data_loader(config, 0))
    batches = [next(straight) for _ in range(9)]  # 12 images, 2 a batch: 6 batches an epoch
    resumed = iter(_data_loader(config, 4))
    for expected in batches[4:]:
        assert torch.equal(next(resumed), expected)
    epoch = torch.cat(batches[:6])
    assert epoch.dtype == torch.uint8 and epoch.shape == (12, 3, 16, 16)
    assert len({bytes(image.flatten().numpy()) for image in epoch}) == 12  # every image once per epoch


# ----------------------------------------------------------------------------- speech


def write_libritts(root: Path, splits) -> Path:
    rate = 24000
    for s, split in enumerate(splits):
        for u in range(2):
            directory = root / "LibriTTS" / split / str(100 + s) / "7"
            directory.mkdir(parents=True, exist_ok=True)
            t = np.arange(round((0.4 + 0.1 * u) * rate)) / rate
            wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * s + 20 * u) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
            soundfile.write(directory / f"{100 + s}_7_{u:06d}_000000.wav", wav.astype(np.float32), rate, subtype="PCM_16")
    return root


SPEECH_SIZES = ["data.clip_seconds=0.2", "data.batch_size=2", "model.channels=4", "model.decoder_width=32",
                "loss.discriminator_channels=4", "loss.discriminator_max_channels=16", "loss.resolution_discriminator_channels=4",
                "loss.dac_channels=2"]


@pytest.fixture(scope="module")
def libritts(tmp_path_factory):
    config = load_recipe(SPEECH_CONFIG)
    return write_libritts(tmp_path_factory.mktemp("corpora"), [*config.data.train_splits, *config.data.test_splits])


def speech_overrides(out_dir, root) -> list[str]:
    return [f"out_dir={out_dir}", f"data.root={root}", *SPEECH_SIZES, *RUNTIME, "trainer.sample_every=0"]


def test_the_speech_config_trains_two_steps_with_the_lstm_and_three_discriminators(libritts, tmp_path):
    from simvq.models.codec import SkipLSTM
    from simvq.runs import load_run_model
    from simvq.train.audio import train_tokenizer

    run_dir = train_tokenizer(load_recipe(SPEECH_CONFIG, speech_overrides(tmp_path / "run", libritts)), evaluate=False)
    rows = log_rows(run_dir)
    assert [int(r["step"]) for r in rows] == [0, 1]
    for key in ("train/mel", "train/generator", "train/feature_matching", "train/dac_generator", "train/dac_feature_matching",
                "train/discriminator"):
        assert all(np.isfinite(float(r[key])) for r in rows), key
    assert all(float(r["train/dac_feature_matching"]) > 0 for r in rows)
    model, _, _ = load_run_model(run_dir)
    assert isinstance(model.encoder.layers[-3], SkipLSTM) and model.encoder.layers[-3].lstm.num_layers == 2
    assert model.decoder.n_fft == 1280 and model.tokens_per_second == 75.0 and model.quantizer.dim == 512
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert any(k.startswith("discriminator.dac.bands.") for k in checkpoint["state_dict"])


def test_libritts_clips_stream_from_the_files_and_resume_at_the_start_step(libritts, tmp_path):
    from simvq.data import LibriTTS
    from simvq.train.audio import AudioModality

    config = load_recipe(SPEECH_CONFIG, speech_overrides(tmp_path, libritts))
    modality = AudioModality(config)
    straight = iter(modality.train_loader(config, 0))
    batches = [next(straight) for _ in range(5)]
    resumed = iter(modality.train_loader(config, 3))
    assert torch.equal(next(resumed), batches[3]) and torch.equal(next(resumed), batches[4])
    assert batches[0].shape == (2, 1, 4800) and batches[0].abs().max() > 0.1
    # every clip is a piece of a training utterance (none of the test split's)
    train = LibriTTS(libritts, config.data.train_splits, clip_seconds=None)
    utterances = [train.load(i) for i in range(len(train))]

    def found(clip):
        return any(np.array_equal(clip, u[s : s + 4800]) for u in utterances for s in np.flatnonzero(u == clip[0]))

    assert all(found(clip) for clip in torch.cat(batches)[:, 0].numpy())


# ----------------------------------------------------------------------------- the new model parts


def test_defaults_leave_the_existing_models_unchanged():
    """No LSTM, Vocos n_fft = 4 hops, one mid block, discriminators without DAC: the parameters (and
    their names) of every existing config's model are what they were."""
    from simvq.models import AudioCodec
    from simvq.models.audio_discriminators import CodecDiscriminator
    from simvq.models.image_autoencoder import ImageAutoencoder

    codec = AudioCodec(channels=4, dim=16, decoder_width=32, decoder_blocks=1, codebook_size=64)
    assert not any("lstm" in name for name in codec.state_dict()) and codec.decoder.n_fft == 4 * 320
    assert [k for k in AudioCodec(channels=4, dim=16, decoder_width=32, decoder_blocks=1, codebook_size=64, decoder_n_fft=1280).state_dict()] \
        == list(codec.state_dict())
    plain = CodecDiscriminator(channels=4)
    assert plain.dac is None and not any(k.startswith("dac.") for k in plain.state_dict())
    widths = CodecDiscriminator(channels=4, max_channels=128, resolution_channels=4)
    assert {k: v.shape for k, v in widths.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    image = ImageAutoencoder(channels=8, num_res_blocks=1, codebook_size=16)
    assert {k: v.shape for k, v in image.state_dict().items()} == \
        {k: v.shape for k, v in ImageAutoencoder(channels=8, num_res_blocks=1, codebook_size=16, mid_blocks=1).state_dict().items()}


def test_the_seanet_lstm_is_encodecs_slstm():
    from simvq.models.codec import SkipLSTM

    torch.manual_seed(0)
    layer, x = SkipLSTM(6, 2), torch.randn(3, 6, 11)
    reference = torch.nn.LSTM(6, 6, 2)
    reference.load_state_dict(layer.lstm.state_dict())
    y, _ = reference(x.permute(2, 0, 1))
    torch.testing.assert_close(layer(x), (y + x.permute(2, 0, 1)).permute(1, 2, 0))


def test_the_dac_discriminator_splits_complex_stfts_into_dacs_bands_and_trains_with_least_squares():
    from simvq.models.audio_discriminators import (
        DAC_BANDS,
        DACDiscriminator,
        dac_feature_matching_loss,
        lsgan_discriminator_loss,
        lsgan_generator_loss,
    )

    torch.manual_seed(0)
    dac = DACDiscriminator(channels=2)
    assert len(dac.periods) == 5 and [b.n_fft for b in dac.bands] == [2048, 1024, 512]
    assert dac.bands[2].bands == tuple((int(lo * 257), int(hi * 257)) for lo, hi in DAC_BANDS) == ((0, 25), (25, 64), (64, 128), (128, 192), (192, 257))
    # DAC's widths at channels=32: periods 32, 128, 512, 1024, 1024; bands 32
    full = DACDiscriminator()
    assert [c.weight.shape[0] for c in full.periods[0].convs] == [32, 128, 512, 1024, 1024]
    assert {c.weight.shape[0] for stack in full.bands[0].band_convs for c in stack} == {32}
    wav = torch.randn(2, 1, 3000) * 0.1
    logits, features = dac(wav)
    assert len(logits) == len(features) == 8 and [len(f) for f in features] == [5] * 5 + [25] * 3
    # the input is centred and peak-normalised: scaling and offsetting it changes nothing
    torch.testing.assert_close(dac(3 * wav + 0.5)[0][0], logits[0], rtol=1e-4, atol=1e-5)
    real, fake = [torch.full((2, 3), 0.5)], [torch.full((2, 3), -0.25)]
    assert lsgan_discriminator_loss(real, fake).item() == pytest.approx(0.25 + 0.0625)
    assert lsgan_generator_loss(fake + fake).item() == pytest.approx(2 * 1.5625)
    assert dac_feature_matching_loss([[torch.zeros(2)], [torch.ones(2)]], [[torch.ones(2)], [torch.ones(2)]]).item() == pytest.approx(1.0)


def test_mid_blocks_count_open_magvit2s_mid_resblocks():
    from simvq.models.image_autoencoder import ImageAutoencoder, ResBlock

    for mid, expected in ((None, 1), (0, 0), (2, 2)):
        model = ImageAutoencoder(channels=8, channel_multipliers=(1, 2), downsamplings=1, num_res_blocks=1, codebook_size=16, mid_blocks=mid)
        assert sum(isinstance(m, ResBlock) for m in model.encoder.modules()) == 2 + expected
    with pytest.raises(ValueError, match="mid_blocks"):
        ImageAutoencoder(channels=8, codebook_size=16, mid_blocks=-1)


def test_the_paper_configs_round_trip_through_a_run_directory(tmp_path):
    from simvq.train.config import read_run_config, save_config, to_dict

    for path in (IMAGE_CONFIG, SPEECH_CONFIG):
        config = load_recipe(path)
        (tmp_path / path.stem).mkdir()
        save_config(config, tmp_path / path.stem)
        assert to_dict(read_run_config(tmp_path / path.stem)) == to_dict(config)
        assert re.search(r"docs/gpu\.md", path.read_text())
