"""Residual quantization (Zeghidour et al. 2021, SoundStream; Lee et al. 2022, RQ-VAE).

Stage ``i`` quantizes what the stages before it left over, ``r_i = x - sum_{j<i} q_j``, and the
output is the sum of the stages, so each stage refines the previous ones' error. Codes have one
entry per stage: ``(..., num_quantizers)``.

``residual``: any registered quantizer as the stage (``inner="vq"`` by default).
``residual_simvq``: SimVQ stages that share ONE frozen basis ``C`` and learn a ``W`` per stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import Tensor, nn

from .base import FlatOutput, Quantizer, check_seed
from .options import check_int
from .registry import build_quantizer, register_quantizer


@register_quantizer("residual")
class ResidualQuantizer(Quantizer):
    """Residual quantizer over ``num_quantizers`` stages of the registered quantizer ``inner``.

    Args:
        dim, codebook_size: per stage (the built ``codebook_size`` is the stages', e.g. FSQ's prod(levels)).
        num_quantizers: number of stages.
        inner: registry name of the stage quantizer ("vq", "simvq", "fsq", ...).
        seed: as in :class:`Quantizer`; stage ``i`` gets ``seed + i`` so stages do not start as
            copies of each other.
        channel_first, check_finite: as in :class:`Quantizer`, the wrapper's (stages see flat,
            checked residuals).
        **options: any other option is passed to every stage (``beta``, ``rotation_trick``,
            ``init_scale``, ...), which checks it.

    Gradient: as in SoundStream/EnCodec the residual is not detached, so with straight-through
    stages the task gradient reaches the input exactly once (through stage 0), not once per stage.
    Losses: the stages' terms, summed name by name over the stages.
    """

    code_ndim = 1
    passes_options_on = True

    def __init__(self, dim: int, codebook_size: int, *, num_quantizers: int = 4, inner: str = "vq", **options):
        num_quantizers = check_int("num_quantizers", num_quantizers, minimum=1)
        if inner in ("residual", "residual_simvq"):
            raise ValueError(f"inner must be a single-stage quantizer, got {inner!r}")
        # the wrapper owns layout and input checks: stages see flat (N, dim) residuals, checked once
        layout = {name: options.pop(name) for name in ("channel_first", "check_finite") if name in options}
        seed = check_seed(options.pop("seed", None), count=num_quantizers)  # stage i draws from seed + i
        stages = [self._build_stage(inner, dim, codebook_size, seed, stage, options) for stage in range(num_quantizers)]
        super().__init__(dim, stages[0].codebook_size, seed=seed, **layout)
        self.inner = inner
        self.num_quantizers = num_quantizers
        self.stages = nn.ModuleList(stages)

    @staticmethod
    def _build_stage(inner: str, dim: int, codebook_size: int, seed: int | None, stage: int, options: dict) -> Quantizer:
        # a seed becomes seed + stage, so stages do not start as copies of each other
        stage_seed = {} if seed is None else {"seed": seed + stage}
        quantizer = build_quantizer(inner, dim=dim, codebook_size=codebook_size, check_finite=False, **stage_seed, **options)
        if quantizer.code_ndim != 0:
            raise ValueError(f"inner quantizer {inner!r} must produce one code per vector")
        return quantizer

    def _stages(self) -> Iterable[Quantizer]:
        """``self.stages``, as what it holds (the ModuleList is typed as holding Modules)."""
        return cast("Iterable[Quantizer]", self.stages)

    def quantize(self, x: Tensor) -> FlatOutput:
        residual = x
        quantized: Tensor | int = 0
        codes: list[Tensor] = []
        losses: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        for index, stage in enumerate(self._stages()):
            out = stage.quantize(residual)
            metrics[f"residual_rms_{index}"] = residual.detach().float().pow(2).mean().sqrt()
            residual = residual - out.quantized
            quantized = quantized + out.quantized
            codes.append(out.codes)
            for name, value in out.losses.items():
                losses[name] = losses[name] + value if name in losses else value
        metrics[f"residual_rms_{len(self.stages)}"] = residual.detach().float().pow(2).mean().sqrt()
        # a tensor: there is at least one stage (num_quantizers >= 1)
        quantized = cast(Tensor, quantized)
        return FlatOutput(quantized=quantized, codes=torch.stack(codes, dim=-1), losses=losses, metrics=metrics)

    def encode_flat(self, x: Tensor) -> Tensor:
        residual = x.float()
        codes = []
        for stage in self._stages():
            stage_codes = stage.encode_flat(residual)
            residual = residual - stage.decode_flat(stage_codes)
            codes.append(stage_codes)
        return torch.stack(codes, dim=-1)

    def decode_flat(self, codes: Tensor) -> Tensor:
        if codes.shape[-1] != self.num_quantizers:
            raise ValueError(
                f"codes must have shape (..., num_quantizers={self.num_quantizers}), got {tuple(codes.shape)}"
            )
        # a tensor: there is at least one stage (num_quantizers >= 1)
        return cast(Tensor, sum(stage.decode_flat(codes[:, index]) for index, stage in enumerate(self._stages())))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_quantizers={self.num_quantizers}, inner={self.inner!r}"


@register_quantizer("residual_simvq")
class ResidualSimVQ(ResidualQuantizer):
    """Residual SimVQ: every stage is ``W_i(C)`` with the SAME frozen basis ``C``.

    One ``C`` keeps memory at one ``(K, dim)`` table however many stages there are; a ``W`` per
    stage (rather than one shared ``W``) lets each stage scale and rotate the codebook to the
    shrinking residual: with a shared ``W`` all stages would search the same codebook, which fits
    the first residual's scale and not the later, smaller ones.
    Options are SimVQ's (``seed``, ``bias``, ``init``, ``rotation_trick``, ...).
    """

    excluded_options = ("inner", "init_scale")  # always simvq stages, whose basis has no init_scale

    def __init__(self, dim: int, codebook_size: int, *, num_quantizers: int = 4, **options):
        if "inner" in options:
            raise ValueError("residual_simvq always uses simvq stages; use 'residual' with inner=... for others")
        if options.get("train_codebook"):
            raise ValueError("residual_simvq shares one frozen basis C; train_codebook=True is not supported")
        super().__init__(dim, codebook_size, num_quantizers=num_quantizers, inner="simvq", **options)
        self._tie_basis()

    def _tie_basis(self) -> None:
        shared = self.stages[0].basis
        for stage in self.stages[1:]:
            stage.basis = shared  # same tensor object: one C in memory

    @property
    def basis(self) -> Tensor:
        # the stages are SimVQs, whose ``basis`` is a tensor
        return cast(Tensor, self.stages[0].basis)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.half() convert each stage's buffer separately; tie them back to one tensor
        result = super()._apply(fn, *args, **kwargs)
        self._tie_basis()
        return result


__all__ = ["ResidualQuantizer", "ResidualSimVQ"]
