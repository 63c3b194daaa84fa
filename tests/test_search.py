"""Nearest-code search against brute force: every method, tiling, dtype and extreme magnitudes."""

import pytest
import torch

from quantizer_references import brute_force
from simvq import nearest


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_nearest_matches_brute_force(chunk_size, dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator).to(dtype)
    codebook = torch.randn(257, 16, generator=generator).to(dtype)
    indices, distances = nearest(x, codebook, chunk_size=chunk_size)
    ref_indices, ref_distances = brute_force(x.float(), codebook.float())
    assert indices.dtype == torch.int64 and distances.dtype == torch.float32
    assert indices.shape == (300,) and distances.shape == (300,)
    # ties aside: where the index differs, the distance must be equal to the reference's
    mismatch = indices != ref_indices
    assert mismatch.float().mean() < 0.01
    torch.testing.assert_close(distances.double(), ref_distances, rtol=1e-4, atol=1e-4)


SCREEN_CASES = {
    "random": lambda g: (torch.randn(700, 64, generator=g) * 3, torch.randn(5000, 64, generator=g) * 0.1),
    "near_codes": lambda g: _near_codes(g, 700, 4500, 32, noise=0.01),
    "near_ties": lambda g: _near_codes(g, 600, 4097, 16, noise=1e-4),
    "tiny_scale": lambda g: (torch.randn(500, 24, generator=g) * 1e-6, torch.randn(4200, 24, generator=g) * 1e-6),
    "huge_scale": lambda g: (torch.randn(500, 8, generator=g) * 1e6, torch.randn(4100, 8, generator=g) * 1e5),
    "duplicate_codes": lambda g: (torch.randn(400, 16, generator=g), torch.randn(64, 16, generator=g).repeat(70, 1)),
}


def _near_codes(generator, num_tokens, num_codes, dim, noise):
    codebook = torch.randn(num_codes, dim, generator=generator)
    picks = torch.randint(0, num_codes, (num_tokens,), generator=generator)
    return codebook[picks] + noise * torch.randn(num_tokens, dim, generator=generator), codebook


@pytest.mark.parametrize("case", sorted(SCREEN_CASES))
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_screened_search_equals_fp32_search(case, chunk_size):
    """The bf16 screen must never change the float32 answer: its pruning rests on an error bound."""
    x, codebook = SCREEN_CASES[case](torch.Generator().manual_seed(3))
    exact, exact_distances = nearest(x, codebook, chunk_size=chunk_size, method="fp32")
    screened, screened_distances = nearest(x, codebook, chunk_size=chunk_size, method="screened")
    ref, _ = brute_force(x, codebook)
    same = screened == exact
    # ties aside: a differing index must be at the same float32 distance
    torch.testing.assert_close(screened_distances[~same], exact_distances[~same], rtol=1e-6, atol=0)
    if case != "duplicate_codes":
        assert same.float().mean() > 0.999
        assert (exact == ref).float().mean() > 0.99


@pytest.mark.parametrize("case", sorted(SCREEN_CASES))
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_accelerator_search_path_equals_the_cpu_path(case, chunk_size, monkeypatch):
    """The sync-free path GPUs take (large tiles, running minimum by ``torch.where``), run on CPU
    with tiles small enough to walk several token blocks and code chunks."""
    from simvq import search

    monkeypatch.setattr(search, "DEVICE_TILE_ELEMENTS", 100_000)
    x, codebook = SCREEN_CASES[case](torch.Generator().manual_seed(3))
    expected, _ = nearest(x, codebook, chunk_size=chunk_size, method="fp32")
    got = search._search_fp32_device(x.float(), codebook.float(), chunk_size)
    assert torch.equal(got, expected)


def test_nearest_method_argument():
    with pytest.raises(ValueError, match="method must be one of"):
        nearest(torch.randn(3, 3), torch.randn(4, 3), method="approx")


def test_nearest_many_token_tiles():
    # more tokens than one token tile holds at chunk_size=4096 (2M / 4096 = 512 tokens per tile)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1500, 8, generator=generator)
    codebook = torch.randn(5000, 8, generator=generator)
    indices, _ = nearest(x, codebook, chunk_size=4096)
    ref_indices, _ = brute_force(x, codebook)
    assert (indices == ref_indices).float().mean() > 0.999


def test_nearest_is_fp32_under_autocast():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(200, 32, generator=generator)
    # codes so close together that bf16 distances could not tell them apart (fp32 can)
    base = torch.randn(1, 32, generator=generator)
    codebook = base + 0.05 * torch.randn(64, 32, generator=generator)
    x = base + 0.05 * x
    ref_indices, _ = brute_force(x, codebook)
    bf16_scores = (codebook.bfloat16().pow(2).sum(1) - 2 * x.bfloat16() @ codebook.bfloat16().T)
    assert (bf16_scores.argmin(1) == ref_indices).float().mean() < 0.9  # the case is hard in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices, distances = nearest(x, codebook)
    assert distances.dtype == torch.float32
    assert (indices == ref_indices).float().mean() > 0.99


def test_nearest_rejects_bad_shapes():
    with pytest.raises(ValueError, match="x must have shape"):
        nearest(torch.randn(3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="share dim"):
        nearest(torch.randn(3, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        nearest(torch.randn(3, 3), torch.randn(4, 3), chunk_size=0)
