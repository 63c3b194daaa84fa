"""The prior recipe: a transformer (``simvq.models.prior.TokenPrior``) over a trained tokenizer's codes.

    tokenizer run -> tokens of the training split (cached) -> batch (codes, labels) -> label dropout
    -> prior -> next-token cross-entropy -> AdamW step

``train_prior(config) -> run_dir`` trains (or resumes) it with the recipes' shared machinery
(``simvq.train.core``: atomic checkpoints read back with ``weights_only=True``, resumable CSV +
TensorBoard logs, ``progress.json``); ``evaluate_prior_run(run_dir) -> dict`` measures it (``gen_metrics.json``);
``sample_images`` draws and decodes samples.

A prior run directory holds ``config.yaml``/``config.json``, ``tokens.json`` (the tokenizer it was
trained on: path, SHA-256 of its weights, codebook size, grid, classes), ``tokens/`` (the cached
codes of each split, named by that hash), ``model.safetensors``, ``checkpoints/last.ckpt``,
``logs/``, ``progress.json`` and, after evaluation, ``gen_metrics.json`` and ``samples.png``.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch

from .config import OptimConfig, TrainerConfig, load_structured, save_config, to_dict
from . import core

TOKENS_META = "tokens.json"


@dataclass
class PriorModelConfig:
    dim: int = 256
    layers: int = 4
    heads: int = 8
    dropout: float = 0.1
    conditional: bool = True  # class-conditional on the data set's labels (unconditional when it has none)
    label_dropout: float = 0.1  # training labels replaced by the null class, so guidance has an unconditional model


@dataclass
class PriorDataConfig:
    batch_size: int = 64
    tokenize_batch_size: int = 256  # images per tokenizer call when the token cache is built


@dataclass
class PriorOptimConfig(OptimConfig):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)  # nanoGPT / GPT-3
    weight_decay: float = 0.1  # AdamW, on matrices only (not norms, biases or position embeddings)
    warmup_steps: int = 100
    schedule: str = "cosine"  # to min_lr_fraction of lr at trainer.max_steps


@dataclass
class PriorEvalConfig:
    samples: int = 1000  # class-conditional samples (balanced over classes) for the domain FID and class accuracy
    fid_samples: int = 1000  # Inception FID samples (~6 img/s on 2 CPU cores); 0 skips it
    cfg_scale: float | None = None  # classifier-free guidance at evaluation; None: the conditional model alone
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    batch_size: int = 250
    seed: int = 0
    fid_cache_dir: str | None = None  # Inception reference statistics; default ~/.cache/simvq/fid
    grid_samples: int = 100  # samples.png: the first evaluation samples (10 per class for Fashion-MNIST)


@dataclass
class PriorConfig:
    tokenizer: str = ""  # the trained tokenizer's run directory
    out_dir: str | None = None  # the prior's run directory; None: <tokenizer>/prior
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    data: PriorDataConfig = field(default_factory=PriorDataConfig)
    optim: PriorOptimConfig = field(default_factory=PriorOptimConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=3000, log_every=50, checkpoint_every=500, channels_last=False))
    eval: PriorEvalConfig = field(default_factory=PriorEvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path(self.tokenizer) / "prior"


def load_prior_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> PriorConfig:
    """Defaults, then the YAML (or JSON) file at ``path``, then ``section.key=value`` overrides."""
    return load_structured(PriorConfig, path, overrides)


def read_prior_config(run_dir: str | os.PathLike) -> PriorConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file() or not (Path(run_dir) / TOKENS_META).is_file():
        raise FileNotFoundError(f"{run_dir} is not a prior run directory (no config.json and {TOKENS_META})")
    return load_prior_config(path)


# ----------------------------------------------------------------------------- tokens


def tokenizer_fingerprint(tokenizer_dir: str | os.PathLike) -> str:
    """SHA-256 of the tokenizer's weights (``model.safetensors``, else its last checkpoint)."""
    from ..data.tokens import file_sha256
    from ..tokenizer import CHECKPOINT_FILE, WEIGHTS_FILE

    tokenizer_dir = Path(tokenizer_dir)
    for name in (WEIGHTS_FILE, CHECKPOINT_FILE):
        if (tokenizer_dir / name).is_file():
            return file_sha256(tokenizer_dir / name)
    raise FileNotFoundError(f"{tokenizer_dir} holds no trained tokenizer ({WEIGHTS_FILE} or {CHECKPOINT_FILE})")


