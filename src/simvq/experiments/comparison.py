"""The pieces of a report section that compares methods at equal K and budget over seeds (the
generation and speech sections of ``simvq report``): grouping a results CSV's rows, one table per K,
SimVQ-versus-each verdicts by Welch's t-test over seeds, and the runs' own figures copied beside the page.

A *column* is ``(CSV column, title, scale, decimals, lower is better)``; ``lower`` None marks a
property rather than a score (no arrow, no verdict). *Groups* map ``(method, K)`` to ``{seed: row}``.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ..utils import atomic_write_text
from . import stats
from .report import Stat, k_label, method_key, method_order, number, splice, stat_text, summarize, table_rows
from .results_file import read_results, run_file

Column = tuple[str, str, float, int, bool | None]
ARROWS = {True: " ↓", False: " ↑", None: ""}


def group_rows(rows: list[dict], *, budget: str = "steps") -> dict[tuple[str, int], dict[str, dict]]:
    """{(method, K): {seed: row}} at each configuration's largest ``budget`` column (a longer run
    supersedes a shorter one; a seed's last row supersedes its earlier ones)."""
    by_budget: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        size = number(row.get("codebook_size"))
        if row.get("method") and size is not None:
            by_budget[(row["method"], int(size))][number(row.get(budget)) or 0.0][str(row.get("seed", ""))] = row
    return {key: budgets[max(budgets)] for key, budgets in by_budget.items()}


def stat(runs: dict[str, dict], column: str) -> Stat | None:
    return summarize(number(r.get(column)) for r in runs.values())


def sizes(groups: dict) -> list[int]:
    return sorted({size for _, size in groups})


def k_table(groups: dict, k: int, columns: list[Column], *, extra: list[tuple[str, Callable[[dict], str]]] = ()) -> list[str]:
    """The methods at K, one row each: every column some method has a value in (mean ± std (seeds)),
    then the ``extra`` ``(title, runs -> cell)`` columns."""
    methods = method_order(m for m, size in groups if size == k)
    shown = [c for c in columns if any(stat(groups[(m, k)], c[0]) for m in methods)]
    header = ["method", *(f"{title}{ARROWS[lower]}" for _, title, _, _, lower in shown), *(title for title, _ in extra)]
    rows = [[m, *(stat_text(stat(groups[(m, k)], c), s, d) for c, _, s, d, _ in shown), *(cell(groups[(m, k)]) for _, cell in extra)]
            for m in methods]
    return [f"**{k_label(k)}**", "", *table_rows(header, rows), ""]


def verdict(simvq: Stat, rival: Stat, *, scale: float, digits: int, lower: bool, rival_name: str = "the rival",
            adjusted: float | None = None) -> str:
    """SimVQ against a rival by Welch's t-test over seeds (``simvq.experiments.stats``), read at
    ``adjusted`` (a family-corrected p) when given; a side with one seed is one run, with no test and no verdict."""
    return stats.verdict(simvq.values, rival.values, scale=scale, digits=digits, lower=lower, names=("simvq", rival_name), adjusted=adjusted)


def holm_over_rivals(groups: dict, k: int, column: str) -> dict[str, float]:
    """Holm-adjusted p-values of SimVQ against each rival with a test on ``column`` at ``k``: the
    family of that K and measure, as the image table's verdicts use (one test: its own p)."""
    mine = stat(groups[("simvq", k)], column)
    rivals = {rival: other.values for rival in method_order(m for m, size in groups if size == k and m != "simvq")
              if (other := stat(groups[(rival, k)], column)) is not None}
    return {rival: p for rival, (_, p) in stats.holm_family(mine.values, rivals).items()} if mine is not None else {}


def simvq_verdicts(groups: dict, columns: list[Column]) -> list[str]:
    """One sentence per K, rival and scored column: SimVQ against each other method at that K."""
    notes = []
    for k in sizes(groups):
        if ("simvq", k) not in groups:
            continue
        families = {column: holm_over_rivals(groups, k, column) for column, *_ in columns}
        for rival in method_order(m for m, size in groups if size == k and m != "simvq"):
            for column, title, scale, digits, lower in columns:
                a, b = stat(groups[("simvq", k)], column), stat(groups[(rival, k)], column)
                if a is None or b is None or lower is None:
                    continue
                adjusted = families[column].get(rival) if len(families[column]) > 1 else None
                notes.append(f"{k_label(k)}, {title}: simvq {stat_text(a, scale, digits)} vs {rival} "
                             f"{stat_text(b, scale, digits)} → {verdict(a, b, scale=scale, digits=digits, lower=lower, rival_name=rival, adjusted=adjusted)}.")
    return notes


