"""Measuring a trained prior (``gen_metrics.json``): the likelihood of the test split's tokens, and
the quality of its samples decoded by the tokenizer (domain FID, KID, precision/recall and class
accuracy on Fashion-MNIST, Inception FID when its weights are there), beside what bounds them: the
real-vs-real floors and the tokenizer's own reconstructions (rFID).

Sampling can be tuned fairly (``SamplingSweep``): every setting of a small grid (temperature x
top-p x guidance scale) draws one sample set (seed A) and the lowest domain FID wins; then the
default setting (temperature 1, no truncation, no guidance) and the winner are both measured on a
fresh sample set (another seed), so the tuned number is not the maximum of noisy draws it was
picked on.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...runs.files import training_facts
from ...runs.prior import load_prior
from ...utils import write_json
from ..plots import save_image_grid
from .sample import balanced_labels, decode_codes, load_tokenizer_for, sample_codes
from .tokens import split_tokens

VALIDATION_FILE = "validation.json"  # written by the prior's training: best step, its NLL, why it stopped
SWEEP_FILE = "sampling_sweep.json"


@dataclass(frozen=True)
class SamplingSetting:
    """One way to sample a prior; the default is plain ancestral sampling."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float | None = None

    def options(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        """``T=0.9 top-p=0.9 CFG=1.5``; the parts left at the default are omitted (``T=1`` alone: the default)."""
        parts = [f"T={self.temperature:g}"]
        parts += [f"top-k={self.top_k}"] if self.top_k is not None else []
        parts += [f"top-p={self.top_p:g}"] if self.top_p is not None else []
        parts += [f"CFG={self.cfg_scale:g}"] if self.cfg_scale is not None else []
        return " ".join(parts)


DEFAULT_SAMPLING = SamplingSetting()


@dataclass
class SamplingSweep:
    """The grid a prior's sampling is tuned over (guidance scales only for a class-conditional prior),
    the sample set each setting is scored on (``samples`` at ``seed``, by domain FID), and none of it
    reused for the reported numbers (those come from a fresh set at the evaluation seed)."""

    temperatures: list[float] = field(default_factory=lambda: [0.8, 0.9, 1.0])
    top_ps: list[float | None] = field(default_factory=lambda: [None, 0.9])
    cfg_scales: list[float | None] = field(default_factory=lambda: [None, 1.5, 3.0])
    samples: int = 1000
    seed: int = 1

    def settings(self, conditional: bool) -> list[SamplingSetting]:
        scales = self.cfg_scales if conditional else [None]
        return [SamplingSetting(temperature=t, top_p=p, cfg_scale=c) for c in scales for p in self.top_ps for t in self.temperatures]

    def describe(self, conditional: bool) -> str:
        """``T {0.8, 0.9, 1} x top-p {none, 0.9} x CFG {none, 1.5, 3}`` (no guidance axis when unconditional)."""
        def values(items):
            return "{" + ", ".join("none" if v is None else f"{v:g}" for v in items) + "}"

        axes = [f"T {values(self.temperatures)}", f"top-p {values(self.top_ps)}"] + ([f"CFG {values(self.cfg_scales)}"] if conditional else [])
        return " x ".join(axes)


@torch.no_grad()
def test_nll(prior, codes: torch.Tensor, labels: torch.Tensor | None, *, batch_size: int = 500) -> float:
    """Mean negative log-likelihood per token (nats) of ``codes`` ``(N, h, w)`` given ``labels``."""
    total = 0.0
    for start in range(0, codes.shape[0], batch_size):
        chunk = codes[start : start + batch_size].long().to(prior.position_embedding.device)
        chunk_labels = labels[start : start + batch_size].to(chunk.device) if labels is not None else None
        total += prior.loss(chunk, chunk_labels).item() * chunk.shape[0]
    return total / codes.shape[0]


def evaluate_prior_run(
    run_dir: str | os.PathLike,
    *,
    samples: int | None = None,
    fid_samples: int | None = None,
    cfg_scale: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    sweep: SamplingSweep | None = None,
    device=None,
    progress: bool = True,
    write: bool = True,
    report=None,
) -> dict:
    """Measure a prior run; returns (and writes to ``gen_metrics.json``) a flat dict:

    - ``prior_parameters``, ``trained_steps`` and, from the training's ``validation.json`` when it
      is there, ``best_step``, ``best_val_nll_bits_per_token``, ``stop_reason``;
    - ``nll_bits_per_token``, ``nll_bits_per_image`` on the test split's tokens (given their true
      labels), and for a conditional prior ``nll_bits_per_token_unconditional`` (the null class);
    - ``test_entropy_bits``, ``test_perplexity``, ``test_usage``, ``test_tokens``: the unigram
      statistics of those tokens (a prior that has learned nothing scores ``test_entropy_bits``);
    - on ``samples`` samples, for Fashion-MNIST (the cached classifier's features against the whole
      test split): ``domain_fid``, ``domain_kid`` ± ``domain_kid_std`` (over 100 subsets of 1,000),
      ``domain_precision``, ``domain_recall`` (k=3, against as many test images), ``class_accuracy``
      of the class-conditional samples, and ``classifier_test_accuracy``;
    - ``fid``, ``fid_samples``: Inception FID against a fixed test subset of ``fid_samples`` images
      (skipped with 0 or without the Inception weights: ``fid_skipped`` says why);
    - floors, real training images in place of samples (as many): ``domain_fid_train``,
      ``domain_kid_train`` (± ``domain_kid_std_train``), ``domain_precision_train``,
      ``domain_recall_train``, ``fid_train``;
    - the tokenizer's reconstructions of those training images in place of samples: ``domain_rfid``
      and ``rfid`` (Inception), what its decoder alone costs;
    - ``sampling`` (the setting's label) and ``sample_*`` (its options and seed); ``eval_seconds``.

    With a ``sweep``, the setting is tuned first (``SWEEP_FILE`` lists every setting's score on
    the tuning set; ``sampling_tuned``, ``tuned_*``, ``tune_seed``, ``tune_samples``,
    ``tune_domain_fid``), then the sample metrics above describe the default setting and the same
    names with ``_tuned`` appended the chosen one, both on a fresh set at ``seed``.

    Options left as None take the run's ``eval`` config. ``report(metrics)`` is called before the
    file is written (the CLI prints there).
    """
    from ...models.prior import check_sampling
    from ...utils import check_count

    check_count(samples, "samples", minimum=0)  # before the run is read
    check_count(fid_samples, "fid_samples", minimum=0)
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale)
    started, cpu_started = time.time(), time.process_time()
    run_dir = Path(run_dir)
    prior, config, meta = load_prior(run_dir, device=device)
    tokenizer = load_tokenizer_for(meta, device=device)
    ev = config.eval
    samples = ev.samples if samples is None else samples
    fid_samples = ev.fid_samples if fid_samples is None else fid_samples
    seed = ev.seed if seed is None else seed
    conditional = meta["num_classes"] > 0
    setting = SamplingSetting(
        temperature=ev.temperature if temperature is None else temperature,
        top_k=ev.top_k if top_k is None else top_k,
        top_p=ev.top_p if top_p is None else top_p,
        cfg_scale=(ev.cfg_scale if cfg_scale is None else cfg_scale) if conditional else None,
    )
    if sweep is not None:
        if sweep.seed == seed:
            raise ValueError(f"the tuning set's seed ({sweep.seed}) must differ from the evaluation seed ({seed}): a fresh set measures the choice")
        setting = DEFAULT_SAMPLING
    check_sampling(temperature=setting.temperature, top_k=setting.top_k, top_p=setting.top_p,  # the run's eval section too
                   cfg_scale=setting.cfg_scale, names={k: f"eval.{k}" for k in ("temperature", "top_k", "top_p", "cfg_scale")})
    metrics: dict = {"tokenizer": meta["tokenizer"], "codebook_size": meta["codebook_size"], "grid": meta["grid"],
                     "num_classes": meta["num_classes"], "sampling": setting.label,
                     **{f"sample_{k}": v for k, v in setting.options().items()}, "sample_seed": seed}
    metrics.update(training_record(run_dir, prior))
    metrics.update(token_metrics(prior, tokenizer, run_dir, meta, progress=progress))
    measurer = SampleMeasurer(prior, tokenizer, meta, batch_size=ev.batch_size, fid_cache_dir=ev.fid_cache_dir, device=device,
                              progress=progress)
    if fid_samples and (reason := _inception_missing()):
        metrics["fid_skipped"], fid_samples = reason, 0
    sweep_rows, tuned = None, None
    if sweep is not None:
        sweep_rows, tuned = measurer.tune(sweep)
        best = min(sweep_rows, key=lambda row: row["domain_fid"])
        metrics.update({"sampling_tuned": tuned.label, **{f"tuned_{k}": v for k, v in tuned.options().items()},
                        "tune_grid": sweep.describe(conditional), "tune_seed": sweep.seed, "tune_samples": sweep.samples,
                        "tune_settings": len(sweep_rows),
                        "tune_domain_fid": best["domain_fid"]})
    images = measurer.measure(setting, metrics, samples=samples, fid_samples=fid_samples, seed=seed)
    tuned_images = measurer.measure(tuned, metrics, samples=samples, fid_samples=fid_samples, seed=seed, suffix="_tuned") if tuned else None
    metrics.update(measurer.floors(samples=samples, fid_samples=fid_samples))
    metrics.update(measurer.reconstructions(samples=samples, fid_samples=fid_samples))
    metrics["eval_seconds"] = round(time.time() - started, 1)
    metrics["eval_cpu_seconds"] = round(time.process_time() - cpu_started, 1)  # wall time misleads on a shared machine
    if report is not None:
        report(metrics)
    if write:
        write_json(run_dir / "gen_metrics.json", metrics)
        if sweep_rows is not None:
            sweep_record = {"grid": sweep.describe(conditional), "seed": sweep.seed, "samples": sweep.samples, "chosen": tuned.label,
                            "settings": sweep_rows}
            write_json(run_dir / SWEEP_FILE, sweep_record)
        per_row = meta["num_classes"] or 8  # one column per class for a conditional prior
        if images is not None and ev.grid_samples:
            save_image_grid(images[: ev.grid_samples], run_dir / "samples.png", per_row=per_row)
        if tuned_images is not None and ev.grid_samples:
            save_image_grid(tuned_images[: ev.grid_samples], run_dir / "samples_tuned.png", per_row=per_row)
    return metrics


