r"""Online learning of equilibrium prices with unknown supplier costs.

A market operator must meet a demand :math:`d_t` for one commodity by buying
from :math:`n` price-taking suppliers with private convex costs. Each period
it posts a price :math:`p_t`, supplier :math:`i` answers with its best response

.. math::

    x_{i,t}(p_t) = \arg\max_{0 \le x \le \bar x_i}\;
        p_t x - c_i(x) - (\theta_i^\top z_t)\, x,

and the operator is judged on unmet demand, cost regret and payment regret
against the full-information equilibrium price :math:`p^*_t`.

Everything here follows Jalota, Sun and Azizan (arXiv:2303.11522) at the level
of its abstract; the model details, the metric conventions and the algorithms
are the reconstruction of ``shared/specs/equilibrium-pricing.md`` (the paper's
body could not be read while this was written). Every such choice is marked
[reconstruction] in the docstring that makes it.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import optimize

__all__ = [
    "SETTINGS",
    "BisectionPricer",
    "ContextualPricer",
    "DualAscentPricer",
    "Market",
    "PowerSupplierCost",
    "PricingAlgorithm",
    "QuadraticSupplierCost",
    "RegretMetrics",
    "Scenario",
    "SupplierCost",
    "Trajectory",
    "equilibrium_price",
    "equilibrium_price_cvxpy",
    "make_scenario",
    "quadratic_equilibrium_price",
    "regret_metrics",
    "simulate",
]

logger = logging.getLogger(__name__)

SETTINGS = (
    "fixed-constant",
    "fixed-varying",
    "varying-costs",
    "varying-costs-hints",
)


# --------------------------------------------------------------------------
# input checks


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value


def _positive(name: str, value: object, *, allow_inf: bool = False) -> float:
    if allow_inf and isinstance(value, numbers.Real) and value == np.inf:
        return np.inf
    value = _real(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return value


def _nonnegative(name: str, value: object) -> float:
    value = _real(name, value)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")
    return value


def _array(name: str, x: object, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be an array of real numbers; got {type(x).__name__}"
        ) from None
    if ndim == 1 and arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got a NaN or inf entry")
    return arr


# --------------------------------------------------------------------------
# supplier costs


@runtime_checkable
class SupplierCost(Protocol):
    r"""A supplier's private cost :math:`c(x)` on :math:`[0, \bar x]`.

    Implementations must be convex with :math:`c(0) = 0` and a nondecreasing
    marginal cost; :class:`Market` checks the marginal on a grid.

    Attributes
    ----------
    capacity : float
        :math:`\bar x > 0`, possibly ``inf``.
    """

    capacity: float

    def cost(self, x: np.ndarray) -> np.ndarray:
        """:math:`c(x)`, elementwise."""

    def marginal(self, x: np.ndarray) -> np.ndarray:
        """:math:`c'(x)`, elementwise (a subgradient where ``c`` has a kink)."""

    def best_response(self, p: np.ndarray) -> np.ndarray:
        r""":math:`\arg\max_{0\le x\le\bar x} p x - c(x)`, elementwise in ``p``."""


@dataclass(frozen=True)
class QuadraticSupplierCost:
    r"""Quadratic cost :math:`c(x) = \tfrac12 a x^2 + b x` on :math:`[0, \bar x]`.

    Best response: :math:`x(p) = \operatorname{clip}((p - b)/a, 0, \bar x)`.

    Parameters
    ----------
    a : float
        Curvature :math:`a > 0` (strict convexity).
    b : float
        Linear coefficient :math:`b \ge 0` (the price at which supply starts).
    capacity : float, default=inf
        :math:`\bar x > 0`.
    """

    a: float
    b: float = 0.0
    capacity: float = np.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _positive("a", self.a))
        object.__setattr__(self, "b", _nonnegative("b", self.b))
        object.__setattr__(
            self, "capacity", _positive("capacity", self.capacity, allow_inf=True)
        )

    def cost(self, x):
        x = np.asarray(x, dtype=np.float64)
        return 0.5 * self.a * x**2 + self.b * x

    def marginal(self, x):
        return self.a * np.asarray(x, dtype=np.float64) + self.b

    def best_response(self, p):
        p = np.asarray(p, dtype=np.float64)
        return np.clip((p - self.b) / self.a, 0.0, self.capacity)

    def cvxpy_cost(self, x):
        """The cost as a cvxpy expression of the variable ``x``."""
        import cvxpy as cp

        return 0.5 * self.a * cp.square(x) + self.b * x


@dataclass(frozen=True)
class PowerSupplierCost:
    r"""Power cost :math:`c(x) = \tfrac{\alpha}{\beta} x^\beta` on :math:`[0,\bar x]`.

    Marginal :math:`\alpha x^{\beta-1}`; best response
    :math:`x(p) = \operatorname{clip}((p^+/\alpha)^{1/(\beta-1)}, 0, \bar x)`.
    A second family with no affine supply curve, used to check the root
    finders on something other than quadratics.

    Parameters
    ----------
    alpha : float
        Scale :math:`\alpha > 0`.
    beta : float
        Exponent :math:`\beta > 1` (convex, increasing marginal).
    capacity : float, default=inf
        :math:`\bar x > 0`.
    """

    alpha: float
    beta: float = 3.0
    capacity: float = np.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _positive("alpha", self.alpha))
        beta = _real("beta", self.beta)
        if not beta > 1:
            raise ValueError(f"beta must be > 1; got {beta!r}")
        object.__setattr__(self, "beta", beta)
        object.__setattr__(
            self, "capacity", _positive("capacity", self.capacity, allow_inf=True)
        )

    def cost(self, x):
        x = np.asarray(x, dtype=np.float64)
        return self.alpha / self.beta * np.abs(x) ** self.beta

    def marginal(self, x):
        x = np.asarray(x, dtype=np.float64)
        return self.alpha * np.abs(x) ** (self.beta - 1)

    def best_response(self, p):
        p = np.maximum(np.asarray(p, dtype=np.float64), 0.0)
        return np.minimum((p / self.alpha) ** (1.0 / (self.beta - 1)), self.capacity)

    def cvxpy_cost(self, x):
        """The cost as a cvxpy expression of the variable ``x``."""
        import cvxpy as cp

        return self.alpha / self.beta * cp.power(x, self.beta)


def _generic_best_response(cost: SupplierCost, p: float) -> float:
    """Solve c'(x) = p on [0, cap] for a cost without a closed-form response."""
    cap = cost.capacity if np.isfinite(cost.capacity) else 1e6
    if float(cost.marginal(0.0)) >= p:
        return 0.0
    if float(cost.marginal(cap)) <= p:
        return float(cap)
    return optimize.brentq(lambda x: float(cost.marginal(x)) - p, 0.0, cap)