def rival_summaries(groups: dict, columns: list[Column]) -> list[str]:
    """One sentence per K and rival: on which scored columns SimVQ is better, worse or not different
    (Welch over seeds, read at Holm's adjustment over the K's rivals on that column; both p-values
    beside), or the differences alone where a side has one run."""
    notes = []
    for k in sizes(groups):
        if ("simvq", k) not in groups:
            continue
        families = {column: holm_over_rivals(groups, k, column) for column, *_ in columns}
        for rival in method_order(m for m, size in groups if size == k and m != "simvq"):
            said: dict[str, list[str]] = {"better": [], "worse": [], "same": [], "untested": []}
            seeds = None
            for column, title, scale, digits, lower in columns:
                a, b = stat(groups[("simvq", k)], column), stat(groups[(rival, k)], column)
                if a is None or b is None or lower is None:
                    continue
                test = stats.welch(a.values, b.values)
                shown = f"{title} {stats.signed((a.mean - b.mean) * scale, digits)}"
                if test is None:
                    said["untested"].append(shown)
                    continue
                seeds = f"{test.n_a} vs {test.n_b} seeds"
                family = families[column]
                p = family[rival] if len(family) > 1 else test.p  # the verdict reads the K's Holm-adjusted p
                side = "same" if p >= stats.ALPHA else "better" if (test.difference < 0) == bool(lower) else "worse"
                said[side].append(f"{shown}, {stats.p_text(test.p)}" + (f", Holm {stats.p_text(p)}" if len(family) > 1 else ""))
            parts = [f"SimVQ better on {'; '.join(said['better'])}" if said["better"] else "",
                     f"{rival} better on {'; '.join(said['worse'])}" if said["worse"] else "",
                     f"no significant difference on {'; '.join(said['same'])}" if said["same"] else "",
                     f"one run on a side, no test: {'; '.join(said['untested'])}" if said["untested"] else ""]
            if any(parts):
                notes.append(f"{k_label(k)}, SimVQ − {rival}{f' ({seeds}, Welch)' if seeds else ''}: " + "; ".join(p for p in parts if p) + ".")
    return notes


def first_seed(runs: dict[str, dict]) -> dict:
    return runs[min(runs, key=lambda seed: number(seed) if number(seed) is not None else float("inf"))]


def run_figures(groups: dict, figures_dir: Path, *, source: str, name: str, methods=None,
                kept: Callable[[dict], Path] | None = None) -> list[tuple[str, Path]]:
    """Each (method, K)'s first seed's ``<run_dir>/<source>`` copied to ``figures_dir/<name>``
    (``name`` formatted with ``method`` and ``k``); ``(label, copy)`` of those that exist. ``kept(row)``:
    the folder a copy of the run's small files was kept in, tried when the run directory is gone."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for method, k in sorted(groups, key=lambda key: (key[1], method_key(key[0]))):
        if methods is not None and method not in methods:
            continue
        row = first_seed(groups[(method, k)])
        path = run_file(row, source, kept)
        if path is not None:
            target = figures_dir / name.format(method=method, k=k)
            shutil.copyfile(path, target)
            copied.append((f"{method}, {k_label(k)}, seed {row.get('seed')}", target))
    return copied


def figure_section(title: str, figures: list[tuple[str, Path]], out_dir: Path) -> list[str]:
    """A ``### title`` section of the copied figures, linked relative to the page; none without figures."""
    if not figures:
        return []
    return [f"### {title}", "", *[f"![{label}]({os.path.relpath(path, out_dir)})" for label, path in figures], ""]


def write_section(results: str | Path, out: str | Path, figures_dir: str | Path, *, render, markers: tuple[str, str],
                  heading: str, option: str, command: str) -> Path:
    """A benchmark's CSV -> its block of the page ``out``: ``render(rows, results, figures_dir, out_dir)``'s
    lines between ``markers`` (the block replaced, or appended under ``heading``); the text around it stays."""
    rows = read_results(results)
    if not rows:
        raise ValueError(f"{option}: no results in {results}; run `{command}` first")
    out = Path(out)
    begin, end = markers
    block = "\n".join([begin, *render(rows, results, Path(figures_dir), out.parent), end])
    atomic_write_text(out, splice(out, block, begin=begin, end=end, heading=heading))
    return out
