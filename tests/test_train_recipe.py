"""The recipe's pieces below the Trainer: in-memory batches, precision choice, the reconstruction
range, the fused weight EMA, the plateau criterion, usage counted over several splits."""

import json

import pytest
import torch

from simvq.data.in_memory import ShuffledBatches, ShuffledRows, to_unit_float, uint8_images
from simvq.train.config import load_config

pytest.importorskip("lightning")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_shuffled_batches_cover_each_epoch_once_and_reproducibly():
    images = torch.arange(10 * 4, dtype=torch.uint8).view(10, 1, 2, 2)
    batches = iter(ShuffledBatches(images, 3, seed=7))
    epoch = [next(batches) for _ in range(3)]  # 10 // 3 = 3 full batches, the 10th image dropped
    seen = torch.cat(epoch)[:, 0, 0, 0] // 4
    assert len(set(seen.tolist())) == 9 and all(b.shape == (3, 1, 2, 2) and b.dtype == torch.uint8 for b in epoch)
    again = iter(ShuffledBatches(images, 3, seed=7))
    assert all(torch.equal(a, next(again)) for a in epoch)
    next_epoch = torch.cat([next(batches) for _ in range(3)])[:, 0, 0, 0] // 4
    assert next_epoch.tolist() != seen.tolist()  # a new permutation per epoch


def test_shuffled_batches_reject_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        ShuffledBatches(torch.zeros(4, 1, 2, 2), 2)
    with pytest.raises(ValueError, match="batch_size"):
        ShuffledBatches(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), 5)


