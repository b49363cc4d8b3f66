"""Checks of hyperparameters: each error names the parameter, the constraint
and the value received."""

from __future__ import annotations

import numbers

__all__ = ["check_choice", "check_int", "check_real"]


def check_int(name: str, value, *, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; TypeError for non-integers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}; got {value!r}")
    return int(value)


def check_real(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float in the interval given by ``low``/``high`` (closed
    unless ``low_open``/``high_open``); rejects NaN and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    lower = ">" if low_open else ">="
    upper = "<" if high_open else "<="
    if low is not None and not (value > low if low_open else value >= low):
        raise ValueError(f"{name} must be {lower} {low}; got {value!r}")
    if high is not None and not (value < high if high_open else value <= high):
        raise ValueError(f"{name} must be {upper} {high}; got {value!r}")
    if value != value:  # NaN with no bound given
        raise ValueError(f"{name} must not be NaN; got {value!r}")
    return value


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value
