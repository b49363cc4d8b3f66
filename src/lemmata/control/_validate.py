"""Input checks shared by :mod:`lemmata.control`: coerce once, fail with the value."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "check_index",
    "check_int",
    "check_matrix",
    "check_nonnegative",
    "check_positive",
    "check_probability",
    "check_rng",
]


def check_matrix(
    name: str,
    value: object,
    *,
    rows: int | None = None,
    cols: int | None = None,
    square: bool = False,
    against: str | None = None,
) -> np.ndarray:
    """``value`` as a finite float64 matrix of the expected shape.

    ``against`` names the matrix the expected shape comes from, so that a
    mismatch reads ``B must have shape (3, 1) to match A; got (2, 1)``.
    """
    try:
        matrix = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a real matrix; got {type(value).__name__}"
        ) from None
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D; got shape {matrix.shape}")
    if square and matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be square; got shape {matrix.shape}")
    expected = (
        rows if rows is not None else matrix.shape[0],
        cols if cols is not None else matrix.shape[1],
    )
    if matrix.shape != expected:
        where = f" to match {against}" if against else ""
        raise ValueError(
            f"{name} must have shape {expected}{where}; got {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} must be finite; got non-finite entries")
    return matrix


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """A finite float > 0."""
    value = _check_real(name, value)
    if not value > 0 or not math.isfinite(value):  # also rejects NaN
        raise ValueError(f"{name} must be > 0 and finite; got {value!r}")
    return value


def check_nonnegative(name: str, value: object) -> float:
    """A finite float >= 0."""
    value = _check_real(name, value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be >= 0 and finite; got {value!r}")
    return value


def check_probability(name: str, value: object) -> float:
    """A float in the open interval (0, 1)."""
    value = _check_real(name, value)
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1); got {value!r}")
    return value


def check_int(name: str, value: object, minimum: int) -> int:
    """An int >= ``minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return int(value)


def check_index(name: str, value: object, size: int) -> int:
    """An index into a set of ``size`` candidates."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if not 0 <= value < size:
        raise ValueError(
            f"{name} must be in [0, {size - 1}] for a set of {size} candidates; "
            f"got {value!r}"
        )
    return int(value)


def check_rng(rng: object) -> np.random.Generator:
    """A numpy Generator (library code never seeds global state)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator; got {type(rng).__name__}"
        )
    return rng