def _check_cost(i: int, cost: object) -> None:
    if not isinstance(cost, SupplierCost):
        raise TypeError(
            f"costs[{i}] must implement SupplierCost (capacity, cost, marginal, "
            f"best_response); got {type(cost).__name__}"
        )
    cap = cost.capacity if np.isfinite(cost.capacity) else 10.0
    grid = np.linspace(0.0, cap, 65)
    marginal = np.asarray(cost.marginal(grid), dtype=np.float64)
    if np.any(np.diff(marginal) < -1e-9 * (1 + np.abs(marginal[:-1]))):
        raise ValueError(
            f"costs[{i}] must have a nondecreasing marginal cost (convex cost); "
            f"got a decrease on [0, {cap:g}]"
        )
    if abs(float(cost.cost(0.0))) > 1e-12:
        raise ValueError(f"costs[{i}] must have cost(0) == 0; got {cost.cost(0.0)!r}")


# --------------------------------------------------------------------------
# the market


class Market:
    r"""Price-taking suppliers with private convex costs and context shifts.

    In period :math:`t` supplier :math:`i` has cost
    :math:`c_{i,t}(x) = c_i(x) + (\theta_i^\top z_t)\,x`, so at price :math:`p`
    it supplies :math:`x_{i,t}(p) = x_i(p - \theta_i^\top z_t)`, where
    :math:`x_i` is the best response of ``costs[i]``. Aggregate supply
    :math:`S_t(p) = \sum_i x_{i,t}(p)` is nondecreasing in :math:`p`.

    Parameters
    ----------
    costs : sequence of SupplierCost
        :math:`c_i`, one per supplier.
    theta : array_like of shape (n_suppliers, context_dim), optional
        :math:`\theta_i`, the marginal-cost shift per unit of context. ``None``
        means no context (``context_dim = 0``).

    Notes
    -----
    [reconstruction] Contexts entering linearly in the marginal cost follow the
    spec's proposal; the paper's hint model is not known here.

    References
    ----------
    .. [1] Jalota, Sun, Azizan. "Online Learning for Equilibrium Pricing in
       Markets under Incomplete Information." arXiv:2303.11522 (v3).
    """

    def __init__(self, costs: Sequence[SupplierCost], theta=None) -> None:
        costs = list(costs)
        if not costs:
            raise ValueError("costs must hold at least one supplier; got 0")
        for i, c in enumerate(costs):
            _check_cost(i, c)
        self.costs = costs
        self.n_suppliers = len(costs)
        if theta is None:
            self.theta = np.zeros((self.n_suppliers, 0))
        else:
            theta = _array("theta", theta, 2)
            if theta.shape[0] != self.n_suppliers:
                raise ValueError(
                    f"theta must have {self.n_suppliers} rows (one per supplier); "
                    f"got shape {theta.shape}"
                )
            self.theta = theta
        self.context_dim = self.theta.shape[1]
        self.capacities = np.array([c.capacity for c in costs], dtype=np.float64)
        self.total_capacity = float(self.capacities.sum())
        self._quadratic = all(isinstance(c, QuadraticSupplierCost) for c in costs)
        if self._quadratic:
            self._a = np.array([c.a for c in costs])
            self._b = np.array([c.b for c in costs])

    def shift(self, context=None) -> np.ndarray:
        r""":math:`\theta_i^\top z_t` for each supplier, shape (n_suppliers,)."""
        if self.context_dim == 0:
            if context is not None and np.size(context) != 0:
                raise ValueError(
                    f"context must have dimension 0 (the market has no theta); "
                    f"got {np.size(context)}"
                )
            return np.zeros(self.n_suppliers)
        if context is None:
            raise ValueError(
                f"context must be given with dimension {self.context_dim}; got None"
            )
        z = _array("context", context, 1)
        if z.shape[0] != self.context_dim:
            raise ValueError(
                f"context must have dimension {self.context_dim}; got {z.shape[0]}"
            )
        return self.theta @ z

    def best_responses(self, price: float, context=None) -> np.ndarray:
        """Each supplier's quantity :math:`x_{i,t}(p)`, shape (n_suppliers,)."""
        price = _real("price", price)
        if price < 0:
            raise ValueError(f"price must be >= 0; got {price!r}")
        shifted = price - self.shift(context)
        if self._quadratic:
            return np.clip((shifted - self._b) / self._a, 0.0, self.capacities)
        out = np.empty(self.n_suppliers)
        for i, c in enumerate(self.costs):
            try:
                out[i] = float(c.best_response(shifted[i]))
            except NotImplementedError:
                out[i] = _generic_best_response(c, shifted[i])
        return out

    def supply(self, price: float, context=None) -> float:
        """Aggregate supply :math:`S_t(p)`."""
        return float(self.best_responses(price, context).sum())

    def total_cost(self, quantities, context=None) -> float:
        r""":math:`\sum_i c_{i,t}(x_i)` for quantities of shape (n_suppliers,)."""
        x = np.asarray(quantities, dtype=np.float64)
        base = sum(float(c.cost(x[i])) for i, c in enumerate(self.costs))
        return base + float(self.shift(context) @ x)

    def check_demand(self, demand: float) -> float:
        """``demand`` as a float; ValueError if negative or above capacity."""
        demand = _real("demand", demand)
        if demand < 0:
            raise ValueError(f"demand must be >= 0; got {demand!r}")
        if demand > self.total_capacity:
            raise ValueError(
                f"demand must be <= total capacity {self.total_capacity:g} "
                f"(infeasible otherwise); got {demand!r}"
            )
        return demand


