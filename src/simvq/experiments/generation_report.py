"""The generation section of ``simvq report``: ``simvq bench generation``'s CSV -> a table per K,
SimVQ-versus-each-tokenizer verdicts computed from the numbers, and the sample grids.

Priors of equal size and budget are compared on what the tokens let them generate (domain FID,
class accuracy of conditional samples, Inception FID when run). Bits per token are shown beside the
unigram entropy of the same tokens: a tokenizer's own test tokens set its scale, so the gap (what the
prior learned) is the comparable number, not bits per token across tokenizers. A difference counts
only beyond twice the larger seed std of the two methods; with one seed the text says it is one run.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

from ..utils import atomic_write_text
from .report import MISSING, Stat, fmt, k_label, method_key, method_order, number, splice, stat_text, summarize, table_rows
from .results_file import read_results

BEGIN = "<!-- generation-report:begin -->"
END = "<!-- generation-report:end -->"
HEADING = "## Generation benchmark (`simvq bench generation`, `simvq report --generation`)"

# (column, title, scale, decimals, lower is better; None: not a score) of the per-K table
COLUMNS = [
    ("nll_bits_per_token", "bits / token", 1.0, 3, True),
    ("test_entropy_bits", "unigram entropy (bits)", 1.0, 3, None),  # the tokens' property, not a score
    ("nll_bits_per_image", "bits / image", 1.0, 1, True),
    ("test_usage", "test usage %", 100.0, 1, None),
    ("domain_fid", "domain FID", 1.0, 1, True),
    ("class_accuracy", "class accuracy %", 100.0, 1, False),
    ("fid", "FID", 1.0, 1, True),
]
# the generation quality the verdicts are about (bits per token are per-tokenizer, see above)
VERDICT_COLUMNS = [c for c in COLUMNS if c[0] in ("domain_fid", "class_accuracy", "fid")]


def group_rows(rows: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    """{(method, K): {seed: row}} at each configuration's largest prior budget (a rerun supersedes)."""
    by_budget: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        size = number(row.get("codebook_size"))
        if row.get("method") and size is not None:
            by_budget[(row["method"], int(size))][number(row.get("steps")) or 0.0][str(row.get("seed", ""))] = row
    return {key: budgets[max(budgets)] for key, budgets in by_budget.items()}


def stat(runs: dict[str, dict], column: str) -> Stat | None:
    return summarize(number(r.get(column)) for r in runs.values())


def gap(runs: dict[str, dict]) -> Stat | None:
    """Unigram entropy minus the prior's bits per token, per seed: what the prior learned."""
    return summarize(
        e - b for r in runs.values()
        if (e := number(r.get("test_entropy_bits"))) is not None and (b := number(r.get("nll_bits_per_token"))) is not None
    )


def k_table(groups: dict, k: int) -> list[str]:
    methods = method_order(m for m, size in groups if size == k)
    columns = [c for c in COLUMNS if any(stat(groups[(m, k)], c[0]) for m in methods)]
    arrows = {True: " ↓", False: " ↑", None: ""}
    header = ["method", *(f"{title}{arrows[lower]}" for _, title, _, _, lower in columns), "entropy − bits/token ↑"]
    rows = [[m, *(stat_text(stat(groups[(m, k)], c), s, d) for c, _, s, d, _ in columns), stat_text(gap(groups[(m, k)]), 1.0, 3)]
            for m in methods]
    return [f"**{k_label(k)}**", "", *table_rows(header, rows), ""]


def verdict(simvq: Stat, rival: Stat, *, scale: float, digits: int, lower: bool) -> str:
    diff = (simvq.mean - rival.mean) * scale
    better = diff < 0 if lower else diff > 0
    if simvq.n < 2 or rival.n < 2:
        return f"{'better' if better else 'worse' if diff else 'equal'} by {abs(diff):.{digits}f} (one seed on a side: one run, no spread)"
    spread = 2 * max(simvq.std, rival.std) * scale
    if abs(diff) <= spread:
        return f"no difference beyond the seed spread ({diff:+.{digits}f} within ±{fmt(spread, digits)})"
    return f"{'helps' if better else 'hurts'}: {diff:+.{digits}f}, beyond 2σ = {fmt(spread, digits)}"


