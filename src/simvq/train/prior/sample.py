"""Sampling a trained prior: code grids from one seeded generator, decoded by the tokenizer the prior
was trained on (refused when that tokenizer's weights changed since)."""

from __future__ import annotations

import torch

from ...tokenizer import Tokenizer
from .tokens import tokenizer_fingerprint


def load_tokenizer_for(meta: dict, *, device=None, check: bool = True):
    """The tokenizer a prior was trained on; refuses one whose weights changed since."""
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
