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
import math
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from ..data import build_image_dataset
from ..metrics import CodebookUsage
from ..models import ImageAutoencoder, PatchDiscriminator
from ..models.discriminator import hinge_discriminator_loss, hinge_generator_loss
from ..tokenizer import CHECKPOINT_FILE, WEIGHTS_FILE, Tokenizer, save_weights
from ..utils import atomic_write_bytes, atomic_write_text
from .config import TokenizerConfig, read_run_config, save_config, to_dict

RECONSTRUCTION_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


# ----------------------------------------------------------------------------- Lightning module


class ImageTokenizerModule(pl.LightningModule):
    """The training recipe. Manual optimisation: one generator step per batch (plus a
    discriminator step once the GAN is on), so ``global_step`` counts batches."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if config.loss.reconstruction not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"loss.reconstruction must be one of {sorted(RECONSTRUCTION_LOSSES)}, got {config.loss.reconstruction!r}")
        self.config = config
        self.automatic_optimization = False
        self.model = ImageAutoencoder.from_config(config)
        self.discriminator = None
        if config.loss.discriminator:
            self.discriminator = PatchDiscriminator(
                config.data.channels, channels=config.loss.discriminator_channels, layers=config.loss.discriminator_layers
            )
        self.ema_model = None
        if config.optim.ema_decay:
            self.ema_model = copy.deepcopy(self.model).requires_grad_(False)
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

    def training_step(self, images, batch_idx):
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        scheduler = self.lr_schedulers()
        loss_config = self.config.loss

        reconstruction, out = self.model(images)
        reconstruction_loss = RECONSTRUCTION_LOSSES[loss_config.reconstruction](reconstruction.float(), images.float())
        loss = reconstruction_loss + loss_config.quantizer_weight * out.loss
        gan_on = self.discriminator is not None and self.global_step >= loss_config.discriminator_start
        logs = {"train/reconstruction": reconstruction_loss.detach(), "train/quantizer": out.loss.detach()}
        if gan_on:
            generator_loss = hinge_generator_loss(self.discriminator(reconstruction))
            loss = loss + loss_config.discriminator_weight * generator_loss
            logs["train/generator"] = generator_loss.detach()

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
            logs["train/discriminator"] = discriminator_loss.detach()

        self._update_ema()
        self.steps_this_session += 1
        self.window_usage.update(out.codes.detach())
        logs.update({f"train/batch_{k}": v for k, v in out.metrics.items() if v.numel() == 1 and k != "usage"})
        self.log("train/loss", loss.detach(), prog_bar=True)
        self.log("train/batch_usage", out.metrics["usage"], prog_bar=True)
        self.log_dict(logs)
        self._record_usage_point()
        return loss.detach()

    def _clip(self, optimizer) -> None:
        if self.config.optim.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.config.optim.grad_clip, gradient_clip_algorithm="norm")

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_model is None:
            return
        decay = self.config.optim.ema_decay
        for ema, live in zip(self.ema_model.parameters(), self.model.parameters()):
            ema.lerp_(live.detach(), 1.0 - decay)
        for ema, live in zip(self.ema_model.buffers(), self.model.buffers()):
            ema.copy_(live)  # buffers (frozen bases, EMA codebook statistics) are copied, not averaged

    def _record_usage_point(self) -> None:
        # ``global_step`` has already advanced past this batch
        step = self.global_step
        if step % self.config.trainer.log_every and step != self.trainer.max_steps:
            return
        stats = self.window_usage.compute()
        self.window_usage.reset()
        self.usage_history.append({"step": step, **stats})
        self.log_dict({"train/window_usage": stats["usage"], "train/window_perplexity": stats["perplexity"]})

    # -- state that is not a parameter --------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["simvq"] = {
            "usage_history": json.dumps(self.usage_history),
            "window_counts": self.window_usage.counts.cpu(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("simvq", {})
        self.usage_history = json.loads(state.get("usage_history", "[]"))
        if "window_counts" in state:
            self.window_usage.counts = state["window_counts"].clone()


# ----------------------------------------------------------------------------- checkpoint I/O


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file then renames (a crash never leaves half a checkpoint); reads with
    ``torch.load(weights_only=True)`` so no pickled code is ever run."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        return torch.load(path, map_location=map_location, weights_only=True)


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


def _data_loader(config: TokenizerConfig) -> DataLoader:
    dataset = build_image_dataset(config.data, "train", seed=config.trainer.seed)
    if len(dataset) < config.data.batch_size:
        raise ValueError(f"the training set has {len(dataset)} images, fewer than data.batch_size={config.data.batch_size}")
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
    if config.loss.discriminator and config.trainer.precision.startswith("16"):
        raise ValueError("trainer.precision=16-mixed is not supported with the discriminator; use bf16-mixed or 32-true")
    start_step = _checkpoint_step(checkpoint_path)
    loggers = [
        ResumableCSVLogger(run_dir / "logs", name="csv", version=0, resume_step=start_step),
        pl.loggers.TensorBoardLogger(run_dir / "logs", name="tensorboard", version=0, default_hp_metric=False),
    ]
    trainer = pl.Trainer(
        max_steps=config.trainer.max_steps,
        max_epochs=-1,
        accelerator=config.trainer.accelerator,
        devices=config.trainer.devices,
        strategy=strategy,
        precision=config.trainer.precision,
        logger=loggers,
        log_every_n_steps=config.trainer.log_every,
        enable_checkpointing=False,
        callbacks=[PeriodicCheckpoint(checkpoint_path, config.trainer.checkpoint_every)],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=show_progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=run_dir,
    )
    started = time.time()
    _quiet_lightning()
    trainer.fit(module, _data_loader(config), ckpt_path=checkpoint_path if checkpoint_path.is_file() else None)

    if trainer.is_global_zero:
        _append_progress(run_dir, start_step, trainer.global_step, module.steps_this_session, time.time() - started)
        atomic_write_text(run_dir / "usage_history.json", json.dumps(module.usage_history, indent=1) + "\n")
        save_weights(module.ema_model if module.ema_model is not None else module.model, run_dir / WEIGHTS_FILE)
    if evaluate and trainer.is_global_zero:
        evaluate_run(run_dir, progress=show_progress)
    return run_dir


def _quiet_lightning() -> None:
    # "GPU available: False" and friends on every call are noise in a sweep
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def _append_progress(run_dir: Path, start: int, end: int, steps_run: int, seconds: float) -> None:
    path = run_dir / "progress.json"
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    sessions.append({"start_step": start, "end_step": end, "steps_run": steps_run, "seconds": round(seconds, 1)})
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
) -> dict:
    """Measure a run on its data set's test split; returns (and writes to ``metrics.json``)::

        {"usage", "perplexity", "dead_fraction", "tokens", "psnr", "ssim", "images",
         "rfid", "rfid_images", "codebook_size", "quantizer", "global_step", ...}

    Usage and perplexity are over every token of the evaluated images; rFID over a fixed random
    subset of ``fid_images`` (default ``config.eval.fid_images``; 0 skips it). Arguments left as
    None take the run's ``eval`` config. ``run_dir`` may also be a ``.safetensors``/``.ckpt`` file.
    """
    from ..metrics.image import evaluate_reconstructions
    from . import plots

    path = Path(run_dir)
    tokenizer = Tokenizer.from_checkpoint(path, device=device) if path.is_file() else Tokenizer.from_run(path, device=device)
    if path.is_file():
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    config = tokenizer.config
    eval_config = config.eval
    dataset = build_image_dataset(config.data, "test", seed=config.trainer.seed)
    metrics, counts = evaluate_reconstructions(
        tokenizer.model,
        dataset,
        batch_size=batch_size or eval_config.batch_size,
        max_images=max_images if max_images is not None else eval_config.max_images,
        fid_images=fid_images if fid_images is not None else eval_config.fid_images,
        fid_cache_dir=fid_cache_dir or eval_config.fid_cache_dir,
        device=device,
        progress=progress,
    )
    # a uniform quantizer hits only 1 - exp(-N/K) of K codes in N tokens (DESIGN.md §5)
    metrics["usage_cap"] = 1.0 - math.exp(-metrics["tokens"] / tokenizer.codebook_size)
    metrics.update(
        quantizer=config.quantizer.name,
        codebook_size=tokenizer.codebook_size,
        dataset=getattr(dataset, "cache_key", config.data.name),
    )
    progress_file = path / "progress.json"
    if progress_file.is_file():
        metrics["global_step"] = json.loads(progress_file.read_text())["global_step"]
        metrics["train_seconds"] = sum(s["seconds"] for s in json.loads(progress_file.read_text())["sessions"])
    if write:
        atomic_write_text(path / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        plots.reconstruction_grid(tokenizer, dataset, path / "reconstructions.png", num_images=eval_config.grid_images)
        plots.code_usage_histogram(counts, path / "code_usage_histogram.png", title=f"{config.quantizer.name}, K={tokenizer.codebook_size}")
        history_file = path / "usage_history.json"
        if history_file.is_file():
            plots.usage_over_steps({config.quantizer.name: json.loads(history_file.read_text())}, path / "usage_over_steps.png")
    return metrics
