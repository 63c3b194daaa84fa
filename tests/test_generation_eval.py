"""``evaluate_prior_run`` end to end on a tiny untrained prior over a tiny Fashion-MNIST tokenizer,
with a small slice of the data set, a random domain classifier and a cheap stand-in for Inception:
the sampling sweep picks the lowest tuning-set domain FID and both settings are measured again on a
fresh set; every number is checked against a direct computation, the training record is read from
the run's files, and the real-image features and the tokenizer's reconstruction scores are computed
once and then served from their caches."""

import json

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.usefixtures("one_thread")]


class PixelFeatures:
    """Inception's stand-in: 16 pixels of each image (the pipeline around it is under test, not Inception)."""

    def __init__(self, device=None):
        self.device = torch.device("cpu")

    def __call__(self, images):
        return images.float().flatten(1)[:, ::49].double().numpy()


@pytest.fixture
def prior_run(tmp_path, monkeypatch):
    from simvq.data import FashionMNIST
    from simvq.metrics import generation
    from simvq.metrics import image as image_metrics
    from simvq.models.classifier import ImageClassifier
    from simvq.models.prior import TokenPrior
    from simvq.runs import save_config, save_weights
    from simvq.train.config import load_config
    from simvq.train.prior import load_prior_config, tokenizer_fingerprint
    from simvq.train.run_files import build_model

    try:
        FashionMNIST("test")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")

    def small(split, root=None):  # the first 60 test / 120 training images
        data = FashionMNIST(split, root=root)
        count = 60 if split == "test" else 120
        data.images, data.labels, data.cache_key = data.images[:count], data.labels[:count], f"{data.cache_key}-first{count}"
        return data

    monkeypatch.setattr("simvq.data.build_image_dataset", lambda config, split, seed=0: small(split))
    monkeypatch.setenv("SIMVQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(generation, "_MEMORY", {})
    torch.manual_seed(0)
    classifier = ImageClassifier().eval()
    monkeypatch.setattr(generation, "domain_classifier", lambda **options: (classifier, {"test_accuracy": 0.5}))
    monkeypatch.setattr(generation, "InceptionFeatures", PixelFeatures)
    monkeypatch.setattr(image_metrics, "inception_tag", lambda: "pixels")
    monkeypatch.setattr(image_metrics, "inception_weights_path", lambda: tmp_path)

    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    config = load_config("configs/fmnist.yaml", ["model.channels=8", "model.norm_groups=4", "model.dim=8", "quantizer.codebook_size=16"])
    save_config(config, tokenizer)
    save_weights(build_model(config), tokenizer / "model.safetensors")

    run = tmp_path / "prior"
    prior_config = load_prior_config("configs/bench/prior.yaml", ["model.dim=16", "model.layers=1", "model.heads=2", "eval.batch_size=32"])
    prior_config.tokenizer, prior_config.out_dir = str(tokenizer), str(run)
    run.mkdir()
    save_config(prior_config, run)
    meta = {"tokenizer": str(tokenizer), "tokenizer_sha256": tokenizer_fingerprint(tokenizer), "codebook_size": 16, "grid": [7, 7],
            "num_classes": 10, "train_tokens": 0}
    (run / "tokens.json").write_text(json.dumps(meta))
    prior = TokenPrior(16, grid=(7, 7), num_classes=10, dim=16, layers=1, heads=2)
    with torch.no_grad():  # a prior with opinions, so that the settings differ
        prior.token_embedding.weight.mul_(40)
    save_weights(prior, run / "model.safetensors")
    (run / "progress.json").write_text(json.dumps({"sessions": [{"start_step": 0, "end_step": 300, "seconds": 1.0},
                                                                {"start_step": 300, "end_step": 450, "seconds": 1.0}]}))
    (run / "validation.json").write_text(json.dumps({"best_step": 400, "best_nll_bits_per_token": 3.25, "stop_reason": "plateau",
                                                      "history": [{"step": 400, "nll_bits_per_token": 3.25}]}))
    return run, classifier, prior


def test_sweep_then_fresh_set_floors_and_reconstructions(prior_run, monkeypatch):
    from simvq.data import build_image_dataset
    from simvq.metrics import generation
    from simvq.metrics.generation import (
        FrechetReference,
        classify,
        kernel_inception_distance,
        precision_recall,
    )
    from simvq.metrics.image import feature_statistics, subset_indices
    from simvq.runs.prior import load_prior
    from simvq.train.prior.evaluate import (
        DEFAULT_SAMPLING,
        SWEEP_FILE,
        SamplingSetting,
        SamplingSweep,
        evaluate_prior_run,
    )
    from simvq.train.prior.sample import (
        balanced_labels,
        decode_codes,
        load_tokenizer_for,
        sample_codes,
    )

    run, classifier, prior = prior_run
    sweep = SamplingSweep(temperatures=[1.0, 0.3], top_ps=[None], cfg_scales=[None, 4.0], samples=30, seed=1)
    reconstructed = []
    original = generation.reconstruct
    monkeypatch.setattr(generation, "reconstruct", lambda *a, **k: reconstructed.append(1) or original(*a, **k))
    metrics = evaluate_prior_run(run, samples=40, fid_samples=20, sweep=sweep, progress=False)

    # the training record: the model's size, the steps of progress.json, validation.json's best step
    assert metrics["prior_parameters"] == sum(p.numel() for p in prior.parameters())
    assert (metrics["trained_steps"], metrics["best_step"], metrics["best_val_nll_bits_per_token"], metrics["stop_reason"]) == (
        450, 400, 3.25, "plateau")

    # the sweep: every setting on the tuning set; the lowest domain FID chosen
    record = json.loads((run / SWEEP_FILE).read_text())
    assert record["grid"] == "T {1, 0.3} x top-p {none} x CFG {none, 4}" and len(record["settings"]) == 4
    best = min(record["settings"], key=lambda row: row["domain_fid"])
    assert metrics["sampling_tuned"] == record["chosen"] == best["sampling"] and metrics["tune_domain_fid"] == best["domain_fid"]
    assert (metrics["tuned_temperature"], metrics["tuned_cfg_scale"]) == (best["temperature"], best["cfg_scale"])
    assert metrics["sampling"] == "T=1" and metrics["tune_seed"] == 1 and metrics["sample_seed"] == 0

    # both settings measured again on the fresh set (seed 0): the numbers a direct computation gives
    prior, _, meta = load_prior(run)
    tokenizer = load_tokenizer_for(meta)
    test = build_image_dataset(None, "test")
    test_features, _ = classify(classifier, test.images.unsqueeze(1))
    tuned = SamplingSetting(temperature=best["temperature"], top_p=best["top_p"], cfg_scale=best["cfg_scale"])
    for setting, suffix in [(DEFAULT_SAMPLING, ""), (tuned, "_tuned")]:
        labels = balanced_labels(40, 10)
        images = decode_codes(tokenizer, sample_codes(prior, 40, labels=labels, seed=0, batch_size=32, **setting.options()))
        features, predictions = classify(classifier, images)
        assert metrics[f"domain_fid{suffix}"] == pytest.approx(FrechetReference.of(test_features.numpy())(features.numpy()), rel=1e-9)
        assert metrics[f"domain_kid{suffix}"] == pytest.approx(kernel_inception_distance(features, test_features)["kid"], rel=1e-9)
        subset = test_features[torch.from_numpy(np.sort(np.random.default_rng(0).choice(60, 40, replace=False)))]
        assert metrics[f"domain_precision{suffix}"] == precision_recall(subset, features)["precision"]
        assert metrics[f"class_accuracy{suffix}"] == (predictions == labels).double().mean().item()
        pixels = PixelFeatures()(images[:20])
        reference = feature_statistics(PixelFeatures()(test.images[torch.from_numpy(subset_indices(60, 20))].unsqueeze(1).float() / 255))
        assert metrics[f"fid{suffix}"] == pytest.approx(FrechetReference(*reference)(pixels), rel=1e-6)
    assert metrics["domain_fid_samples"] == metrics["domain_fid_samples_tuned"] == 40 and metrics["fid_samples"] == 20

    # floors: training images in place of samples; reconstructions of them through the tokenizer
    train = build_image_dataset(None, "train")
    train_features, _ = classify(classifier, train.images[:40].unsqueeze(1))
    assert metrics["domain_fid_train"] == pytest.approx(FrechetReference.of(test_features.numpy())(train_features.numpy()), rel=1e-9)
    recon_features, _ = classify(classifier, tokenizer.reconstruct(train.images[:40].unsqueeze(1)).clamp(0, 1))
    assert metrics["domain_rfid"] == pytest.approx(FrechetReference.of(test_features.numpy())(recon_features.numpy()), rel=1e-6)
    subset = torch.from_numpy(subset_indices(120, 20))
    train_pixels = PixelFeatures()(train.images[subset].unsqueeze(1).float() / 255)
    assert metrics["fid_train"] == pytest.approx(FrechetReference(*reference)(train_pixels), rel=1e-6)
    recon_pixels = PixelFeatures()(tokenizer.reconstruct(train.images[subset].unsqueeze(1)).clamp(0, 1))
    assert metrics["rfid"] == pytest.approx(FrechetReference(*reference)(recon_pixels), rel=1e-6) and metrics["rfid_images"] == 20
    assert len(reconstructed) == 2 and (run / "samples.png").is_file() and (run / "samples_tuned.png").is_file()

    # a second evaluation in a new process: real features and reconstruction scores come from the disk caches
    monkeypatch.setattr(generation, "_MEMORY", {})
    classified = []
    original_classify = generation.classify
    monkeypatch.setattr(generation, "classify", lambda model, images, **k: classified.append(images.shape[0]) or original_classify(model, images, **k))
    again = evaluate_prior_run(run, samples=40, fid_samples=0, progress=False, write=False)
    assert len(reconstructed) == 2 and 60 not in classified and classified == [40]  # the samples alone
    assert again["domain_rfid"] == metrics["domain_rfid"] and again["domain_fid"] == metrics["domain_fid"]
    assert "sampling_tuned" not in again and "fid" not in again

    with pytest.raises(ValueError, match="must differ"):
        evaluate_prior_run(run, samples=10, fid_samples=0, sweep=SamplingSweep(seed=0), progress=False, write=False)


def test_the_last_20_percent_change_of_the_validation_nll():
    from simvq.train.prior.evaluate import last20_change

    history = [{"step": s, "nll_bits_per_token": 6.0 - s / 1000} for s in range(250, 3001, 250)]
    assert last20_change(history) == pytest.approx(-0.5)  # step 2,500 (nearest 2,400) to 3,000
    assert last20_change(history[:1]) is None
