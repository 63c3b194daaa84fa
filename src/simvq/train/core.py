"""What every training recipe (tokenizer of any modality, prior) shares on Lightning: a run
directory that resumes, written through public Lightning APIs only.

- ``resumable_trainer``: the step-limited trainer with CSV + TensorBoard logs and atomic checkpoints;
- ``AtomicCheckpointIO``, ``PeriodicCheckpoint``: ``checkpoints/last.ckpt`` written atomically, read
  with ``weights_only=True``; ``checkpoint_step`` reads where a run stopped;
- ``ResumableCSVLogger``: ``metrics.csv`` kept across sessions (rows after the resume step dropped);
- ``SessionRecord``: ``progress.json``, one entry per session, rewritten at every checkpoint;
- ``GlobalRandomState``: torch's global random state in every checkpoint, restored on resume;
- ``RankConsistency``: under DDP, every rank ends with the same tensors;
- ``log_row``: a row of metrics for every logger at the recipe's own step;
- ``overwrite_run``: ``--overwrite``'s deletion of the run an out_dir holds (rank 0 only);
- ``update_ema``, ``resolve_precision``, ``print_once``: small shared pieces.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from ..cpu import cpu_has_native_bf16
from ..runs.files import PROGRESS_FILE, clear_run
from ..utils import UsageError, atomic_path, atomic_write_text, load_torch_file, read_json, write_json


@torch.no_grad()
def update_ema(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Parameters: ``ema += (1 - decay) (live - ema)`` in one fused call; buffers (frozen bases,
    EMA codebook statistics) are copied, not averaged."""
    torch._foreach_lerp_(list(ema_model.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    ema_buffers, live_buffers = list(ema_model.buffers()), list(model.buffers())
    if ema_buffers:
        torch._foreach_copy_(ema_buffers, live_buffers)


@contextlib.contextmanager
def frozen(module: torch.nn.Module | None):
    """``module``'s parameters out of autograd for the block (each restored after), so a graph built
    through it (a generator's loss through its discriminator) carries gradients to its inputs only."""
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str = "constant", min_lr_fraction: float = 0.1) -> float:
    """The learning rate of step ``step`` (0-based) as a fraction of the peak: a linear warm-up over
    ``warmup_steps``, then ``constant`` or a ``cosine`` decay that reaches ``min_lr_fraction`` at
    ``max_steps``, so a run stopped there has finished its schedule (nanoGPT's; the prior's default)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_fraction + (1 - min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))



def resolve_precision(precision: str, accelerator: str) -> str:
    """``trainer.precision``; "auto" is bf16-mixed where bf16 is fast (CUDA with bf16, CPUs with
    native bf16), else 32-true. The quantizer's search and losses run in float32 either way."""
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    # bf16 convolutions beat float32 only with native bf16 dot products (the probe the search uses too)
    return "bf16-mixed" if accelerator in ("auto", "cpu") and cpu_has_native_bf16() else "32-true"


# ----------------------------------------------------------------------------- checkpoints


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
    (Ctrl-C included), so a resumed run loses at most ``every`` steps. ``on_save(trainer, module)``
    runs after each save (the recipes rewrite their ``SessionRecord`` there)."""

    def __init__(self, path: Path, every: int, *, on_save: Callable[[pl.Trainer, pl.LightningModule], None] | None = None):
        self.path, self.every, self.on_save = path, max(1, every), on_save

    def _save(self, trainer, module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        if self.on_save is not None:
            self.on_save(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._save(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        self._save(trainer, module)

    def on_exception(self, trainer, module, exception) -> None:
        if trainer.global_step > 0:
            self._save(trainer, module)


class GlobalRandomState(pl.Callback):
    """torch's global random streams (CPU, and the training accelerator's) in every checkpoint, restored
    when the first batch of a resumed session starts. Lightning saves none, and a quantizer built
    without a seed draws its restarts, k-means starts and anchors from them (dropout too): without
    them a resumed run draws other numbers than an uninterrupted one. Restored at the batch, not at
    load time, because creating the data loader's iterator draws from the CPU stream in between.
    Python's ``random`` and numpy's global state are left out: no recipe draws from them (their
    data pipelines own seeded generators). Under DDP rank 0's states are saved; every rank draws
    alike (restarts are drawn on all ranks and broadcast), so they hold the same states."""

    def __init__(self):
        self._pending: dict | None = None
        self._device_type = "cpu"

    def setup(self, trainer, module, stage) -> None:
        self._device_type = trainer.strategy.root_device.type

    def _accelerator(self):
        """The torch module of the training device type (``torch.cuda``, ``torch.xpu``, ...) when it
        keeps per-device random streams; None on CPU."""
        if self._device_type == "cpu":
            return None
        module = torch.get_device_module(self._device_type)
        return module if hasattr(module, "get_rng_state_all") else None

    def state_dict(self) -> dict:
        state = {"cpu": torch.get_rng_state()}
        accelerator = self._accelerator()
        if accelerator is not None:
            state["accelerator"] = {"type": self._device_type, "states": accelerator.get_rng_state_all()}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["cpu"])
        saved, accelerator = state.get("accelerator"), self._accelerator()
        if saved is not None and accelerator is not None and saved["type"] == self._device_type:
            # a machine with fewer devices than the one that saved takes the first ones' states
            accelerator.set_rng_state_all(saved["states"][: accelerator.device_count()])


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


# ----------------------------------------------------------------------------- logs and progress


class ResumableCSVLogger(Logger):
    """``metrics.csv`` in ``directory``, one row per logged step (Lightning's CSV layout: ``epoch``,
    ``step`` and the sorted metric names). Unlike Lightning's CSV logger it keeps the file of earlier
    sessions, dropping rows at or after ``resume_step`` (logged after the last checkpoint of a run
    that was killed, and about to be redone). Rows are written on ``save()``."""

    def __init__(self, directory: str | os.PathLike, *, resume_step: int = 0):
        super().__init__()
        self.directory, self.resume_step = Path(directory), resume_step
        self.path = self.directory / "metrics.csv"
        self.rows: list[dict] = []
        self.keys: list[str] | None = None  # read from the file on the first flush

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> int:
        return 0

    @property
    def log_dir(self) -> str:
        return str(self.directory)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the run directory's config.yaml holds them

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        row = {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        self.rows.append({**row, "step": len(self.rows) if step is None else step})

    @rank_zero_only
    def save(self) -> None:
        if not self.rows:
            return
        keys = {k for row in self.rows for k in row}
        if self.keys is None:  # this session's first flush: keep the earlier sessions' rows
            self.keys, rows = self._earlier_rows()
        elif keys <= set(self.keys):
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.keys).writerows(self.rows)
            self.rows = []
            return
        else:  # a new column: rewrite the file under the wider header
            rows = self._read_rows()
        self.keys = sorted(set(self.keys) | keys)
        self._write(rows + self.rows)
        self.rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def _earlier_rows(self) -> tuple[list[str], list[dict]]:
        if not self.path.is_file():
            return [], []
        with open(self.path, newline="") as handle:
            reader = csv.DictReader(handle)
            keys = list(reader.fieldnames or [])
            return keys, [row for row in reader if int(row["step"]) < self.resume_step]

    def _read_rows(self) -> list[dict]:
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def _write(self, rows: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.keys)
        writer.writeheader()
        writer.writerows(rows)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, buffer.getvalue())


def log_row(module: pl.LightningModule, step: int, metrics: dict) -> None:
    """One row of ``metrics`` for every logger at ``step`` (the optimizer steps finished before this
    batch), through the public ``Logger`` API. The recipes decide which steps log and log them here,
    not with ``self.log``: Lightning's own logging counter, which ``self.log`` rows follow, is left
    one step ahead when a run resumes from a checkpoint saved mid-batch (on an exception)."""
    row = {name: float(value.detach()) if isinstance(value, torch.Tensor) else float(value) for name, value in metrics.items()}
    row["epoch"] = module.current_epoch
    for logger in module.loggers:
        logger.log_metrics(row, step=step)
        logger.save()


def resumable_trainer(config, run_dir: Path, start_step: int, *, callbacks: list, show_progress: bool, **options) -> pl.Trainer:
    """The Lightning trainer of every recipe (tokenizer, prior): step-limited, logging to csv and
    tensorboard from ``start_step`` on, checkpointing only through the ``callbacks`` (atomically),
    with torch's global random state in every checkpoint (``GlobalRandomState``), no validation
    loop. ``options`` (strategy, precision, ...) are the recipe's own. The modules write their rows
    with ``log_row``."""
    quiet_lightning()  # before the Trainer: its constructor prints the first of them
    try:
        return _trainer(config, run_dir, start_step, callbacks=callbacks, show_progress=show_progress, **options)
    except (MisconfigurationException, ValueError, TypeError) as error:
        if not isinstance(error, MisconfigurationException) and not _named_keys(str(error)):
            raise  # not about the trainer.* keys: a bug, with its traceback
        raise trainer_settings_error(config.trainer, options, error) from None


# the config keys Lightning's Trainer takes as they are; its refusals name one of them (or none)
TRAINER_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def trainer_settings_error(trainer_config, options: dict, error: Exception) -> UsageError:
    """Lightning's refusal of the trainer's settings (``devices=0``, ``accelerator=gpu`` on a machine
    without one, an unknown strategy or precision) as one ``UsageError`` naming the config keys."""
    message = " ".join(str(error).split())
    values = {key: options.get(key, getattr(trainer_config, key, None)) for key in TRAINER_KEYS}
    named = _named_keys(message) or ["accelerator", "devices"]
    settings = ", ".join(f"trainer.{key}={values[key]!r}" for key in named)
    return UsageError(settings, f"{message} (check trainer.accelerator and trainer.devices against this machine)")


def _named_keys(message: str) -> list[str]:
    return [key for key in TRAINER_KEYS if key in message.lower()]


def _trainer(config, run_dir: Path, start_step: int, *, callbacks: list, show_progress: bool, **options) -> pl.Trainer:
    return pl.Trainer(
        max_steps=config.trainer.max_steps,
        max_epochs=-1,
        accelerator=config.trainer.accelerator,
        devices=config.trainer.devices,
        logger=[
            ResumableCSVLogger(run_dir / "logs" / "csv" / "version_0", resume_step=start_step),
            pl.loggers.TensorBoardLogger(run_dir / "logs", name="tensorboard", version=0, default_hp_metric=False),
        ],
        log_every_n_steps=config.trainer.log_every,
        enable_checkpointing=False,
        callbacks=[*callbacks, GlobalRandomState()],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=show_progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=run_dir,
        **options,
    )


def quiet_lightning() -> None:
    # "GPU available: False", a logging-service tip and friends on every run are noise in a sweep
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning's own use of a torch API torch now deprecates: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def overwrite_run(run_dir) -> list[str]:
    """``--overwrite``: delete the files of the run ``run_dir`` holds (``simvq.runs.files.clear_run``),
    so the run trained there next leaves nothing stale. Rank 0 only: a DDP rank started later runs the
    same command again and must not delete what rank 0 has written since."""
    return clear_run(run_dir) if rank_zero_only.rank == 0 else []


@rank_zero_only
def print_once(*args, **kwargs) -> None:
    """``print`` on the global rank 0 only: under DDP every rank runs the whole command."""
    print(*args, **kwargs)


def checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return 0
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or "global_step" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no global_step); delete it to start over")
    return int(checkpoint["global_step"])


class SessionRecord:
    """This training session's entry in ``progress.json`` (``start_step``, ``end_step``, ``steps_run``,
    ``seconds`` of wall clock, ``cpu_seconds`` of this process's CPU time (every thread: what a loaded
    machine's wall clock overstates) and the recipe's ``facts(trainer)``), rewritten at every checkpoint (pass the record as
    ``PeriodicCheckpoint``'s ``on_save``) and once more when the session ends (call it in a ``finally``).
    A process killed outright (SIGKILL, a lost machine: no ``finally`` runs) so still leaves its
    checkpointed steps and their time on record, and ``end_step`` is where the resumed session starts.
    Rank 0 writes; the module counts its own ``steps_this_session``."""

    def __init__(self, run_dir: Path, start_step: int, *, facts: Callable[[pl.Trainer], dict] | None = None):
        self.path, self.start_step, self.started = Path(run_dir) / PROGRESS_FILE, start_step, time.time()
        self.cpu_started = time.process_time()
        self.facts = facts
        self.earlier = read_json(self.path, {"sessions": []})["sessions"]

    def __call__(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        end_step = trainer.global_step
        entry = {"start_step": self.start_step, "end_step": end_step, "steps_run": module.steps_this_session,
                 "seconds": round(time.time() - self.started, 1), "cpu_seconds": round(time.process_time() - self.cpu_started, 1),
                 **(self.facts(trainer) if self.facts else {})}
        write_json(self.path, {"global_step": end_step, "sessions": [*self.earlier, entry]}, indent=1)
