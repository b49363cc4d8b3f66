"""Input checks shared by the smoothed-online-optimisation modules.

Every message names the parameter, the constraint and the value received.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_nonnegative",
    "check_positive",
    "check_vector",
]


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a float; ValueError unless it is finite and > 0."""
    value = _check_real(name, value)
    if not (value > 0 and np.isfinite(value)):  # also rejects NaN
        raise ValueError(f"{name} must be > 0 and finite; got {value!r}")
    return value


def check_nonnegative(name: str, value: object) -> float:
    """``value`` as a float; ValueError unless it is finite and >= 0."""
    value = _check_real(name, value)
    if not (value >= 0 and np.isfinite(value)):
        raise ValueError(f"{name} must be >= 0 and finite; got {value!r}")
    return value


def check_vector(name: str, x: object, dim: int | None = None) -> np.ndarray:
    """``x`` as a finite float64 vector, of length ``dim`` when given.

    A scalar is read as a vector of length 1.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be an array of real numbers; got {type(x).__name__}"
        ) from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} must have shape ({dim},); got {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name} must be finite; got {float(arr[bad[0]])!r} at index {int(bad[0])}"
        )
    return arr.copy()
