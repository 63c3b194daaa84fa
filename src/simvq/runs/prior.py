"""A prior run directory, read without Lightning: the prior recipe's config schema and loading, its
``tokens.json`` (the tokenizer it was trained on: path, SHA-256 of its weights, codebook size, grid,
classes) and the trained ``TokenPrior``, whose weights load through the tokenizer's loader
(``simvq.runs.weights.read_model_state``: safetensors checked finite, checkpoints read
``weights_only``). The recipe itself is ``simvq.train.prior``.

``tokens.json``'s ``tokenizer`` is the tokenizer's directory: absolute in a trained run, relative to
the prior's directory in a ``save_pretrained`` one (``tokenizer``: the subfolder that travels with
it, ``simvq.runs.pretrained``); ``read_tokens_meta`` gives it resolved either way."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..utils import UsageError, check_device
from .config import load_structured
from .files import CHECKPOINT_FILE, CONFIG_FILES, TOKENS_META, WEIGHTS_FILE
from .schemas import OptimConfig, TrainerConfig
from .weights import read_model_state


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
class PriorValidationConfig:
    """Held-out training grids: the prior's validation NLL every ``every`` steps (and at the last
    step), the best weights kept, and an early stop once ``patience`` checks in a row improved on the
    best by no more than ``min_delta`` bits per token. The held-out grids are a fixed choice (``seed``),
    the same for every prior on the same tokens' data set, and are never trained on."""

    images: int = 0  # grids held out of the training split; 0: no validation (the prior trains to its budget)
    every: int = 250
    patience: int = 4  # 0: never stop early (the best checkpoint is still kept)
    min_delta: float = 0.002  # bits per token
    seed: int = 0


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
    validation: PriorValidationConfig = field(default_factory=PriorValidationConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path(self.tokenizer) / "prior"


def load_prior_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> PriorConfig:
    """Defaults, then the YAML (or JSON) file at ``path``, then ``section.key=value`` overrides."""
    config = load_structured(PriorConfig, path, overrides)
    validation = config.validation
    for key, minimum in (("images", 0), ("every", 1), ("patience", 0)):
        if getattr(validation, key) < minimum:
            raise ValueError(f"validation.{key} must be >= {minimum}, got {getattr(validation, key)}")
    if not validation.min_delta >= 0:
        raise ValueError(f"validation.min_delta must be >= 0 (bits per token), got {validation.min_delta}")
    return config


def read_prior_config(run_dir: str | os.PathLike) -> PriorConfig:
    """The config a prior run was trained with; a tokenizer's run directory is refused, naming the
    command that reads it."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file() or not (run_dir / TOKENS_META).is_file():
        if any((run_dir / name).is_file() for name in CONFIG_FILES):
            raise UsageError(str(run_dir), f"this is a tokenizer run, not a prior run (no {TOKENS_META}); use `simvq eval` on it, "
                             "or train a prior on it with `simvq prior train`")
        raise FileNotFoundError(f"{run_dir} is not a prior run directory (no config.json and {TOKENS_META})")
    return load_prior_config(path)


def read_tokens_meta(run_dir: str | os.PathLike) -> dict:
    """The prior run's ``tokens.json``, its ``tokenizer`` resolved against the run directory when
    relative (a ``save_pretrained`` prior names its ``tokenizer`` subfolder so)."""
    meta = json.loads((Path(run_dir) / TOKENS_META).read_text())
    if meta.get("tokenizer") and not Path(meta["tokenizer"]).is_absolute():
        meta["tokenizer"] = str(Path(run_dir) / meta["tokenizer"])
    return meta


def tokenizer_fingerprint(tokenizer_dir: str | os.PathLike) -> str:
    """SHA-256 of the tokenizer's weights (``model.safetensors``, else its last checkpoint): what a
    prior's ``tokens.json`` records, so a prior is never decoded by a tokenizer that changed."""
    from ..data.tokens import file_sha256

    tokenizer_dir = Path(tokenizer_dir)
    for name in (WEIGHTS_FILE, CHECKPOINT_FILE):
        if (tokenizer_dir / name).is_file():
            return file_sha256(tokenizer_dir / name)
    raise FileNotFoundError(f"{tokenizer_dir} holds no trained tokenizer ({WEIGHTS_FILE} or {CHECKPOINT_FILE})")


def load_prior(run_dir: str | os.PathLike, *, device=None):
    """``(prior, config, meta)`` of a prior run (``model.safetensors``, else its last checkpoint)."""
    from ..models.prior import TokenPrior

    run_dir = Path(run_dir)
    device = check_device(device)
    config = read_prior_config(run_dir)
    meta = read_tokens_meta(run_dir)
    weights = next((run_dir / name for name in (WEIGHTS_FILE, CHECKPOINT_FILE) if (run_dir / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{run_dir} holds neither {WEIGHTS_FILE} nor {CHECKPOINT_FILE}")
    state = read_model_state(weights)  # the tokenizer's loader: safetensors checked finite, checkpoints weights_only
    model = config.model
    prior = TokenPrior(meta["codebook_size"], grid=tuple(meta["grid"]), num_classes=meta["num_classes"], dim=model.dim,
                       layers=model.layers, heads=model.heads)
    try:
        prior.load_state_dict(state)
    except RuntimeError as error:  # shapes or keys of another model: never a partial load
        raise ValueError(f"{weights} does not match the prior its run's config and {TOKENS_META} describe: {error}") from None
    return prior.eval().to(device or "cpu"), config, meta