def test_shuffled_rows_keep_rows_paired_and_continue_from_start():
    codes, labels = torch.arange(7 * 2).view(7, 2), torch.arange(7) * 10
    straight = iter(ShuffledRows((codes, labels), 2, seed=3))
    batches = [next(straight) for _ in range(7)]  # 3 batches an epoch: into the third epoch
    for batch_codes, batch_labels in batches:
        assert torch.equal(batch_codes[:, 0] // 2 * 10, batch_labels)  # each code row with its own label
    resumed = iter(ShuffledRows((codes, labels), 2, seed=3, start=4))  # a run resumed after 4 steps
    assert all(torch.equal(a, b) for batch in batches[4:] for a, b in zip(batch, next(resumed)))
    with pytest.raises(ValueError, match="same number of rows"):
        ShuffledRows((codes, labels[:6]), 2)
    with pytest.raises(ValueError, match="start"):
        ShuffledRows((codes,), 2, start=-1)


def test_uint8_images_and_unit_float():
    class Set:
        images = torch.full((3, 5, 5), 255, dtype=torch.uint8)

    assert uint8_images(Set()).shape == (3, 1, 5, 5)
    assert uint8_images(object()) is None
    assert torch.equal(to_unit_float(Set.images), torch.ones(3, 5, 5))
    floats = torch.rand(2, 2)
    assert to_unit_float(floats) is floats


def test_auto_precision_is_float32_on_a_cpu_without_native_bf16(monkeypatch):
    from simvq.train import core

    monkeypatch.setattr(core, "cpu_has_native_bf16", lambda: False)
    assert core.resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(core, "cpu_has_native_bf16", lambda: True)
    assert core.resolve_precision("auto", "cpu") == "bf16-mixed"
    assert core.resolve_precision("16-mixed", "cpu") == "16-mixed"  # an explicit choice is kept


def test_reconstruction_range_doubles_l1_and_quadruples_l2():
    from simvq.train.image import reconstruction_error

    x, y = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    for loss, factor in (("l1", 2.0), ("l2", 4.0)):
        unit = load_config(None, [f"loss.reconstruction={loss}"]).loss
        signed = load_config(None, [f"loss.reconstruction={loss}", "loss.reconstruction_range=[-1, 1]"]).loss
        torch.testing.assert_close(reconstruction_error(x, y, signed), factor * reconstruction_error(x, y, unit))


def test_unknown_reconstruction_range_is_refused():
    from simvq.train.image import ImageTokenizerModule

    config = load_config(None, ["loss.reconstruction_range=[0, 255]", "model.channels=8", "quantizer.codebook_size=16"])
    with pytest.raises(ValueError, match="reconstruction_range"):
        ImageTokenizerModule(config)


SQVAE_MODULE = ["model.channels=8", "model.dim=8", "quantizer.name=sqvae", "quantizer.codebook_size=16"]


def _sqvae_step(overrides, *, kl_weight=0.01, seed=5):
    """The recipe's generator loss on a fixed batch, its pixel loss, latent nats and gradients."""
    from simvq.train.image import ImageTokenizerModule

    config = load_config(None, [*SQVAE_MODULE, *overrides])
    torch.manual_seed(0)
    module = ImageTokenizerModule(config)
    module.model.quantizer.kl_weight = kl_weight
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(seed)  # the same Gumbel noise in every call
    loss, reconstruction, out, logs = module.generator_loss(images)
    nats = sum(out.losses.values()) / kl_weight  # both latent terms, unweighted, per token
    params = [p for p in module.model.parameters() if p.requires_grad]
    return loss, logs, out, nats, params, images


@pytest.mark.parametrize("reconstruction, c", [("l1", 1.0), ("l2", 2.0)])
def test_arelbo_weighs_sqvae_latent_terms_as_the_fitted_likelihood_does(reconstruction, c):
    # reference: the negative log-likelihood with the likelihood's scale at its maximum-likelihood
    # value (Laplace for L1, Gaussian for L2), values / c * log(mean loss), plus every token's
    # latent nats: the official SQ-VAE's ARELBO
    loss, logs, out, nats, params, images = _sqvae_step([f"loss.reconstruction={reconstruction}"])
    values, tokens = images[0].numel(), out.codes[0].numel()
    pixel = logs["train/reconstruction"]
    torch.testing.assert_close(logs["train/elbo_weight"], c * pixel.detach() * tokens / values)
    recipe_grads = torch.autograd.grad(loss, params, retain_graph=True)
    reference = values / c * torch.log(pixel) + tokens * nats
    reference_grads = torch.autograd.grad(reference, params)
    scale = values / (c * pixel.detach())  # the reference's gradient is the recipe's times this
    ours = torch.cat([g.flatten() for g in recipe_grads]) * scale
    theirs = torch.cat([g.flatten() for g in reference_grads])
    # float32 sums of terms ~1e3 apart (and some gradients ~0): the tolerance is the whole gradient's
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-5 * float(theirs.abs().max()))
    assert torch.linalg.vector_norm(ours - theirs) < 1e-4 * torch.linalg.vector_norm(theirs)
    # the weight replaces kl_weight: the loss does not depend on it
    other, *_ = _sqvae_step([f"loss.reconstruction={reconstruction}"], kl_weight=0.5)
    torch.testing.assert_close(other, loss)


def test_fixed_elbo_weight_keeps_the_quantizers_kl_weight():
    loss, logs, out, nats, params, images = _sqvae_step(["loss.elbo_weight=fixed"])
    assert "train/elbo_weight" not in logs
    torch.testing.assert_close(loss, logs["train/reconstruction"] + out.loss)
    torch.testing.assert_close(out.loss, 0.01 * nats)


def test_unknown_elbo_weight_and_a_kl_weight_it_would_replace_are_refused():
    from simvq.train.image import ImageTokenizerModule

    with pytest.raises(ValueError, match="loss.elbo_weight"):
        ImageTokenizerModule(load_config(None, [*SQVAE_MODULE, "loss.elbo_weight=adaptive"]))
    with pytest.raises(ValueError, match="quantizer.options.kl_weight.*loss.elbo_weight=fixed"):
        ImageTokenizerModule(load_config(None, [*SQVAE_MODULE, "quantizer.options.kl_weight=0.1"]))
    ImageTokenizerModule(load_config(None, [*SQVAE_MODULE, "quantizer.options.kl_weight=0.1", "loss.elbo_weight=fixed"]))


