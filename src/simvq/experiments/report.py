"""``simvq report``: results CSV (+ curves JSON) -> the generated block of docs/results.md and PNGs.

Written to be read by a sceptical referee: every mean carries its seed count, runs that hit the
step cap before the plateau criterion held are marked, methods are ranked only like with like
(seed 0 against seed 0; multi-seed means only against other multi-seed means), and the findings
are sentences computed from the numbers, so they say what the CSV holds, failures included.

Rows written before the plateau sweep lack most columns; every missing value renders as '–'.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..utils import atomic_write_text, pyplot, save_figure
from .results_file import read_results

BEGIN = "<!-- sweep-report:begin -->"
END = "<!-- sweep-report:end -->"
MISSING = "–"
DAGGER = "†"
KEEPS = 0.99  # usage at or above this counts as "keeps ~100% usage"
COLLAPSED = 0.10  # plain VQ below this fraction of codes counts as collapsed
MULTI_SEED = 3  # fewest seeds for a method to enter the mean-vs-mean comparison

# (CSV column, table title, scale, decimals) of the main comparison, one table each
TABLES = [
    ("usage", "Usage % (codes used over the counted tokens)", 100.0, 1),
    ("usage_chao1", "Chao1-estimated usage %", 100.0, 1),
    ("perplexity", "Perplexity", 1.0, 1),
    ("psnr", "PSNR (dB)", 1.0, 2),
    ("ssim", "SSIM", 1.0, 3),
    ("rfid", "rFID", 1.0, 1),
    ("steps", "Steps trained", 1.0, 0),
]


# ----------------------------------------------------------------------------- numbers


def number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def plateaued(row: dict) -> bool | None:
    """True: stopped by the plateau criterion; False: hit the step cap; None: not recorded."""
    return {"true": True, "1": True, "false": False, "0": False}.get(str(row.get("plateau", "")).strip().lower())


def step_cap(row: dict) -> float | None:
    return number(row.get("max_steps")) or number(row.get("steps"))  # older rows: steps was the budget


def tokens_per_code(row: dict) -> float | None:
    given = number(row.get("tokens_per_code"))
    tokens, size = number(row.get("tokens")), number(row.get("codebook_size"))
    return given if given is not None else (tokens / size if tokens and size else None)


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample std over seeds; 0 for a single seed
    n: int


def summarize(values) -> Stat | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


@dataclass
class Group:
    """The runs of one (variant, method, K) at its largest step cap, one row per seed."""

    rows: list[dict]

    def stat(self, column: str) -> Stat | None:
        if column == "tokens_per_code":
            return summarize(tokens_per_code(r) for r in self.rows)
        return summarize(number(r.get(column)) for r in self.rows)

    def seed0(self) -> dict | None:
        return next((r for r in self.rows if number(r.get("seed")) == 0), None)

    def capped(self) -> int:
        return sum(plateaued(r) is False for r in self.rows)

    def plateaus(self) -> int:
        return sum(plateaued(r) is True for r in self.rows)


def aggregate(rows: list[dict]) -> dict[tuple, Group]:
    """{(variant, method, K): Group}. A configuration run under several step caps keeps only its
    largest cap (a shorter earlier sweep must not dilute the mean), and a seed that appears twice
    keeps its last row (a rerun supersedes)."""
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
    from ..quantizers import list_quantizers, one_index_per_token

    return method not in list_quantizers() or one_index_per_token(method)


def main_groups(groups: dict[tuple, Group]) -> dict[tuple, Group]:
    """The main comparison: main-variant runs of methods whose tokens are one index each."""
    return {(method, k): g for (variant, method, k), g in groups.items() if variant == "main" and ranked_like_with_like(method)}


def at_k(main: dict[tuple, Group], k: int) -> list[Group]:
    return [g for (_, size), g in main.items() if size == k]


def values_at(main: dict[tuple, Group], k: int, column: str) -> list[float | None]:
    """One column over every main run at K, all methods together (per-K quantities such as N/K)."""
    rows = [r for g in at_k(main, k) for r in g.rows]
    return [tokens_per_code(r) if column == "tokens_per_code" else number(r.get(column)) for r in rows]


def method_key(method: str) -> tuple:
    return (method != "simvq", method != "vq", method)  # SimVQ first, plain VQ (its contrast) second


def method_order(methods) -> list[str]:
    return sorted(set(methods), key=method_key)


# ----------------------------------------------------------------------------- formatting


def fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def count(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def whole(value: float) -> str:
    return f"{value:,.0f}"


def span(values, show=count) -> str:
    """One value, or min–max where runs disagree (e.g. tokens counted differently)."""
    values = sorted({round(v, 6) for v in values if v is not None})
    if not values:
        return MISSING
    return show(values[0]) if len(values) == 1 else f"{show(values[0])}–{show(values[-1])}"


def seed_gap(a: Stat, b: Stat, scale: float = 1.0) -> tuple[float, float]:
    """``(a - b, 2 x the larger seed std)``, both scaled: the report's one rule for comparing means
    is that a difference counts only when it exceeds that spread."""
    return (a.mean - b.mean) * scale, 2 * max(a.std, b.std) * scale


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


def k_label(k: int) -> str:
    return f"K={k:,}"


# ----------------------------------------------------------------------------- header


def seeds_per_method(main: dict[tuple, Group]) -> str:
    seeds = defaultdict(list)
    for (method, _), group in main.items():
        seeds[method].append(len(group.rows))
    labels = defaultdict(list)
    for method in method_order(seeds):
        low, high = min(seeds[method]), max(seeds[method])
        labels[str(low) if low == high else f"{low}–{high}"].append(method)
    return "; ".join(f"{n} seed{'s' if n != '1' else ''}: {', '.join(ms)}" for n, ms in sorted(labels.items(), reverse=True))


def stopping_summary(rows: list[dict]) -> str:
    flags = [plateaued(r) for r in rows]
    parts = [f"{flags.count(True)} stopped at the plateau", f"{flags.count(False)} hit the step cap"]
    if flags.count(None) == len(flags):
        return "plateau not recorded (older rows)"
    return ", ".join(parts) + (f", {flags.count(None)} without a plateau flag (older rows)" if None in flags else "")


def token_summary(main: dict[tuple, Group]) -> str:
    sizes = sorted({k for _, k in main})
    rows = [r for g in main.values() for r in g.rows]
    per_k = ", ".join(f"{span(values_at(main, k, 'tokens_per_code'))} at {k_label(k)}" for k in sizes)
    test = span(number(r.get("tokens_test")) for r in rows)
    test = (f"; the test split alone: {test}. The usage-over-steps curves count the tokens of the plateau "
            "checks' test images (the recipe's `plateau.eval_images`), fewer than either") if test != MISSING else ""
    tokens = span(number(r.get("tokens")) for r in rows)
    return f"Usage is counted over N = {tokens} tokens (train + test splits{test}); N/K = {per_k}."


def header(rows: list[dict], groups: dict[tuple, Group], results) -> list[str]:
    main = main_groups(groups)
    devices = ", ".join(sorted({r.get("device") for r in rows if r.get("device")})) or MISSING
    fid = [number(r.get("rfid_images")) for r in rows if number(r.get("rfid")) is not None]
    hours = sum(number(r.get("train_seconds")) or 0.0 for r in rows) / 3600
    return [
        f"Generated by `simvq report` from `{results}`.",
        "",
        f"- Runs: {len(rows)}; seeds per method in the main comparison: {seeds_per_method(main) or MISSING}.",
        f"- Stopping: step cap(s) {span((step_cap(r) for r in rows), whole)}; {stopping_summary(rows)}.",
        f"- Devices: {devices}; {hours:.1f} h of training in total" + (f"; rFID on {span(fid)} test images." if fid else "."),
        f"- {token_summary(main)}",
        f"- Cells: mean ± std over seeds (number of seeds). {DAGGER} = at least one of those seeds hit the step "
        "cap before the plateau criterion held, so its numbers may still have been moving.",
    ]


# ----------------------------------------------------------------------------- main comparison


def reference_rows(main: dict[tuple, Group], sizes: list[int]) -> list[list[str]]:
    """What an untrained quantizer shows at the same tokens/K (isotropic Gaussian codes and data):
    usage below 100% that even chance matching would give is a counting limit, not a collapse."""
    reference = [span(values_at(main, k, "usage_reference"), lambda v: f"{100 * v:.1f}") for k in sizes]
    ratio = [span(values_at(main, k, "tokens_per_code")) for k in sizes]
    return [["*untrained reference (Gaussian)*", *reference], ["*tokens / code*", *ratio]]


def comparison_tables(groups: dict[tuple, Group]) -> list[str]:
    main = main_groups(groups)
    methods, sizes = method_order(m for m, _ in main), sorted({k for _, k in main})
    lines = []
    for column, title, scale, digits in TABLES:
        if not any(g.stat(column) for g in main.values()):
            continue  # e.g. rFID not computed in this sweep
        rows = [[method, *(cell(main.get((method, k)), column, scale, digits) for k in sizes)] for method in methods]
        if column == "usage":
            rows += reference_rows(main, sizes)
        lines += [f"**{title}**", "", *table_rows(["method", *map(k_label, sizes)], rows), ""]
    return lines


# ----------------------------------------------------------------------------- rankings


def seed0_ranking(main: dict[tuple, Group], k: int, column: str) -> list[tuple[float, str, bool]]:
    """(value, method, hit the cap) of every method's seed-0 run at K, best first."""
    ranked = []
    for (method, size), group in main.items():
        row = group.seed0() if size == k else None
        value = number(row.get(column)) if row else None
        if value is not None:
            ranked.append((value, method, plateaued(row) is False))
    return sorted(ranked, key=lambda entry: -entry[0])


