"""The tokenizer recipe of every modality: one ``training_step`` shows the whole data flow

    batch -> modality.prepare -> autoencoder (encoder -> quantizer -> decoder)
          -> modality.reconstruction_loss + quantizer_weight x quantizer loss (+ adversarial) -> step

``TokenizerModule`` is the LightningModule (weight EMA, code-usage tracking, the seeded quantizer
streams in the checkpoint); ``fit_tokenizer`` trains or resumes a run directory with it. What differs
between images and audio (the data, the autoencoder, the losses, the discriminator, the evaluation)
comes from a ``Modality`` plug-in (``simvq.train.image.ImageModality``, ``simvq.train.audio.AudioModality``),
which the config's recipe kind names in ``simvq.runs.registry``; ``train_with_modality`` is the train
entry of a kind that brings only its ``Modality``.

The config a recipe reads has the sections ``data``, ``model``, ``quantizer``, ``loss``
(``quantizer_weight``, ``discriminator``, ``discriminator_start``), ``optim`` (``lr``, ``betas``,
``weight_decay``, ``warmup_steps``, ``grad_clip``, ``ema_decay``) and ``trainer``
(:class:`simvq.runs.schemas.TrainerConfig`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from ..metrics import CodebookUsage
from ..quantizers.base import training_streams
from ..runs import CHECKPOINT_FILE, WEIGHTS_FILE, get_recipe, read_run_config, save_config, save_weights, to_dict
from ..runs.files import CONFIG_FILES, TOKENS_META, USAGE_HISTORY_FILE, held_run_files
from ..runs.finetune import apply_optimizer_state, apply_weights, initial_state
from ..utils import UsageError, write_json
from .core import (
    PeriodicCheckpoint,
    RankConsistency,
    SessionRecord,
    checkpoint_step,
    frozen,
    log_row,
    lr_factor,
    resolve_precision,
    resumable_trainer,
    update_ema,
)

# the config sections a resumed run must share with the run it continues (the schedule, evaluation
# and logging may change)
MODEL_SECTIONS = ("data", "model", "quantizer", "loss")


class Modality:
    """What the tokenizer recipe needs from one kind of data. ``config`` is the recipe's config; a
    kind's ``modality(config)`` makes one (``simvq.runs.registry``)."""

    def __init__(self, config=None):
        self.config = config

    def build_model(self, config) -> torch.nn.Module:
        """The autoencoder: ``model(x) -> (reconstruction, QuantizerOutput)``, with ``.quantizer``,
        ``.encoder`` and ``.decoder``; by default the kind's ``build_model``."""
        return get_recipe(config.recipe).build_model(config)

    def build_discriminator(self, config) -> torch.nn.Module | None:
        return None

    def prepare(self, batch, config) -> torch.Tensor:
        """A loader batch as the autoencoder's input (and reconstruction target)."""
        raise NotImplementedError

    def reconstruction_loss(self, reconstruction, target, config) -> tuple[torch.Tensor, dict]:
        """``(loss, logs)``; ``logs`` maps ``train/<name>`` to tensors."""
        raise NotImplementedError

    def quantizer_loss(self, out, quantizer, target, logs: dict, config) -> torch.Tensor:
        """The quantizer's auxiliary loss as the recipe adds it (before ``loss.quantizer_weight``);
        ``logs`` holds this step's reconstruction terms, and takes any term this adds. By default
        ``out.loss`` as the quantizer weighs it."""
        return out.loss

    def adversarial_loss(self, discriminator, real, fake, config) -> tuple[torch.Tensor, dict]:
        """The generator's weighted adversarial terms and their logs."""
        raise NotImplementedError

    def discriminator_loss(self, discriminator, real, fake) -> torch.Tensor:
        raise NotImplementedError

    def train_loader(self, config, start_step: int):
        """The training batches; a resumed run continues the sequence at ``start_step``."""
        raise NotImplementedError

    def callbacks(self, config) -> list[pl.Callback]:
        return []

    def finish(self, trainer: pl.Trainer, run_dir: Path) -> None:
        """Files of the modality written on rank 0 after training."""


