"""Compatibility names: the recipe configs live in ``simvq.runs`` (``simvq.runs.schemas`` for the
dataclasses, ``simvq.runs.config`` for loading them)."""

from ..runs.config import (  # noqa: F401
    check_config,
    describe_type,
    field_type,
    load_config,
    load_recipe,
    load_structured,
    read_config_file,
    read_run_config,
    recipe_kind,
    save_config,
    to_dict,
)
from ..runs.schemas import (  # noqa: F401
    AudioConfig,
    AudioDataConfig,
    AudioEvalConfig,
    AudioLossConfig,
    AudioTrainerConfig,
    CodecModelConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    MelConfig,
    ModelConfig,
    OptimConfig,
    PlateauConfig,
    QuantizerConfig,
    TokenizerConfig,
    TrainerConfig,
)
