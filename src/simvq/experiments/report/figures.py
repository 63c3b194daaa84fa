"""The page's PNGs: usage and PSNR against K, and learning curves (the runs' progress checks) with
one figure per K, so curves of different codebooks never share axes."""

from __future__ import annotations

import statistics
from pathlib import Path

from ...utils import pyplot, read_json, save_figure
from .aggregate import Group, columns_of, main_groups, method_order, number, summarize, values_at
from .tables import k_label


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
    """Seed means ± std against K on the default token grid (finer-grid runs are their own columns)."""
    figure, axis = pyplot().subplots(figsize=(6.5, 4.2))
    sizes = [c for c in columns_of(main) if isinstance(c, int)]
    for method in method_order(m for m, _ in main):
        points = [(k, main[(method, k)].stat(column)) for k in sizes if (method, k) in main and main[(method, k)].stat(column)]
        if points:
            axis.errorbar([k for k, _ in points], [s.mean * scale for _, s in points], yerr=[s.std * scale for _, s in points],
                          marker="o", capsize=3, label=method, **line_style(method))
    reference = [(k, summarize(values_at(main, k, "usage_reference"))) for k in sizes]
    reference = [(k, s) for k, s in reference if s]
    if column == "usage" and reference:
        axis.plot([k for k, _ in reference], [100 * s.mean for _, s in reference], "k--", linewidth=1, label="untrained reference")
    if not axis.lines:
        pyplot().close(figure)
        return None
    axis.set_xscale("log", base=2)
    return save(figure, axis, path, "codebook size K", ylabel)


def load_curves(path: Path) -> dict:
    return read_json(path, {})


def curve_key(row: dict) -> str:
    return f"{row.get('variant') or 'main'}/{row['method']}/K{int(number(row['codebook_size']))}/seed{row.get('seed', '')}"


def seed_mean(series: list[list[dict]], column: str) -> tuple[list, list, list]:
    """Mean and std over seeds at the steps every seed reached."""
    by_seed = [{p["step"]: number(p.get(column)) for p in points if number(p.get(column)) is not None} for points in series]
    steps = sorted(set.intersection(*(set(values) for values in by_seed)))
    values = [[seed[step] for seed in by_seed] for step in steps]
    return steps, [statistics.fmean(v) for v in values], [statistics.pstdev(v) for v in values]


def plot_over_steps(main: dict[tuple, Group], curves: dict, column_k, column: str, ylabel: str, scale: float, path: Path) -> Path | None:
    figure, axis = pyplot().subplots(figsize=(6.5, 4.2))
    for method in method_order(m for m, c in main if c == column_k):
        series = [curves[curve_key(r)] for r in main[(method, column_k)].rows if curve_key(r) in curves]
        steps, mean, std = seed_mean(series, column) if series else ([], [], [])
        if not steps:
            continue
        axis.plot(steps, [m * scale for m in mean], label=f"{method} ({len(series)} seed{'s' * (len(series) > 1)})", **line_style(method))
        if len(series) > 1:
            axis.fill_between(steps, [(m - s) * scale for m, s in zip(mean, std)], [(m + s) * scale for m, s in zip(mean, std)],
                              alpha=0.15, color=axis.lines[-1].get_color())
    if not axis.lines:
        pyplot().close(figure)
        return None
    axis.set_title(k_label(column_k))
    return save(figure, axis, path, "training step", ylabel)


def slug(column_k) -> str:
    return f"K{column_k}" if isinstance(column_k, int) else f"K{column_k[0]}_{column_k[1]}"


def figures(groups: dict[tuple, Group], curves: dict, figures_dir: Path, windows: dict | None = None) -> list[Path]:
    """Usage and PSNR against K; per K, the progress checks' usage and PSNR over steps, and the usage
    of the training run's own logging windows (``windows``: ``curve_key`` -> its windows) over steps."""
    main, windows = main_groups(groups), windows or {}
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_vs_k(main, "usage", "codebook usage (%)", 100.0, figures_dir / "sweep_usage_vs_k.png"),
        plot_vs_k(main, "psnr", "PSNR (dB)", 1.0, figures_dir / "sweep_psnr_vs_k.png"),
    ]
    for column_k in columns_of(main):
        for column, ylabel, scale in (("usage", "usage over the check images (%)", 100.0), ("psnr", "PSNR on the check images (dB)", 1.0)):
            paths.append(plot_over_steps(main, curves, column_k, column, ylabel, scale, figures_dir / f"sweep_{column}_over_steps_{slug(column_k)}.png"))
        counted = {p["tokens"] for (_, c), g in main.items() if c == column_k for r in g.rows for p in windows.get(curve_key(r), [])[-1:]}
        if counted:
            tokens = " or ".join(f"{t:,}" for t in sorted(counted))
            paths.append(plot_over_steps(main, windows, column_k, "usage", f"usage per training window of {tokens} tokens (%)", 100.0,
                                         figures_dir / f"sweep_window_usage_over_steps_{slug(column_k)}.png"))
    return [p for p in paths if p]
