"""The results CSV every benchmark appends to, one row per finished run (resumable: rows are never lost)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..utils import atomic_write_text


def read_results(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def append_result(path: str | Path, row: dict, *, fields: list[str]) -> None:
    """Append one row; the file is rewritten through a temp file so a kill never leaves half a row."""
    rows = read_results(path) + [{name: row.get(name, "") for name in fields}]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def device_name() -> str:
    """The device a run trained on, in words (the GPU's name, or the CPU and its core count)."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
