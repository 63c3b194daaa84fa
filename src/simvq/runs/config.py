"""Loading a recipe's config: its kind's schema (``simvq.runs.schemas``, found through
``simvq.runs.registry``) filled by OmegaConf from a YAML file and dotted overrides.

    config = load_recipe("configs/fmnist.yaml", ["quantizer.name=vq", "trainer.max_steps=200"])

The file is read once; its ``recipe:`` key picks the schema (the default kind when it names none).
OmegaConf converts each value to the type of the field it sets (``"65536"`` -> int, ``"[1,2,2]"`` ->
tuple, ``"null"`` -> None) and refuses unknown keys; ``quantizer.options.<key>=<value>`` passes a
keyword option to the quantizer as it is parsed (``0.5`` -> float, ``true`` -> bool). The loaded
config is a plain dataclass instance. This module imports no training framework.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

from ..utils import UsageError, write_json
from .files import CONFIG_FILES, TOKENS_META
from .registry import DEFAULT_RECIPE, Recipe, declared_kind, get_recipe
from .schemas import TokenizerConfig


def to_dict(config) -> dict:
    """A plain dict (tuples as lists) fit for JSON/YAML."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_structured(schema: type, path: str | Path | None = None, overrides: list[str] | None = None, *, values: dict | None = None):
    """An instance of the dataclass ``schema``: its defaults, then the YAML (or JSON) file at ``path``,
    then ``overrides`` (``section.key=value``, values parsed as YAML). OmegaConf checks every key and
    type; a mistake is one ``ValueError`` naming the key (``optim.lr: expected a float, got 'abc'``).
    ``values``: the file's mapping, when the caller has read it already (the file is read once)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config = OmegaConf.structured(schema)
    if path is not None:
        read = (lambda: values) if values is not None else (lambda: read_config_file(Path(path)))
        config = _merged(config, read, schema, where=str(path))
    for override in overrides or []:
        if "=" not in override:
            raise ValueError(f"override {override!r} must look like section.key=value")
        key, raw = (part.strip() for part in override.split("=", 1))
        config = _merged(config, lambda key=key, raw=raw: _override(schema, key, raw), schema, where=key, value=raw)
    try:
        return OmegaConf.to_object(config)
    except OmegaConfBaseException as error:  # e.g. an interpolation ``${...}`` naming no key
        raise ValueError(f"{error.full_key}: {str(error).splitlines()[0]}") from None
    except (ValueError, TypeError) as error:  # a section's own check (its dataclass's __post_init__)
        raise ValueError(f"{_refused_section(config)}: {error}") from None


def _refused_section(config, prefix: str = "") -> str:
    """The dotted key of the innermost section of ``config`` that cannot be built."""
    from omegaconf import DictConfig, OmegaConf

    for key, node in config.items_ex(resolve=False) if isinstance(config, DictConfig) else ():
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) not in (dict, None):
            try:
                OmegaConf.to_object(node)
            except (ValueError, TypeError):
                return _refused_section(node, f"{prefix}{key}.")
    return prefix.rstrip(".") or "config"


def _override(schema: type, key: str, raw: str):
    """The override ``key=raw`` as a config to merge. Text fields take ``raw`` as it is (a string
    field given ``[-1, 1]`` keeps that text); every other value is parsed as YAML."""
    from omegaconf import OmegaConf

    hint = field_type(schema, key)
    if hint is str or hint == (str | None):
        value = None if hint is not str and raw.lower() in ("null", "none", "~") else raw
        for part in reversed(key.split(".")):
            value = {part: value}
        return OmegaConf.create(value)
    return OmegaConf.from_dotlist([f"{key}={raw}"])


def _merged(config, read, schema: type, *, where: str, value=None):
    """``config`` merged with ``read()``; OmegaConf's errors become one line naming the key."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        return OmegaConf.merge(config, read())
    except yaml.YAMLError:
        raise ValueError(f"{where}: cannot parse {value!r}") from None
    except OmegaConfBaseException as error:
        key = error.full_key or where
        if isinstance(error, (ConfigKeyError, AttributeError)) and "not in" in str(error):
            hint = str(error).splitlines()[0].partition("Did you mean: ")[2].rstrip("?")
            raise ValueError(f"{key}: unknown key" + (f" (did you mean {hint}?)" if hint else "")) from None
        shown = value if value is not None and key == where else getattr(error, "value", None)
        expected = describe_type(field_type(schema, key))
        if expected is None:
            raise ValueError(f"{key}: {str(error).splitlines()[0]}") from None
        raise ValueError(f"{key}: expected {expected}, got {shown!r}") from None