class TokenizerModule(pl.LightningModule):
    """The training recipe. Manual optimisation: one generator step per batch (plus a
    discriminator step once the adversarial loss is on), so ``global_step`` counts batches.

    The hot path holds no host synchronisation: batch statistics are logged (and the usage window
    is read) only every ``trainer.log_every`` steps, the code histogram is accumulated on the device
    without validation (the quantizer's codes are in range by construction), and the weight EMA is
    one fused ``_foreach_lerp_``."""

    def __init__(self, config, modality: Modality):
        super().__init__()
        self.config, self.modality = config, modality
        self.automatic_optimization = False
        self.model = modality.build_model(config)
        self.discriminator = modality.build_discriminator(config) if config.loss.discriminator else None
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
        self.initial_state = None  # fine-tuning: simvq.runs.finetune.InitialState, set by fit_tokenizer

    # -- optimisers ---------------------------------------------------------------------------

    def configure_optimizers(self):
        optim, max_steps = self.config.optim, self.config.trainer.max_steps

        def schedule(step: int) -> float:
            return lr_factor(step, warmup_steps=optim.warmup_steps, max_steps=max_steps, schedule=optim.schedule, min_lr_fraction=optim.min_lr_fraction)

        params = [p for p in self.model.parameters() if p.requires_grad]
        generator = torch.optim.Adam(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
        schedules = [{"scheduler": torch.optim.lr_scheduler.LambdaLR(generator, schedule), "interval": "step"}]
        if self.discriminator is None:
            return [generator], schedules
        discriminator = torch.optim.Adam(self.discriminator.parameters(), lr=optim.lr, betas=tuple(optim.betas))
        return [generator, discriminator], schedules

    def on_train_start(self) -> None:
        # init.optimizer=resume: the source run's generator state, into the optimizer Lightning built
        if self.initial_state is not None and self.initial_state.optimizer_state is not None:
            optimizers = self.optimizers()
            generator = (optimizers[0] if isinstance(optimizers, list) else optimizers).optimizer
            apply_optimizer_state(generator, self.initial_state)
        self.initial_state = None

    # -- one step -----------------------------------------------------------------------------

    def generator_loss(self, inputs: torch.Tensor):
        """``(loss, reconstruction, quantizer output, logs)`` of the autoencoder on ``inputs``. The
        discriminator's weights are left out of this graph: its weight gradients would be computed by
        the backward and thrown away (its own step zeroes them), ~a quarter of that backward."""
        loss_config = self.config.loss
        reconstruction, out = self.model(inputs)
        reconstruction_loss, logs = self.modality.reconstruction_loss(reconstruction, inputs, self.config)
        quantizer_loss = self.modality.quantizer_loss(out, self.model.quantizer, inputs, logs, self.config)
        loss = reconstruction_loss + loss_config.quantizer_weight * quantizer_loss
        logs["train/quantizer"] = quantizer_loss
        if self.adversarial_on():
            with frozen(self.discriminator):
                adversarial, adversarial_logs = self.modality.adversarial_loss(self.discriminator, inputs, reconstruction, self.config)
            loss = loss + adversarial
            logs.update(adversarial_logs)
        return loss, reconstruction, out, logs

    def adversarial_on(self) -> bool:
        return self.discriminator is not None and self.global_step >= self.config.loss.discriminator_start

    def training_step(self, batch, batch_idx):
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        scheduler = self.lr_schedulers()
        inputs = self.modality.prepare(batch, self.config)
        gan_on = self.adversarial_on()
        loss, reconstruction, out, logs = self.generator_loss(inputs)
        logging = self.logging_step()
        if logging:
            logs["train/lr"] = torch.tensor(scheduler.get_last_lr()[0])  # the rate this step uses

        generator_opt = optimizers[0]
        generator_opt.zero_grad()
        self.manual_backward(loss)
        self.clip(generator_opt)
        generator_opt.step()  # the LightningOptimizer step: this is what advances global_step
        scheduler.step()

        if gan_on:
            discriminator_opt = optimizers[1]
            discriminator_opt.zero_grad()
            discriminator_loss = self.modality.discriminator_loss(self.discriminator, inputs, reconstruction.detach())
            self.manual_backward(discriminator_loss)
            self.clip(discriminator_opt)
            # the raw torch optimiser, so the discriminator's step does not count as a training step
            discriminator_opt.optimizer.step()
            logs["train/discriminator"] = discriminator_loss

        self.update_ema()
        self.steps_this_session += 1
        self.window_usage.update(out.codes.detach(), check=False)
        if logging:
            logs.update({f"train/batch_{k}": v for k, v in out.metrics.items() if v.numel() == 1})
            logs.update(self.record_usage_point())
            self.log("train/loss", loss.detach(), prog_bar=True, logger=False)
            log_row(self, self.global_step - 1, {"train/loss": loss, **logs})  # after the optimizer step
        return loss.detach()

    def logging_step(self) -> bool:
        # ``global_step`` counts finished steps: this batch is step global_step + 1
        step = self.global_step + 1
        return step % self.config.trainer.log_every == 0 or step == self.trainer.max_steps

    def clip(self, optimizer) -> None:
        if self.config.optim.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.config.optim.grad_clip, gradient_clip_algorithm="norm")

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema_model is not None:
            update_ema(self.ema_model, self.model, self.config.optim.ema_decay)

    def record_usage_point(self) -> dict:
        """The usage of the codes since the last point, added to ``usage_history``; its logs."""
        stats = self.window_usage.compute()
        self.window_usage.reset()
        self.usage_history.append({"step": self.global_step, **stats})  # global_step counts this batch
        return {"train/window_usage": stats["usage"], "train/window_perplexity": stats["perplexity"]}

    def eval_model(self) -> torch.nn.Module:
        """The weights evaluation and export use: the EMA copy when there is one."""
        return self.ema_model if self.ema_model is not None else self.model

    # -- state that is not a parameter --------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["simvq"] = {
            "usage_history": json.dumps(self.usage_history),
            "window_counts": self.window_usage.counts.cpu(),
            # the random streams of dead-code restarts, k-means and anchor sampling: without them a
            # resumed run would draw other rows than an uninterrupted one
            "generators": {name: state.cpu().clone() for name, state in training_streams(self.model)},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("simvq", {})
        self.usage_history = json.loads(state.get("usage_history", "[]"))
        if "window_counts" in state:
            self.window_usage.counts = state["window_counts"].clone()
        saved = state.get("generators", {})
        for name, stream in training_streams(self.model):
            if name in saved:
                stream.copy_(saved[name])


