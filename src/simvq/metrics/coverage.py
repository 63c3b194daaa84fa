"""What a raw codebook-usage count means: estimators and a reference to report beside it.

Usage (the fraction of the K codes hit at least once by N evaluation tokens) is bounded by the
number of tokens and by how unevenly the codes are used, so the raw count alone says little.
The "sampling cap" ``1 - exp(-N/K)`` assumes every code is equally likely and overstates what
any quantizer can show: codes and data drawn from one isotropic Gaussian, no training at all,
hit only ~72% of the codes at d=64 and N/K = 7.5 (cap: 99.9%). This module gives the statements
to put beside a raw count instead:

``chao1``                     how many codes are in use, unseen ones included (an estimate).
``sample_coverage``           the probability mass of the code distribution covered by the codes seen.
``gaussian_reference_usage``  the usage an untrained quantizer shows at the same N/K and dim.
``entropy_bits``              how evenly the tokens spread over the codes (log2 K for uniform use).
``usage_at``                  the usage expected from a fixed number of tokens per code, drawn from
                              the counted ones, so codebooks of different K compare at equal N/K.
``coverage_summary``          all of the above from one histogram.

Torch and the standard library only; the nearest-code search is ``simvq.search.nearest``.
"""

from __future__ import annotations

import functools
import math
from numbers import Real

import torch
from torch import Tensor

from ..search import nearest
from .usage import usage_statistics

DEFAULT_REFERENCE_CODEBOOK_SIZE = 8192

# Tokens are drawn and searched in chunks of about this many float32 elements (4 MiB), so memory
# stays bounded whatever N is. Part of the definition of the random stream (see below).
_TOKEN_CHUNK_ELEMENTS = 2**20
# Codes used to bound each token's distance to the already-hit codes (see _reference_hits).
_BOUND_CODES = 256
_TIE_MARGIN = 1e-4  # relative: a bound must beat the unhit codes by this much to skip a token


def _check_counts(counts) -> Tensor:
    if not isinstance(counts, Tensor):
        raise TypeError(f"counts must be a torch.Tensor of per-code counts, got {type(counts).__name__}")
    if counts.ndim != 1:
        raise ValueError(f"counts must be a 1-D tensor of per-code counts, got shape {tuple(counts.shape)}")
    if counts.dtype.is_floating_point or counts.dtype.is_complex or counts.dtype == torch.bool:
        raise TypeError(f"counts must be an integer tensor, got {counts.dtype}")
    if counts.numel() == 0:
        raise ValueError("counts must hold at least one code")
    if bool((counts < 0).any()):
        raise ValueError(f"counts must be non-negative, got a minimum of {int(counts.min())}")
    return counts.detach().to("cpu", torch.long)


def _frequency_counts(counts: Tensor) -> tuple[int, int, int, int]:
    """S_obs (codes seen), f1 (seen exactly once), f2 (seen exactly twice), N (tokens)."""
    return (
        int((counts > 0).sum()),
        int((counts == 1).sum()),
        int((counts == 2).sum()),
        int(counts.sum()),
    )


def chao1(counts: Tensor) -> float:
    """Bias-corrected Chao1 estimate of how many codes are in use, from per-code counts.

    ``counts``: 1-D non-negative integer tensor, one entry per code (e.g.
    ``CodebookUsage.histogram()``). Returns

        S_obs + f1 (f1 - 1) / (2 (f2 + 1))

    with S_obs the number of codes seen, f1 / f2 the number seen exactly once / twice. Chao1 is a
    lower-bound-type estimator of the number of codes with non-zero probability (Chao 1984; the
    ``f2 + 1`` form, Chao 2005, stays finite when f2 = 0): codes seen once or twice are evidence of
    codes not yet seen. It equals S_obs when no code is a singleton. It may exceed the codebook
    size K; reports show ``min(chao1, K) / K`` (``coverage_summary``'s ``usage_chao1``). The
    textbook form (EstimateS) multiplies the correction by (N - 1) / N, a difference below 1/N.
    """
    observed, f1, f2, _ = _frequency_counts(_check_counts(counts))
    return observed + f1 * (f1 - 1) / (2.0 * (f2 + 1))


