"""Nearest-code search: exact squared-L2 argmin, float32, memory-bounded. The only search in simvq.

The distance matrix ``||x||^2 - 2 x.c + ||c||^2`` is never materialised: tokens and codes are
walked in tiles whose size bounds the extra memory (a few MiB), and a running minimum is kept per
token. Whatever the input dtype (bf16 under autocast included), distances are computed in float32,
so the argmin is that of the float32 distances.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Tile sizes measured on a 2-core AVX-512 CPU (benchmarks/search.py): a (token_chunk x code_chunk)
# float32 tile of 8 MiB keeps the GEMM near its peak while the running minimum stays cheap.
DEFAULT_CODE_CHUNK = 1024
DEFAULT_TILE_ELEMENTS = 2048 * 1024


def _check(x: Tensor, codebook: Tensor, chunk_size: int | None) -> None:
    if not isinstance(x, Tensor) or not isinstance(codebook, Tensor):
        raise TypeError("x and codebook must be torch.Tensors")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, dim), got {tuple(x.shape)}")
    if codebook.ndim != 2:
        raise ValueError(f"codebook must have shape (K, dim), got {tuple(codebook.shape)}")
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"x (N, dim) and codebook (K, dim) must share dim, got x {tuple(x.shape)} and codebook {tuple(codebook.shape)}"
        )
    if not x.is_floating_point() or not codebook.is_floating_point():
        raise TypeError(f"x and codebook must be floating point, got {x.dtype} and {codebook.dtype}")
    if codebook.shape[0] < 1:
        raise ValueError("codebook must hold at least one code")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


@torch.no_grad()
def nearest(x: Tensor, codebook: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Index of the nearest code to each row of ``x`` and its squared distance.

    x: (N, dim), codebook: (K, dim), any floating dtype (computed in float32).
    chunk_size: codes per tile (default 1024); tokens per tile are chosen so a tile holds
    about 2M distances (8 MiB).
    Returns ``indices: (N,) int64`` and ``squared_distances: (N,) float32``.
    """
    _check(x, codebook, chunk_size)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x32 = x.float()
        codebook32 = codebook.float()
        num_tokens, num_codes = x32.shape[0], codebook32.shape[0]
        code_chunk = min(chunk_size or DEFAULT_CODE_CHUNK, num_codes)
        token_chunk = max(1, min(num_tokens, DEFAULT_TILE_ELEMENTS // code_chunk))

        # score(x, c) = ||c||^2 - 2 x.c ; ||x||^2 is constant per token and added back at the end
        code_norms = codebook32.pow(2).sum(1)
        codebook_t = codebook32.t()
        indices = torch.empty(num_tokens, dtype=torch.long, device=x.device)
        tile = torch.empty(token_chunk, code_chunk, device=x.device)
        for start in range(0, num_tokens, token_chunk):
            x_block = x32[start : start + token_chunk]
            n = x_block.shape[0]
            best_score = torch.full((n,), float("inf"), device=x.device)
            best_index = torch.zeros(n, dtype=torch.long, device=x.device)
            for code_start in range(0, num_codes, code_chunk):
                m = min(code_chunk, num_codes - code_start)
                # a full tile reuses one buffer; ragged edge tiles get their own (out= needs contiguity)
                scores = tile if (n, m) == tuple(tile.shape) else None
                scores = torch.addmm(
                    code_norms[code_start : code_start + m],
                    x_block,
                    codebook_t[:, code_start : code_start + m],
                    alpha=-2.0,
                    out=scores,
                )
                block_score, block_index = scores.min(dim=1)
                better = block_score < best_score
                best_score = torch.where(better, block_score, best_score)
                best_index = torch.where(better, block_index + code_start, best_index)
            indices[start : start + n] = best_index
        # recompute the winners' distances directly: no cancellation error from the expansion
        squared_distances = (x32 - codebook32[indices]).pow(2).sum(1)
    return indices, squared_distances


__all__ = ["nearest"]
