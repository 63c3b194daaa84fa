"""A speech codec's quality over training, from the reconstructions its run wrote as it trained.

Every ``trainer.sample_every`` steps the audio recipe decodes the first ``eval.samples`` test utterances
into ``samples/step_<N>/`` (``NN_original.wav``, ``NN_reconstruction.wav``), and the finished run does
the same into ``samples/``. ``quality_curve`` scores each step's pairs with the evaluation's own PESQ
(P.862.2 wideband) and STOI, so a run's learning curve costs no extra training. ``projected_step``
extrapolates a curve to a target (e.g. PESQ 1.5): a least-squares line of the metric against log(step)
over the curve's second half, the usual shape of these curves once the fast start is over. It is a
projection, and is reported as one.

    python -m simvq.experiments.speech_curve runs/campaign/speech/runs/main/fsq-K4096-seed0-steps3000
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from pathlib import Path

import numpy as np

CURVE_FILE = "quality_curve.csv"
CURVE_FIELDS = ["step", "utterances", "pesq", "stoi"]
_STEP = re.compile(r"step_(\d+)$")


def sample_steps(run_dir: str | Path, final_step: int | None = None) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every set of reconstructions the run wrote, in step order; the final
    ``samples/`` counts as ``final_step`` when given (and no ``step_<final_step>`` exists)."""
    samples = Path(run_dir) / "samples"
    found = {int(m.group(1)): d for d in samples.glob("step_*") if d.is_dir() and (m := _STEP.search(d.name))}
    if final_step is not None and final_step not in found and any(samples.glob("*_reconstruction.wav")):
        found[final_step] = samples
    return sorted(found.items())


def score_directory(directory: Path, sample_rate: int) -> dict:
    """Mean PESQ and STOI over a directory's ``NN_original.wav`` / ``NN_reconstruction.wav`` pairs."""
    from ..data.speech.waveform import read_audio
    from ..metrics.audio import pesq_wideband, stoi

    pesqs, stois = [], []
    for original in sorted(directory.glob("*_original.wav")):
        reconstruction = original.with_name(original.name.replace("_original.wav", "_reconstruction.wav"))
        if not reconstruction.is_file():
            continue
        reference, degraded = read_audio(original, sample_rate), read_audio(reconstruction, sample_rate)
        pesqs.append(pesq_wideband(reference, degraded, sample_rate))
        stois.append(stoi(reference, degraded, sample_rate))
    if not pesqs:
        raise ValueError(f"{directory} holds no NN_original.wav / NN_reconstruction.wav pairs")
    return {"utterances": len(pesqs), "pesq": float(np.nanmean(pesqs)), "stoi": float(np.nanmean(stois))}


def quality_curve(run_dir: str | Path, *, sample_rate: int = 16000, final_step: int | None = None) -> list[dict]:
    """One row per step that wrote reconstructions: ``step``, ``utterances``, mean ``pesq`` and ``stoi``."""
    return [{"step": step, **score_directory(directory, sample_rate)} for step, directory in sample_steps(run_dir, final_step)]


def write_curve(rows: list[dict], path: str | Path) -> None:
    from ..utils import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CURVE_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({name: row[name] for name in CURVE_FIELDS} for row in rows)
    atomic_write_text(path, buffer.getvalue())


def projected_step(rows: list[dict], metric: str, target: float) -> float | None:
    """The step at which a line through ``metric`` against log(step), fitted to the curve's second half
    (at least 3 points), reaches ``target``: the curve's own last step when already there; None when the
    fit does not rise (no projection) or there are too few points."""
    points = [(row["step"], float(row[metric])) for row in rows if row["step"] > 0 and math.isfinite(float(row[metric]))]
    if points and points[-1][1] >= target:
        return float(points[-1][0])
    tail = points[len(points) // 2:]
    if len(tail) < 3:
        return None
    slope, intercept = np.polyfit(np.log([s for s, _ in tail]), [v for _, v in tail], 1)
    if slope <= 0:
        return None
    return float(math.exp((target - intercept) / slope))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="PESQ/STOI of a speech run's reconstructions at every sampled step")
    parser.add_argument("runs", nargs="+", help="audio run directories")
    parser.add_argument("--final-step", type=int, default=None, help="the step the final samples/ stand for")
    parser.add_argument("--sample-rate", type=int, default=16000)
    args = parser.parse_args(argv)
    for run in args.runs:
        rows = quality_curve(run, sample_rate=args.sample_rate, final_step=args.final_step)
        write_curve(rows, Path(run) / CURVE_FILE)
        for row in rows:
            print(f"{run}  step {row['step']:>6}  PESQ {row['pesq']:.3f}  STOI {row['stoi']:.3f}  ({row['utterances']} utterances)")
        for metric, target in (("pesq", 1.5), ("stoi", 0.80)):
            step = projected_step(rows, metric, target)
            projection = f"projected at step ~{step:,.0f}" if step else "no projection (under 3 points in the curve's second half, or no rise)"
            print(f"{run}  {metric.upper()} {target}: {projection}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
