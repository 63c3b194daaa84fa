"""The one registry of recipe kinds. A config's ``recipe:`` key names its kind, and everything that
differs between kinds is looked up here: ``simvq train``/``simvq eval``, the sweep (``simvq bench``),
``load_recipe`` and ``Tokenizer.from_run`` hold no switch of their own. A new modality is one file
(its schema, model builder, ``Modality`` and evaluation) and one ``register_recipe`` call:

    register_recipe(Recipe("toy", schema=ToyConfig, build_model=build_toy, modality=ToyModality, evaluate_run=evaluate_toy))

The parts that need Lightning (the ``Modality``, the train entry, the evaluation) and the inference
class may be given as ``Named("package.module:attribute")``: imported when first called, so loading a
config, reading a run or building the command line never loads Lightning. This module imports none
of them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .builders import audio_summary, build_codec, build_image_model, image_summary, image_token_grid
from .schemas import AudioConfig, TokenizerConfig

DEFAULT_RECIPE = "image"  # the kind of a config file that names none


@dataclass(frozen=True)
class Named:
    """The callable ``path`` names (``"package.module:attribute"``), imported when it is called."""

    path: str

    def __call__(self, *args, **kwargs):
        module, _, attribute = self.path.partition(":")
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)


@dataclass(frozen=True)
class Recipe:
    """One kind of tokenizer recipe: what the commands, the sweep and the inference API ask of a kind.

    - ``schema``: its config dataclass; the ``recipe`` field's default is ``name``;
    - ``build_model(config)``: the autoencoder, ``model(x) -> (reconstruction, QuantizerOutput)`` with
      ``.encoder``, ``.quantizer``, ``.decoder``, ``.encode`` and ``.decode`` (no Lightning);
    - ``modality(config)``: its ``simvq.train.recipe.Modality`` (data, losses, discriminator, callbacks);
    - ``evaluate_run(run, *, progress, device, write, report, shard, **options)``: measures a run on its
      test split, writes ``metrics.json``, returns the metrics;
    - ``train(config, *, evaluate, progress)``: trains (or resumes) a run, returns its directory; the
      default is the tokenizer recipe with the kind's ``modality``;
    - ``tokenizer(model, config)``: the inference object ``Tokenizer.from_run`` gives for a run;
    - ``eval_options``: ``simvq eval``'s options this kind takes, mapped to ``evaluate_run`` keywords;
    - ``result_columns``, ``bench``, ``sweep_options``, ``token_grid``: the sweep's table for this kind
      (its CSV columns; ``simvq bench NAME``'s sweep file, run directories and results CSV, None: no
      such command; the settings it applies beyond methods x sizes x seeds x budget: ``fid_images``
      (``eval.fid_images``), ``plateau`` (progress checks, ``--until-plateau``), ``stages``, ``grid``;
      the tokens of one example in words);
    - ``summary(model, config)``: what a trained tokenizer of this kind maps to what, in words (its model
      card, ``simvq.runs.pretrained``); ``onnx(model, config)``: its ONNX graphs
      (``simvq.export.onnx.OnnxGraphs``; None: ``simvq export-onnx`` refuses the kind).
    """

    name: str
    schema: type
    build_model: Callable
    modality: Callable
    evaluate_run: Callable
    train: Callable = Named("simvq.train.recipe:train_with_modality")
    tokenizer: Callable = Named("simvq.tokenizer:Tokenizer")
    eval_options: Mapping[str, str] = field(default_factory=dict)
    result_columns: Sequence[str] = ()
    bench: tuple[str, str, str] | None = None
    sweep_options: tuple[str, ...] = ()
    token_grid: Callable | None = None
    summary: Callable | None = None
    onnx: Callable | None = None


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the registry (a test or a plug-in package may call this; nothing to edit here)."""
    if declared_kind(recipe.schema) != recipe.name:
        raise ValueError(f"recipe {recipe.name!r}: its schema {recipe.schema.__name__} declares recipe={declared_kind(recipe.schema)!r}")
    if recipe.name in _RECIPES and _RECIPES[recipe.name] != recipe:
        raise ValueError(f"recipe name {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The kind registered as ``name``."""
    if name not in _RECIPES:
        raise ValueError(f"recipe: expected one of {sorted(_RECIPES)}, got {name!r}")
    return _RECIPES[name]


def recipe_names() -> list[str]:
    """The registered kinds, in the order they were registered (the built-in ones first)."""
    return list(_RECIPES)


def declared_kind(schema: type) -> str | None:
    """The kind a schema declares: its ``recipe`` field's default (None without one)."""
    return next((f.default for f in dataclasses.fields(schema) if f.name == "recipe"), None)


# ----------------------------------------------------------------------------- the built-in kinds

# the image benchmark's columns (`simvq bench image`, `simvq bench ablations`)
IMAGE_RESULT_COLUMNS = [
    "variant",
    "method",
    "codebook_size",
    "codes",
    "seed",
    "steps",  # steps actually trained
    "max_steps",  # the step cap (the budget)
    "plateau",  # true: stopped by the plateau criterion; false: reached the cap (or ran without it)
    "schedule",  # the learning-rate schedule, e.g. "warmup 100 + cosine to 0.1 x 0.001"
    "grid",  # tokens per image, e.g. 7x7
    "usage",  # fraction of codes used over `tokens` tokens (the recipe's eval.usage_splits)
    "tokens",
    "tokens_per_code",
    "usage_test",
    "tokens_test",
    "usage_chao1",
    "coverage",
    "usage_reference",
    "perplexity",
    "perplexity_per_code",  # perplexity / K: 1 for perfectly even use
    "entropy_bits",
    "usage_at_50",  # usage expected from 50 counted tokens per code (subsampled), so every K compares
    "dead_fraction",
    "psnr",
    "ssim",
    "rfid",
    "rfid_images",
    "psnr_last20",  # PSNR (dB) at the last check minus at the check 80% through the run
    "usage_last20",  # the same for usage (fraction), on the checks' images
    "check_tokens",  # tokens a check counts (its images x grid)
    "train_seconds",
    "seconds_per_step",
    "device",
    "precision",  # the autoencoder's, as trained (trainer.precision "auto" follows the machine); sessions' joined
    "run_dir",
]

# the speech codec's columns (`simvq bench audio`): usage, perplexity and coverage over every token of
# the test split; PESQ, STOI, mel distance and DNSMOS (when installed) averaged over its utterances
AUDIO_RESULT_COLUMNS = [
    "method",
    "codebook_size",
    "codes",  # the codes the quantizer really has (FSQ's grid: 4,375 for K=4,096)
    "seed",
    "steps",
    "max_steps",
    "usage",
    "tokens",
    "tokens_per_code",
    "usage_chao1",
    "coverage",
    "usage_reference",
    "perplexity",
    "dead_fraction",
    "pesq",
    "stoi",
    "mel_distance",
    "dnsmos_ovrl",
    "dnsmos_sig",
    "dnsmos_bak",
    "dnsmos_ovrl_reference",  # the test utterances themselves: the ceiling
    "utterances",
    "pesq_failures",  # utterances PESQ / STOI could not score (left out of their means)
    "stoi_failures",
    "tokens_per_second",
    "train_seconds",
    "seconds_per_step",
    "device",
    "precision",  # the autoencoder's, as trained (trainer.precision "auto" follows the machine); sessions' joined
    "run_dir",
]


register_recipe(Recipe(
    "image",
    schema=TokenizerConfig,
    build_model=build_image_model,
    modality=Named("simvq.train.image:ImageModality"),
    evaluate_run=Named("simvq.train.image:evaluate_run"),
    train=Named("simvq.train.image:train_tokenizer"),
    eval_options={"fid_images": "fid_images", "max_images": "max_images", "batch_size": "batch_size"},
    result_columns=IMAGE_RESULT_COLUMNS,
    bench=("configs/bench/image.yaml", "runs/bench", "results.csv"),
    sweep_options=("fid_images", "plateau", "stages", "grid"),
    token_grid=image_token_grid,
    summary=image_summary,
    onnx=Named("simvq.export.onnx:ImageGraphs"),
))
register_recipe(Recipe(
    "audio",
    schema=AudioConfig,
    build_model=build_codec,
    modality=Named("simvq.train.audio:AudioModality"),
    evaluate_run=Named("simvq.train.audio:evaluate_run"),
    tokenizer=Named("simvq.tokenizer:AudioTokenizer"),
    eval_options={"max_images": "max_utterances"},  # `--max-images` counts utterances
    result_columns=AUDIO_RESULT_COLUMNS,
    bench=("configs/bench/speech.yaml", "runs/bench/speech", "speech_results.csv"),
    summary=audio_summary,
    onnx=Named("simvq.export.onnx:AudioGraphs"),
))
