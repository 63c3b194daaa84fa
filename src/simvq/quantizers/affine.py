"""Affine-reparameterised codebook with synchronised update (Huh et al. 2023, "Straightening Out
the Straight-Through Estimator: Overcoming Optimization Challenges in Vector Quantized Networks";
code: minyoungg/vqtorch ``VectorQuant``).

* Affine reparameterisation: the searched codebook is ``scale * E + shift`` with one scale and
  shift per dimension, shared by all codes, so every step moves every code (also the unused ones)
  towards the encoder's distribution. Either learned (``scale = 1 + lr * s``, ``shift = lr * b``,
  ``s, b`` start at 0) or matched to running statistics of the inputs and of ``E``.
* Synchronised update: the task gradient reaching the quantized output is also applied to the
  selected codes, scaled by ``sync_nu``: ``out = z + sg(q - z) + nu * q - sg(nu * q)``.
* Alternating optimisation (option): the code vectors take their own SGD step (with momentum) on
  the codebook loss inside the forward, and the output is recomputed with the updated codes
  (vqtorch's ``inplace_optimizer``, which its example runs as SGD lr 50, momentum 0.9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    CodebookQuantizer,
    FlatOutput,
    commitment_losses,
    fp32,
    gaussian_codebook,
    straight_through,
)
from .codebook_updates import all_reduce_mean_, all_reduce_sum_
from .options import check_choice, check_float
from .registry import register_quantizer

AFFINE_MODES = ("learned", "running", "none")


@register_quantizer("affine")
class AffineVQ(CodebookQuantizer):
    """VQ with an affine-reparameterised codebook and synchronised commitment.

    Args:
        dim, codebook_size: latent dimension and number of codes.
        affine: "learned" (vqtorch's default when ``affine_lr > 0``), "running" (scale and shift
            that match the codebook's per-dim mean/variance to the inputs', from running
            statistics) or "none".
        affine_lr: learning-rate multiplier of the learned scale and shift (10.0, vqtorch README).
        affine_momentum: momentum of the running statistics (0.1, vqtorch).
        sync_nu: weight of the synchronised update (0.2, vqtorch README; 0 switches it off).
        alternating_lr: if set, the code vectors ``E`` take an in-place SGD step of this size on
            the codebook loss inside each training forward (vqtorch's example: 50). As in vqtorch
            only ``E`` steps in place; the ``codebook`` term in ``out.losses`` then reaches the
            affine parameters only (``E`` detached there), so nothing is applied twice.
        alternating_momentum: momentum of that SGD (0.9, vqtorch's example); its buffer is a
            registered buffer, so a resumed run continues the same trajectory.
        beta, init_scale, seed, channel_first, rotation_trick, chunk_size, check_finite: as in
            :class:`CodebookQuantizer`. ``beta`` weighs the commitment against a codebook term of
            weight 1 (0.25, the house convention shared by every codebook quantizer here; vqtorch
            splits ``(1 - b') * commitment + b' * codebook`` with ``b' = 0.98`` in its README, i.e.
            ``beta ~ 0.02`` here); codes start ``N(0, init_scale**2)``, default ``dim**-0.5`` (as :class:`VQ`).
    """

    # registered buffers, declared for the type checker (nn.Module.__getattr__ is typed
    # ``Tensor | Module``); the running statistics exist with ``affine="running"`` only, the
    # velocity with ``alternating_lr`` only
    stats_ready: Tensor
    input_mean: Tensor
    input_var: Tensor
    code_mean: Tensor
    code_var: Tensor
    alternating_velocity: Tensor

    def __init__(self, dim: int, codebook_size: int, *, affine: str = "learned", affine_lr: float = 10.0,
                 affine_momentum: float = 0.1, sync_nu: float = 0.2, alternating_lr: float | None = None,
                 alternating_momentum: float = 0.9, **options):
        super().__init__(dim, codebook_size, **options)
        self.affine = check_choice("affine", affine, AFFINE_MODES)
        self.affine_lr = check_float("affine_lr", affine_lr, low=0.0, low_open=True)
        self.affine_momentum = check_float("affine_momentum", affine_momentum, low=0.0, high=1.0, low_open=True)
        self.sync_nu = check_float("sync_nu", sync_nu, low=0.0)
        self.alternating_lr = check_float("alternating_lr", alternating_lr, low=0.0, low_open=True, optional=True)
        self.alternating_momentum = check_float("alternating_momentum", alternating_momentum, low=0.0, high=1.0, high_open=True)
        self.embedding = nn.Parameter(gaussian_codebook(codebook_size, dim, init_scale=self.init_scale, seed=self.seed))
        if affine == "learned":
            self.scale_param = nn.Parameter(torch.zeros(dim))
            self.shift_param = nn.Parameter(torch.zeros(dim))
        elif affine == "running":
            self.register_buffer("stats_ready", torch.tensor(False))
            self.register_buffer("input_mean", torch.zeros(dim))
            self.register_buffer("input_var", torch.ones(dim))
            self.register_buffer("code_mean", torch.zeros(dim))
            self.register_buffer("code_var", torch.ones(dim))
        if alternating_lr is not None:
            self.register_buffer("alternating_velocity", torch.zeros(codebook_size, dim))

    # -- the reparameterised codebook -----------------------------------------------------------

    def affine_params(self) -> tuple[Tensor, Tensor]:
        """Per-dimension ``(scale, shift)``, each ``(dim,)``; identity when ``affine="none"``."""
        if self.affine == "learned":
            return 1.0 + self.affine_lr * self.scale_param, self.affine_lr * self.shift_param
        if self.affine == "running":
            scale = (self.input_var / (self.code_var + 1e-8)).sqrt()
            return scale, self.input_mean - scale * self.code_mean
        ones = torch.ones(self.dim, device=self.embedding.device)
        return ones, torch.zeros_like(ones)

    def codebook(self) -> Tensor:
        scale, shift = self.affine_params()
        return self.embedding * scale + shift

    def lookup(self, codes: Tensor, *, detach_codes: bool = False) -> Tensor:
        # only the selected rows: the graph to E, scale and shift costs O(N d), not O(K d)
        scale, shift = self.affine_params()
        embedding = self.embedding.detach() if detach_codes else self.embedding
        return F.embedding(codes, embedding) * scale + shift

    @torch.no_grad()
    def _update_running_statistics(self, x: Tensor) -> None:
        """vqtorch: per-dim mean and (biased) variance of the inputs and of ``E``, EMA momentum 0.1,
        the first batch copied as is. The input moments are summed over processes."""
        x32 = x.float()
        moments = torch.stack([x32.sum(0), x32.pow(2).sum(0)])
        count = all_reduce_sum_(torch.tensor(float(x32.shape[0]), device=x.device))
        moments = all_reduce_sum_(moments) / count
        input_mean, input_var = moments[0], (moments[1] - moments[0].pow(2)).clamp_min(0.0)
        codes = self.embedding.float()
        code_mean, code_var = codes.mean(0), codes.var(0, unbiased=False)
        momentum = 1.0 - self.affine_momentum
        for buffer, value in (
            (self.input_mean, input_mean),
            (self.input_var, input_var),
            (self.code_mean, code_mean),
            (self.code_var, code_var),
        ):
            # the first batch is copied as is: a masked write, not a Python branch on the flag, so
            # a compiled graph holds no branch on data
            buffer.copy_(torch.where(self.stats_ready, buffer.mul(momentum).add(value, alpha=1.0 - momentum), value))
        self.stats_ready.fill_(True)

    # -- forward --------------------------------------------------------------------------------

    def quantize(self, x: Tensor) -> FlatOutput:
        if self.training and self.affine == "running":
            self._update_running_statistics(x)
        codes = self.search(x, checked=self.check_finite)
        if self.training and self.alternating_lr is not None:
            self._alternating_step(x, codes)
        with fp32(x.device.type):
            q = self.lookup(codes).float()
            losses = commitment_losses(x, q, beta=self.beta)
            if self.training and self.alternating_lr is not None:
                # E already stepped on this term: let it train the affine parameters only
                losses["codebook"] = F.mse_loss(self.lookup(codes, detach_codes=True).float(), x.detach().float())
            quantized = straight_through(x.float(), q, rotation_trick=self.rotation_trick)
            if self.sync_nu > 0:
                # forward value unchanged; the task gradient also reaches q, scaled by nu
                quantized = quantized + self.sync_nu * (q - q.detach())
        return FlatOutput(quantized=quantized, codes=codes, losses=losses)

    def _alternating_step(self, x: Tensor, codes: Tensor) -> None:
        """One in-place SGD-with-momentum step of the codebook loss on ``E``; the codes are kept
        (vqtorch assumes they do not change within the step, to save a search). ``.grad`` of the
        parameters is left alone, so the outer optimiser never sees this step."""
        assert self.alternating_lr is not None  # called with alternating_lr set only (for the type checker)
        with torch.enable_grad(), fp32(x.device.type):
            codebook_loss = F.mse_loss(self.lookup(codes).float(), x.detach().float())
            (grad,) = torch.autograd.grad(codebook_loss, [self.embedding])
        with torch.no_grad():
            all_reduce_mean_(grad)  # every process takes the same step
            self.alternating_velocity.mul_(self.alternating_momentum).add_(grad)
            self.embedding.sub_(self.alternating_lr * self.alternating_velocity)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, beta={self.beta}, affine={self.affine!r}, affine_lr={self.affine_lr}, "
            f"sync_nu={self.sync_nu}, alternating_lr={self.alternating_lr}"
        )
