"""Metrics. ``CodebookUsage`` and the coverage statistics depend on torch only; image/audio metrics
import their libraries lazily."""

from .coverage import chao1, coverage_summary, entropy_bits, gaussian_reference_usage, sample_coverage, usage_at
from .usage import CodebookUsage, usage_statistics

__all__ = ["CodebookUsage", "chao1", "coverage_summary", "entropy_bits", "gaussian_reference_usage", "sample_coverage", "usage_at", "usage_statistics"]
