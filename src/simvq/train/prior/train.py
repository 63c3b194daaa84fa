"""Training the prior: ``PriorModule`` (the LightningModule) and ``train_prior``, the driver.

    tokenizer run -> tokens of the training split (cached) -> batch (codes, labels) -> label dropout
    -> prior -> next-token cross-entropy -> AdamW step

It runs on the recipes' shared machinery (``simvq.train.core``: atomic checkpoints read back with
``weights_only=True``, resumable CSV + TensorBoard logs, ``progress.json``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from ...runs import CHECKPOINT_FILE, WEIGHTS_FILE, save_config, save_weights, to_dict
from ...runs.files import held_run_files
from ...runs.prior import TOKENS_META, PriorConfig, read_prior_config, read_tokens_meta
from ...tokenizer import Tokenizer
from ...utils import UsageError, load_safetensors, write_json
from .. import core
from .tokens import split_tokens, tokenizer_fingerprint
from .validation import BEST_FILE, ValidationNLL, finish, hold_out


class PriorModule(pl.LightningModule):
    """``training_step``: codes and labels -> label dropout -> next-token cross-entropy (nats)."""

    def __init__(self, config: PriorConfig, *, codebook_size: int, grid: tuple[int, int], num_classes: int):
        from ...models.prior import TokenPrior

        super().__init__()
        self.config = config
        model = config.model
        self.model = TokenPrior(codebook_size, grid=grid, num_classes=num_classes, dim=model.dim, layers=model.layers,
                                heads=model.heads, dropout=model.dropout)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if config.optim.ema_decay else None
        if config.trainer.compile:
            self.model.compile()  # in place: state_dict keys unchanged; sampling (not forward) stays eager
        self.steps_this_session = 0

    def configure_optimizers(self):
        optim, max_steps = self.config.optim, self.config.trainer.max_steps
        # nanoGPT: decay matrices (linear weights, embeddings), not biases, norms or position embeddings
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and n != "position_embedding"]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2 or n == "position_embedding"]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                      lr=optim.lr, betas=tuple(optim.betas))

        def schedule(step: int) -> float:
            return core.lr_factor(step, warmup_steps=optim.warmup_steps, max_steps=max_steps, schedule=optim.schedule, min_lr_fraction=optim.min_lr_fraction)

        return [optimizer], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), "interval": "step"}]

    def training_step(self, batch, batch_idx):
        codes, labels = batch
        codes = codes.long()
        if self.model.num_classes:
            dropped = torch.rand(labels.shape, device=labels.device) < self.config.model.label_dropout
            labels = labels.masked_fill(dropped, self.model.null_class)
        else:
            labels = None
        loss = self.model.loss(codes, labels)
        if (self.global_step + 1) % self.config.trainer.log_every == 0:  # before the optimizer step
            self.log("train/loss", loss.detach(), prog_bar=True, logger=False)
            core.log_row(self, self.global_step, {"train/loss": loss, "train/bits_per_token": loss / math.log(2)})
        self.steps_this_session += 1
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema_model is not None:
            core.update_ema(self.ema_model, self.model, self.config.optim.ema_decay)

    def eval_model(self):
        return self.ema_model if self.ema_model is not None else self.model


def _token_loader(codes: torch.Tensor, labels: torch.Tensor, batch_size: int, *, seed: int, start: int):
    """Shuffled ``(codes, labels)`` batches by one index op each, continuing after the ``start`` batches a
    resumed run already consumed (so it ends like an uninterrupted one); under DDP each rank its own share."""
    from torch.utils.data import DataLoader

    from ...data.in_memory import ShuffledRows

    if not 1 <= batch_size <= codes.shape[0]:
        raise ValueError(f"data.batch_size must lie in [1, {codes.shape[0]}] (the token grids), got {batch_size}")
    return DataLoader(ShuffledRows((codes, labels), batch_size, seed=seed, start=start), batch_size=None)


def _check_resumable(run_dir: Path, config: PriorConfig, fingerprint: str) -> None:
    """The prior's ``out_dir`` may hold nothing, or the prior ``config`` describes (same ``model`` and
    ``data`` sections, trained on the same tokenizer weights) with its checkpoint to resume from; any
    other run there is refused naming ``out_dir``, whether or not its checkpoints remain
    (``simvq prior train --overwrite`` deletes its files first)."""
    held = held_run_files(run_dir)
    if not held:
        return
    problem = None
    if TOKENS_META not in held:
        problem = f"holds a tokenizer run or weights ({', '.join(held)}), not a prior"
    else:
        try:
            saved, saved_meta = read_prior_config(run_dir), read_tokens_meta(run_dir)
        except (ValueError, TypeError, KeyError) as error:
            saved = saved_meta = None
            problem = f"holds a prior whose config or {TOKENS_META} cannot be read ({error})"
        if saved is not None:
            problem = next((f"was trained with a different `{section}` config" for section in ("model", "data")
                            if to_dict(getattr(saved, section)) != to_dict(getattr(config, section))), None)
            if problem is None and saved_meta.get("tokenizer_sha256") != fingerprint:
                problem = "was trained on another tokenizer's tokens (its weights changed)"
        if problem is None and WEIGHTS_FILE in held and str(CHECKPOINT_FILE) not in held:
            problem = f"holds this config's trained {WEIGHTS_FILE} but no {CHECKPOINT_FILE} to resume from"
    if problem:
        raise UsageError("out_dir", f"{run_dir} {problem}; pass --overwrite to delete that run's files and train from scratch, "
                         "or choose another out_dir")


def check_prior_out_dir(config: PriorConfig) -> None:
    """A tokenizer is named, and the prior's run directory is not the tokenizer's own."""
    if not config.tokenizer:
        raise UsageError("tokenizer", "name the tokenizer run directory (tokenizer=... or the RUN_DIR argument)")
    if config.run_dir.resolve() == Path(config.tokenizer).resolve():
        raise UsageError("out_dir", f"{config.run_dir} is the tokenizer's own run directory; the prior goes elsewhere "
                         f"(default: {Path(config.tokenizer) / 'prior'})")


def train_prior(config: PriorConfig, *, progress: bool | None = None) -> Path:
    """Train (or resume from ``checkpoints/last.ckpt``) the prior ``config`` describes; returns its run directory."""
    check_prior_out_dir(config)
    run_dir = config.run_dir
    show_progress = config.trainer.progress_bar if progress is None else progress
    fingerprint = tokenizer_fingerprint(config.tokenizer)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if rank_zero_only.rank == 0:  # before the token cache is touched; DDP ranks started later find rank 0's files
        _check_resumable(run_dir, config, fingerprint)
    codes, labels, held_out, meta = _training_tokens(config, run_dir, fingerprint, progress=show_progress)

    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module = PriorModule(config, codebook_size=meta["codebook_size"], grid=tuple(meta["grid"]), num_classes=meta["num_classes"])
    start_step = core.checkpoint_step(checkpoint_path)
    precision = core.resolve_precision(config.trainer.precision, config.trainer.accelerator)
    record = core.SessionRecord(run_dir, start_step, facts=lambda trainer: {"precision": precision})
    validation = ValidationNLL(config, *held_out, run_dir) if held_out else None
    trainer = core.resumable_trainer(
        config,
        run_dir,
        start_step,
        # the validation first: a checkpoint taken at a check holds its result
        callbacks=[*([validation] if validation else []),
                   core.PeriodicCheckpoint(checkpoint_path, config.trainer.checkpoint_every, on_save=record)],
        show_progress=show_progress,
        strategy=config.trainer.strategy,
        precision=precision,
        gradient_clip_val=config.optim.grad_clip,
        use_distributed_sampler=False,
    )
    loader = _token_loader(codes, labels, config.data.batch_size, seed=config.trainer.seed, start=start_step)
    # written once the prior, the trainer and the batches are built: a refused setting leaves no run behind
    save_config(config, run_dir)
    write_json(run_dir / TOKENS_META, meta)
    try:
        trainer.fit(module, loader, ckpt_path=checkpoint_path if checkpoint_path.is_file() else None)
    finally:  # the session's steps are on disk (PeriodicCheckpoint), so they belong in the record
        record(trainer, module)
    if trainer.is_global_zero:
        if validation is None:
            save_weights(module.eval_model(), run_dir / WEIGHTS_FILE)
        else:  # the exported prior is the best one on the held-out grids, not the last
            finish(validation, run_dir, trainer.global_step, config.trainer.max_steps)
            best = module.eval_model()
            best.load_state_dict(load_safetensors(run_dir / BEST_FILE))
            save_weights(best, run_dir / WEIGHTS_FILE)
    return run_dir


def _training_tokens(config: PriorConfig, run_dir: Path, fingerprint: str, *, progress: bool):
    """``(codes, labels, held_out, meta)``: the training split under the tokenizer (cached) less the
    ``validation.images`` held-out grids (``held_out``: their codes and labels, the labels None for an
    unconditional prior; empty without validation), and what ``tokens.json`` records; the labels of an
    unconditional prior are zeros (unused)."""
    tokenizer = Tokenizer.from_run(config.tokenizer)
    run_dir.mkdir(parents=True, exist_ok=True)
    codes, labels = split_tokens(tokenizer, run_dir, "train", fingerprint=fingerprint, batch_size=config.data.tokenize_batch_size, progress=progress)
    conditional = config.model.conditional and bool((labels >= 0).all())
    held_out = ()
    if config.validation.images:
        codes, labels, held_codes, held_labels = hold_out(codes, labels, config.validation.images, seed=config.validation.seed)
        held_out = (held_codes, held_labels if conditional else None)
    meta = {
        "tokenizer": str(Path(config.tokenizer).resolve()),
        "tokenizer_sha256": fingerprint,
        "codebook_size": tokenizer.codebook_size,
        "grid": list(codes.shape[1:]),
        "num_classes": int(labels.max()) + 1 if conditional else 0,
        "train_tokens": codes.numel(),
        "validation_images": config.validation.images,
    }
    if not conditional:
        labels = torch.zeros_like(labels)  # unused; keeps the batches' shape
    return codes, labels, held_out, meta
