"""The transformer prior: it can learn, its cache is exact, its guidance reduces to plain
conditioning at scale 1, and its samples are valid codes for a tokenizer."""

import math

import pytest
import torch

from simvq.models.prior import KVCache, TokenPrior, sample_from_logits


def tiny_prior(**options) -> TokenPrior:
    torch.manual_seed(0)
    defaults = {"grid": (3, 3), "num_classes": 4, "dim": 32, "layers": 2, "heads": 4}
    return TokenPrior(16, **{**defaults, **options})


def test_logits_at_a_position_depend_only_on_earlier_tokens():
    prior = tiny_prior().eval()
    codes = torch.randint(0, 16, (2, 3, 3))
    changed = codes.clone()
    changed[:, 2, 0] = (codes[:, 2, 0] + 1) % 16  # raster position 6
    a, b = prior(codes, torch.tensor([1, 2])), prior(changed, torch.tensor([1, 2]))
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)  # position 6's own logits do not see token 6
    assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-4)


def test_the_prior_overfits_a_tiny_token_set_and_greedy_samples_reproduce_it():
    prior = tiny_prior(dim=64)
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (4, 3, 3), generator=generator)
    labels = torch.arange(4)  # one grid per class
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-2)
    for _ in range(60):
        loss = prior.loss(codes, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02  # from ln(16) = 2.77 nats
    samples = prior.sample(labels=labels, temperature=0.0)
    assert torch.equal(samples, codes)


@pytest.mark.parametrize("options", [{}, {"top_k": 5}, {"top_p": 0.8, "temperature": 0.7}])
def test_cached_sampling_equals_uncached_sampling_token_by_token(options):
    prior = tiny_prior()
    labels = torch.tensor([0, 1, 2, 3, 4, 4])  # 4: the null class
    cached = prior.sample(labels=labels, generator=torch.Generator().manual_seed(3), **options)
    uncached = prior.sample(labels=labels, generator=torch.Generator().manual_seed(3), use_cache=False, **options)
    assert torch.equal(cached, uncached)
    # and the cached logits at each step equal the full forward pass's
    prior.eval()
    cache = KVCache(layers=2, batch=6, heads=4, max_tokens=9, head_dim=8)
    full = prior(cached, labels)
    inputs = prior.class_embedding(labels).unsqueeze(1)
    flat = cached.flatten(1)
    for step in range(9):
        logits = prior._transformer(inputs, start=step, cache=cache)[:, -1]
        assert torch.allclose(logits, full[:, step], atol=1e-5)
        inputs = prior.token_embedding(flat[:, step]).unsqueeze(1)
    # several tokens at once after cached ones (a causal mask with an offset)
    chunked = KVCache(layers=2, batch=6, heads=4, max_tokens=9, head_dim=8)
    embedded = torch.cat([prior.class_embedding(labels).unsqueeze(1), prior.token_embedding(flat[:, :8])], dim=1)
    first = prior._transformer(embedded[:, :4], start=0, cache=chunked)
    rest = prior._transformer(embedded[:, 4:], start=4, cache=chunked)
    assert torch.allclose(torch.cat([first, rest], dim=1), full, atol=1e-5)


def test_guidance_at_scale_one_equals_plain_conditional_sampling():
    prior = tiny_prior()
    labels = torch.tensor([0, 1, 2, 3] * 4)
    plain = prior.sample(labels=labels, generator=torch.Generator().manual_seed(5))
    guided = prior.sample(labels=labels, cfg_scale=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain, guided)
    stronger = prior.sample(labels=labels, cfg_scale=4.0, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(plain, stronger)  # guidance does something at other scales


def test_unconditional_prior_and_argument_checks():
    prior = tiny_prior(num_classes=0)
    samples = prior.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 3, 3) and samples.dtype == torch.long
    with pytest.raises(ValueError, match="unconditional"):
        prior.sample(labels=torch.tensor([1]))
    with pytest.raises(ValueError, match="guidance"):
        prior.sample(labels=torch.tensor([0]), cfg_scale=2.0)
    with pytest.raises(ValueError, match="tokens per sample"):
        prior(torch.zeros(1, 8, dtype=torch.long))


@pytest.mark.parametrize("scale", [-1.0, math.nan, math.inf])
def test_a_negative_or_non_finite_guidance_scale_is_refused(scale):
    prior = tiny_prior(num_classes=3)
    with pytest.raises(ValueError, match=r"cfg_scale: must be a finite number >= 0 \(1: no guidance\), got"):
        prior.sample(labels=torch.tensor([0, 1]), cfg_scale=scale)
    assert prior.sample(labels=torch.tensor([0, 1]), cfg_scale=0.0).shape == (2, 3, 3)  # 0: the unconditional model


def test_sample_from_logits_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    assert set(sample_from_logits(logits, top_k=2, generator=generator).tolist()) == {2, 3}
    probs = torch.softmax(logits[0], 0)  # 0.032, 0.087, 0.237, 0.644
    assert set(sample_from_logits(logits, top_p=0.5, generator=generator).tolist()) == {3}
    assert set(sample_from_logits(logits, top_p=0.85, generator=generator).tolist()) == {2, 3}
    assert probs[2:].sum() > 0.85
    assert sample_from_logits(logits[:3], temperature=0.0).tolist() == [3, 3, 3]
    # at temperature 1 without filters the frequencies follow the softmax
    counts = torch.bincount(sample_from_logits(logits, generator=generator), minlength=4).float() / 2000
    assert torch.allclose(counts, probs, atol=0.03)
    with pytest.raises(ValueError):
        sample_from_logits(logits, top_p=0.0)


def test_untrained_prior_starts_near_uniform():
    prior = tiny_prior()
    loss = prior.loss(torch.randint(0, 16, (8, 3, 3)), torch.randint(0, 4, (8,)))
    assert abs(loss.item() - math.log(16)) < 0.1


def test_samples_are_codes_a_tokenizer_decodes_to_images():
    from simvq.tokenizer import Tokenizer
    from simvq.train.config import load_config
    from simvq.train.run_files import build_model

    config = load_config("configs/fmnist.yaml", ["model.channels=8", "model.dim=8", "quantizer.name=simvq",
                                                 "quantizer.codebook_size=32", "model.norm_groups=4"])
    torch.manual_seed(0)
    tokenizer = Tokenizer(build_model(config), config)
    images = torch.rand(2, 1, 28, 28)
    grid = tuple(tokenizer.encode(images).shape[1:])
    prior = TokenPrior(tokenizer.codebook_size, grid=grid, num_classes=10, dim=32, layers=1, heads=2)
    codes = prior.sample(labels=torch.arange(10), cfg_scale=2.0, top_k=8, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (10, 7, 7) and codes.min() >= 0 and codes.max() < 32
    decoded = tokenizer.decode(codes)
    assert decoded.shape == (10, 1, 28, 28) and torch.isfinite(decoded).all()


def test_nucleus_sampling_follows_the_exact_nucleus_distribution_inside_and_beyond_the_candidates():
    """A peaked row (its nucleus among the top NUCLEUS_CANDIDATES) and a flat one (its nucleus beyond
    them: the full-sort path) in one batch: each row's frequencies follow the renormalised nucleus
    (computed here by a full sort), and no token outside it is ever drawn."""
    from simvq.models.prior import NUCLEUS_CANDIDATES

    codes = 4 * NUCLEUS_CANDIDATES
    generator = torch.Generator().manual_seed(0)
    peaked, flat = torch.randn(codes, generator=generator) * 4, torch.randn(codes, generator=generator) * 0.05
    draws = 4000
    logits = torch.stack([peaked, flat]).repeat_interleave(draws, 0)
    for top_p, top_k in [(0.9, None), (0.5, None), (0.7, 2 * NUCLEUS_CANDIDATES), (None, None)]:
        sampled = sample_from_logits(logits, top_p=top_p, top_k=top_k, generator=generator)
        for i, row in enumerate((peaked, flat)):
            kept = row.clone()
            if top_k is not None:
                kept[kept < kept.topk(top_k).values[-1]] = -math.inf
            if top_p is not None:
                ordered, order = kept.sort(descending=True)
                probs = ordered.softmax(0)
                kept[order[probs.cumsum(0) - probs >= top_p]] = -math.inf
            expected = kept.softmax(0)
            frequencies = torch.bincount(sampled[i * draws : (i + 1) * draws], minlength=codes).float() / draws
            assert frequencies[expected == 0].sum() == 0, (top_p, top_k, i)
            # per-token binomial error: 5 standard deviations (plus one draw's worth)
            tolerance = 5 * (expected * (1 - expected) / draws).sqrt() + 1 / draws
            assert ((frequencies - expected).abs() <= tolerance).all(), (top_p, top_k, i)
    assert (peaked.softmax(0).topk(NUCLEUS_CANDIDATES).values.sum() > 0.9) and (flat.softmax(0).topk(NUCLEUS_CANDIDATES).values.sum() < 0.5)
