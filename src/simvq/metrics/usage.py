"""Codebook usage accumulated over many batches (and processes)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ..quantizers.base import code_counts, code_statistics


def usage_statistics(counts: Tensor) -> dict[str, float]:
    """Usage, perplexity, dead fraction and token count of a ``(K,)`` code histogram."""
    stats = code_statistics(counts)
    usage = stats["usage"].item()
    return {"usage": usage, "perplexity": stats["perplexity"].item(), "dead_fraction": 1.0 - usage, "tokens": int(counts.sum())}


class CodebookUsage:
    """Counts how often each code is used, over as many ``update`` calls as you like.

    ``usage()``: fraction of codes used at least once; ``perplexity()``: exp of the entropy of the
    code distribution (K for perfectly uniform use); ``dead_fraction()``: 1 - usage;
    ``histogram()``: the counts. Global by default: with torch.distributed initialised (checked
    when a statistic is asked for, not at construction), counts are summed over all processes
    first. ``distributed=False`` keeps them local, for a process that saw the whole data set alone
    (an all-reduce there would wait forever for the other ranks).
    """

    def __init__(self, codebook_size: int, *, device: torch.device | str | None = None, distributed: bool = True):
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 2:
            raise ValueError(f"codebook_size must be an integer >= 2, got {codebook_size!r}")
        self.codebook_size = codebook_size
        self.distributed = distributed
        self.counts = torch.zeros(codebook_size, dtype=torch.long, device=device)

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, codes: Tensor, *, check: bool = True) -> None:
        """Add integer ``codes`` of any shape (values in ``[0, codebook_size)``).

        ``check=False`` skips the range check, which reads the codes back to the host (a device
        synchronisation per call); only for codes a quantizer produced.
        """
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.numel() == 0:
            return
        if check:
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.codebook_size:
                raise ValueError(f"codes must lie in [0, {self.codebook_size - 1}], got values in [{low}, {high}]")
        if self.counts.device != codes.device:
            self.counts = self.counts.to(codes.device)
        self.counts += code_counts(codes, self.codebook_size)

    def histogram(self) -> Tensor:
        """Counts per code, summed over processes when ``distributed`` and torch.distributed is initialised."""
        counts = self.counts.clone()
        if self.distributed and dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts

    def total(self) -> int:
        return int(self.histogram().sum())

    def usage(self) -> float:
        return self.compute()["usage"]

    def perplexity(self) -> float:
        return self.compute()["perplexity"]

    def dead_fraction(self) -> float:
        return 1.0 - self.usage()

    def compute(self) -> dict[str, float]:
        """All statistics from one reduction: usage, perplexity, dead_fraction, tokens."""
        return usage_statistics(self.histogram())
