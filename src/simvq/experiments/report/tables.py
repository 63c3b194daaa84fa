"""The page's tables: the opening comparison (every method x K, the Gaussian reference under each K,
Welch's test of SimVQ against each method), the residual table, the richer-token table and the
ablations. Cells read ``mean ± std (seeds)``; a single seed says so and carries no verdict."""

from __future__ import annotations

from ..stats import ALPHA, holm_family, p_text, welch
from .aggregate import Group, Stat, column_key, columns_of, comparable_variant, method_key, method_order, number, ranked_like_with_like, value

MISSING = "–"
DAGGER = "†"

# (column, title, scale, decimals, lower is better or None for a property): the opening table
MAIN_COLUMNS = [
    ("usage", "usage %", 100.0, 1, False),
    ("usage_at_50", "usage at 50 tok/code %", 100.0, 1, False),
    ("perplexity_per_code", "perplexity / K", 1.0, 3, False),
    ("entropy_bits", "entropy (bits)", 1.0, 2, False),
    ("psnr", "PSNR (dB)", 1.0, 2, False),
    ("ssim", "SSIM", 1.0, 3, False),
    ("psnr_last20", "Δ PSNR, last 20% (dB)", 1.0, 2, None),
    ("usage_last20", "Δ usage, last 20% (points)", 100.0, 1, None),
]
TESTED = [("psnr", "PSNR", 1.0, 2, False), ("usage", "usage", 100.0, 1, False), ("perplexity_per_code", "perplexity / K", 1.0, 3, False)]


def fmt(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}"


