"""What an untrained quantizer shows at a run's own K and token count: usage, perplexity / K and
entropy of the histogram of N Gaussian tokens on K Gaussian codes (``gaussian_reference_counts``),
over several seeds, cached in a JSON file beside the page so the page regenerates without redoing
them. A reference that would cost more than ``max_work`` multiply-adds is left out (stated as not
computed) rather than stalling ``simvq report``."""

from __future__ import annotations

import math
from pathlib import Path

from ...utils import read_json, write_json
from .aggregate import Stat, summarize

DEFAULT_CACHE = "docs/data/gaussian_reference.json"
# One thread of the exact search measured 0.24 CPU-s per 8,192 Gaussian tokens at K=65,536 and 1.0 s at
# K=262,144 (a plain distance matrix and argmin: ~10x that): 0.11 and 0.47 CPU-hours a seed at 13.7M tokens.
SEEDS_SMALL, SEEDS_LARGE = 3, 2  # seeds per reference: 3 up to CHEAP_WORK, else 2 (a spread from two)
CHEAP_WORK = 1e12  # K x N up to this (K=65,536 at 13.7M tokens, the 14x14 grid, is 9.0e11): 3 seeds
MAX_WORK = 1e12  # K x N above this (K=262,144 at 13.7M tokens is 3.6e12, ~1 CPU-hour): not computed unasked
# (`python benchmarks/campaign.py references image` measures the finer grid's ahead of its rows)

STATISTICS = ("usage", "usage_at_50", "perplexity_per_code", "entropy_bits")


def key(codebook_size: int, tokens: int, dim: int) -> str:
    return f"K={codebook_size} N={tokens} d={dim}"


def load(path: Path) -> dict:
    return read_json(path, {})


def measure(codebook_size: int, tokens: int, dim: int, seed: int) -> dict:
    from ...metrics.coverage import entropy_bits, gaussian_reference_counts, usage_at

    counts = gaussian_reference_counts(codebook_size, tokens, dim, seed=seed, progress=True)
    entropy = entropy_bits(counts)
    return {"seed": seed, "usage": float((counts > 0).double().mean()), "usage_at_50": usage_at(counts, 50), "entropy_bits": entropy,
            "perplexity_per_code": 2.0**entropy / codebook_size}


def seeds_for(codebook_size: int, tokens: int) -> int:
    """How many seeds a reference at K and N gets."""
    return SEEDS_SMALL if codebook_size * tokens <= CHEAP_WORK else SEEDS_LARGE


def references(needed: list[tuple[int, int, int]], path: Path, *, max_work: float = MAX_WORK,
               compute: bool = True, seeds: int | None = None) -> dict[tuple, dict[str, Stat]]:
    """{(K, N, dim): {statistic: Stat over seeds}} for every reference in ``needed`` that is cached
    or affordable (computed now and cached, up to ``seeds`` seeds each or ``seeds_for``'s, unless
    ``compute`` is off); the rest are absent."""
    cache = load(path)
    for codebook_size, tokens, dim in sorted(set(needed)):
        if not compute or codebook_size * tokens > max_work:
            continue
        entries = cache.setdefault(key(codebook_size, tokens, dim), [])
        for seed in range(len(entries), seeds or seeds_for(codebook_size, tokens)):
            entries.append(measure(codebook_size, tokens, dim, seed))
            path.parent.mkdir(parents=True, exist_ok=True)  # kept after each seed: a long one is never redone
            write_json(path, cache, indent=1, sort_keys=True)
    found = {}
    for codebook_size, tokens, dim in set(needed):
        entries = cache.get(key(codebook_size, tokens, dim))
        if entries:
            found[(codebook_size, tokens, dim)] = {name: summarize(e[name] for e in entries if math.isfinite(e.get(name, math.nan)))
                                                   for name in STATISTICS}
    return found
