import itertools
import math

import pytest
import torch

from simvq.metrics import CodebookUsage, chao1, coverage_summary, entropy_bits, gaussian_reference_usage, sample_coverage, usage_at
from simvq.metrics import coverage as coverage_module


@pytest.fixture
def fresh_reference_cache():
    coverage_module._cached_reference_usage.cache_clear()
    yield
    coverage_module._cached_reference_usage.cache_clear()


# ----------------------------------------------------------------------------- Chao1, coverage: exact values


@pytest.mark.parametrize(
    "counts, expected",
    [
        ([3, 1, 1, 2, 0, 0, 5, 1], 6 + 3 * 2 / (2 * (1 + 1))),  # S_obs 6, f1 3, f2 1 -> 7.5
        ([2, 2, 0, 4], 3.0),  # no singletons: the observed count
        ([1, 1, 0, 0, 3], 3 + 2 * 1 / (2 * (0 + 1))),  # f2 = 0 stays finite -> 4
        ([1, 0, 0], 1.0),  # a single singleton adds f1 (f1 - 1) = 0
        ([0, 0, 0], 0.0),
        ([1] * 10 + [0] * 90, 10 + 10 * 9 / 2),  # all singletons -> 55
    ],
)
def test_chao1_matches_hand_computation(counts, expected):
    assert chao1(torch.tensor(counts)) == pytest.approx(expected, abs=1e-12)


def test_chao1_accepts_any_integer_dtype():
    counts = [3, 1, 1, 2, 0, 0, 5, 1]
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        assert chao1(torch.tensor(counts, dtype=dtype)) == pytest.approx(7.5)


def test_sample_coverage_matches_hand_computation():
    assert sample_coverage(torch.tensor([3, 1, 1, 2, 0, 0, 5, 1])) == pytest.approx(1 - 3 / 13)  # N = 13, f1 = 3
    assert sample_coverage(torch.tensor([2, 5, 0])) == 1.0
    assert sample_coverage(torch.tensor([1, 1, 0])) == 0.0
    assert math.isnan(sample_coverage(torch.zeros(4, dtype=torch.long)))


# ----------------------------------------------------------------------------- against a known distribution


