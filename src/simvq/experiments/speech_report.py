"""The speech section of ``simvq report``: ``simvq bench audio``'s CSV -> a table per K, SimVQ-versus-
each-method verdicts computed from the numbers, every run's codebook usage over training (so a reader
sees whether it had levelled off at the budget) and every method's first-seed spectrogram of the same
test utterance (so the reconstructions can be compared by eye).

Codecs of equal size trained for the same step budget are compared on codebook usage (over every
token of the test split, so the token count is shown beside it) and on what the decoded speech
scores: PESQ, STOI, log-mel distance and DNSMOS overall quality (when it was installed). Every verdict is
Welch's t-test over seeds (two-sided, alpha 0.05); with one seed on a side the text says it is one run.
The header states the protocol the numbers depend on, read from each run's files: whether its codec
trained against the discriminators (and from which step), what ``loss.quantizer_weight`` multiplies
for each method (FSQ has no quantizer loss), and which floor its log-mel distance used.

The quality target (PESQ >= 1.5 and STOI >= 0.80 for the best single-codebook codec at K=4,096) is
stated against what was reached, with the learning curve of the reconstructions each run wrote while
training (``simvq.experiments.speech_curve``) and the step count its log-linear fit projects. A run
whose directory is gone is read from the copy of its small files a campaign keeps beside the CSV
(``runs/<variant>-<method>-K<k>-seed<s>-steps<n>/``). ``simvq report --speech`` also writes the
listening page beside the CSV (``simvq.experiments.listening``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

from . import results_file
from .comparison import figure_section, group_rows, k_table, rival_summaries, run_figures, simvq_verdicts, sizes, write_section
from .report import MISSING, k_label, method_order, number, odd_codebooks, span, stat_text, summarize, whole
from .results_file import LEDGER, precision_text, run_file, spend_text
from .speech_curve import CURVE_FILE, projected_step

BEGIN = "<!-- speech-report:begin -->"
END = "<!-- speech-report:end -->"
HEADING = "## Speech codec benchmark (`simvq bench audio`, `simvq report --speech`)"

# (column, title, scale, decimals, lower is better; None: not a score) of the per-K table
COLUMNS = [
    ("usage", "usage %", 100.0, 1, False),
    ("tokens", "tokens counted", 1.0, 0, None),
    ("pesq", "PESQ", 1.0, 2, False),
    ("stoi", "STOI", 1.0, 3, False),
    ("mel_distance", "mel distance", 1.0, 3, True),
    ("dnsmos_ovrl", "DNSMOS OVRL", 1.0, 2, False),
]
QUALITY = [c for c in COLUMNS if c[0] != "usage"]  # what the codec's question is about
SPECTROGRAM = "samples/00_spectrogram.png"  # the first test utterance, original above its reconstruction
TARGETS = {"pesq": 1.5, "stoi": 0.80}  # what the best single-codebook codec at TARGET_K should reach
TARGET_K = 4096
PROJECTION_LIMIT = 100  # a projection beyond this many times the steps trained is no projection
Kept = Callable[[dict], Path] | None


def kept_folder(results: str | Path) -> Callable[[dict], Path]:
    """Where a campaign keeps a speech run's small files, beside the results CSV."""
    return results_file.kept_folder(Path(results).parent / "runs", variant=lambda row: results_file.variant_folder(row.get("variant") or "main"),
                                    budget="max_steps")


def findings(groups: dict) -> list[str]:
    return simvq_verdicts(groups, COLUMNS) or ["No K has a SimVQ codec and another method's yet."]


def counted_splits(rows: list[dict], kept: Kept = None) -> str:
    """The splits the rows' usage counts (each run's ``metrics.json``: ``eval.usage_splits``; test
    alone when a run recorded none), in words."""
    seen = set()
    for row in rows:
        splits = _run_file(row, "metrics.json", kept).get("usage_splits", ["test"])
        seen.add(" + ".join(splits))
    return " / ".join(f"the {s} split{'s' if '+' in s else ''}" for s in sorted(seen))


# what loss.quantizer_weight multiplies, per method of the speech bench (out.loss of each quantizer;
# tests/test_audio_codec.py checks these against MSE(z, q) by hand)
QUANTIZER_LOSSES = {
    "simvq": "0.25 MSE pulling the encoder to its code + MSE pulling the code (its projection W) to the encoder",
    "vq": "0.25 MSE pulling the encoder to its code + MSE pulling the code to the encoder",
    "vq_ema": "0.25 MSE pulling the encoder to its code (the codes move by EMA)",
    "fsq": "nothing: FSQ has no quantizer loss, its encoder learns from the reconstruction alone",
}