def training_record(run_dir: Path, prior) -> dict:
    """The prior's size (parameters, the tied head counted once), the steps it trained (``progress.json``)
    and, when the training wrote ``validation.json``, its best step, that step's validation NLL, why
    training stopped, and how much the validation NLL still moved over the last 20% of the steps
    (``val_nll_last20``: the last check minus the check nearest 80% of the way; negative: still falling)."""
    record: dict = {"prior_parameters": sum(p.numel() for p in prior.parameters())}
    if (step := training_facts(run_dir).get("global_step")) is not None:
        record["trained_steps"] = step
    validation_file = run_dir / VALIDATION_FILE
    if validation_file.is_file():
        validation = json.loads(validation_file.read_text())
        for name, key in (("best_step", "best_step"), ("best_val_nll_bits_per_token", "best_nll_bits_per_token"), ("stop_reason", "stop_reason")):
            if validation.get(key) is not None:
                record[name] = validation[key]
        if (change := last20_change(validation.get("history") or [])) is not None:
            record["val_nll_last20"] = change
    return record


def last20_change(history: list[dict]) -> float | None:
    """The last validation NLL minus the one checked nearest 80% of the last check's step."""
    if len(history) < 2:
        return None
    last = history[-1]
    earlier = min(history[:-1], key=lambda point: abs(point["step"] - 0.8 * last["step"]))
    return float(last["nll_bits_per_token"] - earlier["nll_bits_per_token"])