def _skewed_distribution(num_codes: int, num_live: int, seed: int = 123) -> torch.Tensor:
    """``num_live`` codes with log-normal weights, the rest with probability 0."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.zeros(num_codes, dtype=torch.float64)
    weights[torch.randperm(num_codes, generator=generator)[:num_live]] = torch.randn(
        num_live, generator=generator, dtype=torch.float64
    ).exp()
    return weights / weights.sum()


def _histograms(probs: torch.Tensor, num_tokens: int, seeds):
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        draws = torch.multinomial(probs, num_tokens, replacement=True, generator=generator)
        yield torch.bincount(draws, minlength=probs.numel())


def test_chao1_is_closer_to_the_true_number_of_codes_than_the_raw_count_when_sampling_is_sparse():
    num_codes, num_live, num_tokens = 2000, 1000, 1000  # one token per live code: sparse
    probs = _skewed_distribution(num_codes, num_live)
    chao_errors, raw_errors, closer = [], [], 0
    for counts in _histograms(probs, num_tokens, range(20)):
        estimate, observed = chao1(counts), int((counts > 0).sum())
        assert estimate >= observed
        chao_errors.append(abs(estimate - num_live))
        raw_errors.append(abs(observed - num_live))
        closer += chao_errors[-1] < raw_errors[-1]
    # measured: mean Chao1 error ~220 codes, raw count ~520, Chao1 closer in 30 of 30 seeds
    assert sum(chao_errors) < 0.6 * sum(raw_errors)
    assert closer >= 18


def test_chao1_is_nearly_unbiased_for_uniform_use():
    num_codes, num_live, num_tokens = 1000, 500, 750
    probs = torch.zeros(num_codes, dtype=torch.float64)
    probs[:num_live] = 1.0 / num_live
    estimates = [chao1(counts) for counts in _histograms(probs, num_tokens, range(20))]
    observed_mean = num_live * (1 - (1 - 1 / num_live) ** num_tokens)  # ~389 of 500
    mean_estimate = sum(estimates) / len(estimates)
    assert abs(mean_estimate - num_live) < 0.05 * num_live
    assert abs(mean_estimate - num_live) < 0.3 * (num_live - observed_mean)


def test_sample_coverage_estimates_the_covered_probability_mass():
    probs = _skewed_distribution(2000, 1000)
    errors, usage_gaps = [], []
    for counts in _histograms(probs, 1000, range(20)):
        true_mass = probs[counts > 0].sum().item()  # mass of the codes seen
        errors.append(sample_coverage(counts) - true_mass)
        usage_gaps.append(int((counts > 0).sum()) / 1000 - true_mass)  # fraction of live codes seen
    mean_abs_error = sum(abs(e) for e in errors) / len(errors)
    # measured: mean |error| ~0.014 with ~74% of the mass covered but only ~48% of live codes seen
    assert mean_abs_error < 0.03
    assert abs(sum(errors) / len(errors)) < 0.015
    assert mean_abs_error < 0.2 * sum(abs(g) for g in usage_gaps) / len(usage_gaps)


# ----------------------------------------------------------------------------- Gaussian reference


def _brute_force_reference(codebook_size, tokens_per_code, dim, seed):
    """The same random stream as gaussian_reference_usage, every token searched with cdist."""
    num_tokens = round(tokens_per_code * codebook_size)
    chunk = coverage_module._token_chunk(dim)
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(codebook_size, dim, generator=generator)
    tokens = torch.cat(
        [
            torch.randn(min(chunk, num_tokens - start), dim, generator=generator)
            for start in range(0, num_tokens, chunk)
        ]
    )
    assigned = torch.cdist(tokens.double(), codes.double()).argmin(dim=1)
    return torch.bincount(assigned, minlength=codebook_size).gt(0).double().mean().item()


@pytest.mark.parametrize(
    "codebook_size, tokens_per_code, dim, chunk_elements, bound_codes",
    [
        (64, 3.0, 8, 2**20, 256),  # one chunk
        (256, 4.0, 8, 8 * 96, 256),  # chunks of 96 tokens, bound set = every code
        (512, 6.0, 16, 16 * 128, 32),  # chunks of 128 tokens, screened against 32 codes
        (1024, 2.5, 32, 32 * 200, 64),
        (128, 40.0, 2, 2 * 256, 16),  # saturates: stops early once every code is hit
    ],
)
def test_gaussian_reference_equals_brute_force(
    monkeypatch, fresh_reference_cache, codebook_size, tokens_per_code, dim, chunk_elements, bound_codes
):
    monkeypatch.setattr(coverage_module, "_TOKEN_CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(coverage_module, "_BOUND_CODES", bound_codes)
    for seed in (0, 1):
        expected = _brute_force_reference(codebook_size, tokens_per_code, dim, seed)
        got = gaussian_reference_usage(tokens_per_code, dim, codebook_size=codebook_size, seed=seed)
        assert got == pytest.approx(expected, abs=1e-12)


def test_gaussian_reference_rises_with_tokens_per_code_and_stays_below_the_uniform_cap():
    ratios = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    values = [gaussian_reference_usage(r, 16, codebook_size=1024) for r in ratios]
    assert all(later > earlier for earlier, later in zip(values, values[1:])), values
    for ratio, value in zip(ratios, values):
        assert value < 1 - math.exp(-ratio)  # skewed cell masses: below uniform use


def test_gaussian_reference_at_d64_is_far_below_the_uniform_cap():
    # the issue: ~72% at d=64, ~93% at d=16 for N/K = 7.5 (K = 8192); K = 2048 here for speed,
    # where the value runs ~2 points higher (it drifts down slowly with K)
    cap = 1 - math.exp(-7.5)
    d64 = gaussian_reference_usage(7.5, 64, codebook_size=2048)
    d16 = gaussian_reference_usage(7.5, 16, codebook_size=2048)
    assert 0.65 < d64 < 0.80
    assert cap - d64 > 0.15
    assert d64 < d16 < cap
    assert 0.88 < d16 < 0.97


def test_gaussian_reference_is_cached(fresh_reference_cache):
    first = gaussian_reference_usage(3, 8, codebook_size=256)
    again = gaussian_reference_usage(3.0, 8, codebook_size=256, device="cpu")
    info = coverage_module._cached_reference_usage.cache_info()
    assert again == first and info.misses == 1 and info.hits == 1


def test_gaussian_reference_with_no_tokens_is_zero():
    assert gaussian_reference_usage(1e-6, 8, codebook_size=64) == 0.0  # N rounds to 0


# ----------------------------------------------------------------------------- summary


def test_coverage_summary_from_a_histogram():
    meter = CodebookUsage(512)
    generator = torch.Generator().manual_seed(0)
    meter.update(torch.multinomial(_skewed_distribution(512, 300).float(), 700, replacement=True, generator=generator))
    counts = meter.histogram()
    summary = coverage_summary(counts, dim=8)
    assert set(summary) == {"usage", "tokens", "tokens_per_code", "usage_chao1", "coverage", "usage_reference",
                            "entropy_bits", "perplexity_per_code", "usage_at_50"}
    assert 2 ** summary["entropy_bits"] == pytest.approx(meter.compute()["perplexity"], rel=1e-5)
    assert summary["perplexity_per_code"] == pytest.approx(meter.compute()["perplexity"] / 512, rel=1e-5)
    assert math.isnan(summary["usage_at_50"])  # 700 tokens < 50 x 512
    assert summary["usage"] == meter.compute()["usage"]
    assert summary["tokens"] == 700 and summary["tokens_per_code"] == pytest.approx(700 / 512)
    assert summary["usage_chao1"] == pytest.approx(chao1(counts) / 512)
    assert summary["usage_chao1"] > summary["usage"]
    assert summary["coverage"] == pytest.approx(sample_coverage(counts))
    # K = 512 < 8192: the reference is computed at the run's own K
    assert summary["usage_reference"] == gaussian_reference_usage(700 / 512, 8, codebook_size=512)


def test_coverage_summary_clips_chao1_at_k_and_handles_no_tokens():
    summary = coverage_summary(torch.tensor([1, 1, 1, 0]), dim=4)  # Chao1 = 3 + 3 = 6 > K = 4
    assert summary["usage_chao1"] == 1.0 and summary["usage"] == 0.75
    empty = coverage_summary(torch.zeros(16, dtype=torch.long), dim=4)
    assert empty["usage"] == 0.0 and empty["tokens"] == 0 and empty["usage_chao1"] == 0.0
    assert empty["usage_reference"] == 0.0 and math.isnan(empty["coverage"])


# ----------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("function", [chao1, sample_coverage, lambda c: coverage_summary(c, dim=4)])
def test_counts_are_validated(function):
    with pytest.raises(TypeError, match="counts must be a torch.Tensor"):
        function([1, 2, 3])
    with pytest.raises(ValueError, match="counts must be a 1-D"):
        function(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="counts must be an integer tensor"):
        function(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="counts must be an integer tensor"):
        function(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="counts must be non-negative"):
        function(torch.tensor([1, -1, 2]))
    with pytest.raises(ValueError, match="counts must hold at least one code"):
        function(torch.zeros(0, dtype=torch.long))


def test_reference_arguments_are_validated():
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tokens_per_code"):
            gaussian_reference_usage(bad, 8)
    for bad in (True, "3", None):
        with pytest.raises(TypeError, match="tokens_per_code"):
            gaussian_reference_usage(bad, 8)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="dim"):
            gaussian_reference_usage(1.0, bad)
        with pytest.raises(ValueError, match="dim"):
            coverage_summary(torch.tensor([1, 2]), dim=bad)
    with pytest.raises(ValueError, match="codebook_size"):
        gaussian_reference_usage(1.0, 8, codebook_size=0)
    with pytest.raises(ValueError, match="seed"):
        gaussian_reference_usage(1.0, 8, seed=1.5)
    with pytest.raises(ValueError, match="reference_codebook_size"):
        coverage_summary(torch.tensor([1, 2]), dim=4, reference_codebook_size=0)


def test_entropy_bits_against_its_definition():
    assert entropy_bits(torch.tensor([5, 5, 5, 5])) == pytest.approx(2.0)
    assert entropy_bits(torch.tensor([7, 0, 0])) == 0.0
    assert entropy_bits(torch.tensor([1, 3])) == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))
    assert math.isnan(entropy_bits(torch.zeros(3, dtype=torch.long)))


@pytest.mark.parametrize("counts", [[3, 1, 0, 2, 1], [4, 4], [1, 1, 1, 1, 1, 1], [6, 0, 0, 1]])
def test_usage_at_equals_the_mean_over_every_subsample(counts):
    """The exact expectation against enumerating every subsample of n of the N tokens."""
    tokens = [code for code, count in enumerate(counts) for _ in range(count)]
    for drawn in range(1, len(tokens) + 1):
        subsamples = list(itertools.combinations(range(len(tokens)), drawn))
        mean_usage = sum(len({tokens[i] for i in subset}) for subset in subsamples) / len(subsamples) / len(counts)
        assert usage_at(torch.tensor(counts), drawn / len(counts)) == pytest.approx(mean_usage, abs=1e-12)
    assert usage_at(torch.tensor(counts), len(tokens) / len(counts)) == pytest.approx((torch.tensor(counts) > 0).float().mean().item())
    assert math.isnan(usage_at(torch.tensor(counts), (len(tokens) + 1) / len(counts)))
