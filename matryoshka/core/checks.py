"""Checks of parameter values by type: booleans are not numbers and strings are not flags, refused by name."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import InputError


def is_int(v) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def integer(name: str, v, low: int = 1, high: int | None = None, optional: bool = False):
    """`v` as given when it is an integer in [low, high] (or None when `optional`), else an InputError."""
    if v is None and optional:
        return v
    if not is_int(v) or v < low or (high is not None and v > high):
        kind = "a positive integer" if low == 1 and high is None else \
            f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"
        raise InputError(f"{name} must be {kind}{' or None' if optional else ''}; got {v!r}")
    return int(v)  # numpy's as a Python int: faiss and JSON take no numpy scalars


def number(name: str, v, low: float, high: float = float("inf"), *, low_open: bool = False,
           optional: bool = False):
    """`v` as a float when it is a finite real number in the range (low excluded when `low_open`), else an
    InputError (NaN, the infinities, and an integer too large for a float, included)."""
    if v is None and optional:
        return v
    try:
        f = float(v) if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) else None
    except OverflowError:  # an int past 1.8e308
        f = None
    if f is None or not math.isfinite(f) or not ((f > low if low_open else f >= low) and f <= high):
        span = f"in ({low}, {high}]" if low_open and high != float("inf") else f"> {low}" if low_open else \
            f"in [{low}, {high}]" if high != float("inf") else f">= {low}"
        raise InputError(f"{name} must be a finite number {span}{' or None' if optional else ''}; got {v!r}")
    return f


def flag(name: str, v, optional: bool = False):
    """`v` when it is True or False (or None when `optional`), else an InputError."""
    if (v is None and optional) or isinstance(v, (bool, np.bool_)):
        return v if v is None else bool(v)
    raise InputError(f"{name} must be True or False{' or None' if optional else ''}; got {v!r}")
