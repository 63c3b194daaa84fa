"""Recipe configuration as plain dataclasses (nanoGPT style), YAML files and dotted overrides.

    config = load_config("configs/fmnist.yaml", ["quantizer.name=vq", "trainer.max_steps=200"])

Overrides are coerced to the type of the field they set (``"65536"`` -> int, ``"[1,2,2]"`` -> tuple,
``"null"`` -> None); ``quantizer.options.<key>=<value>`` passes a keyword option to the quantizer,
parsed as YAML (``0.5`` -> float, ``true`` -> bool). This module imports no training framework.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # fashion_mnist | image_folder | photos
    root: str | None = None  # data directory (fashion_mnist: IDX files; image_folder: the images)
    test_root: str | None = None  # image_folder: held-out images; None: a fixed fraction of root
    test_fraction: float = 0.05  # image_folder without test_root
    image_size: int = 28
    channels: int = 1  # 1 grayscale, 3 RGB
    crop: str = "random"  # image_folder training crops: random | center (eval always center)
    train_crops: int = 20_000  # photos: crops in the training set
    test_crops: int = 1_000  # photos: crops in the test set
    batch_size: int = 64
    num_workers: int = 0
    in_memory: bool = True  # data sets held as one uint8 tensor are batched by indexing it (no DataLoader workers)


@dataclass
class ModelConfig:
    channels: int = 64  # width of the first level
    channel_multipliers: tuple[int, ...] = (1, 2, 2)  # width per level, relative to channels
    downsamplings: int = 2  # stride-2 convolutions; levels = downsamplings + 1
    num_res_blocks: int = 1  # residual blocks per level
    norm_groups: int = 8  # GroupNorm groups (must divide every level's width)
    dim: int = 64  # latent (code) dimension d


@dataclass
class QuantizerConfig:
    name: str = "simvq"  # any name from simvq.list_quantizers()
    codebook_size: int = 8192
    options: dict[str, Any] = field(default_factory=dict)  # passed as-is: build_quantizer(name, **options)


@dataclass
class LossConfig:
    reconstruction: str = "l1"  # l1 | l2
    reconstruction_range: str = "[0, 1]"  # pixels the loss compares: "[0, 1]" or "[-1, 1]" (the official code's, 2x the L1)
    quantizer_weight: float = 1.0  # weight of the quantizer's auxiliary loss
    discriminator: bool = False  # PatchGAN (Isola et al. 2017) with hinge loss, as in VQGAN
    discriminator_start: int = 10_000  # step the adversarial loss switches on (VQGAN's disc_start)
    discriminator_weight: float = 0.1
    discriminator_channels: int = 64
    discriminator_layers: int = 3


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    grad_clip: float | None = 1.0  # max global gradient norm; None: off
    ema_decay: float | None = None  # e.g. 0.999: keep an EMA of the weights and export it


@dataclass
class TrainerConfig:
    max_steps: int = 1500
    seed: int = 0
    log_every: int = 50  # steps between logged rows and usage-curve points
    checkpoint_every: int = 250  # steps between resumable checkpoints
    accelerator: str = "auto"
    devices: int | str = 1  # processes per node (GPUs, or CPU processes with accelerator=cpu)
    num_nodes: int = 1  # machines; the world size is devices x num_nodes
    strategy: str = "auto"  # e.g. ddp
    precision: str = "auto"  # auto: bf16-mixed on CUDA and on CPUs with fast bf16, else 32-true; or any Lightning precision
    channels_last: bool = True  # NHWC convolutions (faster in oneDNN and cuDNN)
    compile: bool = False  # torch.compile the encoder and decoder (pays on long runs; ~1 min to compile on CPU)
    progress_bar: bool = True


@dataclass
class PlateauConfig:
    """Train until usage and PSNR stop improving: every ``check_every`` steps the model (its EMA copy
    when there is one) is measured on ``eval_images`` test images; a check improves when usage rises
    by more than ``usage_tolerance`` (absolute fraction) or PSNR by more than ``psnr_tolerance`` dB over
    the best so far. Training stops after ``patience`` checks in a row without improvement (and not
    before ``min_steps``); ``trainer.max_steps`` stays the cap."""

    enabled: bool = False
    check_every: int = 1000
    patience: int = 3
    usage_tolerance: float = 0.002
    psnr_tolerance: float = 0.05
    min_steps: int = 2000
    eval_images: int = 10_000


@dataclass
class EvalConfig:
    batch_size: int = 256
    max_images: int | None = None  # None: the whole test split
    fid_images: int = 1000  # rFID subset size (Inception runs ~6 img/s on 2 CPU cores); 0: skip
    fid_cache_dir: str | None = None  # reference statistics; default ~/.cache/simvq/fid
    grid_images: int = 32
    usage_splits: tuple[str, ...] = ("test",)  # splits whose tokens the reported usage counts, e.g. [train, test]


@dataclass
class TokenizerConfig:
    out_dir: str = "runs/tokenizer"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plateau: PlateauConfig = field(default_factory=PlateauConfig)


# ----------------------------------------------------------------------------- (de)serialisation


def to_dict(config) -> dict:
    """A plain dict (tuples as lists) fit for JSON/YAML."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls, values: dict, *, where: str = ""):
    """Build dataclass ``cls`` from nested ``values``, coercing each leaf to its field's type."""
    if not isinstance(values, dict):
        raise TypeError(f"{where or cls.__name__} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in {where or cls.__name__}; expected some of {sorted(names)}")
    kwargs = {}
    for name, value in values.items():
        path = f"{where}.{name}" if where else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, where=path)
        else:
            kwargs[name] = coerce(value, hint, where=path)
    return cls(**kwargs)