def ranking_table(main: dict[tuple, Group], column: str, scale: float, digits: int) -> list[str]:
    sizes = sorted({k for _, k in main})
    rankings = [seed0_ranking(main, k, column) for k in sizes]
    depth = max((len(r) for r in rankings), default=0)
    def entry(ranking, place):  # "method value", daggered if that run hit the cap
        value, method, capped = ranking[place] if place < len(ranking) else (None, "", False)
        return "" if value is None else f"{method} {fmt(value * scale, digits)}{DAGGER * capped}"

    rows = [[str(place + 1), *(entry(r, place) for r in rankings)] for place in range(depth)]
    return table_rows(["rank", *map(k_label, sizes)], rows)


def multi_seed_pairs(main: dict[tuple, Group], k: int) -> list[tuple[str, str]]:
    methods = method_order(m for (m, size), g in main.items() if size == k and len(g.rows) >= MULTI_SEED)
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1 :]]
    return [p for p in pairs if "simvq" in p] if "simvq" in methods else pairs


def multi_seed_table(main: dict[tuple, Group]) -> list[str]:
    """Mean vs mean, only between methods that both have >= MULTI_SEED seeds; a difference counts
    when it exceeds twice the larger of the two seed stds."""
    rows = []
    for k in sorted({k for _, k in main}):
        for a, b in multi_seed_pairs(main, k):
            for column, label, scale, digits in (("usage", "usage %", 100.0, 1), ("psnr", "PSNR (dB)", 1.0, 2)):
                sa, sb = main[(a, k)].stat(column), main[(b, k)].stat(column)
                if sa is None or sb is None:
                    continue
                diff, spread = seed_gap(sa, sb, scale)
                verdict = "yes" if abs(diff) > spread else "no"
                rows.append([k_label(k), label, f"{a} {stat_text(sa, scale, digits)}", f"{b} {stat_text(sb, scale, digits)}",
                             f"{diff:+.{digits}f}", fmt(spread, digits), verdict])
    if not rows:
        return [f"_No K has two methods with ≥ {MULTI_SEED} seeds._", ""]
    return [*table_rows(["K", "metric", "A", "B", "A − B", "2 × larger std", "beyond seed spread?"], rows), ""]


