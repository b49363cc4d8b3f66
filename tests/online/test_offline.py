"""Offline optimum, competitive ratio and regret against independent references."""

import math

import numpy as np
import pytest

from lemmata.online import (
    OBD,
    BregmanDivergence,
    ConvexCost,
    FollowTheMinimizer,
    GreedyOBD,
    NegativeEntropy,
    PNormPotential,
    QuadraticCost,
    RegularizedOBD,
    StayPut,
    best_fixed_point,
    competitive_lower_bound,
    competitive_ratio,
    offline_optimum,
    robd_competitive_bound,
    static_regret,
    total_cost,
    trajectory_cost,
)


def _random_quadratics(rng, kind, T=8, d=3, m=0.1):
    centers = np.cumsum(rng.normal(size=(T, d)), axis=0)
    costs = []
    for y in centers:
        spectrum = m * np.exp(rng.uniform(0, np.log(10), d))
        if kind == "scalar":
            curvature = m
        elif kind == "diagonal":
            curvature = spectrum
        else:
            q = np.linalg.qr(rng.normal(size=(d, d)))[0]
            curvature = q @ np.diag(spectrum) @ q.T
        costs.append(QuadraticCost(y, curvature, offset=0.1))
    return costs


def test_offline_hand_checked_two_rounds():
    # f_t = (1/2)(x - 1)^2, x0 = 0: 3 x1 - x2 = 1 and 2 x2 - x1 = 1, so
    # x1 = 3/5, x2 = 4/5; cost (1/2)(4/25 + 1/25) + (1/2)(9/25 + 1/25) = 3/10.
    costs = [QuadraticCost([1.0]), QuadraticCost([1.0])]
    opt = offline_optimum(costs, [0.0])
    np.testing.assert_allclose(opt.x[:, 0], [0.6, 0.8])
    assert opt.cost == pytest.approx(0.3)
    assert opt.hitting + opt.movement == pytest.approx(opt.cost)


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "matrix"])
def test_offline_closed_form_matches_cvxpy(kind, rng):
    costs = _random_quadratics(rng, kind)
    x0 = rng.normal(size=3)
    closed = offline_optimum(costs, x0)
    generic = offline_optimum(costs, x0, solver="cvxpy")
    assert closed.cost == pytest.approx(generic.cost, rel=1e-8)
    np.testing.assert_allclose(closed.x, generic.x, atol=1e-6)


def test_offline_scipy_route_matches_closed_form(rng):
    costs = _random_quadratics(rng, "matrix", T=5)
    black_box = [ConvexCost(c, c.gradient, c.dim, c.m) for c in costs]
    closed = offline_optimum(costs, np.zeros(3))
    scipy_route = offline_optimum(black_box, np.zeros(3))
    assert scipy_route.cost == pytest.approx(closed.cost, rel=1e-9)


def test_offline_small_m_is_well_conditioned():
    # m = 1e-4, T = 200: the tridiagonal system is ill-conditioned (~1e4).
    costs = [QuadraticCost([1.0], 1e-4) for _ in range(200)]
    closed = offline_optimum(costs, [0.0])
    generic = offline_optimum(costs, [0.0], solver="cvxpy")
    assert closed.cost == pytest.approx(generic.cost, rel=1e-7)


def test_offline_negative_entropy_matches_slsqp():
    from scipy.optimize import minimize

    movement = BregmanDivergence(NegativeEntropy(delta=0.05))
    costs = [QuadraticCost([0.9, 0.1]), QuadraticCost([0.2, 0.8])]
    x0 = np.array([0.5, 0.5])
    opt = offline_optimum(costs, x0, movement)

    def objective(z):
        xs = z.reshape(2, 2)
        return total_cost(xs, costs, x0, movement)

    constraints = [
        {"type": "eq", "fun": lambda z: z[:2].sum() - 1},
        {"type": "eq", "fun": lambda z: z[2:].sum() - 1},
    ]
    reference = minimize(
        objective,
        np.full(4, 0.5),
        method="SLSQP",
        bounds=[(0.05, 1)] * 4,
        constraints=constraints,
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert opt.cost == pytest.approx(reference.fun, rel=1e-6)


def test_offline_pnorm_bregman_is_refused(rng):
    movement = BregmanDivergence(PNormPotential(3.0))
    with pytest.raises(NotImplementedError, match=r"not jointly convex"):
        offline_optimum(_random_quadratics(rng, "scalar", T=2), np.zeros(3), movement)


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "matrix"])
def test_every_algorithm_is_at_least_optimal(kind, rng):
    costs = _random_quadratics(rng, kind, T=12)
    x0 = np.zeros(3)
    opt = offline_optimum(costs, x0)
    for alg in [
        RegularizedOBD(m=0.1),
        OBD(),
        GreedyOBD(m=0.1),
        FollowTheMinimizer(),
        StayPut(),
    ]:
        assert competitive_ratio(alg, costs, x0, opt=opt) >= 1 - 1e-12
    assert competitive_ratio(opt.x, costs, x0, opt=opt) == pytest.approx(1.0)