def token_metrics(prior, tokenizer, run_dir: Path, meta: dict, *, progress: bool) -> dict:
    """The likelihood of the test split's tokens (bits, given their labels and, for a conditional
    prior, given the null class) and their unigram statistics."""
    from ...metrics.generation import bits, token_statistics
    from ...quantizers.base import code_counts

    codes, labels = split_tokens(tokenizer, run_dir, "test", fingerprint=meta["tokenizer_sha256"], progress=progress)
    conditional = meta["num_classes"] > 0
    nll = test_nll(prior, codes, labels if conditional else None)
    metrics = {"nll_bits_per_token": bits(nll), "nll_bits_per_image": bits(nll) * codes[0].numel()}
    if conditional:
        nll_null = test_nll(prior, codes, torch.full_like(labels, prior.null_class))
        metrics["nll_bits_per_token_unconditional"] = bits(nll_null)
    stats = token_statistics(code_counts(codes.long(), meta["codebook_size"]))
    metrics.update({f"test_{k}": v for k, v in stats.items() if k != "codebook_size"})
    metrics["test_images"] = codes.shape[0]
    return metrics


def _inception_missing() -> str | None:
    from ...metrics import image as image_metrics

    try:
        image_metrics.inception_weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as error:  # FID is optional: say why it is missing
        return str(error).splitlines()[0]
    return None


