"""Train until usage and PSNR stop improving (``plateau.enabled``): a Lightning callback that measures
the model on a fixed set of test images every ``plateau.check_every`` steps and stops training once
neither statistic has improved for ``plateau.patience`` checks. The criterion is in
:class:`simvq.runs.schemas.PlateauConfig`; the checks' history goes to ``plateau.json``."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl

from ..data import build_image_dataset
from ..runs.files import PLATEAU_FILE
from ..runs.schemas import TokenizerConfig
from .core import log_row


class PlateauStop(pl.Callback):
    def __init__(self, config: TokenizerConfig):
        self.config = config
        self.criterion = config.plateau
        self.history: list[dict] = []
        self.best_usage = self.best_psnr = -math.inf
        self.stale_checks = 0
        self.plateaued = False
        self._dataset = None

    # -- the check ----------------------------------------------------------------------------

    def measure(self, module) -> dict:
        from ..metrics.image import evaluate_reconstructions

        if self._dataset is None:
            self._dataset = build_image_dataset(self.config.data, "test", seed=self.config.trainer.seed)
        metrics, _ = evaluate_reconstructions(
            module.eval_model(),
            self._dataset,
            batch_size=self.config.eval.batch_size,
            max_images=self.criterion.eval_images,
            fid_images=0,
            device=module.device,
            progress=False,
        )
        return {name: metrics[name] for name in ("usage", "perplexity", "psnr", "ssim", "tokens")}

    def check(self, step: int, metrics: dict) -> bool:
        """Record one check; True once the plateau criterion holds."""
        criterion = self.criterion
        improved = metrics["usage"] > self.best_usage + criterion.usage_tolerance or metrics["psnr"] > self.best_psnr + criterion.psnr_tolerance
        self.stale_checks = 0 if improved else self.stale_checks + 1
        self.best_usage = max(self.best_usage, metrics["usage"])
        self.best_psnr = max(self.best_psnr, metrics["psnr"])
        self.history.append({"step": step, **metrics})
        self.plateaued = criterion.stop and self.stale_checks >= criterion.patience and step >= criterion.min_steps
        return self.plateaued

    # -- Lightning hooks ------------------------------------------------------------------------

    def on_train_start(self, trainer, module) -> None:
        if self.plateaued:  # resumed after it had already stopped: nothing left to train
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.criterion.check_every and step != trainer.max_steps:  # the last step is always measured
            return
        metrics = self.measure(module)
        log_row(module, step - 1, {"plateau/usage": metrics["usage"], "plateau/psnr": metrics["psnr"]})
        if self.check(step, metrics):
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {
            "history": json.dumps(self.history),
            "best_usage": self.best_usage,
            "best_psnr": self.best_psnr,
            "stale_checks": self.stale_checks,
            "plateaued": self.plateaued,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = json.loads(state["history"])
        self.best_usage, self.best_psnr = state["best_usage"], state["best_psnr"]
        self.stale_checks, self.plateaued = state["stale_checks"], state["plateaued"]

    def summary(self, global_step: int) -> dict:
        return {
            "plateau": self.plateaued,
            "global_step": global_step,
            "criterion": {name: getattr(self.criterion, name) for name in self.criterion.__dataclass_fields__},
            "history": self.history,
        }


def plateau_callbacks(config: TokenizerConfig) -> list[pl.Callback]:
    return [PlateauStop(config)] if config.plateau.enabled else []


__all__ = ["PLATEAU_FILE", "PlateauStop", "plateau_callbacks"]
