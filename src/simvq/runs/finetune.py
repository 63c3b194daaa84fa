"""Fine-tuning: the weights (and optionally the optimizer state) a new run starts from, read from the
trained tokenizer its config's ``init`` section names (``simvq.runs.schemas.InitConfig``).

    simvq train configs/folder.yaml init.from=runs/fmnist ...       # a run directory
    simvq train configs/folder.yaml init.from=hub/fmnist-simvq ...  # a save_pretrained directory

``initial_state(config)`` reads and checks everything before the run directory is touched: the
source exists and is a tokenizer of the config's kind, every weight the config's model takes has the
source's shape (the keys that differ are named), and with ``init.optimizer=resume`` the source run's
checkpoint holds a generator optimizer state of the same shapes. The recipe then loads the result into
the freshly built model (``apply_weights``) and its optimizer (``apply_optimizer_state``). Every
refusal is one ``ValueError`` line naming ``init.from``. Nothing is unpickled: safetensors, or the
run's checkpoint read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..utils import load_torch_file
from .config import read_run_config
from .files import CHECKPOINT_FILE, WEIGHTS_FILE
from .model import build_model
from .prior import TOKENS_META
from .weights import read_model_state

QUANTIZER_PREFIX = "quantizer."
SHOWN_KEYS = 4  # mismatching keys named in one error line


@dataclass
class InitialState:
    """What a fine-tuned run starts from: ``weights`` for the autoencoder (the quantizer's left out
    with ``init.quantizer=reinit``), and with ``init.optimizer=resume`` the generator optimizer's
    ``state`` (per parameter index, the order of ``model.parameters()``)."""

    source: Path
    weights: dict[str, Tensor]
    reinit_quantizer: bool
    optimizer_state: dict | None = None


def init_source(config) -> str | None:
    """``init.from`` of a config (None when the config has no ``init`` section or names no source)."""
    init = getattr(config, "init", None)
    return getattr(init, "from", None) if init is not None else None


def initial_state(config) -> InitialState | None:
    """The checked starting state ``config.init`` asks for (None without ``init.from``)."""
    source = init_source(config)
    if source is None:
        return None
    init = config.init
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"init.from: {source} does not exist (name a trained run directory or a save_pretrained directory)")
    if not path.is_dir():
        raise ValueError(f"init.from: {source} is a file; name the run directory or save_pretrained directory that holds it")
    if (path / TOKENS_META).is_file():
        raise ValueError(f"init.from: {source} is a prior, not a tokenizer")
    weights_file = next((path / name for name in (WEIGHTS_FILE, CHECKPOINT_FILE) if (path / name).is_file()), None)
    if weights_file is None:
        raise ValueError(f"init.from: {source} holds no trained weights ({WEIGHTS_FILE} or {CHECKPOINT_FILE})")
    try:
        source_config = read_run_config(path)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise ValueError(f"init.from: {source} holds no readable tokenizer config ({error})") from None
    if source_config.recipe != config.recipe:
        raise ValueError(f"init.from: {source} is an {source_config.recipe} tokenizer; this config trains an {config.recipe} one")

    optimizer_state = None
    if init.optimizer == "resume":
        checkpoint = path / CHECKPOINT_FILE
        if not checkpoint.is_file():
            raise ValueError(f"init.from: {source} holds no {CHECKPOINT_FILE} (a save_pretrained directory keeps no optimizer); "
                             "init.optimizer=resume needs a training run's directory, or use init.optimizer=fresh")
        state, optimizer_state = _checkpoint_state(checkpoint, source)
    else:
        try:
            state = read_model_state(weights_file)
        except (ValueError, TypeError, FileNotFoundError) as error:
            raise ValueError(f"init.from: {error}") from None

    reinit = init.quantizer == "reinit"
    model = build_model(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if reinit:
        expected = {name: shape for name, shape in expected.items() if not name.startswith(QUANTIZER_PREFIX)}
        state = {name: tensor for name, tensor in state.items() if not name.startswith(QUANTIZER_PREFIX)}
    _check_shapes(state, expected, source, reinit=reinit)
    if optimizer_state is not None:
        _check_optimizer(optimizer_state, model, source)
    return InitialState(path, state, reinit, optimizer_state)


def _checkpoint_state(checkpoint: Path, source) -> tuple[dict[str, Tensor], dict]:
    """The raw (not EMA) autoencoder weights and the generator optimizer state of a run's checkpoint:
    the optimizer's moments belong to the raw weights."""
    try:
        saved = load_torch_file(checkpoint)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"init.from: {error}") from None
    states = saved.get("state_dict") if isinstance(saved, dict) else None
    optimizers = saved.get("optimizer_states") if isinstance(saved, dict) else None
    if not isinstance(states, dict) or not optimizers:
        raise ValueError(f"init.from: {checkpoint} is not a simvq training checkpoint (no state_dict or optimizer state)")
    weights = {name[len("model."):]: tensor for name, tensor in states.items() if name.startswith("model.")}
    bad = [name for name, tensor in weights.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"init.from: {checkpoint} holds non-finite values in {len(bad)} tensor(s), e.g. {bad[0]!r}; nothing was loaded")
    return weights, optimizers[0]