# --------------------------------------------------------------------------
# equilibrium prices


def _clear_affine(slope, intercept, cap, demand: float, p_lo: float = 0.0):
    r"""Smallest :math:`p \ge p_{lo}` with
    :math:`\sum_i \operatorname{clip}(\sigma_i p + \beta_i, 0, \bar x_i) \ge d`.

    The sum is piecewise affine with knots where a term hits 0 or its cap, so
    the crossing is found exactly by interpolating between two knots. Returns
    ``inf`` when the demand is never met. ``slope`` must be > 0.
    """
    knots = np.concatenate([-intercept / slope, (cap - intercept) / slope, [p_lo]])
    knots = np.unique(knots[np.isfinite(knots) & (knots >= p_lo)])
    S = np.clip(slope * knots[:, None] + intercept, 0.0, cap).sum(axis=1)
    if S[0] >= demand:
        return float(knots[0])
    above = np.flatnonzero(S >= demand)
    if above.size:
        j = above[0]
        lo, hi = knots[j - 1], knots[j]
        return float(lo + (demand - S[j - 1]) * (hi - lo) / (S[j] - S[j - 1]))
    last = knots[-1]
    active = (slope * last + intercept >= 0) & ~np.isfinite(cap)
    rate = float(slope[active].sum())
    return float(last + (demand - S[-1]) / rate) if rate > 0 else np.inf


def quadratic_equilibrium_price(market: Market, demand: float, context=None) -> float:
    r"""Closed-form :math:`p^* = \min\{p \ge 0 : S(p) \ge d\}` for quadratic costs.

    :math:`S(p) = \sum_i \operatorname{clip}((p - b_i - s_i)/a_i, 0, \bar x_i)`
    with :math:`s_i = \theta_i^\top z` is piecewise affine, with knots at
    :math:`b_i + s_i` and :math:`b_i + s_i + a_i \bar x_i`; the price is read
    off the segment on which :math:`S` crosses :math:`d`.

    Parameters
    ----------
    market : Market
        All costs must be :class:`QuadraticSupplierCost`.
    demand : float
        :math:`d \in [0, \sum_i \bar x_i]`.
    context : array_like of shape (context_dim,), optional
        :math:`z`.
    """
    if not market._quadratic:
        raise TypeError("market must have only QuadraticSupplierCost suppliers")
    demand = market.check_demand(demand)
    a = market._a
    b = market._b + market.shift(context)
    return _clear_affine(1.0 / a, -b / a, market.capacities, demand)


