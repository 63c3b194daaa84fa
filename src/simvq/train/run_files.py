"""The files of a run directory, read and written in one place (no Lightning).

A run directory holds ``config.json``/``config.yaml`` (the recipe), ``model.safetensors`` (the final
weights: the EMA copy when EMA is on) and ``checkpoints/last.ckpt`` (Lightning state for resuming).
``resolve_run`` turns any of the three paths a user may give into (weights file, run directory);
``load_run_model`` builds the trained autoencoder (image) or codec (audio) from it. Nothing is ever unpickled: checkpoints
are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..utils import atomic_path, load_safetensors, load_torch_file
from .config import read_run_config

WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = Path("checkpoints") / "last.ckpt"
COUNTS_FILE = "code_counts.safetensors"  # the evaluation's per-code histogram over eval.usage_splits


def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """``model``'s state dict as safetensors, written atomically."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "library": "simvq"})


def checkpoint_model_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """The autoencoder's weights inside a Lightning checkpoint (the EMA copy when there is one)."""
    checkpoint = load_torch_file(path)  # weights_only; a damaged file is one error naming it
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise TypeError(f"{path} is not a Lightning checkpoint of a simvq run (no state_dict)")
    state = checkpoint["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def resolve_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights file, run directory)`` for a run directory, its ``model.safetensors`` or a ``.ckpt``.

    A directory gives its final weights, else its last checkpoint (a run still training).
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / CHECKPOINT_FILE):
            if candidate.is_file():
                return candidate, path
        raise FileNotFoundError(f"{path} holds neither {WEIGHTS_FILE} nor {CHECKPOINT_FILE}")
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ValueError(f"path must be a run directory or a .safetensors/.ckpt file, got {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    run_dir = path.parent.parent if path.suffix == ".ckpt" and path.parent.name == "checkpoints" else path.parent
    return path, run_dir


def read_model_state(weights: Path) -> dict[str, Tensor]:
    """The autoencoder's state dict from ``model.safetensors`` or a Lightning checkpoint."""
    if weights.suffix == ".safetensors":
        return load_safetensors(weights)  # also refuses non-finite weights (a corrupt data section)
    return checkpoint_model_state(weights)


def build_model(config):
    """The autoencoder ``config`` describes (the models never read the training config themselves):
    an ``ImageAutoencoder`` for an image recipe, an ``AudioCodec`` for an audio one."""
    if config.recipe == "audio":
        return build_codec(config)
    from ..models import ImageAutoencoder

    return ImageAutoencoder(
        quantizer=config.quantizer.name,
        codebook_size=config.quantizer.codebook_size,
        quantizer_options=config.quantizer.options,
        in_channels=config.data.channels,
        channels=config.model.channels,
        channel_multipliers=config.model.channel_multipliers,
        downsamplings=config.model.downsamplings,
        num_res_blocks=config.model.num_res_blocks,
        norm_groups=config.model.norm_groups,
        dim=config.model.dim,
    )


def build_codec(config):
    """The ``AudioCodec`` of an audio recipe: its ``model`` section is the codec's keyword arguments."""
    import dataclasses

    from ..models import AudioCodec

    return AudioCodec(
        quantizer=config.quantizer.name,
        codebook_size=config.quantizer.codebook_size,
        quantizer_options=config.quantizer.options,
        sample_rate=config.data.sample_rate,
        **dataclasses.asdict(config.model),
    )


def training_facts(run_dir: Path) -> dict:
    """``global_step`` and ``train_seconds`` (over every session) from the run's ``progress.json``."""
    progress_file = Path(run_dir) / "progress.json"
    if not progress_file.is_file():
        return {}
    progress = json.loads(progress_file.read_text())
    return {"global_step": progress["global_step"], "train_seconds": sum(s["seconds"] for s in progress["sessions"])}


def read_usage_history(run_dir: Path) -> list[dict] | None:
    """The run's ``usage_history.json`` (one point per logging window, written by the tokenizer recipe),
    or None when the run has none."""
    history_file = Path(run_dir) / "usage_history.json"
    return json.loads(history_file.read_text()) if history_file.is_file() else None


def save_code_counts(counts: Tensor, run_dir: Path) -> None:
    """The per-code histogram the reported usage counts (``counts``: ``(K,)`` integers), so every
    statistic of it (entropy, usage at a fixed tokens per code, ...) can be recomputed later."""
    from safetensors.torch import save_file

    with atomic_path(Path(run_dir) / COUNTS_FILE) as tmp:
        save_file({"counts": counts.detach().cpu().to(torch.int64).contiguous()}, tmp, metadata={"library": "simvq"})


def read_code_counts(run_dir: Path) -> Tensor | None:
    """The run's saved histogram (``save_code_counts``), or None when it has none."""
    path = Path(run_dir) / COUNTS_FILE
    return load_safetensors(path)["counts"] if path.is_file() else None


def load_run_model(path: str | os.PathLike, *, device: torch.device | str | None = None):
    """``(model in eval mode, config, run directory)`` for anything ``resolve_run`` accepts."""
    weights, run_dir = resolve_run(path)
    config = read_run_config(run_dir)
    model = build_model(config)
    try:
        model.load_state_dict(read_model_state(weights))
    except RuntimeError as error:  # shapes or keys of another model: never a partial load
        raise ValueError(f"{weights} does not match the model its run's config describes: {error}") from None
    return model.to(device or "cpu").eval(), config, run_dir
