"""The image plug-in of the tokenizer recipe (``simvq.train.recipe``): Fashion-MNIST / image
folders / photo crops / ImageNet-style class folders / WebDataset tar shards, the convolutional
autoencoder, the pixel loss, the optional LPIPS perceptual loss, the PatchGAN, PSNR/SSIM/LPIPS/rFID
and the PNGs; and the two functions that drive it: ``train_tokenizer(config) -> run_dir`` and
``evaluate_run(run_dir) -> dict``.

The perceptual loss (``loss.perceptual_weight`` > 0) is ``simvq.models.perceptual.LPIPS`` held by the
``ImageTokenizerModule`` as ``perceptual``, beside the autoencoder and not inside it: frozen, left out
of the optimiser, of the weight EMA, of ``model.safetensors`` and of the checkpoints (its weights come
from ``loss.perceptual_backbone`` / ``loss.perceptual_heads``, never from random numbers).

A run directory holds ``config.yaml``/``config.json``, ``model.safetensors`` (final weights, the EMA
copy when EMA is on), ``checkpoints/last.ckpt`` (Lightning state for resuming), ``metrics.json``,
``usage_history.json``, ``progress.json`` (steps run per session), three PNGs
(``reconstructions.png``, ``code_usage_histogram.png``, ``usage_over_steps.png``) and
``logs/csv`` + ``logs/tensorboard``. Calling ``train_tokenizer`` again on the same directory resumes
from the last checkpoint; raising ``trainer.max_steps`` continues a finished run.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data import FolderBatches, ShardedImages, build_image_dataset
from ..data.in_memory import ShuffledBatches, to_unit_float, uint8_images
from ..data.tokens import file_sha256
from ..models import PatchDiscriminator
from ..models.discriminator import hinge_discriminator_loss, hinge_generator_loss
from ..runs import build_image_model, load_run_model, read_usage_history, save_code_counts, training_facts
from ..runs.files import METRICS_FILE, check_metrics, resolve_run
from ..runs.schemas import TokenizerConfig
from ..utils import check_count, write_json
from .plateau import PLATEAU_FILE, PlateauStop, plateau_callbacks
from .recipe import Modality, TokenizerModule, fit_tokenizer

RECONSTRUCTION_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}
RECONSTRUCTION_RANGES = ("[0, 1]", "[-1, 1]")
# loss.elbo_weight: how a VAE quantizer's latent ELBO terms (``Quantizer.elbo_losses``) are weighed
ELBO_WEIGHTS = ("arelbo", "fixed")
# the pixel loss read as a likelihood whose scale is fitted to the data: L1 is a Laplace's (scale =
# the mean |error|), L2 a Gaussian's (variance = the mean squared error, and a 1/2 in the exponent)
ELBO_FACTORS = {"l1": 1.0, "l2": 2.0}


class ImageModality(Modality):
    """Images ``(B, C, H, W)``: uint8 or float batches in, float ``[0, 1]`` reconstructions out.
    ``perceptual``: the LPIPS network of the perceptual loss (set by ``ImageTokenizerModule``), or None."""

    perceptual = None

    def build_model(self, config: TokenizerConfig):
        if config.loss.reconstruction not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"loss.reconstruction must be one of {sorted(RECONSTRUCTION_LOSSES)}, got {config.loss.reconstruction!r}")
        if config.loss.reconstruction_range not in RECONSTRUCTION_RANGES:
            raise ValueError(f"loss.reconstruction_range must be one of {RECONSTRUCTION_RANGES}, got {config.loss.reconstruction_range!r}")
        if config.loss.elbo_weight not in ELBO_WEIGHTS:
            raise ValueError(f"loss.elbo_weight must be one of {ELBO_WEIGHTS}, got {config.loss.elbo_weight!r}")
        model = build_image_model(config)
        if config.loss.elbo_weight == "arelbo" and model.quantizer.elbo_losses and "kl_weight" in (config.quantizer.options or {}):
            # the fitted weight would replace the one given: refuse rather than ignore it
            raise ValueError("quantizer.options.kl_weight is replaced by loss.elbo_weight=arelbo (the weight fitted to the "
                             "pixel loss); set loss.elbo_weight=fixed to train with the given kl_weight")
        return model

    def build_discriminator(self, config: TokenizerConfig):
        loss = config.loss
        return PatchDiscriminator(config.data.channels, channels=loss.discriminator_channels, layers=loss.discriminator_layers)

    def prepare(self, batch, config: TokenizerConfig) -> torch.Tensor:
        """A loader batch (uint8 or float ``(B, C, H, W)``) as float ``[0, 1]`` in the model's layout."""
        images = to_unit_float(batch)
        return images.contiguous(memory_format=torch.channels_last) if config.trainer.channels_last else images

    def reconstruction_loss(self, reconstruction, images, config: TokenizerConfig):
        loss = reconstruction_error(reconstruction, images, config.loss)
        logs = {"train/reconstruction": loss}
        if self.perceptual is not None:
            perceptual = self.perceptual(reconstruction, images)
            logs["train/perceptual"] = perceptual
            loss = loss + config.loss.perceptual_weight * perceptual
        return loss, logs

    def quantizer_loss(self, out, quantizer, images, logs, config: TokenizerConfig):
        kl_weight = getattr(quantizer, "kl_weight", 0.0)
        if config.loss.elbo_weight == "fixed" or not quantizer.elbo_losses or kl_weight == 0:
            return out.loss
        tokens = math.prod(out.codes.shape[: out.codes.ndim - quantizer.code_ndim])
        weight = arelbo_weight(logs["train/reconstruction"], config.loss.reconstruction, values_per_token=images.numel() / tokens)
        logs["train/elbo_weight"] = weight
        elbo = sum(out.losses[name] for name in quantizer.elbo_losses)
        return out.loss + (weight / kl_weight - 1.0) * elbo  # the latent terms at ``weight`` in place of kl_weight

    def adversarial_loss(self, discriminator, images, reconstruction, config: TokenizerConfig):
        generator_loss = hinge_generator_loss(discriminator(reconstruction))
        return config.loss.discriminator_weight * generator_loss, {"train/generator": generator_loss}

    def discriminator_loss(self, discriminator, images, reconstruction):
        return hinge_discriminator_loss(discriminator(images), discriminator(reconstruction))

    def train_loader(self, config: TokenizerConfig, start_step: int) -> DataLoader:
        return _data_loader(config, start_step)

    def callbacks(self, config: TokenizerConfig):
        return plateau_callbacks(config)

    def finish(self, trainer, run_dir: Path) -> None:
        plateau = next((c for c in trainer.callbacks if isinstance(c, PlateauStop)), None)
        if plateau is not None:
            write_json(run_dir / PLATEAU_FILE, plateau.summary(trainer.global_step), indent=1)