# ----------------------------------------------------------------------------- train


def check_resumable(saved, config, run_dir: Path, sections=MODEL_SECTIONS) -> None:
    """Resuming is allowed when only the schedule/eval/logging changed, not the model or data."""
    problem = config_difference(saved, config, sections)
    if problem:
        raise UsageError("out_dir", f"{run_dir} {problem}; use a new out_dir, or --overwrite to replace that run")


def config_difference(saved, config, sections=MODEL_SECTIONS) -> str | None:
    """How ``saved``'s model differs from ``config``'s (None: the same run)."""
    for section in sections:
        if to_dict(getattr(saved, section)) != to_dict(getattr(config, section)):
            return (f"was trained with a different `{section}` config (saved: {to_dict(getattr(saved, section))}, "
                    f"given: {to_dict(getattr(config, section))})")
    return None


def check_out_dir(config, run_dir: Path) -> None:
    """``config.out_dir`` may hold nothing, or the run ``config`` describes (same kind and
    ``MODEL_SECTIONS``) with its checkpoint to resume from. Anything else would be trained over and
    lose the run there, whether or not its checkpoints remain: another config's run, weights with no
    config, a prior, or this config's finished weights with no checkpoint (training again would start
    from scratch and replace them). Refused as a ``UsageError`` naming ``out_dir``; ``simvq train
    --overwrite`` (``simvq.runs.files.clear_run``) deletes the run's files first."""
    held = held_run_files(run_dir)
    if not held:
        return
    problem = None
    if TOKENS_META in held:
        problem = "holds a prior run (simvq prior train)"
    elif not set(held) & set(CONFIG_FILES):
        problem = f"holds a run's weights ({', '.join(held)}) without the config that made them"
    else:
        try:
            saved = read_run_config(run_dir)
        except (ValueError, TypeError) as error:
            saved, problem = None, f"holds a run whose config cannot be read ({error})"
        if saved is not None and saved.recipe != config.recipe:
            problem = f"holds a {saved.recipe} run, not an {config.recipe} one"
        elif saved is not None:
            problem = config_difference(saved, config)
        if problem is None and WEIGHTS_FILE in held and str(CHECKPOINT_FILE) not in held:
            problem = (f"holds this config's trained {WEIGHTS_FILE} but no {CHECKPOINT_FILE} to resume from "
                       "(training again would start from scratch and replace them)")
    if problem:
        raise UsageError("out_dir", f"{run_dir} {problem}; pass --overwrite to delete that run's files and train from scratch, "
                         "or choose another out_dir")


