"""Inference API for trained image tokenizers: ``Tokenizer.from_run(run_dir)``, ``encode``, ``decode``.

Weights are read from safetensors (``model.safetensors`` in the run directory) or, for a run that
is still training, from its Lightning checkpoint with ``torch.load(weights_only=True)``; nothing is
ever unpickled. Imports no training framework.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = Path("checkpoints") / "last.ckpt"


def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """``model``'s state dict as safetensors, written atomically."""
    from safetensors.torch import save_file

    from .utils import atomic_path

    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "library": "simvq"})


def checkpoint_model_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """The autoencoder's weights inside a Lightning checkpoint (the EMA copy when there is one)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class Tokenizer:
    """A trained image tokenizer: images ``(B, C, H, W)`` in ``[0, 1]`` <-> codes ``(B, h, w)``."""

    def __init__(self, model, config=None):
        self.model = model.eval()
        self.config = config

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, device: torch.device | str | None = None) -> "Tokenizer":
        """Load a run directory (final ``model.safetensors``, else the last checkpoint)."""
        run_dir = Path(run_dir)
        if (run_dir / WEIGHTS_FILE).is_file():
            return cls.from_checkpoint(run_dir / WEIGHTS_FILE, device=device)
        if (run_dir / CHECKPOINT_FILE).is_file():
            return cls.from_checkpoint(run_dir / CHECKPOINT_FILE, device=device)
        raise FileNotFoundError(f"{run_dir} holds neither {WEIGHTS_FILE} nor {CHECKPOINT_FILE}")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: torch.device | str | None = None) -> "Tokenizer":
        """Load ``model.safetensors`` or ``checkpoints/last.ckpt``; the config is read from the run directory."""
        from .models import ImageAutoencoder
        from .train.config import read_run_config

        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state, run_dir = load_file(str(path)), path.parent
        elif path.suffix == ".ckpt":
            state, run_dir = checkpoint_model_state(path), path.parent.parent if path.parent.name == "checkpoints" else path.parent
        else:
            raise ValueError(f"path must be a .safetensors or .ckpt file, got {path}")
        config = read_run_config(run_dir)
        model = ImageAutoencoder.from_config(config)
        model.load_state_dict(state)
        return cls(model.to(device or "cpu"), config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def codebook_size(self) -> int:
        return self.model.quantizer.codebook_size

    @property
    def downsampling_factor(self) -> int:
        return 2**self.model.downsamplings

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Codes ``(B, H/f, W/f)`` int64 for images ``(B, C, H, W)`` in ``[0, 1]``."""
        return self.model.encode(images.to(self.device, torch.float32))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in ``[0, 1]`` for codes ``(B, h, w)``."""
        return self.model.decode(codes.to(self.device))

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """``decode(encode(images))``. A quantizer whose codes need more than the indices to decode
        (it names those outputs in ``decode_inputs``, e.g. sc_vae's coefficients) is run forward
        in eval mode instead, which gives the same values."""
        if getattr(self.model.quantizer, "decode_inputs", ()):
            reconstruction, _ = self.model(images.to(self.device, torch.float32))
            return reconstruction.clamp(0, 1)
        return self.decode(self.encode(images))
