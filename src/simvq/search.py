"""Nearest-code search: exact squared-L2 argmin, memory-bounded. The only search in simvq.

``nearest(x, codebook)`` returns, for each row of ``x``, the code at the smallest squared distance,
whatever the input dtype (bf16 under autocast included). Exact means: the argmin of the exact
squared distances between the inputs rounded to float32, the lowest index winning exact ties --
the same indices from every method, tiling and device (``nearest`` states precisely what float64
cannot resolve, and the one relaxation, for graphs that cannot synchronise with the host). The
``N x K`` distance matrix is never materialised: tokens and codes are walked in tiles of a few
MiB. Three steps:

1. Centring. The float32 scores are ``||c - m||^2 - 2 (x - m).(c - m)``: the squared distance less
   a per-token constant, with rounding errors that grow with ``|x - m| |c - m|``, not with the
   distances. Taken from the origin (``m = 0``), a codebook 100 units out with a 0.01 spread lost
   198 of 200 tokens to a code that was not the nearest. ``m`` is the codebook's mean where the mean
   outweighs the codes' spread (``_centred``), else the origin: centred data pays nothing.
2. A float32 search (``method`` below) keeps, per token, the best score and whether a rival -- a
   second code scoring within ``window`` of the best -- was seen. ``window`` is twice a rigorous
   bound on a score's rounding error (``_score_window``), so a token without a rival holds its exact
   argmin.
3. Settling. Tokens with a rival (duplicate codes, exact ties, distances closer than float32
   resolves) are decided in float64: every code within the window is compared with the best in
   float64, and the nearest wins, the lowest index on ties (``_settle``). On typical data well
   under 1% of the tokens get there.

Two float32 strategies, chosen by ``method``:

``"fp32"``: one float32 GEMM per tile. A token block's first tile of codes sets its running
    minimum; on later tiles only the *values* of the row minimum are taken (a vectorised reduction,
    ~20x cheaper than min-with-index on CPU), and the index is recovered only for the rows whose
    tile minimum is within reach of their best, which after the first few tiles is a small fraction
    (about ``ln(tiles) / tiles`` of all rows). Indices come from ``_row_min``: the vectorised minima
    of groups of 64 codes, then the index within each row's winning group.

``"screened"``: a bfloat16 GEMM screens the codebook, then float32 decides. Every bf16 score
    carries a rounding error with a rigorous bound ``E`` (input rounding, split norms, float32
    accumulation, output rounding; see ``_screen_bounds``). A tile of codes whose screened minimum,
    lowered by its bound, exceeds the screened global minimum raised by its bound cannot hold the
    exact argmin and is skipped; the remaining (token, tile) pairs -- typically 1-3 tiles per token
    -- are rescored in float32, then settled as above: the same indices as ``"fp32"``, at roughly
    the cost of the bf16 GEMM. Used by ``"auto"`` on CPUs with native bf16 dot products; CUDA keeps
    ``"fp32"`` because cuBLAS may reduce bf16 products in reduced precision, which would void the
    bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .cpu import cpu_has_native_bf16

# Tile shapes measured on a 2-core AVX-512 CPU (benchmarks/search.py): float32 tiles of
# 2048 x 1024 (8 MiB) keep the GEMM near peak; larger tiles spill the 2 MiB L2 without gain.
DEFAULT_CODE_CHUNK = 1024
DEFAULT_TILE_ELEMENTS = 2048 * 1024
DEVICE_TILE_ELEMENTS = 2**26  # accelerators: 256 MiB float32 tiles, few launches
SCREEN_MIN_CODES = 4096  # below this the screen's bookkeeping costs more than it saves
SCREEN_GROUP = 256  # codes per screened minimum: finer groups leave fewer codes to rescore
ROW_MIN_GROUP = 64  # columns per vectorised minimum in _row_min (narrower groups reduce slower)
METHODS = ("auto", "fp32", "screened")

_BF16_UNIT_ROUNDOFF = 2.0**-8  # 8 significant bits
_FP32_UNIT_ROUNDOFF = 2.0**-24


def _check(x: Tensor, codebook: Tensor, chunk_size: int | None, method: str) -> None:
    if not isinstance(x, Tensor) or not isinstance(codebook, Tensor):
        raise TypeError("x and codebook must be torch.Tensors")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, dim), got {tuple(x.shape)}")
    if codebook.ndim != 2:
        raise ValueError(f"codebook must have shape (K, dim), got {tuple(codebook.shape)}")
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"x (N, dim) and codebook (K, dim) must share dim, got x {tuple(x.shape)} and codebook {tuple(codebook.shape)}"
        )
    if not x.is_floating_point() or not codebook.is_floating_point():
        raise TypeError(f"x and codebook must be floating point, got {x.dtype} and {codebook.dtype}")
    if codebook.shape[0] < 1:
        raise ValueError("codebook must hold at least one code")
    if x.device != codebook.device:
        raise ValueError(f"x and codebook must be on the same device, got {x.device} and {codebook.device}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def max_abs_value(dim: int) -> float:
    """Largest ``|value|`` accepted in ``dim``-dimensional inputs: squared distances between two such
    vectors stay 1024x below float32's largest value, so no score, distance or loss overflows (the
    bf16 screen's bound used to overflow near 1e19 and return code 0 for every token)."""
    return math.sqrt(torch.finfo(torch.float32).max / dim) / 32.0


