r"""Local search over the free coefficients of many continued fractions.

Both searches take a batch of ``B`` problems: starting points ``W`` of shape
``(B, K, q)``, a mask ``free`` of the same shape (the coefficients that may
move; the rest stay as they are, normally zero) and the rows each problem is
fitted on, ``Xa`` of shape ``(n, q)`` shared or ``(B, n, q)`` per problem, with
targets ``y`` of shape ``(n,)`` or ``(B, n)``. Each minimises the mean squared
error :math:`\frac1n\sum_i (f(x_i) - y_i)^2`; a candidate with a denominator
below ``pole_tol`` on its rows counts as :math:`+\infty`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from lemmata.symbolic._fraction import _terms, forward, forward_with_gradient

__all__ = ["LocalSearchResult", "levenberg_marquardt", "mse", "nelder_mead"]

_LAMBDA0 = 1e-2
_LAMBDA_MAX = 1e10


@dataclass
class LocalSearchResult:
    """Optimised points ``W (B, K, q)``, their losses ``(B,)`` and the number
    of candidate evaluations (forward or forward-and-gradient passes) spent."""

    W: np.ndarray
    loss: np.ndarray
    n_evaluations: int


def mse(
    W: np.ndarray,
    Xa: np.ndarray,
    y: np.ndarray,
    pole_tol: float,
    pole_margin: float = 0.0,
) -> np.ndarray:
    """Mean squared error per candidate, ``inf`` at poles or overflow.

    With ``pole_margin > 0`` a candidate also counts as ``inf`` when some
    denominator's smallest modulus over the rows is below ``pole_margin``
    times its median modulus (a pole close to the rows).
    """
    values, dens, smallest = forward(_terms(W, Xa), pole_tol)
    with np.errstate(over="ignore", invalid="ignore"):
        loss = np.mean((values - y) ** 2, axis=-1)
        bad = (smallest < pole_tol) | ~np.isfinite(loss)
        for t in dens if pole_margin > 0 else ():
            size = np.abs(t)
            bad |= size.min(axis=-1) < pole_margin * np.median(size, axis=-1)
    return np.where(bad, np.inf, loss)


def _active_columns(free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the free coefficients, active ones first, padded.

    Returns ``index (B, D)`` with ``D`` the largest number of free coefficients
    in the batch, and ``valid (B, D)`` marking the real (not padding) entries.
    Padding entries point at distinct non-free coefficients.
    """
    flat = free.reshape(free.shape[0], -1)
    counts = flat.sum(axis=1)
    width = max(int(counts.max()), 1)
    order = np.argsort(~flat, axis=1, kind="stable")[:, :width]
    valid = np.arange(width)[None, :] < counts[:, None]
    return order, valid