def _run_file(row: dict, name: str, kept: Kept = None) -> dict:
    path = run_file(row, name, kept)
    return json.loads(path.read_text()) if path is not None else {}


def fixed_precision(rows: list[dict], kept: Kept = None) -> str | None:
    """The network's precision when every row's recipe (its ``config.json``) fixed one and it is the same
    (the audio recipe's ``trainer.precision: 32``), else None ("auto" follows the machine)."""
    chosen = {_run_file(row, "config.json", kept).get("trainer", {}).get("precision") for row in rows}
    return str(chosen.pop()) if len(chosen) == 1 and None not in chosen and "auto" not in chosen else None


def protocol(rows: list[dict], kept: Kept = None) -> list[str]:
    """Header lines on how the rows' codecs were trained and measured, from their ``config.json`` and
    ``metrics.json`` (a run without the file is left out of the count)."""
    losses, gan = {}, {}
    for row in rows:
        loss = _run_file(row, "config.json", kept).get("loss")
        if loss is not None:
            losses.setdefault(loss.get("quantizer_weight"), set()).add(row.get("method"))
            key = f"on from step {loss.get('discriminator_start', 0)}" if loss.get("discriminator") else "off"
            gan[key] = gan.get(key, 0) + 1
    floors = {}
    for row in rows:
        metrics = _run_file(row, "metrics.json", kept)
        if metrics:
            floor = metrics.get("mel_floor_dbfs")  # absent: evaluated before the floor existed
            label = f"each mel band floored at its response to white noise at {floor:g} dBFS" if floor is not None else "the old absolute 1e-5 floor"
            floors[label] = floors.get(label, 0) + 1
    methods = method_order({row.get("method") for row in rows if row.get("method") in QUANTIZER_LOSSES})
    weights = " / ".join(f"{weight:g}" for weight in sorted(w for w in losses if w is not None))
    lines = [f"- Quantizer loss: `loss.quantizer_weight`{f' ({weights})' if weights else ''} times each method's own: "
             + "; ".join(f"{method}: {QUANTIZER_LOSSES[method]}" for method in methods) + "." if methods else None]
    if gan:
        lines.append("- Discriminators (multi-period + multi-resolution, feature matching): "
                     + "; ".join(f"{state} ({count} run{'s' if count > 1 else ''})" for state, count in sorted(gan.items())) + ".")
    if floors:
        mixed = " Distances under different floors are not comparable." if len(floors) > 1 else ""
        lines.append("- Mel distance: " + "; ".join(f"{label} ({count} run{'s' if count > 1 else ''})" for label, count in floors.items())
                     + f" (simvq.data.spectral).{mixed}")
    return [line for line in lines if line]


def header(groups: dict, results, kept: Kept = None) -> list[str]:
    rows = [row for runs in groups.values() for row in runs.values()]  # superseded budgets left out
    budgets = span((number(r.get("max_steps")) for r in rows), whole)
    short = [r for r in rows if number(r.get("steps")) != number(r.get("max_steps"))]
    seconds = span((number(r.get("seconds_per_step")) for r in rows), lambda v: f"{v:.2f}")
    hours = sum(number(r.get("train_seconds")) or 0.0 for r in rows) / 3600
    devices = ", ".join(sorted({r["device"] for r in rows if r.get("device")})) or MISSING
    ceiling = span((number(r.get("dnsmos_ovrl_reference")) for r in rows), lambda v: f"{v:.2f}")
    ratio = ", ".join(f"{span(number(r.get('tokens_per_code')) for r in rows if number(r.get('codebook_size')) == k)} at {k_label(k)}"
                      for k in sizes(groups))
    odd = odd_codebooks(rows)
    capped, references = [], []  # capped: fewer test tokens than codes (a capped evaluation at large K)
    for k in sizes(groups):
        at_k = [r for r in rows if number(r.get("codebook_size")) == k and number(r.get("tokens_per_code")) is not None]
        # what usage an untrained quantizer shows at this N/K: at few tokens a code, ~100% is out of reach
        if values := [100 * v for r in at_k if (v := number(r.get("usage_reference"))) is not None]:
            references.append(f"{span(values, lambda v: f'{v:.1f}')}% at {k_label(k)}")
        if at_k and max(number(r.get("tokens_per_code")) for r in at_k) < 1:
            capped.append(f"{span((100 * number(r.get('tokens_per_code')) for r in at_k), lambda v: f'{v:.1f}')}% at {k_label(k)}")
    reference = (f" An untrained quantizer (Gaussian codes and tokens in the quantizer's dimension) at the same K and token count "
                 f"uses {', '.join(references)} of its codes." if references else "")
    ceilings = f" Fewer test tokens than codes cap usage at tokens / codes: {'; '.join(capped)}." if capped else ""
    return [
        f"Generated by `simvq report --speech` from `{results}`.",
        "",
        f"- Budget: every codec trained for {budgets} steps (the audio recipe has no plateau criterion: each run "
        f"trains to the cap{f'; {len(short)} run(s) stopped short of it' if short else ''}). Runs: {len(rows)}; "
        f"devices: {devices}; {seconds} s per step; {hours:.1f} h of training in total; "
        f"{precision_text(rows, fixed=fixed_precision(rows, kept))}.",
        f"- Usage: codes used over every token of {counted_splits(rows, kept)} (tokens counted in the table; tokens per code: {ratio})"
        + (f"; methods whose codebook is not K codes: {odd}." if odd else ".") + reference + ceilings,
        "- PESQ (wideband), STOI and log-mel distance compare each test utterance with its reconstruction; "
        + (f"DNSMOS OVRL scores the reconstruction alone (the test utterances themselves: {ceiling})."
           if any(number(r.get("dnsmos_ovrl")) is not None for r in rows) else "DNSMOS: not measured (eval.dnsmos off, or speechmos/onnxruntime absent)."),
        *protocol(rows, kept),
        *([f"- {spent}"] if (spent := spend_text(Path(results).parent / LEDGER)) else []),
        "- Cells: mean ± std over seeds (number of seeds).",
    ]