def check_values(name: str, t: Tensor, *, limit: float | None = None) -> float:
    """Raise a ValueError naming ``name`` when ``t`` holds NaN, Inf or values beyond ``limit``
    (default ``max_abs_value(dim)``); returns the largest ``|value|``. One pass, one host sync."""
    low, high = torch.aminmax(t.detach().reshape(-1))
    largest = max(-float(low), float(high))
    if math.isfinite(largest) and largest <= (limit if limit is not None else max_abs_value(t.shape[-1])):
        return largest
    if not math.isfinite(largest) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    raise ValueError(
        f"{name} holds values up to {largest:.3g} in magnitude; float32 squared distances overflow "
        f"beyond {max_abs_value(t.shape[-1]):.3g} at dim={t.shape[-1]}: rescale it"
    )


def _check_magnitudes(x: Tensor, codebook: Tensor, *, x_checked: bool = False) -> float:
    """NaN/Inf in either argument (NaN used to give index 0 silently), and magnitudes whose squared
    distances ``(|x| + |c|)^2 dim`` would overflow float32. Returns the largest ``|value|``, or
    with ``x_checked`` the codebook's when that is at least ``TINY_VALUE`` (the largest value
    matters only to the tiny-input rescale, which such a code rules out)."""
    limit = max_abs_value(x.shape[1])
    largest_code = check_values("codebook", codebook, limit=limit)
    if x_checked and largest_code >= TINY_VALUE:
        # the caller refused NaN/Inf and |x| > limit: (|x| + |c|)^2 dim <= 4 limit^2 dim stays
        # 256x below float32's largest value, so no score overflows without a second pass over x
        return largest_code
    return max(largest_code, check_values("x", x, limit=limit - largest_code))


# below this largest |value| the float32 products x.c fall into denormals (1e-30 inputs all got
# code 0): both arguments are scaled by a power of two first, which changes no argmin and is exact
TINY_VALUE = 2.0**-40


def _power_of_two_scale(largest: float) -> float:
    return 2.0 ** -math.floor(math.log2(largest)) if 0.0 < largest < TINY_VALUE else 1.0


_BF16_GEMM_SOUND: bool | None = None


def _bf16_gemm_is_sound() -> bool:
    """Check once per process that this CPU's bf16 GEMM accumulates in float32 and rounds its
    output to nearest -- the two facts the screen's error bound rests on."""
    global _BF16_GEMM_SOUND
    if _BF16_GEMM_SOUND is None:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(64, 68, generator=generator).bfloat16()
        b = (torch.randn(68, 512, generator=generator) * 10.0 ** torch.randint(-3, 4, (1, 512), generator=generator)).bfloat16()
        exact = a.double() @ b.double()
        magnitude = a.double().abs() @ b.double().abs()
        error = (torch.mm(a, b).double() - exact).abs()
        _BF16_GEMM_SOUND = bool((error <= _BF16_UNIT_ROUNDOFF * exact.abs() + 80 * _FP32_UNIT_ROUNDOFF * magnitude).all())
    return _BF16_GEMM_SOUND


def _resolve_method(method: str, x: Tensor, num_codes: int) -> str:
    if method != "auto":
        return method
    if (
        x.device.type == "cpu"
        and num_codes >= SCREEN_MIN_CODES
        and x.shape[0] >= 256
        and cpu_has_native_bf16()  # emulated bf16 (plain AVX-512) is slower than float32: simvq.cpu
        and _bf16_gemm_is_sound()
    ):
        return "screened"
    return "fp32"