def _normal_equations(
    W: np.ndarray,
    Xa: np.ndarray,
    y: np.ndarray,
    index: np.ndarray,
    valid: np.ndarray,
    pole_tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loss, ``J^T J`` and ``J^T r`` over the free coefficients of each problem."""
    H = _terms(W, Xa)
    values, G, smallest = forward_with_gradient(H, pole_tol)
    q = W.shape[2]

    with np.errstate(over="ignore", invalid="ignore"):
        residual = values - y
        loss = np.mean(residual**2, axis=-1)
        # Jt[b, d, i] = d f(x_i) / d W[b, k, j] = G[b, k, i] * Xa[b, i, j] for the
        # d-th free coefficient (k, j) = divmod(index[b, d], q) of problem b.
        term, feature = np.divmod(index, q)
        Jt = np.take_along_axis(G, term[:, :, None], axis=1)
        if Xa.ndim == 2:
            Jt *= Xa.T[feature]
        else:
            Jt *= np.take_along_axis(np.swapaxes(Xa, 1, 2), feature[:, :, None], axis=1)
        Jt *= valid[:, :, None]
        JtJ = np.matmul(Jt, np.swapaxes(Jt, 1, 2))
        Jtr = np.matmul(Jt, residual[:, :, None])[..., 0]

    bad = (smallest < pole_tol) | ~np.isfinite(loss)
    bad |= ~np.isfinite(JtJ).all(axis=(1, 2)) | ~np.isfinite(Jtr).all(axis=1)
    loss = np.where(bad, np.inf, loss)
    JtJ[bad] = 0.0
    Jtr[bad] = 0.0
    return loss, JtJ, Jtr


def _damped_step(
    JtJ: np.ndarray, Jtr: np.ndarray, lam: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Solve ``(J^T J + lam * (diag(J^T J) + floor)) step = -J^T r`` per problem."""
    diag = np.diagonal(JtJ, axis1=1, axis2=2)
    floor = 1e-9 * (diag.max(axis=1, keepdims=True) + 1.0)
    damping = lam[:, None] * (diag + floor)
    damping = np.where(valid, damping, 1.0)
    system = JtJ.copy()
    idx = np.arange(JtJ.shape[1])
    system[:, idx, idx] += damping
    try:
        step = np.linalg.solve(system, -Jtr[..., None])[..., 0]
    except np.linalg.LinAlgError:
        step = np.zeros_like(Jtr)
        for b in range(system.shape[0]):
            step[b] = np.linalg.lstsq(system[b], -Jtr[b], rcond=None)[0]
    step[~np.isfinite(step)] = 0.0
    return step * valid


def levenberg_marquardt(
    W: np.ndarray,
    free: np.ndarray,
    Xa: np.ndarray,
    y: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    pole_tol: float,
) -> LocalSearchResult:
    r"""Batched Levenberg-Marquardt over the free coefficients.

    Each iteration solves, for every problem at once,

    .. math::

        (J^\top J + \lambda\,(\operatorname{diag} J^\top J + \epsilon))\,
        \Delta = -J^\top r

    with :math:`J` the Jacobian of the fraction's values in the free
    coefficients (from :func:`forward_with_gradient`) and :math:`r` the
    residuals; a step is kept when it lowers the loss (then
    :math:`\lambda \leftarrow \lambda / 3`), else :math:`\lambda \leftarrow
    5\lambda`. A problem stops when a kept step lowers its loss by less than
    ``tol`` times the loss, or when :math:`\lambda` exceeds 1e10.
    """
    W = W.copy()
    B = W.shape[0]
    index, valid = _active_columns(free)
    lam = np.full(B, _LAMBDA0)
    active = np.ones(B, dtype=bool)
    loss, JtJ, Jtr = _normal_equations(W, Xa, y, index, valid, pole_tol)
    n_evals = B

    for _ in range(max_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        Xa_r = Xa if Xa.ndim == 2 else Xa[rows]
        y_r = y if y.ndim == 1 else y[rows]

        step = _damped_step(JtJ[rows], Jtr[rows], lam[rows], valid[rows])
        flat = W[rows].reshape(rows.size, -1)
        moved = np.take_along_axis(flat, index[rows], axis=1) + step
        np.put_along_axis(flat, index[rows], moved, axis=1)
        trial = flat.reshape(W[rows].shape)

        trial_loss = mse(trial, Xa_r, y_r, pole_tol)
        n_evals += rows.size
        better = trial_loss < loss[rows]
        small_gain = better & (loss[rows] - trial_loss <= tol * loss[rows])

        kept = rows[better]
        if kept.size:
            W[kept] = trial[better]
            Xa_k = Xa if Xa.ndim == 2 else Xa[kept]
            y_k = y if y.ndim == 1 else y[kept]
            loss_k, JtJ[kept], Jtr[kept] = _normal_equations(
                W[kept], Xa_k, y_k, index[kept], valid[kept], pole_tol
            )
            loss[kept] = loss_k
            n_evals += kept.size
        lam[rows] = np.where(better, lam[rows] / 3.0, lam[rows] * 5.0)
        active[rows[small_gain]] = False
        active &= lam < _LAMBDA_MAX

    return LocalSearchResult(W, loss, n_evals)


def nelder_mead(
    W: np.ndarray,
    free: np.ndarray,
    Xa: np.ndarray,
    y: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    pole_tol: float,
) -> LocalSearchResult:
    """Nelder-Mead (scipy) over the free coefficients, one problem at a time.

    The initial simplex is the start plus a unit step along each free
    coefficient; ``xatol = fatol = tol`` and at most ``max_iter`` iterations.
    Each function value is one vectorised pass over the problem's rows.
    """
    W = W.copy()
    B = W.shape[0]
    loss = np.empty(B)
    n_evals = 0
    for b in range(B):
        mask = free[b]
        Xa_b = Xa if Xa.ndim == 2 else Xa[b]
        y_b = y if y.ndim == 1 else y[b]
        start = W[b][mask]
        point = W[b : b + 1].copy()

        def objective(theta, point=point, mask=mask, Xa_b=Xa_b, y_b=y_b):
            point[0][mask] = theta
            return float(mse(point, Xa_b, y_b, pole_tol)[0])

        simplex = np.vstack([start, start + np.eye(start.size)])
        with np.errstate(all="ignore"):
            found = minimize(
                objective,
                start,
                method="Nelder-Mead",
                options={
                    "maxiter": max_iter,
                    "xatol": tol,
                    "fatol": tol,
                    "initial_simplex": simplex,
                },
            )
        start_loss = objective(start)
        if found.fun < start_loss:
            W[b][mask] = found.x
            loss[b] = found.fun
        else:
            W[b][mask] = start
            loss[b] = start_loss
        n_evals += int(found.nfev) + 1
    return LocalSearchResult(W, loss, n_evals)