def usage_figures(groups: dict, figures_dir: Path, kept: Kept = None) -> list[tuple[str, Path]]:
    """Per K, every run's ``usage_history.json`` (the usage of each logging window's tokens) as lines of
    one PNG ``speech_usage_over_steps_K<k>.png``; ``(label, path)`` of those written (runs without a
    history are left out, and a K with none gets no figure)."""
    from ..runs import read_usage_history
    from ..train import plots  # matplotlib and torch: only when there is a figure to draw

    written = []
    for k in sizes(groups):
        histories = {}
        for method in method_order(m for m, size in groups if size == k):
            for seed, row in sorted(groups[(method, k)].items(), key=lambda item: number(item[0]) or 0):
                path = run_file(row, "usage_history.json", kept)
                if path is not None and (history := read_usage_history(path.parent)) is not None:
                    histories[f"{method} seed {seed}"] = history
        if histories:
            target = figures_dir / f"speech_usage_over_steps_K{k}.png"
            plots.usage_over_steps(histories, target)
            written.append((f"usage per logging window during training, {k_label(k)}", target))
    return written


def read_curve(row: dict, kept: Kept = None) -> list[dict] | None:
    path = run_file(row, CURVE_FILE, kept)
    if path is None:
        return None
    with path.open(newline="") as handle:
        return [{**r, "step": int(r["step"])} for r in csv.DictReader(handle)]


FLOOR_MARGIN = 0.25  # means within this of the P.862.2 floor (raw 0) are said to sit where PESQ separates codecs little


def pesq_mos(raw: float) -> float:
    """ITU-T P.862.2's mapping of a raw PESQ score to wideband MOS-LQO (what the ``pesq`` package reports)."""
    return 0.999 + (4.999 - 0.999) / (1 + math.exp(-1.3669 * raw + 3.8224))


def projection(curve: list[dict], metric: str, target: float) -> tuple[float | None, str]:
    """Where a line in log(step) through the curve's second half reaches ``target``: the step (None
    when there is no projection, or it lies beyond ``PROJECTION_LIMIT`` x the steps trained) and in words."""
    step = projected_step(curve, metric, target)
    if step is None:
        return None, "not projected (its second half has under 3 points or does not rise)"
    if step > PROJECTION_LIMIT * curve[-1]["step"]:
        return None, f"not within {PROJECTION_LIMIT}x the steps trained (the second half of the curve is nearly flat)"
    return step, f"at step ~{step:,.0f}"


