r"""The offline optimum, competitive ratios and static regret.

The offline optimum over a horizon of :math:`T` rounds, from the same
:math:`x_0` as the learner, is

.. math::

    \mathrm{OPT} = \min_{x_1, \dots, x_T}
        \sum_{t=1}^T f_t(x_t) + c(x_t, x_{t-1}),

one convex program in :math:`T d` variables when :math:`c` is jointly convex.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lemmata.online._checks import check_vector
from lemmata.online._costs import ConvexCost, HittingCost, QuadraticCost
from lemmata.online._movement import MovementCost, SquaredEuclidean
from lemmata.online._obd import OnlineAlgorithm
from lemmata.online._steps import _spot_check_convexity, cvxpy_solve, lbfgs

__all__ = [
    "OfflineSolution",
    "best_fixed_point",
    "competitive_ratio",
    "offline_optimum",
    "static_regret",
    "total_cost",
    "trajectory_cost",
]

logger = logging.getLogger(__name__)

_OFFLINE_SOLVERS = ("auto", "closed_form", "cvxpy", "scipy")


@dataclass(frozen=True)
class OfflineSolution:
    """The offline optimum of a smoothed online problem.

    Attributes
    ----------
    x : ndarray of shape (T, d)
        The optimal points :math:`x^*_1, \\dots, x^*_T`.
    cost : float
        :math:`\\sum_t f_t(x^*_t) + c(x^*_t, x^*_{t-1})`.
    hitting : float
        The hitting part :math:`\\sum_t f_t(x^*_t)`.
    movement : float
        The movement part :math:`\\sum_t c(x^*_t, x^*_{t-1})`.
    """

    x: np.ndarray
    cost: float
    hitting: float
    movement: float


def _validate_costs(costs: Iterable[HittingCost]) -> list[HittingCost]:
    costs = list(costs)
    if not costs:
        raise ValueError("costs must contain at least one hitting cost; got 0")
    for t, cost in enumerate(costs):
        if not isinstance(cost, HittingCost):
            raise TypeError(
                f"costs[{t}] must be a HittingCost; got {type(cost).__name__}"
            )
        if cost.dim != costs[0].dim:
            raise ValueError(
                f"costs[{t}].dim must equal costs[0].dim, {costs[0].dim}; got "
                f"{cost.dim}"
            )
    return costs


def _validate_movement(movement: MovementCost | None) -> MovementCost:
    if movement is None:
        return SquaredEuclidean()
    if not isinstance(movement, MovementCost):
        raise TypeError(
            f"movement must be a MovementCost; got {type(movement).__name__}"
        )
    return movement


def _validate(
    costs: Iterable[HittingCost], x0: Any, movement: MovementCost | None
) -> tuple[Sequence[HittingCost], np.ndarray, MovementCost]:
    costs = list(costs)
    if not costs:
        raise ValueError("costs must contain at least one hitting cost; got 0")
    x0 = check_vector("x0", x0)
    for t, cost in enumerate(costs):
        if not isinstance(cost, HittingCost):
            raise TypeError(
                f"costs[{t}] must be a HittingCost; got {type(cost).__name__}"
            )
        if cost.dim != x0.shape[0]:
            raise ValueError(
                f"costs[{t}].dim must equal the length of x0, {x0.shape[0]}; got "
                f"{cost.dim}"
            )
    movement = _validate_movement(movement)
    movement.check_domain("x0", x0)
    return costs, x0, movement


def _validate_points(xs: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(xs, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"xs must have shape {shape}; got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("xs must be finite")
    return arr


def trajectory_cost(
    xs: Any,
    costs: Iterable[HittingCost],
    x0: Any,
    movement: MovementCost | None = None,
) -> tuple[float, float]:
    """The hitting and movement parts of a trajectory's cost.

    Parameters
    ----------
    xs : array_like of shape (T, d)
        The points :math:`x_1, \\dots, x_T`.
    costs : sequence of HittingCost
        :math:`f_1, \\dots, f_T`.
    x0 : array_like of shape (d,)
        The starting point.
    movement : MovementCost, optional
        :math:`c`; :class:`SquaredEuclidean` by default.

    Returns
    -------
    (float, float)
        :math:`\\sum_t f_t(x_t)` and :math:`\\sum_t c(x_t, x_{t-1})`.
    """
    costs, x0, movement = _validate(costs, x0, movement)
    xs = _validate_points(xs, (len(costs), x0.shape[0]))
    hitting = sum(float(cost(x)) for cost, x in zip(costs, xs, strict=True))
    previous = np.vstack([x0, xs[:-1]])
    moved = sum(movement(x, y) for x, y in zip(xs, previous, strict=True))
    return hitting, float(moved)


def total_cost(
    xs: Any,
    costs: Iterable[HittingCost],
    x0: Any,
    movement: MovementCost | None = None,
) -> float:
    """:math:`\\sum_t f_t(x_t) + c(x_t, x_{t-1})`; see :func:`trajectory_cost`."""
    hitting, moved = trajectory_cost(xs, costs, x0, movement)
    return hitting + moved


def offline_optimum(
    costs: Iterable[HittingCost],
    x0: Any,
    movement: MovementCost | None = None,
    *,
    solver: str = "auto",
) -> OfflineSolution:
    r"""Solve the whole horizon as one convex program.

    .. math::

        \min_{x_1, \dots, x_T} \sum_{t=1}^T f_t(x_t) + c(x_t, x_{t-1})

    Parameters
    ----------
    costs : sequence of HittingCost
        :math:`f_1, \dots, f_T`.
    x0 : array_like of shape (d,)
        :math:`x_0`, shared with the online learner.
    movement : MovementCost, optional
        :math:`c`; :class:`SquaredEuclidean` by default.
    solver : {"auto", "closed_form", "cvxpy", "scipy"}, default="auto"
        ``"closed_form"`` (chosen by ``"auto"`` for quadratic costs with
        squared Euclidean movement) solves the block-tridiagonal normal
        equations: one vectorised tridiagonal sweep when every curvature is
        scalar or diagonal, a sparse LU factorisation otherwise. ``"cvxpy"``
        builds one program over all :math:`T d` variables. ``"scipy"``
        (chosen for :class:`ConvexCost` costs) runs L-BFGS on the same
        objective.

    Returns
    -------
    OfflineSolution

    Notes
    -----
    The movement cost must be jointly convex in :math:`(x_t, x_{t-1})`:
    squared Euclidean and the negative-entropy divergence are, the
    :math:`p`-norm Bregman divergence for :math:`p \ne 2` is not and raises
    NotImplementedError. The tridiagonal system has condition number of order
    :math:`1/m`; it is solved in float64.
    """
    costs, x0, movement = _validate(costs, x0, movement)
    if solver not in _OFFLINE_SOLVERS:
        raise ValueError(
            f"solver must be one of {list(_OFFLINE_SOLVERS)}; got {solver!r}"
        )
    quadratic = isinstance(movement, SquaredEuclidean) and all(
        isinstance(cost, QuadraticCost) for cost in costs
    )
    if solver == "auto":
        if quadratic:
            solver = "closed_form"
        elif all(cost._cvxpy_form() is not None for cost in costs):
            solver = "cvxpy"
        else:
            solver = "scipy"
    if solver == "closed_form":
        if not quadratic:
            raise ValueError(
                "solver='closed_form' needs QuadraticCost costs and SquaredEuclidean "
                "movement"
            )
        xs = _offline_quadratic(costs, x0)
    elif solver == "cvxpy":
        xs = _offline_cvxpy(costs, x0, movement)
    else:
        xs = _offline_scipy(costs, x0, movement)
    hitting, moved = trajectory_cost(xs, costs, x0, movement)
    return OfflineSolution(x=xs, cost=hitting + moved, hitting=hitting, movement=moved)


def _offline_quadratic(costs: Sequence[QuadraticCost], x0: np.ndarray) -> np.ndarray:
    # Normal equations: (A_t + 2I) x_t - x_{t-1} - x_{t+1} = A_t y_t, with
    # A_T + I in the last row and x_0 moved to the right-hand side.
    d = x0.shape[0]
    centers = np.array([cost.center for cost in costs])
    if any(cost.kind == "matrix" for cost in costs):
        return _offline_block_tridiagonal(costs, x0, centers)
    curvature = np.array([np.broadcast_to(cost.curvature, (d,)) for cost in costs])
    rhs = curvature * centers
    rhs[0] += x0
    diagonal = curvature + 2.0
    diagonal[-1] -= 1.0
    return _tridiagonal_solve(diagonal, rhs)


def _tridiagonal_solve(diagonal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve column-wise systems with the given diagonal and -1 off-diagonals.

    Thomas' algorithm, vectorised over columns; stable here because the
    matrix is diagonally dominant.
    """
    T = diagonal.shape[0]
    c_prime = np.empty_like(diagonal)
    d_prime = np.empty_like(rhs)
    c_prime[0] = -1.0 / diagonal[0]
    d_prime[0] = rhs[0] / diagonal[0]
    for t in range(1, T):
        denominator = diagonal[t] + c_prime[t - 1]
        c_prime[t] = -1.0 / denominator
        d_prime[t] = (rhs[t] + d_prime[t - 1]) / denominator
    x = np.empty_like(rhs)
    x[-1] = d_prime[-1]
    for t in range(T - 2, -1, -1):
        x[t] = d_prime[t] - c_prime[t] * x[t + 1]
    return x