def findings(groups: dict) -> list[str]:
    """One sentence per K, rival and metric: SimVQ's tokens help, hurt or make no difference."""
    notes = []
    for k in sorted({size for _, size in groups}):
        if ("simvq", k) not in groups:
            continue
        for rival in method_order(m for m, size in groups if size == k and m != "simvq"):
            for column, title, scale, digits, lower in VERDICT_COLUMNS:
                a, b = stat(groups[("simvq", k)], column), stat(groups[(rival, k)], column)
                if a is None or b is None:
                    continue
                notes.append(f"{k_label(k)}, {title}: simvq {stat_text(a, scale, digits)} vs {rival} "
                             f"{stat_text(b, scale, digits)} → {verdict(a, b, scale=scale, digits=digits, lower=lower)}.")
    return notes or ["No K has priors on SimVQ tokens and on another tokenizer's tokens yet."]


def sample_grids(groups: dict, figures_dir: Path) -> list[tuple[str, Path]]:
    """Each (method, K)'s first seed's ``samples.png`` copied beside the other figures."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    grids = []
    for method, k in sorted(groups, key=lambda key: (key[1], method_key(key[0]))):
        runs = groups[(method, k)]
        first = runs[min(runs, key=lambda seed: number(seed) if number(seed) is not None else float("inf"))]
        source = Path(first.get("run_dir") or "") / "samples.png"
        if first.get("run_dir") and source.is_file():
            target = figures_dir / f"generation_samples_{method}_K{k}.png"
            shutil.copyfile(source, target)
            grids.append((f"{method}, {k_label(k)}, seed {first.get('seed')}", target))
    return grids


def header(groups: dict, results) -> list[str]:
    rows = [row for runs in groups.values() for row in runs.values()]  # superseded budgets left out
    seeds = {f"{m} {k_label(k)}": len(runs) for (m, k), runs in groups.items()}
    budgets = sorted({int(b) for r in rows if (b := number(r.get("steps"))) is not None})
    samples = sorted({int(n) for r in rows if (n := number(r.get("domain_fid_samples"))) is not None})
    fid = sorted({int(n) for r in rows if number(r.get("fid")) is not None and (n := number(r.get("fid_samples"))) is not None})
    floor = summarize(number(r.get("domain_fid_train")) for r in rows)
    hours = sum(number(r.get("train_seconds")) or 0.0 for r in rows) / 3600
    devices = ", ".join(sorted({r["device"] for r in rows if r.get("device")})) or MISSING
    return [
        f"Generated by `simvq report --generation` from `{results}`.",
        "",
        f"- Priors: {len(rows)}, of equal size; prior step budget(s): {', '.join(f'{b:,}' for b in budgets) or MISSING}; "
        f"devices: {devices}; {hours:.1f} h of prior training. Seeds: "
        + ", ".join(f"{name} {n}" for name, n in sorted(seeds.items())) + ".",
        f"- Domain FID: features of the project's Fashion-MNIST classifier, {', '.join(map(str, samples)) or MISSING} samples "
        f"against the test split (floor, real training images: {stat_text(floor, 1.0, 1)}). Class accuracy: that "
        "classifier on class-conditional samples. "
        + (f"FID: Inception features, {', '.join(map(str, fid))} samples." if fid else "Inception FID: not run."),
        "- Bits per token are on each tokenizer's own test tokens; their unigram entropy is what a prior that learned "
        "nothing scores, so compare the gap, not bits per token across tokenizers.",
        "- Cells: mean ± std over seeds (number of seeds).",
    ]


def render(rows: list[dict], results, figures_dir: Path, out_dir: Path) -> str:
    groups = group_rows(rows)
    body = [*header(groups, results), ""]
    for k in sorted({size for _, size in groups}):
        body += k_table(groups, k)
    body += ["### SimVQ's tokens against each tokenizer's (computed from the numbers)", "",
             *[f"- {note}" for note in findings(groups)], ""]
    grids = sample_grids(groups, figures_dir)
    if grids:
        body += ["### Samples", "", *[f"![{label}]({os.path.relpath(path, out_dir)})" for label, path in grids], ""]
    return f"{BEGIN}\n" + "\n".join(body) + f"\n{END}"





def write_generation_report(results: str | Path, out: str | Path = "docs/results.md", *,
                            figures_dir: str | Path = "docs/figures") -> Path:
    """``simvq bench generation``'s CSV -> the generation block of ``out`` (tables, verdicts, sample grids)."""
    rows = read_results(results)
    if not rows:
        raise ValueError(f"no results in {results}; run `simvq bench generation` first")
    out = Path(out)
    block = render(rows, results, Path(figures_dir), out.parent)
    atomic_write_text(out, splice(out, block, begin=BEGIN, end=END, heading=HEADING))
    return out
