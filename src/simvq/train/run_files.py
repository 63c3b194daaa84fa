"""Compatibility names: a run directory's files are read and written by ``simvq.runs``."""

from ..runs.builders import build_codec  # noqa: F401
from ..runs.files import (  # noqa: F401
    CHECKPOINT_FILE,
    COUNTS_FILE,
    WEIGHTS_FILE,
    read_code_counts,
    read_usage_history,
    resolve_run,
    save_code_counts,
    training_facts,
)
from ..runs.model import build_model, load_run_model  # noqa: F401
from ..runs.weights import checkpoint_model_state, read_model_state, save_weights  # noqa: F401