def fit_tokenizer(config, build_module, *, evaluate: bool = True, progress: bool | None = None) -> Path:
    """Train (or resume) the tokenizer ``config`` describes; returns its run directory.

    ``build_module()`` makes the ``TokenizerModule`` (after the seed is set). ``config.out_dir`` is
    the run directory; if it holds ``checkpoints/last.ckpt`` from an earlier call, training resumes
    from it (steps already done are not redone). A directory holding any other run is refused
    (``check_out_dir``). With ``evaluate`` the modality's evaluation runs
    afterwards: its recipe kind's ``evaluate_run`` (every rank measures a shard under DDP; rank 0 writes).
    With ``init.from`` (fine-tuning; ``simvq.runs.finetune``) a new run starts from that tokenizer's
    weights, its quantizer kept or built afresh (``init.quantizer``), its optimizer fresh or continued
    (``init.optimizer``); the source is checked before the run directory is written.
    """
    run_dir = Path(config.out_dir)
    if rank_zero_only.rank == 0:  # DDP ranks started later re-run this once rank 0 has written the config
        check_out_dir(config, run_dir)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    # fine-tuning (init.from): the source is read and checked before anything is written; a run that
    # resumes its own checkpoint continues from that instead
    initial = None if checkpoint_path.is_file() else initial_state(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    show_progress = config.trainer.progress_bar if progress is None else progress

    module = build_module()
    if initial is not None:
        apply_weights(module.model, initial, copies=(module.ema_model,))
        module.initial_state = initial  # the optimizer state, loaded once the optimizers exist (on_train_start)
    modality = module.modality
    strategy = config.trainer.strategy
    if strategy == "ddp" and config.loss.discriminator:
        strategy = "ddp_find_unused_parameters_true"  # the discriminator sits idle before its start step
    precision = resolve_precision(config.trainer.precision, config.trainer.accelerator)
    if config.loss.discriminator and precision.startswith("16"):
        raise ValueError("trainer.precision=16-mixed is not supported with the discriminator; use bf16-mixed or 32-true")
    start_step = checkpoint_step(checkpoint_path)
    consistency = RankConsistency()
    record = SessionRecord(run_dir, start_step, facts=lambda trainer: {
        "world_size": trainer.world_size, "tensors_identical_across_ranks": consistency.compared, "precision": precision})
    trainer = resumable_trainer(
        config,
        run_dir,
        start_step,
        # the modality's first (e.g. the plateau stop): their state is checkpointed
        callbacks=[*modality.callbacks(config), PeriodicCheckpoint(checkpoint_path, config.trainer.checkpoint_every, on_save=record),
                   consistency],
        show_progress=show_progress,
        num_nodes=config.trainer.num_nodes,
        strategy=strategy,
        precision=precision,
    )
    loader = modality.train_loader(config, start_step)
    # written once the model, the trainer and the data are built: a config refused on the way (a
    # norm_groups, an accelerator, a data set) leaves no config behind to claim the directory
    save_config(config, run_dir)
    try:
        trainer.fit(module, loader, ckpt_path=checkpoint_path if checkpoint_path.is_file() else None)
    finally:
        # also when the session ends on SIGTERM, Ctrl-C or an error: the steps it ran are on disk
        # (PeriodicCheckpoint saved them), so they belong in the record
        record(trainer, module)

    if trainer.is_global_zero:
        write_json(run_dir / USAGE_HISTORY_FILE, module.usage_history, indent=1)
        save_weights(module.eval_model(), run_dir / WEIGHTS_FILE)
        modality.finish(trainer, run_dir)
    evaluate_run = get_recipe(config.recipe).evaluate_run
    if evaluate and trainer.world_size > 1:
        # every rank evaluates a shard of the test split (rank 0 writes); the weights file must exist first
        trainer.strategy.barrier("weights written")
        evaluate_run(run_dir, progress=show_progress and trainer.is_global_zero, write=trainer.is_global_zero,
                     shard=(trainer.global_rank, trainer.world_size), device=trainer.strategy.root_device)
    elif evaluate:
        evaluate_run(run_dir, progress=show_progress)
    return run_dir


def train_with_modality(config, *, evaluate: bool = True, progress: bool | None = None) -> Path:
    """Train (or resume) a tokenizer of any kind with the ``Modality`` its kind names: the train entry
    of a kind that needs no module of its own."""
    modality = get_recipe(config.recipe).modality
    return fit_tokenizer(config, lambda: TokenizerModule(config, modality(config)), evaluate=evaluate, progress=progress)
