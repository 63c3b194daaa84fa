"""The prior's data: a tokenizer run's codes of a data split, cached in the prior's run directory and
keyed on the tokenizer's weights, so a changed tokenizer never serves stale tokens."""

from __future__ import annotations

import os
from pathlib import Path

from ...runs import CHECKPOINT_FILE, WEIGHTS_FILE


def tokenizer_fingerprint(tokenizer_dir: str | os.PathLike) -> str:
    """SHA-256 of the tokenizer's weights (``model.safetensors``, else its last checkpoint)."""
    from ...data.tokens import file_sha256

    tokenizer_dir = Path(tokenizer_dir)
    for name in (WEIGHTS_FILE, CHECKPOINT_FILE):
        if (tokenizer_dir / name).is_file():
            return file_sha256(tokenizer_dir / name)
    raise FileNotFoundError(f"{tokenizer_dir} holds no trained tokenizer ({WEIGHTS_FILE} or {CHECKPOINT_FILE})")


def split_tokens(tokenizer, run_dir: Path, split: str, *, fingerprint: str, batch_size: int = 256, progress: bool = True):
    """``(codes (N, h, w) int32, labels (N,))`` of ``split`` under the tokenizer, cached in
    ``run_dir/tokens/<split>-<fingerprint[:16]>.safetensors`` (older fingerprints' files are removed)."""
    from ...data import build_image_dataset
    from ...data.tokens import cached_tokens, encode_dataset

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
