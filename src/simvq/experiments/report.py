"""``simvq report``: results.csv -> markdown tables (mean +- std over seeds) and PNG plots.

The tables are laid out like the paper's Table 1 (one row per method, one column group per
codebook size); a findings paragraph is computed from the numbers, so what it says about
SimVQ's usage and plain VQ's collapse is always what the CSV holds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

from .sweep import read_results

BEGIN = "<!-- sweep-report:begin -->"
END = "<!-- sweep-report:end -->"
METRICS = [("usage", "usage %", 100.0), ("perplexity", "perplexity", 1.0), ("psnr", "PSNR", 1.0), ("ssim", "SSIM", 1.0), ("rfid", "rFID", 1.0)]


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def aggregate(rows: list[dict]) -> dict[tuple, dict]:
    """{(variant, method, K): {metric: (mean, std, n)}} over seeds (rows of the largest budget)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["variant"], row["method"], int(row["codebook_size"]), int(row["steps"]))].append(row)
    # keep the largest step budget per (variant, method, K)
    best: dict[tuple, tuple[int, list[dict]]] = {}
    for (variant, method, size, steps), members in groups.items():
        key = (variant, method, size)
        if key not in best or steps > best[key][0]:
            best[key] = (steps, members)
    table = {}
    for key, (steps, members) in best.items():
        stats = {"steps": steps, "seeds": len(members), "codes": members[0].get("codes", key[2])}
        for name in ["usage", "usage_cap", "perplexity", "psnr", "ssim", "rfid", "rfid_images"]:
            values = [v for v in (_number(m.get(name)) for m in members) if v is not None]
            if values:
                stats[name] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
        table[key] = stats
    return table


def _cell(stats: dict, name: str, scale: float) -> str:
    if name not in stats:
        return "–"
    mean, std, count = stats[name]
    digits = 3 if name == "ssim" else 1
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if count > 1 else "")


def markdown_table(table: dict, variant: str = "main") -> str:
    methods = sorted({m for (v, m, _) in table if v == variant}, key=lambda m: (m != "simvq", m))
    sizes = sorted({k for (v, _, k) in table if v == variant})
    if not methods:
        return "_no runs_\n"
    lines = []
    for name, label, scale in METRICS:
        lines.append(f"**{label}**" + (" (usage over all test tokens; the cap is 1 − exp(−N/K) for N tokens)" if name == "usage" else ""))
        lines.append("")
        lines.append("| method | " + " | ".join(f"K={k:,}" for k in sizes) + " |")
        lines.append("|---|" + "---|" * len(sizes))
        for method in methods:
            cells = [_cell(table[(variant, method, k)], name, scale) if (variant, method, k) in table else "–" for k in sizes]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if name == "usage":
            caps = []
            for k in sizes:
                cap = next((table[key]["usage_cap"][0] for key in table if key[0] == variant and key[2] == k and "usage_cap" in table[key]), None)
                caps.append(f"{100 * cap:.1f}" if cap is not None else "–")
            lines.append("| *sampling cap* | " + " | ".join(caps) + " |")
        lines.append("")
    return "\n".join(lines)


def findings(table: dict) -> list[str]:
    """Plain statements computed from the table: the paper's usage claim and the collapse of VQ."""
    notes = []
    simvq = {k: s for (v, m, k), s in table.items() if v == "main" and m == "simvq" and "usage" in s}
    vq = {k: s for (v, m, k), s in table.items() if v == "main" and m == "vq" and "usage" in s}
    for k in sorted(simvq):
        usage, cap = simvq[k]["usage"][0], simvq[k].get("usage_cap", (1.0,))[0]
        verdict = "keeps" if usage >= 0.99 else "does NOT keep"
        notes.append(f"SimVQ at K={k:,} {verdict} ≥ 99% usage: {100 * usage:.1f}% of codes used over the test set (sampling cap {100 * cap:.1f}%).")
    collapsed = [k for k in sorted(vq) if vq[k]["usage"][0] < 0.1]
    if vq:
        notes.append(
            "Plain VQ usage: " + ", ".join(f"K={k:,}: {100 * vq[k]['usage'][0]:.1f}%" for k in sorted(vq))
            + (f" — collapsed (< 10% of codes) from K={collapsed[0]:,}." if collapsed else ".")
        )
    best_psnr = defaultdict(list)
    for (variant, method, k), stats in table.items():
        if variant == "main" and "psnr" in stats:
            best_psnr[k].append((stats["psnr"][0], method))
    for k in sorted(best_psnr):
        ranked = sorted(best_psnr[k], reverse=True)
        position = [m for _, m in ranked].index("simvq") + 1 if any(m == "simvq" for _, m in ranked) else None
        if position is not None:
            notes.append(f"PSNR at K={k:,}: SimVQ ranks {position} of {len(ranked)} (best: {ranked[0][1]} {ranked[0][0]:.2f} dB).")
    return notes