def test_fused_ema_matches_the_per_parameter_update():
    from simvq.train.core import update_ema

    torch.manual_seed(0)
    live, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        for p in live.parameters():
            p.normal_()
    live.running_mean.fill_(5.0)
    expected = [e + 0.1 * (w - e) for e, w in zip(ema.parameters(), live.parameters())]
    update_ema(ema, live, 0.9)
    for got, want in zip(ema.parameters(), expected):
        torch.testing.assert_close(got, want)
    assert torch.equal(ema.running_mean, live.running_mean)  # buffers copied, not averaged


def plateau(**criterion):
    from simvq.train.plateau import PlateauStop

    overrides = [f"plateau.{k}={v}" for k, v in {"enabled": True, "patience": 2, "min_steps": 0, **criterion}.items()]
    return PlateauStop(load_config(None, [*overrides, "trainer.max_steps=10000"]))


def test_a_plateau_stop_that_cannot_fire_before_the_cap_is_refused():
    # the old benchmark: min_steps 3,000 above 2,000-step caps, so the stop never fired
    with pytest.raises(ValueError, match="plateau.min_steps/patience.*step 3000.*max_steps=2000"):
        load_config(None, ["plateau.enabled=true", "plateau.min_steps=3000", "trainer.max_steps=2000"])
    with pytest.raises(ValueError, match="step 3000"):  # patience x check_every
        load_config(None, ["plateau.enabled=true", "plateau.min_steps=0", "plateau.patience=3", "trainer.max_steps=2000"])
    # checks only (no stop) are fine at any cap; so is a stop that can fire
    load_config(None, ["plateau.enabled=true", "plateau.stop=false", "plateau.min_steps=3000", "trainer.max_steps=2000"])
    load_config(None, ["plateau.enabled=true", "plateau.min_steps=2000", "plateau.patience=2", "trainer.max_steps=2000"])


def test_checks_without_the_stop_never_stop():
    stop = plateau(stop=False)
    assert not any(stop.check(1000 * i, {"usage": 0.5, "psnr": 20.0}) for i in range(1, 8))
    assert len(stop.history) == 7


def test_plateau_stops_after_patience_checks_without_improvement():
    stop = plateau(usage_tolerance=0.01, psnr_tolerance=0.1)
    checks = [(0.50, 20.0), (0.60, 20.0), (0.605, 20.05), (0.61, 20.08), (0.70, 20.0), (0.70, 20.0), (0.70, 20.0)]
    verdicts = [stop.check(1000 * (i + 1), {"usage": u, "psnr": p}) for i, (u, p) in enumerate(checks)]
    # checks 1, 2 and 5 improve; 3-4 improve by less than the tolerances (stop at 4); 6-7 are stale again
    assert verdicts == [False, False, False, True, False, False, True]
    assert [point["step"] for point in stop.history] == [1000 * (i + 1) for i in range(7)]


def test_plateau_waits_for_min_steps_and_resumes_its_state():
    stop = plateau(min_steps=5000)
    assert not any(stop.check(step, {"usage": 0.5, "psnr": 20.0}) for step in (1000, 2000, 3000, 4000))
    assert stop.check(5000, {"usage": 0.5, "psnr": 20.0})
    resumed = plateau(min_steps=5000)
    resumed.load_state_dict(json.loads(json.dumps(stop.state_dict())))
    assert resumed.plateaued and resumed.history == stop.history and resumed.stale_checks == stop.stale_checks


def test_lr_schedule_warms_up_then_decays_to_its_floor_at_the_last_step():
    from simvq.train.core import lr_factor

    cosine = [lr_factor(step, warmup_steps=10, max_steps=110, schedule="cosine", min_lr_fraction=0.1) for step in range(110)]
    assert cosine[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert cosine[10] == pytest.approx(1.0) and cosine[60] == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:]))  # monotone after the warm-up
    assert cosine[-1] == pytest.approx(0.1, abs=3e-4) and lr_factor(110, warmup_steps=10, max_steps=110, schedule="cosine") == 0.1
    assert [lr_factor(s, warmup_steps=0, max_steps=5) for s in range(5)] == [1.0] * 5  # constant, the recipe default


def test_a_bad_schedule_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="optim.schedule"):
        load_config(None, ["optim.schedule=linear"])
    with pytest.raises(ValueError, match="optim.min_lr_fraction"):
        load_config(None, ["optim.min_lr_fraction=1.5"])
