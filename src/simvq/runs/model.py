"""The model of a config, and the trained model of a run directory."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..utils import check_device
from .config import read_run_config
from .files import resolve_run
from .registry import get_recipe
from .weights import read_model_state


def build_model(config):
    """The autoencoder ``config`` describes, built by its kind's ``build_model`` (an
    ``ImageAutoencoder`` for an image recipe, an ``AudioCodec`` for an audio one)."""
    return get_recipe(config.recipe).build_model(config)


def load_weights_into(model: torch.nn.Module, weights: Path) -> torch.nn.Module:
    """``model`` with the state read from ``weights`` (``read_model_state``: safetensors checked to be
    finite, or a checkpoint read with ``weights_only``); keys or shapes of another model are one
    ValueError naming the file, never a partial load. The one loader of trained tokenizer weights."""
    try:
        model.load_state_dict(read_model_state(weights))
    except RuntimeError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"{weights} does not match the model its config describes: {reason}") from None
    return model


def load_run_model(path: str | os.PathLike, *, device: torch.device | str | None = None):
    """``(model in eval mode, config, run directory)`` for anything ``resolve_run`` accepts; ``device``
    must be one this machine has (``simvq.utils.check_device``)."""
    device = check_device(device)
    weights, run_dir = resolve_run(path)
    config = read_run_config(run_dir)
    model = load_weights_into(build_model(config), weights)
    return model.to(device or "cpu").eval(), config, run_dir
