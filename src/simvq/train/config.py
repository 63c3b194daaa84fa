"""Recipe configuration: dataclass schemas (nanoGPT style) filled by OmegaConf from YAML files and
dotted overrides.

    config = load_config("configs/fmnist.yaml", ["quantizer.name=vq", "trainer.max_steps=200"])

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.speech import SpeechCorpusSpec


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
    schedule: str = "constant"  # after the warm-up: constant | cosine (decays to min_lr_fraction x lr at trainer.max_steps)
    min_lr_fraction: float = 0.1  # cosine: the last step's rate as a fraction of lr
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
    precision: str = "auto"  # auto: bf16-mixed on CUDA and on CPUs with native bf16 (simvq.cpu), else 32-true; or any Lightning precision
    channels_last: bool = True  # NHWC convolutions (faster in oneDNN and cuDNN)
    compile: bool = False  # torch.compile the encoder and decoder (pays on long runs; ~1 min to compile on CPU)
    progress_bar: bool = True


@dataclass
class PlateauConfig:
    """Progress checks, and the optional stop on a plateau: every ``check_every`` steps, and at the
    last step, the model (its EMA copy when there is one) is measured on ``eval_images`` test images
    (``plateau.json`` keeps the history: learning curves, and how much a run still moved over its last
    steps). With ``stop``, a check improves when usage rises by more than ``usage_tolerance``
    (absolute fraction) or PSNR by more than ``psnr_tolerance`` dB over the best so far, and training
    stops after ``patience`` checks in a row without improvement (and not before ``min_steps``);
    ``trainer.max_steps`` stays the cap, and a criterion that could not fire before it is refused."""

    enabled: bool = False  # run the checks
    stop: bool = True  # stop at the plateau; false: checks only, train to trainer.max_steps
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
    recipe: str = "image"  # the kind of tokenizer a file or run holds: image | audio (its own schema)
    out_dir: str = "runs/tokenizer"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plateau: PlateauConfig = field(default_factory=PlateauConfig)


# ----------------------------------------------------------------------------- the audio recipe


@dataclass
class AudioDataConfig:
    name: str = "espeak_corpus"  # espeak_corpus (built offline with espeak-ng on first use) | wav_folder
    root: str = "data/speech"  # the corpus directory, or the folder of training audio
    test_root: str | None = None  # wav_folder: held-out audio; None: evaluate on root itself
    sample_rate: int = 16000
    clip_seconds: float = 1.0  # random training clips; evaluation uses whole utterances
    batch_size: int = 16
    in_memory: bool = True  # the train split held as int16, batches gathered by one index op
    corpus: SpeechCorpusSpec = field(default_factory=SpeechCorpusSpec)  # espeak_corpus: what to synthesise
    workers: int = 2  # parallel syntheses while the corpus is built


@dataclass
class CodecModelConfig:
    """``simvq.models.AudioCodec``'s keyword arguments, as they are."""

    strides: tuple[int, ...] = (2, 4, 5, 8)
    channels: int = 8
    dim: int = 64
    residual_layers: int = 1
    bottleneck_blocks: int = 1
    decoder: str = "vocos"  # vocos (ConvNeXt + iSTFT) | transposed (SEANet mirror)
    decoder_width: int = 128
    decoder_blocks: int = 4
    weight_norm: bool = True


@dataclass
class MelConfig:
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80


@dataclass
class AudioLossConfig:
    mel_weight: float = 45.0  # log-mel L1 (HiFi-GAN / Vocos weight)
    stft_weight: float = 1.0  # multi-resolution STFT
    mel: MelConfig = field(default_factory=MelConfig)
    quantizer_weight: float = 1000.0  # the official SimVQ audio recipe's commitment weight
    discriminator: bool = False  # multi-period + multi-resolution discriminators with feature matching
    discriminator_weight: float = 1.0
    feature_matching_weight: float = 2.0
    discriminator_start: int = 0
    discriminator_channels: int = 16


@dataclass
class AudioTrainerConfig(TrainerConfig):
    max_steps: int = 20_000
    precision: str = "32"
    checkpoint_every: int = 1000
    channels_last: bool = False  # (images only)
    sample_every: int = 1000  # steps between reconstructed wavs + spectrograms of a few test utterances; 0: off


@dataclass
class AudioEvalConfig:
    max_utterances: int | None = None  # None: the whole test split; N: N utterances evenly spaced across it
    samples: int = 4  # utterances written as wav + spectrogram PNG
    dnsmos: bool | None = None  # None: when speechmos and onnxruntime are installed
    usage_splits: tuple[str, ...] = ("test",)  # splits whose tokens the reported usage counts, e.g. [train, test]


