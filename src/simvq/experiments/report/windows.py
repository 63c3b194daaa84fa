"""Usage in each run's own logging windows during training (``usage_history.json``: the codes hit by
one window's training tokens, every window counting the same number of tokens). At large K the
progress checks count too few tokens a code to follow usage; two windows of the same count still
compare, so the window at 80% of the budget against the last says how much usage still moved."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...runs.files import USAGE_HISTORY_FILE
from ...utils import read_json
from ..results_file import kept_folder, run_file, variant_folder
from .aggregate import Stat, step_cap, summarize
from .figures import curve_key

LAST_SHARE = 0.2  # the share of the budget whose change a row reports, as the progress checks do


def image_kept(folder: str | Path) -> Callable[[dict], Path]:
    """``row -> <folder>/<variant>-<method>-K<k>-seed<s>-steps<budget>/``: a campaign's kept copies
    of an image row's small files."""
    return kept_folder(folder, variant=lambda row: variant_folder(row.get("variant") or "main"), budget="max_steps")


def read_windows(rows: list[dict], kept: Callable[[dict], Path] | None = None) -> dict[str, list[dict]]:
    """``curve_key(row)`` -> its logging windows in step order (one point a step), for the rows whose
    run directory or kept copy holds them, and whose method's windows count its nearest codes."""
    windows = {}
    for row in rows:
        path = run_file(row, USAGE_HISTORY_FILE, kept) if counts_nearest_codes(row["method"]) else None
        points = read_json(path) if path is not None else None
        if points:
            windows[curve_key(row)] = sorted({p["step"]: p for p in points}.values(), key=lambda p: p["step"])
    return windows


def last_change(points: list[dict], budget: float) -> tuple[float, int] | None:
    """(usage in the last window minus usage in the last window at or before 80% of ``budget``, the
    tokens each counted); None without both windows, or when they counted different numbers of tokens."""
    before = [p for p in points if p["step"] <= (1 - LAST_SHARE) * budget]
    if not before or points[-1]["step"] < budget or before[-1]["tokens"] != points[-1]["tokens"]:
        return None
    return points[-1]["usage"] - before[-1]["usage"], int(points[-1]["tokens"])


def counts_nearest_codes(method: str) -> bool:
    """Whether a method's training windows count its nearest codes (not a sample, as HQA's do); a
    name this version does not register is taken to."""
    from ...quantizers import list_quantizers, sampled_training_codes

    return method not in list_quantizers() or not sampled_training_codes(method)


def group_change(rows: list[dict], windows: dict[str, list[dict]]) -> tuple[Stat, int] | None:
    """The seeds' window change over the last 20% (points of usage as a fraction) and the tokens a
    window counted; None when no seed has it."""
    found = [change for r in rows if curve_key(r) in windows and (budget := step_cap(r))
             and (change := last_change(windows[curve_key(r)], budget)) is not None]
    stat = summarize(change for change, _ in found)
    return (stat, found[0][1]) if stat else None


__all__ = ["LAST_SHARE", "counts_nearest_codes", "group_change", "image_kept", "last_change", "read_windows"]