def field_type(schema: type, key: str):
    """The annotation of the dotted ``key`` in ``schema`` (None when the key leads nowhere)."""
    hint = schema
    for part in key.split("."):
        name, _, index = part.partition("[")
        if not (dataclasses.is_dataclass(hint) and name in {f.name for f in dataclasses.fields(hint)}):
            return None
        hint = typing.get_type_hints(hint)[name]
        if index and typing.get_origin(hint) in (tuple, list):
            hint = typing.get_args(hint)[0]
    return hint


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a float", str: "a string"}


def describe_type(hint) -> str | None:
    """``hint`` in words for an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        named = [describe_type(a) for a in args if a is not type(None)]
        return None if None in named else " or ".join(named + (["null"] if type(None) in args else []))
    if origin in (tuple, list):
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        return f"a list of {len(args)} items" if fixed else "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a section (a mapping of keys)"
    return _TYPE_NAMES.get(hint)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TokenizerConfig:
    """The image recipe: defaults, then the YAML (or JSON) file at ``path``, then ``overrides``
    (``section.key=value``). ``load_recipe`` reads a recipe of any kind."""
    return check_config(load_structured(TokenizerConfig, path, overrides))


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None):
    """A tokenizer recipe of the kind its ``recipe:`` key names (the default kind when it names none),
    loaded and checked against that kind's schema. The file is read once."""
    values = read_config_file(Path(path)) if path is not None else {}
    recipe = _recipe_named(values.get("recipe", DEFAULT_RECIPE), path)
    return check_config(load_structured(recipe.schema, path, overrides, values=values))


def recipe_kind(path: str | Path | None = None) -> str:
    """The kind of recipe a config file holds: its ``recipe:`` key (the default kind when it names none)."""
    values = read_config_file(Path(path)) if path is not None else {}
    return _recipe_named(values.get("recipe", DEFAULT_RECIPE), path).name


def _recipe_named(kind, path) -> Recipe:
    try:
        return get_recipe(kind)
    except ValueError as error:
        raise ValueError(f"{error}" + (f" (in {path})" if path else "")) from None