@dataclass
class AudioConfig:
    recipe: str = "audio"
    out_dir: str = "runs/speech"
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    model: CodecModelConfig = field(default_factory=CodecModelConfig)
    quantizer: QuantizerConfig = field(default_factory=lambda: QuantizerConfig(codebook_size=4096))
    loss: AudioLossConfig = field(default_factory=AudioLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, betas=(0.9, 0.999), warmup_steps=1000))
    trainer: AudioTrainerConfig = field(default_factory=AudioTrainerConfig)
    eval: AudioEvalConfig = field(default_factory=AudioEvalConfig)


# ----------------------------------------------------------------------------- (de)serialisation


def to_dict(config) -> dict:
    """A plain dict (tuples as lists) fit for JSON/YAML."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_structured(schema: type, path: str | Path | None = None, overrides: list[str] | None = None):
    """An instance of the dataclass ``schema``: its defaults, then the YAML (or JSON) file at ``path``,
    then ``overrides`` (``section.key=value``, values parsed as YAML). OmegaConf checks every key and
    type; a mistake is one ``ValueError`` naming the key (``optim.lr: expected a float, got 'abc'``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config = OmegaConf.structured(schema)
    if path is not None:
        config = _merged(config, lambda: read_config_file(Path(path)), schema, where=str(path))
    for override in overrides or []:
        if "=" not in override:
            raise ValueError(f"override {override!r} must look like section.key=value")
        key, raw = (part.strip() for part in override.split("=", 1))
        config = _merged(config, lambda: _override(schema, key, raw), schema, where=key, value=raw)
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
        value = None if hint != str and raw.lower() in ("null", "none", "~") else raw
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


def recipe_schemas() -> dict[str, type]:
    """``recipe`` value -> the schema of its config."""
    return {"image": TokenizerConfig, "audio": AudioConfig}


def recipe_kind(path: str | Path | None = None) -> str:
    """The kind of recipe a config file holds: its ``recipe:`` key (``image`` when it names none)."""
    values = read_config_file(Path(path)) if path is not None else {}
    kind = values.get("recipe", "image")
    schemas = recipe_schemas()
    if kind not in schemas:
        raise ValueError(f"recipe: expected one of {sorted(schemas)}, got {kind!r}" + (f" (in {path})" if path else ""))
    return kind


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None):
    """A tokenizer recipe of the kind its ``recipe:`` key names (``image`` when it names none),
    loaded and checked against that kind's schema."""
    return check_config(load_structured(recipe_schemas()[recipe_kind(path)], path, overrides))


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
    ("trainer.num_nodes", 1),
    ("data.sample_rate", 8000),
    ("trainer.sample_every", 0),
)


def check_config(config):
    """Values no run of any recipe can use, refused naming the key."""
    kind = next(name for name, schema in recipe_schemas().items() if type(config) is schema)
    if config.recipe != kind:  # the key is there to be read, not set
        raise ValueError(f"recipe: this is the {kind} recipe's schema, got recipe={config.recipe!r}; load the file with load_recipe")
    for key, minimum in _POSITIVE:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name, None)  # (a key of another recipe's schema)
        if value is not None and value < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {value}")
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
    splits = config.eval.usage_splits  # checked now: it is read only after training
    if not splits or not set(splits) <= {"train", "test"}:
        raise ValueError(f"eval.usage_splits must list 'train' and/or 'test', got {list(splits)}")
    return config


def save_config(config: TokenizerConfig, directory: str | Path) -> None:
    """``config.yaml`` and ``config.json`` in ``directory``, each written atomically."""
    import yaml

    from ..utils import atomic_write_text

    values = to_dict(config)
    atomic_write_text(Path(directory) / "config.json", json.dumps(values, indent=2) + "\n")
    atomic_write_text(Path(directory) / "config.yaml", yaml.safe_dump(values, sort_keys=False))


def read_run_config(run_dir: str | Path):
    """The config a run was trained with (``config.json``, else ``config.yaml``), of its recipe's schema."""
    run_dir = Path(run_dir)
    for name in ("config.json", "config.yaml"):
        if (run_dir / name).is_file():
            return load_recipe(run_dir / name)
    raise FileNotFoundError(f"{run_dir} holds no config.json or config.yaml; is it a simvq run directory?")
