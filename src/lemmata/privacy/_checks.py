"""Input checks shared by the privacy package."""

from __future__ import annotations

import numbers

__all__ = ["check_delta", "check_epsilon", "check_int", "check_positive"]


def check_positive(name: str, value) -> float:
    """``value`` as a float; raise unless it is a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return float(value)


def check_epsilon(epsilon) -> float:
    """The privacy parameter epsilon, a finite real > 0."""
    eps = check_positive("epsilon", epsilon)
    if eps == float("inf"):
        raise ValueError(f"epsilon must be finite; got {epsilon!r}")
    return eps


def check_delta(delta) -> float:
    """The privacy parameter delta, a real in the open interval (0, 1)."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise TypeError(f"delta must be a real number; got {type(delta).__name__}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1); got {delta!r}")
    return float(delta)


def check_int(name: str, value, low: int) -> int:
    """``value`` as an int; raise unless it is an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return int(value)