def quality_target(groups: dict, figures_dir: Path, out_dir: Path, kept: Kept = None) -> list[str]:
    """The best codec at TARGET_K against the target, its runs' learning curves and their projections."""
    import os

    from ..train import plots

    at_k = {m: runs for (m, k), runs in groups.items() if k == TARGET_K}
    scored = {m: stat for m, runs in at_k.items() if (stat := summarize(number(r.get("pesq")) for r in runs.values())) is not None}
    if not scored:
        return []
    best = max(scored, key=lambda m: scored[m].mean)
    stoi = summarize(number(r.get("stoi")) for r in at_k[best].values())
    reached = scored[best].mean >= TARGETS["pesq"] and stoi is not None and stoi.mean >= TARGETS["stoi"]
    low, high = min(s.mean for s in scored.values()), max(s.mean for s in scored.values())
    lines = ["### Quality against the target", "",
             f"- The highest mean PESQ at {k_label(TARGET_K)} is **{best}**'s (whether it is above the others is the tests' "
             f"word, above): PESQ {stat_text(scored[best], 1.0, 2)}, "
             f"STOI {stat_text(stoi, 1.0, 3)}, against the target PESQ ≥ {TARGETS['pesq']:g} and STOI ≥ {TARGETS['stoi']:.2f}: "
             + ("**reached**." if reached else "**not reached** at this budget."),
             f"- The PESQ scale's floor: the wideband mapping (ITU-T P.862.2) sends raw scores of −0.5 and 0 to "
             f"{pesq_mos(-0.5):.2f} and {pesq_mos(0.0):.2f}, and the codecs' means ({low:.2f}–{high:.2f}) sit "
             + (f"only {low - pesq_mos(0.0):.2f}–{high - pesq_mos(0.0):.2f} above the latter, where PESQ tells codecs apart "
                "little: STOI and the mel distance carry more of the ranking." if high - pesq_mos(0.0) < FLOOR_MARGIN else
                f"{low - pesq_mos(0.0):.2f}–{high - pesq_mos(0.0):.2f} above the latter.")]
    curves, rows = {}, {}
    for method in method_order(at_k):
        for seed, row in sorted(at_k[method].items(), key=lambda item: number(item[0]) or 0):
            if (curve := read_curve(row, kept)):
                curves[f"{method} seed {seed}"], rows[f"{method} seed {seed}"] = curve, row
    for name, curve in curves.items():
        if not name.startswith(f"{best} "):
            continue
        last, row = curve[-1], rows[name]
        projections = []
        for metric, target in TARGETS.items():
            step, where = projection(curve, metric, target)
            test = number(row.get(metric))
            offset = float(last[metric]) - test if test is not None and last["step"] == number(row.get("max_steps")) else None
            if step is not None and offset is not None and abs(offset) >= 0.0005:  # the test voices sit off the curve's few utterances: shift the target
                where += (f" (the test utterances score {test:.3f} at that step, {abs(offset):.3f} {'below' if offset > 0 else 'above'} "
                          f"the curve; shifted by that, {projection(curve, metric, target + offset)[1]})")
            projections.append(f"{metric.upper()} {target:g} {where}")
        lines.append(f"- {name}: at step {last['step']:,} its {last['utterances']} curve utterances score PESQ {float(last['pesq']):.2f}, "
                     f"STOI {float(last['stoi']):.3f}; a line in log(step) through the curve's second half projects " + "; ".join(projections)
                     + ". A projection, not a measurement.")
    if curves:
        target = figures_dir / f"speech_quality_over_steps_K{TARGET_K}.png"
        plots.quality_over_steps(curves, target, targets=TARGETS)
        lines += ["", f"![PESQ and STOI over training, {k_label(TARGET_K)}]({os.path.relpath(target, out_dir)})"]
    return [*lines, ""]


def render(rows: list[dict], results, figures_dir: Path, out_dir: Path) -> list[str]:
    groups = group_rows(rows, budget="max_steps")
    kept = kept_folder(results)
    body = [*header(groups, results, kept), ""]
    for k in sizes(groups):
        body += k_table(groups, k, COLUMNS)
    body += ["### The question, answered from the numbers", "",
             "Does SimVQ's fuller use of the codebook buy quality over VQ and EMA-VQ at an equal budget, and where does "
             "FSQ stand? Each method against SimVQ on the quality measures:", "",
             *[f"- {note}" for note in rival_summaries(groups, QUALITY)], ""]
    body += ["### SimVQ against each method (computed from the numbers)", "", *[f"- {note}" for note in findings(groups)], ""]
    body += quality_target(groups, figures_dir, out_dir, kept)
    body += figure_section("Usage during training (each point: the codes hit by one logging window's tokens)",
                           usage_figures(groups, figures_dir, kept), out_dir)
    figures = run_figures(groups, figures_dir, source=SPECTROGRAM, name="speech_spectrogram_{method}_K{k}.png", kept=kept)
    return body + figure_section("Spectrograms (first test utterance: original above, reconstruction below)", figures, out_dir)


def write_speech_report(results: str | Path, out: str | Path = "docs/results.md", *,
                        figures_dir: str | Path = "docs/figures") -> Path:
    """``simvq bench audio``'s CSV -> the speech block of ``out`` (tables, verdicts, spectrograms)."""
    return write_section(results, out, figures_dir, render=render, markers=(BEGIN, END), heading=HEADING,
                         option="--speech", command="simvq bench audio")
