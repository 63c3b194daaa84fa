"""Inference API for trained image tokenizers: ``Tokenizer.from_run(run_dir)``, ``encode``, ``decode``.

Weights are read from safetensors (``model.safetensors`` in the run directory) or, for a run that
is still training, from its Lightning checkpoint with ``torch.load(weights_only=True)``; nothing is
ever unpickled. Imports no training framework (the run files are read by ``simvq.train.run_files``).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .train.run_files import CHECKPOINT_FILE, WEIGHTS_FILE, checkpoint_model_state, load_run_model, save_weights

# the run-directory files, re-exported for the users of the inference API
__all__ = ["CHECKPOINT_FILE", "WEIGHTS_FILE", "Tokenizer", "checkpoint_model_state", "save_weights"]


class Tokenizer:
    """A trained image tokenizer: images ``(B, C, H, W)`` in ``[0, 1]`` <-> codes ``(B, h, w)``."""

    def __init__(self, model, config=None):
        self.model = model.eval()
        self.config = config

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, device: torch.device | str | None = None) -> "Tokenizer":
        """Load a run directory (final ``model.safetensors``, else the last checkpoint)."""
        model, config, _ = load_run_model(run_dir, device=device)
        return cls(model, config)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: torch.device | str | None = None) -> "Tokenizer":
        """Load ``model.safetensors`` or ``checkpoints/last.ckpt``; the config is read from the run directory."""
        return cls.from_run(path, device=device)

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
        if self.model.quantizer.decode_inputs:
            reconstruction, _ = self.model(images.to(self.device, torch.float32))
            return reconstruction.clamp(0, 1)
        return self.decode(self.encode(images))