def split_tokens(tokenizer, run_dir: Path, split: str, *, fingerprint: str, batch_size: int = 256, progress: bool = True):
    """``(codes (N, h, w) int32, labels (N,))`` of ``split`` under the tokenizer, cached in
    ``run_dir/tokens/<split>-<fingerprint[:16]>.safetensors`` (older fingerprints' files are removed)."""
    from ..data import build_image_dataset
    from ..data.tokens import cached_tokens, encode_dataset

    config = tokenizer.config
    dataset = build_image_dataset(config.data, split, seed=config.trainer.seed)
    key = f"{getattr(dataset, 'cache_key', config.data.name)}:{fingerprint}"
    directory = run_dir / "tokens"
    path = directory / f"{split}-{fingerprint[:16]}.safetensors"
    if directory.is_dir():
        for stale in directory.glob(f"{split}-*.safetensors"):
            if stale != path:
                stale.unlink()
    return cached_tokens(path, key, lambda: encode_dataset(tokenizer.encode, dataset, batch_size=batch_size, progress=progress))


# ----------------------------------------------------------------------------- Lightning module


class PriorModule(pl.LightningModule):
    """``training_step``: codes and labels -> label dropout -> next-token cross-entropy (nats)."""

    def __init__(self, config: PriorConfig, *, codebook_size: int, grid: tuple[int, int], num_classes: int):
        from ..models.prior import TokenPrior

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


# ----------------------------------------------------------------------------- train


def _token_loader(codes: torch.Tensor, labels: torch.Tensor, batch_size: int, *, seed: int, start: int):
    """Shuffled ``(codes, labels)`` batches by one index op each, continuing after the ``start`` batches a
    resumed run already consumed (so it ends like an uninterrupted one); under DDP each rank its own share."""
    from torch.utils.data import DataLoader

    from ..data.in_memory import ShuffledRows

    if not 1 <= batch_size <= codes.shape[0]:
        raise ValueError(f"data.batch_size must lie in [1, {codes.shape[0]}] (the token grids), got {batch_size}")
    return DataLoader(ShuffledRows((codes, labels), batch_size, seed=seed, start=start), batch_size=None)


def _check_resumable(run_dir: Path, config: PriorConfig, fingerprint: str) -> None:
    saved = read_prior_config(run_dir)
    for section in ("model", "data"):
        if to_dict(getattr(saved, section)) != to_dict(getattr(config, section)):
            raise ValueError(f"{run_dir} was trained with a different `{section}` config; use a new out_dir")
    saved_meta = json.loads((run_dir / TOKENS_META).read_text())
    if saved_meta["tokenizer_sha256"] != fingerprint:
        raise ValueError(f"{run_dir} was trained on another tokenizer's tokens (its weights changed); use a new out_dir")


