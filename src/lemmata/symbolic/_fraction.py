r"""Vectorised evaluation of truncated analytic continued fractions.

A depth-:math:`d` model has :math:`K = 2d + 1` linear terms
:math:`h_k(x) = \beta_k + \sum_j \alpha_{kj} x_j` and reads

.. math::

    f(x) = h_0(x) + \cfrac{h_1(x)}{h_2(x) + \cfrac{h_3(x)}{h_4(x) + \cdots
           + \cfrac{h_{2d-1}(x)}{h_{2d}(x)}}}

It is evaluated bottom-up: :math:`t_d = h_{2d}`,
:math:`t_k = h_{2k} + h_{2k+1} / t_{k+1}` for :math:`k = d-1, \dots, 1`, and
:math:`f = h_0 + h_1 / t_1` (:math:`f = h_0` when :math:`d = 0`).

Inside this package a population of :math:`P` candidates is one array ``W`` of
shape ``(P, K, q)`` with ``q = n_features + 1``: ``W[..., 0]`` holds the
:math:`\beta_k` and ``W[..., 1:]`` the :math:`\alpha_{kj}`. The rows of the data
carry a leading column of ones (``Xa``), so every term of every candidate on
every row is one matrix product, and the recursion loops over the depth only,
never over rows or candidates.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "design",
    "evaluate_continued_fraction",
    "format_continued_fraction",
    "forward",
    "forward_with_gradient",
    "to_sympy",
]


def design(X: np.ndarray) -> np.ndarray:
    """``[1, X]``: the rows with a leading column of ones, shape ``(n, p + 1)``."""
    return np.hstack([np.ones((X.shape[0], 1)), X])


def _terms(W: np.ndarray, Xa: np.ndarray) -> np.ndarray:
    """All linear terms: ``H[..., k, i] = h_k(x_i)``, shape ``(..., K, n)``.

    ``Xa`` is ``(n, q)`` (shared rows) or ``(B, n, q)`` (rows per candidate).
    """
    return np.matmul(W, np.swapaxes(Xa, -1, -2))


def _safe(t: np.ndarray, pole_tol: float) -> np.ndarray:
    """``t`` with entries of modulus below ``pole_tol`` moved to ``±pole_tol``."""
    small = np.abs(t) < pole_tol
    if not small.any():
        return t
    return np.where(small, np.where(t < 0, -pole_tol, pole_tol), t)


def forward(
    H: np.ndarray, pole_tol: float
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Evaluate the fraction from its terms ``H`` of shape ``(..., K, n)``.

    Returns the values ``(..., n)``, the denominators ``[t_1, ..., t_d]`` (after
    the safe division guard) and the smallest raw ``|t_k|`` per candidate
    ``(...)`` (``inf`` when ``d = 0``). Divisions use the guarded denominators,
    so the values are finite whenever the terms are.
    """
    depth = (H.shape[-2] - 1) // 2
    smallest = np.full(H.shape[:-2], np.inf)
    if depth == 0:
        return H[..., 0, :].copy(), [], smallest

    dens: list[np.ndarray] = [np.empty(0)] * depth
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        t = H[..., 2 * depth, :]
        for k in range(depth, 0, -1):
            if k < depth:
                t = H[..., 2 * k, :] + H[..., 2 * k + 1, :] / t
            smallest = np.minimum(smallest, np.abs(t).min(axis=-1))
            t = _safe(t, pole_tol)
            dens[k - 1] = t
        values = H[..., 0, :] + H[..., 1, :] / t
    return values, dens, smallest