def equilibrium_price(
    market: Market,
    demand: float,
    context=None,
    *,
    method: str = "auto",
    p_max: float | None = None,
    tol: float = 1e-12,
) -> float:
    r"""Full-information equilibrium price :math:`p^* = \min\{p : S(p) \ge d\}`.

    The smallest clearing price: where :math:`S` is flat the clearing price is
    not unique, and the smallest one is the reference throughout.

    Parameters
    ----------
    market : Market
    demand : float
        :math:`d \in [0, \sum_i \bar x_i]`.
    context : array_like, optional
        :math:`z`, when the market has context shifts.
    method : {"auto", "closed-form", "bisection", "brentq"}
        ``"auto"`` uses the closed form on quadratic markets, bisection
        otherwise. ``"brentq"`` solves :math:`S(p) = d` with
        :func:`scipy.optimize.brentq` (valid when :math:`S` is strictly
        increasing around :math:`p^*`).
    p_max : float, optional
        Upper end of the search; grown by doubling when not given.
    tol : float, default=1e-12
        Bracket width at which bisection stops (relative to ``max(1, p)``).
    """
    demand = market.check_demand(demand)
    methods = ("auto", "closed-form", "bisection", "brentq")
    if method not in methods:
        raise ValueError(f"method must be one of {list(methods)}; got {method!r}")
    if method == "closed-form" or (method == "auto" and market._quadratic):
        return quadratic_equilibrium_price(market, demand, context)
    if demand == 0:
        return 0.0
    hi = 1.0 if p_max is None else _positive("p_max", p_max)
    while market.supply(hi, context) < demand:
        if p_max is not None:
            raise ValueError(
                f"p_max must clear the demand (S(p_max) >= d); got p_max={hi!r}"
            )
        hi *= 2.0
    if method == "brentq":
        return float(
            optimize.brentq(
                lambda p: market.supply(p, context) - demand, 0.0, hi, xtol=tol
            )
        )
    lo = 0.0
    while hi - lo > tol * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):  # floating-point stagnation
            break
        if market.supply(mid, context) >= demand:
            hi = mid
        else:
            lo = mid
    return hi


def equilibrium_price_cvxpy(market: Market, demand: float, context=None) -> float:
    r""":math:`p^*` as the dual variable of the social-cost problem (cvxpy).

    .. math::

        \min_x \sum_i c_{i,t}(x_i) \quad \text{s.t.}\quad
        \sum_i x_i \ge d,\; 0 \le x_i \le \bar x_i

    The dual of the demand constraint is :math:`p^*`. Every cost must offer a
    ``cvxpy_cost(x)`` method. Where the clearing price is not unique the
    solver returns one of them.
    """
    import cvxpy as cp

    demand = market.check_demand(demand)
    s = market.shift(context)
    x = cp.Variable(market.n_suppliers, nonneg=True)
    objective = sum(c.cvxpy_cost(x[i]) for i, c in enumerate(market.costs))
    cons = [cp.sum(x) >= demand]
    finite = np.isfinite(market.capacities)
    if np.any(finite):
        cons.append(x[np.flatnonzero(finite)] <= market.capacities[finite])
    problem = cp.Problem(cp.Minimize(objective + s @ x), cons)
    problem.solve()
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"cvxpy did not solve the problem; status {problem.status}")
    return float(cons[0].dual_value)


# --------------------------------------------------------------------------
# regret metrics


@dataclass(frozen=True)
class RegretMetrics:
    r"""The paper's three metrics, per period and summed.

    Attributes
    ----------
    unmet_demand : ndarray of shape (T,)
        :math:`u_t = (d_t - S_t(p_t))^+`.
    cost_regret : ndarray of shape (T,)
        :math:`\sum_i c_{i,t}(x_{i,t}(p_t)) - \sum_i c_{i,t}(x^*_{i,t})`, signed.
    payment_regret : ndarray of shape (T,)
        :math:`p_t S_t(p_t) - p^*_t S_t(p^*_t)`, signed.
    eq_prices : ndarray of shape (T,)
        :math:`p^*_t`.
    """

    unmet_demand: np.ndarray
    cost_regret: np.ndarray
    payment_regret: np.ndarray
    eq_prices: np.ndarray

    def cumulative(self, name: str, *, absolute: bool = True) -> np.ndarray:
        """Running sums of one metric; of per-period absolute values by default."""
        values = getattr(self, name)
        return np.cumsum(np.abs(values) if absolute else values)

    def totals(self) -> dict[str, float]:
        """Signed sums and sums of positive parts, keyed by metric name."""
        out = {}
        for name in ("unmet_demand", "cost_regret", "payment_regret"):
            v = getattr(self, name)
            out[name] = float(v.sum())
            out[name + "_pos"] = float(np.maximum(v, 0).sum())
        return out


