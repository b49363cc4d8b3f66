"""Argument checks shared by the :mod:`lemmata.nn` modules; each error names the
parameter, the constraint and the value received."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_finite", "check_int", "check_shape"]


def check_int(name: str, value, *, low: int) -> int:
    """``value`` as an int that is ``>= low``; TypeError for non-integers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return int(value)


def check_finite(name: str, value, *, low: float | None = None) -> float:
    """``value`` as a finite float, optionally ``> low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if low is not None and not value > low:
        raise ValueError(f"{name} must be > {low}; got {value!r}")
    return value


def check_shape(name: str, shape, expected: tuple) -> None:
    """Raise unless ``shape`` matches ``expected``.

    An int in ``expected`` is a required size; a str is a free size, shown by
    that label in the message (``"x must have shape (batch, tokens, 5); got
    (8, 21, 4)"``).
    """
    shape = tuple(shape)
    ok = len(shape) == len(expected) and all(
        isinstance(e, str) or s == e for s, e in zip(shape, expected, strict=False)
    )
    if not ok:
        wanted = ", ".join(str(e) for e in expected)
        raise ValueError(f"{name} must have shape ({wanted}); got {shape}")
