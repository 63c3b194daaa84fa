"""The prior recipe: a transformer (``simvq.models.prior.TokenPrior``) over a trained tokenizer's codes.

    tokenizer run -> tokens of the training split (cached) -> batch (codes, labels) -> label dropout
    -> prior -> next-token cross-entropy -> AdamW step

- ``tokens``: the codes of a data split under the tokenizer, cached and keyed on its weights;
- ``train``: ``PriorModule`` (the LightningModule) and ``train_prior(config) -> run_dir``;
- ``sample``: ``sample_codes`` and ``decode_codes`` (``simvq sample``);
- ``evaluate``: ``evaluate_prior_run(run_dir) -> dict`` (``gen_metrics.json``, ``samples.png``);
- ``validation``: held-out grids, their NLL during training, the best weights and the early stop.

The schema (``PriorConfig``) and the reading of a prior run directory (``load_prior``) are in
``simvq.runs.prior``. A prior run directory holds ``config.yaml``/``config.json``, ``tokens.json`` (the
tokenizer it was trained on: path, SHA-256 of its weights, codebook size, grid, classes), ``tokens/``
(the cached codes of each split, named by that hash), ``model.safetensors``, ``checkpoints/last.ckpt``,
``logs/``, ``progress.json``, with validation ``best.safetensors``, ``validation.json`` and
``validation_nll.png`` (``model.safetensors`` is then the best prior), and, after evaluation, ``gen_metrics.json`` and ``samples.png``.
"""

from ...runs.prior import (
    TOKENS_META,
    PriorConfig,
    PriorDataConfig,
    PriorEvalConfig,
    PriorModelConfig,
    PriorOptimConfig,
    load_prior,
    load_prior_config,
    read_prior_config,
)
from ..plots import save_image_grid
from .evaluate import evaluate_prior_run, test_nll
from .sample import balanced_labels, decode_codes, load_tokenizer_for, sample_codes
from .tokens import split_tokens, tokenizer_fingerprint
from .train import PriorModule, train_prior
from .validation import ValidationNLL, hold_out

__all__ = [
    "PriorConfig",
    "PriorDataConfig",
    "PriorEvalConfig",
    "PriorModelConfig",
    "PriorModule",
    "PriorOptimConfig",
    "TOKENS_META",
    "balanced_labels",
    "decode_codes",
    "evaluate_prior_run",
    "load_prior",
    "load_prior_config",
    "load_tokenizer_for",
    "read_prior_config",
    "sample_codes",
    "save_image_grid",
    "split_tokens",
    "test_nll",
    "tokenizer_fingerprint",
    "train_prior",
    "ValidationNLL",
    "hold_out",
]