def rankings(groups: dict[tuple, Group]) -> list[str]:
    main = main_groups(groups)
    return [
        "Seed-0 runs only (every method has one), so a 3-seed mean is never ranked against a single run.",
        "",
        "**PSNR rank (dB, seed 0)**", "", *ranking_table(main, "psnr", 1.0, 2), "",
        "**Usage rank (%, seed 0)**", "", *ranking_table(main, "usage", 100.0, 1), "",
        f"**Methods with ≥ {MULTI_SEED} seeds: mean ± std (seeds)**", "", *multi_seed_table(main),
    ]


# ----------------------------------------------------------------------------- findings


def pct(s: Stat | None) -> str:
    if s is None:
        return MISSING
    spread = f" ± {100 * s.std:.1f}" if s.n > 1 else ""
    return f"{100 * s.mean:.1f}%{spread} ({s.n} seed{'s' * (s.n > 1)})"


def stopping_text(group: Group) -> str:
    runs, capped, plateaus = len(group.rows), group.capped(), group.plateaus()
    if plateaus == runs:
        return f"all {runs} run(s) stopped at the plateau"
    parts = [f"{plateaus} of {runs} stopped at the plateau"] if plateaus else []
    if capped:
        cap = span((step_cap(r) for r in group.rows), whole)
        parts.append(f"{capped} of {runs} hit the {cap}-step cap before the plateau criterion held")
    if runs - plateaus - capped:
        parts.append(f"{runs - plateaus - capped} of {runs} without a plateau flag")
    return ", ".join(parts)


