"""Tests for lemmata.online.pricing: market, equilibrium, metrics, learners."""

import numpy as np
import pytest
from scipy import optimize

from lemmata.online.pricing import (
    SETTINGS,
    BisectionPricer,
    ContextualPricer,
    DualAscentPricer,
    Market,
    PowerSupplierCost,
    PricingAlgorithm,
    QuadraticSupplierCost,
    equilibrium_price,
    equilibrium_price_cvxpy,
    make_scenario,
    quadratic_equilibrium_price,
    regret_metrics,
    simulate,
)


def _quadratic_market(rng, n=5, k=0):
    a = rng.uniform(0.5, 2.0, n)
    b = rng.uniform(0.5, 1.5, n)
    cap = rng.uniform(1.0, 3.0, n)
    theta = rng.normal(size=(n, k)) * 0.3 if k else None
    costs = [QuadraticSupplierCost(a[i], b[i], cap[i]) for i in range(n)]
    return Market(costs, theta=theta), a, b, cap


def _reference_supply(p, a, b, cap, shift=0.0):
    """Aggregate supply from the textbook formula, written independently."""
    return float(np.sum(np.clip((p - b - shift) / a, 0.0, cap)))


def _reference_price(a, b, cap, d, shift=0.0):
    """Smallest clearing price by a dense grid refined with brentq."""
    grid = np.linspace(0.0, float(np.max(b + shift + a * cap)) + 1.0, 20001)
    s = np.clip((grid[:, None] - b - shift) / a, 0.0, cap).sum(axis=1)
    j = int(np.argmax(s >= d))
    if j == 0:
        return 0.0
    return optimize.brentq(
        lambda p: _reference_supply(p, a, b, cap, shift) - d,
        grid[j - 1],
        grid[j],
        xtol=1e-14,
    )


# ---------------------------------------------------------------- equilibrium


def test_quadratic_closed_form_matches_reference(rng):
    market, a, b, cap = _quadratic_market(rng)
    for d in rng.uniform(0.05, 0.95, 8) * cap.sum():
        ref = _reference_price(a, b, cap, d)
        assert quadratic_equilibrium_price(market, d) == pytest.approx(ref, abs=1e-9)
        assert equilibrium_price(market, d, method="bisection") == pytest.approx(
            ref, abs=1e-9
        )


def test_quadratic_closed_form_with_context(rng):
    market, a, b, cap = _quadratic_market(rng, k=2)
    z = rng.normal(size=2)
    shift = market.theta @ z
    d = 0.5 * cap.sum()
    ref = _reference_price(a, b, cap, d, shift)
    assert quadratic_equilibrium_price(market, d, z) == pytest.approx(ref, abs=1e-9)


def test_cvxpy_dual_matches_closed_form(rng):
    pytest.importorskip("cvxpy")
    market, *_, cap = _quadratic_market(rng)
    for d in (0.3 * cap.sum(), 0.7 * cap.sum()):
        # Loosened to 1e-5: the dual value comes from an interior-point solve.
        assert equilibrium_price_cvxpy(market, d) == pytest.approx(
            quadratic_equilibrium_price(market, d), abs=1e-5
        )


def test_power_costs_root_finding(rng):
    alpha = rng.uniform(0.5, 2.0, 4)
    cap = rng.uniform(1.0, 3.0, 4)
    market = Market([PowerSupplierCost(alpha[i], 3.0, cap[i]) for i in range(4)])

    def supply(p):  # x = sqrt(p / alpha), capped: written from c'(x) = p
        return float(np.sum(np.minimum(np.sqrt(p / alpha), cap)))

    d = 0.6 * cap.sum()
    ref = optimize.brentq(lambda p: supply(p) - d, 0.0, 100.0, xtol=1e-14)
    for method in ("bisection", "brentq"):
        assert equilibrium_price(market, d, method=method) == pytest.approx(
            ref, abs=1e-9
        )
    pytest.importorskip("cvxpy")
    # Loosened to 1e-4: cvxpy's power cone solve has its own tolerance.
    assert equilibrium_price_cvxpy(market, d) == pytest.approx(ref, abs=1e-4)


class _SoftplusCost:
    """A cost with no closed-form response: c(x) = log(1 + e^x) - log 2."""

    capacity = 4.0

    def cost(self, x):
        return np.log1p(np.exp(x)) - np.log(2.0)

    def marginal(self, x):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))

    def best_response(self, p):
        raise NotImplementedError


def test_protocol_cost_uses_generic_best_response():
    market = Market([_SoftplusCost(), QuadraticSupplierCost(1.0, 0.0, 2.0)])
    x = market.best_responses(0.8)
    # First-order condition c'(x) = p for the interior response.
    assert 1.0 / (1.0 + np.exp(-x[0])) == pytest.approx(0.8, abs=1e-10)
    assert x[1] == pytest.approx(0.8)
    p = equilibrium_price(market, 2.0)
    assert market.supply(p) == pytest.approx(2.0, abs=1e-9)


