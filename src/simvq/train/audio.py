"""The audio plug-in of the tokenizer recipe (``simvq.train.recipe``): speech corpora, wav folders or
LibriTTS, the ``AudioCodec``, log-mel + multi-resolution STFT losses, the optional multi-period +
multi-resolution discriminators with feature matching (and DAC's discriminator beside them with
``loss.dac_discriminator``), and PESQ/STOI/mel distance/DNSMOS/usage;
``train_tokenizer(config) -> run_dir`` and ``evaluate_run(run_dir) -> dict`` drive it.

    simvq train configs/speech.yaml quantizer.name=vq_ema quantizer.codebook_size=65536
    simvq eval runs/speech

An audio run directory holds what an image run's does (config, ``model.safetensors``,
``checkpoints/last.ckpt``, logs, ``progress.json``, ``usage_history.json``), and after evaluation
``metrics.json``, ``code_usage_histogram.png`` and ``samples/``: for the first ``eval.samples`` test
utterances the original and reconstructed wav and a spectrogram PNG of both; every
``trainer.sample_every`` steps of training the same into ``samples/step_<N>/``. A resumed run
continues the clip stream where it stopped (``data.in_memory``: it ends with the weights of an
uninterrupted run); clips streamed from the files (``data.in_memory: false``) are reseeded from the
step it resumes at instead, except LibriTTS's, whose ``FileClipBatches`` draw every batch from
``(seed, rank, step)`` and so continue exactly too.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from ..data import FileClipBatches, InMemorySpeech, RandomClipBatches, build_speech_dataset
from ..models import CodecLoss
from ..models.audio_discriminators import (
    CodecDiscriminator,
    dac_feature_matching_loss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from ..runs import load_run_model, save_code_counts, training_facts
from ..runs.files import METRICS_FILE, check_metrics
from ..runs.schemas import AudioConfig
from ..utils import check_count, write_json
from .recipe import Modality, train_with_modality

SAMPLES_DIR = "samples"


class AudioModality(Modality):
    """Mono waveforms ``(B, 1, S)`` in ``[-1, 1]``."""

    def __init__(self, config: AudioConfig):
        super().__init__(config)
        loss = config.loss
        self.codec_loss = CodecLoss(config.data.sample_rate, mel_weight=loss.mel_weight, stft_weight=loss.stft_weight,
                                    mel_options=dataclasses.asdict(loss.mel), floor_dbfs=loss.floor_dbfs)

    def build_discriminator(self, config: AudioConfig):
        loss = config.loss
        return CodecDiscriminator(channels=loss.discriminator_channels, max_channels=loss.discriminator_max_channels,
                                  resolution_channels=loss.resolution_discriminator_channels,
                                  dac=loss.dac_discriminator, dac_channels=loss.dac_channels)

    def prepare(self, batch, config: AudioConfig) -> torch.Tensor:
        return batch.float()

    def reconstruction_loss(self, reconstruction, wav, config: AudioConfig):
        terms = self.codec_loss.to(wav.device)(reconstruction, wav)  # (a no-op once it is there)
        return terms["loss"], {"train/reconstruction": terms["loss"], "train/mel": terms["mel"], "train/stft": terms["stft"]}

    def adversarial_loss(self, discriminator, wav, reconstruction, config: AudioConfig):
        with torch.no_grad():  # the real features are targets only
            _, real_features = discriminator(wav)
        fake_logits, fake_features = discriminator(reconstruction)
        adversarial, matching = generator_loss(fake_logits), feature_matching_loss(real_features, fake_features)
        loss = config.loss.discriminator_weight * adversarial + config.loss.feature_matching_weight * matching
        logs = {"train/generator": adversarial, "train/feature_matching": matching}
        if discriminator.dac is not None:
            # DAC's terms as the official recipe adds them: least squares + summed feature matching
            with torch.no_grad():
                _, real_features = discriminator.dac(wav)
            fake_logits, fake_features = discriminator.dac(reconstruction)
            dac_adversarial, dac_matching = lsgan_generator_loss(fake_logits), dac_feature_matching_loss(real_features, fake_features)
            loss = loss + config.loss.dac_generator_weight * (dac_adversarial + dac_matching)
            logs.update({"train/dac_generator": dac_adversarial, "train/dac_feature_matching": dac_matching})
        return loss, logs

    def discriminator_loss(self, discriminator, wav, reconstruction):
        loss = discriminator_loss(discriminator(wav)[0], discriminator(reconstruction)[0])
        if discriminator.dac is not None:
            loss = loss + lsgan_discriminator_loss(discriminator.dac(wav)[0], discriminator.dac(reconstruction)[0])
        return loss

    def train_loader(self, config: AudioConfig, start_step: int) -> DataLoader:
        data = config.data
        if data.name == "libritts" and not data.in_memory:
            # too large to hold: clips read from the files in workers, each batch drawn from
            # (seed, rank, step), so a resumed run continues the stream exactly
            files = build_speech_dataset(data, "train", seed=config.trainer.seed, whole=True)
            batches = FileClipBatches(files, data.batch_size, round(data.clip_seconds * data.sample_rate),
                                      seed=config.trainer.seed, start=start_step)
            return DataLoader(batches, batch_size=None, num_workers=data.num_workers, persistent_workers=data.num_workers > 0,
                              pin_memory=torch.cuda.is_available())
        dataset = build_speech_dataset(data, "train", seed=config.trainer.seed + start_step)
        if not data.in_memory:
            return DataLoader(dataset, batch_size=data.batch_size, shuffle=True, drop_last=True)
        clip_samples = round(data.clip_seconds * data.sample_rate)
        # a resumed run continues the clip stream where the checkpoint left it, so killing and
        # resuming ends with the weights of an uninterrupted run
        batches = RandomClipBatches(InMemorySpeech(dataset), data.batch_size, clip_samples, seed=config.trainer.seed, start=start_step)
        return DataLoader(batches, batch_size=None)

    def callbacks(self, config: AudioConfig) -> list[pl.Callback]:
        return [SampleWriter(config)] if config.trainer.sample_every else []


def train_tokenizer(config: AudioConfig, *, evaluate: bool = True, progress: bool | None = None) -> Path:
    """Train (or resume) the speech codec ``config`` describes; returns its run directory."""
    return train_with_modality(config, evaluate=evaluate, progress=progress)


# ----------------------------------------------------------------------------- samples and evaluation


@torch.no_grad()
def write_samples(model, dataset, directory: Path, *, count: int) -> None:
    """The first ``count`` utterances of ``dataset``, original and reconstructed, as 16-bit wavs and a
    spectrogram PNG of the pair: ``NN_original.wav``, ``NN_reconstruction.wav``, ``NN_spectrogram.png``."""
    from ..metrics.audio import save_spectrogram_comparison, write_wav

    was_training, device, rate = model.training, next(model.parameters()).device, model.sample_rate
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(min(count, len(dataset))):
        wav = dataset[index].unsqueeze(0).to(device)
        reconstruction = model(wav)[0].clamp(-1, 1)
        original, decoded = wav[0, 0].float().cpu(), reconstruction[0, 0].float().cpu()
        write_wav(directory / f"{index:02d}_original.wav", original, rate)
        write_wav(directory / f"{index:02d}_reconstruction.wav", decoded, rate)
        save_spectrogram_comparison(directory / f"{index:02d}_spectrogram.png", original, decoded, rate, title=f"utterance {index}")
    model.train(was_training)


class SampleWriter(pl.Callback):
    """Reconstructions of the first ``eval.samples`` test utterances every ``trainer.sample_every``
    steps, into ``samples/step_<N>/`` (rank 0 only), with the weights evaluation would use."""

    def __init__(self, config: AudioConfig):
        self.config, self.dataset = config, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.config.trainer.sample_every or not trainer.is_global_zero:
            return
        if self.dataset is None:
            self.dataset = build_speech_dataset(self.config.data, "test", seed=self.config.trainer.seed)
        directory = Path(self.config.out_dir) / SAMPLES_DIR / f"step_{step:07d}"
        write_samples(module.eval_model(), self.dataset, directory, count=self.config.eval.samples)


def evaluate_run(run_dir: str | os.PathLike, *, max_utterances: int | None = None, device: torch.device | str | None = None,
                 progress: bool = True, write: bool = True, report=None, shard: tuple[int, int] = (0, 1)) -> dict:
    """Measure a speech codec run on its test split (whole utterances); returns (and writes to
    ``metrics.json``) ``evaluate_codec``'s metrics (``pesq``, ``stoi``, ``mel_distance``, DNSMOS when
    installed, ``usage``, ``tokens``, ``perplexity``, coverage) plus ``quantizer``,
    ``codebook_size``, ``tokens_per_second``, ``global_step``. Writes ``samples/`` and
    ``code_usage_histogram.png``. ``max_utterances`` None takes ``eval.max_utterances``. Under DDP
    (``shard=(rank, world_size)``) every rank measures its share of the utterances and returns the
    whole set's numbers; pass ``write`` on rank 0 only."""
    from ..metrics.audio import evaluate_codec, split_code_counts
    from ..metrics.coverage import usage_over_splits
    from . import plots

    check_count(max_utterances, "max_utterances")  # before the run is read
    model, config, path = load_run_model(run_dir, device=device)
    dataset = build_speech_dataset(config.data, "test", seed=config.trainer.seed)
    metrics, counts = evaluate_codec(
        model, dataset, max_utterances=max_utterances if max_utterances is not None else config.eval.max_utterances,
        device=device, use_dnsmos=config.eval.dnsmos, coverage_dim=model.quantizer.dim, progress=progress, shard=shard,
    )
    counts = usage_over_splits(metrics, counts, dim=model.quantizer.dim, splits=config.eval.usage_splits, split_counts=lambda split: split_code_counts(
        model, build_speech_dataset(config.data, split, seed=config.trainer.seed, whole=True), device=device, progress=progress, shard=shard))
    metrics.update(quantizer=config.quantizer.name, codebook_size=model.quantizer.codebook_size,
                   tokens_per_second=model.tokens_per_second, dataset=getattr(dataset, "cache_key", config.data.name),
                   **training_facts(path))
    if report is not None:
        report(metrics)
    if write:  # PESQ and STOI may be NaN (failures counted); the mel distance and usage may not
        check_metrics(metrics, count="utterances", measured=("mel_distance", "usage", "perplexity"))
        write_json(path / METRICS_FILE, metrics)
        save_code_counts(counts, path)
        write_samples(model, dataset, path / SAMPLES_DIR, count=config.eval.samples)
        plots.code_usage_histogram(counts, path / "code_usage_histogram.png", title=f"{config.quantizer.name}, K={model.quantizer.codebook_size}")
    return metrics
