"""The prior's validation: held-out training grids, their NLL every ``validation.every`` steps, the
best weights kept (``best.safetensors``), and the early stop once the NLL stops improving
(``simvq.runs.prior.PriorValidationConfig``). ``validation.json`` records every check, the best step
and why training stopped; ``validation_nll.png`` draws the curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import torch

from ...runs import save_weights
from ...runs.prior import PriorConfig
from ...utils import write_json
from .. import core

BEST_FILE = "best.safetensors"
VALIDATION_FILE = "validation.json"
CURVE_FILE = "validation_nll.png"


def hold_out(codes: torch.Tensor, labels: torch.Tensor, count: int, *, seed: int):
    """``(train codes, train labels, held-out codes, held-out labels)``: ``count`` grids chosen by a
    permutation seeded with ``seed`` alone (not the run's seed), so every prior on the same data set
    is validated on the same grids."""
    if not 0 <= count < codes.shape[0]:
        raise ValueError(f"validation.images must lie in [0, {codes.shape[0] - 1}] (the training grids), got {count}")
    order = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(seed))
    held, kept = order[:count].sort().values, order[count:].sort().values
    return codes[kept], labels[kept], codes[held], labels[held]


class ValidationNLL(pl.Callback):
    """Every ``validation.every`` steps and at the last step: the held-out NLL (bits per token) of the
    model the run exports (its EMA copy when there is one); an improvement by more than ``min_delta``
    saves the weights to ``best.safetensors``; ``patience`` checks in a row without one stop training."""

    def __init__(self, config: PriorConfig, codes: torch.Tensor, labels: torch.Tensor | None, run_dir: Path):
        self.criterion, self.codes, self.labels, self.run_dir = config.validation, codes, labels, run_dir
        self.history: list[dict] = []
        self.best_nll, self.best_step, self.stale = math.inf, 0, 0
        self.stopped_early = False

    def on_train_start(self, trainer, module) -> None:
        if self.stopped_early:  # resumed after the early stop: nothing left to train
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.criterion.every and step != trainer.max_steps:
            return
        model = module.eval_model()
        was_training = model.training
        model.eval()
        nll = model.mean_nll(self.codes, self.labels) / math.log(2)
        model.train(was_training)
        self.history.append({"step": step, "nll_bits_per_token": nll})
        core.log_row(module, step - 1, {"val/nll_bits_per_token": torch.tensor(nll)})
        if nll < self.best_nll - self.criterion.min_delta:
            self.best_nll, self.best_step, self.stale = nll, step, 0
            if trainer.is_global_zero:
                save_weights(model, self.run_dir / BEST_FILE)
        else:
            self.stale += 1
        if self.criterion.patience and self.stale >= self.criterion.patience:
            self.stopped_early = trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"history": json.dumps(self.history), "best_nll": self.best_nll, "best_step": self.best_step,
                "stale": self.stale, "stopped_early": self.stopped_early}

    def load_state_dict(self, state: dict) -> None:
        self.history = json.loads(state["history"])
        self.best_nll, self.best_step, self.stale = state["best_nll"], state["best_step"], state["stale"]
        self.stopped_early = state["stopped_early"]

    def summary(self, global_step: int, max_steps: int) -> dict:
        c = self.criterion
        reason = (f"early stop at step {global_step}: {c.patience} checks in a row without a gain of more than {c.min_delta} bits/token"
                  if self.stopped_early else f"budget: trained all {max_steps} steps")
        return {"best_step": self.best_step, "best_nll_bits_per_token": self.best_nll, "stop_reason": reason,
                "stopped_early": self.stopped_early, "global_step": global_step, "held_out_images": int(self.codes.shape[0]),
                "criterion": {"every": c.every, "patience": c.patience, "min_delta": c.min_delta, "seed": c.seed},
                "history": self.history}


def finish(callback: ValidationNLL, run_dir: Path, global_step: int, max_steps: int) -> dict:
    """``validation.json`` and the curve (rank 0); the run's exported weights become the best ones."""
    summary = callback.summary(global_step, max_steps)
    write_json(run_dir / VALIDATION_FILE, summary, indent=1)
    nll_curve(summary, run_dir / CURVE_FILE)
    return summary


def nll_curve(summary: dict, path: Path) -> None:
    from ...utils import pyplot, save_figure

    figure, axis = pyplot().subplots(figsize=(6, 3.6))
    steps = [p["step"] for p in summary["history"]]
    axis.plot(steps, [p["nll_bits_per_token"] for p in summary["history"]], marker=".", label="held-out NLL")
    axis.axvline(summary["best_step"], color="gray", linestyle="--", linewidth=1, label=f"best (step {summary['best_step']})")
    axis.set_xlabel("training step")
    axis.set_ylabel("NLL (bits per token)")
    axis.set_title(summary["stop_reason"], fontsize=8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)


__all__ = ["BEST_FILE", "CURVE_FILE", "VALIDATION_FILE", "ValidationNLL", "finish", "hold_out", "nll_curve"]