def read_config_file(path: Path) -> dict:
    """The mapping in a YAML/JSON file; a parse error or a top level that is not a mapping gives a
    ValueError naming the file (a corrupt config.json used to raise a bare JSONDecodeError)."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {})
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
    ("model.channels", 1),
    ("trainer.num_nodes", 1),
    ("data.sample_rate", 8000),
    ("trainer.sample_every", 0),
)


def check_config(config):
    """Values no run of any recipe can use, refused naming the key (a section or key a kind's schema
    does not have is not checked)."""
    kind = declared_kind(type(config))
    if config.recipe != kind:  # the key is there to be read, not set
        raise ValueError(f"recipe: this is the {kind} recipe's schema, got recipe={config.recipe!r}; load the file with load_recipe")
    for key, minimum in _POSITIVE:
        section, name = key.split(".")
        value = getattr(getattr(config, section, None), name, None)  # (a key of another recipe's schema)
        if value is not None and value < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {value}")
    devices = getattr(getattr(config, "trainer", None), "devices", None)
    if isinstance(devices, int) and not (devices >= 1 or devices == -1):
        raise UsageError("trainer.devices", f"must be >= 1 (processes per machine), -1 (every device) or 'auto', got {devices}")
    if not config.optim.lr > 0:
        raise ValueError(f"optim.lr must be positive, got {config.optim.lr}")
    if config.optim.schedule not in ("constant", "cosine"):
        raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {config.optim.schedule!r}")
    if not 0 <= config.optim.min_lr_fraction <= 1:
        raise ValueError(f"optim.min_lr_fraction must lie in [0, 1], got {config.optim.min_lr_fraction}")
    if config.optim.ema_decay is not None and not 0 < config.optim.ema_decay < 1:
        raise ValueError(f"optim.ema_decay must lie in (0, 1) or be null, got {config.optim.ema_decay}")
    plateau = getattr(config, "plateau", None)
    if plateau is not None and plateau.enabled:
        for key in ("check_every", "patience", "eval_images"):
            if getattr(plateau, key) < 1:
                raise ValueError(f"plateau.{key} must be >= 1, got {getattr(plateau, key)}")
        earliest = max(plateau.min_steps, plateau.patience * plateau.check_every)
        if plateau.stop and earliest > config.trainer.max_steps:
            raise ValueError(f"plateau.min_steps/patience: the plateau stop cannot fire before step {earliest}, after trainer.max_steps="
                             f"{config.trainer.max_steps}; lower them, raise the cap, or set plateau.stop=false (checks only)")
    loss = getattr(config, "loss", None)
    if (floor := getattr(loss, "floor_dbfs", None)) is not None and not -200 <= floor < 0:
        raise ValueError(f"loss.floor_dbfs must be a level in dBFS in [-200, 0) (e.g. -80) or null, got {floor}")
    init = getattr(config, "init", None)
    if init is not None:
        check_init(init)
    splits = getattr(getattr(config, "eval", None), "usage_splits", None)  # checked now: it is read only after training
    if splits is not None and (not splits or not set(splits) <= {"train", "test"}):
        raise ValueError(f"eval.usage_splits must list 'train' and/or 'test', got {list(splits)}")
    return config


def check_init(init) -> None:
    """The ``init`` section's choices (the source itself is read when training starts, not here: a
    fine-tuned run's saved config stays readable after its source is gone)."""
    from .schemas import INIT_OPTIMIZER, INIT_QUANTIZER

    if init.quantizer not in INIT_QUANTIZER:
        raise ValueError(f"init.quantizer must be one of {INIT_QUANTIZER}, got {init.quantizer!r}")
    if init.optimizer not in INIT_OPTIMIZER:
        raise ValueError(f"init.optimizer must be one of {INIT_OPTIMIZER}, got {init.optimizer!r}")
    source = getattr(init, "from")
    if source is not None and not str(source).strip():
        raise ValueError("init.from must name a run directory or a save_pretrained directory (or be null), got ''")
    if source is None and (init.quantizer, init.optimizer) != ("keep", "fresh"):
        raise ValueError(f"init.quantizer/init.optimizer apply to a source: set init.from=RUN_OR_DIR (got init.quantizer="
                         f"{init.quantizer}, init.optimizer={init.optimizer} without init.from)")
    if init.optimizer == "resume" and init.quantizer == "reinit":
        raise ValueError("init.optimizer=resume continues the source's optimizer state, which belongs to its quantizer: "
                         "use init.quantizer=keep, or init.optimizer=fresh with init.quantizer=reinit")


def save_config(config, directory: str | Path) -> None:
    """``config.yaml`` and ``config.json`` in ``directory``, each written atomically."""
    import yaml

    from ..utils import atomic_write_text

    values = to_dict(config)
    json_file, yaml_file = CONFIG_FILES
    write_json(Path(directory) / json_file, values)
    atomic_write_text(Path(directory) / yaml_file, yaml.safe_dump(values, sort_keys=False))


def read_run_config(run_dir: str | Path):
    """The config a run was trained with (``config.json``, else ``config.yaml``), of its recipe's schema.
    A prior's run directory is refused, naming the commands that read it."""
    run_dir = Path(run_dir)
    if (run_dir / TOKENS_META).is_file():
        raise UsageError(str(run_dir), "this is a prior run (simvq prior train), not a tokenizer run; "
                         "use `simvq sample` or `simvq eval-gen` on it, `simvq eval` on its tokenizer")
    for name in CONFIG_FILES:
        if (run_dir / name).is_file():
            return load_recipe(run_dir / name)
    raise FileNotFoundError(f"{run_dir} holds no config.json or config.yaml; is it a simvq run directory?")
