"""Run directories and recipe configs, without Lightning: what the inference API, the recipes and the
experiments all read.

- ``registry``: the one registry of recipe kinds (``register_recipe``, ``get_recipe``): each kind's
  schema, model builder, training plug-in, evaluation and benchmark table;
- ``schemas``, ``config``: the config dataclasses, and loading them from YAML (read once) and overrides;
- ``files``: a run directory's file names, ``resolve_run``, the progress, usage and code-count files;
- ``weights``: safetensors written atomically, model state read from safetensors or a checkpoint;
- ``builders``, ``model``: the model a config describes, and the trained model of a run;
- ``prior``: the prior recipe's schema and its run directories.
"""

from ..utils import UsageError  # what a refused value raises (re-exported for the layers above: the tokenizer)
from .builders import build_codec, build_image_model
from .config import (
    check_config,
    load_config,
    load_recipe,
    load_structured,
    read_config_file,
    read_run_config,
    recipe_kind,
    save_config,
    to_dict,
)
from .files import (
    CHECKPOINT_FILE,
    COUNTS_FILE,
    WEIGHTS_FILE,
    read_code_counts,
    read_metrics,
    read_progress,
    read_usage_history,
    resolve_run,
    save_code_counts,
    training_facts,
)
from .model import build_model, load_run_model
from .registry import DEFAULT_RECIPE, Named, Recipe, get_recipe, recipe_names, register_recipe
from .schemas import AudioConfig, TokenizerConfig
from .weights import checkpoint_model_state, read_model_state, save_weights

__all__ = [
    "AudioConfig",
    "CHECKPOINT_FILE",
    "COUNTS_FILE",
    "DEFAULT_RECIPE",
    "Named",
    "Recipe",
    "TokenizerConfig",
    "UsageError",
    "WEIGHTS_FILE",
    "build_codec",
    "build_image_model",
    "build_model",
    "check_config",
    "checkpoint_model_state",
    "get_recipe",
    "load_config",
    "load_recipe",
    "load_run_model",
    "load_structured",
    "read_code_counts",
    "read_config_file",
    "read_model_state",
    "read_run_config",
    "read_metrics",
    "read_progress",
    "read_usage_history",
    "recipe_kind",
    "recipe_names",
    "register_recipe",
    "resolve_run",
    "save_code_counts",
    "save_config",
    "save_weights",
    "to_dict",
    "training_facts",
]
