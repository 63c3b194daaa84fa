"""Where each row's tokens land in its codebook: ``docs/data/codebook_geometry.json``, measured by
``python benchmarks/campaign.py geometry image`` from each run's model and code histogram
(``simvq.experiments.analysis.codebook_geometry``). The codes are put in ten equal groups by their
distance from the codebook's mean; the table gives the innermost and the outermost tenth's usage, the
outermost tenth's share of all tokens, the tokens' spread over the codes' and the codebook's effective
rank, beside an untrained quantizer's (Gaussian codes and tokens) at the row's N/K. The sentence under
it is computed from the same numbers."""

from __future__ import annotations

from pathlib import Path

from ...utils import read_json
from ..stats import ALPHA, p_text, welch
from .aggregate import Group, Stat, method_key, summarize
from .figures import curve_key
from .tables import column_label, stat_text, table_rows

DEFAULT_GEOMETRY = "docs/data/codebook_geometry.json"
OUTER_SHARE = 0.5  # a tenth of the codes taking at least half the tokens: "most of the tokens"
KEEPS = 0.99  # both tenths at or above this: nearly every code used, no end to place the unused ones at


def load_geometry(path: Path) -> dict:
    return read_json(path, {})


def measures(entry: dict) -> dict[str, float]:
    """One row's (or its reference's) numbers for the table."""
    found = {"inner": entry["usage_by_radius"][0], "outer": entry["usage_by_radius"][-1],
             "share": entry["token_share_by_radius"][-1], "rank": entry["effective_rank"]}
    return found | ({"spread": entry["spread_ratio"]} if "spread_ratio" in entry else {})


def over_seeds(entries: list[dict], name: str) -> Stat | None:
    return summarize(m[name] for m in map(measures, entries) if name in m)


def measured_groups(groups: dict[tuple, Group], geometry: dict) -> dict[tuple, list[dict]]:
    """{(variant, method, K): the measured entries of its seeds}, for the groups with any."""
    measured = {}
    for (variant, method, k), group in groups.items():
        entries = [geometry[key] for row in group.rows if (key := curve_key(row)) in geometry]
        if entries:
            measured[(variant, method, k)] = entries
    return measured


def geometry_figure(groups: dict[tuple, Group], geometry: dict, path: Path) -> Path | None:
    """Usage and token share by tenth of the codes (innermost first) for SimVQ at every K (seed means),
    with the untrained quantizer's at each N/K dashed."""
    import statistics

    from ...utils import pyplot, save_figure

    simvq = sorted(((key, entries) for key, entries in measured_groups(groups, geometry).items()
                    if key[1] == "simvq" and (key[0] == "main" or key[0].startswith("grid="))), key=lambda item: item[0][2])
    if not simvq:
        return None
    figure, (usage, share) = pyplot().subplots(1, 2, figsize=(10, 4))
    tenths = list(range(1, 11))
    references = {}
    for (variant, _, k), entries in simvq:
        for axis, name in ((usage, "usage_by_radius"), (share, "token_share_by_radius")):
            axis.plot(tenths, [100 * statistics.fmean(e[name][i] for e in entries) for i in range(10)], marker="o",
                      label=f"SimVQ {column_label(variant, k)} ({len(entries)} seed{'s' * (len(entries) > 1)})")
        reference = entries[0]["reference"]
        references[(reference["codes"], reference["tokens"])] = reference
    for ((codes, tokens), reference), style in zip(sorted(references.items(), key=lambda item: item[0][1] / item[0][0]), ("--", ":", "-.", (0, (5, 1)))):
        for axis, name in ((usage, "usage_by_radius"), (share, "token_share_by_radius")):
            axis.plot(tenths, [100 * v for v in reference[name]], linestyle=style, color="gray", linewidth=1.2,
                      label=f"untrained, N/K = {tokens / codes:,.0f}")
    share.set_yscale("log")
    for axis, ylabel in ((usage, "codes used in the tenth (%)"), (share, "tokens landing in the tenth (%)")):
        axis.set_xlabel("tenth of the codes by distance from the mean (1: innermost)")
        axis.set_ylabel(ylabel)
        axis.set_xticks(tenths)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    return path