class SampleMeasurer:
    """Draws, decodes and measures sample sets of one prior against the test split (the domain
    reference, its features cached, built once for Fashion-MNIST) and measures the floors and the
    tokenizer's reconstructions the same way."""

    def __init__(self, prior, tokenizer, meta: dict, *, batch_size: int, fid_cache_dir, device, progress: bool):
        from ...data import build_image_dataset

        self.prior, self.tokenizer, self.meta = prior, tokenizer, meta
        self.batch_size, self.fid_cache_dir, self.device, self.progress = batch_size, fid_cache_dir, device, progress
        data = tokenizer.config.data
        self.test_set = build_image_dataset(data, "test", seed=tokenizer.config.trainer.seed)
        self._train_set = None
        self.domain = None
        self.classifier_record = None
        if data.name == "fashion_mnist":
            from ...metrics.generation import DomainReference, domain_classifier

            classifier, self.classifier_record = domain_classifier(data_root=data.root, progress=progress)
            self.domain = DomainReference(classifier, self.test_set.images.unsqueeze(1))

    @property
    def train_set(self):
        if self._train_set is None:
            from ...data import build_image_dataset

            config = self.tokenizer.config
            self._train_set = build_image_dataset(config.data, "train", seed=config.trainer.seed)
        return self._train_set

    def draw(self, setting: SamplingSetting, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``count`` decoded samples (balanced over the classes of a conditional prior) and their labels."""
        labels = balanced_labels(count, self.meta["num_classes"])
        codes = sample_codes(self.prior, count, labels=labels, batch_size=self.batch_size, seed=seed, **setting.options())
        return decode_codes(self.tokenizer, codes), labels

    def tune(self, sweep: SamplingSweep) -> tuple[list[dict], SamplingSetting]:
        """Every setting of the grid on one sample set (``sweep.samples`` at ``sweep.seed``), scored by
        domain FID; ``(rows, the setting with the lowest)``."""
        from tqdm.auto import tqdm

        if self.domain is None:
            raise ValueError("tuning the sampling needs the domain classifier's FID: a Fashion-MNIST tokenizer")
        rows = []
        settings = sweep.settings(self.meta["num_classes"] > 0)
        for setting in tqdm(settings, desc="sampling sweep", disable=not self.progress, leave=False):
            started, cpu_started = time.time(), time.process_time()
            images, labels = self.draw(setting, sweep.samples, sweep.seed)
            scores = self.domain.measure_images(images, labels, kid=False, pr=False)
            rows.append({"sampling": setting.label, **setting.options(), "domain_fid": scores["domain_fid"],
                         **({"class_accuracy": scores["class_accuracy"]} if "class_accuracy" in scores else {}),
                         "seconds": round(time.time() - started, 1), "cpu_seconds": round(time.process_time() - cpu_started, 1)})
        best = min(range(len(rows)), key=lambda i: rows[i]["domain_fid"])
        return rows, settings[best]

    def measure(self, setting: SamplingSetting, metrics: dict, *, samples: int, fid_samples: int, seed: int,
                suffix: str = "") -> torch.Tensor | None:
        """Draws ``max(samples, fid_samples)`` samples at ``seed``, adds their domain metrics and FID to
        ``metrics`` (names + ``suffix``); returns the images."""
        count = max(samples, fid_samples)
        if not count:
            return None
        images, labels = self.draw(setting, count, seed)
        found = {}
        if samples and self.domain is not None:
            found.update(self.domain.measure_images(images[:samples], labels[:samples] if labels is not None else None))
            found["classifier_test_accuracy"] = self.classifier_record["test_accuracy"]
        if fid_samples:
            from ...metrics.generation import generation_fid

            found.update(generation_fid(images[:fid_samples], self.test_set, cache_dir=self.fid_cache_dir, device=self.device,
                                        progress=self.progress))
        shared = ("classifier_test_accuracy", "domain_fid_reference_images", "fid_reference_images")
        metrics.update({name if name in shared else name + suffix: value for name, value in found.items()})
        return images

    def floors(self, *, samples: int, fid_samples: int) -> dict:
        """Real training images in place of samples, as many: the scores a perfect generator gets."""
        from ...metrics.generation import cached_features, inception_floor

        floors = {}
        if samples and self.domain is not None:
            features, _ = cached_features(self.domain.classifier, self.train_set.images[:samples].unsqueeze(1))
            found = self.domain.measure(features)
            floors.update({f"{name}_train": found[name] for name in ("domain_fid", "domain_kid", "domain_kid_std", "domain_precision",
                                                                      "domain_recall")})
        if fid_samples:
            floors["fid_train"] = inception_floor(self.train_set, self.test_set, fid_samples, cache_dir=self.fid_cache_dir,
                                                  device=self.device, progress=self.progress)
        return floors

    def reconstructions(self, *, samples: int, fid_samples: int) -> dict:
        """The tokenizer's reconstructions of the floors' training images in place of samples:
        ``domain_rfid`` and Inception ``rfid`` (what the decoder alone caps), cached per tokenizer."""
        from ...metrics.generation import reconstruction_scores

        return reconstruction_scores(self.tokenizer, self.meta["tokenizer_sha256"], self.train_set, self.test_set,
                                     domain=self.domain if samples else None, samples=samples, fid_samples=fid_samples,
                                     inception_cache_dir=self.fid_cache_dir, device=self.device, progress=self.progress)
