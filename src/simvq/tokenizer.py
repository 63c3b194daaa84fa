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
    from .utils import load_torch_file

    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path} is not a Lightning checkpoint of a simvq run (no state_dict)")
    state = checkpoint["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def unit_images(images: Tensor) -> Tensor:
    """``images`` as float32 in ``[0, 1]``: uint8 is divided by 255; a float tensor must already
    lie in ``[0, 1]``; anything else is refused."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 (0-255) or floating point (0-1), got {images.dtype}")
    images = images.float()
    if images.numel():
        low, high = torch.aminmax(images)
        if not (float(low) >= 0.0 and float(high) <= 1.0):  # NaN fails too
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{float(low):.4g}, {float(high):.4g}]; "
                "pass uint8 images or divide by 255"
            )
    return images


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
            from .utils import load_safetensors

            state, run_dir = load_safetensors(path), path.parent
        elif path.suffix == ".ckpt":
            state, run_dir = checkpoint_model_state(path), path.parent.parent if path.parent.name == "checkpoints" else path.parent
        else:
            raise ValueError(f"path must be a .safetensors or .ckpt file, got {path}")
        config = read_run_config(run_dir)
        model = ImageAutoencoder.from_config(config)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"{path} does not match the model its run's config describes: {error}") from None
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
        """Codes ``(B, H/f, W/f)`` int64 for images ``(B, C, H, W)``: float in ``[0, 1]``, or uint8
        in ``[0, 255]`` (scaled by 1/255 here; floats outside ``[0, 1]`` are refused, since 0-255
        floats would quantize as if every pixel were saturated)."""
        return self.model.encode(unit_images(images).to(self.device))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in ``[0, 1]`` for codes ``(B, h, w)`` (``(B, h, w, stages)`` for
        residual quantizers)."""
        expected = 3 + self.model.quantizer.code_ndim
        if not isinstance(codes, Tensor) or codes.ndim != expected:
            shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            layout = "(B, h, w)" if expected == 3 else "(B, h, w, stages)"
            raise ValueError(f"codes must have shape {layout}, got {shape}")
        return self.model.decode(codes.to(self.device))

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))