def sample_coverage(counts: Tensor) -> float:
    """Good-Turing sample coverage ``1 - f1 / N``: the probability that a new token's code is one
    already seen, i.e. the probability mass of the code distribution covered by the seen codes.

    ``counts``: 1-D non-negative integer tensor of per-code counts; f1 = codes seen exactly once,
    N = total count. Returns NaN when N = 0 (nothing sampled, coverage undefined).
    """
    _, f1, _, total = _frequency_counts(_check_counts(counts))
    if total == 0:
        return math.nan
    return 1.0 - f1 / total


def entropy_bits(counts: Tensor) -> float:
    """Shannon entropy (bits) of the code distribution the histogram ``counts`` estimates: log2 K when
    every code is used equally, 0 when one code takes every token; ``2 ** entropy_bits`` is the
    perplexity. NaN when nothing was counted."""
    counts = _check_counts(counts).double()
    total = counts.sum()
    if total == 0:
        return math.nan
    p = counts[counts > 0] / total
    return float(-(p * p.log2()).sum())


def usage_at(counts: Tensor, tokens_per_code: float) -> float:
    """The expected usage had only n = round(tokens_per_code * K) of the N counted tokens been
    counted, drawn at random without replacement: the mean of ``usage`` over every such subsample,
    exactly (a code counted c times is missed by a subsample with probability C(N - c, n) / C(N, n)).
    Codebooks of different sizes compare at the same ``tokens_per_code``; NaN when n > N."""
    counts = _check_counts(counts)
    if isinstance(tokens_per_code, bool) or not isinstance(tokens_per_code, Real) or not tokens_per_code > 0:
        raise ValueError(f"tokens_per_code must be a number > 0, got {tokens_per_code!r}")
    total, drawn = int(counts.sum()), round(tokens_per_code * counts.numel())
    if drawn > total:
        return math.nan
    rest = (total - counts[counts > 0]).double()  # tokens of the other codes
    possible = rest >= drawn  # below: every subsample holds the code
    lg = torch.lgamma
    log_missed = lg(rest[possible] + 1) - lg(rest[possible] - drawn + 1) - math.lgamma(total + 1) + math.lgamma(total - drawn + 1)
    hit = (~possible).sum().double() + (1 - log_missed.exp()).sum()
    return float(hit / counts.numel())


