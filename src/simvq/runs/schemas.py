"""The config schemas of the tokenizer recipes: plain dataclasses (nanoGPT style) that OmegaConf fills
from YAML and dotted overrides (``simvq.runs.config``). ``TokenizerConfig`` is the image recipe's,
``AudioConfig`` the audio recipe's; the sections they share (``QuantizerConfig``, ``OptimConfig``,
``TrainerConfig``) are the ones every tokenizer recipe reads. Each schema's ``recipe`` field names its
kind in ``simvq.runs.registry``. Imports no training framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.speech import SpeechCorpusSpec

# ----------------------------------------------------------------------------- the image recipe (and the shared sections)


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
    # name also takes class_folders (ImageNet's root/<class>/<image> layout: root = train, test_root = val)
    # and webdataset (tar shards, simvq.data.ShardedImages: root = the train shards, test_root = the val shards)
    mix_shards: int = 8  # webdataset: shards whose images are shuffled together


@dataclass
class ModelConfig:
    channels: int = 64  # width of the first level
    channel_multipliers: tuple[int, ...] = (1, 2, 2)  # width per level, relative to channels
    downsamplings: int = 2  # stride-2 convolutions; levels = downsamplings + 1
    num_res_blocks: int = 1  # residual blocks per level
    norm_groups: int = 8  # GroupNorm groups (must divide every level's width)
    dim: int = 64  # latent (code) dimension d
    mid_blocks: int | None = None  # residual blocks at the latent resolution (encoder end, decoder start); None: 1 (0 without num_res_blocks)


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
    elbo_weight: str = "arelbo"  # a VAE quantizer's (sqvae) latent terms: arelbo (weighed by the pixel loss each step) | fixed (its kl_weight)
    discriminator: bool = False  # PatchGAN (Isola et al. 2017) with hinge loss, as in VQGAN
    discriminator_start: int = 10_000  # step the adversarial loss switches on (VQGAN's disc_start)
    discriminator_weight: float = 0.1
    discriminator_channels: int = 64
    discriminator_layers: int = 3
    perceptual_weight: float = 0.0  # LPIPS (simvq.models.LPIPS) on the reconstruction; 0: off
    perceptual_net: str = "vgg"  # vgg (VQGAN / the official SimVQ loss) | alex
    perceptual_backbone: str | None = None  # torchvision's ImageNet weights file (vgg16-397923af.pth); None: torch hub's cache
    perceptual_heads: str | None = None  # lpips's linear heads (weights/v0.1/vgg.pth); None: from the installed lpips package


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
    lpips_backbone: str | None = None  # LPIPS-AlexNet in `simvq eval`: torchvision's alexnet-owt-7be5be79.pth; None: torch hub's cache, else skipped
    lpips_heads: str | None = None  # its linear heads (weights/v0.1/alex.pth); None: from the installed lpips package


INIT_QUANTIZER = ("keep", "reinit")
INIT_OPTIMIZER = ("fresh", "resume")


def _keyword_section(name: str, fields: list[tuple[str, str, Any]], doc: str) -> type:
    """A dataclass whose keys may be Python keywords (``init.from``): the class statement cannot spell
    such a field, and ``dataclass`` cannot generate an ``__init__``/``__repr__``/``__eq__`` naming
    it, so these three are written here over the field list. OmegaConf fills it like any section."""
    names = [key for key, _, _ in fields]

    def __init__(self, **values):
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(f"{name} has no key(s) {unknown}; its keys are {names}")
        for key, _, default in fields:
            setattr(self, key, values.get(key, default))

    def __repr__(self):
        return f"{name}(" + ", ".join(f"{key}={getattr(self, key)!r}" for key in names) + ")"

    def __eq__(self, other):
        return type(self) is type(other) and all(getattr(self, key) == getattr(other, key) for key in names)

    namespace = {"__annotations__": {key: hint for key, hint, _ in fields}, "__doc__": doc, "__module__": __name__,
                 "__qualname__": name, "__init__": __init__, "__repr__": __repr__, "__eq__": __eq__, "__hash__": None,
                 **{key: default for key, _, default in fields}}
    return dataclass(init=False, repr=False, eq=False)(type(name, (), namespace))


InitConfig = _keyword_section("InitConfig", [
    ("from", "str | None", None),  # a trained tokenizer to start from: a run directory or a save_pretrained directory
    ("quantizer", "str", "keep"),  # keep: its quantizer too | reinit: a fresh quantizer from this config's quantizer section
    ("optimizer", "str", "fresh"),  # fresh | resume: the source run's Adam moments (its checkpoints/last.ckpt; same shapes)
], doc="""Fine-tuning: ``init.from`` names a trained tokenizer whose weights a new run starts from
(``simvq train CONFIG init.from=RUN_OR_DIR``). The config still describes the model: every weight
must fit it (the keys that do not are named). ``init.quantizer=reinit`` keeps the encoder and decoder
and builds the quantizer afresh (another method or codebook size may then be given); ``init.optimizer
=resume`` continues the source run's generator optimizer state (its moments; the schedule starts
over). A run that resumes its own checkpoint ignores ``init``. Read by ``simvq.runs.finetune``.""")


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
    init: InitConfig = field(default_factory=InitConfig)


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
    # name also takes libritts (simvq.data.speech.LibriTTS: root = the LibriTTS folder)
    train_splits: tuple[str, ...] = ("train-clean-100", "train-clean-360", "train-other-500")  # libritts: the training splits
    test_splits: tuple[str, ...] = ("test-clean",)  # libritts: the evaluation splits
    num_workers: int = 0  # libritts streamed from disk (in_memory: false): DataLoader workers reading the files


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
    lstm_layers: int = 0  # SEANet's LSTM (with a skip) at the token rate before the last conv; 0: none (EnCodec / WavTokenizer: 2)
    decoder_n_fft: int | None = None  # the Vocos iSTFT head's n_fft; None: 4 hops (1280 at hop 320)


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
    floor_dbfs: float | None = -80.0  # mel and STFT magnitudes floored at white noise this loud (simvq.data.spectral); null: 1e-5
    quantizer_weight: float = 1000.0  # the official SimVQ audio recipe's weight on out.loss (per method: configs/speech.yaml)
    discriminator: bool = False  # multi-period + multi-resolution discriminators with feature matching
    discriminator_weight: float = 1.0
    feature_matching_weight: float = 2.0
    discriminator_start: int = 0
    discriminator_channels: int = 16
    discriminator_max_channels: int = 128  # the multi-period discriminator's widest layer (HiFi-GAN / Vocos: 1024)
    resolution_discriminator_channels: int | None = None  # the multi-resolution discriminator's width; None: discriminator_channels (Vocos: 64)
    dac_discriminator: bool = False  # add DAC's discriminator (its multi-period + multi-band complex-STFT parts; LSGAN + feature matching)
    dac_generator_weight: float = 1.0  # weight of its generator terms (adversarial + feature matching)
    dac_channels: int = 32  # its widths: multi-period channels..32x channels, multi-band channels (DAC: 32)


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
    init: InitConfig = field(default_factory=InitConfig)
