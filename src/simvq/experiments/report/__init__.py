"""``simvq report`` for the image benchmark, in one module per job: ``aggregate`` (rows -> seed
groups), ``tables`` (the opening method x K table and the others), ``findings`` (sentences computed
from the numbers), ``references`` (the untrained-Gaussian statistics at each run's own K and token
count), ``figures`` (PNGs) and ``page`` (the generated block of docs/results.md). Every verdict is
Welch's t-test over seeds (``simvq.experiments.stats``)."""

from .aggregate import Group, Stat, aggregate, main_groups, method_key, method_order, number, summarize
from .findings import findings
from .page import BEGIN, END, splice, write_report
from .tables import MISSING, fmt, k_label, odd_codebooks, span, stat_text, table_rows, whole

__all__ = ["BEGIN", "END", "MISSING", "Group", "Stat", "aggregate", "findings", "fmt", "k_label", "main_groups", "method_key",
           "method_order", "number", "odd_codebooks", "span", "splice", "stat_text", "summarize", "table_rows", "whole", "write_report"]
