"""Inference API for trained tokenizers: ``Tokenizer.from_run(run_dir)``, ``encode``, ``decode``.
An image run gives a ``Tokenizer`` (images <-> code grids), an audio run an ``AudioTokenizer``
(waveforms <-> code sequences).

Inputs are checked before they reach the model, and a refusal names the argument (``images``,
``wav``, ``codes``, ``length``) as a ``ValueError`` (``simvq.utils.UsageError``) or ``TypeError``. One
rule for empty input, images and audio alike: an empty batch (``B = 0``, or no pixels or samples)
is refused, never passed on to come back as an error about the quantizer's internals.

Weights are read from safetensors (``model.safetensors`` in the run directory) or, for a run that
is still training, from its Lightning checkpoint with ``torch.load(weights_only=True)``; nothing is
ever unpickled. Imports no training framework: run directories are read through ``simvq.runs``, and
the class a run loads as is its recipe kind's ``tokenizer`` (``simvq.runs.registry``).
"""

from __future__ import annotations

import operator
import os

import torch
from torch import Tensor

from .runs import CHECKPOINT_FILE, WEIGHTS_FILE, UsageError, checkpoint_model_state, get_recipe, load_run_model, save_weights

# the run-directory files, re-exported for the users of the inference API
__all__ = ["AudioTokenizer", "CHECKPOINT_FILE", "WEIGHTS_FILE", "Tokenizer", "checkpoint_model_state", "save_weights"]

# how far past [-1, 1] a waveform's samples may reach (resampling and filtering overshoot a full-scale
# signal by a few per cent); anything beyond is a scaling mistake, e.g. int16 samples cast to float
WAV_TOLERANCE = 0.05


def refuse_empty(tensor: Tensor, argument: str, what: str) -> None:
    """The one rule for empty input: no batch (``B = 0``) and no data (a zero-sized dimension)."""
    if tensor.numel() == 0:
        raise UsageError(argument, f"empty input of shape {tuple(tensor.shape)}: give at least one {what} (an empty batch is refused)")


