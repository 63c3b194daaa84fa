"""Rows of a results CSV grouped for the page: one ``Group`` of seeds per (variant, method, K), at
its largest step budget, and the seed statistics every table and test reads."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field


def number(value) -> float | None:
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        return None
    return parsed if math.isfinite(parsed) else None


def plateaued(row: dict) -> bool | None:
    """True: stopped by the plateau criterion; False: trained to its budget; None: not recorded."""
    return {"true": True, "1": True, "false": False, "0": False}.get(str(row.get("plateau", "")).strip().lower())


def step_cap(row: dict) -> float | None:
    return number(row.get("max_steps")) or number(row.get("steps"))  # older rows: steps was the budget


def tokens_per_code(row: dict) -> float | None:
    given = number(row.get("tokens_per_code"))
    tokens, size = number(row.get("tokens")), number(row.get("codebook_size"))
    return given if given is not None else (tokens / size if tokens and size else None)


def perplexity_per_code(row: dict) -> float | None:
    given = number(row.get("perplexity_per_code"))
    perplexity, size = number(row.get("perplexity")), number(row.get("codebook_size"))
    return given if given is not None else (perplexity / size if perplexity and size else None)


def entropy_bits(row: dict) -> float | None:
    given = number(row.get("entropy_bits"))
    perplexity = number(row.get("perplexity"))
    return given if given is not None else (math.log2(perplexity) if perplexity else None)  # perplexity = 2 ** entropy


DERIVED = {"tokens_per_code": tokens_per_code, "perplexity_per_code": perplexity_per_code, "entropy_bits": entropy_bits}


def value(row: dict, column: str) -> float | None:
    """A row's ``column``, derived from other columns where older rows lack it."""
    return DERIVED[column](row) if column in DERIVED else number(row.get(column))


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample std over seeds; 0 for a single seed
    n: int
    values: tuple[float, ...] = field(default=(), compare=False)  # the seeds' values, for the tests


def summarize(values) -> Stat | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values), tuple(values))


@dataclass
class Group:
    """The runs of one (variant, method, K) at its largest step budget, one row per seed."""

    rows: list[dict]

    def stat(self, column: str) -> Stat | None:
        return summarize(value(r, column) for r in self.rows)

    def seed0(self) -> dict | None:
        return next((r for r in self.rows if number(r.get("seed")) == 0), None)

    def capped(self) -> int:
        """Runs of the old plateau protocol that hit their cap before the criterion held."""
        return sum(plateaued(r) is False and not r.get("schedule") for r in self.rows)

    def plateaus(self) -> int:
        return sum(plateaued(r) is True for r in self.rows)


def aggregate(rows: list[dict]) -> dict[tuple, Group]:
    """{(variant, method, K): Group}. A configuration run under several step budgets keeps only its
    largest (a shorter earlier sweep must not dilute the mean), and a seed that appears twice keeps
    its last row (a rerun supersedes)."""
    by_cap: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        size = number(row.get("codebook_size"))
        if not row.get("method") or size is None:
            continue
        cap = step_cap(row) or 0.0
        by_cap[(row.get("variant") or "main", row["method"], int(size))][cap][row.get("seed", "")] = row
    return {key: Group(list(caps[max(caps)].values())) for key, caps in by_cap.items()}


def ranked_like_with_like(method: str) -> bool:
    """Whether a method's main runs join the comparison: one code index per token (see
    ``quantizers.one_index_per_token``). A name this version does not register is kept."""
    from ...quantizers import list_quantizers, one_index_per_token

    return method not in list_quantizers() or one_index_per_token(method)


def comparable_variant(variant: str) -> bool:
    """The main comparison's variants: the default token grid, or a finer grid (its own K column)."""
    return variant == "main" or variant.startswith("grid=")


def main_groups(groups: dict[tuple, Group]) -> dict[tuple, Group]:
    """The main comparison, keyed (method, column): main-variant runs of one-index-per-token methods
    (column K), and finer-grid runs (column "K at GxG")."""
    return {(method, column_key(variant, k)): g for (variant, method, k), g in groups.items()
            if comparable_variant(variant) and ranked_like_with_like(method)}


def column_key(variant: str, k: int):
    """The comparison's column for a variant's runs at K: K itself, or (K, "GxG") on a finer grid."""
    return k if variant == "main" else (k, variant.split("=", 1)[1])


def sort_key(column) -> tuple:
    return (column, "") if isinstance(column, int) else column


def columns_of(main: dict[tuple, Group]) -> list:
    return sorted({c for _, c in main}, key=sort_key)


def at_k(main: dict[tuple, Group], k) -> list[Group]:
    return [g for (_, size), g in main.items() if size == k]


def values_at(main: dict[tuple, Group], k, column: str) -> list[float | None]:
    """One column over every main run at K, all methods together (per-K quantities such as N/K)."""
    return [value(r, column) for g in at_k(main, k) for r in g.rows]


def method_key(method: str) -> tuple:
    return (method != "simvq", method != "vq", method)  # SimVQ first, plain VQ (its contrast) second


def method_order(methods) -> list[str]:
    return sorted(set(methods), key=method_key)