def regret_metrics(market: Market, prices, demands, contexts=None) -> RegretMetrics:
    r"""Unmet demand, cost regret and payment regret of a price sequence.

    .. math::

        U_T = \sum_t (d_t - S_t(p_t))^+,\quad
        C_T = \sum_t \sum_i \bigl[c_{i,t}(x_{i,t}(p_t)) - c_{i,t}(x_{i,t}(p^*_t))
        \bigr],\quad
        P_T = \sum_t \bigl[p_t S_t(p_t) - p^*_t S_t(p^*_t)\bigr]

    Parameters
    ----------
    market : Market
    prices : array_like of shape (T,)
        :math:`p_t`.
    demands : array_like of shape (T,)
        :math:`d_t`.
    contexts : array_like of shape (T, context_dim), optional
        :math:`z_t` (the true ones, whether or not the algorithm saw them).

    Notes
    -----
    [reconstruction] The three definitions are the spec's: unmet demand per
    period with a positive part; cost regret signed (buying less than
    :math:`d_t` makes it negative; :meth:`RegretMetrics.totals` also gives the
    positive part); payment :math:`p_t S_t(p_t)`, i.e. the operator pays for
    all that is supplied.

    References
    ----------
    .. [1] Jalota, Sun, Azizan. "Online Learning for Equilibrium Pricing in
       Markets under Incomplete Information." arXiv:2303.11522 (v3).
    """
    prices = _array("prices", prices, 1)
    demands = _array("demands", demands, 1)
    if prices.shape != demands.shape:
        raise ValueError(
            f"prices and demands must have the same length; got {prices.shape[0]} "
            f"and {demands.shape[0]}"
        )
    T = prices.shape[0]
    ctx = _contexts(market, contexts, T)
    u = np.empty(T)
    c = np.empty(T)
    pay = np.empty(T)
    eq = np.empty(T)
    for t in range(T):
        z = None if ctx is None else ctx[t]
        d = market.check_demand(demands[t])
        eq[t] = equilibrium_price(market, d, z)
        x = market.best_responses(prices[t], z)
        x_star = market.best_responses(eq[t], z)
        u[t] = max(d - x.sum(), 0.0)
        c[t] = market.total_cost(x, z) - market.total_cost(x_star, z)
        pay[t] = prices[t] * x.sum() - eq[t] * x_star.sum()
    return RegretMetrics(u, c, pay, eq)


def _contexts(market: Market, contexts, T: int):
    if contexts is None:
        if market.context_dim:
            raise ValueError(
                f"contexts must be given with shape ({T}, {market.context_dim}); "
                "got None"
            )
        return None
    ctx = _array("contexts", contexts, 2)
    if ctx.shape != (T, market.context_dim):
        raise ValueError(
            f"contexts must have shape ({T}, {market.context_dim}); got {ctx.shape}"
        )
    return ctx


# --------------------------------------------------------------------------
# online algorithms


class PricingAlgorithm:
    """Interface: ``price(t, context, demand=...) -> p_t`` then ``observe(x_t)``.

    ``observe`` receives each supplier's quantity at the posted price, shape
    (n_suppliers,); algorithms that only need the aggregate sum it.

    Parameters
    ----------
    p_lo, p_hi : float
        The allowed price range :math:`[p_{lo}, p_{hi}]`; every posted price
        lies in it.
    """

    def __init__(self, p_lo: float, p_hi: float) -> None:
        p_lo = _nonnegative("p_lo", p_lo)
        p_hi = _real("p_hi", p_hi)
        if not p_lo < p_hi:
            raise ValueError(f"p_lo must be < p_hi; got p_lo={p_lo!r}, p_hi={p_hi!r}")
        self.p_lo, self.p_hi = p_lo, p_hi

    def price(self, t: int, context=None, *, demand: float | None = None) -> float:
        raise NotImplementedError

    def observe(self, supplies) -> None:
        raise NotImplementedError

    def _need_demand(self, demand) -> float:
        if demand is None:
            raise ValueError(f"demand must be given to {type(self).__name__}.price")
        demand = _real("demand", demand)
        if demand < 0:
            raise ValueError(f"demand must be >= 0; got {demand!r}")
        return demand


