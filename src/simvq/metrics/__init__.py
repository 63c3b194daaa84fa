"""Metrics. ``CodebookUsage`` depends on torch only; image/audio metrics import their libraries lazily."""

from .usage import CodebookUsage

__all__ = ["CodebookUsage"]