def plots(table: dict, rows: list[dict], figures_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures_dir.mkdir(parents=True, exist_ok=True)
    written = []
    methods = sorted({m for (v, m, _) in table if v == "main"}, key=lambda m: (m != "simvq", m))
    for name, label, scale in [("usage", "codebook usage (%)", 100.0), ("psnr", "PSNR (dB)", 1.0), ("rfid", "rFID", 1.0)]:
        figure, axis = plt.subplots(figsize=(6.5, 4.2))
        for method in methods:
            points = sorted((k, s[name]) for (v, m, k), s in table.items() if v == "main" and m == method and name in s)
            if not points:
                continue
            sizes = [k for k, _ in points]
            means = [stat[0] * scale for _, stat in points]
            stds = [stat[1] * scale for _, stat in points]
            style = dict(linewidth=2.5, color="black") if method == "simvq" else dict(linewidth=1.2, alpha=0.85)
            axis.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=method, **style)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("codebook size K")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=2)
        path = figures_dir / f"sweep_{name}_vs_k.png"
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)

    # usage over training steps, from the run directories' histories (largest K per method, seed 0)
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    largest = {}
    for row in rows:
        if row["variant"] == "main" and row["seed"] == "0":
            if row["method"] not in largest or int(row["codebook_size"]) > int(largest[row["method"]]["codebook_size"]):
                largest[row["method"]] = row
    for method in methods:
        row = largest.get(method)
        history = Path(row["run_dir"]) / "usage_history.json" if row else None
        if history is None or not history.is_file():
            continue
        points = json.loads(history.read_text())
        steps = [p.get("step") for p in points]
        usage = [100 * p.get("usage", float("nan")) for p in points]
        style = dict(linewidth=2.5, color="black") if method == "simvq" else dict(linewidth=1.2)
        axis.plot(steps, usage, label=f"{method} (K={int(row['codebook_size']):,})", **style)
    axis.set_xlabel("training step")
    axis.set_ylabel("batch codebook usage (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    path = figures_dir / "sweep_usage_over_steps.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    return written


def ablation_table(table: dict) -> str:
    variants = sorted({v for (v, _, _) in table if v != "main"})
    if not variants:
        return ""
    lines = ["| variant | method | K | usage % | PSNR | SSIM | rFID |", "|---|---|---|---|---|---|---|"]
    reference = sorted((k, m) for (v, m, k) in table if v == "main" and m in ("simvq", "vq"))
    for variant in ["main", *variants]:
        for (v, method, k), stats in sorted(table.items()):
            if v != variant or (variant == "main" and (k, method) not in reference):
                continue
            label = "baseline (d=64, gaussian C, W with bias, lr 1e-3)" if variant == "main" else variant
            lines.append(
                f"| {label} | {method} | {k:,} | {_cell(stats, 'usage', 100.0)} | {_cell(stats, 'psnr', 1.0)} | "
                f"{_cell(stats, 'ssim', 1.0)} | {_cell(stats, 'rfid', 1.0)} |"
            )
    return "\n".join(lines) + "\n"


def write_report(results: str | Path, out: str | Path = "docs/results.md", *, figures_dir: str | Path = "docs/figures") -> Path:
    rows = read_results(results)
    if not rows:
        raise ValueError(f"no results in {results}; run `simvq bench image` first")
    table = aggregate(rows)
    out, figures_dir = Path(out), Path(figures_dir)
    figure_paths = plots(table, rows, figures_dir)
    budgets = sorted({int(r["steps"]) for r in rows})
    fid_sizes = sorted({int(float(r["rfid_images"])) for r in rows if _number(r.get("rfid_images"))})
    seeds = sorted({r["seed"] for r in rows})
    body = [
        f"Generated by `simvq report` from `{results}` ({len(rows)} runs; step budget(s) {budgets}; "
        f"seeds {', '.join(seeds)}; rFID on {fid_sizes or 'no'} test images). Mean ± std over seeds where there are several.",
        "",
        "### Findings (computed from the table)",
        "",
        *[f"- {note}" for note in findings(table)],
        "",
        "### Comparison (Fashion-MNIST test set)",
        "",
        markdown_table(table),
    ]
    ablations = ablation_table(table)
    if ablations:
        body += ["### Ablations", "", ablations]
    relative = [os.path.relpath(p, out.parent) for p in figure_paths]
    body += ["### Plots", "", *[f"![{Path(p).stem}]({p})" for p in relative], ""]
    block = f"{BEGIN}\n" + "\n".join(body) + f"\n{END}"
    content = out.read_text() if out.is_file() else "# Results\n"
    if BEGIN in content:
        head, rest = content.split(BEGIN, 1)
        content = head + block + rest.split(END, 1)[1]
    else:
        content = content.rstrip() + "\n\n## Comparison sweep (`simvq bench image`, `simvq report`)\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(content)
    os.replace(tmp, out)
    return out
