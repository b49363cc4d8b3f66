r"""Per-step solvers shared by the online algorithms.

Three subproblems occur:

* the minimiser :math:`v = \arg\min_{x \in X} f(x)` over the movement cost's
  domain :math:`X` (all of :math:`\mathbb{R}^d` unless the potential has one);
* the regularised step :math:`\arg\min_x f(x) + \lambda_1 c(x, x_{t-1}) +
  \lambda_2 c(x, v)` (R-OBD);
* the balanced step of OBD: the projection
  :math:`x(l) = \arg\min_{f(x) \le l} c(x, x_{t-1})` at the level :math:`l`
  where :math:`c(x(l), x_{t-1}) = \beta l`.

Each has three routes: closed forms (a :class:`QuadraticCost` with
:class:`SquaredEuclidean` movement), a cvxpy problem compiled once per cost
family and re-solved with new parameter values, and scipy for
:class:`ConvexCost`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import numpy as np

from lemmata.online._costs import ConvexCost, HittingCost, QuadraticCost
from lemmata.online._movement import MovementCost, SquaredEuclidean

__all__ = [
    "SOLVERS",
    "ProblemCache",
    "balanced_step",
    "choose_route",
    "cvxpy_solve",
    "lbfgs",
    "regularized_step",
    "solve_minimizer",
]

logger = logging.getLogger(__name__)

SOLVERS = ("auto", "closed_form", "cvxpy", "scipy")

# Clarabel's tolerances tightened from 1e-8: OBD's root finding differences
# projections, and the default leaves KKT residuals near 1e-5.
_CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}

# Relative tolerance of the strong-convexity spot check on black-box costs.
_CONVEXITY_RTOL = 1e-6


class ProblemCache(dict):
    """Compiled cvxpy problems, keyed by (subproblem, cost family)."""


def choose_route(cost: HittingCost, movement: MovementCost, solver: str) -> str:
    """The route that ``solver`` selects for ``cost`` and ``movement``."""
    closed = isinstance(cost, QuadraticCost) and isinstance(movement, SquaredEuclidean)
    if solver == "auto":
        if closed:
            return "closed_form"
        if cost._cvxpy_form() is not None:
            return "cvxpy"
        return "scipy"
    if solver == "closed_form" and not closed:
        raise ValueError(
            "solver='closed_form' needs QuadraticCost hitting costs and "
            f"SquaredEuclidean movement; got {type(cost).__name__} and "
            f"{type(movement).__name__}"
        )
    if solver == "cvxpy" and cost._cvxpy_form() is None:
        raise ValueError(
            f"solver='cvxpy' needs a cost with a cvxpy form; got {type(cost).__name__}"
        )
    if solver == "scipy" and movement.has_domain:
        raise ValueError(
            "solver='scipy' does not handle a movement cost with a domain; got "
            f"{movement!r}"
        )
    return solver


@functools.cache
def _installed_solvers() -> frozenset[str]:
    import cvxpy as cp

    return frozenset(cp.installed_solvers())


def cvxpy_solve(problem: Any, what: str) -> None:
    """Solve ``problem``; RuntimeError unless some attempt ends optimal.

    Attempts, in order: Clarabel at tolerance 1e-10, Clarabel at its defaults,
    SCS at tolerance 1e-9 (a first-order method, used because Clarabel
    sometimes stops at "optimal_inaccurate" on exponential cones).
    """
    import cvxpy as cp

    installed = _installed_solvers()
    attempts = []
    if cp.CLARABEL in installed:
        attempts += [(cp.CLARABEL, _CLARABEL_TIGHT), (cp.CLARABEL, {})]
    if cp.SCS in installed:
        attempts.append((cp.SCS, {"eps": 1e-9, "max_iters": 100_000}))
    if not attempts:
        attempts.append((None, {}))
    for solver, options in attempts:
        with warnings.catch_warnings():
            # cvxpy warns on "optimal_inaccurate"; such a result is retried.
            warnings.simplefilter("ignore", UserWarning)
            try:
                problem.solve(solver=solver, **options)
            except cp.error.SolverError as error:
                logger.info("%s failed on %s: %s", solver, what, error)
                continue
        if problem.status == cp.OPTIMAL:
            return
        logger.info("%s gave %s on %s; retrying", solver, problem.status, what)
    raise RuntimeError(f"cvxpy returned status {problem.status!r} for {what}")


def lbfgs(fun: Any, jac: Any, x0: np.ndarray, what: str) -> np.ndarray:
    """Minimise a smooth convex function with L-BFGS-B.

    A run that stops without scipy's success flag (often a line-search stop
    at the noise floor) is accepted when the gradient is below 1e-6 relative
    to the value; otherwise RuntimeError.
    """
    from scipy import optimize

    result = optimize.minimize(
        fun,
        x0,
        jac=jac,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 50_000, "maxcor": 30},
    )
    x = np.asarray(result.x, dtype=np.float64)
    if not result.success:
        gradient = float(np.max(np.abs(jac(x))))
        if gradient > 1e-6 * max(1.0, abs(float(result.fun))):
            raise RuntimeError(
                f"L-BFGS-B failed on {what}: {result.message} (gradient {gradient:.2e})"
            )
    return x


# --- minimiser --------------------------------------------------------------


def solve_minimizer(cost: HittingCost, movement: MovementCost | None) -> np.ndarray:
    """:math:`\\arg\\min f` over the domain of ``movement`` (all space if None)."""
    has_domain = movement is not None and movement.has_domain
    if not has_domain and isinstance(cost, QuadraticCost):
        return cost.minimizer()
    form = cost._cvxpy_form()
    if form is not None:
        return _cvxpy_minimizer(cost, movement if has_domain else None)
    if has_domain:
        raise NotImplementedError(
            f"{type(cost).__name__} over a constrained domain; use a CvxpyCost"
        )
    return _scipy_minimizer(cost)


_MINIMIZER_PROBLEMS: dict = {}


def _cvxpy_minimizer(cost: HittingCost, movement: MovementCost | None) -> np.ndarray:
    import cvxpy as cp

    form = cost._cvxpy_form()
    key = (form.key, repr(movement))
    if key not in _MINIMIZER_PROBLEMS:
        x = cp.Variable(cost.dim)
        params = form.parameters()
        constraints = [] if movement is None else movement._cvxpy_domain(x)
        problem = cp.Problem(cp.Minimize(form.build(x, params)), constraints)
        _MINIMIZER_PROBLEMS[key] = (x, params, problem)
        if len(_MINIMIZER_PROBLEMS) > 64:
            _MINIMIZER_PROBLEMS.pop(next(iter(_MINIMIZER_PROBLEMS)))
    x, params, problem = _MINIMIZER_PROBLEMS[key]
    form.assign(params)
    cvxpy_solve(problem, "the minimiser of a hitting cost")
    v = np.asarray(x.value, dtype=np.float64).reshape(cost.dim)
    _check_minimum(cost, float(problem.value))
    return v


def _scipy_minimizer(cost: HittingCost) -> np.ndarray:
    v = lbfgs(cost, cost.gradient, np.zeros(cost.dim), "the minimiser of a cost")
    _check_minimum(cost, cost(v))
    return v


def _check_minimum(cost: HittingCost, value: float) -> None:
    if value < -1e-7 * max(1.0, abs(value)):
        raise ValueError(
            "hitting costs must be >= 0 (the competitive ratio needs it); got a "
            f"cost with minimum {value!r}; add a constant to shift it"
        )


# --- regularised step (R-OBD) -------------------------------------------------


def regularized_step(
    cost: HittingCost,
    x_prev: np.ndarray,
    v: np.ndarray | None,
    lambda1: float,
    lambda2: float,
    movement: MovementCost,
    route: str,
    cache: ProblemCache,
) -> np.ndarray:
    r""":math:`\arg\min_x f(x) + \lambda_1 c(x, x_{t-1}) + \lambda_2 c(x, v)`."""
    if route == "closed_form":
        return _regularized_closed_form(cost, x_prev, lambda1, lambda2)
    if route == "cvxpy":
        return _regularized_cvxpy(cost, x_prev, v, lambda1, lambda2, movement, cache)
    return _regularized_scipy(cost, x_prev, v, lambda1, lambda2, movement)


def _regularized_closed_form(
    cost: QuadraticCost, x_prev: np.ndarray, lambda1: float, lambda2: float
) -> np.ndarray:
    # x = (A + (l1 + l2) I)^{-1} (A y + l2 y + l1 x_prev), with v = y.
    y = cost.center
    rhs = cost.apply(y) + lambda2 * y + lambda1 * x_prev
    if cost.kind == "matrix":
        system = cost.curvature + (lambda1 + lambda2) * np.eye(cost.dim)
        return np.linalg.solve(system, rhs)
    return rhs / (cost.curvature + lambda1 + lambda2)


def _regularized_cvxpy(
    cost: HittingCost,
    x_prev: np.ndarray,
    v: np.ndarray | None,
    lambda1: float,
    lambda2: float,
    movement: MovementCost,
    cache: ProblemCache,
) -> np.ndarray:
    import cvxpy as cp

    form = cost._cvxpy_form()
    key = ("regularized", form.key)
    if key not in cache:
        x = cp.Variable(cost.dim, name="x")
        params = form.parameters()
        anchor_prev = cp.Parameter(cost.dim, name="anchor_prev")
        anchor_min = cp.Parameter(cost.dim, name="anchor_min")
        objective = form.build(x, params)
        objective = objective + lambda1 * movement._cvxpy_expression(x, anchor_prev)
        if lambda2 > 0:
            objective = objective + lambda2 * movement._cvxpy_expression(x, anchor_min)
        problem = cp.Problem(cp.Minimize(objective), movement._cvxpy_domain(x))
        if not problem.is_dcp(dpp=True):
            logger.warning("R-OBD step problem is not DPP; cvxpy recompiles each step")
        cache[key] = (x, params, anchor_prev, anchor_min, problem)
    x, params, anchor_prev, anchor_min, problem = cache[key]
    form.assign(params)
    anchor_prev.value = movement._anchor_value(x_prev)
    if lambda2 > 0:
        anchor_min.value = movement._anchor_value(v)
    cvxpy_solve(problem, "the R-OBD step")
    return np.asarray(x.value, dtype=np.float64).reshape(cost.dim)


def _regularized_scipy(
    cost: HittingCost,
    x_prev: np.ndarray,
    v: np.ndarray | None,
    lambda1: float,
    lambda2: float,
    movement: MovementCost,
) -> np.ndarray:
    def fun(x: np.ndarray) -> float:
        value = cost(x) + lambda1 * movement(x, x_prev)
        if lambda2 > 0:
            value += lambda2 * movement(x, v)
        return value

    def jac(x: np.ndarray) -> np.ndarray:
        grad = cost.gradient(x) + lambda1 * movement.gradient(x, x_prev)
        if lambda2 > 0:
            grad = grad + lambda2 * movement.gradient(x, v)
        return grad

    x = lbfgs(fun, jac, x_prev, "the R-OBD step")
    _spot_check_convexity(cost, x, x_prev)
    return x


def _spot_check_convexity(cost: HittingCost, x: np.ndarray, y: np.ndarray) -> None:
    """Raise when :math:`f(y) < f(x) + g^\\top(y-x) + \\frac m2\\|y-x\\|^2`."""
    if not isinstance(cost, ConvexCost):
        return
    fx, fy = cost(x), cost(y)
    diff = y - x
    lower = fx + float(cost.gradient(x) @ diff) + 0.5 * cost.m * float(diff @ diff)
    if fy < lower - _CONVEXITY_RTOL * max(1.0, abs(fy), abs(lower)):
        raise ValueError(
            f"cost is not {cost.m:g}-strongly convex: f(y) = {fy:.6g} is below the "
            f"strong-convexity lower bound {lower:.6g} between two visited points"
        )


# --- balanced step (OBD) ------------------------------------------------------


def balanced_step(
    cost: HittingCost,
    x_prev: np.ndarray,
    v: np.ndarray,
    beta: float,
    movement: MovementCost,
    route: str,
    cache: ProblemCache,
) -> np.ndarray:
    r"""OBD's step: ``v`` if :math:`c(v, x_{t-1}) \le \beta f(v)`, else the
    projection :math:`x(l)` of :math:`x_{t-1}` onto :math:`\{f \le l\}` with
    :math:`c(x(l), x_{t-1}) = \beta l`."""
    f_v = cost(v)
    if movement(v, x_prev) <= beta * f_v:
        return v.copy()
    if route == "closed_form":
        return _balanced_quadratic(cost, x_prev, beta)
    if route == "cvxpy":
        return _balanced_cvxpy(cost, x_prev, v, f_v, beta, movement, cache)
    return _balanced_scipy(cost, x_prev, v, beta, movement)


def _balanced_quadratic(
    cost: QuadraticCost, x_prev: np.ndarray, beta: float
) -> np.ndarray:
    from scipy import optimize

    # The projection onto an ellipsoidal sublevel set is
    # x(mu) = y + (I + mu A)^{-1} (x_prev - y), mu >= 0 (KKT); the balance is
    # solved for mu, a monotone reparametrisation of the level l.
    y, h = cost.center, cost.offset
    diff = x_prev - y
    if cost.kind == "scalar":
        dist2 = float(diff @ diff)
        a_coef = 1.0 - beta * cost.curvature
        c_coef = 1.0 - 2.0 * beta * h / dist2
        shrink = c_coef / (1.0 + np.sqrt(1.0 - a_coef * c_coef))
        return y + shrink * diff
    if cost.kind == "diagonal":
        eigenvalues, z, basis = cost.curvature, diff, None
    else:
        eigenvalues, basis = _eigh_cached(cost)
        z = basis.T @ diff

    def balance(log_mu: float) -> float:
        scale = 1.0 / (1.0 + np.exp(log_mu) * eigenvalues)
        moved = 0.5 * float(np.sum(((1.0 - scale) * z) ** 2))
        hit = 0.5 * float(np.sum(eigenvalues * (scale * z) ** 2)) + h
        return moved - beta * hit

    lo, hi = _bracket(balance, -np.log(eigenvalues.max()), -np.log(eigenvalues.min()))
    log_mu = optimize.brentq(balance, lo, hi, xtol=1e-13, rtol=1e-15)
    scale = 1.0 / (1.0 + np.exp(log_mu) * eigenvalues)
    step = scale * z
    return y + (step if basis is None else basis @ step)


def _eigh_cached(cost: QuadraticCost) -> tuple[np.ndarray, np.ndarray]:
    if not hasattr(cost, "_eigh"):
        cost._eigh = np.linalg.eigh(cost.curvature)
    return cost._eigh


def _bracket(fun: Any, lo: float, hi: float) -> tuple[float, float]:
    """Widen ``[lo, hi]`` in steps of log(4) until an increasing ``fun`` changes
    sign."""
    for _ in range(200):
        if fun(hi) > 0:
            break
        hi += np.log(4.0)
    else:
        raise RuntimeError("could not bracket the OBD balance from above")
    for _ in range(200):
        if fun(lo) < 0:
            break
        lo -= np.log(4.0)
    else:
        raise RuntimeError("could not bracket the OBD balance from below")
    return lo, hi


def _balanced_cvxpy(
    cost: HittingCost,
    x_prev: np.ndarray,
    v: np.ndarray,
    f_v: float,
    beta: float,
    movement: MovementCost,
    cache: ProblemCache,
) -> np.ndarray:
    import cvxpy as cp
    from scipy import optimize

    form = cost._cvxpy_form()
    key = ("project", form.key)
    if key not in cache:
        x = cp.Variable(cost.dim, name="x")
        params = form.parameters()
        anchor = cp.Parameter(cost.dim, name="anchor_prev")
        level = cp.Parameter(name="level")
        constraints = [
            form.sublevel_constraint(x, params, level),
            *movement._cvxpy_domain(x),
        ]
        if isinstance(movement, SquaredEuclidean):
            # Same minimiser as (1/2)||x - anchor||^2, better conditioned.
            objective = cp.norm(x - anchor, 2)
        else:
            objective = movement._cvxpy_expression(x, anchor)
        problem = cp.Problem(cp.Minimize(objective), constraints)
        cache[key] = (x, params, anchor, level, problem)
    x, params, anchor, level, problem = cache[key]
    form.assign(params)
    anchor.value = movement._anchor_value(x_prev)

    f_prev = cost(x_prev)
    if not np.isfinite(f_prev):
        raise ValueError(
            f"OBD needs f_t(x_(t-1)) finite to bracket the level; got {f_prev!r}"
        )

    def project(l_value: float) -> np.ndarray:
        if l_value <= f_v:
            return v
        if l_value >= f_prev:
            return x_prev
        level.value = form.level_parameter(l_value)
        cvxpy_solve(problem, "the OBD projection")
        return np.asarray(x.value, dtype=np.float64).reshape(cost.dim)

    def balance(l_value: float) -> float:
        return movement(project(l_value), x_prev) - beta * l_value

    span = f_prev - f_v
    l_star = optimize.brentq(balance, f_v, f_prev, xtol=1e-11 * span, rtol=1e-14)
    return project(l_star)


def _balanced_scipy(
    cost: HittingCost,
    x_prev: np.ndarray,
    v: np.ndarray,
    beta: float,
    movement: MovementCost,
) -> np.ndarray:
    from scipy import optimize

    # For convex f the projection onto {f <= l} is, by KKT, the proximal point
    # argmin c(x, x_prev) + mu f(x) for some mu >= 0; solve the balance in mu.
    def prox(log_mu: float) -> np.ndarray:
        weight = np.exp(-log_mu)  # minimise weight * c + f, better scaled

        def fun(x: np.ndarray) -> float:
            return weight * movement(x, x_prev) + cost(x)

        def jac(x: np.ndarray) -> np.ndarray:
            return weight * movement.gradient(x, x_prev) + cost.gradient(x)

        return lbfgs(fun, jac, x_prev, "the OBD proximal step")

    def balance(log_mu: float) -> float:
        x = prox(log_mu)
        return movement(x, x_prev) - beta * cost(x)

    lo, hi = _bracket(balance, -np.log(cost.m) - 4.0, -np.log(cost.m) + 4.0)
    log_mu = optimize.brentq(balance, lo, hi, xtol=1e-12, rtol=1e-14)
    x = prox(log_mu)
    _spot_check_convexity(cost, x, x_prev)
    return x
