"""Hub-style checkpoints: a trained tokenizer or prior as a directory in Hugging Face Hub's layout,
saved, loaded (from a local directory or a Hub repo id) and pushed.

A tokenizer's directory::

    config.json         the recipe config (``simvq.runs.schemas``), as a run directory's own
    model.safetensors   the weights (header metadata: ``simvq_kind: tokenizer``, ``recipe``)
    README.md           the model card: what it tokenizes, how to load it, its metrics when known
    metrics.json        the evaluation's numbers, when known

so it is also a run directory every reader of runs accepts (``Tokenizer.from_run``, ``simvq eval``
with the data at hand), and a run directory converts to it by copying what it needs
(``export_run``, ``simvq export-hf RUN DIR``). A prior's directory holds its own ``config.json``,
``tokens.json``, ``model.safetensors`` and card, and the tokenizer it was trained on in the subfolder
``tokenizer/`` (in the layout above): ``tokens.json`` names it by that relative path and records the
SHA-256 of that subfolder's weights, so the prior travels with the one tokenizer that decodes it and
``simvq sample``/``simvq eval-gen`` read the directory as they read a prior run.

Loading reads safetensors only (``load_safetensors``: refused when truncated, foreign or holding
non-finite values); nothing is unpickled. ``huggingface_hub`` is imported only for a repo id or a
push: saving and loading local directories need nothing beyond torch and safetensors.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..utils import atomic_write_text, read_json, write_json
from .config import read_run_config, to_dict
from .files import CHECKPOINT_FILE, METRICS_FILE, WEIGHTS_FILE, read_metrics, training_facts
from .model import build_model, load_run_model, load_weights_into
from .prior import TOKENS_META, load_prior, read_prior_config, tokenizer_fingerprint
from .registry import get_recipe
from .weights import save_weights, weights_metadata

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
GEN_METRICS_FILE = "gen_metrics.json"
PRIOR_TOKENIZER_DIR = "tokenizer"  # a prior's tokenizer, inside the prior's directory
KINDS = ("tokenizer", "prior")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# the metrics a card shows first (the rest stay in metrics.json)
CARD_METRICS = ("usage", "perplexity", "psnr", "ssim", "rfid", "pesq", "stoi", "mel_distance", "dnsmos_ovrl",
                "nll_bits_per_token", "domain_fid", "class_accuracy", "fid", "tokens", "global_step")


# ----------------------------------------------------------------------------- where a directory is


def layout_kind(directory: str | os.PathLike) -> str | None:
    """``"prior"`` for a prior's directory (``tokens.json``), ``"tokenizer"`` for one with a config
    and weights of a tokenizer (by its weights' header when it says, else by its config), None else."""
    directory = Path(directory)
    if (directory / TOKENS_META).is_file():
        return "prior"
    weights = directory / WEIGHTS_FILE
    if weights.is_file():
        declared = weights_metadata(weights).get("simvq_kind")
        if declared:
            return declared
    return "tokenizer" if (directory / CONFIG_FILE).is_file() or (directory / "config.yaml").is_file() else None


def resolve_pretrained(name: str | os.PathLike, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local directory of ``name``: a directory as it is, or a Hub repo id (``owner/name``, when no
    such local path exists) downloaded by ``huggingface_hub.snapshot_download`` (cached; honours
    ``HF_HUB_OFFLINE``)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; name the directory save_pretrained wrote (config.json + {WEIGHTS_FILE})")
        return path
    text = str(name)
    if not _REPO_ID.match(text):
        raise FileNotFoundError(f"{text} does not exist (neither a local directory nor a Hub repo id owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{text} is no local directory, and loading it as a Hub repo id needs huggingface_hub "
                                "(pip install huggingface_hub)") from None
    try:
        return Path(snapshot_download(repo_id=text, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=["*.json", "*.safetensors", CARD_FILE, f"{PRIOR_TOKENIZER_DIR}/*"]))
    except Exception as error:  # noqa: BLE001  (offline, no such repo, no access: huggingface_hub's many error types)
        reason = " ".join(str(error).split())[:300]
        raise FileNotFoundError(f"{text} is no local directory, and the Hub gave no repo of that name "
                                f"({type(error).__name__}: {reason})") from None


def _refuse_kind(directory: Path, name, wanted: str) -> None:
    kind = layout_kind(directory)
    if kind is None:
        raise FileNotFoundError(f"{name} holds no {CONFIG_FILE}: it is not a directory save_pretrained wrote")
    if kind != wanted:
        hint = (f"its tokenizer is the subfolder {directory / PRIOR_TOKENIZER_DIR}" if kind == "prior"
                else "load it with Tokenizer.from_pretrained")
        raise ValueError(f"{name} holds a simvq {kind}, not a {wanted}; {hint}")


# ----------------------------------------------------------------------------- tokenizers


def load_pretrained(name: str | os.PathLike, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                    device=None):
    """``(model in eval mode, config, directory)`` of the tokenizer ``name`` names: a directory
    ``save_pretrained`` wrote (a finished run directory too) or a Hub repo id. Only
    ``model.safetensors`` is read (never a checkpoint); a missing file, another kind of model, a
    config of another library or non-finite weights are refused with one line naming the file."""
    directory = resolve_pretrained(name, revision=revision, cache_dir=cache_dir)
    _refuse_kind(directory, name, "tokenizer")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        training = " (a run still training has only its checkpoint: Tokenizer.from_run reads that)" if (directory / CHECKPOINT_FILE).is_file() else ""
        raise FileNotFoundError(f"{directory} holds no {WEIGHTS_FILE}{training}")
    try:
        config = read_run_config(directory)
    except ValueError as error:
        raise ValueError(f"{directory / CONFIG_FILE} is not a simvq tokenizer config: {error}") from None
    model = load_weights_into(build_model(config), weights)
    return model.to(device or "cpu").eval(), config, directory


def save_pretrained(model, config, directory: str | os.PathLike, *, metrics: dict | None = None, facts: dict | None = None) -> Path:
    """Write the tokenizer ``model`` (built from ``config``) to ``directory`` in the Hub layout:
    ``config.json``, ``model.safetensors``, ``README.md`` (a card with ``metrics`` when given) and
    ``metrics.json``. Every file is written atomically; a training run's directory is refused (its
    checkpoint and logs are not this layout's)."""
    directory = Path(directory)
    if (directory / CHECKPOINT_FILE).is_file() or (directory / TOKENS_META).is_file():
        raise ValueError(f"{directory} is a training run's directory; save_pretrained writes a directory of its own")
    if config is None:
        raise ValueError("save_pretrained needs the tokenizer's recipe config (Tokenizer.from_run and from_pretrained keep it)")
    directory.mkdir(parents=True, exist_ok=True)
    values = to_dict(config)
    write_json(directory / CONFIG_FILE, values)
    save_weights(model, directory / WEIGHTS_FILE, metadata={"simvq_kind": "tokenizer", "recipe": config.recipe})
    if metrics:
        write_json(directory / METRICS_FILE, metrics)
    atomic_write_text(directory / CARD_FILE, tokenizer_card(model, config, metrics=metrics, facts=facts))
    return directory


def export_run(run: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """A tokenizer run directory (or a prior run directory) as a Hub-layout directory: the run's final
    weights (its last checkpoint's, read weights-only, for a run still training), its config and its
    ``metrics.json`` in the card."""
    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"{run} does not exist")
    if layout_kind(run) == "prior":
        return save_pretrained_prior(run, directory)
    model, config, run_dir = load_run_model(run)
    if Path(directory).resolve() == run_dir.resolve():
        raise ValueError(f"{directory} is the run directory itself; name a new directory")
    return save_pretrained(model, config, directory, metrics=read_metrics(run_dir), facts=training_facts(run_dir))


# ----------------------------------------------------------------------------- priors


def save_pretrained_prior(prior_run: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """A prior run as a Hub-layout directory, with its tokenizer in ``directory/tokenizer``. Refused
    when the tokenizer's weights changed since the prior was trained on them (its tokens would
    decode as other images)."""
    prior_run, directory = Path(prior_run), Path(directory)
    prior, config, meta = load_prior(prior_run)
    if directory.resolve() == prior_run.resolve():
        raise ValueError(f"{directory} is the prior's run directory itself; name a new directory")
    tokenizer_dir = Path(meta["tokenizer"])
    if tokenizer_fingerprint(tokenizer_dir) != meta["tokenizer_sha256"]:
        raise ValueError(f"the tokenizer at {tokenizer_dir} changed since this prior was trained on it; nothing was exported")
    model, tokenizer_config, tokenizer_run = load_run_model(tokenizer_dir)
    save_pretrained(model, tokenizer_config, directory / PRIOR_TOKENIZER_DIR, metrics=read_metrics(tokenizer_run),
                    facts=training_facts(tokenizer_run))
    config.tokenizer, config.out_dir = PRIOR_TOKENIZER_DIR, None
    meta = {**meta, "tokenizer": PRIOR_TOKENIZER_DIR, "tokenizer_sha256": tokenizer_fingerprint(directory / PRIOR_TOKENIZER_DIR)}
    write_json(directory / CONFIG_FILE, to_dict(config))
    write_json(directory / TOKENS_META, meta)
    save_weights(prior, directory / WEIGHTS_FILE, metadata={"simvq_kind": "prior"})
    metrics = read_json(prior_run / GEN_METRICS_FILE)
    if metrics:
        write_json(directory / GEN_METRICS_FILE, metrics)
    atomic_write_text(directory / CARD_FILE, prior_card(config, meta, tokenizer_config, metrics=metrics, facts=training_facts(prior_run)))
    return directory


def load_pretrained_prior(name: str | os.PathLike, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                          device=None):
    """``(prior, config, meta)`` of a prior's Hub-layout directory or repo id; ``meta["tokenizer"]``
    is the directory of its tokenizer (``Tokenizer.from_pretrained`` loads it). Only safetensors are read."""
    directory = resolve_pretrained(name, revision=revision, cache_dir=cache_dir)
    _refuse_kind(directory, name, "prior")
    if not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{directory} holds no {WEIGHTS_FILE}")
    read_prior_config(directory)  # config.json and tokens.json are there
    return load_prior(directory, device=device)


# ----------------------------------------------------------------------------- the Hub


def push_to_hub(directory: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "Upload simvq checkpoint", revision: str | None = None) -> str:
    """Upload a ``save_pretrained`` directory to the Hub repo ``repo_id`` (created when missing);
    returns the commit's URL. Needs huggingface_hub, the network and a token with write access
    (``token``, else ``HF_TOKEN`` or the cached login)."""
    directory = Path(directory)
    if layout_kind(directory) is None or not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a directory save_pretrained wrote (config.json + {WEIGHTS_FILE})")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like owner/name, got {repo_id!r}")
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ImportError("pushing to the Hub needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model", commit_message=commit_message,
                               revision=revision)
    return str(getattr(commit, "commit_url", commit))


# ----------------------------------------------------------------------------- model cards




def _front_matter(tags: list[str]) -> str:
    return "---\nlibrary_name: simvq\ntags:\n" + "".join(f"- {tag}\n" for tag in tags) + "---\n\n"


def _metrics_table(metrics: dict | None, facts: dict | None) -> str:
    rows = {**(facts or {}), **(metrics or {})}
    shown = [key for key in CARD_METRICS if isinstance(rows.get(key), (int, float)) and not isinstance(rows.get(key), bool)]
    if not shown:
        return "No evaluation was recorded with these weights.\n"
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {key} | {rows[key]:.6g} |" if isinstance(rows[key], float) else f"| {key} | {rows[key]} |" for key in shown]
    extra = " (all of them in `metrics.json`)" if metrics else ""
    return f"Measured on the recipe's test split{extra}:\n\n" + "\n".join(lines) + "\n"


def _what_it_tokenizes(model, config) -> tuple[str, str, str]:
    """``(tag, the inputs and codes in words, the inference class's name)`` from the kind's registry entry."""
    recipe = get_recipe(config.recipe)
    what = recipe.summary(model, config) if recipe.summary is not None else f"inputs <-> codes in [0, {model.quantizer.codebook_size})"
    cls = getattr(recipe.tokenizer, "path", "").rpartition(":")[2] or getattr(recipe.tokenizer, "__name__", "Tokenizer")
    return f"{config.recipe}-tokenizer", what, cls


def tokenizer_card(model, config, *, metrics: dict | None = None, facts: dict | None = None) -> str:
    """The README.md of a tokenizer's directory."""
    tag, what, cls = _what_it_tokenizes(model, config)
    name, codes = config.quantizer.name, model.quantizer.codebook_size
    steps = (facts or {}).get("global_step") or (metrics or {}).get("global_step")
    trained = f", trained {steps} steps" if steps else ""
    return (
        _front_matter(["simvq", "vector-quantization", tag, name])
        + f"# simvq {config.recipe} tokenizer: `{name}`, K = {codes}\n\n"
        + f"A vector-quantized {config.recipe} tokenizer trained with simvq "
        + f"on `{config.data.name}`{trained}: {what}.\n\n"
        + "## Use\n\n```python\nfrom simvq import Tokenizer\n\n"
        + f"tokenizer = Tokenizer.from_pretrained(\"PATH_OR_REPO_ID\")   # an {cls}\n"
        + "codes = tokenizer.encode(x)\nx_hat = tokenizer.decode(codes)\n```\n\n"
        + "Fine-tune it: `simvq train CONFIG init.from=PATH` (the config's model must fit these weights).\n\n"
        + "## Metrics\n\n" + _metrics_table(metrics, facts) + "\n"
        + "## Files\n\n"
        + "- `config.json`: the recipe it was trained with (`simvq.runs.schemas`);\n"
        + "- `model.safetensors`: the weights (the EMA copy when the recipe kept one).\n"
    )


def prior_card(config, meta: dict, tokenizer_config, *, metrics: dict | None = None, facts: dict | None = None) -> str:
    """The README.md of a prior's directory."""
    grid = "x".join(str(side) for side in meta["grid"])
    classes = f"class-conditional over {meta['num_classes']} classes" if meta["num_classes"] else "unconditional"
    return (
        _front_matter(["simvq", "vector-quantization", "token-prior", "image-generation"])
        + f"# simvq token prior over `{tokenizer_config.quantizer.name}` codes (K = {meta['codebook_size']})\n\n"
        + f"A GPT-style prior ({config.model.layers} layers, width {config.model.dim}), {classes}, over {grid} code grids "
        + f"of the tokenizer in `{PRIOR_TOKENIZER_DIR}/` (its weights' SHA-256 is in `{TOKENS_META}`).\n\n"
        + "## Use\n\n```python\nfrom simvq import Tokenizer\nfrom simvq.runs.pretrained import load_pretrained_prior\n"
        + "from simvq.train.prior import sample_codes\n\n"
        + "prior, config, meta = load_pretrained_prior(\"PATH_OR_REPO_ID\")\n"
        + "tokenizer = Tokenizer.from_pretrained(meta[\"tokenizer\"])\n"
        + "images = tokenizer.decode(sample_codes(prior, 16))\n```\n\n"
        + "or `simvq sample PATH -n 64`.\n\n"
        + "## Metrics\n\n" + _metrics_table(metrics, facts)
    )
