"""Checks of quantizer options, one line per option in each constructor.

Each helper returns the value (converted where that loses nothing, e.g. ``16.0`` is not accepted as
an integer but ``numpy.int64(16)`` is) or raises a ValueError/TypeError that names the option and
says what was expected, so a wrong type fails at construction, not steps later inside a matmul.
Strings are never accepted for numbers or booleans: ``rotation_trick='no'`` would otherwise be
truthy, and ``beta='0.25'`` would fail far from where it was given (a YAML/CLI layer parses text).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Literal, overload

# Refuse a codebook table that could not fit in this machine's memory before allocating it
# (``codebook_size=2**31`` at dim 8 asked for 68 GB and only then failed, or swapped).
_FLOAT32_BYTES = 4


def is_integer_at_least(value, minimum: int) -> bool:
    """A Python ``int`` (``True`` is not a count) no smaller than ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# The checks below return ``X | None`` only when asked to accept ``None`` (``optional=True``): the
# overloads tell a type checker so, and a validated option is then typed ``int``/``float``.
@overload
def check_decay(name: str, value: Any, *, allow_none: Literal[False] = False) -> float: ...
@overload
def check_decay(name: str, value: Any, *, allow_none: bool) -> float | None: ...
def check_decay(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """An EMA decay must lie strictly between 0 and 1 (0 keeps no history, 1 never moves)."""
    return check_float(name, value, low=0.0, high=1.0, low_open=True, high_open=True, optional=allow_none)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


@overload
def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None, optional: Literal[False] = False
) -> int: ...
@overload
def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None, optional: bool
) -> int | None: ...
def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None, optional: bool = False
) -> int | None:
    """An integer in ``[minimum, maximum]`` (either end unbounded when ``None``)."""
    if value is None and optional:
        return None
    _check_type(name, value, numbers.Integral, "an integer", optional)
    value = int(value)
    if maximum is not None and (value > maximum or (minimum is not None and value < minimum)):
        raise ValueError(f"{name} must be an integer in [{'-inf' if minimum is None else minimum}, {maximum}], got {value}")
    if minimum is not None and value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


@overload
def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: Literal[False] = False,
    why: str | None = None,
) -> float: ...
@overload
def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool,
    why: str | None = None,
) -> float | None: ...
def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    why: str | None = None,
) -> float | None:
    """A finite real number in ``[low, high]`` (either end open with ``*_open``); ``why`` (the
    reason for a bound that is not obvious) ends the message of a value outside."""
    if value is None and optional:
        return None
    _check_type(name, value, numbers.Real, "a number", optional)
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{left}, {right}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}" + (f"; {why}" if why else ""))
    return value


# Options that divide (temperatures, variances): the quantizers compute in float32, whose largest
# value is 3.4e38 ~ 2**128. A quotient is kept below QUOTIENT_LIMIT, half of that: headroom for a
# sum or difference of two such terms (a softmax subtracts its row's maximum) and for rounding the
# option itself to float32.
QUOTIENT_LIMIT = 2.0**127
# What an option divides is either bounded by the quantizer (Gumbel-perturbed log-probabilities,
# cosine similarities: the lower bound is then exact) or scales with the data (latents, squared
# distances), which no constructor knows. Those get half of float32's exponent range, magnitudes up
# to DATA_LIMIT = 2**64 = 1.8e19 (more than any input value a quantizer accepts, 5.8e17 at dim 1),
# and the option's reciprocal the other half: such an option may be as small as 2**64 / 2**127.
DATA_LIMIT = 2.0**64


@overload
def check_divisor(
    name: str, value: Any, *, dividend: float, divides: str, optional: Literal[False] = False
) -> float: ...
@overload
def check_divisor(name: str, value: Any, *, dividend: float, divides: str, optional: bool) -> float | None: ...
def check_divisor(name: str, value: Any, *, dividend: float, divides: str, optional: bool = False) -> float | None:
    """A number by which the quantizer divides ``divides``, quantities up to ``dividend`` in
    magnitude: at least ``dividend / QUOTIENT_LIMIT``, so that every quotient stays a float32 number
    (a positive but tiny temperature or variance gave NaN in the forward, with no error)."""
    low = dividend / QUOTIENT_LIMIT
    why = (
        f"{name} divides {divides}, up to {dividend:.4g} in magnitude, and the quotient must stay below 2**127 "
        f"in float32: {name} >= {dividend:.4g} / 2**127 = {low:.4g}"
    )
    return check_float(name, value, low=low, optional=optional, why=why)


def _check_type(name: str, value, kind: type, noun: str, optional: bool) -> None:
    # bool is an Integral (and a Real), but True is not a count or a weight
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = noun + (" or None" if optional else "")
        raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")


def check_choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_table_fits(name: str, rows: int, columns: int) -> None:
    """Refuse a ``(rows, columns)`` float32 table larger than this machine's physical memory."""
    memory = _physical_memory()
    needed = rows * columns * _FLOAT32_BYTES
    if memory is not None and needed > memory:
        raise ValueError(
            f"{name}={rows} needs a {rows} x {columns} float32 table of {needed / 2**30:.1f} GiB, more than "
            f"this machine's {memory / 2**30:.1f} GiB of memory"
        )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not a POSIX system: no check
        return None


__all__ = [
    "DATA_LIMIT",
    "QUOTIENT_LIMIT",
    "check_bool",
    "check_choice",
    "check_decay",
    "check_divisor",
    "check_float",
    "check_int",
    "check_table_fits",
    "is_integer_at_least",
]
