"""Small helpers shared by every layer (no heavy imports): atomic writes (JSON among them), safe
checkpoint, safetensors and JSON reads, matplotlib set-up, and ``UsageError`` with the checks of the
values a user gives (counts, devices)."""

from __future__ import annotations

import json
import operator
import os
import tempfile
from pathlib import Path

SHARED_FILE_MODE = 0o644  # mkstemp creates 0600; results and weights are meant to be read by others


class UsageError(ValueError):
    """A value the user gave was refused: a command-line option (``--batch-size``), a config key
    (``model.norm_groups``), a function's argument (``wav``) or a path (``out_dir``). Raised where the
    value is checked; the message starts with the argument's name (``str(error)`` is
    ``"<argument>: <problem>"``). The ``simvq`` command prints it as one line and exits with status 2
    (``simvq.cli.user_error``). A ``ValueError``, so callers that catch the library's refusals as
    ``ValueError`` keep doing so."""

    def __init__(self, argument: str, problem: str):
        self.argument, self.problem = argument, problem
        super().__init__(f"{argument}: {problem}")

    def __reduce__(self):  # picklable (errors cross process boundaries in sweeps with workers)
        return type(self), (self.argument, self.problem)


def check_count(value, argument: str, *, minimum: int = 1, allow_none: bool = True):
    """``value`` if it is an integer >= ``minimum`` (or None when ``allow_none``); else a
    ``UsageError`` naming ``argument``. Booleans are not counts."""
    if value is None and allow_none:
        return value
    try:
        count = operator.index(value)  # int, numpy and 0-d torch integers
    except TypeError:
        count = None
    if isinstance(value, bool) or count is None or count < minimum:
        raise UsageError(argument, f"must be an integer >= {minimum}, got {value!r}")
    return count


def check_out_dir_option(path, argument: str):
    """``path`` unless it names an existing file where a directory is to be written (a ``UsageError``
    naming ``argument``); None passes."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise UsageError(argument, f"{path} is a file; give a directory")
    return path


def check_device(device, argument: str = "device"):
    """``torch.device(device)`` for a device this machine has (None: None, the caller's default); a
    misspelt device (``foo``), an accelerator the machine lacks (``cuda`` without a GPU) or a device
    index beyond its count is a ``UsageError`` naming ``argument``, before any work is done."""
    import torch

    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(argument, f"not a device: {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "meta":
        raise UsageError(argument, "the meta device holds no data; use cpu or an accelerator")
    try:
        module = torch.get_device_module(parsed.type)
        available = bool(module.is_available())
        count = int(module.device_count()) if hasattr(module, "device_count") else 1
    except (AttributeError, RuntimeError, AssertionError):
        available, count = False, 0
    if not available:
        raise UsageError(argument, f"{device!r}: this machine has no {parsed.type} device (use cpu)")
    if parsed.index is not None and parsed.index >= count:
        raise UsageError(argument, f"{device!r}: this machine has {count} {parsed.type} device(s), numbered from 0")
    return parsed


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


def read_json(path: str | os.PathLike, default=None):
    """The JSON value in ``path``, or ``default`` when there is no such file (a results cache or
    a run's record that has not been written yet)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: str | os.PathLike, value, *, indent: int = 2, sort_keys: bool = False) -> None:
    """``value`` as JSON (with a final newline) to ``path``, atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


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
