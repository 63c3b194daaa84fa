"""Nearest-code search: exact squared-L2 argmin, float32, memory-bounded. The only search in simvq.

``nearest(x, codebook)`` returns the argmin over codes of the float32 squared distance, whatever
the input dtype (bf16 under autocast included). The ``N x K`` distance matrix is never
materialised: tokens and codes are walked in tiles of a few MiB.

Two exact strategies, chosen by ``method``:

``"fp32"``: one float32 GEMM per tile, ``score = ||c||^2 - 2 x.c``. A token block's first tile of
    codes sets its running minimum; on later tiles only the *values* of the row minimum are taken
    (a vectorised reduction, ~20x cheaper than min-with-index on CPU) and the index is recovered
    only for the rows whose running best improved, which after the first few tiles is a small
    fraction (about ``ln(tiles) / tiles`` of all rows). Indices come from ``_row_min``: the
    vectorised minima of groups of 64 codes, then the index within each row's winning group.

``"screened"``: a bfloat16 GEMM screens the codebook, then float32 decides. Every bf16 score
    carries a rounding error with a rigorous bound ``E`` (input rounding, split norms, float32
    accumulation, output rounding; see ``_screen_bounds``). A tile of codes whose screened minimum,
    lowered by its bound, exceeds the screened global minimum raised by its bound cannot hold the
    float32 argmin and is skipped; the remaining (token, tile) pairs -- typically 1-3 tiles per
    token -- are rescored in float32. The result equals the ``"fp32"`` strategy's (ties aside)
    at roughly the cost of the bf16 GEMM. Used by ``"auto"`` on CPUs with native bf16 dot
    products; CUDA keeps ``"fp32"`` because cuBLAS may reduce bf16 products in reduced precision,
    which would void the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

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


def _cpu_has_fast_bf16() -> bool:
    probe = getattr(torch.backends.cpu, "get_cpu_capability", None)
    capability = probe() if probe else ""
    # AVX512 (with BF16 dot products on current builds) or AMX: the bf16 GEMM runs ~2x float32
    return capability in ("AVX512", "AVX512_BF16", "AMX")


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
        and _cpu_has_fast_bf16()
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


def _row_min(scores: Tensor) -> tuple[Tensor, Tensor]:
    """``scores.min(dim=1)`` (values, first index on ties), ~2.5x faster on CPU, where the
    index-tracking reduction is not vectorised: the vectorised minima of groups of ``ROW_MIN_GROUP``
    columns pick each row's first winning group, and only that group is searched for the index."""
    n, m = scores.shape
    group = ROW_MIN_GROUP
    if not scores.is_cpu or m % group or not scores.is_contiguous():
        return scores.min(dim=1)
    values, winner = scores.view(n, m // group, group).amin(dim=2).min(dim=1)
    within = scores.view(n, m // group, group)[torch.arange(n, device=scores.device), winner].argmin(dim=1)
    return values, winner * group + within


def _update_best(scores: Tensor, offset: int, best_score: Tensor, best_index: Tensor, rows: Tensor | None = None) -> None:
    """Fold one tile of exact scores into the running (value, index) minimum, in place.

    ``rows`` maps the tile's rows to positions in ``best_*`` (all rows when None). Strict ``<``
    keeps the first index on ties, like ``argmin``.
    """
    tile_min = scores.amin(dim=1)
    current = best_score if rows is None else best_score[rows]
    improved = tile_min < current
    if not bool(improved.any()):
        return
    improved_rows = improved.nonzero().squeeze(1)
    _, tile_index = _row_min(scores.index_select(0, improved_rows))
    target = improved_rows if rows is None else rows[improved_rows]
    best_score[target] = tile_min[improved_rows]
    best_index[target] = tile_index + offset


def _search_fp32(x: Tensor, codebook: Tensor, chunk_size: int | None) -> Tensor:
    num_tokens, num_codes = x.shape[0], codebook.shape[0]
    token_chunk, code_chunk = _tiles(num_tokens, num_codes, chunk_size)
    code_norms = codebook.pow(2).sum(1)
    codebook_t = codebook.t()
    best_index = torch.empty(num_tokens, dtype=torch.long, device=x.device)
    best_score = torch.empty(num_tokens, device=x.device)
    tile = torch.empty(token_chunk, code_chunk, device=x.device)
    for start in range(0, num_tokens, token_chunk):
        x_block = x[start : start + token_chunk]
        n = x_block.shape[0]
        block_score, block_index = best_score[start : start + n], best_index[start : start + n]
        for code_start in range(0, num_codes, code_chunk):
            m = min(code_chunk, num_codes - code_start)
            # a full tile reuses one buffer; ragged edge tiles get their own (out= needs contiguity)
            out = tile if (n, m) == tuple(tile.shape) else None
            scores = _fp32_scores(x_block, codebook_t[:, code_start : code_start + m], code_norms[code_start : code_start + m], out)
            if code_start == 0:
                values, index = _row_min(scores)
                block_score.copy_(values)
                block_index.copy_(index)
            else:
                _update_best(scores, code_start, block_score, block_index)
    return best_index


def _search_fp32_device(x: Tensor, codebook: Tensor, chunk_size: int | None) -> Tensor:
    """The float32 search on an accelerator: large tiles and a running (value, index) minimum kept
    with ``torch.where``, so the whole search is queued without one host synchronisation (the CPU
    path's per-tile ``any()`` would stall a GPU on every tile)."""
    num_tokens, num_codes = x.shape[0], codebook.shape[0]
    token_chunk = max(1, min(num_tokens, DEVICE_TILE_ELEMENTS // min(num_codes, chunk_size or num_codes)))
    code_chunk = max(1, min(num_codes, chunk_size or DEVICE_TILE_ELEMENTS // token_chunk))
    code_norms = codebook.pow(2).sum(1)
    codebook_t = codebook.t()
    best_index = torch.empty(num_tokens, dtype=torch.long, device=x.device)
    for start in range(0, num_tokens, token_chunk):
        x_block = x[start : start + token_chunk]
        best_value = block_index = None
        for code_start in range(0, num_codes, code_chunk):
            stop = min(num_codes, code_start + code_chunk)
            values, index = _fp32_scores(x_block, codebook_t[:, code_start:stop], code_norms[code_start:stop]).min(dim=1)
            if best_value is None:
                best_value, block_index = values, index + code_start
            else:
                better = values < best_value  # strict: the first index wins ties, like argmin
                best_value = torch.where(better, values, best_value)
                block_index = torch.where(better, index + code_start, block_index)
        best_index[start : start + x_block.shape[0]] = block_index
    return best_index


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
    x: Tensor, x_bf16: Tensor, code_norm_sq: Tensor, code_residual: Tensor, max_bf16_code_norm: Tensor
) -> tuple[Tensor, Tensor]:
    """Per token: ``(input_error, offset)``. ``input_error`` bounds the difference between a
    screened (bf16) score and the float32 score; ``offset`` lifts every screened value above zero,
    so its int16 bits order like the value."""
    u, u32 = _BF16_UNIT_ROUNDOFF, _FP32_UNIT_ROUNDOFF
    dim = x.shape[1]
    x_residual = (x - x_bf16.float()).norm(dim=1)
    code_norm = code_norm_sq.sqrt()
    x_norm = x.norm(dim=1)
    max_code_norm, min_code_norm = code_norm.max(), code_norm.min()
    # x.(-2c) - x~.c~ = x.dc + dx.c~ exactly, so |error| <= |x| max|dc| + |dx| max|c~|
    dot_error = x_norm * code_residual + x_residual * max_bf16_code_norm
    # scores ||c||^2 - 2 x.c are >= min over r in [min|c|, max|c|] of r^2 - 2 |x| r
    radius = x_norm.clamp(min_code_norm, max_code_norm)
    score_floor = radius.pow(2) - 2 * x_norm * radius
    magnitude = 2 * x_norm * max_code_norm + max_code_norm.pow(2)
    accumulation_error = (2 * dim + 8) * u32 * 2 * (magnitude - score_floor + 1e-30)  # GEMM and fp32 reference
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
    float32 argmin. Per token block, as soon as its screened group minima are known: the lower
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


def _rescore_candidates(x: Tensor, codebook: Tensor, code_norm_sq: Tensor, candidates: Tensor, tiles: _ScreenTiles) -> Tensor:
    """Pass 2 (float32): exact scores on the candidate (token, group) pairs only; ``(N,)`` indices."""
    num_tokens, num_codes = x.shape[0], codebook.shape[0]
    best_index = torch.zeros(num_tokens, dtype=torch.long, device=x.device)
    best_score = torch.full((num_tokens,), math.inf, device=x.device)
    codebook_t = codebook.t()
    for group_index in range(tiles.num_groups):
        chunk, within = divmod(group_index, tiles.groups_per_chunk)
        code_start = chunk * tiles.code_chunk + within * tiles.group
        m = min(tiles.group, num_codes - code_start)
        rows = candidates[group_index].nonzero().squeeze(1)
        for row_start in range(0, rows.numel(), tiles.token_chunk):
            row_block = rows[row_start : row_start + tiles.token_chunk]
            scores = _fp32_scores(x.index_select(0, row_block), codebook_t[:, code_start : code_start + m], code_norm_sq[code_start : code_start + m])
            _update_best(scores, code_start, best_score, best_index, rows=row_block)
    return best_index


def _search_screened(x: Tensor, codebook: Tensor, chunk_size: int | None) -> Tensor:
    """bf16 screen, then float32 on the codes the screen could not rule out (module docstring)."""
    tiles = _ScreenTiles.of(x.shape[0], codebook.shape[0], chunk_size)
    codes_aug, code_residual, max_bf16_code_norm = _bf16_codes(codebook, tiles.code_chunk)
    code_norm_sq = codebook.pow(2).sum(1)
    x_bf16 = x.bfloat16()
    input_error, offset = _screen_bounds(x, x_bf16, code_norm_sq, code_residual, max_bf16_code_norm)
    if not bool(torch.isfinite(offset).all()):
        # the bound itself overflowed float32 (|x| beyond ~1e19; it used to return code 0 for every
        # token): a screen without a bound rules nothing out, so decide in float32 alone
        return _search_fp32(x, codebook, chunk_size)
    x_aug, codes_aug_t = _augmented_operands(x_bf16, codes_aug, code_norm_sq, offset)
    candidates = _screen_candidates(x_aug, codes_aug_t, input_error, tiles)
    return _rescore_candidates(x, codebook, code_norm_sq, candidates, tiles)


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

    x: (N, dim), codebook: (K, dim), any floating dtype (computed in float32).
    chunk_size: codes per tile (default 1024); tokens per tile are chosen so a tile holds about
        2M scores (8 MiB in float32).
    method: "auto" (default), "fp32" or "screened" (see the module docstring); all exact.
    Returns ``indices: (N,) int64`` and ``squared_distances: (N,) float32``; the indices alone
    when ``return_distances`` is False (the quantizers' case: it saves four passes over ``x``).
    check_finite: refuse NaN/Inf and values whose squared distances overflow float32 (ValueError
        naming ``x`` or ``codebook``), and rescale tiny inputs (largest ``|value|`` below
        ``TINY_VALUE``) by a power of two; one pass over each and one host sync. Switch it off
        only where the caller has checked (the search itself never syncs on an accelerator).
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
        if x32.device.type != "cpu" or compiling:  # no host sync: the only form a graph can hold
            indices = _search_fp32_device(x32, codebook32, chunk_size)
        elif resolved == "screened":
            indices = _search_screened(x32, codebook32, chunk_size)
        else:
            indices = _search_fp32(x32, codebook32, chunk_size)
        if not return_distances:
            return indices
        # the winners' distances computed directly: no cancellation error from the expansion
        squared_distances = (x32 - codebook32.index_select(0, indices)).pow(2).sum(1) / scale**2
    return indices, squared_distances


__all__ = ["METHODS", "nearest"]
