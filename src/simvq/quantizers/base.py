"""Shared mechanics of every quantizer: the result type, input checks, straight-through, losses, usage.

Every quantizer in simvq subclasses :class:`Quantizer` and returns a :class:`QuantizerOutput`, so a
training loop never special-cases a method. Subclasses implement ``quantize`` on a flat ``(N, dim)``
batch; the base class handles layouts (any leading shape, ``channel_first``), validation and the
per-batch ``usage``/``perplexity`` metrics.

Codebook methods (an explicit ``(K, dim)`` table searched by nearest neighbour) subclass
:class:`CodebookQuantizer`, which owns the search, the VQ-VAE losses and the straight-through once.

Padding masks (variable-length sequences) have one home too: ``forward``, ``encode`` and ``decode``
take ``mask`` (True = real token), gather the real tokens, run the method's unmasked path on them
and scatter the results back (see :class:`Quantizer`), so every quantizer handles masks the same way
by construction.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..search import check_values, nearest
from .options import check_bool, check_float, check_int, check_table_fits

# ----------------------------------------------------------------------------- seeding, initial codebooks


# One ``seed`` option per quantizer feeds separate random streams, ``seed + offset`` each, so that
# changing how many numbers one use draws never shifts another's.
SEED_OFFSET_CODEBOOK = 0  # initial codebook / frozen basis
SEED_OFFSET_LAYERS = 1  # torch's own layer initialisers (projections, SimVQ's W)
SEED_OFFSET_TRAINING = 2  # draws during training: k-means starts, dead-code restarts, anchors
# what torch takes as a seed (a negative seed stands for 2**64 + seed), for every stream's seed + offset
SEED_RANGE = (-(2**63), 2**64 - 1 - SEED_OFFSET_TRAINING)


def check_seed(seed, *, count: int = 1) -> int | None:
    """The ``seed`` option: ``None`` (torch's global RNG) or an integer whose ``count`` consecutive
    seeds ``seed .. seed + count - 1`` (one per stage of a residual stack) lie in :data:`SEED_RANGE`
    (a larger one made torch fail with "Overflow when unpacking long", naming no option)."""
    return check_int("seed", seed, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1] - (count - 1), optional=True)


def seeded_generator(seed: int | None, offset: int = SEED_OFFSET_CODEBOOK) -> torch.Generator | None:
    """A CPU generator seeded with ``seed + offset``; ``None`` (torch's global RNG) without a seed."""
    return torch.Generator().manual_seed(seed + offset) if seed is not None else None


@contextmanager
def seeded_global_rng(seed: int | None, offset: int = SEED_OFFSET_LAYERS) -> Iterator[None]:
    """Run the block with the global CPU RNG seeded at ``seed + offset`` and restore it afterwards,
    for initialisers that take no generator (``nn.Linear``, ``nn.init.orthogonal_``). Without a
    seed the block draws from the global RNG as it stands, and advances it."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed + offset)
        yield


# Training draws (k-means starts, dead-code restarts, anchors) come from a stream kept as the state
# tensor of a generator, in a non-persistent buffer under this name (``None`` without a seed: the
# global RNG): a compiled graph can hand a tensor to the op that draws, never a ``torch.Generator``.
TRAINING_STREAM = "training_rng_state"


def register_training_stream(module: nn.Module, seed: int | None) -> None:
    """Give ``module`` its training stream: ``seeded_generator(seed, SEED_OFFSET_TRAINING)``'s
    state, or ``None`` (the global RNG) without a seed. Not in ``state_dict``: weights files stay
    as they were; training checkpoints save it beside them (``training_streams``)."""
    generator = seeded_generator(seed, SEED_OFFSET_TRAINING)
    module.register_buffer(TRAINING_STREAM, None if generator is None else generator.get_state(), persistent=False)


def training_streams(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(module name, stream state)`` of every seeded training stream in ``model``; restore one by
    copying a saved state into it."""
    for name, module in model.named_modules():
        state = getattr(module, TRAINING_STREAM, None)
        if isinstance(state, Tensor):
            yield name, state


@contextmanager
def continued_stream(state: Tensor | None) -> Iterator[torch.Generator | None]:
    """A generator that continues the stream ``state`` (``None``: the global RNG, as it stands) and
    writes its advanced state back into ``state`` when the block ends."""
    if state is None:
        yield None
        return
    generator = torch.Generator()
    generator.set_state(state.detach().cpu())
    yield generator
    state.copy_(generator.get_state())


def gaussian_codebook(codebook_size: int, dim: int, *, init_scale: float | None = None, seed: int | None = None) -> Tensor:
    """``(codebook_size, dim)`` codes drawn ``N(0, init_scale**2)``. The default ``dim**-0.5`` gives rows
    of norm ~1: SimVQ's official ``C``, and the start every Gaussian-initialised baseline shares so
    that comparisons isolate the codebook mechanism."""
    scale = init_scale if init_scale is not None else dim**-0.5
    return torch.randn(codebook_size, dim, generator=seeded_generator(seed)) * scale


def uniform_codebook(codebook_size: int, dim: int, *, bound: float, seed: int | None = None) -> Tensor:
    """``(codebook_size, dim)`` codes drawn uniformly from ``[-bound, bound]``."""
    return (torch.rand(codebook_size, dim, generator=seeded_generator(seed)) * 2 - 1) * bound


def projections(dim: int, inner_dim: int, *, enabled: bool, seed: int | None = None) -> tuple[nn.Module, nn.Module]:
    """``(Linear(dim, inner_dim), Linear(inner_dim, dim))`` around a quantizer that works in
    ``inner_dim`` channels, initialised from ``seed``; two identities when not ``enabled``."""
    if not enabled:
        return nn.Identity(), nn.Identity()
    with seeded_global_rng(seed):
        return nn.Linear(dim, inner_dim), nn.Linear(inner_dim, dim)


# ----------------------------------------------------------------------------- helpers


def fp32(device_type: str):
    """Context that switches autocast off, so distances and losses are computed in float32."""
    return torch.autocast(device_type=device_type, enabled=False)


def linear_fp32(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)`` for an ``nn.Linear`` (or ``nn.Identity``) in float32 whatever the module's dtype
    (after ``.double()``/``.half()``) or autocast state: projections feed distances and losses."""
    if isinstance(layer, nn.Identity):
        return x.float()
    linear = cast(nn.Linear, layer)  # not an Identity: the nn.Linear the docstring names
    bias = None if linear.bias is None else linear.bias.float()
    with fp32(x.device.type):
        return F.linear(x.float(), linear.weight.float(), bias)


def squared_distances(x: Tensor, codes: Tensor) -> Tensor:
    """Squared distances ``(n, m)`` between ``x: (n, d)`` and ``codes: (m, d)``, as one GEMM
    (``|x|^2 - 2 x.c + |c|^2``, clamped at 0), with a graph to both: the relaxed quantizers'
    posteriors and the transport costs. The nearest-code search is ``simvq.search.nearest``."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ codes.t() + codes.pow(2).sum(1)).clamp_min(0)


# Gumbel noise is drawn from uniforms clamped to GUMBEL_CLAMP, so it is bounded (in float32, by
# -3.14 and 15.94): what bounds the Gumbel-softmax temperatures (see sqvae, hqa).
GUMBEL_CLAMP = (1e-10, 1 - 1e-7)


def gumbel_noise(shape, *, device) -> Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` of ``shape`` from the global RNG (the relaxed
    quantizers' samples; activation checkpointing replays it)."""
    return _gumbel_of(torch.rand(shape, device=device).clamp_(*GUMBEL_CLAMP))


def _gumbel_of(uniform: Tensor) -> Tensor:
    return -torch.log(-torch.log(uniform))


# (least, largest) value the noise takes
GUMBEL_RANGE = tuple(_gumbel_of(torch.tensor(GUMBEL_CLAMP)).tolist())


def straight_through(z: Tensor, q: Tensor, *, rotation_trick: bool = False) -> Tensor:
    """Forward value ``q``, gradient passed to ``z``.

    Plain: ``z + sg(q - z)`` (van den Oord et al. 2017), the gradient is copied unchanged.
    Rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
    Trick"): ``q = sg(lambda * R) z`` with ``R`` the rotation taking ``z/|z|`` onto ``q/|q|`` and
    ``lambda = |q|/|z|``; the gradient to ``z`` is rotated and scaled instead of copied, so it
    carries the angle between encoder output and code. Shapes: ``z, q: (..., dim)``.
    """
    if not rotation_trick:
        return z + (q - z).detach()
    eps = torch.finfo(torch.float32).eps
    z_norm = z.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    z_unit = (z / z_norm).detach()
    q_unit = (q / q_norm).detach()
    # Householder form of the rotation in the plane of z and q: R = I - 2 r r^T + 2 q_unit z_unit^T
    # with r = normalize(z_unit + q_unit); it never builds a (dim, dim) matrix.
    r = F.normalize(z_unit + q_unit, dim=-1, eps=eps).detach()
    rotated = (
        z
        - 2 * r * (r * z).sum(-1, keepdim=True)
        + 2 * q_unit * (z_unit * z).sum(-1, keepdim=True)
    )
    scale = (q_norm / z_norm).detach()
    # the straight-through residual makes the forward value exactly q despite rounding
    out = scale * rotated
    return out + (q - out).detach()


def commitment_losses(z: Tensor, q: Tensor, *, beta: float) -> dict[str, Tensor]:
    """VQ-VAE auxiliary terms, mean squared error over all elements, in float32.

    ``commitment = beta * ||z - sg(q)||^2`` pulls the encoder towards its code;
    ``codebook = ||sg(z) - q||^2`` pulls the code (or whatever parameterises it) towards the encoder.
    """
    commitment, codebook = _CommitmentLosses.apply(z.float(), q.float(), beta)
    return {"commitment": commitment, "codebook": codebook}


class _CommitmentLosses(torch.autograd.Function):
    """The two terms from one ``mse_loss`` (they share its value); the backward is
    ``mse_loss_backward``'s ``(2 / n) * (a - b) * grad``, bit for bit, without its zero-filled
    buffers. Two ``F.mse_loss`` calls cost twice the forward and two extra passes backward."""

    @staticmethod
    def forward(ctx, z: Tensor, q: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, q)
        ctx.beta = beta
        mse = F.mse_loss(z, q)
        return beta * mse, mse

    @staticmethod
    def backward(ctx, grad_commitment: Tensor | None, grad_codebook: Tensor | None):
        z, q = ctx.saved_tensors
        norm = 2.0 / z.numel()
        diff = z - q
        grad_z = grad_q = None
        if ctx.needs_input_grad[0] and grad_commitment is not None:
            grad_z = diff.mul(norm).mul_(grad_commitment * ctx.beta)
        if ctx.needs_input_grad[1] and grad_codebook is not None:
            grad_q = diff.mul_(-norm).mul_(grad_codebook)  # -norm (z - q) == norm (q - z) exactly
        return grad_z, grad_q, None


def code_statistics(counts: Tensor) -> dict[str, Tensor]:
    """Usage (fraction of codes with count > 0) and perplexity (exp of the entropy) of a histogram."""
    counts = counts.float()
    total = counts.sum().clamp_min(1.0)
    probs = counts / total
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum()
    return {
        "usage": (counts > 0).float().mean(),
        "perplexity": entropy.exp(),
    }


def code_counts(codes: Tensor, codebook_size: int) -> Tensor:
    """Histogram of integer ``codes`` (any shape) over ``codebook_size`` bins."""
    return torch.bincount(codes.reshape(-1), minlength=codebook_size)


# ----------------------------------------------------------------------------- result type


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    quantized: same shape and layout as the input; gradients reach the input (straight-through).
    codes:     int64 indices, the input's shape without the channel dimension
               (``(..., num_codebooks)`` for multi-stage quantizers); ``PADDING_CODE`` (-1) at
               positions a ``mask`` marks as padding.
    loss:      scalar auxiliary loss to add to the task loss (sum of ``losses``).
    losses:    the named terms that make up ``loss``.
    metrics:   detached diagnostics; always holds ``usage`` and ``perplexity`` of this batch.
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class FlatOutput:
    """What a subclass's ``quantize`` returns on a flat ``(N, dim)`` batch.

    ``per_token``: further per-token outputs ``(N, ...)`` (sc_vae's coefficients), each becoming
    the field of that name of the quantizer's ``output_type``, shaped like the codes (the token
    grid, then its own trailing dimensions); 0 at masked positions.
    """

    quantized: Tensor  # (N, dim)
    codes: Tensor  # (N,) or (N, num_codebooks)
    losses: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)
    per_token: dict[str, Tensor] = field(default_factory=dict)


# the code of a masked (padding) position, in every stage of a multi-stage code
PADDING_CODE = -1


def scatter_tokens(values: Tensor, index: Tensor, size: int, fill) -> Tensor:
    """``(size, ...)`` holding ``values: (n, ...)`` at rows ``index`` and ``fill`` elsewhere; the
    gradient reaches ``values`` from those rows only (``fill`` rows are constants)."""
    out = values.new_full((size, *values.shape[1:]), fill)
    return out.index_copy(0, index, values)


# ----------------------------------------------------------------------------- padding masks


def real_token_index(mask, grid: tuple[int, ...], *, device, grid_name: str = "the token grid") -> Tensor:
    """Flat indices ``(N_real,)`` of the True entries of ``mask``, checked to be a bool tensor of
    shape ``grid`` with at least one True (a padding mask: True = real token). One host sync."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool torch.Tensor shaped like {grid_name}, {grid}, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = real token), got {mask.dtype}")
    if tuple(mask.shape) != tuple(grid):
        raise ValueError(f"mask must have the shape of {grid_name}, {tuple(grid)}, got {tuple(mask.shape)}")
    index = mask.reshape(-1).to(device).nonzero().squeeze(1)
    if index.numel() == 0:
        raise ValueError("mask marks no real token (every entry is False); need at least one")
    return index


# ----------------------------------------------------------------------------- base classes


def _declaring_options(cls: type[Quantizer], init: Callable[..., None]) -> Callable[..., None]:
    """``cls``'s constructor ``init`` with the signature a user sees: its own parameters and, in
    place of its ``**options``, the keyword options of the base constructor it passes them to (less
    ``cls.excluded_options``; kept variable when ``cls.passes_options_on``). The returned
    constructor refuses a keyword outside that signature, naming it and listing the options."""
    parameters = list(inspect.signature(init).parameters.values())
    forwarded = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    if forwarded:
        parameters = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
        own = {p.name for p in parameters}
        base = inspect.signature(super(cls, cls).__init__).parameters.values()
        parameters += [
            p for p in base
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in own and p.name not in cls.excluded_options
        ]
        if cls.passes_options_on:
            parameters += forwarded
    names = [p.name for p in parameters[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD]  # less self

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        unknown = [] if cls.passes_options_on else [key for key in kwargs if key not in names]
        if unknown:
            raise TypeError(f"{cls.__name__} got an unexpected option {unknown[0]!r}; its options are: {', '.join(names)}")
        init(self, *args, **kwargs)

    setattr(__init__, "__signature__", inspect.Signature(parameters))  # read by inspect.signature
    return __init__


class Quantizer(nn.Module):
    """Base class: input validation, layout handling and usage metrics around ``quantize``.

    Subclasses implement ``quantize(x: (N, dim)) -> FlatOutput``, ``encode_flat(x) -> codes`` and
    ``decode_flat(codes) -> (N, dim)``. ``codebook_size`` is the number of distinct codes (per stage
    for multi-stage quantizers). ``quantize`` and ``encode_flat`` receive the batch ``_flatten``
    validated (values checked when ``check_finite``): a search on it need not check it again.

    Options every quantizer takes (keyword-only), checked here once:
        seed: seed of the quantizer's random draws (initial codes, layer initialisers, training
            draws), each stream from ``seed + offset`` (``SEED_OFFSET_*``); ``None``: torch's
            global RNG. An integer in ``SEED_RANGE``. Stored as ``self.seed``.
        init_scale: scale of the random initial codes, ``None`` for the quantizer's default (most
            draw ``N(0, init_scale**2)`` entries and default to ``dim**-0.5``: rows of norm ~1).
            Stored as ``self.init_scale``; quantizers without random codes exclude it.
        channel_first: inputs laid out ``(B, dim, ...)`` instead of ``(..., dim)``.
        check_finite: refuse inputs holding NaN/Inf or values whose squared distances overflow
            float32 (one device sync per call; switch off in tight GPU loops).

    Shared options: a subclass constructor declares its own options and passes the rest on in
    ``**options`` to its base's constructor, which declares, documents and checks them. Its
    signature (``inspect.signature``, ``help``) lists both, less the ``excluded_options`` it does
    not take, and it refuses any other keyword with a TypeError that names it and lists the options.

    Padding masks: ``forward(z, mask=...)``, ``encode(z, mask=...)`` and ``decode(codes, mask=...)``
    take an optional bool ``mask`` shaped like the token grid (``z`` without its channel dimension:
    ``(...)`` for ``(..., dim)``, ``(B, ...)`` for channel-first ``(B, dim, ...)``; for ``decode``
    the codes without their per-token dimension), True at real tokens. The real tokens are gathered
    into one ``(N_real, dim)`` batch, the method's unmasked path runs on it, and the results are
    scattered back, so a masked batch gives what the batch of its real tokens alone gives, bit for
    bit: losses, ``metrics`` (usage, perplexity, ...), every state change (EMA and k-means
    statistics, dead-code restarts, anchors, affine statistics) and every random draw. Masked
    positions contribute nothing and hold:

        codes      ``PADDING_CODE`` (-1), in every stage of a multi-stage code;
        quantized  zeros (``decode`` gives zeros there too), so no gradient flows from them into
                   the input or the quantizer's parameters, and nothing of the input passes the
                   bottleneck unquantized;
        per-token outputs (sc_vae's ``coefficients``): 0.

    Values at masked positions are not checked (padding may hold anything); a mask with no real
    token is refused. ``mask=None`` is the unmasked path, unchanged. The gather has a data-dependent
    size (one host synchronisation), so ``torch.compile(fullgraph=True)`` does not capture a masked
    call (dynamo cannot guard on the number of real tokens); compiled without ``fullgraph`` it runs,
    the graph broken at the gather, with eager mode's results. The ``mask=None`` path compiles whole.
    """

    # the result type ``forward`` returns; ``FlatOutput.per_token`` entries become its fields
    output_type: type[QuantizerOutput] = QuantizerOutput

    # shared options a subclass does not take (HQA has no commitment ``beta``, FSQ no codes to
    # scale): left out of its signature and refused
    excluded_options: tuple[str, ...] = ()
    # a wrapper whose ``**options`` go on to stage quantizers (residual): its signature keeps them
    # variable, and the stages check them
    passes_options_on: bool = False
    # the ``losses`` that are a variational model's latent ELBO terms (nats per token, times the
    # quantizer's ``kl_weight``): a trainer that knows the decoder's likelihood may re-weigh them
    # (the image recipe's ``loss.elbo_weight``); empty for every quantizer that is not a VAE
    elbo_losses: tuple[str, ...] = ()
    # training-mode ``codes`` are a sample from a posterior, not the nearest codes (HQA): usage
    # counted over training batches then measures the sampling, not the eval-mode quantizer
    sampled_training_codes: bool = False

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        seed: int | None = None,
        init_scale: float | None = None,
        channel_first: bool = False,
        check_finite: bool = True,
    ):
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=2)
        self.seed = check_seed(seed)
        self.init_scale = check_float("init_scale", init_scale, low=0.0, low_open=True, optional=True)
        self.channel_first = check_bool("channel_first", channel_first)
        self.check_finite = check_bool("check_finite", check_finite)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            setattr(cls, "__init__", _declaring_options(cls, vars(cls)["__init__"]))  # mypy forbids assigning a method

    # -- layout -----------------------------------------------------------------------------

    def _flatten(self, z: Tensor, name: str = "z") -> tuple[Tensor, tuple[int, ...]]:
        """Validate ``z`` and return ``((N, dim) view, leading shape)``."""
        z = self._channels_last(z, name)
        # NaN, Inf, and magnitudes whose squared distances and losses overflow float32 (1e20 gave an
        # inf loss, or NaN in sqvae): one min/max pass
        if self.check_finite and not torch.compiler.is_compiling():  # a graph cannot raise on data
            check_values(name, z)
        return z.reshape(-1, self.dim), tuple(z.shape[:-1])

    def _flatten_masked(self, z: Tensor, mask, name: str = "z") -> tuple[Tensor, tuple[int, ...], Tensor]:
        """Validate ``z`` and ``mask`` and return ``((N_real, dim) real tokens, leading shape,
        (N_real,) their flat indices)``; only the real tokens' values are checked."""
        z = self._channels_last(z, name)
        leading = tuple(z.shape[:-1])
        index = real_token_index(mask, leading, device=z.device, grid_name=f"{name}'s token grid ({name} without its channel dimension)")
        real = z.reshape(-1, self.dim).index_select(0, index)
        if self.check_finite and not torch.compiler.is_compiling():
            check_values(name, real)
        return real, leading, index

    def _channels_last(self, z: Tensor, name: str) -> Tensor:
        """``z`` checked (type, dtype, channels, not empty), as ``(..., dim)``."""
        if not isinstance(z, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor (float32/float16/bfloat16/float64), got {z.dtype}")
        layout = "(B, dim, ...)" if self.channel_first else "(..., dim)"
        shape = tuple(z.shape)  # the caller's layout, for messages
        if z.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimensions {layout}, got shape {shape}")
        if self.channel_first:
            z = rearrange(z, "b d ... -> b ... d")
        if z.shape[-1] != self.dim:
            raise ValueError(
                f"{name} must have {self.dim} channels in its {'second' if self.channel_first else 'last'} "
                f"dimension {layout}, got shape {shape}"
            )
        if z.numel() == 0:
            raise ValueError(f"{name} is empty (shape {shape}); need at least one vector")
        return z

    def _unflatten(self, flat: Tensor, leading: tuple[int, ...]) -> Tensor:
        out = flat.reshape(*leading, flat.shape[-1])
        if self.channel_first:
            out = rearrange(out, "b ... d -> b d ...")
        return out

    def _check_codes(self, codes: Tensor, *, values: bool = True) -> Tensor:
        """``codes`` as int64, checked: an integer tensor, not empty and (``values``) in range."""
        if not isinstance(codes, Tensor):
            raise TypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor (int64), got {codes.dtype}")
        if codes.numel() == 0:
            raise ValueError(f"codes is empty (shape {tuple(codes.shape)})")
        if values:
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.codebook_size:
                hint = f"; {PADDING_CODE} marks padding: pass the mask (decode(codes, mask=mask))" if low == PADDING_CODE else ""
                raise ValueError(
                    f"codes must lie in [0, {self.codebook_size - 1}] (codebook_size={self.codebook_size}), "
                    f"got values in [{low}, {high}]{hint}"
                )
        return codes.long()

    def _code_grid(self, codes: Tensor) -> tuple[int, ...]:
        """The token grid of ``codes``: their shape without the ``code_ndim`` per-token dimensions."""
        if codes.ndim < self.code_ndim:
            raise ValueError(f"codes must have at least {self.code_ndim} dimension(s), got shape {tuple(codes.shape)}")
        return tuple(codes.shape[: codes.ndim - self.code_ndim])

    # -- public API -------------------------------------------------------------------------

    def forward(self, z: Tensor, *, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantize ``z`` (``(..., dim)``, or ``(B, dim, ...)`` when ``channel_first``). ``mask``:
        optional bool tensor of the token grid's shape, True at real tokens (see the class docstring)."""
        if mask is not None:
            real, leading, index = self._flatten_masked(z, mask)
            return self._output(z, self.quantize(real), leading, index)
        flat, leading = self._flatten(z)
        return self._output(z, self.quantize(flat), leading)

    def _output(self, z: Tensor, result: FlatOutput, leading: tuple[int, ...], index: Tensor | None = None) -> QuantizerOutput:
        """The output for the flat ``result``; with ``index`` (the real tokens' flat indices) the
        masked positions are filled in: ``PADDING_CODE`` codes, zero vectors, zero per-token outputs."""
        # losses is non-empty in the sum's branch, so it is a Tensor, never sum's start 0
        loss = cast(Tensor, sum(result.losses.values())) if result.losses else z.new_zeros((), dtype=torch.float32)
        metrics = {**self.batch_metrics(result.codes), **result.metrics}
        codes, quantized, per_token = result.codes, result.quantized.to(z.dtype), result.per_token
        if index is not None:
            size = math.prod(leading)
            codes = scatter_tokens(codes, index, size, PADDING_CODE)
            quantized = scatter_tokens(quantized, index, size, 0)
            per_token = {name: scatter_tokens(value, index, size, 0) for name, value in per_token.items()}
        out = self.output_type(
            quantized=self._unflatten(quantized, leading),
            codes=codes.reshape(*leading, *codes.shape[1:]),
            loss=loss,
            losses=result.losses,
            metrics={k: v.detach() for k, v in metrics.items()},
        )
        for name, value in per_token.items():
            setattr(out, name, value.reshape(*leading, *value.shape[1:]))
        return out

    @torch.no_grad()
    def encode(self, z: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """Codes only, no graph: ``(..., dim) -> (...)`` (channel dim removed when ``channel_first``);
        ``PADDING_CODE`` where ``mask`` is False."""
        if mask is not None:
            real, leading, index = self._flatten_masked(z, mask)
            codes = scatter_tokens(self.encode_flat(real), index, math.prod(leading), PADDING_CODE)
            return codes.reshape(*leading, *codes.shape[1:])
        flat, leading = self._flatten(z)
        codes = self.encode_flat(flat)
        return codes.reshape(*leading, *codes.shape[1:])

    def decode(self, codes: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """Code vectors for integer ``codes``: ``(...) -> (..., dim)`` (or ``(B, dim, ...)``).
        ``mask`` (the codes' token grid, True at real tokens): the codes at masked positions are
        ignored (``PADDING_CODE`` or anything) and decode to zeros."""
        if mask is not None:
            codes = self._check_codes(codes, values=False)
            leading = self._code_grid(codes)
            index = real_token_index(mask, leading, device=codes.device, grid_name="the codes' token grid (codes without their per-token dimension)")
            real = codes.reshape(-1, *codes.shape[len(leading) :]).index_select(0, index)
            vectors = self.decode_flat(self._check_codes(real))
            return self._unflatten(scatter_tokens(vectors, index, math.prod(leading), 0), leading)
        codes = self._check_codes(codes)
        leading = tuple(codes.shape[: codes.ndim - self.code_ndim])
        flat_codes = codes.reshape(-1, *codes.shape[codes.ndim - self.code_ndim :])
        return self._unflatten(self.decode_flat(flat_codes), leading)

    def batch_metrics(self, codes: Tensor) -> dict[str, Tensor]:
        return code_statistics(code_counts(codes.detach(), self.codebook_size))

    # number of trailing dimensions a single vector's code has (0: a scalar index; 1: per stage)
    code_ndim: int = 0
    # outputs besides the codes that ``decode`` needs (sc_vae: its coefficients); empty for index codes
    decode_inputs: tuple[str, ...] = ()

    # -- to implement -------------------------------------------------------------------------

    def quantize(self, x: Tensor) -> FlatOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_flat(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_flat(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}, channel_first={self.channel_first}"


class CodebookQuantizer(Quantizer):
    """A quantizer with an explicit codebook: nearest search, VQ-VAE losses, straight-through.

    Subclasses provide ``codebook() -> (K, dim)`` (the table searched, no graph needed) and may
    override ``lookup(codes) -> (N, dim)`` when the gradient to the codebook's parameters should
    flow through the selected rows only (SimVQ does).

    Options of every codebook quantizer (keyword-only; besides :class:`Quantizer`'s), checked here once:
        beta: weight of the commitment term ``beta * ||z - sg(q)||^2`` (0.25, VQ-VAE's).
        rotation_trick: the rotation-trick gradient (Fifty et al. 2024) instead of the plain
            straight-through (see :func:`straight_through`).
        chunk_size: codes per tile of the nearest-code search (see ``simvq.search.nearest``);
            ``None``: chosen by the search.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        beta: float = 0.25,
        rotation_trick: bool = False,
        chunk_size: int | None = None,
        **options,
    ):
        super().__init__(dim, codebook_size, **options)
        check_table_fits("codebook_size", codebook_size, dim)
        self.beta = check_float("beta", beta, low=0.0)
        self.rotation_trick = check_bool("rotation_trick", rotation_trick)
        self.chunk_size = check_int("chunk_size", chunk_size, minimum=1, optional=True)

    def codebook(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def lookup(self, codes: Tensor) -> Tensor:
        """Code vectors with a graph to the codebook's parameters; default: rows of ``codebook()``."""
        return F.embedding(codes, self.codebook())

    def search(self, x: Tensor, *, checked: bool = False) -> Tensor:
        """Indices ``(N,)`` of the nearest codes to ``x: (N, dim)``. ``checked``: ``x`` is an input
        ``_flatten`` has checked (or its unit rows), so the search checks only the codebook;
        ``quantize`` and ``encode_flat`` pass ``self.check_finite``."""
        # the table is built under no_grad too: the search needs no graph (SimVQ's W(C) included)
        with torch.no_grad():
            indices = nearest(
                x.detach(), self.codebook().detach(), chunk_size=self.chunk_size, return_distances=False,
                check_finite=self.check_finite, x_checked=checked,
            )
        return cast(Tensor, indices)  # return_distances=False: the indices alone, not (indices, distances)

    def quantize(self, x: Tensor) -> FlatOutput:
        codes = self.search(x, checked=self.check_finite)
        with fp32(x.device.type):
            q = self.lookup(codes).float()
            losses = commitment_losses(x, q, beta=self.beta)
            quantized = straight_through(x.float(), q, rotation_trick=self.rotation_trick)
        return FlatOutput(quantized=quantized, codes=codes, losses=losses)

    def encode_flat(self, x: Tensor) -> Tensor:
        return self.search(x, checked=self.check_finite)

    def decode_flat(self, codes: Tensor) -> Tensor:
        with fp32(codes.device.type):
            return self.lookup(codes).float()


__all__ = [
    "GUMBEL_CLAMP",
    "GUMBEL_RANGE",
    "PADDING_CODE",
    "SEED_RANGE",
    "CodebookQuantizer",
    "FlatOutput",
    "Quantizer",
    "QuantizerOutput",
    "check_seed",
    "code_counts",
    "code_statistics",
    "commitment_losses",
    "continued_stream",
    "fp32",
    "gaussian_codebook",
    "gumbel_noise",
    "linear_fp32",
    "projections",
    "real_token_index",
    "register_training_stream",
    "scatter_tokens",
    "seeded_generator",
    "seeded_global_rng",
    "squared_distances",
    "straight_through",
    "training_streams",
    "uniform_codebook",
]