def _check_shapes(state: dict[str, Tensor], expected: dict[str, tuple], source, *, reinit: bool) -> None:
    """Every key of ``expected`` in ``state`` with its shape, and nothing else; else one line naming
    the keys that differ."""
    differing = [f"{name} (saved {tuple(state[name].shape)}, config {shape})" for name, shape in expected.items()
                 if name in state and tuple(state[name].shape) != shape]
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if not (differing or missing or unexpected):
        return
    parts = []
    for label, keys in (("shapes differ", differing), ("missing from the source", missing), ("not in this config's model", unexpected)):
        if keys:
            shown = ", ".join(keys[:SHOWN_KEYS]) + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")
            parts.append(f"{label}: {shown}")
    quantizer_only = all(name.startswith(QUANTIZER_PREFIX) for name in [*(d.split(" ")[0] for d in differing), *missing, *unexpected])
    hint = ("; set init.quantizer=reinit to start the quantizer afresh" if quantizer_only and not reinit
            else "; the config's data.channels and model section must match the source's")
    raise ValueError(f"init.from: {source} does not fit this config's model ({'; '.join(parts)}){hint}")


def _check_optimizer(optimizer_state: dict, model: torch.nn.Module, source) -> None:
    """The saved generator state covers this model's trainable parameters, shape for shape."""
    params = [p for p in model.parameters() if p.requires_grad]
    state = optimizer_state.get("state", {}) if isinstance(optimizer_state, dict) else {}
    groups = optimizer_state.get("param_groups", []) if isinstance(optimizer_state, dict) else []
    count = sum(len(group.get("params", [])) for group in groups)
    if count != len(params):
        raise ValueError(f"init.from: {source}'s optimizer holds {count} parameters, this config's model trains {len(params)}; "
                         "init.optimizer=resume needs the same model (or use init.optimizer=fresh)")
    for index, param in enumerate(params):
        moments = state.get(index, {})
        for key, value in moments.items():
            if isinstance(value, Tensor) and value.ndim and tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"init.from: {source}'s optimizer state for parameter {index} ({key}) has shape {tuple(value.shape)}, "
                                 f"this model's is {tuple(param.shape)}; use init.optimizer=fresh")


def apply_weights(model: torch.nn.Module, initial: InitialState, *, copies: tuple[torch.nn.Module | None, ...] = ()) -> None:
    """Load ``initial.weights`` into ``model`` (its own quantizer kept with ``reinit_quantizer``) and
    copy the result into each of ``copies`` (e.g. the EMA model)."""
    state = model.state_dict()
    state.update({name: tensor.to(state[name].device, state[name].dtype) for name, tensor in initial.weights.items()})
    model.load_state_dict(state)
    for copy in copies:
        if copy is not None:
            copy.load_state_dict(model.state_dict())


def apply_optimizer_state(optimizer: torch.optim.Optimizer, initial: InitialState) -> None:
    """Continue ``optimizer`` from the source's per-parameter state (moments, step counts); its
    hyperparameters (learning rate, betas, ...) stay this config's."""
    if initial.optimizer_state is None:
        return
    current = optimizer.state_dict()
    current["state"] = initial.optimizer_state["state"]
    optimizer.load_state_dict(current)