def simvq_usage_note(group: Group, k: int) -> str | None:
    usage = group.stat("usage")
    if usage is None:
        return None
    if usage.mean >= KEEPS:
        verdict = "keeps ~100% usage (≥ 99%)"
    else:
        verdict = f"does NOT keep ~100% usage: {100 * (KEEPS - usage.mean):.1f} percentage points short of 99%"
    tokens, ratio, reference = group.stat("tokens"), group.stat("tokens_per_code"), group.stat("usage_reference")
    versus = MISSING if reference is None else (
        f"{100 * reference.mean:.1f}% (SimVQ − reference: {100 * (usage.mean - reference.mean):+.1f} points)")
    return (
        f"SimVQ at {k_label(k)}: {pct(usage)} of codes used over N = {count(tokens.mean) if tokens else MISSING} tokens "
        f"(N/K = {count(ratio.mean) if ratio else MISSING}); Chao1 estimate {pct(group.stat('usage_chao1'))}; {verdict}. "
        f"An untrained quantizer at the same N/K uses {versus}; "
        f"{stopping_text(group)}."
    )


def vq_note(main: dict[tuple, Group]) -> str | None:
    vq = {k: g.stat("usage") for (m, k), g in main.items() if m == "vq" and g.stat("usage")}
    if not vq:
        return None
    collapsed = [k for k in sorted(vq) if vq[k].mean < COLLAPSED]
    ratios = [f"{main[('simvq', k)].stat('usage').mean / vq[k].mean:.1f}× at {k_label(k)}"
              for k in sorted(vq) if ("simvq", k) in main and main[("simvq", k)].stat("usage") and vq[k].mean > 0]
    verdict = (f"collapsed (< {100 * COLLAPSED:.0f}% of codes) at {', '.join(map(k_label, collapsed))}" if collapsed
               else f"does not collapse below {100 * COLLAPSED:.0f}% at any K run")
    text = "Plain VQ usage: " + ", ".join(f"{k_label(k)} {pct(vq[k])}" for k in sorted(vq)) + f" — {verdict}."
    return text + (f" SimVQ / VQ usage: {', '.join(ratios)}." if ratios else "")


def psnr_margin(main: dict[tuple, Group], k: int, rivals: set | None = None) -> tuple[int, int, float, str] | None:
    """SimVQ's seed-0 PSNR rank at K and its margin over the best other seed-0 run (among rivals)."""
    ranked = [entry for entry in seed0_ranking(main, k, "psnr") if rivals is None or entry[1] in rivals | {"simvq"}]
    methods = [m for _, m, _ in ranked]
    if "simvq" not in methods or len(ranked) < 2:
        return None
    mine = ranked[methods.index("simvq")][0]
    best_value, best = next((v, m) for v, m, _ in ranked if m != "simvq")
    return methods.index("simvq") + 1, len(ranked), mine - best_value, best


def psnr_trend(main: dict[tuple, Group], sizes: list[int]) -> str | None:
    """Whether SimVQ's margin grows with K, judged only against methods run at every K (like with like)."""
    common = set.intersection(*({m for _, m, _ in seed0_ranking(main, k, "psnr")} for k in sizes)) - {"simvq"}
    margins = [psnr_margin(main, k, common) for k in sizes]
    if len(sizes) < 2 or not common or None in margins:
        return None
    values = [m[2] for m in margins]
    grows = all(b > a for a, b in zip(values, values[1:]))
    return (f"Against the methods run at every K ({', '.join(method_order(common))}), SimVQ's seed-0 PSNR margin over "
            f"the best of them {'grows' if grows else 'does NOT grow'} with K: "
            + ", ".join(f"{v:+.2f} dB at {k_label(k)}" for k, v in zip(sizes, values)) + ".")