def train_prior(config: PriorConfig, *, progress: bool | None = None) -> Path:
    """Train (or resume from ``checkpoints/last.ckpt``) the prior ``config`` describes; returns its run directory."""
    from ..tokenizer import CHECKPOINT_FILE, WEIGHTS_FILE, Tokenizer, save_weights
    from ..utils import atomic_write_text

    if not config.tokenizer:
        raise ValueError("name the tokenizer run directory (tokenizer=... or the RUN_DIR argument)")
    run_dir = config.run_dir
    show_progress = config.trainer.progress_bar if progress is None else progress
    fingerprint = tokenizer_fingerprint(config.tokenizer)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if checkpoint_path.is_file():  # before the token cache is touched
        _check_resumable(run_dir, config, fingerprint)
    tokenizer = Tokenizer.from_run(config.tokenizer)
    run_dir.mkdir(parents=True, exist_ok=True)
    codes, labels = split_tokens(tokenizer, run_dir, "train", fingerprint=fingerprint, batch_size=config.data.tokenize_batch_size, progress=show_progress)
    conditional = config.model.conditional and bool((labels >= 0).all())
    meta = {
        "tokenizer": str(Path(config.tokenizer).resolve()),
        "tokenizer_sha256": fingerprint,
        "codebook_size": tokenizer.codebook_size,
        "grid": list(codes.shape[1:]),
        "num_classes": int(labels.max()) + 1 if conditional else 0,
        "train_tokens": codes.numel(),
    }
    save_config(config, run_dir)
    atomic_write_text(run_dir / TOKENS_META, json.dumps(meta, indent=2) + "\n")
    if not conditional:
        labels = torch.zeros_like(labels)  # unused; keeps the batches' shape

    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module = PriorModule(config, codebook_size=meta["codebook_size"], grid=tuple(meta["grid"]), num_classes=meta["num_classes"])
    start_step = core.checkpoint_step(checkpoint_path)
    record = core.SessionRecord(run_dir, start_step)
    trainer = core.resumable_trainer(
        config,
        run_dir,
        start_step,
        callbacks=[core.PeriodicCheckpoint(checkpoint_path, config.trainer.checkpoint_every, on_save=record)],
        show_progress=show_progress,
        strategy=config.trainer.strategy,
        precision=core.resolve_precision(config.trainer.precision, config.trainer.accelerator),
        gradient_clip_val=config.optim.grad_clip,
        use_distributed_sampler=False,
    )
    loader = _token_loader(codes, labels, config.data.batch_size, seed=config.trainer.seed, start=start_step)
    try:
        trainer.fit(module, loader, ckpt_path=checkpoint_path if checkpoint_path.is_file() else None)
    finally:  # the session's steps are on disk (PeriodicCheckpoint), so they belong in the record
        record(trainer, module)
    if trainer.is_global_zero:
        save_weights(module.eval_model(), run_dir / WEIGHTS_FILE)
    return run_dir


# ----------------------------------------------------------------------------- load, sample, evaluate


def load_prior(run_dir: str | os.PathLike, *, device=None):
    """``(prior, config, meta)`` of a prior run (``model.safetensors``, else its last checkpoint)."""
    from ..models.prior import TokenPrior
    from ..tokenizer import CHECKPOINT_FILE, WEIGHTS_FILE, checkpoint_model_state

    run_dir = Path(run_dir)
    config = read_prior_config(run_dir)
    meta = json.loads((run_dir / TOKENS_META).read_text())
    if (run_dir / WEIGHTS_FILE).is_file():
        from safetensors.torch import load_file

        state = load_file(str(run_dir / WEIGHTS_FILE))
    elif (run_dir / CHECKPOINT_FILE).is_file():
        state = checkpoint_model_state(run_dir / CHECKPOINT_FILE)
    else:
        raise FileNotFoundError(f"{run_dir} holds neither {WEIGHTS_FILE} nor {CHECKPOINT_FILE}")
    model = config.model
    prior = TokenPrior(meta["codebook_size"], grid=tuple(meta["grid"]), num_classes=meta["num_classes"], dim=model.dim,
                       layers=model.layers, heads=model.heads)
    prior.load_state_dict(state)
    return prior.eval().to(device or "cpu"), config, meta


def load_tokenizer_for(meta: dict, *, device=None, check: bool = True):
    """The tokenizer a prior was trained on; refuses one whose weights changed since."""
    from ..tokenizer import Tokenizer

    if check and tokenizer_fingerprint(meta["tokenizer"]) != meta["tokenizer_sha256"]:
        raise ValueError(f"the tokenizer at {meta['tokenizer']} changed since this prior was trained on it")
    return Tokenizer.from_run(meta["tokenizer"], device=device)