def geometry_section(groups: dict[tuple, Group], geometry: dict, picture: str | None = None) -> list[str]:
    """The table, its sentences and (``picture``: its path from the page) the figure; empty when no row
    has been measured."""
    measured = measured_groups(groups, geometry)
    if not measured:
        return []
    header = ["variant", "method", "K", "seeds", "usage, innermost tenth %", "usage, outermost tenth %", "tokens at the outermost tenth %",
              "token spread / code spread", "codebook effective rank", "untrained: usage innermost / outermost %, tokens at outermost %"]
    rows, notes = [], []
    order = sorted(measured, key=lambda key: (key[2], key[0] != "main", key[0], method_key(key[1])))
    for variant, method, k in order:
        entries = measured[(variant, method, k)]
        reference = measures(entries[0]["reference"])
        cells = [stat_text(over_seeds(entries, name), scale, digits) for name, scale, digits in
                 (("inner", 100.0, 1), ("outer", 100.0, 1), ("share", 100.0, 1), ("spread", 1.0, 2), ("rank", 1.0, 1))]
        untrained = f"{100 * reference['inner']:.1f} / {100 * reference['outer']:.1f}, {100 * reference['share']:.1f}"
        rows.append([variant, method, f"{k:,}", str(len(entries)), *cells, untrained])
        if method == "simvq":
            notes.append(simvq_note(variant, k, entries, reference))
    return [
        "The codes in ten equal groups by their distance from the codebook's mean (measured from each run's model and "
        "code histogram; the token spread is the RMS distance of 2,000 test images' tokens from that mean over the "
        "codes' own). The untrained quantizer (Gaussian codes and tokens, seed 0) is measured at the row's N/K on at most "
        "8,192 codes: in d = 64 its codes near the centre are near neighbours in every direction and take most tokens, "
        "so the codes it leaves unused are its outermost. Effective rank: Roy and Vetterli's, of the centred codebook "
        "(at most d).",
        "", *table_rows(header, rows), "", *[f"- {note}" for note in notes if note], "",
        *([f"![where SimVQ's tokens land, by tenth of the codes]({picture})", ""] if picture else []),
    ]


def ends_test(entries: list[dict], codes: int) -> tuple[float, str] | None:
    """Whether the innermost and the outermost tenth's usage differ: Welch's test over seeds, or with
    one run Fisher's exact test on the two tenths' used and unused codes. ``(p, what)``."""
    from scipy.stats import fisher_exact

    inner, outer = ([measures(e)[name] for e in entries] for name in ("inner", "outer"))
    if len(entries) > 1:
        test = welch(inner, outer)
        return None if test is None else (test.p, f"Welch, {len(entries)} seeds")
    # the tenths are ``tensor_split``'s: the first K % 10 hold one code more, the last never does
    sizes = [codes // 10 + (codes % 10 > 0), codes // 10]
    used = [round(inner[0] * sizes[0]), round(outer[0] * sizes[1])]
    counted = f"the {sizes[1]:,} codes of each tenth" if sizes[0] == sizes[1] else f"the two tenths' {sizes[0]:,} and {sizes[1]:,} codes"
    return float(fisher_exact([used, [sizes[0] - used[0], sizes[1] - used[1]]]).pvalue), f"Fisher's exact test on {counted}"


def simvq_note(variant: str, k: int, entries: list[dict], reference: dict) -> str:
    """Which end of SimVQ's codebook goes unused (by a test), against the untrained quantizer's."""
    inner, outer, share = (over_seeds(entries, name) for name in ("inner", "outer", "share"))
    spread = over_seeds(entries, "spread")
    if inner is None or outer is None or share is None:
        return ""
    label = column_label(variant, k) + (f", {variant}" if variant != "main" and not variant.startswith("grid=") else "")
    seeds = f"{len(entries)} seed{'s' * (len(entries) > 1)}"
    ends = f"usage {100 * inner.mean:.1f}% in the innermost tenth of the codes against {100 * outer.mean:.1f}% in the outermost"
    test = ends_test(entries, k)
    if min(inner.mean, outer.mean) >= KEEPS:
        where = f"it uses nearly every code at both ends ({ends})"
    elif test is None or test[0] >= ALPHA:
        where = f"its unused codes are not placed by a test ({ends}{f'; {p_text(test[0])}, {test[1]}' if test else ''})"
    else:
        side = "centre" if inner.mean < outer.mean else "edge"
        where = f"its unused codes lie toward the codebook's {side} ({ends}; {p_text(test[0])}, {test[1]})"
        if len(entries) == 1:  # the codes are the replicates: a fact about this run's codebook, not a verdict on the method
            where = f"in this one run, {where[4:]}; that describes this codebook, not the method across seeds"
    wide = f" Its tokens spread {spread.mean:.2f}× as wide as its codes" if spread else " Its tokens"
    most = "most" if share.mean >= OUTER_SHARE else "a share"
    untrained = f"the untrained quantizer at the same N/K uses {100 * reference['inner']:.1f}% / {100 * reference['outer']:.1f}% of those tenths"
    return (f"SimVQ at {label} ({seeds}): {where}.{wide}, and the outermost tenth of the codes takes {most} of them "
            f"({100 * share.mean:.1f}%); {untrained}, its outermost taking {100 * reference['share']:.1f}% of the tokens.")


__all__ = ["DEFAULT_GEOMETRY", "geometry_figure", "geometry_section", "load_geometry", "measured_groups"]
