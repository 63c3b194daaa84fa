"""Nearest-code search against brute force: every method, tiling, dtype and extreme magnitudes,
shared offsets, duplicate codes and exact ties. The reference is float64 over the float32 inputs."""


import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simvq import nearest, search


def exact_nearest(x, codebook):
    """``(indices, squared distances)``: float64 ``((x - c) ** 2).sum()`` over the float32-rounded
    inputs, every pair directly (no expansion, so no cancellation), the first index on ties."""
    x64, codebook64 = x.float().double(), codebook.float().double()
    rows = max(1, 2**22 // (codebook64.numel() + 1))
    distances = torch.cat([(x64[i : i + rows, None] - codebook64[None]).pow(2).sum(-1) for i in range(0, x64.shape[0], rows)])
    return distances.argmin(1), distances.min(1).values


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_nearest_matches_brute_force(chunk_size, dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator).to(dtype)
    codebook = torch.randn(257, 16, generator=generator).to(dtype)
    indices, distances = nearest(x, codebook, chunk_size=chunk_size)
    ref_indices, ref_distances = exact_nearest(x, codebook)
    assert indices.dtype == torch.int64 and distances.dtype == torch.float32
    assert indices.shape == (300,) and distances.shape == (300,)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(distances.double(), ref_distances, rtol=1e-5, atol=1e-6)


SCREEN_CASES = {
    "random": lambda g: (torch.randn(700, 64, generator=g) * 3, torch.randn(5000, 64, generator=g) * 0.1),
    "near_codes": lambda g: _near_codes(g, 700, 4500, 32, noise=0.01),
    "near_ties": lambda g: _near_codes(g, 600, 4097, 16, noise=1e-4),
    "tiny_scale": lambda g: (torch.randn(500, 24, generator=g) * 1e-6, torch.randn(4200, 24, generator=g) * 1e-6),
    "huge_scale": lambda g: (torch.randn(500, 8, generator=g) * 1e6, torch.randn(4100, 8, generator=g) * 1e5),
    "duplicate_codes": lambda g: (torch.randn(400, 16, generator=g), torch.randn(64, 16, generator=g).repeat(70, 1)),
    # the issue's case: a shared offset 100 with a 0.01 spread (the uncentred expansion got 198 of
    # 200 tokens wrong), and codes of one norm with x near their centre (every score ~ |c|^2)
    "offset_100": lambda g: (100 + 0.01 * torch.randn(500, 8, generator=g), 100 + 0.01 * torch.randn(4500, 8, generator=g)),
    "equal_norms_tiny_x": lambda g: (1e-5 * torch.randn(500, 16, generator=g), torch.nn.functional.normalize(torch.randn(5000, 16, generator=g), dim=1)),
}


def _near_codes(generator, num_tokens, num_codes, dim, noise):
    codebook = torch.randn(num_codes, dim, generator=generator)
    picks = torch.randint(0, num_codes, (num_tokens,), generator=generator)
    return codebook[picks] + noise * torch.randn(num_tokens, dim, generator=generator), codebook


@pytest.mark.parametrize("case", sorted(SCREEN_CASES))
@pytest.mark.parametrize("chunk_size", [None, 300])
def test_screened_search_equals_fp32_search(case, chunk_size):
    """The bf16 screen must never change the answer: its pruning rests on an error bound. Both
    methods return the exact nearest code, the first of equal ones (duplicate codes included)."""
    x, codebook = SCREEN_CASES[case](torch.Generator().manual_seed(3))
    exact, exact_distances = nearest(x, codebook, chunk_size=chunk_size, method="fp32")
    screened, screened_distances = nearest(x, codebook, chunk_size=chunk_size, method="screened")
    ref, _ = exact_nearest(x, codebook)
    assert torch.equal(exact, ref)
    assert torch.equal(screened, ref)
    assert torch.equal(screened_distances, exact_distances)


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
    ref_indices, _ = exact_nearest(x, codebook)
    assert torch.equal(indices, ref_indices)


def test_nearest_is_fp32_under_autocast():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(200, 32, generator=generator)
    # codes so close together that bf16 distances could not tell them apart (fp32 can)
    base = torch.randn(1, 32, generator=generator)
    codebook = base + 0.05 * torch.randn(64, 32, generator=generator)
    x = base + 0.05 * x
    ref_indices, _ = exact_nearest(x, codebook)
    bf16_scores = (codebook.bfloat16().pow(2).sum(1) - 2 * x.bfloat16() @ codebook.bfloat16().T)
    assert (bf16_scores.argmin(1) == ref_indices).float().mean() < 0.9  # the case is hard in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices, distances = nearest(x, codebook)
    assert distances.dtype == torch.float32
    assert torch.equal(indices, ref_indices)


def test_nearest_rejects_bad_shapes():
    with pytest.raises(ValueError, match="x must have shape"):
        nearest(torch.randn(3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="share dim"):
        nearest(torch.randn(3, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        nearest(torch.randn(3, 3), torch.randn(4, 3), chunk_size=0)


# ----------------------------------------------------------------------------- exactness

PROPERTY = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def offset_problems(draw):
    """``(x, codebook)`` float32: a shared offset of 0 .. 1e4 (per coordinate, of either sign), a
    spread down to 1e-3 -- at 1e4 that is about float32's resolution (ulp(1e4) ~ 1e-3), so values
    fall on a few grid points and exact ties abound -- and one of: plain codes, duplicated codes,
    codes on an integer grid; tokens next to codes, exactly on codes, at midpoints of two codes
    (equal distances) and anywhere in the cloud."""
    dim = draw(st.integers(1, 8), label="dim")
    num_codes = draw(st.integers(1, 40), label="num_codes")
    num_tokens = draw(st.integers(1, 24), label="num_tokens")
    offset = draw(st.sampled_from([0.0, 1.0, 10.0, 100.0, 1e3, 1e4]), label="offset")
    spread = draw(st.sampled_from([1.0, 1e-1, 1e-2, 1e-3]), label="spread")
    layout = draw(st.sampled_from(["plain", "duplicates", "grid"]), label="layout")
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16), label="seed"))
    centre = offset * torch.randn(dim, generator=generator, dtype=torch.float64).sign()
    if layout == "grid":
        codebook = centre + spread * torch.randint(-2, 3, (num_codes, dim), generator=generator)
    else:
        codebook = centre + spread * torch.randn(num_codes, dim, generator=generator, dtype=torch.float64)
    if layout == "duplicates":
        codebook = codebook[torch.randint(0, max(1, num_codes // 3), (num_codes,), generator=generator)]
    codebook = codebook.float()
    picks = torch.randint(0, num_codes, (2, num_tokens), generator=generator)
    kind = torch.randint(0, 4, (num_tokens, 1), generator=generator)
    near = codebook[picks[0]].double() + 0.1 * spread * torch.randn(num_tokens, dim, generator=generator, dtype=torch.float64)
    midpoint = (codebook[picks[0]].double() + codebook[picks[1]].double()) / 2
    anywhere = centre + spread * torch.randn(num_tokens, dim, generator=generator, dtype=torch.float64)
    x = torch.where(kind == 0, near, torch.where(kind == 1, codebook[picks[0]].double(), torch.where(kind == 2, midpoint, anywhere)))
    return x.float(), codebook


@PROPERTY
@given(problem=offset_problems(), method=st.sampled_from(["fp32", "screened", "auto"]), chunk=st.one_of(st.none(), st.integers(1, 16)))
def test_nearest_is_the_float64_argmin_at_any_offset_with_the_first_of_tied_codes(problem, method, chunk):
    """The exact nearest code of the float32 inputs, the lowest index among equally near ones. The
    reference's float64 distances are exact here (the draws' differences need few bits), so its
    ties are true ties. The old uncentred search failed at offset 10 already."""
    x, codebook = problem
    indices, distances = nearest(x, codebook, chunk, method=method)
    expected, expected_distances = exact_nearest(x, codebook)
    assert torch.equal(indices, expected)
    # the distances are computed directly in float32: within its rounding of a sum of dim squares
    torch.testing.assert_close(distances.double(), expected_distances, rtol=(x.shape[1] + 2) * 2**-23, atol=1e-30)


@PROPERTY
@given(problem=offset_problems(), chunk=st.one_of(st.none(), st.integers(1, 16)))
def test_accelerator_path_is_exact_and_without_host_sync_within_its_stated_bound(problem, chunk):
    """The path GPUs take: settled, the same indices as the CPU; in its sync-free form (compiled
    graphs, ``check_finite=False``), a code within ``nearest``'s stated bound of the nearest."""
    x, codebook = problem
    expected, expected_distances = exact_nearest(x, codebook)
    assert torch.equal(search._search_fp32_device(x, codebook, chunk), expected)
    unsettled = search._search_fp32_device(x, codebook, chunk, settle=False)
    x64, codebook64 = x.double(), codebook.double()
    centre = codebook.mean(0).double()
    radius = (codebook64 - centre).norm(dim=1).max()
    x_radius = (x64 - centre).norm(dim=1)
    dim = x.shape[1]
    bound = 2.2 * (2 * dim + 8) * 2**-24 * (radius**2 + 2 * x_radius * radius) + 3e-30
    excess = (x64 - codebook64[unsettled]).pow(2).sum(1) - expected_distances
    assert (excess <= bound).all(), (excess / bound).max()


@pytest.mark.parametrize("offset", [10.0, 100.0])
def test_the_issue_case_shared_offset(offset):
    """The report: at offset 100 (10), 198 (112) of 200 tokens got a code that was not the nearest,
    one at 77x the true distance."""
    generator = torch.Generator().manual_seed(0)
    codebook = offset + 0.01 * torch.randn(1000, 8, generator=generator)
    x = offset + 0.01 * torch.randn(200, 8, generator=generator)
    expected, _ = exact_nearest(x, codebook)
    for method in ("fp32", "screened", "auto"):
        assert torch.equal(nearest(x, codebook, method=method)[0], expected), method


@pytest.mark.parametrize("method", ["fp32", "screened"])
def test_duplicate_codes_give_the_first_copy_whatever_the_tiling(method):
    """Copies of each code spread over several tiles, screened groups and token blocks: the first
    copy wins, whichever copy the float32 pass happened to meet first."""
    generator = torch.Generator().manual_seed(5)
    distinct = torch.randn(50, 12, generator=generator)
    order = torch.randperm(50 * 90, generator=generator) % 50
    codebook = distinct[order]
    x = distinct[torch.randint(0, 50, (600,), generator=generator)] + 0.3 * torch.randn(600, 12, generator=generator)
    first_copy = torch.full((50,), len(order)).scatter_reduce(0, order, torch.arange(len(order)), "amin")
    expected = first_copy[exact_nearest(x, distinct)[0]]
    for chunk in (None, 100, 257):
        assert torch.equal(nearest(x, codebook, chunk, method=method)[0], expected), chunk


def test_the_score_window_bounds_the_float32_scores_rounding():
    """``_score_window`` is twice a bound on |float32 score - exact score| (scores centred as the
    search centres them): checked against float64 on every (token, code) pair, where the error is
    largest -- shared offsets, equal norms, wide and tiny spreads. The bound is not loose by more
    than it needs: the worst case uses a sizeable part of it somewhere."""
    generator = torch.Generator().manual_seed(7)
    used = 0.0
    for offset, spread, dim in [(0.0, 1.0, 64), (100.0, 0.01, 8), (1e4, 1e-3, 16), (1e4, 10.0, 64), (3.0, 1e-6, 32)]:
        codebook = offset + spread * torch.randn(2000, dim, generator=generator)
        x = offset + spread * torch.randn(300, dim, generator=generator)
        xc, codes, code_norms = search._centred(x, codebook)
        scores = search._fp32_scores(xc, codes.t(), code_norms).double()
        centre = (codebook - codes)[0].double()  # the centre the search used (zero when none)
        a, b = x.double() - centre, codebook.double() - centre
        exact = b.pow(2).sum(1) - 2 * a @ b.t()
        error = (scores - exact).abs().max(1).values
        half_window = search._score_window(xc.norm(dim=1), code_norms.max().sqrt(), dim).double() / 2
        assert (error <= half_window).all(), (offset, spread, (error / half_window).max())
        used = max(used, float((error / half_window).max()))
    assert used > 1e-3  # the bound tracks the error's scale, not just its sign


@pytest.mark.parametrize("case, prunes", [("offset_100", True), ("near_ties", True), ("equal_norms_tiny_x", False)])
def test_the_screen_keeps_the_group_of_every_tokens_nearest_code(case, prunes):
    """Pass 1's pruning must never drop the group holding the exact nearest code (``_screen_bounds``
    bounds the bf16 score against the exact one, centring and all). Where bf16 can tell codes apart
    it prunes most groups; with every score within bf16's resolution of 1 (unit codes, |x| ~ 1e-5)
    it must keep them all."""
    x, codebook = SCREEN_CASES[case](torch.Generator().manual_seed(3))
    tiles = search._ScreenTiles.of(x.shape[0], codebook.shape[0], None)
    xc, codes, code_norm_sq = search._centred(x, codebook)
    codes_aug, code_residual, max_bf16_code_norm = search._bf16_codes(codes, tiles.code_chunk)
    x_bf16 = xc.bfloat16()
    input_error, offset = search._screen_bounds(xc, x_bf16, xc.norm(dim=1), code_norm_sq, code_residual, max_bf16_code_norm)
    x_aug, codes_aug_t = search._augmented_operands(x_bf16, codes_aug, code_norm_sq, offset)
    candidates = search._screen_candidates(x_aug, codes_aug_t, input_error, tiles)
    nearest_code, _ = exact_nearest(x, codebook)
    chunk, within = nearest_code // tiles.code_chunk, nearest_code % tiles.code_chunk // tiles.group
    assert candidates[chunk * tiles.groups_per_chunk + within, torch.arange(x.shape[0])].all()
    assert (candidates.float().mean() < 0.5) == prunes


def test_a_compiled_graph_settles_near_ties_too():
    """Under torch.compile the search takes the sync-free path; settling is a custom op the graph
    holds whole, so a compiled call returns the exact indices, first of equal codes included."""
    generator = torch.Generator().manual_seed(1)
    # unit codes, x near their centre: every score ~ 1, float32 misorders a few tokens
    codebook = torch.nn.functional.normalize(torch.randn(1000, 16, generator=generator), dim=1).repeat(2, 1)
    x = 1e-5 * torch.randn(200, 16, generator=generator)
    expected = exact_nearest(x, codebook)[0]
    assert not torch.equal(search._search_fp32_device(x, codebook, None, settle=False), expected)  # the case is hard
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, c: nearest(x, c, return_distances=False), fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, codebook), expected)


@pytest.mark.parametrize("method", ["fp32", "screened"])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_a_codebook_of_one_repeated_code_gives_code_0(method, chunk_size):
    """Every tile ties every token's best: the search's running state folds its stash of tile
    results part way (``_RunningMin.resolve`` mid-search) and must still give the first copy."""
    generator = torch.Generator().manual_seed(9)
    codebook = torch.randn(1, 5, generator=generator).repeat(300, 1)
    x = torch.randn(50, 5, generator=generator)
    assert torch.equal(nearest(x, codebook, chunk_size, method=method)[0], torch.zeros(50, dtype=torch.long))


# ----------------------------------------------------------------------------- the bf16 probe


@pytest.fixture
def fresh_probe(monkeypatch):
    """``cpu_has_native_bf16`` re-read under this test's environment, and forgotten after it."""
    from simvq.cpu import cpu_has_native_bf16

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cpu_has_native_bf16.cache_clear()
    yield cpu_has_native_bf16
    cpu_has_native_bf16.cache_clear()


def test_the_bf16_probe_reads_the_cpu_flags(fresh_probe):
    """Native bf16 dot products are the kernel's avx512_bf16 / amx_bf16 flags: plain AVX-512 does
    not count (bf16 is emulated there, slower than float32)."""
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    if "avx512_bf16" not in flags and "amx_bf16" not in flags and "avx512f" not in flags and "avx2" not in flags:
        pytest.skip("not an x86 CPU")
    assert fresh_probe() == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.parametrize("isa, native", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_VNNI", False), ("AVX512_CORE_BF16", None)])
def test_the_bf16_probe_honours_a_onednn_isa_cap(fresh_probe, monkeypatch, isa, native):
    """``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16 holds oneDNN to emulated bf16 whatever the CPU."""
    unrestricted = fresh_probe()
    fresh_probe.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert fresh_probe() == (unrestricted if native is None else native)


def test_auto_screens_only_on_a_cpu_with_native_bf16(monkeypatch):
    x = torch.randn(256, 8)
    monkeypatch.setattr(search, "cpu_has_native_bf16", lambda: False)
    assert search._resolve_method("auto", x, search.SCREEN_MIN_CODES) == "fp32"
    monkeypatch.setattr(search, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(search, "_bf16_gemm_is_sound", lambda: True)
    assert search._resolve_method("auto", x, search.SCREEN_MIN_CODES) == "screened"
    assert search._resolve_method("auto", x, search.SCREEN_MIN_CODES - 1) == "fp32"


@pytest.mark.parametrize("chunk_size", [None, 300])
def test_the_screened_search_settles_within_its_candidate_groups(monkeypatch, chunk_size):
    """Every code duplicated in another chunk: every token ties, and where few candidate groups
    hold the ties the screened search settles them there (``_pairs_within_reach_in_groups``)
    rather than against the whole codebook; the first copy must win either way (chunks of 300
    codes: groups of 256 and 44)."""
    generator = torch.Generator().manual_seed(4)
    distinct = torch.randn(4096, 16, generator=generator)
    codebook = torch.cat([distinct, distinct])
    x = distinct[torch.randint(0, 4096, (300,), generator=generator)] + 0.05 * torch.randn(300, 16, generator=generator)
    calls = []
    in_groups = search._pairs_within_reach_in_groups

    def spy(*args):
        calls.append(args[3].numel())
        yield from in_groups(*args)

    monkeypatch.setattr(search, "_pairs_within_reach_in_groups", spy)
    expected = exact_nearest(x, distinct)[0]
    assert torch.equal(nearest(x, codebook, chunk_size, method="screened")[0], expected)
    assert calls == [300]  # every token settled, in the groups path
    assert torch.equal(nearest(x, codebook, chunk_size, method="fp32")[0], expected)