def _offline_block_tridiagonal(
    costs: Sequence[QuadraticCost], x0: np.ndarray, centers: np.ndarray
) -> np.ndarray:
    from scipy import sparse
    from scipy.sparse import linalg as sparse_linalg

    T, d = centers.shape
    blocks = []
    rhs = np.empty((T, d))
    for t, cost in enumerate(costs):
        a = _dense_curvature(cost)
        blocks.append(a + (1.0 if t == T - 1 else 2.0) * np.eye(d))
        rhs[t] = a @ cost.center
    rhs[0] += x0
    eye = sparse.identity(d, format="csr")
    diagonal = sparse.block_diag(blocks, format="csr")
    shift = sparse.kron(sparse.eye(T, k=1) + sparse.eye(T, k=-1), eye)
    system = (diagonal - shift).tocsc()
    return sparse_linalg.spsolve(system, rhs.reshape(-1)).reshape(T, d)


def _dense_curvature(cost: QuadraticCost) -> np.ndarray:
    if cost.kind == "matrix":
        return cost.curvature
    return np.diag(np.broadcast_to(cost.curvature, (cost.dim,)))


def _offline_cvxpy(
    costs: Sequence[HittingCost], x0: np.ndarray, movement: MovementCost
) -> np.ndarray:
    import cvxpy as cp

    T, d = len(costs), x0.shape[0]
    for t, cost in enumerate(costs):
        if cost._cvxpy_form() is None:
            raise ValueError(
                f"solver='cvxpy' needs costs with a cvxpy form; costs[{t}] is a "
                f"{type(cost).__name__}"
            )
    X = cp.Variable((T, d), name="X")
    hitting = sum(
        cost._cvxpy_form().constant_expression(X[t]) for t, cost in enumerate(costs)
    )
    moved = movement._cvxpy_joint(X[0], x0)
    if T > 1:
        moved = moved + movement._cvxpy_joint(X[1:], X[:-1])
    constraints = [c for t in range(T) for c in movement._cvxpy_domain(X[t])]
    problem = cp.Problem(cp.Minimize(hitting + moved), constraints)
    cvxpy_solve(problem, "the offline problem")
    return np.asarray(X.value, dtype=np.float64)


