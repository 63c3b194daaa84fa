"""Measuring a trained prior (``gen_metrics.json``): the likelihood of the test split's tokens, and
the quality of its samples decoded by the tokenizer (domain FID and class accuracy on Fashion-MNIST,
Inception FID when its weights are there)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ...runs.prior import load_prior
from ...utils import atomic_write_text
from ..plots import save_image_grid
from .sample import balanced_labels, decode_codes, load_tokenizer_for, sample_codes
from .tokens import split_tokens


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
    device=None,
    progress: bool = True,
    write: bool = True,
    report=None,
) -> dict:
    """Measure a prior run; returns (and writes to ``gen_metrics.json``) a flat dict:

    - ``nll_bits_per_token``, ``nll_bits_per_image`` on the test split's tokens (given their true
      labels), and for a conditional prior ``nll_bits_per_token_unconditional`` (the null class);
    - ``test_entropy_bits``, ``test_perplexity``, ``test_usage``, ``test_tokens``: the unigram
      statistics of those tokens (a prior that has learned nothing scores ``test_entropy_bits``);
    - ``domain_fid`` (and the sample counts) on the cached Fashion-MNIST classifier's features against
      the whole test split, ``class_accuracy`` of the class-conditional samples, and the
      classifier's own ``classifier_test_accuracy``; ``domain_fid_train`` is the floor (training
      images against test images, as many as samples);
    - ``fid``, ``fid_samples``: Inception FID against a fixed test subset (skipped with 0 samples or
      without the Inception weights: ``fid_skipped`` says why).

    Options left as None take the run's ``eval`` config. ``report(metrics)`` is called before the
    file is written (the CLI prints there).
    """
    from ...models.prior import check_sampling
    from ...utils import check_count

    check_count(samples, "samples", minimum=0)  # before the run is read
    check_count(fid_samples, "fid_samples", minimum=0)
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale)
    run_dir = Path(run_dir)
    prior, config, meta = load_prior(run_dir, device=device)
    tokenizer = load_tokenizer_for(meta, device=device)
    ev = config.eval
    samples = ev.samples if samples is None else samples
    fid_samples = ev.fid_samples if fid_samples is None else fid_samples
    cfg_scale = ev.cfg_scale if cfg_scale is None else cfg_scale
    options = {
        "cfg_scale": cfg_scale if meta["num_classes"] else None,
        "temperature": ev.temperature if temperature is None else temperature,
        "top_k": ev.top_k if top_k is None else top_k,
        "top_p": ev.top_p if top_p is None else top_p,
        "seed": ev.seed if seed is None else seed,
    }
    check_sampling(**{k: options[k] for k in ("temperature", "top_k", "top_p", "cfg_scale")},  # the run's eval section too
                   names={k: f"eval.{k}" for k in ("temperature", "top_k", "top_p", "cfg_scale")})
    metrics: dict = {"tokenizer": meta["tokenizer"], "codebook_size": meta["codebook_size"], "grid": meta["grid"],
                     "num_classes": meta["num_classes"], **{f"sample_{k}": v for k, v in options.items()}}
    metrics.update(token_metrics(prior, tokenizer, run_dir, meta, progress=progress))
    images = sample_metrics(prior, tokenizer, meta, metrics, samples=samples, fid_samples=fid_samples, options=options,
                            batch_size=ev.batch_size, fid_cache_dir=ev.fid_cache_dir, device=device, progress=progress)
    if report is not None:
        report(metrics)
    if write:
        atomic_write_text(run_dir / "gen_metrics.json", json.dumps(metrics, indent=2) + "\n")
        if images is not None and ev.grid_samples:  # one column per class for a conditional prior
            save_image_grid(images[: ev.grid_samples], run_dir / "samples.png", per_row=meta["num_classes"] or 8)
    return metrics


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


def sample_metrics(prior, tokenizer, meta: dict, metrics: dict, *, samples: int, fid_samples: int, options: dict, batch_size: int,
                   fid_cache_dir, device, progress: bool) -> torch.Tensor | None:
    """Draws ``max(samples, fid_samples)`` samples, decodes them and adds their domain metrics and FID
    to ``metrics`` (``fid_skipped`` when the Inception weights are missing); returns the images."""
    from ...data import build_image_dataset
    from ...metrics.generation import domain_classifier, domain_metrics, generation_fid

    tokenizer_config = tokenizer.config
    test_set = build_image_dataset(tokenizer_config.data, "test", seed=tokenizer_config.trainer.seed)
    if fid_samples:
        from ...metrics.image import inception_weights_path

        try:
            inception_weights_path()
        except (ModuleNotFoundError, FileNotFoundError) as error:  # FID is optional: say why it is missing
            metrics["fid_skipped"], fid_samples = str(error).splitlines()[0], 0
    count = max(samples, fid_samples)
    sample_labels = balanced_labels(count, meta["num_classes"])
    sampled = sample_codes(prior, count, labels=sample_labels, batch_size=batch_size, **options) if count else None
    images = decode_codes(tokenizer, sampled) if count else None
    if samples and tokenizer_config.data.name == "fashion_mnist":
        classifier, record = domain_classifier(data_root=tokenizer_config.data.root, progress=progress)
        train_set = build_image_dataset(tokenizer_config.data, "train", seed=tokenizer_config.trainer.seed)
        metrics.update(domain_metrics(classifier, images[:samples], test_set.images.unsqueeze(1),
                                      labels=sample_labels[:samples] if meta["num_classes"] > 0 else None))
        metrics["domain_fid_train"] = domain_metrics(classifier, train_set.images[:samples].unsqueeze(1), test_set.images.unsqueeze(1))["domain_fid"]
        metrics["classifier_test_accuracy"] = record["test_accuracy"]
    if fid_samples:
        metrics.update(generation_fid(images[:fid_samples], test_set, cache_dir=fid_cache_dir, device=device, progress=progress))
    return images