class BisectionPricer(PricingAlgorithm):
    r"""Monotone bracketing: bisection on price, indexed by the current demand.

    Keeps every observed pair :math:`(p_s, S(p_s))`. For demand :math:`d_t`
    the tightest bracket the data allows is

    .. math::

        L_t = \max(\{p_{lo}\} \cup \{p_s : S(p_s) < d_t\}),\qquad
        H_t = \min(\{p_{hi}\} \cup \{p_s : S(p_s) \ge d_t\}),

    and the posted price is :math:`p_t = (L_t + H_t)/2`. Under constant demand
    this is plain bisection, so :math:`|p_t - p^*| \le 2^{-t}(p_{hi}-p_{lo})`
    and, with Lipschitz supply, all three regrets are :math:`O(1)`. Under
    varying demand it bisects the bracket of each new :math:`d_t`.

    Parameters
    ----------
    p_lo, p_hi : float
        Bracket known to contain every :math:`p^*_t`.
    tol : float, default=1e-15
        Once :math:`H_t - L_t < \text{tol}\cdot\max(1, H_t)`, post :math:`H_t`
        (which clears the demand) instead of refining further.

    Notes
    -----
    [reconstruction] The paper's constant-demand algorithm is not known here;
    this is the spec's bisection. Extending it to varying demand by keeping all
    observations (a monotone interpolant) is our choice, labelled in the spec as
    a non-paper option. It needs fixed costs: with hidden cost shocks the
    observations contradict each other, and the bracket is reset to
    :math:`[p_{lo}, p_{hi}]` whenever they do.

    References
    ----------
    .. [1] Jalota, Sun, Azizan. "Online Learning for Equilibrium Pricing in
       Markets under Incomplete Information." arXiv:2303.11522 (v3).
    """

    def __init__(self, p_lo: float, p_hi: float, *, tol: float = 1e-15) -> None:
        super().__init__(p_lo, p_hi)
        self.tol = _positive("tol", tol)
        self._p = np.empty(64)  # observed prices, first _n entries used
        self._s = np.empty(64)  # observed aggregate supplies
        self._n = 0
        self._pending: float | None = None

    def price(self, t, context=None, *, demand=None):
        d = self._need_demand(demand)
        p = self._p[: self._n]
        s = self._s[: self._n]
        below = p[s < d]
        above = p[s >= d]
        lo = max(self.p_lo, below.max()) if below.size else self.p_lo
        hi = min(self.p_hi, above.min()) if above.size else self.p_hi
        if lo > hi:  # contradicting observations: costs are not fixed
            self._n = 0
            lo, hi = self.p_lo, self.p_hi
        price = hi if hi - lo < self.tol * max(1.0, hi) else 0.5 * (lo + hi)
        self._pending = price
        return price

    def observe(self, supplies):
        if self._pending is None:
            raise RuntimeError("observe called before price")
        if self._n == self._p.shape[0]:
            self._p = np.concatenate([self._p, np.empty_like(self._p)])
            self._s = np.concatenate([self._s, np.empty_like(self._s)])
        self._p[self._n] = self._pending
        self._s[self._n] = float(np.sum(supplies))
        self._n += 1
        self._pending = None


class DualAscentPricer(PricingAlgorithm):
    r"""Projected online gradient ascent on the price (dual) variable.

    .. math::

        p_{t+1} = \Pi_{[p_{lo}, p_{hi}]}\bigl(p_t + \eta\,(d_t - S_t(p_t))\bigr)

    :math:`d_t - S_t(p_t)` is a supergradient of the operator's dual
    :math:`\min_x \sum_i c_{i,t}(x_i) + p(d_t - \sum_i x_i)`; with
    :math:`\eta = (p_{hi}-p_{lo})/(G\sqrt{T})` this is Zinkevich's OGD.

    Parameters
    ----------
    p_lo, p_hi : float
        Price range.
    eta : float
        Step size :math:`\eta > 0`.
    p0 : float, optional
        First price; the middle of the range by default.
    anytime : bool, default=False
        Use :math:`\eta_t = \eta/\sqrt{t+1}` instead of a constant
        :math:`\eta`, so one run serves every horizon.

    Notes
    -----
    [reconstruction] The spec's algorithm B. It posts :math:`p_t` without using
    :math:`d_t`, so against the per-period equilibrium it cannot follow i.i.d.
    demand: it is a baseline here, and the price it converges to clears the
    *mean* demand.

    References
    ----------
    .. [1] Jalota, Sun, Azizan. "Online Learning for Equilibrium Pricing in
       Markets under Incomplete Information." arXiv:2303.11522 (v3).
    """

    def __init__(
        self, p_lo, p_hi, *, eta: float, p0: float | None = None, anytime=False
    ) -> None:
        super().__init__(p_lo, p_hi)
        self.eta = _positive("eta", eta)
        p0 = 0.5 * (self.p_lo + self.p_hi) if p0 is None else _real("p0", p0)
        if not self.p_lo <= p0 <= self.p_hi:
            raise ValueError(f"p0 must lie in [p_lo, p_hi]; got {p0!r}")
        self.anytime = bool(anytime)
        self._p = p0
        self._t = 0
        self._d: float | None = None

    def price(self, t, context=None, *, demand=None):
        self._d = self._need_demand(demand)
        return self._p

    def observe(self, supplies):
        if self._d is None:
            raise RuntimeError("observe called before price")
        eta = self.eta / np.sqrt(self._t + 1) if self.anytime else self.eta
        step = self._p + eta * (self._d - float(np.sum(supplies)))
        self._t += 1
        self._p = float(np.clip(step, self.p_lo, self.p_hi))
        self._d = None


def _van_der_corput(i: int) -> float:
    """The i-th point (i >= 1) of the base-2 van der Corput sequence."""
    out, scale = 0.0, 0.5
    while i:
        out += scale * (i & 1)
        i >>= 1
        scale *= 0.5
    return out