def _offline_scipy(
    costs: Sequence[HittingCost], x0: np.ndarray, movement: MovementCost
) -> np.ndarray:

    if not isinstance(movement, SquaredEuclidean):
        raise NotImplementedError(
            "solver='scipy' handles SquaredEuclidean movement only; got "
            f"{movement!r}; use CvxpyCost costs for Bregman movement"
        )
    T, d = len(costs), x0.shape[0]

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        xs = flat.reshape(T, d)
        steps = np.diff(np.vstack([x0, xs]), axis=0)
        value = 0.5 * float(np.sum(steps**2))
        grad = steps.copy()
        grad[:-1] -= steps[1:]
        for t, cost in enumerate(costs):
            value += cost(xs[t])
            grad[t] += cost.gradient(xs[t])
        return value, grad.reshape(-1)

    start = np.tile(x0, (T, 1)).reshape(-1)
    flat = lbfgs(
        lambda z: objective(z)[0],
        lambda z: objective(z)[1],
        start,
        "the offline problem",
    )
    xs = flat.reshape(T, d)
    for t, cost in enumerate(costs):
        if isinstance(cost, ConvexCost):
            _spot_check_convexity(cost, xs[t], x0)
    return xs


def competitive_ratio(
    algorithm: OnlineAlgorithm | Any,
    costs: Iterable[HittingCost],
    x0: Any,
    movement: MovementCost | None = None,
    *,
    opt: OfflineSolution | float | None = None,
) -> float:
    r"""The empirical competitive ratio :math:`\mathrm{ALG}/\mathrm{OPT}`.

    Parameters
    ----------
    algorithm : OnlineAlgorithm or array_like of shape (T, d)
        An algorithm to run from ``x0`` over ``costs``, or its points.
    costs : sequence of HittingCost
        :math:`f_1, \dots, f_T`; must be non-negative.
    x0 : array_like of shape (d,)
        The common starting point.
    movement : MovementCost, optional
        :math:`c`; the algorithm's own when an algorithm is given, else
        :class:`SquaredEuclidean`.
    opt : OfflineSolution or float, optional
        A precomputed offline optimum (or its cost); computed when omitted.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When the offline optimum costs 0 (the ratio is undefined) or a hitting
        cost is negative along either trajectory.
    """
    costs = list(costs)
    if isinstance(algorithm, OnlineAlgorithm):
        if movement is None:
            movement = algorithm.movement
        xs = algorithm.run(costs, x0)
    else:
        xs = algorithm
    costs, x0, movement = _validate(costs, x0, movement)
    xs = _validate_points(xs, (len(costs), x0.shape[0]))
    hitting_values = [float(cost(x)) for cost, x in zip(costs, xs, strict=True)]
    _check_nonnegative_hitting(hitting_values, "the algorithm's")
    alg_cost = total_cost(xs, costs, x0, movement)
    if opt is None:
        opt = offline_optimum(costs, x0, movement)
    if isinstance(opt, OfflineSolution):
        opt_values = [float(c(x)) for c, x in zip(costs, opt.x, strict=True)]
        _check_nonnegative_hitting(opt_values, "the optimum's")
        opt = opt.cost
    opt = float(opt)
    if not opt > 0:
        raise ValueError(
            "the competitive ratio is undefined: the offline optimum costs "
            f"{opt!r} (every cost is minimised at x0 without moving)"
        )
    return alg_cost / opt