def unit_images(images: Tensor) -> Tensor:
    """``images`` as float32 in ``[0, 1]``: uint8 is divided by 255; a float tensor must already
    lie in ``[0, 1]``; anything else is refused."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        refuse_empty(images, "images", "image of at least one pixel")
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 (0-255) or floating point (0-1), got {images.dtype}")
    refuse_empty(images, "images", "image of at least one pixel")
    images = images.float()
    low, high = torch.aminmax(images)
    if not (float(low) >= 0.0 and float(high) <= 1.0):  # NaN fails too
        raise UsageError(
            "images", f"float images must lie in [0, 1], got values in [{float(low):.4g}, {float(high):.4g}]; "
            "pass uint8 images or divide by 255"
        )
    return images


class Tokenizer:
    """A trained image tokenizer: images ``(B, C, H, W)`` in ``[0, 1]`` <-> codes ``(B, h, w)``.

    An empty batch (``B = 0``, or images of no pixels; codes likewise) is refused with a ValueError
    naming ``images`` (``codes``), as ``AudioTokenizer`` refuses an empty ``wav``."""

    def __init__(self, model, config=None):
        self.model = model.eval()
        self.config = config

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, device: torch.device | str | None = None) -> Tokenizer:
        """Load a run directory (final ``model.safetensors``, else the last checkpoint) as its recipe
        kind's tokenizer: an audio run gives an ``AudioTokenizer``."""
        model, config, _ = load_run_model(run_dir, device=device)
        return get_recipe(config.recipe).tokenizer(model, config)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: torch.device | str | None = None) -> Tokenizer:
        """Load ``model.safetensors`` or ``checkpoints/last.ckpt``; the config is read from the run directory."""
        return cls.from_run(path, device=device)

    # -- Hub-style checkpoints (simvq.runs.pretrained) ------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, device: torch.device | str | None = None) -> Tokenizer:
        """Load a directory ``save_pretrained`` (or ``simvq export-hf``) wrote, or a Hugging Face Hub
        repo id (``owner/name``; downloaded with huggingface_hub, ``revision`` and ``cache_dir`` as
        its ``snapshot_download`` takes them). Reads ``config.json`` and ``model.safetensors`` only:
        nothing is unpickled. Gives the recipe kind's class (an ``AudioTokenizer`` for a speech codec);
        a missing file, a prior's directory, another kind than ``cls`` or non-finite weights are refused."""

        from .runs.files import read_metrics
        from .runs.pretrained import load_pretrained

        model, config, directory = load_pretrained(name_or_path, revision=revision, cache_dir=cache_dir, device=device)
        tokenizer = get_recipe(config.recipe).tokenizer(model, config)
        if not isinstance(tokenizer, cls):
            raise ValueError(f"{name_or_path} holds a {config.recipe} tokenizer ({type(tokenizer).__name__}), not a {cls.__name__}; "
                             "load it with Tokenizer.from_pretrained")
        tokenizer.metrics = read_metrics(directory)
        return tokenizer

    def save_pretrained(self, directory: str | os.PathLike, *, metrics: dict | None = None) -> os.PathLike:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` (with ``metrics``,
        default: those it was loaded with, when known) to ``directory``; ``from_pretrained`` reads it
        back, in any process. Returns the directory."""
        from .runs.pretrained import save_pretrained

        metrics = metrics if metrics is not None else getattr(self, "metrics", None)
        return save_pretrained(self.model, self.config, directory, metrics=metrics)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None, metrics: dict | None = None,
                    commit_message: str = "Upload simvq tokenizer") -> str:
        """``save_pretrained`` into a temporary directory, then upload it to the Hub repo ``repo_id``
        (created when missing); returns the commit's URL. Needs huggingface_hub and the network."""
        import tempfile

        from .runs.pretrained import push_to_hub

        with tempfile.TemporaryDirectory() as directory:
            self.save_pretrained(directory, metrics=metrics)
            return push_to_hub(directory, repo_id, private=private, token=token, commit_message=commit_message)

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
        refuse_empty(codes, "codes", "code grid")
        return self.model.decode(codes.to(self.device))

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """``decode(encode(images))`` (see ``ImageAutoencoder.reconstruct`` for sc_vae-like codes)."""
        return self.model.reconstruct(unit_images(images).to(self.device))


class AudioTokenizer(Tokenizer):
    """A trained speech codec: mono waveforms ``(B, S)`` in ``[-1, 1]`` at ``sample_rate`` <-> codes
    ``(B, T)``, ``T = ceil(S / hop_length)`` (``(B, T, stages)`` for multi-stage quantizers).

    ``wav`` must be a float tensor of finite samples within ``[-1, 1]``, up to ``WAV_TOLERANCE``
    (0.05) beyond (resampling overshoot); an empty batch (``B = 0`` or ``S = 0``) is refused, as for
    images. All are ValueErrors naming ``wav``."""

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def downsampling_factor(self) -> int:
        """Samples per token."""
        return self.model.hop_length

    @torch.no_grad()
    def encode(self, wav: Tensor) -> Tensor:
        """Codes ``(B, T)`` int64 for float waveforms ``(B, S)``."""
        return self.model.encode(self._mono(wav).to(self.device))

    @torch.no_grad()
    def decode(self, codes: Tensor, *, length: int | None = None) -> Tensor:
        """Waveforms ``(B, T * hop_length)`` in ``[-1, 1]``, trimmed to ``length`` samples if given
        (``0 <= length <= T * hop_length``; anything else is refused naming ``length``)."""
        expected = 2 + self.model.quantizer.code_ndim
        if not isinstance(codes, Tensor) or codes.ndim != expected:
            shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"codes must have shape {'(B, T)' if expected == 2 else '(B, T, stages)'}, got {shape}")
        refuse_empty(codes, "codes", "code sequence")
        if length is not None:
            available = codes.shape[1] * self.model.hop_length
            try:
                samples = None if isinstance(length, bool) else operator.index(length)
            except TypeError:
                samples = None
            if samples is None or not 0 <= samples <= available:
                raise UsageError("length", f"must be an integer in [0, {available}] (T={codes.shape[1]} tokens x hop "
                                 f"{self.model.hop_length} samples), got {length!r}")
            length = samples
        return self.model.decode(codes.to(self.device), length=length)[:, 0]

    @torch.no_grad()
    def reconstruct(self, wav: Tensor) -> Tensor:
        """``decode(encode(wav))`` trimmed to the input's length (``(B, S)``; see ``AudioCodec.reconstruct``)."""
        return self.model.reconstruct(self._mono(wav).to(self.device))[:, 0]

    @staticmethod
    def _mono(wav: Tensor) -> Tensor:
        if not isinstance(wav, Tensor) or not wav.is_floating_point() or wav.ndim != 2:
            what = f"{tuple(wav.shape)} {wav.dtype}" if isinstance(wav, Tensor) else type(wav).__name__
            raise ValueError(f"wav must be a float tensor (B, S) of mono samples in [-1, 1], got {what}")
        refuse_empty(wav, "wav", "waveform of at least one sample")
        wav = wav.float()
        low, high = torch.aminmax(wav)
        if not (float(low) >= -1 - WAV_TOLERANCE and float(high) <= 1 + WAV_TOLERANCE):  # NaN and inf fail too
            raise UsageError("wav", f"samples must lie in [-1, 1] (up to {1 + WAV_TOLERANCE:g} in magnitude is accepted), got values in "
                             f"[{float(low):.4g}, {float(high):.4g}]; int16 audio is divided by 32768")
        return wav.unsqueeze(1)