def psnr_notes(main: dict[tuple, Group]) -> list[str]:
    sizes = sorted({k for _, k in main})
    margins = {k: psnr_margin(main, k) for k in sizes}
    notes = [f"PSNR at {k_label(k)} (seed 0): SimVQ ranks {m[0]} of {m[1]}; margin over the best other method "
             f"({m[3]}): {m[2]:+.2f} dB." for k, m in margins.items() if m]
    return notes + [note for note in [psnr_trend(main, sizes)] if note]


def cap_note(groups: dict[tuple, Group]) -> str | None:
    capped = [f"{variant}/{method} {k_label(k)} ({g.capped()} of {len(g.rows)})"
              for (variant, method, k), g in sorted(groups.items()) if g.capped()]
    if not capped:
        return None
    return "Hit the step cap without plateau (numbers may still have been moving): " + "; ".join(capped) + "."


def findings(groups: dict[tuple, Group]) -> list[str]:
    main = main_groups(groups)
    simvq = [simvq_usage_note(g, k) for (m, k), g in sorted(main.items(), key=lambda item: item[0][1]) if m == "simvq"]
    notes = [*simvq, vq_note(main), *psnr_notes(main), cap_note(groups)]
    return [note for note in notes if note]


# ----------------------------------------------------------------------------- ablations


def delta_cell(group: Group, baseline: Group | None, column: str, scale: float, digits: int) -> str:
    """Difference to the main run of the same method and K, judged against 2 std of its seeds."""
    mine, base = group.stat(column), baseline.stat(column) if baseline else None
    if mine is None or base is None:
        return MISSING
    diff = f"{(mine.mean - base.mean) * scale:+.{digits}f}"
    if base.n < 2:
        return f"{diff} (n/a (1 seed))"
    spread = 2 * base.std * scale
    return f"{diff} ({'beyond' if abs(mine.mean - base.mean) * scale > spread else 'within'} 2σ = {fmt(spread, digits)})"


def ablation_row(label: str, method: str, k: int, group: Group, baseline: Group | None) -> list[str]:
    known = group.plateaus() + group.capped()
    return [
        label, method, f"{k:,}", str(len(group.rows)),
        cell(group, "usage", 100.0, 1), cell(group, "perplexity", 1.0, 1), cell(group, "psnr", 1.0, 2),
        cell(group, "ssim", 1.0, 3), cell(group, "steps", 1.0, 0),
        f"{group.plateaus()}/{len(group.rows)}" if known else MISSING,
        delta_cell(group, baseline, "usage", 100.0, 1),
        delta_cell(group, baseline, "psnr", 1.0, 2),
    ]


def is_stages(variant: str) -> bool:
    """The residual table's variants (``simvq bench image --stages N``): compared among themselves."""
    return variant.startswith("stages=")


def residual_table(groups: dict[tuple, Group]) -> list[str]:
    """Multi-stage quantizers at equal stages and K per stage, like with like (no single-stage baseline)."""
    keys = sorted(((v, m, k) for (v, m, k) in groups if is_stages(v)),
                  key=lambda vmk: (int(vmk[0].split("=", 1)[1]), vmk[2], method_key(vmk[1])))
    if not keys:
        return []
    rows = []
    for variant, method, k in keys:
        group = groups[(variant, method, k)]
        rows.append([variant.split("=", 1)[1], method, f"{k:,}", str(len(group.rows)), cell(group, "usage", 100.0, 1),
                     cell(group, "perplexity", 1.0, 1), cell(group, "psnr", 1.0, 2), cell(group, "ssim", 1.0, 3),
                     cell(group, "steps", 1.0, 0)])
    header = ["stages", "method", "K per stage", "seeds", "usage %", "perplexity", "PSNR", "SSIM", "steps"]
    return [
        "Residual quantizers with the same number of stages and codes per stage, on the same recipe and "
        "budget rule. Usage pools the stages: the fraction of the K indices that some stage uses.",
        "", *table_rows(header, rows), "",
    ]