@pytest.mark.parametrize("m", [1e-3, 1e-2, 0.1, 1.0, 10.0])
def test_robd_below_its_bound_on_random_instances(m, rng):
    for _ in range(5):
        costs = _random_quadratics(rng, "diagonal", T=30, m=m)
        ratio = competitive_ratio(RegularizedOBD(m=m), costs, np.zeros(3))
        assert ratio <= robd_competitive_bound(m)


def test_robd_bound_is_sharp_on_snap_back_instance():
    # n rounds of (m/2)(x - 1)^2, then a very steep cost at w < 0. The ratio
    # approaches 1/2 (1 + sqrt(1 + 4/m)) from below as n grows and w is tuned.
    m = 0.1
    ratios = []
    for w in np.linspace(-8.0, -3.0, 11):
        costs = [QuadraticCost([1.0], m) for _ in range(40)]
        costs.append(QuadraticCost([w], 1e7))
        ratios.append(competitive_ratio(RegularizedOBD(m=m), costs, [0.0]))
    bound = competitive_lower_bound(m)
    assert max(ratios) <= bound
    assert max(ratios) >= 0.97 * bound


def test_competitive_ratio_errors():
    with pytest.raises(ValueError, match=r"ratio is undefined: the offline optimum"):
        competitive_ratio(StayPut(), [QuadraticCost([0.0])], [0.0])
    negative = ConvexCost(lambda x: float(x @ x) - 1.0, lambda x: 2 * x, dim=1, m=2.0)
    with pytest.raises(ValueError, match=r"hitting costs must be >= 0"):
        competitive_ratio(np.array([[0.0]]), [negative], [0.0], opt=1.0)
    with pytest.raises(ValueError, match=r"xs must have shape \(1, 1\)"):
        competitive_ratio(np.zeros((2, 1)), [QuadraticCost([1.0])], [0.0])


def test_trajectory_cost_by_hand():
    costs = [QuadraticCost([1.0], 2.0), QuadraticCost([0.0], 1.0, offset=0.5)]
    hitting, moved = trajectory_cost([[0.5], [0.5]], costs, [0.0])
    assert hitting == pytest.approx(0.25 + 0.125 + 0.5)
    assert moved == pytest.approx(0.125)


@pytest.mark.parametrize("kind", ["diagonal", "matrix"])
def test_best_fixed_point_matches_cvxpy(kind, rng):
    import cvxpy as cp

    costs = _random_quadratics(rng, kind, T=6)
    u = cp.Variable(3)
    objective = sum(c._cvxpy_form().constant_expression(u) for c in costs)
    cp.Problem(cp.Minimize(objective)).solve()
    np.testing.assert_allclose(best_fixed_point(costs), u.value, atol=1e-6)


def test_regret_of_robd_with_unit_lambda1_is_bounded(rng):
    # With lambda1 = 1, lambda2 = 0 the step's strong convexity telescopes to
    # ALG <= sum f_t(u) + (1/2)||u - x0||^2 for the best fixed point u.
    m = 0.01
    x0 = np.zeros(2)
    costs = [QuadraticCost(y, m) for y in rng.normal(loc=3.0, size=(500, 2))]
    regret = static_regret(RegularizedOBD(m=m, lambda1=1.0), costs, x0)
    u = best_fixed_point(costs)
    assert regret <= 0.5 * np.sum((u - x0) ** 2)
    assert math.isfinite(regret)


def test_lower_bound_values():
    assert competitive_lower_bound(1.0) == pytest.approx((1 + math.sqrt(5)) / 2)
    assert robd_competitive_bound(0.5, alpha=1.0, beta=2.0) == pytest.approx(
        0.5 * (1 + math.sqrt(1 + 32))
    )
    with pytest.raises(ValueError, match=r"m must be > 0"):
        competitive_lower_bound(0.0)


BAD_OFFLINE = [
    ({"costs": []}, ValueError, r"costs must contain at least one hitting cost"),
    ({"x0": [0.0, 1.0]}, ValueError, r"costs\[0\]\.dim must equal the length of x0"),
    ({"x0": [np.inf]}, ValueError, r"x0 must be finite; got inf at index 0"),
    ({"solver": "exact"}, ValueError, r"solver must be one of"),
    ({"movement": "l2"}, TypeError, r"movement must be a MovementCost; got str"),
]


@pytest.mark.parametrize(("kwargs", "exception", "pattern"), BAD_OFFLINE)
def test_bad_offline_inputs(kwargs, exception, pattern):
    arguments = {"costs": [QuadraticCost([1.0])], "x0": [0.0], **kwargs}
    with pytest.raises(exception, match=pattern):
        offline_optimum(**arguments)
