"""Reference solutions that p-GD is proven to reach (numpy, scipy and cvxpy).

The solvers import cvxpy inside the function, so importing this module stays
cheap. All inputs are coerced to float64 arrays and checked once, here.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lemmata.optim._potentials import _check_exponent

__all__ = [
    "bregman_divergence",
    "margin",
    "max_margin_direction",
    "min_norm_interpolator",
]

logger = logging.getLogger(__name__)

# Newton polishing of the interior-point solution (see _polish): at most this
# many iterations; a margin constraint is taken as active when its multiplier
# is above this fraction of the largest, or else when its slack is below it.
_POLISH_MAX_ITER = 50
_ACTIVE_RTOL = 1e-6
# A system X w = y counts as inconsistent when its least-squares residual is
# above this fraction of ||X|| ||w_ls|| + ||y||.
_CONSISTENCY_RTOL = 1e-9


def _as_array(name: str, value: ArrayLike, ndim: int) -> NDArray[np.float64]:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers; {exc}") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {array.shape}")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} must be finite; got {bad} NaN or inf entries")
    return array


def _check_data(
    X: ArrayLike, y: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    X = _as_array("X", X, 2)
    y = _as_array("y", y, 1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must have one entry per row of X ({X.shape[0]}); got {y.shape[0]}"
        )
    return X, y


def _check_labels(y: NDArray[np.float64]) -> None:
    wrong = np.unique(y[(y != 1.0) & (y != -1.0)])
    if wrong.size:
        raise ValueError(
            f"y must hold labels in {{-1, +1}}; got {wrong[:5].tolist()}"
            + (" ..." if wrong.size > 5 else "")
        )


def _check_vector(name: str, w: ArrayLike, d: int) -> NDArray[np.float64]:
    w = _as_array(name, w, 1)
    if w.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},) to match X; got {w.shape}")
    return w


def _pnorm(w: NDArray[np.float64], p: float) -> float:
    """||w||_p, scaled by max |w_j| so that |w_j|**p cannot overflow."""
    scale = float(np.max(np.abs(w)))
    if scale == 0.0:
        return 0.0
    return scale * float(np.sum((np.abs(w) / scale) ** p) ** (1.0 / p))


def _mirror(w: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    return np.sign(w) * np.abs(w) ** (p - 1.0)


_POTENTIALS = ("power", "squared")


def _check_potential_name(potential: object) -> str:
    if potential not in _POTENTIALS:
        raise ValueError(
            f"potential must be one of {list(_POTENTIALS)}; got {potential!r}"
        )
    return potential  # type: ignore[return-value]


def _check_blocks(blocks: object, d: int) -> list[slice]:
    """Slices of consecutive blocks with the given sizes (one block if None)."""
    if blocks is None:
        return [slice(0, d)]
    try:
        sizes = [int(b) for b in blocks]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(
            f"blocks must be a sequence of ints; got {type(blocks).__name__}"
        ) from None
    if any(b < 1 for b in sizes) or sum(sizes) != d:
        raise ValueError(
            f"blocks must be positive sizes summing to the {d} features; got {sizes}"
        )
    edges = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _block_norm(w: NDArray[np.float64], p: float, slices: list[slice]) -> float:
    r""":math:`N(w) = (\sum_b \|w_b\|_p^2)^{1/2}` over the blocks ``slices``."""
    return float(np.sqrt(sum(_pnorm(w[s], p) ** 2 for s in slices)))


def _squared_mirror(
    w: NDArray[np.float64], p: float, slices: list[slice]
) -> NDArray[np.float64]:
    r"""Gradient of :math:`\sum_b \tfrac12\|w_b\|_p^2`: per block
    :math:`\|w_b\|_p^{2-p}\operatorname{sign}(w_b)|w_b|^{p-1}` (0 for a zero block)."""
    out = np.zeros_like(w)
    for s in slices:
        norm = _pnorm(w[s], p)
        if norm > 0:
            out[s] = norm * _mirror(w[s] / norm, p)
    return out


def _solve(problem, caller: str) -> None:
    import cvxpy as cp

    try:
        with warnings.catch_warnings():
            # cvxpy's own "may be inaccurate" warning; the status is handled below.
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError as exc:
        raise RuntimeError(f"{caller}: CLARABEL failed: {exc}") from None
    logger.debug("%s: CLARABEL status %s", caller, problem.status)
    if problem.status == cp.OPTIMAL_INACCURATE:
        warnings.warn(
            f"{caller}: CLARABEL stopped at reduced accuracy (status "
            f"{problem.status!r}); the solution is polished by Newton steps but "
            f"may be off by more than 1e-6 if polishing fails.",
            UserWarning,
            stacklevel=3,
        )
    elif problem.status != cp.OPTIMAL:
        raise RuntimeError(
            f"{caller}: CLARABEL returned status {problem.status!r}, no solution"
        )


def _kkt_residual(
    A: NDArray[np.float64],
    b: NDArray[np.float64],
    u0: NDArray[np.float64],
    p: float,
    w: NDArray[np.float64],
    mirror=_mirror,
) -> float:
    r"""Relative KKT residual of :math:`\min \psi(w) - u_0^\top w` s.t. :math:`Aw=b`.

    The larger of the part of :math:`\nabla\psi(w) - u_0` outside the row
    space of :math:`A` (stationarity) and of :math:`\|Aw - b\|`, each relative;
    :math:`\nabla\psi` is ``mirror(w, p)``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        gradient = mirror(w, p) - u0
        lam = np.linalg.lstsq(A.T, gradient, rcond=None)[0]
        stationarity = np.linalg.norm(A.T @ lam - gradient) / max(
            float(np.linalg.norm(gradient)), 1e-300
        )
        feasibility = np.linalg.norm(A @ w - b) / max(float(np.linalg.norm(b)), 1e-300)
    value = float(max(stationarity, feasibility))
    return value if np.isfinite(value) else np.inf