def richer_codes_table(groups: dict[tuple, Group]) -> list[str]:
    """Main-variant runs whose tokens carry more than one index (sc_vae: atoms and coefficients; a
    residual stack run outside ``--stages``): listed on the same recipe, never ranked."""
    keys = sorted(((m, k) for (v, m, k) in groups if v == "main" and not ranked_like_with_like(m)),
                  key=lambda mk: (mk[1], method_key(mk[0])))
    if not keys:
        return []
    rows = [[method, f"{k:,}", str(len(g.rows)), cell(g, "usage", 100.0, 1), cell(g, "perplexity", 1.0, 1),
             cell(g, "psnr", 1.0, 2), cell(g, "ssim", 1.0, 3), cell(g, "steps", 1.0, 0)]
            for method, k in keys for g in [groups[("main", method, k)]]]
    header = ["method", "K", "seeds", "usage %", "perplexity", "PSNR", "SSIM", "steps"]
    return [
        "Same recipe and budget rule, but each token carries more than one code index (sc_vae: its "
        "strongest atoms and their real-valued coefficients), so these rows are not ranked against the "
        "one-index quantizers. Usage: the fraction of the K codes some token uses.",
        "", *table_rows(header, rows), "",
    ]


def ablation_table(groups: dict[tuple, Group]) -> list[str]:
    ablated = {(method, k) for (variant, method, k) in groups if variant != "main" and not is_stages(variant)}
    if not ablated:
        return []
    rows = []
    for method, k in sorted(ablated, key=lambda mk: (mk[1], method_key(mk[0]))):
        baseline = groups.get(("main", method, k))
        if baseline:
            rows.append(ablation_row("main (baseline)", method, k, baseline, None))
        for variant in sorted(v for (v, m, size) in groups if v != "main" and not is_stages(v) and (m, size) == (method, k)):
            rows.append(ablation_row(variant, method, k, groups[(variant, method, k)], baseline))
    header = ["variant", "method", "K", "seeds", "usage %", "perplexity", "PSNR", "SSIM", "steps", "plateau",
              "Δ usage (points)", "Δ PSNR (dB)"]
    return [
        "Each ablation is listed under its baseline: the main run of the same method and K. Δ is judged "
        "against 2 std of the baseline's seeds; with one baseline seed there is no spread to judge by.",
        "", *table_rows(header, rows), "",
    ]


# ----------------------------------------------------------------------------- figures


def line_style(method: str) -> dict:
    return dict(linewidth=2.6, color="black", zorder=3) if method == "simvq" else dict(linewidth=1.2, alpha=0.85)


def save(figure, axis, path: Path, xlabel: str, ylabel: str) -> Path:
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    return path


def plot_vs_k(main: dict[tuple, Group], column: str, ylabel: str, scale: float, path: Path) -> Path | None:
    figure, axis = pyplot().subplots(figsize=(6.5, 4.2))
    for method in method_order(m for m, _ in main):
        points = sorted((k, g.stat(column)) for (m, k), g in main.items() if m == method and g.stat(column))
        if points:
            axis.errorbar([k for k, _ in points], [s.mean * scale for _, s in points], yerr=[s.std * scale for _, s in points],
                          marker="o", capsize=3, label=method, **line_style(method))
    reference = [(k, summarize(values_at(main, k, "usage_reference"))) for k in sorted({k for _, k in main})]
    reference = [(k, s) for k, s in reference if s]
    if column == "usage" and reference:
        sizes, means = [k for k, _ in reference], [100 * s.mean for _, s in reference]
        axis.plot(sizes, means, "k--", linewidth=1, label="untrained reference")
    if not axis.lines:
        pyplot().close(figure)
        return None
    axis.set_xscale("log", base=2)
    return save(figure, axis, path, "codebook size K", ylabel)