# tokens per code at which ``coverage_summary`` reports ``usage_at_fixed`` (the image campaign's floor)
USAGE_TOKENS_PER_CODE = 50


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _token_chunk(dim: int) -> int:
    return max(1, _TOKEN_CHUNK_ELEMENTS // dim)


@torch.no_grad()
def _reference_hits(num_codes: int, num_tokens: int, dim: int, seed: int, device: torch.device) -> Tensor:
    """Which of ``num_codes`` Gaussian codes are nearest to at least one of ``num_tokens`` Gaussian
    tokens. Bool tensor (num_codes,).

    The random stream (CPU generator seeded with ``seed``): codes ``randn(K, dim)``, then the tokens
    as consecutive ``randn(chunk, dim)`` draws of ``_token_chunk(dim)`` rows (the last one shorter).

    Exact, but cheaper than searching every token against every code. A token can change the
    answer only if its nearest code is still unhit, so after the first K tokens (searched in full,
    their counts rank the codes) each chunk is searched against the unhit codes U only and against
    ``_BOUND_CODES`` frequently hit codes S. When some code of S is closer (by a relative margin)
    than every code of U, the token's nearest code is already hit and the token is skipped; the
    other tokens (a few percent) get the full search. Stops early once every code is hit.
    """
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.randn(num_codes, dim, generator=generator).to(device)
    hit = torch.zeros(num_codes, dtype=torch.bool, device=device)
    counts = torch.zeros(num_codes, dtype=torch.long, device=device)
    chunk = _token_chunk(dim)
    bound_codes = None
    done = 0
    while done < num_tokens:
        tokens = torch.randn(min(chunk, num_tokens - done), dim, generator=generator).to(device)
        if done < num_codes:  # the first K tokens: full search, and their counts rank the codes
            indices, _ = nearest(tokens, codebook)
            counts += torch.bincount(indices, minlength=num_codes)
        else:
            unhit = (~hit).nonzero().squeeze(1)
            if unhit.numel() == 0:
                break
            if bound_codes is None:
                bound_codes = counts.topk(min(_BOUND_CODES, num_codes)).indices
            _, to_unhit = nearest(tokens, codebook.index_select(0, unhit))
            _, to_bound = nearest(tokens, codebook.index_select(0, bound_codes))
            undecided = (to_bound >= to_unhit * (1.0 - _TIE_MARGIN)).nonzero().squeeze(1)
            indices, _ = nearest(tokens.index_select(0, undecided), codebook)
        hit[indices] = True
        done += tokens.shape[0]
    return hit


@torch.no_grad()
def gaussian_reference(codebook_size: int, num_tokens: int, dim: int, *, seed: int = 0, progress: bool = False) -> tuple[Tensor, Tensor]:
    """An untrained quantizer: ``(codebook (K, dim), code histogram (K,))``, K codes and N tokens from
    one isotropic Gaussian N(0, I_dim), every token counted at its nearest code (exact search, no
    screening). Every statistic of a trained run's histogram (usage, perplexity / K, entropy) has its
    reference at the run's own K and N from this; seeds give its spread. Cost: N x K x dim multiply-adds."""
    from tqdm.auto import tqdm

    for name, value in (("codebook_size", codebook_size), ("num_tokens", num_tokens), ("dim", dim)):
        _check_positive_int(value, name)
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.randn(codebook_size, dim, generator=generator)
    counts = torch.zeros(codebook_size, dtype=torch.long)
    chunk = _token_chunk(dim)
    for start in tqdm(range(0, num_tokens, chunk), desc=f"Gaussian reference K={codebook_size:,}", disable=not progress):
        indices, _ = nearest(torch.randn(min(chunk, num_tokens - start), dim, generator=generator), codebook)
        counts += torch.bincount(indices, minlength=codebook_size)
    return codebook, counts


def gaussian_reference_counts(codebook_size: int, num_tokens: int, dim: int, *, seed: int = 0, progress: bool = False) -> Tensor:
    """The ``(K,)`` code histogram of ``gaussian_reference``'s untrained quantizer."""
    return gaussian_reference(codebook_size, num_tokens, dim, seed=seed, progress=progress)[1]


@functools.lru_cache(maxsize=256)
def _cached_reference_usage(tokens_per_code: float, dim: int, codebook_size: int, seed: int, device: str) -> float:
    num_tokens = round(tokens_per_code * codebook_size)
    if num_tokens == 0:
        return 0.0
    hits = _reference_hits(codebook_size, num_tokens, dim, seed, torch.device(device))
    return hits.float().mean().item()


def gaussian_reference_usage(
    tokens_per_code: float,
    dim: int,
    *,
    codebook_size: int = DEFAULT_REFERENCE_CODEBOOK_SIZE,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> float:
    """Codebook usage an untrained quantizer shows at the same tokens-per-code ratio N/K.

    K = ``codebook_size`` codes and N = round(tokens_per_code * K) tokens are drawn from the same
    isotropic Gaussian N(0, I_dim); each token goes to its nearest code (``simvq.search.nearest``,
    exact squared L2); returns the fraction of codes hit at least once. The value depends (almost)
    only on N/K and dim, so it is computed at a fixed K (default 8192, usually smaller than the
    run's codebook) rather than at the run's K: the cost grows like K^2 at a fixed N/K. It drifts
    down slowly with K (d=64, N/K=7.5: 0.77 at K=1024, 0.75 at 2048, 0.73 at 4096, 0.72 at 8192,
    0.71 at 16384), so for a larger run the reference at 8192 reads slightly high. The
    ``1 - exp(-N/K)`` cap assumes uniform code use and is far above this (e.g. ~72% vs 99.9% at
    d=64, N/K=7.5): Voronoi cells of random codes have very unequal probability mass.

    Tokens are drawn and searched in chunks (memory bounded whatever N), and tokens that cannot
    hit a new code are screened out cheaply; the result equals searching every token in full.
    Draws use a CPU generator seeded with ``seed``; ``device`` (default CPU) only runs the search.
    Results are cached in-process per (tokens_per_code, dim, codebook_size, seed, device).
    """
    if isinstance(tokens_per_code, bool) or not isinstance(tokens_per_code, Real):
        raise TypeError(f"tokens_per_code must be a real number, got {tokens_per_code!r}")
    tokens_per_code = float(tokens_per_code)
    if not (math.isfinite(tokens_per_code) and tokens_per_code > 0):
        raise ValueError(f"tokens_per_code must be a finite number > 0, got {tokens_per_code!r}")
    _check_positive_int(dim, "dim")
    _check_positive_int(codebook_size, "codebook_size")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    device_name = str(torch.device("cpu" if device is None else device))
    return _cached_reference_usage(tokens_per_code, dim, codebook_size, seed, device_name)


def coverage_summary(
    counts: Tensor,
    *,
    dim: int,
    reference_codebook_size: int = DEFAULT_REFERENCE_CODEBOOK_SIZE,
    seed: int = 0,
) -> dict[str, float | int]:
    """Everything to report beside a raw usage count, from one per-code histogram.

    ``counts``: 1-D non-negative integer tensor (K entries, e.g. ``CodebookUsage.histogram()``);
    ``dim``: the dimension the codes are searched in (what the Gaussian reference uses). Returns

    ``usage``            fraction of codes with count > 0 (as ``CodebookUsage.compute()["usage"]``)
    ``tokens``           N, the total count
    ``tokens_per_code``  N / K
    ``usage_chao1``      min(chao1(counts), K) / K: estimated fraction of codes in use
    ``coverage``         Good-Turing sample coverage 1 - f1 / N (NaN when N = 0)
    ``usage_reference``  ``gaussian_reference_usage(N / K, dim)``, computed at
                         K' = min(K, reference_codebook_size) codes; 0.0 when N = 0
    ``entropy_bits``     ``entropy_bits(counts)``; ``perplexity_per_code`` = 2 ** entropy / K
    ``usage_at_50``      ``usage_at(counts, 50)``: usage at 50 tokens per code (NaN with fewer)
    """
    counts = _check_counts(counts)
    _check_positive_int(dim, "dim")
    _check_positive_int(reference_codebook_size, "reference_codebook_size")
    num_codes = counts.numel()
    tokens = int(counts.sum())
    tokens_per_code = tokens / num_codes
    if tokens == 0:
        reference = 0.0
    else:
        reference = gaussian_reference_usage(
            tokens_per_code, dim, codebook_size=min(num_codes, reference_codebook_size), seed=seed
        )
    return {
        "usage": usage_statistics(counts)["usage"],
        "tokens": tokens,
        "tokens_per_code": tokens_per_code,
        "usage_chao1": min(chao1(counts), num_codes) / num_codes,
        "coverage": sample_coverage(counts),
        "usage_reference": reference,
        "entropy_bits": (entropy := entropy_bits(counts)),
        "perplexity_per_code": 2.0**entropy / num_codes,
        f"usage_at_{USAGE_TOKENS_PER_CODE}": usage_at(counts, USAGE_TOKENS_PER_CODE),
    }


def usage_over_splits(metrics: dict, counts: Tensor, *, dim: int, splits, split_counts) -> Tensor:
    """Count a run's usage over every split in ``splits`` (the recipes' ``eval.usage_splits``), so a
    large codebook is judged on enough tokens per code. ``metrics`` holds the test split's numbers and
    ``counts`` its ``(K,)`` histogram; ``split_counts(split)`` gives another split's. ``metrics`` gains
    ``usage_test``/``tokens_test`` (the test split's), ``coverage_summary``, perplexity and dead fraction
    over all the listed splits' tokens, and ``usage_splits``. Returns the summed histogram."""
    metrics["usage_test"], metrics["tokens_test"] = metrics["usage"], metrics["tokens"]
    for split in splits:
        if split != "test":
            counts = counts + split_counts(split)
    metrics.update(coverage_summary(counts, dim=dim))
    all_splits = usage_statistics(counts)
    metrics["perplexity"], metrics["dead_fraction"] = all_splits["perplexity"], all_splits["dead_fraction"]
    metrics["usage_splits"] = list(splits)
    return counts


__all__ = [
    "DEFAULT_REFERENCE_CODEBOOK_SIZE",
    "chao1",
    "coverage_summary",
    "entropy_bits",
    "gaussian_reference",
    "gaussian_reference_counts",
    "gaussian_reference_usage",
    "sample_coverage",
    "usage_at",
    "usage_over_splits",
]
