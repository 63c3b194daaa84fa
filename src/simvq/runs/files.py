"""The files of a run directory: their names, and the small ones read and written in one place.

A tokenizer run directory holds ``config.json``/``config.yaml`` (the recipe), ``model.safetensors``
(the final weights: the EMA copy when EMA is on), ``checkpoints/last.ckpt`` (Lightning state for
resuming), ``progress.json`` (steps and seconds per training session), ``usage_history.json`` (code
usage per logging window), ``metrics.json`` and ``code_counts.safetensors`` (the evaluation's numbers
and per-code histogram). A prior's run directory (``simvq.runs.prior``) holds the same config, weights,
checkpoint and progress files, plus ``tokens.json`` and ``tokens/``. ``resolve_run`` turns any of the
paths a user may give into (weights file, run directory); ``held_run_files`` says whether a directory
holds a run, ``clear_run`` deletes one (``--overwrite``), ``check_metrics`` guards ``metrics.json``.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from ..utils import UsageError, atomic_path, load_safetensors, read_json

CONFIG_FILES = ("config.json", "config.yaml")  # both written; read in this order
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = Path("checkpoints") / "last.ckpt"
PROGRESS_FILE = "progress.json"
USAGE_HISTORY_FILE = "usage_history.json"
METRICS_FILE = "metrics.json"
COUNTS_FILE = "code_counts.safetensors"  # the evaluation's per-code histogram over eval.usage_splits
PLATEAU_FILE = "plateau.json"  # the progress checks' history (image recipe, plateau.enabled)
TOKENS_META = "tokens.json"  # a prior run's record of the tokenizer it was trained on (simvq.runs.prior)
# what says a directory holds a run: its config, its weights, its checkpoint, a prior's tokens.json
RUN_MARKERS = (*CONFIG_FILES, WEIGHTS_FILE, str(CHECKPOINT_FILE), TOKENS_META)
# everything a tokenizer or prior run writes in its directory (glob patterns): what ``clear_run`` deletes.
# Other files and folders (a prior trained in <run>/prior, the user's own files) are left alone.
RUN_OUTPUTS = (
    *CONFIG_FILES, WEIGHTS_FILE, "checkpoints", "logs", PROGRESS_FILE, USAGE_HISTORY_FILE, METRICS_FILE, COUNTS_FILE,
    PLATEAU_FILE, "reconstructions.png", "code_usage_histogram.png", "usage_over_steps.png", "samples",  # tokenizers
    TOKENS_META, "tokens", "gen_metrics.json", "samples*.png",  # priors (`simvq sample` writes samples-*.png)
)


def resolve_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights file, run directory)`` for a run directory, its ``model.safetensors`` or a ``.ckpt``.

    A directory gives its final weights, else its last checkpoint (a run still training).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a run directory, its {WEIGHTS_FILE} or its {CHECKPOINT_FILE}")
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / CHECKPOINT_FILE):
            if candidate.is_file():
                return candidate, path
        raise FileNotFoundError(f"{path} holds neither {WEIGHTS_FILE} nor {CHECKPOINT_FILE}")
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ValueError(f"path must be a run directory or a .safetensors/.ckpt file, got {path}")
    run_dir = path.parent.parent if path.suffix == ".ckpt" and path.parent.name == "checkpoints" else path.parent
    return path, run_dir


def read_progress(run_dir: str | os.PathLike) -> dict:
    """The run's ``progress.json`` (``global_step`` and one entry per training session), or {} before
    its first checkpoint."""
    return read_json(Path(run_dir) / PROGRESS_FILE, {})


def training_facts(run_dir: Path) -> dict:
    """``global_step`` and ``train_seconds`` (over every session) from the run's ``progress.json``."""
    progress = read_progress(run_dir)
    if not progress:
        return {}
    sessions = progress.get("sessions") or []
    # SessionRecord always writes global_step; a file without it (hand-made, or cut to its sessions) falls back
    # on the sessions' last end step, as the prior's training record always read it
    step = progress.get("global_step", max((s["end_step"] for s in sessions if s.get("end_step") is not None), default=None))
    return {"global_step": step, "train_seconds": sum(s["seconds"] for s in sessions)}


def read_metrics(directory: str | os.PathLike) -> dict | None:
    """The ``metrics.json`` a run (or a pretrained folder) holds, or None when it has none."""
    return read_json(Path(directory) / METRICS_FILE)


def read_usage_history(run_dir: Path) -> list[dict] | None:
    """The run's ``usage_history.json`` (one point per logging window, written by the tokenizer recipe),
    or None when the run has none."""
    history_file = Path(run_dir) / USAGE_HISTORY_FILE
    return read_json(history_file)


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


def held_run_files(run_dir: str | os.PathLike) -> list[str]:
    """The ``RUN_MARKERS`` present in ``run_dir``: empty when it holds no run (or does not exist).
    A path that exists and is not a directory is a ``UsageError`` naming ``out_dir``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError("out_dir", f"{run_dir} is a file, not a directory; give a directory for the run")
    return [name for name in RUN_MARKERS if (run_dir / name).is_file()]


def clear_run(run_dir: str | os.PathLike) -> list[str]:
    """Delete the files and folders a run wrote in ``run_dir`` (``RUN_OUTPUTS``), so a run trained there
    afterwards leaves no stale metrics, PNGs, logs or checkpoints of the one it replaced; returns the
    names deleted. A directory that holds no run (``held_run_files``) is left as it is."""
    run_dir = Path(run_dir)
    if not held_run_files(run_dir):
        return []
    deleted = []
    for pattern in RUN_OUTPUTS:
        for path in sorted(run_dir.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            deleted.append(path.name)
    return deleted


def check_metrics(metrics: dict, *, count: str, measured: tuple[str, ...]) -> None:
    """Refuse to write an evaluation's numbers unless they measured something: ``metrics[count]``
    (images, utterances) at least 1 and every ``measured`` value a number, not NaN nor -inf (+inf is
    a perfect PSNR). A ValueError naming what is missing; the run's earlier ``metrics.json`` stays."""
    if not metrics.get(count):
        raise ValueError(f"nothing was measured ({count}: {metrics.get(count)!r}); {METRICS_FILE} was not written")
    bad = [key for key in measured if not isinstance(metrics.get(key), (int, float)) or math.isnan(metrics[key]) or metrics[key] == -math.inf]
    if bad:
        shown = ", ".join(f"{key}={metrics.get(key)!r}" for key in bad)
        raise ValueError(f"the evaluation measured no usable value of {shown} over {metrics[count]} {count} (non-finite model outputs?); "
                         f"{METRICS_FILE} was not written")