def _linear_solve(matrix: NDArray[np.float64], rhs: NDArray[np.float64]):
    try:
        return np.linalg.solve(matrix, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(matrix, rhs, rcond=None)[0]


def _newton(residual, jacobian_solve, x):
    """Newton's method on ``residual(x) = 0`` with backtracking on its norm."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = residual(x)
        size = float(np.linalg.norm(r))
        for _ in range(_POLISH_MAX_ITER):
            step = jacobian_solve(x, r)
            for t in 0.5 ** np.arange(30):
                r_new = residual(x - t * step)
                size_new = float(np.linalg.norm(r_new))
                if np.isfinite(size_new) and size_new < size:
                    x, r, size = x - t * step, r_new, size_new
                    break
            else:
                break
    return x


def _polish(
    A: NDArray[np.float64],
    b: NDArray[np.float64],
    u0: NDArray[np.float64],
    p: float,
    w_start: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    r"""Refine ``w_start`` for :math:`\min \psi(w) - u_0^\top w` s.t. :math:`Aw = b`.

    The interior-point solution is accurate to about 1e-5; Newton's method on
    the KKT conditions :math:`\nabla\psi(w) = u_0 + A^\top\lambda`,
    :math:`Aw = b` brings it to rounding level. For :math:`p \le 2` it runs on
    the multipliers alone, :math:`w(\lambda) = (\nabla\psi)^{-1}(u_0 +
    A^\top\lambda)`, whose derivative is bounded; for :math:`p > 2` that
    derivative blows up at 0, so it runs on :math:`(w, \lambda)` together,
    where :math:`\nabla^2\psi` is bounded instead. Returns ``(w, lambda)``, or
    None when the result has a larger KKT residual than ``w_start``.
    """
    n, d = A.shape
    exponent = 1.0 / (p - 1.0)
    lam0 = np.linalg.lstsq(A.T, _mirror(w_start, p) - u0, rcond=None)[0]

    if p <= 2:

        def primal(lam):
            u = u0 + A.T @ lam
            return np.sign(u) * np.abs(u) ** exponent

        def solve(lam, r):
            magnitude = np.abs(u0 + A.T @ lam)
            slope = exponent * magnitude ** (exponent - 1.0)
            return _linear_solve((A * slope) @ A.T, r)

        lam = _newton(lambda lam: A @ primal(lam) - b, solve, lam0)
        w = primal(lam)
    else:

        def kkt(x):
            w, lam = x[:d], x[d:]
            return np.concatenate([_mirror(w, p) - u0 - A.T @ lam, A @ w - b])

        def solve(x, r):
            hessian = (p - 1.0) * np.abs(x[:d]) ** (p - 2.0)
            matrix = np.block([[np.diag(hessian), -A.T], [A, np.zeros((n, n))]])
            return _linear_solve(matrix, r)

        x = _newton(kkt, solve, np.concatenate([w_start, lam0]))
        w, lam = x[:d], x[d:]

    if _kkt_residual(A, b, u0, p, w) > _kkt_residual(A, b, u0, p, w_start):
        return None
    return w, lam


def _squared_hessian(
    v: NDArray[np.float64], r: float, slices: list[slice]
) -> NDArray[np.float64]:
    r"""Hessian of :math:`\sum_b \tfrac12\|v_b\|_r^2` (bounded for :math:`r \ge 2`).

    Per block, with :math:`n = \|v_b\|_r` and :math:`g = \operatorname{sign}(v_b)
    |v_b|^{r-1}`: :math:`(r-1) n^{2-r}\operatorname{diag}(|v_b|^{r-2})
    + (2-r) n^{2-2r} g g^\top`; a zero block gets the identity.
    """
    hessian = np.zeros((v.size, v.size))
    for s in slices:
        norm = _pnorm(v[s], r)
        if norm == 0.0:
            hessian[s, s] = np.eye(s.stop - s.start)
            continue
        a = np.abs(v[s]) / norm
        g = np.sign(v[s]) * a ** (r - 1.0)
        hessian[s, s] = (r - 1.0) * np.diag(a ** (r - 2.0)) + (2.0 - r) * np.outer(g, g)
    return hessian


def _polish_squared(
    A: NDArray[np.float64],
    b: NDArray[np.float64],
    u0: NDArray[np.float64],
    p: float,
    slices: list[slice],
    w_start: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    r""":func:`_polish` for :math:`\psi(w) = \sum_b \tfrac12\|w_b\|_p^2`.

    For :math:`p \le 2`, Newton on the multipliers with
    :math:`w(\lambda) = \nabla\psi^*(u_0 + A^\top\lambda)`,
    :math:`\psi^* = \sum_b \tfrac12\|\cdot\|_q^2`; for :math:`p > 2`, on
    :math:`(w, \lambda)` together. Either way the Hessian used is that of a
    squared norm with exponent >= 2, which is bounded.
    """
    n, d = A.shape
    q = p / (p - 1.0)

    def mirror(w, r=p):
        return _squared_mirror(w, r, slices)

    lam0 = np.linalg.lstsq(A.T, mirror(w_start) - u0, rcond=None)[0]
    if p <= 2:

        def solve(lam, r):
            u = u0 + A.T @ lam
            return _linear_solve(A @ _squared_hessian(u, q, slices) @ A.T, r)

        lam = _newton(lambda lam: A @ mirror(u0 + A.T @ lam, q) - b, solve, lam0)
        w = mirror(u0 + A.T @ lam, q)
    else:

        def kkt(x):
            w, lam = x[:d], x[d:]
            return np.concatenate([mirror(w) - u0 - A.T @ lam, A @ w - b])

        def solve(x, r):
            hessian = _squared_hessian(x[:d], p, slices)
            matrix = np.block([[hessian, -A.T], [A, np.zeros((n, n))]])
            return _linear_solve(matrix, r)

        x = _newton(kkt, solve, np.concatenate([w_start, lam0]))
        w, lam = x[:d], x[d:]

    def residual(w):
        return _kkt_residual(A, b, u0, p, w, mirror=lambda v, _: mirror(v))

    if residual(w) > residual(w_start):
        return None
    return w, lam


def _check_separable(Z: NDArray[np.float64]) -> None:
    """Raise unless some w has z_i^T w >= 1 for every row z_i of Z (an LP)."""
    from scipy.optimize import linprog

    n, d = Z.shape
    result = linprog(
        np.zeros(d),
        A_ub=-Z,
        b_ub=-np.ones(n),
        bounds=[(None, None)] * d,
        method="highs",
    )
    if result.status == 2:
        raise ValueError(
            "X, y are not linearly separable by a hyperplane through the "
            "origin: no w has y_i x_i^T w >= 1 for all i (LP infeasible). "
            "Append a column of ones to X to allow an intercept."
        )
    if result.status != 0:
        raise RuntimeError(
            f"separability LP failed with status {result.status}: {result.message}"
        )


def max_margin_direction(
    X: ArrayLike,
    y: ArrayLike,
    p: float,
    *,
    potential: str = "power",
    blocks: Sequence[int] | None = None,
) -> NDArray[np.float64]:
    r"""The :math:`\ell_p` maximum-margin direction of separable data.

    .. math::

        w^*_p = \arg\max_{\|w\|_p \le 1} \min_i\, y_i x_i^\top w
              = \frac{\tilde w}{\|\tilde w\|_p},
        \qquad \tilde w = \arg\min_w \|w\|_p
              \ \text{ s.t. }\ y_i x_i^\top w \ge 1 \ \forall i

    :math:`x_i` is row ``i`` of ``X``, :math:`y_i` is ``y[i]`` and :math:`p`
    is ``p``. p-GD on an exponential-tailed loss converges to this direction
    [1]_.

    With ``potential="squared"``, :math:`\|w\|_p` is replaced by the block
    norm :math:`N(w) = (\sum_b \|w_b\|_p^2)^{1/2}` over consecutive blocks
    :math:`w_b` of sizes ``blocks``: the direction that mirror descent with
    :class:`PNormSquared` reaches when each block is one parameter tensor
    (its potential is :math:`\tfrac12 N(w)^2`) [2]_. With one block
    (``blocks=None``), :math:`N` is :math:`\|w\|_p` and the direction is the
    same as for p-GD.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        Inputs; finite.
    y : array_like of shape (n_samples,)
        Labels in {-1, +1}.
    p : float
        Norm exponent; a finite real number > 1.
    potential : {"power", "squared"}, default="power"
        ``"power"`` for :class:`PGD` / :class:`PNormPower` (the
        :math:`\ell_p` direction; ``blocks`` is ignored, as the potential is
        separable), ``"squared"`` for :class:`PNormSquared` per block.
    blocks : sequence of int, optional
        Sizes of the consecutive blocks (parameter tensors), summing to
        ``n_features``; ``None`` is one block.

    Returns
    -------
    w_star : ndarray of shape (n_features,)
        The direction, with :math:`\|w^*_p\|_p = 1` (:math:`N(w^*) = 1` for
        ``"squared"``). Its margin :math:`\min_i y_i x_i^\top w^*_p` is
        :math:`1/\|\tilde w\|_p`; see :func:`margin`.

    Raises
    ------
    ValueError
        If an input has the wrong shape, is empty or not finite, a label is
        not -1 or +1, ``p`` is not > 1, or the data are not linearly
        separable through the origin.
    RuntimeError
        If the solver fails.

    Notes
    -----
    The classifier has no intercept (the hyperplane passes through the
    origin), as in [1]_'s linear setting; append a column of ones to ``X``
    for one. Separability is checked first with a linear program
    (:func:`scipy.optimize.linprog`), so non-separable data raise instead of
    returning a meaningless direction. :math:`\tilde w` is solved with cvxpy's
    CLARABEL on the exact power cone (``pnorm(..., approx=False)``; cvxpy's
    default rational approximation is not exact), then refined by Newton's
    method on the KKT conditions of the active constraints, which brings the
    KKT residual from about 1e-5 to rounding level. The refined point is kept
    only if its multipliers are positive and it satisfies every constraint;
    otherwise the interior-point solution is returned. With
    ``potential="squared"`` and more than one block, :math:`N(\tilde w)` is
    minimised (a second-order cone over the blocks' power cones) and refined
    the same way, with the Hessian of the block-squared potential.

    References
    ----------
    .. [1] Sun, Ahn, Thrampoulidis, Azizan. "Mirror Descent Maximizes
       Generalized Margin and Can Be Implemented Efficiently." NeurIPS 2022.
       arXiv:2205.12808.
    .. [2] Sun, Gatmiry, Ahn, Azizan. "A Unified Approach to Controlling
       Implicit Regularization via Mirror Descent." arXiv:2306.13853.
    """
    X, y = _check_data(X, y)
    _check_labels(y)
    p = _check_exponent("p", p)
    slices = _check_blocks(blocks, X.shape[1])
    if _check_potential_name(potential) == "power":
        slices = slices[:1] if len(slices) == 1 else [slice(0, X.shape[1])]
    Z = y[:, None] * X
    _check_separable(Z)

    import cvxpy as cp

    w = cp.Variable(X.shape[1])
    constraint = Z @ w >= 1
    if len(slices) > 1:
        norms = cp.hstack([cp.pnorm(w[s], p, approx=False) for s in slices])
        problem = cp.Problem(cp.Minimize(cp.norm(norms, 2)), [constraint])
        _solve(problem, "max_margin_direction")
        w_tilde = np.asarray(w.value, dtype=np.float64)
        alpha = np.asarray(constraint.dual_value, dtype=np.float64)
        w_tilde = _polish_margin(Z, w_tilde, alpha, p, slices)
        return w_tilde / _block_norm(w_tilde, p, slices)

    problem = cp.Problem(cp.Minimize(cp.pnorm(w, p, approx=False)), [constraint])
    _solve(problem, "max_margin_direction")
    w_tilde = np.asarray(w.value, dtype=np.float64)

    alpha = np.asarray(constraint.dual_value, dtype=np.float64)
    w_tilde = _polish_margin(Z, w_tilde, alpha, p, None)
    return w_tilde / _pnorm(w_tilde, p)


def _polish_margin(Z, w_tilde, alpha, p, slices):
    """Newton-polish a max-margin solution on its active constraints.

    The active set is guessed from the multipliers ``alpha`` and then from the
    slacks; a result is kept only if its multipliers are positive and it
    satisfies every margin constraint. ``slices=None`` is p-GD's potential,
    else the block-squared one.
    """
    slack = Z @ w_tilde - 1.0
    guesses = (alpha > _ACTIVE_RTOL * alpha.max(), slack < _ACTIVE_RTOL)
    for active in guesses:
        if not active.any():
            continue
        args = (Z[active], np.ones(int(active.sum())), np.zeros(Z.shape[1]), p)
        if slices is None:
            polished = _polish(*args, w_tilde)
        else:
            polished = _polish_squared(*args, slices, w_tilde)
        if polished is None:
            continue
        w_new, alpha_active = polished
        if alpha_active.min() > 0 and np.min(Z @ w_new) >= 1.0 - 1e-12:
            return w_new
    logger.debug("max_margin_direction: kept the unpolished solution")
    return w_tilde


def min_norm_interpolator(
    X: ArrayLike,
    y: ArrayLike,
    p: float,
    w0: ArrayLike | None = None,
    *,
    potential: str = "power",
    blocks: Sequence[int] | None = None,
) -> NDArray[np.float64]:
    r"""The interpolator closest to ``w0`` in the Bregman divergence of p-GD.

    .. math::

        \hat w = \arg\min_{w:\ Xw = y} D_\psi(w, w_0),
        \qquad \psi(w) = \tfrac{1}{p}\sum_j |w_j|^p,

        D_\psi(w, w_0) = \psi(w) - \psi(w_0)
            - \langle \nabla\psi(w_0),\, w - w_0 \rangle

    :math:`X` is ``X``, :math:`y` is ``y``, :math:`p` is ``p`` and
    :math:`w_0` is ``w0``. With :math:`w_0 = 0` this is
    :math:`\arg\min \|w\|_p` subject to :math:`Xw = y`. p-GD started at
    :math:`w_0` on the squared loss converges to :math:`\hat w` [1]_.

    With ``potential="squared"``, :math:`\psi(w) = \sum_b \tfrac12
    \|w_b\|_p^2` over consecutive blocks :math:`w_b` of sizes ``blocks``
    (:class:`PNormSquared` applied to each parameter tensor) [2]_. From
    :math:`w_0 = 0` this is :math:`\arg\min N(w)` with
    :math:`N(w) = (\sum_b \|w_b\|_p^2)^{1/2}`, which for one block is the
    p-GD solution again; from :math:`w_0 \ne 0` the two differ.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        Design matrix; finite.
    y : array_like of shape (n_samples,)
        Targets; finite.
    p : float
        Exponent of the potential; a finite real number > 1.
    w0 : array_like of shape (n_features,), optional
        Starting point; ``None`` means 0.
    potential : {"power", "squared"}, default="power"
        :class:`PGD` / :class:`PNormPower` (``blocks`` is ignored) or
        :class:`PNormSquared` per block.
    blocks : sequence of int, optional
        Sizes of the consecutive blocks, summing to ``n_features``; ``None``
        is one block.

    Returns
    -------
    w_hat : ndarray of shape (n_features,)

    Raises
    ------
    ValueError
        If an input has the wrong shape, is empty or not finite, ``p`` is not
        > 1, or :math:`Xw = y` has no solution.
    RuntimeError
        If the solver fails.

    Notes
    -----
    The objective is :math:`D_\psi` up to terms constant in :math:`w`:
    :math:`\psi(w) - \langle\nabla\psi(w_0), w\rangle` (or :math:`\|w\|_p`,
    which has the same minimiser as :math:`\psi`, when ``w0`` is None). It is
    solved with cvxpy's CLARABEL on the exact power cone (``approx=False``)
    after rescaling :math:`(w_0, y)` by :math:`s = \max(\|w_0\|_\infty,
    \|w_{ls}\|_\infty)` (the solution scales with them), then refined by
    Newton's method on the KKT conditions
    :math:`\nabla\psi(w) = \nabla\psi(w_0) + X^\top\lambda`, :math:`Xw = y`,
    which brings the KKT residual from about 1e-5 to rounding level; the
    refinement is discarded if it does not lower the residual.
    The system counts as inconsistent when its least-squares residual is
    above 1e-9 times :math:`\|X\|_F\|w_{ls}\| + \|y\|`. For
    ``potential="squared"`` the objective is
    :math:`\sum_b \tfrac12\|w_b\|_p^2 - \langle\nabla\psi(w_0), w\rangle`
    (or :math:`N(w)` from 0), also 1-homogeneous in :math:`(w_0, y)`, solved
    and refined the same way; from :math:`w_0 = 0` with one block it is the
    p-GD problem.

    References
    ----------
    .. [1] Sun, Ahn, Thrampoulidis, Azizan. "Mirror Descent Maximizes
       Generalized Margin and Can Be Implemented Efficiently." NeurIPS 2022.
       arXiv:2205.12808.
    .. [2] Sun, Gatmiry, Ahn, Azizan. "A Unified Approach to Controlling
       Implicit Regularization via Mirror Descent." arXiv:2306.13853.
    """
    X, y = _check_data(X, y)
    p = _check_exponent("p", p)
    if w0 is not None:
        w0 = _check_vector("w0", w0, X.shape[1])
    slices = _check_blocks(blocks, X.shape[1])
    if _check_potential_name(potential) == "squared" and (
        w0 is not None or len(slices) > 1
    ):
        return _squared_interpolator(X, y, p, w0, slices)

    w_ls = np.linalg.lstsq(X, y, rcond=None)[0]
    residual = float(np.linalg.norm(X @ w_ls - y))
    scale = float(np.linalg.norm(X) * np.linalg.norm(w_ls) + np.linalg.norm(y))
    if residual > _CONSISTENCY_RTOL * scale:
        raise ValueError(
            f"X w = y must have a solution to interpolate; got least-squares "
            f"residual {residual:.3g} (relative {residual / scale:.3g})"
        )

    import cvxpy as cp

    # The problem is homogeneous: (w0, y) -> (w0, y) / s maps the solution to
    # w / s. s brings the entries near 1, where |w_j|**p is well scaled.
    scale = float(np.max(np.abs(w_ls)))
    if w0 is not None:
        scale = max(scale, float(np.max(np.abs(w0))))
    if scale == 0.0:  # y = 0 and w0 = 0 or absent
        return np.zeros(X.shape[1])
    dual0 = np.zeros(X.shape[1]) if w0 is None else _mirror(w0 / scale, p)

    w = cp.Variable(X.shape[1])
    if w0 is None:
        objective = cp.pnorm(w, p, approx=False)
    else:
        objective = cp.sum(cp.power(cp.abs(w), p, approx=False)) / p - dual0 @ w
    problem = cp.Problem(cp.Minimize(objective), [X @ w == y / scale])
    _solve(problem, "min_norm_interpolator")
    w_hat = np.asarray(w.value, dtype=np.float64)

    polished = _polish(X, y / scale, dual0, p, w_hat)
    if polished is not None:
        w_hat = polished[0]
    return scale * w_hat


def _squared_interpolator(X, y, p, w0, slices):
    """min_norm_interpolator for potential="squared" (see there)."""
    w_ls = np.linalg.lstsq(X, y, rcond=None)[0]
    residual = float(np.linalg.norm(X @ w_ls - y))
    size = float(np.linalg.norm(X) * np.linalg.norm(w_ls) + np.linalg.norm(y))
    if residual > _CONSISTENCY_RTOL * size:
        raise ValueError(
            f"X w = y must have a solution to interpolate; got least-squares "
            f"residual {residual:.3g} (relative {residual / size:.3g})"
        )
    scale = float(np.max(np.abs(w_ls)))
    if w0 is not None:
        scale = max(scale, float(np.max(np.abs(w0))))
    if scale == 0.0:
        return np.zeros(X.shape[1])

    import cvxpy as cp

    w = cp.Variable(X.shape[1])
    norms = [cp.pnorm(w[s], p, approx=False) for s in slices]
    if w0 is None:
        objective = cp.norm(cp.hstack(norms), 2)
    else:
        dual0 = _squared_mirror(w0 / scale, p, slices)
        objective = sum(cp.square(n) for n in norms) / 2 - dual0 @ w
    problem = cp.Problem(cp.Minimize(objective), [X @ w == y / scale])
    _solve(problem, "min_norm_interpolator")
    w_hat = np.asarray(w.value, dtype=np.float64)

    dual0 = np.zeros(X.shape[1]) if w0 is None else dual0
    polished = _polish_squared(X, y / scale, dual0, p, slices, w_hat)
    if polished is not None:
        w_hat = polished[0]
    return scale * w_hat


def margin(
    X: ArrayLike,
    y: ArrayLike,
    w: ArrayLike,
    p: float,
    *,
    potential: str = "power",
    blocks: Sequence[int] | None = None,
) -> float:
    r"""Normalised margin :math:`\gamma_p(w) = \min_i y_i x_i^\top w / \|w\|_p`.

    :math:`x_i` is row ``i`` of ``X``, :math:`y_i` is ``y[i]``, :math:`w` is
    ``w`` and :math:`p` is ``p``. The margin gap of a classifier is
    :math:`1 - \gamma_p(w)/\gamma_p(w^*_p)` with :math:`w^*_p` from
    :func:`max_margin_direction`. With ``potential="squared"`` the
    denominator is the block norm :math:`N(w)` of ``blocks`` instead.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    y : array_like of shape (n_samples,)
        Labels in {-1, +1}.
    w : array_like of shape (n_features,)
        Classifier; nonzero.
    p : float
        Norm exponent; a finite real number > 1.
    potential : {"power", "squared"}, default="power"
        As in :func:`max_margin_direction`.
    blocks : sequence of int, optional
        As in :func:`max_margin_direction`.

    Returns
    -------
    float
        Negative when some point is misclassified.
    """
    X, y = _check_data(X, y)
    _check_labels(y)
    p = _check_exponent("p", p)
    w = _check_vector("w", w, X.shape[1])
    slices = _check_blocks(blocks, X.shape[1])
    if _check_potential_name(potential) == "squared":
        norm = _block_norm(w, p, slices)
    else:
        norm = _pnorm(w, p)
    if norm == 0.0:
        raise ValueError("w must be nonzero to have a normalised margin; got w = 0")
    return float(np.min(y * (X @ w))) / norm


def bregman_divergence(
    w: ArrayLike,
    w0: ArrayLike,
    p: float,
    *,
    potential: str = "power",
    blocks: Sequence[int] | None = None,
) -> float:
    r"""Bregman divergence of :math:`\psi(w) = \tfrac{1}{p}\sum_j |w_j|^p`.

    .. math::

        D_\psi(w, w_0) = \psi(w) - \psi(w_0)
            - \langle \nabla\psi(w_0),\, w - w_0 \rangle,
        \qquad \nabla\psi(w_0)_j = \operatorname{sign}(w_{0,j})|w_{0,j}|^{p-1}

    :math:`w` is ``w``, :math:`w_0` is ``w0`` and :math:`p` is ``p``; the sums
    run over all entries. :math:`D_\psi \ge 0`, with equality only at
    :math:`w = w_0`. With ``potential="squared"``,
    :math:`\psi(w) = \sum_b \tfrac12\|w_b\|_p^2` over the consecutive blocks
    of sizes ``blocks`` of the flattened arrays (:class:`PNormSquared` per
    parameter tensor).

    Parameters
    ----------
    w, w0 : array_like
        Arrays of the same shape; finite.
    p : float
        Exponent; a finite real number > 1.
    potential : {"power", "squared"}, default="power"
        As in :func:`max_margin_direction`.
    blocks : sequence of int, optional
        Block sizes for ``"squared"``, summing to ``w.size``; ``None`` is one
        block.

    Returns
    -------
    float
    """
    p = _check_exponent("p", p)
    w = np.asarray(w, dtype=np.float64)
    w0 = np.asarray(w0, dtype=np.float64)
    if w.shape != w0.shape:
        raise ValueError(f"w0 must have the shape of w {w.shape}; got {w0.shape}")
    for name, array in (("w", w), ("w0", w0)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite; got NaN or inf entries")

    if _check_potential_name(potential) == "squared":
        w, w0 = w.ravel(), w0.ravel()
        slices = _check_blocks(blocks, w.size)
        dual0 = _squared_mirror(w0, p, slices)
        psi = _block_norm(w, p, slices) ** 2 / 2
        psi0 = _block_norm(w0, p, slices) ** 2 / 2
    else:
        dual0 = np.sign(w0) * np.abs(w0) ** (p - 1.0)
        psi = np.sum(np.abs(w) ** p) / p
        psi0 = np.sum(np.abs(w0) ** p) / p
    return float(psi - psi0 - np.sum(dual0 * (w - w0)))
