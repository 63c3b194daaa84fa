"""Image tokenizer recipe on PyTorch Lightning: one ``training_step`` shows the whole data flow

    images -> encoder -> quantizer -> decoder -> reconstruction loss + quantizer loss (+ GAN) -> step

and two functions drive it: ``train_tokenizer(config) -> run_dir`` and ``evaluate_run(run_dir) -> dict``.

A run directory holds ``config.yaml``/``config.json``, ``model.safetensors`` (final weights, the EMA
copy when EMA is on), ``checkpoints/last.ckpt`` (Lightning state for resuming), ``metrics.json``,
``usage_history.json``, ``progress.json`` (steps run per session), three PNGs
(``reconstructions.png``, ``code_usage_histogram.png``, ``usage_over_steps.png``) and
``logs/csv`` + ``logs/tensorboard``. Calling ``train_tokenizer`` again on the same directory resumes
from the last checkpoint; raising ``trainer.max_steps`` continues a finished run.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from ..data import build_image_dataset
from ..data.in_memory import ShuffledBatches, to_unit_float, uint8_images
from ..metrics import CodebookUsage
from ..models import ImageAutoencoder, PatchDiscriminator
from ..models.discriminator import hinge_discriminator_loss, hinge_generator_loss
from ..utils import atomic_path, atomic_write_text, load_torch_file
from .config import TokenizerConfig, read_run_config, save_config, to_dict
from .plateau import PLATEAU_FILE, PlateauStop, plateau_callbacks
from .run_files import (
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    build_model,
    load_run_model,
    save_weights,
)

RECONSTRUCTION_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}
RECONSTRUCTION_RANGES = ("[0, 1]", "[-1, 1]")


# ----------------------------------------------------------------------------- Lightning module


class ImageTokenizerModule(pl.LightningModule):
    """The training recipe. Manual optimisation: one generator step per batch (plus a
    discriminator step once the GAN is on), so ``global_step`` counts batches.

    The hot path holds no host synchronisation: batch statistics are logged (and the usage window
    is read) only every ``trainer.log_every`` steps, the code histogram is accumulated on the device
    without validation (the quantizer's codes are in range by construction), and the weight EMA is
    one fused ``_foreach_lerp_``."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if config.loss.reconstruction not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"loss.reconstruction must be one of {sorted(RECONSTRUCTION_LOSSES)}, got {config.loss.reconstruction!r}")
        if config.loss.reconstruction_range not in RECONSTRUCTION_RANGES:
            raise ValueError(f"loss.reconstruction_range must be one of {RECONSTRUCTION_RANGES}, got {config.loss.reconstruction_range!r}")
        self.config = config
        self.automatic_optimization = False
        self.model = build_model(config)
        self.discriminator = None
        if config.loss.discriminator:
            self.discriminator = PatchDiscriminator(
                config.data.channels, channels=config.loss.discriminator_channels, layers=config.loss.discriminator_layers
            )
        self.ema_model = None
        if config.optim.ema_decay:
            self.ema_model = copy.deepcopy(self.model).requires_grad_(False)
        if config.trainer.channels_last:
            self.to(memory_format=torch.channels_last)
        if config.trainer.compile:
            # in place: the state_dict keys stay those of the plain modules
            for part in (self.model.encoder, self.model.decoder):
                part.compile()
        self.window_usage = CodebookUsage(self.model.quantizer.codebook_size)
        self.usage_history: list[dict] = []  # one point per trainer.log_every steps
        self.steps_this_session = 0

    # -- optimisers ---------------------------------------------------------------------------

    def configure_optimizers(self):
        optim = self.config.optim

        def warmup(step: int) -> float:
            return min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0

        params = [p for p in self.model.parameters() if p.requires_grad]
        generator = torch.optim.Adam(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
        schedules = [{"scheduler": torch.optim.lr_scheduler.LambdaLR(generator, warmup), "interval": "step"}]
        if self.discriminator is None:
            return [generator], schedules
        discriminator = torch.optim.Adam(self.discriminator.parameters(), lr=optim.lr, betas=tuple(optim.betas))
        return [generator, discriminator], schedules

    # -- one step -----------------------------------------------------------------------------

    def prepare_images(self, batch) -> torch.Tensor:
        """A loader batch (uint8 or float ``(B, C, H, W)``) as float ``[0, 1]`` in the model's layout."""
        images = to_unit_float(batch)
        return images.contiguous(memory_format=torch.channels_last) if self.config.trainer.channels_last else images

    def generator_loss(self, images: torch.Tensor):
        """``(loss, reconstruction, quantizer output, logs)`` of the autoencoder on ``images``."""
        loss_config = self.config.loss
        reconstruction, out = self.model(images)
        reconstruction_loss = reconstruction_error(reconstruction, images, loss_config)
        loss = reconstruction_loss + loss_config.quantizer_weight * out.loss
        logs = {"train/reconstruction": reconstruction_loss, "train/quantizer": out.loss}
        if self.discriminator is not None and self.global_step >= loss_config.discriminator_start:
            generator_loss = hinge_generator_loss(self.discriminator(reconstruction))
            loss = loss + loss_config.discriminator_weight * generator_loss
            logs["train/generator"] = generator_loss
        return loss, reconstruction, out, logs

    def training_step(self, batch, batch_idx):
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        scheduler = self.lr_schedulers()
        images = self.prepare_images(batch)
        loss, reconstruction, out, logs = self.generator_loss(images)
        gan_on = "train/generator" in logs
        logging = self._logging_step()
        if logging:
            logs["train/lr"] = torch.tensor(scheduler.get_last_lr()[0])  # the rate this step uses

        generator_opt = optimizers[0]
        generator_opt.zero_grad()
        self.manual_backward(loss)
        self._clip(generator_opt)
        generator_opt.step()  # the LightningOptimizer step: this is what advances global_step
        scheduler.step()

        if gan_on:
            discriminator_opt = optimizers[1]
            discriminator_opt.zero_grad()
            logits_real = self.discriminator(images)
            logits_fake = self.discriminator(reconstruction.detach())
            discriminator_loss = hinge_discriminator_loss(logits_real, logits_fake)
            self.manual_backward(discriminator_loss)
            self._clip(discriminator_opt)
            # the raw torch optimiser, so the discriminator's step does not count as a training step
            discriminator_opt.optimizer.step()
            logs["train/discriminator"] = discriminator_loss

        self._update_ema()
        self.steps_this_session += 1
        self.window_usage.update(out.codes.detach(), check=False)
        if logging:
            logs.update({f"train/batch_{k}": v for k, v in out.metrics.items() if v.numel() == 1})
            self.log("train/loss", loss.detach(), prog_bar=True)
            self.log_dict({k: v.detach() for k, v in logs.items()})
        self._record_usage_point()
        return loss.detach()

    def _logging_step(self) -> bool:
        # ``global_step`` counts finished steps: this batch is step global_step + 1
        step = self.global_step + 1
        return step % self.config.trainer.log_every == 0 or step == self.trainer.max_steps

    def _clip(self, optimizer) -> None:
        if self.config.optim.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.config.optim.grad_clip, gradient_clip_algorithm="norm")

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_model is not None:
            update_ema(self.ema_model, self.model, self.config.optim.ema_decay)

    def _record_usage_point(self) -> None:
        # ``global_step`` has already advanced past this batch
        step = self.global_step
        if step % self.config.trainer.log_every and step != self.trainer.max_steps:
            return
        stats = self.window_usage.compute()
        self.window_usage.reset()
        self.usage_history.append({"step": step, **stats})
        self.log_dict({"train/window_usage": stats["usage"], "train/window_perplexity": stats["perplexity"]})

    def eval_model(self) -> ImageAutoencoder:
        """The weights evaluation and export use: the EMA copy when there is one."""
        return self.ema_model if self.ema_model is not None else self.model

    # -- state that is not a parameter --------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["simvq"] = {
            "usage_history": json.dumps(self.usage_history),
            "window_counts": self.window_usage.counts.cpu(),
            # the random streams of dead-code restarts, k-means and anchor sampling: without them a
            # resumed run would draw other rows than an uninterrupted one
            "generators": {name: generator.get_state() for name, generator in self._quantizer_generators()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("simvq", {})
        self.usage_history = json.loads(state.get("usage_history", "[]"))
        if "window_counts" in state:
            self.window_usage.counts = state["window_counts"].clone()
        saved = state.get("generators", {})
        for name, generator in self._quantizer_generators():
            if name in saved:
                generator.set_state(saved[name])

    def _quantizer_generators(self):
        """``(module name, torch.Generator)`` of every seeded quantizer stream in the model."""
        for name, module in self.model.named_modules():
            if isinstance(getattr(module, "_generator", None), torch.Generator):
                yield name, module._generator


def reconstruction_error(reconstruction: torch.Tensor, images: torch.Tensor, loss_config) -> torch.Tensor:
    """The configured pixel loss in float32, on ``[0, 1]`` or (as the official code) ``[-1, 1]``."""
    reconstruction, images = reconstruction.float(), images.float()
    if loss_config.reconstruction_range == "[-1, 1]":
        reconstruction, images = reconstruction * 2 - 1, images * 2 - 1
    return RECONSTRUCTION_LOSSES[loss_config.reconstruction](reconstruction, images)


@torch.no_grad()
def update_ema(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Parameters: ``ema += (1 - decay) (live - ema)`` in one fused call; buffers (frozen bases,
    EMA codebook statistics) are copied, not averaged."""
    torch._foreach_lerp_(list(ema_model.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    ema_buffers, live_buffers = list(ema_model.buffers()), list(model.buffers())
    if ema_buffers:
        torch._foreach_copy_(ema_buffers, live_buffers)


# ----------------------------------------------------------------------------- checkpoint I/O


class AtomicCheckpointIO(TorchCheckpointIO):
    """Streams to a temporary file, syncs it, then renames (a crash never leaves half a checkpoint,
    and no second in-memory copy of the checkpoint is built); reads with
    ``torch.load(weights_only=True)`` so no pickled code is ever run, and a corrupt file gives one
    error naming it."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        return load_torch_file(path, map_location=map_location)


class PeriodicCheckpoint(pl.Callback):
    """``last.ckpt`` every ``every`` steps, at the end, and when training stops on an exception
    (Ctrl-C included), so a resumed run loses at most ``every`` steps."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = path, max(1, every)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer, module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_exception(self, trainer, module, exception) -> None:
        if trainer.global_step > 0:
            self._mid_batch = True
            try:
                trainer.save_checkpoint(self.path, weights_only=False)
            finally:
                self._mid_batch = False

    _mid_batch = False

    def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
        # Lightning assumes checkpoints are saved at train_batch_end, before the logging-step counter
        # advances, and adds one on restore; a checkpoint saved mid-batch already counts the finished
        # batches, so take that one back to keep the logged steps contiguous after resuming.
        if self._mid_batch:
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1


class RankConsistency(pl.Callback):
    """Under DDP, every parameter and buffer (encoder, quantizer statistics, weight EMA,
    discriminator) must be identical on every rank when training ends: a codebook updated from one
    rank's batch only, or a collective skipped by some ranks, shows up here as an error naming the
    tensors instead of as silently diverging replicas. One all-gather of two float64 fingerprints
    per tensor; every rank runs it (no rank-dependent branch around the collective)."""

    def __init__(self):
        self.compared = 0

    def on_train_end(self, trainer, module) -> None:
        if trainer.world_size < 2:
            return
        names, fingerprints = tensor_fingerprints(module.state_dict())
        gathered = module.all_gather(fingerprints)  # (world_size, tensors, 2)
        differ = (gathered != gathered[0]).any(dim=2).any(dim=0)
        if bool(differ.any()):
            different = [name for name, bad in zip(names, differ.tolist()) if bad]
            raise RuntimeError(f"DDP ranks disagree on {len(different)} tensors after training, e.g. {different[:5]}")
        self.compared = len(names)


def tensor_fingerprints(state: dict) -> tuple[list[str], torch.Tensor]:
    """``(names, (tensors, 2) float64)``: each tensor's sum and its dot product with a fixed
    pseudo-random vector, so a one-ulp difference anywhere changes it."""
    names, rows = [], []
    for name, tensor in state.items():
        values = tensor.detach().flatten().double()
        weights = torch.sin(torch.arange(values.numel(), device=values.device, dtype=torch.float64) * 12.9898 + 78.233)
        names.append(name)
        rows.append(torch.stack([values.sum(), (values * weights).sum()]))
    device = rows[0].device if rows else "cpu"
    return names, torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.float64, device=device)


class _ResumingCSVWriter(pl.loggers.csv_logs.ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; this one keeps it across resumed
    sessions, dropping rows at or after the resume step (logged after the last checkpoint of a run
    that was killed, and about to be redone)."""

    resume_step = 0

    def _check_log_dir_exists(self) -> None:
        import csv

        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as handle:
            reader = csv.DictReader(handle)
            keys, rows = list(reader.fieldnames or []), [r for r in reader if int(r["step"]) < self.resume_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, buffer.getvalue())
        self.metrics_keys = keys


class ResumableCSVLogger(pl.loggers.CSVLogger):
    def __init__(self, *args, resume_step: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = _ResumingCSVWriter.__new__(_ResumingCSVWriter)
            writer.resume_step = self.resume_step
            writer.__init__(log_dir=self.log_dir)
            self._experiment = writer
        return self._experiment


# ----------------------------------------------------------------------------- train / evaluate


def _check_resumable(saved: TokenizerConfig, config: TokenizerConfig, run_dir: Path) -> None:
    """Resuming is allowed when only the schedule/eval/logging changed, not the model or data."""
    for section in ("data", "model", "quantizer", "loss"):
        if to_dict(getattr(saved, section)) != to_dict(getattr(config, section)):
            raise ValueError(
                f"{run_dir} was trained with a different `{section}` config; "
                f"use a new out_dir (saved: {to_dict(getattr(saved, section))}, "
                f"given: {to_dict(getattr(config, section))})"
            )


def _data_loader(config: TokenizerConfig, start_step: int = 0) -> DataLoader:
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


def cpu_has_fast_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX): bf16 convolutions beat float32 there only."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, accelerator: str) -> str:
    """``trainer.precision``; "auto" is bf16-mixed where bf16 is fast (CUDA with bf16, CPUs with
    native bf16), else 32-true. The quantizer's search and losses run in float32 either way."""
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if accelerator in ("auto", "cpu") and cpu_has_fast_bf16() else "32-true"


def train_tokenizer(config: TokenizerConfig, *, evaluate: bool = True, progress: bool | None = None) -> Path:
    """Train (or resume) the image tokenizer ``config`` describes; returns its run directory.

    ``config.out_dir`` is the run directory. If it holds ``checkpoints/last.ckpt`` from an earlier
    call, training resumes from it (steps already done are not redone). With ``evaluate`` the test
    split is measured afterwards (``evaluate_run``) and ``metrics.json`` and the PNGs are written.
    """
    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if checkpoint_path.is_file():
        _check_resumable(read_run_config(run_dir), config, run_dir)
    save_config(config, run_dir)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    show_progress = config.trainer.progress_bar if progress is None else progress

    module = ImageTokenizerModule(config)
    strategy = config.trainer.strategy
    if strategy == "ddp" and config.loss.discriminator:
        strategy = "ddp_find_unused_parameters_true"  # the discriminator sits idle before its start step
    precision = resolve_precision(config.trainer.precision, config.trainer.accelerator)
    if config.loss.discriminator and precision.startswith("16"):
        raise ValueError("trainer.precision=16-mixed is not supported with the discriminator; use bf16-mixed or 32-true")
    start_step = _checkpoint_step(checkpoint_path)
    consistency = RankConsistency()
    trainer = resumable_trainer(
        config,
        run_dir,
        start_step,
        # plateau first: its state is checkpointed
        callbacks=[*plateau_callbacks(config), PeriodicCheckpoint(checkpoint_path, config.trainer.checkpoint_every), consistency],
        show_progress=show_progress,
        num_nodes=config.trainer.num_nodes,
        strategy=strategy,
        precision=precision,
    )
    started = time.time()
    _quiet_lightning()
    try:
        trainer.fit(module, _data_loader(config, start_step), ckpt_path=checkpoint_path if checkpoint_path.is_file() else None)
    finally:
        # also when the session ends on SIGTERM, Ctrl-C or an error: the steps it ran are on disk
        # (PeriodicCheckpoint saved them), so they belong in the record
        if trainer.is_global_zero:
            _append_progress(
                run_dir, start_step, trainer.global_step, module.steps_this_session, time.time() - started,
                world_size=trainer.world_size, tensors_identical_across_ranks=consistency.compared,
            )

    if trainer.is_global_zero:
        atomic_write_text(run_dir / "usage_history.json", json.dumps(module.usage_history, indent=1) + "\n")
        save_weights(module.eval_model(), run_dir / WEIGHTS_FILE)
        plateau = next((c for c in trainer.callbacks if isinstance(c, PlateauStop)), None)
        if plateau is not None:
            atomic_write_text(run_dir / PLATEAU_FILE, json.dumps(plateau.summary(trainer.global_step), indent=1) + "\n")
    if evaluate and trainer.world_size > 1:
        # every rank evaluates a shard of the test split (rank 0 writes); the weights file must exist first
        trainer.strategy.barrier("weights written")
        evaluate_run(run_dir, progress=show_progress and trainer.is_global_zero, write=trainer.is_global_zero,
                     shard=(trainer.global_rank, trainer.world_size), device=trainer.strategy.root_device)
    elif evaluate:
        evaluate_run(run_dir, progress=show_progress)
    return run_dir


def resumable_trainer(config, run_dir: Path, start_step: int, *, callbacks: list, show_progress: bool, **options) -> pl.Trainer:
    """The Lightning trainer of every recipe (tokenizer, prior): step-limited, logging to csv and
    tensorboard from ``start_step`` on, checkpointing only through the ``callbacks`` (atomically),
    no validation loop. ``options`` (strategy, precision, ...) are the recipe's own."""
    return pl.Trainer(
        max_steps=config.trainer.max_steps,
        max_epochs=-1,
        accelerator=config.trainer.accelerator,
        devices=config.trainer.devices,
        logger=[
            ResumableCSVLogger(run_dir / "logs", name="csv", version=0, resume_step=start_step),
            pl.loggers.TensorBoardLogger(run_dir / "logs", name="tensorboard", version=0, default_hp_metric=False),
        ],
        log_every_n_steps=config.trainer.log_every,
        enable_checkpointing=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=show_progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=run_dir,
        **options,
    )


def _quiet_lightning() -> None:
    # "GPU available: False" and friends on every call are noise in a sweep
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return 0
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or "global_step" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no global_step); delete it to start over")
    return int(checkpoint["global_step"])


def _append_progress(run_dir: Path, start: int, end: int, steps_run: int, seconds: float, **facts) -> None:
    path = run_dir / "progress.json"
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    sessions.append({"start_step": start, "end_step": end, "steps_run": steps_run, "seconds": round(seconds, 1), **facts})
    atomic_write_text(path, json.dumps({"global_step": end, "sessions": sessions}, indent=1) + "\n")


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
         "rfid", "rfid_images", "codebook_size", "quantizer", "global_step", ...}

    PSNR/SSIM are over the test images; ``usage_test`` over their tokens. ``usage``, perplexity and
    the coverage statistics (``simvq.metrics.coverage_summary``: Chao1, Good-Turing coverage, the
    usage of an untrained quantizer at the same tokens per code) count the tokens of every split in
    ``eval.usage_splits``, so large codebooks are judged on enough tokens per code. rFID is over a
    fixed random subset of ``fid_images`` (default ``config.eval.fid_images``; 0 skips it).
    Arguments left as None take the run's ``eval`` config. ``run_dir`` may also be a
    ``.safetensors``/``.ckpt`` file. ``report(metrics)`` is called before anything is written, so a
    caller can show the numbers even when the run directory turns out to be read-only.
    ``shard=(rank, world_size)``: every process of a DDP run calls this and measures its share of
    the images (see ``evaluate_reconstructions``); pass ``write`` on rank 0 only.
    """
    from ..metrics.coverage import coverage_summary
    from ..metrics.image import code_histogram, evaluate_reconstructions
    from ..metrics.usage import usage_statistics
    from . import plots

    model, config, path = load_run_model(run_dir, device=device)
    eval_config = config.eval
    dataset = build_image_dataset(config.data, "test", seed=config.trainer.seed)
    metrics, counts = evaluate_reconstructions(
        model,
        dataset,
        batch_size=batch_size or eval_config.batch_size,
        max_images=max_images if max_images is not None else eval_config.max_images,
        fid_images=fid_images if fid_images is not None else eval_config.fid_images,
        fid_cache_dir=fid_cache_dir or eval_config.fid_cache_dir,
        device=device,
        progress=progress,
        shard=shard,
    )
    metrics["usage_test"], metrics["tokens_test"] = metrics["usage"], metrics["tokens"]
    for split in eval_config.usage_splits:
        if split != "test":  # more tokens per code: usage counted over every listed split
            counts = counts + code_histogram(model, build_image_dataset(config.data, split, seed=config.trainer.seed),
                                             batch_size=batch_size or eval_config.batch_size, device=device, progress=progress, shard=shard)
    metrics.update(coverage_summary(counts, dim=model.quantizer.dim))
    all_splits = usage_statistics(counts)
    metrics["perplexity"], metrics["dead_fraction"] = all_splits["perplexity"], all_splits["dead_fraction"]
    metrics["usage_splits"] = list(eval_config.usage_splits)
    metrics.update(
        quantizer=config.quantizer.name,
        codebook_size=model.quantizer.codebook_size,
        dataset=getattr(dataset, "cache_key", config.data.name),
    )
    progress_file = path / "progress.json"
    if progress_file.is_file():
        metrics["global_step"] = json.loads(progress_file.read_text())["global_step"]
        metrics["train_seconds"] = sum(s["seconds"] for s in json.loads(progress_file.read_text())["sessions"])
    if report is not None:
        report(metrics)
    if write:
        atomic_write_text(path / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        plots.reconstruction_grid(model, dataset, path / "reconstructions.png", num_images=eval_config.grid_images)
        plots.code_usage_histogram(counts, path / "code_usage_histogram.png", title=f"{config.quantizer.name}, K={model.quantizer.codebook_size}")
        history_file = path / "usage_history.json"
        if history_file.is_file():
            plots.usage_over_steps({config.quantizer.name: json.loads(history_file.read_text())}, path / "usage_over_steps.png")
    return metrics
