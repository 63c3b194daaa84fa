"""The prior's data: a tokenizer run's codes of a data split, cached in the prior's run directory and
keyed on the tokenizer's weights, so a changed tokenizer never serves stale tokens."""

from __future__ import annotations

from pathlib import Path

from ...runs.prior import tokenizer_fingerprint  # noqa: F401  (its home is the runs layer; re-exported)


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
