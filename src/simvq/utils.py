"""Small file helpers shared by the recipes (no heavy imports)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHARED_FILE_MODE = 0o644  # mkstemp creates 0600; results and weights are meant to be read by others


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, SHARED_FILE_MODE)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_path(path: str | os.PathLike):
    """Context giving a temporary path beside ``path``, renamed onto it on success (for writers that
    want a file name, e.g. safetensors or matplotlib)."""
    import contextlib

    @contextlib.contextmanager
    def manager():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
        os.close(handle)
        os.chmod(tmp, SHARED_FILE_MODE)
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    return manager()


def load_torch_file(path: str | os.PathLike, *, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` (nothing is unpickled beyond tensors and plain
    containers); an empty, truncated or foreign file gives one ValueError naming it, never
    torch's advice to pass ``weights_only=False``."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the write that produced it was cut short; delete it to start over")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, pickle.UnpicklingError, RuntimeError, ValueError, OSError) as error:  # bad zip: RuntimeError
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: truncated, corrupt or "
            "not written by simvq); nothing was loaded"
        ) from None


def load_safetensors(path: str | os.PathLike) -> dict:
    """All tensors of a safetensors file, checked to be finite; a truncated/corrupt file or garbage
    weights give one ValueError naming the file (garbage used to load and fail later as NaN codes)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error}); nothing was loaded") from None
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"{path} holds non-finite values in {len(bad)} tensor(s), e.g. {bad[0]!r}: the file is corrupt; nothing was loaded")
    return state


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed); imported only when asked for."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike, **savefig_options) -> None:
    """Write ``figure`` to ``path`` atomically (format from the suffix), then close it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=Path(path).suffix.lstrip(".") or None, **savefig_options)
    pyplot().close(figure)
