"""Shared in-place codebook mechanics: EMA sums, k-means, row sampling, DDP reductions.

Used by the codebook baselines (``vq.py``, ``lc.py``, ``cvq.py``, ``affine.py``) so that each of
them reads as its paper's update rule and none carries a private copy of these steps. Everything
here runs under ``torch.no_grad`` and in float32; the nearest-code step is always
``simvq.search.nearest``.

DDP: when ``torch.distributed`` is initialised (checked at call time, never cached), statistics
are summed over processes and randomly drawn rows are broadcast from rank 0, so every process
holds the same codebook after an update.

torch.compile: the draws that happen only on some steps (a restart when a code died, k-means on
the first batch) are ``sample_rows_when`` and ``kmeans_when``, custom ops that decide on the host
and draw from a quantizer's stream tensor. ``fullgraph=True`` captures them whole (a graph can
neither branch on data nor hold a ``torch.Generator``) and they run the eager code unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ..search import nearest
from .base import continued_stream


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over processes in place (no-op without torch.distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean_(tensor: Tensor) -> Tensor:
    """Average ``tensor`` over processes in place (no-op without torch.distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` with rank ``src``'s copy (no-op without torch.distributed)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def ema_(average: Tensor, value: Tensor, decay: float) -> Tensor:
    """``average <- decay * average + (1 - decay) * value`` in place."""
    return average.mul_(decay).add_(value, alpha=1.0 - decay)


@torch.no_grad()
def cluster_sums(x: Tensor, codes: Tensor, num_clusters: int) -> tuple[Tensor, Tensor]:
    """Per-cluster ``(counts: (K,), sums: (K, dim))`` of ``x: (N, dim)`` assigned by ``codes: (N,)``,
    float32 and summed over processes."""
    x32 = x.float()
    counts = torch.zeros(num_clusters, device=x.device).index_add_(0, codes, torch.ones_like(codes, dtype=torch.float32))
    sums = torch.zeros(num_clusters, x.shape[1], device=x.device).index_add_(0, codes, x32)
    return all_reduce_sum_(counts), all_reduce_sum_(sums)


REPEAT_JITTER = 0.01  # a repeated row's noise, in units of the batch's standard deviation


@torch.no_grad()
def sample_rows(x: Tensor, num_rows: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``num_rows`` random rows of ``x: (N, dim)``, float32, identical on every process.

    Without replacement when ``N >= num_rows``, with replacement otherwise (a batch may hold fewer
    vectors than the codebook). A row equal to one drawn before it (a repeat, or a duplicate vector
    in ``x`` such as a blank image region's) gets Gaussian noise of ``REPEAT_JITTER`` times ``x``'s
    standard deviation, as Jukebox jitters its tiled batch: identical codes tie, the lowest index
    always wins, so without it every copy would be a dead code from the start (a first-batch table
    at K = 8,192 from 3,136 tokens kept ~3,100 distinct rows). A row's first occurrence stays
    exactly its encoder output.
    """
    n = x.shape[0]
    if n >= num_rows:
        index = torch.randperm(n, generator=generator)[:num_rows]
    else:
        index = torch.randint(n, (num_rows,), generator=generator)
    x32 = x.detach().float()
    index = index.to(x.device)
    _, value = torch.unique(x32, dim=0, return_inverse=True)  # equal vectors of x share an id (N rows: cheap)
    return broadcast_(jitter_repeats(x32[index].contiguous(), value[index], spread=x32, generator=generator))


@torch.no_grad()
def jitter_repeats(rows: Tensor, value: Tensor, *, spread: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``rows`` with every row whose ``value`` id (equal rows, equal ids) came earlier moved by
    Gaussian noise of ``REPEAT_JITTER`` times ``spread``'s standard deviation (in place; returned).
    First occurrences are untouched."""
    num_rows = rows.shape[0]
    if num_rows == 0:
        return rows
    position = torch.arange(num_rows, device=rows.device)
    first = torch.full((int(value.max()) + 1,), num_rows, device=rows.device).scatter_reduce_(0, value, position, "amin")
    repeats = (first[value] != position).nonzero().squeeze(1)
    if repeats.numel():
        spread = spread.float()
        scale = REPEAT_JITTER * torch.maximum(spread.std(correction=0), spread.abs().amax() * 1e-3).clamp_min(1e-12)
        noise = torch.randn(repeats.numel(), rows.shape[1], generator=generator).to(rows.device)
        rows.index_add_(0, repeats, noise * scale)
    return rows


@torch.no_grad()
def kmeans(
    x: Tensor,
    num_clusters: int,
    *,
    iters: int = 10,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``x: (N, dim)``: ``(centroids: (K, dim) float32, counts: (K,))``.

    Centroids start at random rows of ``x`` (Forgy init, as lucidrains and SoundStream do); each
    iteration assigns every row to its nearest centroid with ``nearest`` and moves each centroid to
    its members' mean. A cluster left empty keeps its centroid (no division by zero, no NaN).
    Under DDP the start is rank 0's rows and the means are over all processes' rows.
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    centroids = sample_rows(x, num_clusters, generator=generator)
    counts = torch.zeros(num_clusters, device=x.device)
    for iteration in range(iters):
        # x is checked by the first search; later ones check the moved centroids only
        codes, _ = nearest(x, centroids, chunk_size=chunk_size, x_checked=iteration > 0)
        counts, sums = cluster_sums(x, codes, num_clusters)
        filled = counts > 0
        centroids = torch.where(filled[:, None], sums / counts.clamp_min(1.0)[:, None], centroids)
    return centroids, counts


# ----------------------------------------------------------------------------- draws on some steps only


@torch.library.custom_op("simvq::sample_rows_when", mutates_args=("stream",))
def _sample_rows_when(x: Tensor, num_rows: int, when: Tensor, stream: Tensor | None) -> Tensor:
    if not bool(when):
        return x.new_zeros(num_rows, x.shape[1], dtype=torch.float32)
    with continued_stream(stream) as generator:
        return sample_rows(x, num_rows, generator=generator)


@_sample_rows_when.register_fake
def _(x: Tensor, num_rows: int, when: Tensor, stream: Tensor | None) -> Tensor:
    return x.new_empty(num_rows, x.shape[1], dtype=torch.float32)


def sample_rows_when(when: Tensor, x: Tensor, num_rows: int, *, stream: Tensor | None) -> Tensor:
    """``sample_rows(x, num_rows)`` drawn from ``stream`` (a generator state, advanced in place;
    ``None``: the global RNG) if the 0-dim bool ``when`` holds; zeros, with nothing drawn, if not."""
    return torch.ops.simvq.sample_rows_when(x.detach(), num_rows, when, stream)


@torch.library.custom_op("simvq::kmeans_when", mutates_args=("stream",))
def _kmeans_when(
    x: Tensor, num_clusters: int, iters: int, chunk_size: int | None, when: Tensor, stream: Tensor | None
) -> Tensor:
    if not bool(when):
        return x.new_zeros(num_clusters, x.shape[1], dtype=torch.float32)
    with continued_stream(stream) as generator:
        centroids, _ = kmeans(x, num_clusters, iters=iters, chunk_size=chunk_size, generator=generator)
    return centroids


@_kmeans_when.register_fake
def _(x: Tensor, num_clusters: int, iters: int, chunk_size: int | None, when: Tensor, stream: Tensor | None) -> Tensor:
    return x.new_empty(num_clusters, x.shape[1], dtype=torch.float32)


def kmeans_when(
    when: Tensor, x: Tensor, num_clusters: int, *, iters: int, chunk_size: int | None, stream: Tensor | None
) -> Tensor:
    """``kmeans(x, num_clusters)``'s centroids, drawing its start from ``stream`` (as in
    ``sample_rows_when``), if the 0-dim bool ``when`` holds; zeros, with nothing computed, if not."""
    return torch.ops.simvq.kmeans_when(x.detach(), num_clusters, iters, chunk_size, when, stream)


@torch.library.custom_op("simvq::fill_rows", mutates_args=("table", "filled", "stream"))
def _fill_rows(table: Tensor, filled: Tensor, x: Tensor, stream: Tensor | None) -> None:
    start, capacity = int(filled), table.shape[0]
    if start >= capacity:
        return
    distinct = torch.unique(x.float(), dim=0)  # equal vectors (a blank region's) are one point, as k-means makes them
    # as many rows on every process (ranks hold different batches), so rank 0's can be broadcast
    count = torch.tensor(min(distinct.shape[0], capacity - start), device=x.device)
    if is_distributed():
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
    with continued_stream(stream) as generator:
        rows = sample_rows(distinct, int(count), generator=generator)
        table[start : start + rows.shape[0]] = rows.to(table.dtype)
        filled.add_(rows.shape[0])
        if int(filled) == capacity and start > 0:  # equal vectors from different batches (a blank region's)
            rows = table.float()
            _, value = torch.unique(rows, dim=0, return_inverse=True)
            table.copy_(broadcast_(jitter_repeats(rows, value, spread=rows, generator=generator)).to(table.dtype))


@_fill_rows.register_fake
def _(table: Tensor, filled: Tensor, x: Tensor, stream: Tensor | None) -> None:
    return None


def fill_rows_(table: Tensor, filled: Tensor, x: Tensor, *, stream: Tensor | None) -> None:
    """Write distinct vectors of ``x`` (each value once, in random order) into ``table[filled:]``
    and advance the 0-dim int64 ``filled`` by their number, until the table is full (a no-op then): a
    table of data vectors built over as many batches as it takes. Once full, a row equal to one from
    an earlier batch is jittered (``jitter_repeats``). Draws from ``stream``; identical on every
    process."""
    torch.ops.simvq.fill_rows(table, filled, x.detach(), stream)


__all__ = [
    "all_reduce_mean_",
    "all_reduce_sum_",
    "broadcast_",
    "cluster_sums",
    "ema_",
    "fill_rows_",
    "is_distributed",
    "jitter_repeats",
    "kmeans",
    "kmeans_when",
    "sample_rows",
    "sample_rows_when",
]