class ImageTokenizerModule(TokenizerModule):
    """The tokenizer recipe on images; ``perceptual`` holds the frozen LPIPS of the perceptual loss
    (None when ``loss.perceptual_weight`` is 0)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__(config, ImageModality(config))
        # registered here, on the module: moved to the device with it, yet outside self.model, so
        # outside the optimiser, the EMA copy and model.safetensors (and LPIPS saves no state_dict)
        self.perceptual = build_perceptual(config)
        self.modality.perceptual = self.perceptual


def build_perceptual(config: TokenizerConfig):
    """The LPIPS network of ``loss.perceptual_*``, or None when ``loss.perceptual_weight`` is 0. Without
    weights files it refuses in one line naming ``loss.perceptual_backbone`` (or ``loss.perceptual_heads``)."""
    from ..models.perceptual import LPIPS, NETS

    loss = config.loss
    if not loss.perceptual_weight:
        return None
    if loss.perceptual_weight < 0:
        raise ValueError(f"loss.perceptual_weight must be >= 0, got {loss.perceptual_weight}")
    if loss.perceptual_net not in NETS:
        raise ValueError(f"loss.perceptual_net must be one of {sorted(NETS)}, got {loss.perceptual_net!r}")
    minimum = NETS[loss.perceptual_net]["min_size"]
    if config.data.image_size < minimum:
        raise ValueError(f"loss.perceptual_net={loss.perceptual_net} needs data.image_size >= {minimum}, got {config.data.image_size}")
    return LPIPS(loss.perceptual_net, backbone_weights=loss.perceptual_backbone, head_weights=loss.perceptual_heads,
                 weights_key="loss.perceptual_backbone", heads_key="loss.perceptual_heads")


def evaluation_lpips(config: TokenizerConfig):
    """``(network, None)``: LPIPS-AlexNet (the number papers report) for ``simvq eval``, from
    ``eval.lpips_backbone`` / ``eval.lpips_heads`` (or ``loss.perceptual_backbone`` / ``_heads`` when
    the loss itself is LPIPS-AlexNet), else torch hub's cache and the installed lpips package; or
    ``(None, reason)`` when there are no such weights or the images are smaller than AlexNet's
    minimum. A weights file named in the config that cannot be read is an error, not a skip; random
    weights are refused."""
    from ..models.perceptual import LPIPS, NETS

    minimum, size = NETS["alex"]["min_size"], config.data.image_size
    if size < minimum:
        return None, f"LPIPS-alex needs images of at least {minimum}x{minimum}; these are {size}x{size}"
    backbone, heads = config.eval.lpips_backbone, config.eval.lpips_heads
    keys = ("eval.lpips_backbone", "eval.lpips_heads")
    if backbone is None and heads is None and config.loss.perceptual_net == "alex":
        backbone, heads = config.loss.perceptual_backbone, config.loss.perceptual_heads
        keys = ("loss.perceptual_backbone", "loss.perceptual_heads")
    try:
        network = LPIPS("alex", backbone_weights=backbone, head_weights=heads, weights_key=keys[0], heads_key=keys[1])
    except FileNotFoundError as error:
        if backbone is not None or heads is not None:
            raise
        return None, str(error)
    if network.random_weights:  # never reachable from a config; kept as the rule
        raise ValueError("LPIPS for evaluation must use pretrained weights, not random ones")
    return network, None


def arelbo_weight(pixel_loss: torch.Tensor, reconstruction: str, *, values_per_token: float) -> torch.Tensor:
    """The weight of a VAE quantizer's per-token latent terms (nats) against the mean pixel loss,
    when the pixel likelihood's scale is fitted to the data (ARELBO: Takida et al., "Preventing
    posterior collapse induced by oversmoothing in Gaussian VAE", arXiv 2102.08663, which the
    official SQ-VAE code cites and uses by default). With the scale at its maximum-likelihood value the image's negative
    log-likelihood is ``values / c * log(loss)`` (+ a constant), whose gradient is the mean loss's
    times ``values / (c * loss)``; against it the image's ``tokens`` latent terms weigh
    ``c * loss / values_per_token`` each (``c`` = 1 for L1, 2 for L2). Detached: a weight, not a
    path for gradients. The pixel range cancels out: it scales both terms alike."""
    return ELBO_FACTORS[reconstruction] * pixel_loss.detach() / values_per_token


def reconstruction_error(reconstruction: torch.Tensor, images: torch.Tensor, loss_config) -> torch.Tensor:
    """The configured pixel loss in float32, on ``[0, 1]`` or (as the official code) ``[-1, 1]``."""
    reconstruction, images = reconstruction.float(), images.float()
    if loss_config.reconstruction_range == "[-1, 1]":
        reconstruction, images = reconstruction * 2 - 1, images * 2 - 1
    return RECONSTRUCTION_LOSSES[loss_config.reconstruction](reconstruction, images)


def _batch_loader(batches, workers: int) -> DataLoader:
    """A DataLoader over a data set that yields whole batches (built in ``workers`` processes)."""
    return DataLoader(batches, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def _data_loader(config: TokenizerConfig, start_step: int = 0) -> DataLoader:
    data = config.data
    # tar shards and class folders: batches in an order that depends on the seed, the epoch and the
    # rank only (not on the workers), resumed exactly at start_step (mid-epoch included)
    if data.name == "webdataset":
        if data.root is None:
            raise ValueError("data.root must name the training tar shards (a directory, a brace pattern or a glob) for data.name=webdataset")
        batches = ShardedImages(data.root, batch_size=data.batch_size, image_size=data.image_size, channels=data.channels,
                                crop=data.crop, seed=config.trainer.seed, start=start_step, mix_shards=data.mix_shards)
        return _batch_loader(batches, data.num_workers)
    if data.name == "class_folders":
        folder = build_image_dataset(data, "train", seed=config.trainer.seed)
        return _batch_loader(FolderBatches(folder, data.batch_size, seed=config.trainer.seed, start=start_step, crop=data.crop),
                             data.num_workers)
    dataset = build_image_dataset(config.data, "train", seed=config.trainer.seed)
    if len(dataset) < config.data.batch_size:
        raise ValueError(f"the training set has {len(dataset)} images, fewer than data.batch_size={config.data.batch_size}")
    images = uint8_images(dataset) if config.data.in_memory else None
    if images is not None:
        # whole uint8 batches by one index op; ``batch_size=None``: the data set yields batches
        # a resumed run continues the batch sequence where the checkpoint left it, so killing and
        # resuming ends with the weights of an uninterrupted run
        batches = ShuffledBatches(images, config.data.batch_size, seed=config.trainer.seed, start=start_step)
        return DataLoader(batches, batch_size=None)
    return DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.data.num_workers,
        persistent_workers=config.data.num_workers > 0,
    )


def train_tokenizer(config: TokenizerConfig, *, evaluate: bool = True, progress: bool | None = None) -> Path:
    """Train (or resume) the image tokenizer ``config`` describes; returns its run directory.

    ``config.out_dir`` is the run directory. If it holds ``checkpoints/last.ckpt`` from an earlier
    call, training resumes from it (steps already done are not redone). With ``evaluate`` the test
    split is measured afterwards (``evaluate_run``) and ``metrics.json`` and the PNGs are written.
    """
    return fit_tokenizer(config, lambda: ImageTokenizerModule(config), evaluate=evaluate, progress=progress)


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    fid_images: int | None = None,
    max_images: int | None = None,
    batch_size: int | None = None,
    fid_cache_dir: str | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    write: bool = True,
    report=None,
    shard: tuple[int, int] = (0, 1),
) -> dict:
    """Measure a run on its data set's test split; returns (and writes to ``metrics.json``)::

        {"usage", "tokens", "tokens_per_code", "usage_chao1", "coverage", "usage_reference",
         "usage_test", "tokens_test", "perplexity", "dead_fraction", "psnr", "ssim", "images",
         "lpips" or "lpips_skipped", "rfid", "rfid_images", "codebook_size", "quantizer", "global_step", ...}

    LPIPS is LPIPS-AlexNet (``evaluation_lpips``), averaged per image; where its weights are not
    there, or the images are smaller than AlexNet takes, ``lpips_skipped`` says why instead.

    PSNR/SSIM are over the test images; ``usage_test`` over their tokens. ``usage``, perplexity and
    the coverage statistics (``simvq.metrics.coverage_summary``: Chao1, Good-Turing coverage, the
    usage of an untrained quantizer at the same tokens per code) count the tokens of every split in
    ``eval.usage_splits``, so large codebooks are judged on enough tokens per code. rFID is over a
    fixed random subset of ``fid_images`` (default ``config.eval.fid_images``; 0 skips it).
    Arguments left as None take the run's ``eval`` config; a count below 1 (0 for ``fid_images``) is
    refused before the run is read, and nothing is written unless images were measured
    (``simvq.runs.files.check_metrics``). ``run_dir`` may also be a
    ``.safetensors``/``.ckpt`` file. ``report(metrics)`` is called before anything is written, so a
    caller can show the numbers even when the run directory turns out to be read-only.
    ``shard=(rank, world_size)``: every process of a DDP run calls this and measures its share of
    the images (see ``evaluate_reconstructions``); pass ``write`` on rank 0 only.
    """
    from ..metrics.coverage import usage_over_splits
    from ..metrics.image import code_histogram, evaluate_reconstructions
    from . import plots

    check_count(batch_size, "batch_size")  # before the run is read: a bad value is refused, never "defaulted"
    check_count(max_images, "max_images")
    check_count(fid_images, "fid_images", minimum=0)
    model, config, path = load_run_model(run_dir, device=device)
    eval_config = config.eval
    batch_size = eval_config.batch_size if batch_size is None else batch_size
    dataset = build_image_dataset(config.data, "test", seed=config.trainer.seed)
    lpips, lpips_skipped = evaluation_lpips(config)
    metrics, counts = evaluate_reconstructions(
        model,
        dataset,
        batch_size=batch_size,
        max_images=max_images if max_images is not None else eval_config.max_images,
        fid_images=fid_images if fid_images is not None else eval_config.fid_images,
        fid_cache_dir=fid_cache_dir or eval_config.fid_cache_dir,
        device=device,
        progress=progress,
        shard=shard,
        lpips=lpips,
    )
    if lpips is not None:
        metrics["lpips_net"] = "alex"
    else:
        metrics["lpips_skipped"] = lpips_skipped
    # a killed count resumes from its partial file, for the same weights only: by content, since a
    # resumed run that had finished training writes its (same) final weights again; hashed only
    # when a split besides the test split is counted
    fingerprint = functools.cache(lambda: file_sha256(resolve_run(run_dir)[0]))
    counts = usage_over_splits(metrics, counts, dim=model.quantizer.dim, splits=eval_config.usage_splits, split_counts=lambda split: code_histogram(
        model, build_image_dataset(config.data, split, seed=config.trainer.seed),
        batch_size=batch_size, device=device, progress=progress, shard=shard,
        resume=path / f"code_counts_{split}.rank{shard[0]}.partial.safetensors" if write or shard[1] > 1 else None, fingerprint=fingerprint()))
    metrics.update(
        quantizer=config.quantizer.name,
        codebook_size=model.quantizer.codebook_size,
        dataset=getattr(dataset, "cache_key", config.data.name),
    )
    metrics.update(training_facts(path))
    if report is not None:
        report(metrics)
    if write:
        check_metrics(metrics, count="images", measured=("psnr", "ssim", "usage", "perplexity"))
        write_json(path / METRICS_FILE, metrics)
        save_code_counts(counts, path)
        plots.reconstruction_grid(model, dataset, path / "reconstructions.png", num_images=eval_config.grid_images)
        plots.code_usage_histogram(counts, path / "code_usage_histogram.png", title=f"{config.quantizer.name}, K={model.quantizer.codebook_size}")
        if (history := read_usage_history(path)) is not None:
            plots.usage_over_steps({config.quantizer.name: history}, path / "usage_over_steps.png")
    return metrics