class ContextualPricer(PricingAlgorithm):
    r"""Least-squares cost estimation from hints, then market clearing.

    Assumes the quadratic family with context shifts, in which an unclipped
    response is linear in :math:`(p, 1, z)`:

    .. math::

        x_{i,t} = \frac{p_t - b_i - \theta_i^\top z_t}{a_i}
                = w_i^\top (p_t, 1, z_t) \qquad (0 < x_{i,t} < \bar x_i).

    :math:`w_i` is fitted by least squares on the unclipped observations of
    supplier :math:`i`. Once every supplier is identified (its design has full
    rank :math:`k + 2`), the posted price solves
    :math:`\sum_i \operatorname{clip}(\hat w_i^\top(p,1,z_t), 0, \bar x_i)
    = d_t` by bisection on :math:`[p_{lo}, p_{hi}]`. Before that, it explores
    with :class:`BisectionPricer`, one per distinct context value (so a finite
    set of hints is handled exactly even if some supplier is never identified).

    Parameters
    ----------
    p_lo, p_hi : float
        Price range.
    capacities : array_like of shape (n_suppliers,)
        :math:`\bar x_i` (assumed public).
    context_dim : int
        :math:`k`, the dimension of :math:`z_t`.

    Notes
    -----
    [reconstruction] The spec's algorithm C; the paper's contextual algorithm
    and hint model are not known here. Observing each supplier's quantity (not
    only the aggregate), public capacities and the per-context bisection used
    for exploration are our choices. Costs are noise-free, so once the
    marginal suppliers are identified the regret stops growing.

    References
    ----------
    .. [1] Jalota, Sun, Azizan. "Online Learning for Equilibrium Pricing in
       Markets under Incomplete Information." arXiv:2303.11522 (v3).
    """

    def __init__(self, p_lo, p_hi, *, capacities, context_dim: int) -> None:
        super().__init__(p_lo, p_hi)
        self.capacities = _array("capacities", capacities, 1)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int):
            raise TypeError(
                f"context_dim must be an int; got {type(context_dim).__name__}"
            )
        if context_dim < 0:
            raise ValueError(f"context_dim must be >= 0; got {context_dim}")
        self.context_dim = context_dim
        n = self.capacities.shape[0]
        self._rows: list[list[np.ndarray]] = [[] for _ in range(n)]
        self._ys: list[list[float]] = [[] for _ in range(n)]
        self._w: list[np.ndarray | None] = [None] * n
        self._explorers: dict[tuple, BisectionPricer] = {}
        self._active: BisectionPricer | None = None
        self._feat: np.ndarray | None = None

    @property
    def identified(self) -> bool:
        """Whether every supplier's response model has been fitted."""
        return all(w is not None for w in self._w)

    def _context(self, context) -> np.ndarray:
        if not self.context_dim:
            return np.zeros(0)
        if context is None:
            raise ValueError(
                f"context must be given with dimension {self.context_dim}; got None"
            )
        z = _array("context", context, 1)
        if z.shape[0] != self.context_dim:
            raise ValueError(
                f"context must have dimension {self.context_dim}; got {z.shape[0]}"
            )
        return z

    def price(self, t, context=None, *, demand=None):
        d = self._need_demand(demand)
        z = self._context(context)
        self._active = None
        if not self.identified:
            key = tuple(np.round(z, 12))
            explorer = self._explorers.get(key)
            if explorer is None:
                # A new context starts at the next van der Corput point of the
                # range, so that unseen contexts (continuous hints) still get
                # varied prices and the least-squares design gains rank.
                explorer = self._explorers[key] = BisectionPricer(self.p_lo, self.p_hi)
                price = self.p_lo + (self.p_hi - self.p_lo) * _van_der_corput(
                    len(self._explorers)
                )
                explorer._pending = price
            else:
                price = explorer.price(t, demand=d)
            self._active = explorer
        else:
            W = np.asarray(self._w)  # (n_suppliers, k + 2)
            intercept = W[:, 1] + W[:, 2:] @ z
            price = _clear_affine(W[:, 0], intercept, self.capacities, d, self.p_lo)
            price = float(min(price, self.p_hi))
        self._feat = np.concatenate([[price, 1.0], z])
        return price

    def observe(self, supplies):
        if self._feat is None:
            raise RuntimeError("observe called before price")
        x = _array("supplies", supplies, 1)
        if x.shape != self.capacities.shape:
            raise ValueError(
                f"supplies must have shape {self.capacities.shape}; got {x.shape}"
            )
        if self._active is not None:
            self._active.observe(x)
        k = self._feat.shape[0]
        for i, xi in enumerate(x):
            cap = self.capacities[i]
            margin = 1e-9 * max(1.0, cap if np.isfinite(cap) else 1.0)
            if not margin < xi < cap - margin:
                continue
            if self._w[i] is not None:
                continue
            # Noise-free responses: keep only rows that raise the rank, and
            # solve once there are k independent ones.
            X = np.asarray(self._rows[i] + [self._feat])
            if np.linalg.matrix_rank(X) == X.shape[0]:
                self._rows[i].append(self._feat)
                self._ys[i].append(float(xi))
            if len(self._rows[i]) == k:
                X = np.asarray(self._rows[i])
                self._w[i] = np.linalg.solve(X, np.asarray(self._ys[i]))
        self._feat = None


# --------------------------------------------------------------------------
# simulation and scenarios


@dataclass(frozen=True)
class Trajectory:
    """What :func:`simulate` returns.

    Attributes
    ----------
    prices : ndarray of shape (T,)
    supplies : ndarray of shape (T, n_suppliers)
    metrics : RegretMetrics
    """

    prices: np.ndarray
    supplies: np.ndarray
    metrics: RegretMetrics