def test_supply_monotone_and_clears(rng):
    market, *_, cap = _quadratic_market(rng)
    grid = np.linspace(0.0, 10.0, 1000)
    s = np.array([market.supply(p) for p in grid])
    assert np.all(np.diff(s) >= 0)
    for d in rng.uniform(0.0, 1.0, 5) * cap.sum():
        assert abs(market.supply(equilibrium_price(market, d)) - d) <= 1e-9


def test_smallest_clearing_price_on_flat_segment():
    # Two suppliers, the first saturates at p = 2, the second starts at p = 3:
    # demand 1 is met by every p in [2, 3]; the reference is p = 2.
    market = Market(
        [QuadraticSupplierCost(1.0, 1.0, 1.0), QuadraticSupplierCost(1.0, 3.0, 1.0)]
    )
    assert quadratic_equilibrium_price(market, 1.0) == pytest.approx(2.0)
    assert equilibrium_price(market, 1.0, method="bisection") == pytest.approx(2.0)


# ---------------------------------------------------------------- metrics


def test_regret_metrics_match_slow_loop(rng):
    market, a, b, cap = _quadratic_market(rng)
    T = 20
    d = rng.uniform(0.3, 0.8, T) * cap.sum()
    p = rng.uniform(0.0, 6.0, T)
    got = regret_metrics(market, p, d)
    for t in range(T):
        ps = _reference_price(a, b, cap, d[t])
        x = np.clip((p[t] - b) / a, 0, cap)
        xs = np.clip((ps - b) / a, 0, cap)
        cost = np.sum(0.5 * a * x**2 + b * x) - np.sum(0.5 * a * xs**2 + b * xs)
        assert got.unmet_demand[t] == pytest.approx(max(d[t] - x.sum(), 0), abs=1e-9)
        assert got.cost_regret[t] == pytest.approx(cost, abs=1e-8)
        assert got.payment_regret[t] == pytest.approx(
            p[t] * x.sum() - ps * xs.sum(), abs=1e-8
        )
    totals = got.totals()
    assert totals["unmet_demand"] == pytest.approx(got.unmet_demand.sum())
    assert totals["cost_regret_pos"] >= totals["cost_regret"]


def test_regret_zero_at_equilibrium(rng):
    market, *_, cap = _quadratic_market(rng)
    d = np.full(5, 0.5 * cap.sum())
    p = np.full(5, quadratic_equilibrium_price(market, d[0]))
    m = regret_metrics(market, p, d)
    for v in (m.unmet_demand, m.cost_regret, m.payment_regret):
        assert np.allclose(v, 0.0, atol=1e-9)


# ---------------------------------------------------------------- algorithms


def test_bisection_halves_the_error(rng):
    sc = make_scenario("fixed-constant", 30, rng)
    traj = simulate(sc.market, BisectionPricer(sc.p_lo, sc.p_hi), sc.demands)
    p_star = traj.metrics.eq_prices[0]
    width = sc.p_hi - sc.p_lo
    err = np.abs(traj.prices - p_star)
    t = np.arange(1, 31)
    assert np.all(err <= width * 0.5**t + 1e-12)


def test_bisection_regret_stops_growing(rng):
    sc = make_scenario("fixed-constant", 400, rng)
    m = simulate(sc.market, BisectionPricer(sc.p_lo, sc.p_hi), sc.demands).metrics
    for name in ("unmet_demand", "cost_regret", "payment_regret"):
        c = m.cumulative(name)
        assert c[-1] <= c[99] * 1.0 + 1e-9


def test_dual_ascent_converges_under_constant_demand(rng):
    sc = make_scenario("fixed-constant", 3000, rng)
    alg = DualAscentPricer(sc.p_lo, sc.p_hi, eta=0.5 / sc.market.total_capacity)
    traj = simulate(sc.market, alg, sc.demands)
    assert traj.prices[-1] == pytest.approx(traj.metrics.eq_prices[-1], abs=1e-6)


def test_contextual_pricer_recovers_equilibrium_with_hints(rng):
    sc = make_scenario("varying-costs-hints", 300, rng)
    alg = ContextualPricer(
        sc.p_lo, sc.p_hi, capacities=sc.market.capacities, context_dim=1
    )
    traj = simulate(sc.market, alg, sc.demands, sc.contexts)
    assert np.allclose(traj.prices[-50:], traj.metrics.eq_prices[-50:], atol=1e-8)


def test_contextual_pricer_continuous_contexts(rng):
    market, *_, cap = _quadratic_market(rng, k=2)
    T = 300
    z = rng.normal(size=(T, 2))
    d = rng.uniform(0.3, 0.8, T) * cap.sum()
    alg = ContextualPricer(0.0, 12.0, capacities=cap, context_dim=2)
    traj = simulate(market, alg, d, z)
    assert alg.identified
    assert np.allclose(traj.prices[-50:], traj.metrics.eq_prices[-50:], atol=1e-8)


def test_hidden_shocks_make_some_regret_linear(rng):
    sc = make_scenario("varying-costs", 800, rng)
    traj = simulate(
        sc.market,
        BisectionPricer(sc.p_lo, sc.p_hi),
        sc.demands,
        sc.contexts,
        reveal_contexts=False,
    )
    m = traj.metrics
    per = m.unmet_demand + np.maximum(m.payment_regret, 0)
    # The second half costs about as much as the first: no learning happens.
    assert per[400:].sum() > 0.5 * per[:400].sum() > 0