@torch.no_grad()
def sample_codes(prior, num_samples: int, *, labels: torch.Tensor | None = None, cfg_scale=None, temperature=1.0, top_k=None,
                 top_p=None, seed: int = 0, batch_size: int = 250) -> torch.Tensor:
    """``num_samples`` code grids in batches from one seeded generator (``labels``: one per sample, or None)."""
    device = prior.position_embedding.device
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        chunk_labels = labels[start : start + count] if labels is not None else None
        chunks.append(prior.sample(count, labels=chunk_labels, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k,
                                   top_p=top_p, generator=generator))
    return torch.cat(chunks)


@torch.no_grad()
def decode_codes(tokenizer, codes: torch.Tensor, *, batch_size: int = 250) -> torch.Tensor:
    """Images ``(N, C, H, W)`` in ``[0, 1]`` (on the CPU) of code grids ``(N, h, w)``."""
    return torch.cat([tokenizer.decode(codes[i : i + batch_size]).float().clamp(0, 1).cpu() for i in range(0, codes.shape[0], batch_size)])


def balanced_labels(num_samples: int, num_classes: int) -> torch.Tensor | None:
    """``0, 1, ..., C-1, 0, 1, ...`` (None for an unconditional prior)."""
    return torch.arange(num_samples) % num_classes if num_classes else None


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, *, per_row: int = 8) -> None:
    """A PNG grid of images ``(N, C, H, W)`` in ``[0, 1]``, enlarged so small images can be seen."""
    from PIL import Image

    from ..utils import atomic_path

    rows = []
    for start in range(0, images.shape[0], per_row):
        batch = images[start : start + per_row]
        if batch.shape[0] < per_row:
            batch = torch.cat([batch, torch.ones(per_row - batch.shape[0], *batch.shape[1:])])
        rows.append(torch.cat(list(batch), dim=2))
    array = (torch.cat(rows, dim=1).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    scale = max(1, 256 // images.shape[-1])
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


@torch.no_grad()
def test_nll(prior, codes: torch.Tensor, labels: torch.Tensor | None, *, batch_size: int = 500) -> float:
    """Mean negative log-likelihood per token (nats) of ``codes`` ``(N, h, w)`` given ``labels``."""
    total = 0.0
    for start in range(0, codes.shape[0], batch_size):
        chunk = codes[start : start + batch_size].long().to(prior.position_embedding.device)
        chunk_labels = labels[start : start + batch_size].to(chunk.device) if labels is not None else None
        total += prior.loss(chunk, chunk_labels).item() * chunk.shape[0]
    return total / codes.shape[0]


def evaluate_prior_run(
    run_dir: str | os.PathLike,
    *,
    samples: int | None = None,
    fid_samples: int | None = None,
    cfg_scale: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    device=None,
    progress: bool = True,
    write: bool = True,
    report=None,
) -> dict:
    """Measure a prior run; returns (and writes to ``gen_metrics.json``) a flat dict:

    - ``nll_bits_per_token``, ``nll_bits_per_image`` on the test split's tokens (given their true
      labels), and for a conditional prior ``nll_bits_per_token_unconditional`` (the null class);
    - ``test_entropy_bits``, ``test_perplexity``, ``test_usage``, ``test_tokens``: the unigram
      statistics of those tokens (a prior that has learned nothing scores ``test_entropy_bits``);
    - ``domain_fid`` (and the sample counts) on the cached Fashion-MNIST classifier's features against
      the whole test split, ``class_accuracy`` of the class-conditional samples, and the
      classifier's own ``classifier_test_accuracy``; ``domain_fid_train`` is the floor (training
      images against test images, as many as samples);
    - ``fid``, ``fid_samples``: Inception FID against a fixed test subset (skipped with 0 samples or
      without the Inception weights: ``fid_skipped`` says why).

    Options left as None take the run's ``eval`` config. ``report(metrics)`` is called before the
    file is written (the CLI prints there).
    """
    from ..data import build_image_dataset
    from ..metrics.generation import (
        bits,
        domain_classifier,
        domain_metrics,
        generation_fid,
        token_statistics,
    )
    from ..quantizers.base import code_counts
    from ..utils import atomic_write_text

    run_dir = Path(run_dir)
    prior, config, meta = load_prior(run_dir, device=device)
    tokenizer = load_tokenizer_for(meta, device=device)
    ev = config.eval
    samples = ev.samples if samples is None else samples
    fid_samples = ev.fid_samples if fid_samples is None else fid_samples
    cfg_scale = ev.cfg_scale if cfg_scale is None else cfg_scale
    options = {
        "cfg_scale": cfg_scale if meta["num_classes"] else None,
        "temperature": ev.temperature if temperature is None else temperature,
        "top_k": ev.top_k if top_k is None else top_k,
        "top_p": ev.top_p if top_p is None else top_p,
        "seed": ev.seed if seed is None else seed,
    }
    metrics: dict = {"tokenizer": meta["tokenizer"], "codebook_size": meta["codebook_size"], "grid": meta["grid"],
                     "num_classes": meta["num_classes"], **{f"sample_{k}": v for k, v in options.items()}}

    codes, labels = split_tokens(tokenizer, run_dir, "test", fingerprint=meta["tokenizer_sha256"], progress=progress)
    conditional = meta["num_classes"] > 0
    nll = test_nll(prior, codes, labels if conditional else None)
    metrics.update(nll_bits_per_token=bits(nll), nll_bits_per_image=bits(nll) * codes[0].numel())
    if conditional:
        nll_null = test_nll(prior, codes, torch.full_like(labels, prior.null_class))
        metrics["nll_bits_per_token_unconditional"] = bits(nll_null)
    stats = token_statistics(code_counts(codes.long(), meta["codebook_size"]))
    metrics.update({f"test_{k}": v for k, v in stats.items() if k != "codebook_size"})
    metrics["test_images"] = codes.shape[0]

    tokenizer_config = tokenizer.config
    test_set = build_image_dataset(tokenizer_config.data, "test", seed=tokenizer_config.trainer.seed)
    if fid_samples:
        from ..metrics.image import inception_weights_path

        try:
            inception_weights_path()
        except (ModuleNotFoundError, FileNotFoundError) as error:  # FID is optional: say why it is missing
            metrics["fid_skipped"], fid_samples = str(error).splitlines()[0], 0
    count = max(samples, fid_samples)
    sample_labels = balanced_labels(count, meta["num_classes"])
    sampled = sample_codes(prior, count, labels=sample_labels, batch_size=ev.batch_size, **options) if count else None
    images = decode_codes(tokenizer, sampled) if count else None
    if samples and tokenizer_config.data.name == "fashion_mnist":
        classifier, record = domain_classifier(data_root=tokenizer_config.data.root, progress=progress)
        train_set = build_image_dataset(tokenizer_config.data, "train", seed=tokenizer_config.trainer.seed)
        metrics.update(domain_metrics(classifier, images[:samples], test_set.images.unsqueeze(1),
                                      labels=sample_labels[:samples] if conditional else None))
        metrics["domain_fid_train"] = domain_metrics(classifier, train_set.images[:samples].unsqueeze(1), test_set.images.unsqueeze(1))["domain_fid"]
        metrics["classifier_test_accuracy"] = record["test_accuracy"]
    if fid_samples:
        metrics.update(generation_fid(images[:fid_samples], test_set, cache_dir=ev.fid_cache_dir, device=device, progress=progress))
    if report is not None:
        report(metrics)
    if write:
        atomic_write_text(run_dir / "gen_metrics.json", json.dumps(metrics, indent=2) + "\n")
        if images is not None and ev.grid_samples:  # one column per class for a conditional prior
            save_image_grid(images[: ev.grid_samples], run_dir / "samples.png", per_row=meta["num_classes"] or 8)
    return metrics