def forward_with_gradient(
    H: np.ndarray, pole_tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Values, :math:`\partial f / \partial h_k` and the smallest :math:`|t_k|`.

    The reverse pass of the recursion: with :math:`a = \partial f/\partial t_1
    = -h_1 / t_1^2`, each level gives :math:`\partial f/\partial h_{2k} = a`,
    :math:`\partial f/\partial h_{2k+1} = a / t_{k+1}` and
    :math:`a \leftarrow -a\, h_{2k+1} / t_{k+1}^2`.

    Returns ``values (..., n)``, ``G (..., K, n)`` and ``smallest (...)``.
    """
    values, dens, smallest = forward(H, pole_tol)
    G = np.zeros_like(H)
    G[..., 0, :] = 1.0
    depth = len(dens)
    if depth == 0:
        return values, G, smallest

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        G[..., 1, :] = 1.0 / dens[0]
        a = -H[..., 1, :] / dens[0] ** 2
        for k in range(1, depth):
            t_next = dens[k]
            G[..., 2 * k, :] = a
            G[..., 2 * k + 1, :] = a / t_next
            a = -a * H[..., 2 * k + 1, :] / t_next**2
        G[..., 2 * depth, :] = a
    return values, G, smallest


def evaluate_continued_fraction(
    intercept: np.ndarray,
    coef: np.ndarray,
    X: np.ndarray,
    *,
    pole_tol: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Evaluate a population of continued fractions on all rows at once.

    .. math::

        f_p(x_i) = h_{p,0}(x_i) + \cfrac{h_{p,1}(x_i)}{h_{p,2}(x_i)
                   + \cfrac{h_{p,3}(x_i)}{\ddots + \cfrac{h_{p,2d-1}(x_i)}
                   {h_{p,2d}(x_i)}}},
        \qquad h_{p,k}(x) = \beta_{p,k} + \sum_j \alpha_{p,kj} x_j

    :math:`\beta` is ``intercept``, :math:`\alpha` is ``coef``, :math:`x_i` is
    row ``i`` of ``X`` and :math:`p` indexes the leading (population) axes.

    Parameters
    ----------
    intercept : array-like of shape (..., K)
        :math:`\beta_k` of each term; ``K = 2 * depth + 1`` must be odd.
    coef : array-like of shape (..., K, n_features)
        :math:`\alpha_{kj}`; the leading axes match ``intercept``.
    X : array-like of shape (n_samples, n_features)
        Rows to evaluate.
    pole_tol : float, default=1e-8
        Safe division: a denominator :math:`t` with :math:`|t| <` ``pole_tol``
        is replaced by :math:`\operatorname{sign}(t)\cdot` ``pole_tol``, so the
        values stay finite near poles.

    Returns
    -------
    values : ndarray of shape (..., n_samples)
        :math:`f_p(x_i)`.
    min_abs_denominator : ndarray of shape (...)
        :math:`\min_{i,k} |t_{p,k}(x_i)|` before the guard; values below
        ``pole_tol`` mean a pole was hit (``inf`` for depth 0).
    """
    intercept = np.asarray(intercept, dtype=float)
    coef = np.asarray(coef, dtype=float)
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-dimensional; got shape {X.shape}")
    if coef.shape[:-1] != intercept.shape or coef.shape[-1] != X.shape[1]:
        raise ValueError(
            "coef must have shape intercept.shape + (n_features,) = "
            f"{(*intercept.shape, X.shape[1])}; got {coef.shape}"
        )
    if intercept.ndim == 0 or intercept.shape[-1] % 2 != 1:
        raise ValueError(
            f"intercept must have an odd number of terms 2*depth+1 on its last "
            f"axis; got shape {intercept.shape}"
        )
    if not pole_tol >= 0:
        raise ValueError(f"pole_tol must be >= 0; got {pole_tol!r}")

    W = np.concatenate([intercept[..., None], coef], axis=-1)
    values, _, smallest = forward(_terms(W, design(X)), pole_tol)
    return values, smallest


def _linear_text(beta: float, alpha: np.ndarray, names: list[str], fmt: str) -> str:
    parts = [format(beta, fmt)]
    for j in np.flatnonzero(alpha):
        value = float(alpha[j])
        sign = "-" if value < 0 else "+"
        parts.append(f"{sign} {format(abs(value), fmt)}*{names[j]}")
    return " ".join(parts)


def format_continued_fraction(
    intercept: np.ndarray,
    coef: np.ndarray,
    names: list[str],
    *,
    precision: int = 4,
) -> str:
    """The fraction as one line of infix text, terms with zero coefficients left out.

    ``intercept`` is ``(K,)`` and ``coef`` ``(K, n_features)``; ``names`` labels
    the features and numbers keep ``precision`` significant digits.
    """
    fmt = f".{precision}g"
    K = intercept.shape[0]
    texts = [_linear_text(intercept[k], coef[k], names, fmt) for k in range(K)]
    depth = (K - 1) // 2
    if depth == 0:
        return texts[0]

    inner = texts[2 * depth]
    for k in range(depth - 1, 0, -1):
        inner = f"{texts[2 * k]} + ({texts[2 * k + 1]}) / ({inner})"
    return f"{texts[0]} + ({texts[1]}) / ({inner})"


def to_sympy(intercept: np.ndarray, coef: np.ndarray, names: list[str]):
    """The fraction as a sympy expression (sympy is imported here, on demand)."""
    try:
        import sympy
    except ImportError as exc:
        raise ImportError(
            "to_sympy needs sympy, which is not installed: pip install sympy"
        ) from exc

    symbols = [sympy.Symbol(name) for name in names]

    def term(k: int):
        expr = sympy.Float(float(intercept[k]))
        for j in np.flatnonzero(coef[k]):
            expr += sympy.Float(float(coef[k, j])) * symbols[j]
        return expr

    depth = (intercept.shape[0] - 1) // 2
    if depth == 0:
        return term(0)
    inner = term(2 * depth)
    for k in range(depth - 1, 0, -1):
        inner = term(2 * k) + term(2 * k + 1) / inner
    return term(0) + term(1) / inner