@pytest.mark.parametrize("setting", SETTINGS)
def test_scenarios_have_bracket_containing_equilibria(setting, rng):
    sc = make_scenario(setting, 50, rng)
    eq = regret_metrics(sc.market, np.zeros(50), sc.demands, sc.contexts).eq_prices
    assert np.all((sc.p_lo <= eq) & (eq <= sc.p_hi))
    assert (sc.contexts is None) == (setting.startswith("fixed"))


class _Rogue(PricingAlgorithm):
    def price(self, t, context=None, *, demand=None):
        return self.p_hi + 1.0

    def observe(self, supplies):
        pass


# ---------------------------------------------------------------- bad inputs

_MARKET = Market([QuadraticSupplierCost(1.0, 0.5, 2.0)] * 2)
_CTX_MARKET = Market([QuadraticSupplierCost(1.0, 0.5, 2.0)] * 2, theta=np.ones((2, 2)))


class _Concave:
    capacity = 2.0

    def cost(self, x):
        return np.sqrt(np.asarray(x, dtype=float))

    def marginal(self, x):
        return 0.5 / np.sqrt(np.asarray(x, dtype=float) + 1e-3)

    def best_response(self, p):
        return 0.0


BAD_INPUTS = [
    (lambda: _MARKET.check_demand(-1.0), ValueError, r"demand must be >= 0; got -1\.0"),
    (lambda: _MARKET.check_demand(5.0), ValueError, r"demand must be <= total"),
    (lambda: _MARKET.supply(-0.5), ValueError, r"price must be >= 0; got -0\.5"),
    (lambda: _MARKET.supply(float("nan")), ValueError, r"price must be finite"),
    (lambda: QuadraticSupplierCost(0.0, 1.0), ValueError, r"a must be > 0; got 0\.0"),
    (lambda: QuadraticSupplierCost(-1.0), ValueError, r"a must be > 0; got -1\.0"),
    (lambda: QuadraticSupplierCost(1.0, 0.0, -2.0), ValueError, r"capacity must be"),
    (lambda: PowerSupplierCost(1.0, 0.5), ValueError, r"beta must be > 1; got 0\.5"),
    (lambda: Market([_Concave()]), ValueError, r"nondecreasing marginal cost"),
    (lambda: Market([object()]), TypeError, r"costs\[0\] must implement"),
    (lambda: Market([]), ValueError, r"at least one supplier"),
    (
        lambda: _CTX_MARKET.supply(1.0, np.ones(3)),
        ValueError,
        r"context must have dimension 2; got 3",
    ),
    (lambda: _CTX_MARKET.supply(1.0), ValueError, r"context must be given"),
    (lambda: _MARKET.supply(1.0, np.ones(2)), ValueError, r"dimension 0"),
    (
        lambda: Market([QuadraticSupplierCost(1.0)] * 2, theta=np.ones((3, 1))),
        ValueError,
        r"theta must have 2 rows",
    ),
    (lambda: BisectionPricer(2.0, 1.0), ValueError, r"p_lo must be < p_hi"),
    (lambda: BisectionPricer(-1.0, 1.0), ValueError, r"p_lo must be >= 0"),
    (lambda: DualAscentPricer(0.0, 1.0, eta=0.0), ValueError, r"eta must be > 0"),
    (
        lambda: BisectionPricer(0.0, 1.0).price(0, demand=-1.0),
        ValueError,
        r"demand must be >= 0; got -1\.0",
    ),
    (
        lambda: ContextualPricer(0.0, 1.0, capacities=[1.0], context_dim=2).price(
            0, np.ones(3), demand=0.5
        ),
        ValueError,
        r"context must have dimension 2; got 3",
    ),
    (
        lambda: simulate(_MARKET, _Rogue(0.0, 2.0), [1.0]),
        ValueError,
        r"price must lie in \[0\.0, 2\.0\]; got 3\.0",
    ),
    (
        lambda: simulate(_MARKET, BisectionPricer(0.0, 5.0), [1.0, -1.0]),
        ValueError,
        r"demand must be >= 0",
    ),
    (
        lambda: simulate(
            _CTX_MARKET, BisectionPricer(0.0, 5.0), [1.0], np.ones((1, 3))
        ),
        ValueError,
        r"contexts must have shape \(1, 2\)",
    ),
    (
        lambda: regret_metrics(_MARKET, [1.0, 2.0], [1.0]),
        ValueError,
        r"same length",
    ),
    (
        lambda: make_scenario("nope", 10, np.random.default_rng(0)),
        ValueError,
        "setting",
    ),
    (
        lambda: make_scenario("fixed-constant", 0, np.random.default_rng(0)),
        ValueError,
        r"T must be >= 1; got 0",
    ),
    (lambda: equilibrium_price(_MARKET, 1.0, method="x"), ValueError, r"method must"),
]


@pytest.mark.parametrize("call, exc, pattern", BAD_INPUTS)
def test_bad_inputs(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
