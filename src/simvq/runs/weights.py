"""Model weights on disk: safetensors written atomically, and the model's state read back from
``model.safetensors`` or from a Lightning checkpoint. Nothing is ever unpickled: checkpoints are
read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..utils import atomic_path, load_safetensors, load_torch_file


def save_weights(model: torch.nn.Module, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> None:
    """``model``'s state dict as safetensors, written atomically; ``metadata`` adds string entries to
    the header's (``{"format": "pt", "library": "simvq"}``)."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "library": "simvq", **(metadata or {})})


def weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata in a safetensors file's header (read without loading a tensor)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error}); nothing was loaded") from None


def checkpoint_model_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """The autoencoder's weights inside a Lightning checkpoint (the EMA copy when there is one)."""
    checkpoint = load_torch_file(path)  # weights_only; a damaged file is one error naming it
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise TypeError(f"{path} is not a Lightning checkpoint of a simvq run (no state_dict)")
    state = checkpoint["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def read_model_state(weights: Path) -> dict[str, Tensor]:
    """The autoencoder's state dict from ``model.safetensors`` or a Lightning checkpoint."""
    if weights.suffix == ".safetensors":
        return load_safetensors(weights)  # also refuses non-finite weights (a corrupt data section)
    return checkpoint_model_state(weights)
