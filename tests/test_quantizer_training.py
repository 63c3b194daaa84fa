"""Every registered quantizer learns on the library's 2-D toy (``simvq.experiments.toy``).

Toy: data uniform in the square [-1, 1]^2 (``data_scale=1``), ReLU MLP encoder/decoder, a 2-D
latent, K = 64 codes, Adam 1e-3, batch 256; MSE in units of the data's scale, over 4,096 held-out
points. Two things only a working quantizer gives, each against a reference computed here:

* information passes through the codes: the reconstruction beats the best constant output (the
  data mean, MSE 1/3 per coordinate) several times over;
* its own training counts: the trained encoder and decoder around the quantizer *as it was built*
  (its untrained state: initial codebook, projections, EMA state; no k-means init) reconstruct
  clearly worse than around the trained one. A quantizer with no state (FSQ at dim = its channel
  count) has nothing to learn and is exempt.
"""

from __future__ import annotations

import pytest
import torch

from simvq import list_quantizers
from simvq.experiments.toy import DATA_SEED_OFFSET, ToyConfig, build_toy_quantizer, toy_data, train_toy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

STEPS = 600
CONSTANT_OUTPUT_MSE = 1 / 3  # variance of U(-1, 1): the best a decoder does without information


@torch.no_grad()
def relative_mse(result, quantizer) -> float:
    """Held-out MSE of the trained encoder and decoder around ``quantizer`` (eval mode), as ToyResult.mse."""
    config = result.config
    generator = torch.Generator().manual_seed(config.seed + 2 * DATA_SEED_OFFSET)  # train_toy's eval points
    points = toy_data(config.dataset, config.eval_samples, generator=generator, scale=config.data_scale)
    modules = result.modules
    reconstruction = modules["decoder"](quantizer.eval()(modules["encoder"](points)).quantized)
    return float((reconstruction - points).pow(2).mean() / config.data_scale**2)


# Measured on this toy (seed 0 is ToyConfig's default; MSE trained / with the untrained quantizer):
# every other quantizer passes both checks with margin at 600 steps, e.g. vq 0.0074 / 0.0172,
# simvq 0.0149 / 0.1247, fsq 0.0106 (stateless), lfq 0.0551 / 0.2331. LFQ depends on the seed
# though: seed 1 puts every token on one sign pattern and stays (MSE 0.331 at 300 and 1,000 steps).
# The three below fail, and are expected to until their method or defaults change (strict: a pass
# fails the run, so the mark is removed when they learn).
DOES_NOT_LEARN_HERE = {
    "sqvae": "its trained codebook reconstructs worse than the initial one: MSE 0.133 vs 0.106 at 600 "
    "steps; 0.091/0.084, 0.094/0.069, 0.082/0.069 for seeds 0-2 at 1,000 steps",
    "hqa": "stochastic like sqvae: trained 0.0419 vs untrained 0.0467 MSE at 600 steps (official randn init: "
    "0.0299 vs 0.0314), short of the 1.3x the test asks",
    "vq_l2": "collapses to 3 of 64 codes (MSE 0.150): l2-normalising the projected 2-D latent leaves one angle",
}


def registered_names():
    for name in list_quantizers():
        reason = DOES_NOT_LEARN_HERE.get(name)
        yield pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason)) if reason else name


@pytest.mark.parametrize("name", registered_names())
def test_every_quantizer_learns_on_the_toy(name):
    config = ToyConfig(dataset="square", method=name, data_scale=1.0, steps=STEPS, snapshot_every=STEPS, eval_samples=4096)
    result = train_toy(config)
    trained = float(result.mse[-1])
    torch.manual_seed(config.seed)  # as train_toy builds it: the untrained state
    untrained_quantizer = build_toy_quantizer(name, config.codebook_size, seed=config.seed)
    untrained = relative_mse(result, untrained_quantizer)
    print(f"{name}: MSE {trained:.4f}, with the untrained quantizer {untrained:.4f}, usage {float(result.usage[-1]):.3f}")
    assert trained == pytest.approx(relative_mse(result, result.modules["quantizer"]), rel=1e-5)
    assert trained < CONSTANT_OUTPUT_MSE / 2.5, f"{name}: MSE {trained:.4f} vs {CONSTANT_OUTPUT_MSE:.4f} for a constant output"
    # learned or updated state only: FSQ's state dict records its (fixed) levels, nothing it learns
    if any(t.is_floating_point() for t in untrained_quantizer.state_dict().values()):
        assert untrained > 1.3 * trained, f"{name}: MSE {trained:.4f} trained vs {untrained:.4f} with its untrained state"