def coerce(value, hint, *, where: str):
    """``value`` (possibly a string from the command line) as type ``hint``; errors name ``where``."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return _parse_yaml(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), where=where)
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, typing.get_args(hint), where=where)
    if origin is dict:
        return _coerce_mapping(value, typing.get_args(hint), where=where)
    if hint in _SCALARS:
        return _SCALARS[hint](value, where=where)
    raise TypeError(f"{where}: unsupported field type {hint}")


def _is_null(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~"))


def _coerce_union(value, options: tuple, *, where: str):
    if _is_null(value) and type(None) in options:
        return None
    errors = []
    for option in (a for a in options if a is not type(None)):
        try:
            return coerce(value, option, where=where)
        except (TypeError, ValueError) as error:
            errors.append(str(error))
    raise ValueError(f"{where}: cannot read {value!r} as {' | '.join(map(str, options))}: {'; '.join(errors)}")


def _coerce_sequence(value, origin, args: tuple, *, where: str):
    if isinstance(value, str):
        value = _parse_yaml(value)
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where} must be a list, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ValueError(f"{where} must have {len(args)} items, got {len(value)}")
        items = [coerce(v, a, where=where) for v, a in zip(value, args)]
    else:
        items = [coerce(v, args[0] if args else Any, where=where) for v in value]
    return tuple(items) if origin is tuple else items


def _coerce_mapping(value, args: tuple, *, where: str) -> dict:
    if isinstance(value, str):
        value = _parse_yaml(value)
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be a mapping, got {value!r}")
    value_hint = args[1] if len(args) == 2 else Any
    return {key: coerce(item, value_hint, where=f"{where}.{key}") for key, item in value.items()}


def _coerce_bool(value, *, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{where} must be a boolean (true/false), got {value!r}")


def _coerce_int(value, *, where: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"{where} must be an integer, got {value!r}") from None
    if isinstance(value, int):
        return value
    raise TypeError(f"{where} must be an integer, got {value!r}")


def _coerce_float(value, *, where: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{where} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {value!r}") from None


def _coerce_str(value, *, where: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise TypeError(f"{where} must be a string, got {value!r}")
    return str(value)


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _parse_yaml(text: str):
    import yaml

    return yaml.safe_load(text)


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set ``a.b.c=value`` entries in the nested dict ``values`` (a copy is returned)."""
    values = json.loads(json.dumps(values))
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} must look like section.key=value")
        key, raw = override.split("=", 1)
        parts = key.strip().split(".")
        node = values
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ValueError(f"override {override!r}: {part!r} is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = raw  # a string: from_dict coerces it to the field's type
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TokenizerConfig:
    """Defaults, then the YAML (or JSON) file at ``path``, then ``overrides`` (``section.key=value``)."""
    values = to_dict(TokenizerConfig())
    if path is not None:
        values = _merge(values, _read_config_file(Path(path)))
    values = apply_overrides(values, overrides or [])
    return check_config(from_dict(TokenizerConfig, values))


def _read_config_file(path: Path) -> dict:
    """The mapping in a YAML/JSON file; a parse error or a top level that is not a mapping gives a
    ValueError naming the file (a corrupt config.json used to raise a bare JSONDecodeError)."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else (_parse_yaml(text) or {})
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())  # YAML errors span several lines
        raise ValueError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {reason}") from None
    if not isinstance(loaded, dict):
        raise TypeError(f"{path} must hold a mapping of sections (data:, model:, ...), got a {type(loaded).__name__}")
    return loaded


# (field path, smallest value): counts that must be positive (max_steps=-1 trained forever)
_POSITIVE = (
    ("trainer.max_steps", 1),
    ("trainer.log_every", 1),
    ("trainer.checkpoint_every", 1),
    ("data.batch_size", 1),
    ("data.image_size", 1),
    ("data.num_workers", 0),
    ("eval.batch_size", 1),
    ("optim.warmup_steps", 0),
    ("quantizer.codebook_size", 2),
    ("model.dim", 1),
    ("trainer.num_nodes", 1),
)


def check_config(config: TokenizerConfig) -> TokenizerConfig:
    """Values no run can use, refused naming the key."""
    for key, minimum in _POSITIVE:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {value}")
    if not config.optim.lr > 0:
        raise ValueError(f"optim.lr must be positive, got {config.optim.lr}")
    if config.optim.ema_decay is not None and not 0 < config.optim.ema_decay < 1:
        raise ValueError(f"optim.ema_decay must lie in (0, 1) or be null, got {config.optim.ema_decay}")
    return config


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def save_config(config: TokenizerConfig, directory: str | Path) -> None:
    """``config.yaml`` and ``config.json`` in ``directory``, each written atomically."""
    import yaml

    from ..utils import atomic_write_text

    values = to_dict(config)
    atomic_write_text(Path(directory) / "config.json", json.dumps(values, indent=2) + "\n")
    atomic_write_text(Path(directory) / "config.yaml", yaml.safe_dump(values, sort_keys=False))


def read_run_config(run_dir: str | Path) -> TokenizerConfig:
    """The config a run was trained with (``config.json``, else ``config.yaml``)."""
    run_dir = Path(run_dir)
    for name in ("config.json", "config.yaml"):
        if (run_dir / name).is_file():
            return load_config(run_dir / name)
    raise FileNotFoundError(f"{run_dir} holds no config.json or config.yaml; is it a simvq run directory?")