def _check_nonnegative_hitting(values: list[float], whose: str) -> None:
    for t, value in enumerate(values):
        if value < -1e-9 * max(1.0, abs(value)):
            raise ValueError(
                "hitting costs must be >= 0 for a competitive ratio; got "
                f"costs[{t}] = {value!r} at {whose} point"
            )


def best_fixed_point(
    costs: Iterable[HittingCost], movement: MovementCost | None = None
) -> np.ndarray:
    r"""The best fixed point in hindsight, :math:`\arg\min_u \sum_t f_t(u)`.

    Over the movement cost's domain when it has one. Closed form
    :math:`(\sum_t A_t)^{-1} \sum_t A_t y_t` for quadratic costs.
    """

    costs = _validate_costs(costs)
    movement = _validate_movement(movement)
    d = costs[0].dim
    if not movement.has_domain and all(isinstance(c, QuadraticCost) for c in costs):
        if any(cost.kind == "matrix" for cost in costs):
            total = sum(
                c.curvature
                if c.kind == "matrix"
                else np.diag(np.broadcast_to(c.curvature, (d,)))
                for c in costs
            )
            return np.linalg.solve(total, sum(c.apply(c.center) for c in costs))
        weights = np.array([np.broadcast_to(c.curvature, (d,)) for c in costs])
        centers = np.array([c.center for c in costs])
        return np.sum(weights * centers, axis=0) / np.sum(weights, axis=0)
    if all(cost._cvxpy_form() is not None for cost in costs):
        import cvxpy as cp

        u = cp.Variable(d)
        objective = sum(c._cvxpy_form().constant_expression(u) for c in costs)
        problem = cp.Problem(cp.Minimize(objective), movement._cvxpy_domain(u))
        problem.solve(
            solver=cp.CLARABEL if cp.CLARABEL in cp.installed_solvers() else None
        )
        if problem.status != cp.OPTIMAL:
            raise RuntimeError(
                f"cvxpy returned status {problem.status!r} for the best fixed point"
            )
        return np.asarray(u.value, dtype=np.float64)
    if movement.has_domain:
        raise NotImplementedError(
            "best_fixed_point over a domain needs CvxpyCost costs"
        )
    return lbfgs(
        lambda u: sum(c(u) for c in costs),
        lambda u: sum(c.gradient(u) for c in costs),
        np.zeros(d),
        "the best fixed point",
    )


def static_regret(
    algorithm: OnlineAlgorithm | Any,
    costs: Iterable[HittingCost],
    x0: Any,
    movement: MovementCost | None = None,
) -> float:
    r"""Static regret against the best fixed point in hindsight.

    .. math::

        \sum_{t=1}^T \bigl[f_t(x_t) + c(x_t, x_{t-1})\bigr]
        - \min_u \sum_{t=1}^T f_t(u)

    Parameters are as in :func:`competitive_ratio`.

    Notes
    -----
    The comparator pays no movement (not even from :math:`x_0` to :math:`u`),
    as in the spec; charging it :math:`c(u, x_0)` would lower the regret by
    that constant.
    """
    costs = list(costs)
    if isinstance(algorithm, OnlineAlgorithm):
        if movement is None:
            movement = algorithm.movement
        xs = algorithm.run(costs, x0)
    else:
        xs = algorithm
    costs, x0, movement = _validate(costs, x0, movement)
    u = best_fixed_point(costs, movement)
    return total_cost(xs, costs, x0, movement) - sum(float(c(u)) for c in costs)