def simulate(
    market: Market,
    algorithm: PricingAlgorithm,
    demands,
    contexts=None,
    *,
    reveal_contexts: bool = True,
) -> Trajectory:
    """Run ``algorithm`` on ``market`` for ``len(demands)`` periods.

    Each period the algorithm sees ``t``, the demand ``d_t`` and (if
    ``reveal_contexts``) the context ``z_t``, posts a price, and observes each
    supplier's best response to it.

    Parameters
    ----------
    market : Market
    algorithm : PricingAlgorithm
    demands : array_like of shape (T,)
    contexts : array_like of shape (T, context_dim), optional
        The true contexts that shift costs.
    reveal_contexts : bool, default=True
        ``False`` hides the contexts from the algorithm (time-varying costs
        without hints).
    """
    demands = _array("demands", demands, 1)
    T = demands.shape[0]
    if T < 1:
        raise ValueError(f"demands must have length T >= 1; got {T}")
    for d in demands:
        market.check_demand(d)
    ctx = _contexts(market, contexts, T)
    prices = np.empty(T)
    supplies = np.empty((T, market.n_suppliers))
    for t in range(T):
        z = None if ctx is None else ctx[t]
        p = algorithm.price(t, z if reveal_contexts else None, demand=demands[t])
        if not algorithm.p_lo <= p <= algorithm.p_hi:
            raise ValueError(
                f"price must lie in [{algorithm.p_lo}, {algorithm.p_hi}]; got {p!r}"
            )
        prices[t] = p
        supplies[t] = market.best_responses(p, z)
        algorithm.observe(supplies[t])
    return Trajectory(prices, supplies, regret_metrics(market, prices, demands, ctx))


@dataclass(frozen=True)
class Scenario:
    """A market, its demands and contexts, and a bracket for the algorithms.

    Attributes
    ----------
    setting : str
        One of :data:`SETTINGS`.
    market : Market
    demands : ndarray of shape (T,)
    contexts : ndarray of shape (T, context_dim) or None
    reveal_contexts : bool
        Whether the algorithms may see the contexts (hints).
    p_lo, p_hi : float
        A price range holding every :math:`p^*_t`.
    """

    setting: str
    market: Market
    demands: np.ndarray
    contexts: np.ndarray | None
    reveal_contexts: bool
    p_lo: float
    p_hi: float


def make_scenario(
    setting: str,
    T: int,
    rng: np.random.Generator,
    *,
    n_suppliers: int = 5,
    shock: float = 0.5,
) -> Scenario:
    r"""One of the four settings, drawn from ``rng``.

    Suppliers: :math:`a_i \sim U[0.5, 2]`, :math:`b_i \sim U[0.5, 1.5]`,
    :math:`\bar x_i \sim U[1, 3]`.

    - ``"fixed-constant"``: :math:`d_t = 0.6\sum_i\bar x_i`.
    - ``"fixed-varying"``: :math:`d_t \sim U[0.3, 0.8]\cdot\sum_i \bar x_i`.
    - ``"varying-costs"``: constant demand; marginal costs shift by
      :math:`\Delta s_t` with :math:`s_t = \pm 1` i.i.d., hidden.
    - ``"varying-costs-hints"``: the same, with :math:`s_t` revealed.

    Parameters
    ----------
    setting : str
        One of :data:`SETTINGS`.
    T : int
        Horizon, >= 1.
    rng : numpy.random.Generator
    n_suppliers : int, default=5
    shock : float, default=0.5
        :math:`\Delta`, the size of the cost shock.

    Notes
    -----
    [reconstruction] The spec's settings, with :math:`b_i \ge 0.5` (not
    :math:`U[0,1]`) so that :math:`b_i - \Delta \ge 0` and prices stay
    nonnegative.

    References
    ----------
    .. [1] Jalota, Sun, Azizan. "Online Learning for Equilibrium Pricing in
       Markets under Incomplete Information." arXiv:2303.11522 (v3).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {list(SETTINGS)}; got {setting!r}")
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise TypeError(f"T must be an int; got {type(T).__name__}")
    if T < 1:
        raise ValueError(f"T must be >= 1; got {T}")
    shock = _nonnegative("shock", shock)
    a = rng.uniform(0.5, 2.0, n_suppliers)
    b = rng.uniform(0.5, 1.5, n_suppliers)
    cap = rng.uniform(1.0, 3.0, n_suppliers)
    costs = [QuadraticSupplierCost(a[i], b[i], cap[i]) for i in range(n_suppliers)]
    total = cap.sum()
    if setting == "fixed-varying":
        demands = rng.uniform(0.3, 0.8, T) * total
    else:
        demands = np.full(T, 0.6 * total)
    if setting.startswith("varying-costs"):
        market = Market(costs, theta=np.full((n_suppliers, 1), shock))
        contexts = rng.choice([-1.0, 1.0], size=(T, 1))
    else:
        market = Market(costs)
        contexts = None
    p_hi = float(np.max(b + a * cap) + shock) * 1.05
    return Scenario(
        setting, market, demands, contexts, setting.endswith("hints"), 0.0, p_hi
    )
