"""The setup every evaluation loop over a data set shares (images and speech alike)."""

from __future__ import annotations

import torch


def prepare_evaluation(model, device, size: int, limit: int | None) -> tuple[torch.device, bool, int]:
    """Put ``model`` in eval mode on ``device`` (default: where its parameters are) and count the
    items to evaluate, the first ``limit`` of ``size`` (all without a limit).

    Returns ``(device, was_training, count)``; the caller restores ``model.train(was_training)``.
    Refuses an empty set: every metric would be a division by zero."""
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval().to(device)
    count = size if limit is None else min(limit, size)
    if count < 1:
        raise ValueError("the evaluation set is empty")
    return device, was_training, count
