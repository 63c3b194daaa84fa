"""The files of a run directory: their names, and the small ones read and written in one place.

A tokenizer run directory holds ``config.json``/``config.yaml`` (the recipe), ``model.safetensors``
(the final weights: the EMA copy when EMA is on), ``checkpoints/last.ckpt`` (Lightning state for
resuming), ``progress.json`` (steps and seconds per training session), ``usage_history.json`` (code
usage per logging window), ``metrics.json`` and ``code_counts.safetensors`` (the evaluation's numbers
and per-code histogram). ``resolve_run`` turns any of the paths a user may give into
(weights file, run directory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..utils import atomic_path, load_safetensors

CONFIG_FILES = ("config.json", "config.yaml")  # both written; read in this order
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = Path("checkpoints") / "last.ckpt"
PROGRESS_FILE = "progress.json"
USAGE_HISTORY_FILE = "usage_history.json"
METRICS_FILE = "metrics.json"
COUNTS_FILE = "code_counts.safetensors"  # the evaluation's per-code histogram over eval.usage_splits
PLATEAU_FILE = "plateau.json"  # the progress checks' history (image recipe, plateau.enabled)


def resolve_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights file, run directory)`` for a run directory, its ``model.safetensors`` or a ``.ckpt``.

    A directory gives its final weights, else its last checkpoint (a run still training).
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / CHECKPOINT_FILE):
            if candidate.is_file():
                return candidate, path
        raise FileNotFoundError(f"{path} holds neither {WEIGHTS_FILE} nor {CHECKPOINT_FILE}")
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ValueError(f"path must be a run directory or a .safetensors/.ckpt file, got {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    run_dir = path.parent.parent if path.suffix == ".ckpt" and path.parent.name == "checkpoints" else path.parent
    return path, run_dir


def training_facts(run_dir: Path) -> dict:
    """``global_step`` and ``train_seconds`` (over every session) from the run's ``progress.json``."""
    progress_file = Path(run_dir) / PROGRESS_FILE
    if not progress_file.is_file():
        return {}
    progress = json.loads(progress_file.read_text())
    return {"global_step": progress["global_step"], "train_seconds": sum(s["seconds"] for s in progress["sessions"])}


def read_usage_history(run_dir: Path) -> list[dict] | None:
    """The run's ``usage_history.json`` (one point per logging window, written by the tokenizer recipe),
    or None when the run has none."""
    history_file = Path(run_dir) / USAGE_HISTORY_FILE
    return json.loads(history_file.read_text()) if history_file.is_file() else None


def save_code_counts(counts: Tensor, run_dir: Path) -> None:
    """The per-code histogram the reported usage counts (``counts``: ``(K,)`` integers), so every
    statistic of it (entropy, usage at a fixed tokens per code, ...) can be recomputed later."""
    from safetensors.torch import save_file

    with atomic_path(Path(run_dir) / COUNTS_FILE) as tmp:
        save_file({"counts": counts.detach().cpu().to(torch.int64).contiguous()}, tmp, metadata={"library": "simvq"})


def read_code_counts(run_dir: Path) -> Tensor | None:
    """The run's saved histogram (``save_code_counts``), or None when it has none."""
    path = Path(run_dir) / COUNTS_FILE
    return load_safetensors(path)["counts"] if path.is_file() else None