def count(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def whole(x: float) -> str:
    return f"{x:,.0f}"


def span(values, show=count) -> str:
    """One value, or min–max where runs disagree (e.g. tokens counted differently)."""
    values = sorted({round(v, 6) for v in values if v is not None})
    if not values:
        return MISSING
    return show(values[0]) if len(values) == 1 else f"{show(values[0])}–{show(values[-1])}"


def stat_text(s: Stat | None, scale: float, digits: int) -> str:
    if s is None:
        return MISSING
    spread = f" ± {fmt(s.std * scale, digits)}" if s.n > 1 else ""
    return f"{fmt(s.mean * scale, digits)}{spread} ({s.n})"


def cell(group: Group | None, column: str, scale: float, digits: int) -> str:
    text = stat_text(group.stat(column) if group else None, scale, digits)
    return text + DAGGER if group and text != MISSING and group.capped() else text


def table_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def k_label(column) -> str:
    """A comparison column in words: ``K=8,192``, or ``K=262,144 (14x14 tokens)`` on a finer grid."""
    if isinstance(column, tuple):
        return f"K={column[0]:,} ({column[1]} tokens)"
    return f"K={column:,}"


def odd_codebooks(rows: list[dict]) -> str:
    """The method and K of the rows whose quantizer holds another number of codes than K (FSQ's levels
    multiply to 1,000 at K=1,024, 4,375 at 4,096), in words; empty when none does."""
    odd = {(r["method"], int(k), int(codes)) for r in rows if (k := number(r.get("codebook_size"))) and (codes := number(r.get("codes")))
           and codes != k}
    return "; ".join(f"{method} {k_label(k)}: {codes:,} codes" for method, k, codes in sorted(odd))


def column_label(variant: str, k: int) -> str:
    """A variant's runs at K in words: the finer grid's own column (``K=262,144 (14x14 tokens)``),
    any other variant at plain ``K=8,192``."""
    return k_label(column_key(variant, k) if comparable_variant(variant) else k)


def difference_cell(mine: Stat | None, other: Stat | None, scale: float, digits: int, say) -> str:
    """``mine − other`` scaled, then ``say(text, test)`` with Welch's test over their seeds; a side
    with one seed: "one run", no test."""
    if mine is None or other is None:
        return MISSING
    text = f"{(mine.mean - other.mean) * scale:+.{digits}f}"
    test = welch(mine.values, other.values)
    return f"{text} (one run: no test)" if test is None else say(text, test)


def test_cell(simvq: Stat | None, rival: Stat | None, scale: float, digits: int, adjusted: float | None = None) -> str:
    """SimVQ − rival with Welch's p-value, its Holm-adjusted value over the K's family of comparisons on
    this measure, and which is higher where the adjusted p is below α = 0.05."""
    def say(text: str, test) -> str:
        p = test.p if adjusted is None else adjusted
        holm_text = "" if adjusted is None else f", Holm {p_text(adjusted)}"
        return f"{text}, {p_text(test.p)}{holm_text}: " + (("SimVQ higher" if test.difference > 0 else "rival higher") if p < ALPHA else "not significant")

    return difference_cell(simvq, rival, scale, digits, say)


def holm_adjusted(simvq: Group | None, rivals: dict[str, Group], column: str) -> dict[str, float]:
    """Holm-adjusted p-values of SimVQ against each rival with a test on ``column``: one K's family."""
    mine = simvq.stat(column) if simvq else None
    others = {m: stat.values for m, g in rivals.items() if (stat := g.stat(column)) is not None}
    return {m: p for m, (_, p) in holm_family(mine.values, others).items()} if mine else {}


def reference_row(label: str, found: dict | None, group_usage: list) -> list[str]:
    """The untrained-Gaussian row under a K: usage and perplexity / K at the K's own token count."""
    if found:
        usage, at50 = stat_text(found["usage"], 100.0, 1), stat_text(found.get("usage_at_50"), 100.0, 1)
        ratio, entropy = stat_text(found["perplexity_per_code"], 1.0, 3), stat_text(found.get("entropy_bits"), 1.0, 2)
    else:  # an older row's single-seed usage reference (computed at min(K, 8,192) codes)
        usage, at50, ratio, entropy = span(group_usage, lambda v: f"{100 * v:.1f}"), MISSING, "not computed", "not computed"
    seeds = str(found["usage"].n) if found else ""
    return [label, "*untrained Gaussian*", seeds, usage, at50, ratio, entropy, *[""] * (len(MAIN_COLUMNS) - 4), *[""] * len(TESTED)]


def main_table(main: dict[tuple, Group], refs: dict) -> list[str]:
    """Every method x K in one table, SimVQ first within each K, the Gaussian reference under it, and
    the test of SimVQ against each method on PSNR, usage and perplexity / K."""
    header = ["K", "method", "seeds", *(title for _, title, _, _, _ in MAIN_COLUMNS), *(f"SimVQ − it: {t}" for _, t, _, _, _ in TESTED)]
    rows = []
    for column in columns_of(main):
        simvq = main.get(("simvq", column))
        methods = method_order(m for m, c in main if c == column)
        rivals = {m: main[(m, column)] for m in methods if m != "simvq"}
        adjusted = {c: holm_adjusted(simvq, rivals, c) for c, *_ in TESTED}
        for method in methods:
            group = main[(method, column)]
            cells = [cell(group, c, s, d) for c, _, s, d, _ in MAIN_COLUMNS]
            tests = ["" if method == "simvq" else test_cell(simvq and simvq.stat(c), group.stat(c), s, d, adjusted[c].get(method))
                     for c, _, s, d, _ in TESTED]
            rows.append([k_label(column), method, str(len(group.rows)), *cells, *tests])
        rows.append(reference_row(k_label(column), refs.get(column), [number(r.get("usage_reference")) for g in
                                                                          (main[(m, c)] for m, c in main if c == column) for r in g.rows]))
    return table_rows(header, rows)


def is_stages(variant: str) -> bool:
    """The residual table's variants (``simvq bench image --stages N``): compared among themselves."""
    return variant.startswith("stages=")


SMALL_COLUMNS = [("usage", 100.0, 1), ("perplexity", 1.0, 1), ("psnr", 1.0, 2), ("ssim", 1.0, 3), ("steps", 1.0, 0)]


def residual_table(groups: dict[tuple, Group]) -> list[str]:
    """Multi-stage quantizers at equal stages and K per stage, like with like (no single-stage baseline)."""
    keys = sorted(((v, m, k) for (v, m, k) in groups if is_stages(v)),
                  key=lambda vmk: (int(vmk[0].split("=", 1)[1].split()[0]), vmk[2], method_key(vmk[1])))
    if not keys:
        return []
    rows = [[variant.split("=", 1)[1], method, f"{k:,}", str(len(groups[(variant, method, k)].rows)),
             *(cell(groups[(variant, method, k)], c, s, d) for c, s, d in SMALL_COLUMNS)] for variant, method, k in keys]
    header = ["stages", "method", "K per stage", "seeds", "usage %", "perplexity", "PSNR", "SSIM", "steps"]
    return [
        "Residual quantizers with the same number of stages and codes per stage, on the same recipe and "
        "budget. Usage pools the stages: the fraction of the K indices that some stage uses.",
        "", *table_rows(header, rows), "",
    ]


def richer_codes_table(groups: dict[tuple, Group]) -> list[str]:
    """Main-variant runs whose tokens carry more than one index (sc_vae: atoms and coefficients; a
    residual stack run outside ``--stages``): listed on the same recipe, never ranked."""
    keys = sorted(((m, k) for (v, m, k) in groups if v == "main" and not ranked_like_with_like(m)),
                  key=lambda mk: (mk[1], method_key(mk[0])))
    if not keys:
        return []
    rows = [[method, f"{k:,}", str(len(g.rows)), *(cell(g, c, s, d) for c, s, d in SMALL_COLUMNS)]
            for method, k in keys for g in [groups[("main", method, k)]]]
    header = ["method", "K", "seeds", "usage %", "perplexity", "PSNR", "SSIM", "steps"]
    return [
        "Same recipe and budget, but each token carries more than one code index (sc_vae: its strongest "
        "atoms and their real-valued coefficients), so these rows are not ranked against the one-index "
        "quantizers. Usage: the fraction of the K codes some token uses.",
        "", *table_rows(header, rows), "",
    ]


def delta_cell(group: Group, baseline: Group | None, column: str, scale: float, digits: int) -> str:
    """The ablation minus its baseline (the main run of the same method and K), with Welch's test."""
    return difference_cell(group.stat(column), baseline.stat(column) if baseline else None, scale, digits,
                           lambda text, test: f"{text} ({p_text(test.p)}{', significant' if test.significant else ''})")


ABLATION_COLUMNS = [("usage", 100.0, 1), ("perplexity_per_code", 1.0, 3), ("psnr", 1.0, 2), ("ssim", 1.0, 3),
                    ("psnr_last20", 1.0, 2), ("usage_last20", 100.0, 1)]
ABLATION_DELTAS = [("usage", 100.0, 1), ("perplexity_per_code", 1.0, 3), ("psnr", 1.0, 2)]


def precisions(group: Group) -> str:
    """The precision a group's seeds trained in, or each seed's in seed order where they differ, e.g.
    "–, 32-true" (– not recorded)."""
    each = [row.get("precision") or "–" for row in sorted(group.rows, key=lambda r: number(r.get("seed")) or 0)]
    return each[0] if len(set(each)) == 1 else ", ".join(each)


def ablation_table(groups: dict[tuple, Group]) -> list[str]:
    ablated = {(method, k) for (variant, method, k) in groups if variant != "main" and not is_stages(variant)
               and not variant.startswith("grid=")}
    if not ablated:
        return []
    rows = []
    for method, k in sorted(ablated, key=lambda mk: (mk[1], method_key(mk[0]))):
        baseline = groups.get(("main", method, k))
        variants = sorted(v for (v, m, size) in groups if v != "main" and not is_stages(v) and not v.startswith("grid=")
                          and (m, size) == (method, k))
        for variant, group in ([("main (baseline)", baseline)] if baseline else []) + [(v, groups[(v, method, k)]) for v in variants]:
            is_base = group is baseline
            rows.append([variant, method, f"{k:,}", str(len(group.rows)), precisions(group), *(cell(group, c, s, d) for c, s, d in ABLATION_COLUMNS),
                         *("" if is_base else delta_cell(group, baseline, c, s, d) for c, s, d in ABLATION_DELTAS)])
    header = ["variant", "method", "K", "seeds", "precision", "usage %", "perplexity / K", "PSNR", "SSIM", "Δ PSNR, last 20% (dB)",
              "Δ usage, last 20% (points)", "Δ usage (points)", "Δ perplexity / K", "Δ PSNR (dB)"]
    return [
        "Each ablation is listed under its baseline: the main run of the same method and K. Δ is the "
        "ablation minus the baseline, with Welch's p-value over seeds; one seed on a side: no test. The last-20% "
        "columns say how much the row still moved at the end of its budget; the untrained reference at each K "
        "is under the main table. Precision is the network's in training, per seed (– where the row predates its "
        "record); an ablation trained in another precision than its baseline differs in that too, which the "
        "float32 row, the baseline's recipe in float32, measures.",
        "", *table_rows(header, rows), "",
    ]


__all__ = ["DAGGER", "MISSING", "ablation_table", "cell", "count", "fmt", "k_label", "main_table", "odd_codebooks", "residual_table",
           "richer_codes_table", "span", "stat_text", "table_rows", "value", "whole"]
