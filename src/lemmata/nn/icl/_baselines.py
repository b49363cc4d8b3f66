r"""Closed-form in-context predictors to compare trained models with (numpy).

All functions are batched over prompts: context inputs have shape
(batch, n, d), context targets (batch, n), queries (batch, d).
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np

from lemmata.nn._checks import check_finite, check_int

__all__ = [
    "fit_preconditioner",
    "kernel_ridge_predict",
    "least_squares_predict",
    "polynomial_features",
    "preconditioned_gd_predict",
]


def _arrays(x_context, y_context, x_query):
    xc = np.asarray(x_context, dtype=float)
    yc = np.asarray(y_context, dtype=float)
    xq = np.asarray(x_query, dtype=float)
    if xc.ndim != 3:
        raise ValueError(f"x_context must have shape (batch, n, d); got {xc.shape}")
    batch, n, d = xc.shape
    if n < 1:
        raise ValueError(f"prompt length n must be >= 1; got {n}")
    if yc.shape != (batch, n):
        raise ValueError(f"y_context must have shape ({batch}, {n}); got {yc.shape}")
    if xq.shape != (batch, d):
        raise ValueError(f"x_query must have shape ({batch}, {d}); got {xq.shape}")
    return xc, yc, xq


def polynomial_features(x, degree: int, *, constant: bool = True) -> np.ndarray:
    r"""All monomials of degree 1 to ``degree`` (and 1 if ``constant``).

    For degree 2 and :math:`d` inputs:
    :math:`\phi(x) = [1, x_1, \ldots, x_d, x_1^2, x_1 x_2, \ldots, x_d^2]`,
    of size :math:`1 + d + d(d+1)/2`.

    Parameters
    ----------
    x : array_like of shape (..., d)
    degree : int
        Highest degree, >= 1.
    constant : bool, default=True

    Returns
    -------
    ndarray of shape (..., D)
    """
    x = np.asarray(x, dtype=float)
    degree = check_int("degree", degree, low=1)
    d = x.shape[-1]
    columns = [np.ones(x.shape[:-1])] if constant else []
    for k in range(1, degree + 1):
        for combo in combinations_with_replacement(range(d), k):
            columns.append(np.prod(x[..., list(combo)], axis=-1))
    return np.stack(columns, axis=-1)


def _gd_design(phi_context, y_context, phi_query):
    v = np.einsum("bn,bnk->bk", y_context, phi_context) / phi_context.shape[1]
    return np.einsum("bj,bk->bjk", phi_query, v).reshape(len(v), -1)


def fit_preconditioner(
    phi_context, y_context, phi_query, y_query, *, rcond: float | None = None
) -> np.ndarray:
    r"""The best preconditioner of one gradient step from 0, by least squares.

    One preconditioned GD step on
    :math:`L(\theta) = \frac{1}{2n}\sum_i (y_i - \theta^\top\phi(x_i))^2` from
    :math:`\theta = 0` predicts

    .. math::

        \hat y_q = \phi(x_q)^\top \Gamma\, \frac{1}{n}\sum_{i=1}^n y_i \phi(x_i),

    which is linear in :math:`\Gamma`; this fits :math:`\Gamma` to the query
    targets of many sampled tasks (rows :math:`\phi(x_q) \otimes v`). With
    :math:`\phi(x) = [1; x]` this is the best linear-attention predictor;
    with degree-2 monomials, one step of kernel regression.

    Parameters
    ----------
    phi_context : array_like of shape (batch, n, D)
    y_context : array_like of shape (batch, n)
    phi_query : array_like of shape (batch, D)
    y_query : array_like of shape (batch,)
        Use at least about 20 D^2 tasks.
    rcond : float, optional
        Passed to ``numpy.linalg.lstsq``.

    Returns
    -------
    ndarray of shape (D, D)
        :math:`\Gamma`.
    """
    pc, yc, pq = _arrays(phi_context, y_context, phi_query)
    yq = np.asarray(y_query, dtype=float)
    if yq.shape != (pc.shape[0],):
        raise ValueError(f"y_query must have shape ({pc.shape[0]},); got {yq.shape}")
    design = _gd_design(pc, yc, pq)
    coef, *_ = np.linalg.lstsq(design, yq, rcond=rcond)
    size = pc.shape[-1]
    return coef.reshape(size, size)


def preconditioned_gd_predict(phi_context, y_context, phi_query, gamma) -> np.ndarray:
    r""":math:`\phi(x_q)^\top \Gamma \frac{1}{n}\sum_i y_i \phi(x_i)` per prompt."""
    pc, yc, pq = _arrays(phi_context, y_context, phi_query)
    v = np.einsum("bn,bnk->bk", yc, pc) / pc.shape[1]
    return np.einsum("bj,jk,bk->b", pq, np.asarray(gamma, dtype=float), v)


def least_squares_predict(
    x_context, y_context, x_query, *, intercept: bool = True, ridge: float = 0.0
) -> np.ndarray:
    r"""Least squares fitted on each prompt's context, evaluated at its query.

    :math:`\hat\beta = (X^\top X + \lambda I)^{+} X^\top y` with :math:`X` the
    context inputs (with a column of ones if ``intercept``) and
    :math:`\lambda` = ``ridge`` (the intercept is penalised too). For
    :math:`n <` features, ``ridge=0`` gives the minimum-norm solution.
    """
    xc, yc, xq = _arrays(x_context, y_context, x_query)
    ridge = check_finite("ridge", ridge)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0; got {ridge!r}")
    if intercept:
        xc = np.concatenate([np.ones((*xc.shape[:-1], 1)), xc], axis=-1)
        xq = np.concatenate([np.ones((len(xq), 1)), xq], axis=-1)
    gram = np.einsum("bni,bnj->bij", xc, xc) + ridge * np.eye(xc.shape[-1])
    beta = np.einsum(
        "bij,bj->bi", np.linalg.pinv(gram), np.einsum("bni,bn->bi", xc, yc)
    )
    return np.einsum("bi,bi->b", xq, beta)


def kernel_ridge_predict(
    x_context,
    y_context,
    x_query,
    *,
    alpha: float,
    degree: int = 2,
    gamma: float = 1.0,
    coef0: float = 1.0,
) -> np.ndarray:
    r"""Polynomial-kernel ridge regression on each prompt's context.

    .. math::

        k(x, x') = (\gamma\, x^\top x' + c_0)^{p},\qquad
        \hat y_q = k(x_q, X)\,(K + \alpha I)^{-1} y

    :math:`\gamma` is ``gamma``, :math:`c_0` is ``coef0``, :math:`p` is
    ``degree`` and :math:`\alpha` is ``alpha``; the same estimator as
    ``sklearn.kernel_ridge.KernelRidge(kernel="poly", ...)`` with these
    arguments, solved for all prompts at once.
    """
    xc, yc, xq = _arrays(x_context, y_context, x_query)
    alpha = check_finite("alpha", alpha, low=0.0)
    degree = check_int("degree", degree, low=1)
    gram = (gamma * np.einsum("bid,bjd->bij", xc, xc) + coef0) ** degree
    gram += alpha * np.eye(xc.shape[1])
    weights = np.linalg.solve(gram, yc[..., None])[..., 0]
    k_query = (gamma * np.einsum("bd,bjd->bj", xq, xc) + coef0) ** degree
    return np.einsum("bj,bj->b", k_query, weights)
