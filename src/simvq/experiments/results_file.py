"""The results CSV every benchmark appends to, one row per finished run (resumable: rows are never lost),
and where a campaign keeps each row's small files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

from ..utils import atomic_write_text, read_json


def read_results(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def append_result(path: str | Path, row: dict, *, fields: list[str]) -> None:
    """Append one row; the file is rewritten through a temp file so a kill never leaves half a row."""
    write_results(path, read_results(path) + [row], fields=fields)


def write_results(path: str | Path, rows: list[dict], *, fields: list[str]) -> None:
    """``rows`` (each with ``fields``, blank where missing) as the whole CSV file, atomically."""
    rows = [{name: row.get(name, "") for name in fields} for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


LEDGER = "spend.csv"  # a campaign's spend ledger: one line per landed run (run, cpu_seconds, wall_seconds, finished)
BUDGET = "budget.json"  # beside a ledger: the campaign's cap and the CPU-hours it spent before the ledger existed
REFERENCE = "reference-"  # a ledger line's prefix for a reference measurement, not a run (e.g. an untrained quantizer's usage)
LOST = "lost-"  # a ledger line's prefix for a run's CPU lost in flight (a new machine): spent, with no row
PROBE = "probe-"  # a ledger line's prefix for a short timing run that plans a campaign's costs: spent, with no row
IN_FLIGHT = "in_flight.csv"  # beside a ledger: runs a stopped stream left part-trained, not landed
IN_FLIGHT_FIELDS = ["run", "cpu_seconds", "steps"]


def in_flight_cpu_hours(ledger: str | Path, *, landed: set[str] = frozenset()) -> float:
    """The checkpointed CPU-hours of the part-trained runs listed beside ``ledger`` (none landed in
    ``landed``, their slugs): spent already, and charged to the ledger when each lands or is lost."""
    path = Path(ledger).with_name(IN_FLIGHT)
    entries = read_results(path) if path.is_file() else []
    return sum(float(e["cpu_seconds"]) for e in entries if e["run"] not in landed) / 3600


def spend_text(ledger: str | Path) -> str | None:
    """The CPU time a campaign's ledger records, in words for a report's header; None without one."""
    entries = [e for e in read_results(ledger) if e.get("cpu_seconds")]
    if not entries:
        return None
    hours = sum(float(e["cpu_seconds"]) for e in entries) / 3600
    references = sum(e["run"].startswith(REFERENCE) for e in entries)
    lost = [float(e["cpu_seconds"]) for e in entries if e["run"].startswith(LOST)]
    probes = sum(e["run"].startswith(PROBE) for e in entries)
    runs = [e["run"] for e in entries if not e["run"].startswith((REFERENCE, LOST, PROBE))]
    repeats = len(runs) - len(set(runs))  # a run measured again (after a correction): its first try's CPU stays spent
    parts = [f"{len(runs)} landed run{'s' * (len(runs) != 1)}"] + [f"{references} reference measurement{'s' * (references > 1)}"] * bool(references)
    parts += [f"{len(lost)} run{'s' * (len(lost) > 1)} lost in flight"] * bool(lost)
    parts += [f"{probes} cost probe{'s' * (probes > 1)} (short timing runs that set a plan's estimates)"] * bool(probes)
    over = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
    again = (f" {repeats} of the runs {'are first tries' if repeats > 1 else 'is the first try'} of a run measured again, "
             f"{'their rows' if repeats > 1 else 'its row'} replaced; that CPU stays counted." if repeats else "")
    again += (f" The {'runs' if len(lost) > 1 else 'run'} lost in flight (stopped before {'they' if len(lost) > 1 else 'it'} "
              f"landed: a session's machine changed, or a stream was stopped) spent {sum(lost) / 3600:.2f} CPU-hours with no row; "
              f"that CPU stays counted (the ledger's `{LOST}` lines)." if lost else "")
    budget = read_json(Path(ledger).with_name(BUDGET))
    if budget:  # one total against the cap, so a reader need not add the parts up
        flying = in_flight_cpu_hours(ledger)
        counted = hours + float(budget["before_ledger"]) + flying
        again += (f" Against the cap of {float(budget['cap']):g} CPU-hours: {counted:.2f} counted (the ledger's {hours:.2f} + "
                  f"{float(budget['before_ledger']):g} spent before it"
                  + (f" + {flying:.2f} in runs left part-trained, `{IN_FLIGHT}` beside the ledger" if flying else "")
                  + f"), {float(budget['cap']) - counted:.2f} left.")
    return (f"Spent: {hours:.2f} CPU-hours recorded over {over} "
            f"(`{Path(ledger).as_posix()}`: each run's CPU seconds, training and evaluation; the protocol states any spend before the ledger).{again}")


def device_name() -> str:
    """The device a run trained on, in words (the GPU's name, or the CPU and its core count)."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"


def trained_precision(run_dir: Path) -> str:
    """The precision the run's sessions trained in (``progress.json``), joined if they differ; blank
    for sessions from before it was recorded."""
    from ..runs import read_progress

    sessions = read_progress(run_dir).get("sessions", [])
    return "+".join(dict.fromkeys(s["precision"] for s in sessions if s.get("precision")))


def precision_text(rows: list[dict], *, fixed: str | None = None) -> str:
    """The precisions the rows trained in, with their counts, in words for a report's header: what
    ``trainer.precision: auto`` picked on each machine (bf16-mixed with native bf16, else 32-true), or
    ``fixed``, the one precision every row's recipe set."""
    from collections import Counter

    if fixed is not None:
        return (f"every run trained in precision {fixed}, which its recipe fixes (`trainer.precision`) whatever the machine; "
                "the search and the quantizer losses are float32")

    counts = Counter(row.get("precision") for row in rows if row.get("precision"))
    unrecorded = sum(not row.get("precision") for row in rows)
    kinds = ", ".join(f"{name} ({n} run{'s' * (n > 1)})" for name, n in sorted(counts.items()))
    said = [f"trained in {kinds}"] if counts else []
    said += [f"precision not recorded for {unrecorded} run{'s' * (unrecorded > 1)} (trained before it was: one or the other)"] if unrecorded else []
    return ("; ".join(said) + " (the network's precision follows the machine: bf16-mixed on a CPU with native bf16, else 32-true; "
            "the search and the quantizer losses are float32 on both)")


def variant_folder(variant: str) -> str:
    """A variant as run folders spell it (``grid=14x14`` -> ``grid-14x14``, ``train C and W`` ->
    ``train_C_and_W``): ``simvq bench``'s run directories and a campaign's kept copies."""
    return variant.replace(" ", "_").replace("=", "-")


def kept_folder(folder: str | Path, *, variant: Callable[[dict], str], budget: str) -> Callable[[dict], Path]:
    """``row -> <folder>/<variant>-<method>-K<k>-seed<s>-steps<budget>/``: where a campaign
    (benchmarks/campaign.py) keeps a run's small files once its run directory is gone (``folder``: the
    campaign's ``<artifacts>/runs``)."""
    def kept(row: dict) -> Path:
        return Path(folder) / f"{variant(row)}-{row['method']}-K{row['codebook_size']}-seed{row['seed']}-steps{row[budget]}"
    return kept


def run_file(row: dict, name: str, kept: Callable[[dict], Path] | None = None) -> Path | None:
    """``kept(row)/<name>`` (a campaign's kept copy, committed: a page built from it is the same on
    every machine) when it exists, else ``<run_dir>/<name>``, else None."""
    candidates = ([kept(row) / name] if kept else []) + ([Path(row["run_dir"]) / name] if row.get("run_dir") else [])
    return next((c for c in candidates if c.is_file()), None)