def _tiles(num_tokens: int, num_codes: int, chunk_size: int | None) -> tuple[int, int]:
    code_chunk = min(chunk_size or DEFAULT_CODE_CHUNK, num_codes)
    token_chunk = max(1, min(num_tokens, DEFAULT_TILE_ELEMENTS // code_chunk))
    return token_chunk, code_chunk


def _fp32_scores(x_block: Tensor, codes_t: Tensor, code_norms: Tensor, out: Tensor | None = None) -> Tensor:
    """``||c||^2 - 2 x.c`` for a tile: x_block (n, d), codes_t (d, m), code_norms (m,)."""
    return torch.addmm(code_norms, x_block, codes_t, alpha=-2.0, out=out)


def _centred(x: Tensor, codebook: Tensor, *, always: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(x - m, codebook - m, ||codebook - m||^2)``, ``m`` the codebook's mean; the arguments
    themselves (``m`` the origin) when the mean holds at most half the codes' mean squared norm.
    The origin then lies within the codes' spread (``|mean| <= max |c - mean|``), so ``max |c|`` is
    at most twice ``max |c - mean|``, the score bound (``_score_window``) at most 8x the centred one,
    and the search keeps its copy-free path. ``always``: the accelerator path, which cannot ask the
    host."""
    code_norm_sq = codebook.pow(2).sum(1)
    centre = codebook.mean(0)
    if not always and 2 * float(centre.pow(2).sum()) <= float(code_norm_sq.mean()):
        return x, codebook, code_norm_sq
    codes = codebook - centre
    return x - centre, codes, codes.pow(2).sum(1)


def _score_window(x_norm: Tensor, max_code_norm: Tensor, dim: int) -> Tensor:
    """Per token: how far above its best float32 score another code may score and still be as near
    (a rival): twice a bound ``E`` on ``|float32 score - exact score|``.

    With ``a = x - m`` and ``b = c - m`` (``m`` the centre) the exact score is ``|b|^2 - 2 a.b``, the
    exact squared distance less ``|a|^2``. The float32 one errs by at most a multiple of
    ``u32 (|b|^2 + 2 |a| |b|)`` from each source: centring rounds ``a`` and ``b`` once
    (``2.01 u32``), the code norms sum ``dim`` squares (``gamma_dim``), the GEMM sums ``dim``
    products and the norm in any order (``gamma_(dim + 1)``): ``E <= (2 dim + 4) u32 (|b|^2 +
    2 |a| |b|)``; ``2 dim + 8`` and 1.1 leave room for the norms, computed in float32 too. ``1e-30``:
    underflow (products below float32's normal range, ~1e-38, err absolutely)."""
    magnitude = max_code_norm * (max_code_norm + 2 * x_norm)
    error = 1.1 * (2 * dim + 8) * _FP32_UNIT_ROUNDOFF * magnitude + 1e-30
    # NaN only from unchecked overflowing inputs (inf * 0): an infinite window settles every token
    return torch.nan_to_num(2 * error, nan=math.inf, posinf=math.inf)


def _row_min(scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: the minimum, its first index, and the runner-up (the least other entry).

    ``scores.min(dim=1)`` is not vectorised on CPU (index tracking); this is ~2.5x faster: the
    vectorised minima of groups of ``ROW_MIN_GROUP`` columns pick each row's first winning group, and
    only that group is searched for the index. The runner-up is the least of the other groups'
    minima and the winning group's other entries: both are copies, masked at the minimum in place."""
    n, m = scores.shape
    group = min(ROW_MIN_GROUP, m)
    full = m - m % group
    grouped = scores[:, :full].view(n, full // group, group)
    group_min = grouped.amin(dim=2)
    if full < m:  # a ragged last group
        group_min = torch.cat([group_min, scores[:, full:].amin(dim=1, keepdim=True)], dim=1)
    values, winner = group_min.min(dim=1, keepdim=True)
    if full == m and scores.is_contiguous():
        # the winning groups as rows of the (n * groups, group) view: index_select copies them ~4x
        # faster on CPU than indexing the (n, groups, group) view by (row, group)
        groups = full // group
        first_group = torch.arange(0, n * groups, groups, device=scores.device)
        within = scores.view(n * groups, group).index_select(0, first_group + winner.squeeze(1))
    elif full == m:
        within = grouped[torch.arange(n, device=scores.device), winner.squeeze(1)]
    else:
        columns = winner * group + torch.arange(group, device=scores.device)
        within = scores.gather(1, columns.clamp(max=m - 1)).masked_fill_(columns >= m, math.inf)
    # min(dim) rather than argmin, and min().values rather than amin below: on CPU, ~25% and ~35%
    # faster over rows this short (64, 16); both return the first index on ties
    index = within.min(dim=1, keepdim=True).indices
    others = group_min.scatter_(1, winner, math.inf).min(dim=1).values
    runner_up = torch.minimum(others, within.scatter_(1, index, math.inf).amin(dim=1))
    return values.squeeze(1), (winner * group + index).squeeze(1), runner_up


class _RunningMin:
    """Per token, the float32 search's running minimum: ``score``, its code ``index`` and ``second``,
    the least score of any other code (a rival when within ``reach = score + window``, with
    ``window`` from ``_score_window``).

    ``start`` writes a run of tokens' first tile of codes directly. Later tiles (``fold``) stash an
    entry for each row whose tile minimum is within reach -- that minimum, its code and the tile's
    runner-up -- and keep ``reach`` current with one vectorised minimum (``add``: every row, for
    the screen's candidates); ``resolve`` folds the entries in, a few vectorised steps for the whole
    search where per-tile bookkeeping cost ~2% of it on CPU (each small tensor operation costs
    microseconds there)."""

    def __init__(self, window: Tensor):
        self.window = window
        self.score = torch.full_like(window, math.inf)
        self.second = torch.full_like(window, math.inf)
        self.reach = torch.full_like(window, math.inf)
        self.index = torch.zeros(window.shape, dtype=torch.long, device=window.device)
        self.entries: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.stashed = 0

    def start(self, scores: Tensor, first_token: int) -> None:
        """Tokens ``first_token + i``: their first tile of codes, from code 0."""
        n = scores.shape[0]
        values, index, runner_up = _row_min(scores)
        self.score[first_token : first_token + n] = values
        self.index[first_token : first_token + n] = index
        self.second[first_token : first_token + n] = runner_up
        torch.add(values, self.window[first_token : first_token + n], out=self.reach[first_token : first_token + n])

    def fold(self, scores: Tensor, offset: int, tokens: Tensor | int) -> None:
        """A tile: row ``i`` scores token ``tokens[i]`` (``tokens + i`` for an int) against the codes
        from ``offset``, above every code seen before. Most rows take one vectorised minimum: after
        the first tiles, only a few are within reach."""
        n = scores.shape[0]
        run = isinstance(tokens, int)
        reach = self.reach[tokens : tokens + n] if run else self.reach[tokens]
        tile_min = scores.amin(dim=1)
        near = tile_min <= reach
        if not bool(near.any()):
            return
        near_rows = near.nonzero().squeeze(1)
        values, index, runner_up = _row_min(scores.index_select(0, near_rows))
        if run:
            ids = near_rows + tokens
            torch.minimum(reach, tile_min + self.window[tokens : tokens + n], out=reach)  # a view: in place
        else:
            assert not isinstance(tokens, int)  # (for the type checker: run is False)
            ids = tokens[near_rows]
            self.reach[ids] = torch.minimum(reach[near_rows], values + self.window[ids])
        self._stash(ids, values, index + offset, runner_up)

    def add(self, scores: Tensor, offset: int, tokens: Tensor) -> None:
        """``fold`` without the reach filter, for rows mostly within reach anyway (the screen's
        candidates): every row's minimum is stashed, and ``reach`` waits for ``resolve``."""
        values, index, runner_up = _row_min(scores)
        self._stash(tokens, values, index + offset, runner_up)

    def _stash(self, ids: Tensor, values: Tensor, index: Tensor, runner_up: Tensor) -> None:
        self.entries.append((ids, values, index, runner_up))
        self.stashed += ids.numel()
        if self.stashed > 4 * self.score.numel():  # only where most tiles are near for most tokens
            self.resolve()

    def resolve(self) -> tuple[Tensor, Tensor]:
        """Fold the entries into ``score``, ``index`` and ``second``; returns ``(index, rival)``."""
        if self.entries:
            ids, values, index, runner_up = (torch.cat(part) for part in zip(*self.entries))
            best = self.score.scatter_reduce(0, ids, values, "amin")
            # the first code at the best score: the earlier one, else the least entry there (codes
            # ascend with the tiles, so an earlier best has the lower index)
            earlier = self.score == best
            at_best = values == best[ids]
            never = torch.iinfo(torch.long).max
            first = torch.where(earlier, self.index, never).scatter_reduce_(0, ids, torch.where(at_best, index, never), "amin")
            winner = index == first[ids]
            # the least other score: the winner's runner-up and every other minimum (a second
            # minimum at the best is a tie)
            second = torch.where(earlier, self.second, self.score)
            second.scatter_reduce_(0, ids, torch.where(winner, runner_up, values), "amin")
            self.score, self.index, self.second = best, first, second
            self.entries, self.stashed = [], 0
            torch.add(best, self.window, out=self.reach)
        return self.index, self.second <= self.reach


def _search_fp32(x: Tensor, codebook: Tensor, chunk_size: int | None) -> Tensor:
    num_tokens, num_codes = x.shape[0], codebook.shape[0]
    token_chunk, code_chunk = _tiles(num_tokens, num_codes, chunk_size)
    xc, codes, code_norms = _centred(x, codebook)
    best = _RunningMin(_score_window(xc.norm(dim=1), code_norms.max().sqrt(), x.shape[1]))
    codes_t = codes.t()
    tile = torch.empty(token_chunk, code_chunk, device=x.device)
    for start in range(0, num_tokens, token_chunk):
        x_block = xc[start : start + token_chunk]
        n = x_block.shape[0]
        for code_start in range(0, num_codes, code_chunk):
            m = min(code_chunk, num_codes - code_start)
            # a full tile reuses one buffer; ragged edge tiles get their own (out= needs contiguity)
            out = tile if (n, m) == tuple(tile.shape) else None
            scores = _fp32_scores(x_block, codes_t[:, code_start : code_start + m], code_norms[code_start : code_start + m], out)
            if code_start == 0:
                best.start(scores, start)
            else:
                best.fold(scores, code_start, start)
    index, rival = best.resolve()
    return _settle(x, codebook, xc, codes, code_norms, index, best.reach, rival, chunk_size)


def _search_fp32_device(x: Tensor, codebook: Tensor, chunk_size: int | None, *, settle: bool = True) -> Tensor:
    """The float32 search on an accelerator and in compiled graphs: large tiles and the running
    state kept with ``torch.where``, so the search is queued without a host synchronisation (the
    CPU path's per-tile ``any()`` would stall a GPU on every tile); it always centres, as deciding
    would ask the host. ``settle``: decide the tokens with a rival in float64, in an opaque custom
    op (a graph holds it whole) that takes one host sync to find them; without it, a near tie may
    go to either code (``nearest`` bounds how near)."""
    num_tokens, num_codes = x.shape[0], codebook.shape[0]
    token_chunk = max(1, min(num_tokens, DEVICE_TILE_ELEMENTS // min(num_codes, chunk_size or num_codes)))
    code_chunk = max(1, min(num_codes, chunk_size or DEVICE_TILE_ELEMENTS // token_chunk))
    xc, codes, code_norms = _centred(x, codebook, always=True)
    window = _score_window(xc.norm(dim=1), code_norms.max().sqrt(), x.shape[1])
    codes_t = codes.t()
    best_index = torch.empty(num_tokens, dtype=torch.long, device=x.device)
    best_score = torch.empty(num_tokens, device=x.device)
    rival = torch.empty(num_tokens, dtype=torch.bool, device=x.device)
    for start in range(0, num_tokens, token_chunk):
        x_block, block_window = xc[start : start + token_chunk], window[start : start + token_chunk]
        best_value: Tensor | None = None
        block_index: Tensor | None = None
        block_rival: Tensor | None = None
        for code_start in range(0, num_codes, code_chunk):
            stop = min(num_codes, code_start + code_chunk)
            scores = _fp32_scores(x_block, codes_t[:, code_start:stop], code_norms[code_start:stop])
            values, index, runner_up = _row_min(scores)
            if best_value is None:
                best_value, block_index, block_rival = values, index + code_start, runner_up <= values + block_window
                continue
            # as _RunningMin, on every row: an improved row's rival is the tile's runner-up or the
            # previous best; any other row gains one when this tile's minimum is within reach
            assert block_index is not None and block_rival is not None  # set with best_value
            improved = values < best_value
            reach = torch.minimum(values, best_value) + block_window
            tile_rival = torch.minimum(runner_up, torch.maximum(values, best_value)) <= reach
            block_rival = torch.where(improved, tile_rival, block_rival | tile_rival)
            best_value = torch.where(improved, values, best_value)
            block_index = torch.where(improved, index + code_start, block_index)
        assert best_value is not None and block_index is not None and block_rival is not None  # num_codes >= 1
        best_index[start : start + x_block.shape[0]] = block_index
        best_score[start : start + x_block.shape[0]] = best_value
        rival[start : start + x_block.shape[0]] = block_rival
    if not settle:
        return best_index
    return torch.ops.simvq.settle_near_ties(x, codebook, xc, codes, code_norms, best_index, best_score + window, rival, chunk_size)


def _settle(
    x: Tensor,
    codebook: Tensor,
    xc: Tensor,
    codes: Tensor,
    code_norm_sq: Tensor,
    best_index: Tensor,
    reach: Tensor,
    rival: Tensor,
    chunk_size: int | None,
    screen: tuple[Tensor, _ScreenTiles] | None = None,
) -> Tensor:
    """``best_index``, updated in place: every token with a ``rival`` decided in float64 (module
    docstring, step 3): among the codes whose float32 score is within its ``reach`` -- every code as
    near as its best is -- the nearest, the lowest index on ties. ``xc``, ``codes`` and
    ``code_norm_sq``: the centred arguments the search scored. ``screen``: the screened search's
    ``(candidates, tiles)``; only each token's candidate groups are scored then, as they hold every
    code as near as the nearest (pass 1's guarantee). Memory-bounded like the search: float32
    tiles find the codes within reach, float64 takes them in batches of pairs.

    Each code ``c`` is compared with the token's provisional best ``p`` through the exact identity
    ``|x - c|^2 - |x - p|^2 = sum_i (c_i - p_i) (c_i + p_i - 2 x_i)``, in float64: its error scales
    with ``|c - p| (|x - c| + |x - p|)``, not with the distances, so a token far from the codebook
    keeps its answer (``((x - c) ** 2).sum()`` in float64 rounds away code differences below
    ``1e-16 |x|^2``); duplicates of ``p`` give exactly 0, and so does any exact tie the float64
    sums represent exactly (inputs whose differences need few bits, e.g. on a grid)."""
    tokens = rival.nonzero().squeeze(1)
    if tokens.numel() == 0:
        return best_index
    limit = reach[tokens]
    # a gathered code costs ~10x a GEMM score (CPU): the candidate groups pay only where few
    if screen is not None and 10 * int(screen[0][:, tokens].sum()) * screen[1].group < tokens.numel() * codes.shape[0]:
        pairs = _pairs_within_reach_in_groups(xc, codes, code_norm_sq, tokens, limit, *screen)
    else:
        pairs = _pairs_within_reach(xc, codes, code_norm_sq, tokens, limit, chunk_size)
    best_gap = torch.full((tokens.numel(),), math.inf, dtype=torch.float64, device=x.device)
    index = torch.zeros(tokens.numel(), dtype=torch.long, device=x.device)
    for row, code in pairs:  # a row's codes ascend from batch to batch: the first wins ties
        token = tokens[row]
        candidate = codebook.index_select(0, code).double()
        pivot = codebook.index_select(0, best_index[token]).double()
        x_pairs = x.index_select(0, token).double()
        gap = ((candidate - pivot) * (candidate + pivot - 2 * x_pairs)).sum(1)  # |x - c|^2 - |x - p|^2
        batch_gap = torch.full_like(best_gap, math.inf).scatter_reduce_(0, row, gap, "amin")
        at_min = gap == batch_gap[row]
        first_code = torch.zeros_like(index).scatter_reduce_(0, row[at_min], code[at_min], "amin", include_self=False)
        better = batch_gap < best_gap  # strict: an equal gap came earlier, with a lower index
        best_gap = torch.where(better, batch_gap, best_gap)
        index = torch.where(better, first_code, index)
    best_index[tokens] = index
    return best_index


def _pairs_within_reach(xc: Tensor, codes: Tensor, code_norm_sq: Tensor, tokens: Tensor, limit: Tensor, chunk_size: int | None):
    """Batches ``(row, code)``: every code whose float32 score for token ``tokens[row]`` is at most
    ``limit[row]``; a row's codes ascend from batch to batch (row-major within a tile)."""
    num_codes, dim = codes.shape
    # few tokens: by default, wide tiles of codes (as many scores as a search tile), few passes
    wide = max(DEFAULT_CODE_CHUNK, DEFAULT_TILE_ELEMENTS // tokens.numel())
    token_chunk, code_chunk = _tiles(tokens.numel(), num_codes, chunk_size or wide)
    pair_chunk = max(1, DEFAULT_TILE_ELEMENTS // (4 * dim))  # (pairs, dim) float64: half a tile's bytes
    codes_t = codes.t()
    for start in range(0, tokens.numel(), token_chunk):
        x_block, block_limit = xc.index_select(0, tokens[start : start + token_chunk]), limit[start : start + token_chunk, None]
        for code_start in range(0, num_codes, code_chunk):
            stop = min(num_codes, code_start + code_chunk)
            scores = _fp32_scores(x_block, codes_t[:, code_start:stop], code_norm_sq[code_start:stop])
            pair_row, pair_code = (scores <= block_limit).nonzero(as_tuple=True)
            for first in range(0, pair_row.numel(), pair_chunk):
                yield pair_row[first : first + pair_chunk] + start, pair_code[first : first + pair_chunk] + code_start


def _pairs_within_reach_in_groups(
    xc: Tensor, codes: Tensor, code_norm_sq: Tensor, tokens: Tensor, limit: Tensor, candidates: Tensor, tiles: _ScreenTiles
):
    """As ``_pairs_within_reach``, over each token's candidate groups only: the (token, group)
    pairs' codes gathered and scored in one batched product, a tile's worth of codes at a time."""
    num_codes, dim = codes.shape
    group_ids, rows = candidates[:, tokens].nonzero(as_tuple=True)  # group-major: a row's groups ascend
    # each group's first code and width, as tiles.span has them
    chunk, within = group_ids // tiles.groups_per_chunk, group_ids % tiles.groups_per_chunk
    starts = chunk * tiles.code_chunk + within * tiles.group
    widths = torch.minimum(((chunk + 1) * tiles.code_chunk).clamp(max=num_codes) - starts, torch.tensor(tiles.group))
    offsets = torch.arange(tiles.group, device=codes.device)
    batch = max(1, DEFAULT_TILE_ELEMENTS // (tiles.group * dim))
    for first in range(0, rows.numel(), batch):
        row, start, width = rows[first : first + batch], starts[first : first + batch, None], widths[first : first + batch, None]
        valid = offsets < width
        columns = torch.where(valid, start + offsets, start)  # past a narrow group's end: its first code, masked
        flat = columns.flatten()
        block = codes.index_select(0, flat).view(*columns.shape, dim)
        # ||c||^2 - 2 x.c: dim products and the norm summed in float32, as in a GEMM (the same bound)
        dots = torch.linalg.vecdot(block, xc.index_select(0, tokens[row]).unsqueeze(1))
        scores = code_norm_sq.index_select(0, flat).view(columns.shape) - 2 * dots
        pair, column = ((scores <= limit[row, None]) & valid).nonzero(as_tuple=True)
        yield row[pair], columns[pair, column]


@torch.library.custom_op("simvq::settle_near_ties", mutates_args=())
def _settle_near_ties(
    x: Tensor, codebook: Tensor, xc: Tensor, codes: Tensor, code_norm_sq: Tensor, best_index: Tensor, reach: Tensor, rival: Tensor, chunk_size: int | None
) -> Tensor:
    return _settle(x, codebook, xc, codes, code_norm_sq, best_index.clone(), reach, rival, chunk_size)


@_settle_near_ties.register_fake
def _(x: Tensor, codebook: Tensor, xc: Tensor, codes: Tensor, code_norm_sq: Tensor, best_index: Tensor, reach: Tensor, rival: Tensor,
      chunk_size: int | None) -> Tensor:
    return torch.empty_like(best_index)


def _split_bf16(values: Tensor) -> tuple[Tensor, Tensor]:
    """``values ~= hi + lo`` with both parts bf16; the pair carries ~16 significant bits."""
    hi = values.bfloat16()
    lo = (values - hi.float()).bfloat16()
    return hi, lo


def _group_amin(tile: Tensor, group: int) -> Tensor:
    """Row minima of each run of ``group`` columns of a positive bf16 tile, via its int16 bits."""
    bits = tile.view(torch.int16)
    n, m = bits.shape
    full = m // group * group
    parts = [bits[:, :full].reshape(n, m // group, group).amin(dim=2)] if full else []
    if full < m:
        parts.append(bits[:, full:].amin(dim=1, keepdim=True))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class _ScreenTiles:
    """Tile geometry of the screened search: tokens x codes per tile, and the groups of codes
    (``group`` wide, ``groups_per_chunk`` per code chunk, ``num_groups`` in all) whose screened
    minima decide which codes are rescored."""

    token_chunk: int
    code_chunk: int
    group: int
    groups_per_chunk: int
    num_groups: int

    @classmethod
    def of(cls, num_tokens: int, num_codes: int, chunk_size: int | None) -> _ScreenTiles:
        token_chunk, code_chunk = _tiles(num_tokens, num_codes, chunk_size)
        group = min(SCREEN_GROUP, code_chunk)
        num_groups = sum(math.ceil(min(code_chunk, num_codes - s) / group) for s in range(0, num_codes, code_chunk))
        return cls(token_chunk, code_chunk, group, math.ceil(code_chunk / group), num_groups)

    def code_chunks(self, num_codes: int):
        """``(chunk number, first code, codes in the chunk)`` for every code chunk."""
        for chunk, code_start in enumerate(range(0, num_codes, self.code_chunk)):
            yield chunk, code_start, min(self.code_chunk, num_codes - code_start)

    def span(self, group_index: int, num_codes: int) -> tuple[int, int]:
        """``(first code, codes)`` of a group: the last group of a ragged chunk is narrower."""
        chunk, within = divmod(group_index, self.groups_per_chunk)
        start = chunk * self.code_chunk + within * self.group
        return start, min(self.group, min((chunk + 1) * self.code_chunk, num_codes) - start)


def _bf16_codes(codebook: Tensor, code_chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(codes_aug: (K, dim + 4) bf16 holding -2c in its first dim columns, max |dc|, max |c~|)``.

    The bound uses the actual rounding residuals' norms, ~2.5x tighter than the worst case
    ``u * |v|`` and still rigorous. Built a chunk of codes at a time so no ``(K, dim)`` float32
    temporary exists beside the codebook."""
    num_codes, dim = codebook.shape
    codes_aug = torch.empty(num_codes, dim + 4, dtype=torch.bfloat16, device=codebook.device)
    code_residual = codebook.new_zeros(())
    max_bf16_code_norm = codebook.new_zeros(())
    for code_start in range(0, num_codes, code_chunk):
        scaled = -2 * codebook[code_start : code_start + code_chunk]
        rounded = scaled.bfloat16()
        codes_aug[code_start : code_start + code_chunk, :dim] = rounded
        code_residual = torch.maximum(code_residual, (scaled - rounded.float()).norm(dim=1).max())
        max_bf16_code_norm = torch.maximum(max_bf16_code_norm, rounded.float().norm(dim=1).max())
    return codes_aug, code_residual, max_bf16_code_norm


def _screen_bounds(
    x: Tensor, x_bf16: Tensor, x_norm: Tensor, code_norm_sq: Tensor, code_residual: Tensor, max_bf16_code_norm: Tensor
) -> tuple[Tensor, Tensor]:
    """Per token: ``(input_error, offset)``. ``input_error`` bounds the difference between a
    screened (bf16) score and the exact score (``_score_window``'s ``|b|^2 - 2 a.b``, arguments
    centred or not); ``offset`` lifts every screened value above zero, so its int16 bits order like
    the value."""
    u, u32 = _BF16_UNIT_ROUNDOFF, _FP32_UNIT_ROUNDOFF
    dim = x.shape[1]
    x_residual = (x - x_bf16.float()).norm(dim=1)
    code_norm = code_norm_sq.sqrt()
    max_code_norm, min_code_norm = code_norm.max(), code_norm.min()
    # x.(-2c) - x~.c~ = x.dc + dx.c~ exactly, so |error| <= |x| max|dc| + |dx| max|c~|
    dot_error = x_norm * code_residual + x_residual * max_bf16_code_norm
    # scores ||c||^2 - 2 x.c are >= min over r in [min|c|, max|c|] of r^2 - 2 |x| r
    radius = x_norm.clamp(min_code_norm, max_code_norm)
    score_floor = radius.pow(2) - 2 * x_norm * radius
    magnitude = 2 * x_norm * max_code_norm + max_code_norm.pow(2)
    # the float32 parts: the GEMM sums dim + 4 terms of total size <= magnitude + |offset| in
    # float32 (gamma_(dim+4)); the code norms summed dim squares (gamma_dim) and centring rounded
    # each argument once (2.01 u32 magnitude, see _score_window). Bounded here by (2 dim + 8) u32
    # (magnitude + |score_floor|): |score_floor| rather than -score_floor, as the offset's size counts
    # when the floor is positive (codes of equal norm, x near the centre)
    accumulation_error = (2 * dim + 8) * u32 * (magnitude + score_floor.abs() + 1e-30)
    input_error = 1.1 * (dot_error + u * u * (max_code_norm.pow(2) + magnitude) + accumulation_error) + 1e-30
    return input_error, -score_floor + 2 * input_error


def _augmented_operands(x_bf16: Tensor, codes_aug: Tensor, code_norm_sq: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    """``[x, 1, 1, off_hi, off_lo] . [-2c, n_hi, n_lo, 1, 1] = ||c||^2 - 2 x.c + off`` in one bf16
    GEMM: returns ``(x_aug: (N, dim + 4), codes_aug_t: (dim + 4, K))``; fills ``codes_aug``'s last
    four columns in place."""
    dim = x_bf16.shape[1]
    norm_hi, norm_lo = _split_bf16(code_norm_sq)
    off_hi, off_lo = _split_bf16(offset)
    ones = torch.ones(1, 2, dtype=torch.bfloat16, device=x_bf16.device)
    codes_aug[:, dim] = norm_hi
    codes_aug[:, dim + 1] = norm_lo
    codes_aug[:, dim + 2 :] = 1
    x_aug = torch.cat([x_bf16, ones.expand(x_bf16.shape[0], 2), off_hi[:, None], off_lo[:, None]], 1)
    return x_aug, codes_aug.t()


def _screen_candidates(x_aug: Tensor, codes_aug_t: Tensor, input_error: Tensor, tiles: _ScreenTiles) -> Tensor:
    """Pass 1 (bf16): ``(groups, tokens)`` bool, the (token, group of codes) pairs that can hold the
    exact argmin. Per token block, as soon as its screened group minima are known: the lower
    bound of a group's exact minimum must not exceed the upper bound of the best screened code's
    exact score (bf16 output rounds to nearest: relative error <= u)."""
    u = _BF16_UNIT_ROUNDOFF
    num_tokens, num_codes = x_aug.shape[0], codes_aug_t.shape[1]
    candidates = torch.empty(tiles.num_groups, num_tokens, dtype=torch.bool, device=x_aug.device)
    group_min = torch.empty(tiles.token_chunk, tiles.num_groups, dtype=torch.int16, device=x_aug.device)
    tile = torch.empty(tiles.token_chunk, tiles.code_chunk, dtype=torch.bfloat16, device=x_aug.device)
    for start in range(0, num_tokens, tiles.token_chunk):
        x_block = x_aug[start : start + tiles.token_chunk]
        n = x_block.shape[0]
        for chunk, code_start, m in tiles.code_chunks(num_codes):
            out = tile if (n, m) == tuple(tile.shape) else None
            screened = torch.mm(x_block, codes_aug_t[:, code_start : code_start + m], out=out)
            first = chunk * tiles.groups_per_chunk
            group_min[:n, first : first + math.ceil(m / tiles.group)] = _group_amin(screened, tiles.group)
        screened_min = group_min[:n].view(torch.bfloat16).float()
        block_error = input_error[start : start + n]
        upper = screened_min.amin(dim=1) / (1 - u) + block_error
        lower = screened_min / (1 + u) - block_error[:, None]
        candidates[:, start : start + n] = (lower <= upper[:, None]).t()
    return candidates


def _rescore_candidates(xc: Tensor, codes: Tensor, code_norm_sq: Tensor, candidates: Tensor, tiles: _ScreenTiles, best: _RunningMin) -> None:
    """Pass 2 (float32): scores on the candidate (token, group) pairs only, folded into ``best``."""
    num_codes = codes.shape[0]
    codes_t = codes.t()
    for group_index in range(tiles.num_groups):
        code_start, m = tiles.span(group_index, num_codes)
        rows = candidates[group_index].nonzero().squeeze(1)
        for row_start in range(0, rows.numel(), tiles.token_chunk):
            row_block = rows[row_start : row_start + tiles.token_chunk]
            scores = _fp32_scores(xc.index_select(0, row_block), codes_t[:, code_start : code_start + m], code_norm_sq[code_start : code_start + m])
            best.add(scores, code_start, row_block)


def _search_screened(x: Tensor, codebook: Tensor, chunk_size: int | None) -> Tensor:
    """bf16 screen, then float32 on the codes the screen could not rule out, then settling (module
    docstring). Excluded groups hold only codes farther than the nearest, so a token without a rival
    among the rescored codes has its exact argmin, as in ``"fp32"``."""
    tiles = _ScreenTiles.of(x.shape[0], codebook.shape[0], chunk_size)
    xc, codes, code_norm_sq = _centred(x, codebook)
    codes_aug, code_residual, max_bf16_code_norm = _bf16_codes(codes, tiles.code_chunk)
    x_bf16, x_norm = xc.bfloat16(), xc.norm(dim=1)
    input_error, offset = _screen_bounds(xc, x_bf16, x_norm, code_norm_sq, code_residual, max_bf16_code_norm)
    if not bool(torch.isfinite(offset).all()):
        # the bound itself overflowed float32 (|x| beyond ~1e19; it used to return code 0 for every
        # token): a screen without a bound rules nothing out, so decide in float32 alone
        return _search_fp32(x, codebook, chunk_size)
    x_aug, codes_aug_t = _augmented_operands(x_bf16, codes_aug, code_norm_sq, offset)
    candidates = _screen_candidates(x_aug, codes_aug_t, input_error, tiles)
    best = _RunningMin(_score_window(x_norm, code_norm_sq.max().sqrt(), x.shape[1]))
    _rescore_candidates(xc, codes, code_norm_sq, candidates, tiles, best)
    index, rival = best.resolve()
    return _settle(x, codebook, xc, codes, code_norm_sq, index, best.reach, rival, chunk_size, screen=(candidates, tiles))


@torch.no_grad()
def nearest(
    x: Tensor,
    codebook: Tensor,
    chunk_size: int | None = None,
    *,
    method: str = "auto",
    return_distances: bool = True,
    check_finite: bool = True,
    x_checked: bool = False,
) -> tuple[Tensor, Tensor] | Tensor:
    """Index of the nearest code to each row of ``x`` and its squared distance.

    Exact: ``indices[i]`` minimises the exact (real-number) squared distance from ``x[i]`` to
    ``codebook[k]``, both rounded to float32 (after the rescale of tiny inputs below); on exact
    ties the lowest index wins -- duplicate codes always, whichever method. This holds at any
    offset the inputs share (the search centres them) and any ratio of norm to spread. The
    float32 search knows, from a rigorous bound on its rounding, which tokens have a code that
    might tie with their best; those are decided in float64 (module docstring, step 3), each code
    ``c`` compared with the provisional best ``p`` to within about ``(dim + 4) 2^-53 |c - p|
    (|x - c| + |x - p|)``. The one way to a wrong index is two codes whose exact squared distances
    differ by less than that, where either may come back (so may a tie that float64 does not
    represent exactly). Every method, tiling and device returns the same indices up to that,
    compiled or not. One relaxation: on an
    accelerator with ``check_finite=False`` the search never synchronises with the host, so it
    skips the float64 step and returns a code whose exact squared distance exceeds the least by at
    most ``2.2 (2 dim + 8) 2^-24 (R^2 + 2 |x - m| R) + 3e-30`` (``m`` the codebook's mean,
    ``R = max_k |codebook[k] - m|``): the exact code wherever no other is that close.

    x: (N, dim), codebook: (K, dim), any floating dtype (computed in float32).
    chunk_size: codes per tile (default 1024); tokens per tile are chosen so a tile holds about
        2M scores (8 MiB in float32).
    method: "auto" (default), "fp32" or "screened" (see the module docstring); all exact, the
        same indices.
    Returns ``indices: (N,) int64`` and ``squared_distances: (N,) float32``; the indices alone
    when ``return_distances`` is False (the quantizers' case: it saves four passes over ``x``).
    check_finite: refuse NaN/Inf and values whose squared distances overflow float32 (ValueError
        naming ``x`` or ``codebook``), and rescale tiny inputs (largest ``|value|`` below
        ``TINY_VALUE``) by a power of two; one pass over each and one host sync. Switch it off
        only where the caller has checked. On an accelerator it also permits the host sync that
        finds the near ties to settle (in a compiled graph too, where the values go unchecked);
        off, the search never syncs there (see Exact above).
    x_checked: the caller has already refused NaN/Inf in ``x`` and values beyond
        ``max_abs_value(dim)`` (a quantizer's forward does, naming its input ``z``): only the
        codebook is checked, so ``x`` is not read twice. ``x`` is read again only when the
        codebook is tiny enough that the rescale above may apply; the indices are the same.
    """
    _check(x, codebook, chunk_size, method)
    if x.shape[0] == 0:  # (a static shape: also fine under torch.compile)
        return (x.new_zeros(0, dtype=torch.long), x.new_zeros(0, dtype=torch.float32)) if return_distances else x.new_zeros(0, dtype=torch.long)
    # a compiled graph cannot raise on data (the check needs the host): the eager call checks
    compiling = torch.compiler.is_compiling()
    scale = _power_of_two_scale(_check_magnitudes(x, codebook, x_checked=x_checked)) if check_finite and not compiling else 1.0
    with torch.autocast(device_type=x.device.type, enabled=False):
        if scale != 1.0:  # in float64, so values below float32's range survive the scaling
            x, codebook = x.double() * scale, codebook.double() * scale
        x32 = x.float().contiguous()
        codebook32 = codebook.float().contiguous()
        resolved = _resolve_method(method, x32, codebook32.shape[0])
        on_cpu = x32.device.type == "cpu"
        if not on_cpu or compiling:  # no host sync in the search: the only form a graph can hold
            # settling syncs once, inside its custom op: free on a CPU, the caller's call elsewhere
            indices = _search_fp32_device(x32, codebook32, chunk_size, settle=on_cpu or check_finite)
        elif resolved == "screened":
            indices = _search_screened(x32, codebook32, chunk_size)
        else:
            indices = _search_fp32(x32, codebook32, chunk_size)
        if not return_distances:
            return indices
        # the winners' distances computed directly: no cancellation error from the expansion. In
        # place on the gathered codes: on CPU, fresh (N, dim) temporaries cost ~10x the arithmetic
        difference = codebook32.index_select(0, indices)
        squared_distances = torch.sub(x32, difference, out=difference).square_().sum(1)
        if scale != 1.0:
            squared_distances /= scale**2
    return indices, squared_distances


__all__ = ["METHODS", "nearest"]