def load_curves(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def curve_key(row: dict) -> str:
    return f"{row.get('variant') or 'main'}/{row['method']}/K{int(number(row['codebook_size']))}/seed{row.get('seed', '')}"


def seed_mean(series: list[list[dict]], column: str) -> tuple[list, list, list]:
    """Mean and std over seeds at the steps every seed reached (seeds stop at different plateaus)."""
    by_seed = [{p["step"]: number(p.get(column)) for p in points if number(p.get(column)) is not None} for points in series]
    steps = sorted(set.intersection(*(set(values) for values in by_seed)))
    values = [[seed[step] for seed in by_seed] for step in steps]
    return steps, [statistics.fmean(v) for v in values], [statistics.pstdev(v) for v in values]


def plot_over_steps(main: dict[tuple, Group], curves: dict, k: int, column: str, ylabel: str, scale: float,
                    path: Path) -> Path | None:
    figure, axis = pyplot().subplots(figsize=(6.5, 4.2))
    for method in method_order(m for m, size in main if size == k):
        series = [curves[curve_key(r)] for r in main[(method, k)].rows if curve_key(r) in curves]
        steps, mean, std = seed_mean(series, column) if series else ([], [], [])
        if not steps:
            continue
        style = line_style(method)
        axis.plot(steps, [m * scale for m in mean], label=f"{method} ({len(series)} seed{'s' * (len(series) > 1)})", **style)
        if len(series) > 1:
            axis.fill_between(steps, [(m - s) * scale for m, s in zip(mean, std)], [(m + s) * scale for m, s in zip(mean, std)],
                              alpha=0.15, color=axis.lines[-1].get_color())
    if not axis.lines:
        pyplot().close(figure)
        return None
    axis.set_title(k_label(k))
    return save(figure, axis, path, "training step", ylabel)


def figures(groups: dict[tuple, Group], curves: dict, figures_dir: Path) -> list[Path]:
    main = main_groups(groups)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_vs_k(main, "usage", "codebook usage (%)", 100.0, figures_dir / "sweep_usage_vs_k.png"),
        plot_vs_k(main, "psnr", "PSNR (dB)", 1.0, figures_dir / "sweep_psnr_vs_k.png"),
    ]
    for k in sorted({k for _, k in main}):  # one figure per K: curves of different K never share axes
        for column, ylabel, scale in (("usage", "usage over the checked test images (%)", 100.0), ("psnr", "PSNR (dB)", 1.0)):
            path = figures_dir / f"sweep_{column}_over_steps_K{k}.png"
            paths.append(plot_over_steps(main, curves, k, column, ylabel, scale, path))
    return [p for p in paths if p]


# ----------------------------------------------------------------------------- the document


def render(rows: list[dict], groups: dict[tuple, Group], results, pictures: list[str]) -> str:
    body = [
        *header(rows, groups, results), "",
        "### Findings (computed from the numbers)", "", *[f"- {note}" for note in findings(groups)], "",
        "### Main comparison", "", *comparison_tables(groups),
        "### Rankings (like with like)", "", *rankings(groups),
    ]
    residual = residual_table(groups)
    if residual:
        body += ["### Residual table (equal stages and K per stage)", "", *residual]
    richer = richer_codes_table(groups)
    if richer:
        body += ["### More than one index per token (not ranked)", "", *richer]
    ablations = ablation_table(groups)
    if ablations:
        body += ["### Ablations", "", *ablations]
    body += ["### Figures", "", "Over-steps curves: seed 0, or mean ± std over seeds up to the step every seed reached.", "",
             *[f"![{Path(p).stem}]({p})" for p in pictures], ""]
    return f"{BEGIN}\n" + "\n".join(body) + f"\n{END}"


def splice(out: Path, block: str, *, begin: str = BEGIN, end: str = END,
           heading: str = "## Comparison sweep (`simvq bench image`, `simvq report`)") -> str:
    """The page with its generated block (between ``begin`` and ``end``) replaced; hand-written text
    around it stays. A page without the block gets it appended under ``heading``."""
    content = out.read_text() if out.is_file() else "# Results\n"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return content.rstrip() + f"\n\n{heading}\n\n" + block + "\n"


def default_curves(results: str | Path) -> Path:
    results = Path(results)
    return results.with_name(results.stem + "_curves.json")


def write_report(results: str | Path, out: str | Path = "docs/results.md", *, figures_dir: str | Path = "docs/figures",
                 curves: str | Path | None = None) -> Path:
    rows = read_results(results)
    if not rows:
        raise ValueError(f"no results in {results}; run `simvq bench image` first")
    out, figures_dir = Path(out), Path(figures_dir)
    groups = aggregate(rows)
    pictures = figures(groups, load_curves(Path(curves) if curves else default_curves(results)), figures_dir)
    block = render(rows, groups, results, [os.path.relpath(p, out.parent) for p in pictures])
    atomic_write_text(out, splice(out, block))
    return out
