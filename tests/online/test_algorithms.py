"""Online algorithms: closed forms against cvxpy and scipy, and hand-checked cases."""

import math
import warnings

import numpy as np
import pytest

from lemmata.online import (
    OBD,
    BregmanDivergence,
    ConvexCost,
    CvxpyCost,
    FollowTheMinimizer,
    GreedyOBD,
    NegativeEntropy,
    PNormPotential,
    QuadraticCost,
    RegularizedOBD,
    SquaredEuclidean,
    StayPut,
    robd_default_parameters,
)


def _random_quadratics(rng, kind, T=6, d=3, m=0.2, offset=0.0):
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
        costs.append(QuadraticCost(y, curvature, offset=offset))
    return costs


def _as_convex_cost(cost):
    """The same quadratic as a black-box ConvexCost (scipy route)."""
    return ConvexCost(cost, cost.gradient, cost.dim, cost.m)


# --- R-OBD --------------------------------------------------------------------


def test_robd_hand_checked_one_dimensional():
    # m = 1: lambda1 = 2 / (1 + sqrt(5)) = 0.6180...; from x0 = 0 towards y = 1,
    # x1 = (1 * 1 + lambda1 * 0) / (1 + lambda1) = 0.6180..., then
    # x2 = (1 + lambda1 * x1) / (1 + lambda1) = 0.8541...
    lam = 2 / (1 + math.sqrt(5))
    costs = [QuadraticCost([1.0], 1.0), QuadraticCost([1.0], 1.0)]
    xs = RegularizedOBD(m=1.0).run(costs, x0=[0.0])
    x1 = 1 / (1 + lam)
    np.testing.assert_allclose(xs[:, 0], [x1, (1 + lam * x1) / (1 + lam)])
    assert xs[0, 0] == pytest.approx(0.6180339887)


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "matrix"])
def test_robd_closed_form_matches_cvxpy(kind, rng):
    costs = _random_quadratics(rng, kind)
    x0 = np.zeros(3)
    closed = RegularizedOBD(m=0.2, solver="closed_form").run(costs, x0)
    generic = RegularizedOBD(m=0.2, solver="cvxpy").run(costs, x0)
    # Loosened from 1e-10: the cvxpy solve stops at Clarabel's tolerance 1e-10.
    np.testing.assert_allclose(closed, generic, atol=1e-7)


@pytest.mark.parametrize("lambda2", [0.0, 0.3])
def test_robd_closed_form_matches_scipy(lambda2, rng):
    costs = _random_quadratics(rng, "matrix")
    x0 = rng.normal(size=3)
    closed = RegularizedOBD(m=0.2, lambda1=0.4, lambda2=lambda2).run(costs, x0)
    black_box = [_as_convex_cost(c) for c in costs]
    scipy_xs = RegularizedOBD(m=0.2, lambda1=0.4, lambda2=lambda2).run(black_box, x0)
    np.testing.assert_allclose(closed, scipy_xs, atol=1e-7)


def test_robd_alternative_parameter_pair_gives_same_iterates(rng):
    # The spec's second admissible pair lambda1 = 1, lambda2 = m (s - 1) / 2
    # gives the same iterates as (2 / (1 + s), 0) on isotropic quadratics.
    m = 0.05
    s = math.sqrt(1 + 4 / m)
    costs = _random_quadratics(rng, "scalar", m=m, T=10)
    default = RegularizedOBD(m=m).run(costs, np.zeros(3))
    other = RegularizedOBD(m=m, lambda1=1.0, lambda2=m * (s - 1) / 2).run(
        costs, np.zeros(3)
    )
    np.testing.assert_allclose(default, other, atol=1e-12)
    assert robd_default_parameters(m) == (pytest.approx(2 / (1 + s)), 0.0)


def test_robd_general_cost_step_is_first_order_optimal(rng):
    d = 3
    A, y = rng.normal(size=(4, d)), rng.normal(size=d)

    def logsumexp_plus_quadratic(x, A, y):
        import cvxpy as cp

        return cp.log_sum_exp(A @ x) + 0.5 * cp.sum_squares(x - y)

    cost = CvxpyCost(logsumexp_plus_quadratic, d, m=1.0, parameters={"A": A, "y": y})
    alg = RegularizedOBD(m=1.0, lambda2=0.0, lambda1=0.5).reset(np.ones(d))
    x = alg.step(cost)
    # Optimality of f(x) + (lambda1 / 2) ||x - x_prev||^2. Loosened to 1e-4:
    # log_sum_exp goes through exponential cones, solved less accurately.
    residual = cost.gradient(x) + 0.5 * (x - np.ones(d))
    np.testing.assert_allclose(residual, 0, atol=1e-4)


def test_robd_reuses_one_compiled_problem(rng):
    costs = _random_quadratics(rng, "diagonal", T=4)
    alg = RegularizedOBD(m=0.2, solver="cvxpy")
    alg.run(costs, np.zeros(3))
    assert len(alg._problems) == 1


def test_robd_negative_entropy_step_is_kkt_point(rng):
    # On the simplex interior the R-OBD step satisfies
    # grad f(x) + lambda1 (log x - log x_prev) = nu * 1 for a scalar nu.
    d = 3
    movement = BregmanDivergence(NegativeEntropy(delta=0.01))
    cost = QuadraticCost([0.7, 0.2, 0.1], curvature=2.0)
    x_prev = np.array([0.2, 0.3, 0.5])
    alg = RegularizedOBD(m=2.0, movement=movement).reset(x_prev)
    x = alg.step(cost)
    assert x.sum() == pytest.approx(1.0, abs=1e-8)
    residual = cost.gradient(x) + alg.lambda1 * (np.log(x) - np.log(x_prev))
    np.testing.assert_allclose(residual - residual.mean(), 0.0, atol=1e-6)
    assert np.all(x > 0.01) and d == 3


def test_robd_pnorm_bregman_cvxpy_matches_scipy(rng):
    movement = BregmanDivergence(PNormPotential(3.0))
    costs = _random_quadratics(rng, "diagonal", T=3)
    x0 = np.full(3, 0.5)
    generic = RegularizedOBD(m=0.2, lambda1=0.5, movement=movement).run(costs, x0)
    black_box = [_as_convex_cost(c) for c in costs]
    scipy_xs = RegularizedOBD(m=0.2, lambda1=0.5, movement=movement).run(black_box, x0)
    np.testing.assert_allclose(generic, scipy_xs, atol=1e-5)


# --- OBD ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0.0, 0.5),  # (1/2) x^2 = (1/2)(1 - x)^2
        (0.25, 0.75),  # (1/2) x^2 = (1/2)(1 - x)^2 + 1/4
        (0.5, 1.0),  # c(v, x0) = 1/2 <= f(v): jump to the minimiser
    ],
)
def test_obd_hand_checked_balance(offset, expected):
    cost = QuadraticCost([1.0], curvature=1.0, offset=offset)
    x = OBD(beta=1.0).reset([0.0]).step(cost)
    assert x[0] == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "matrix"])
def test_obd_step_is_balanced_projection(kind, rng):
    costs = _random_quadratics(rng, kind, offset=0.05)
    alg = OBD(beta=0.7).reset(np.zeros(3))
    for cost in costs:
        x_prev = alg.x
        x = alg.step(cost)
        if np.allclose(x, cost.center):
            assert 0.5 * np.sum((x - x_prev) ** 2) <= 0.7 * cost(x) + 1e-12
            continue
        # Balance: c(x, x_prev) = beta f(x).
        assert 0.5 * np.sum((x - x_prev) ** 2) == pytest.approx(0.7 * cost(x))
        # Projection (KKT): x_prev - x = mu * grad f(x) with mu >= 0.
        g, r = cost.gradient(x), x_prev - x
        mu = (r @ g) / (g @ g)
        assert mu >= 0
        np.testing.assert_allclose(r, mu * g, atol=1e-10)


@pytest.mark.parametrize("kind", ["scalar", "diagonal"])
def test_obd_closed_form_matches_cvxpy(kind, rng):
    costs = _random_quadratics(rng, kind, T=2, offset=0.05)
    x0 = np.zeros(3)
    closed = OBD(solver="closed_form").run(costs, x0)
    generic = OBD(solver="cvxpy").run(costs, x0)
    # Loosened: the projection's optimum is flat along the level set, so a gap
    # of 1e-10 leaves errors of order sqrt(1e-10) = 1e-5 in x.
    np.testing.assert_allclose(closed, generic, atol=1e-4)


def test_obd_closed_form_matches_scipy_prox_route(rng):
    costs = _random_quadratics(rng, "matrix", T=3, offset=0.05)
    x0 = np.zeros(3)
    closed = OBD().run(costs, x0)
    scipy_xs = OBD().run([_as_convex_cost(c) for c in costs], x0)
    np.testing.assert_allclose(closed, scipy_xs, atol=1e-6)


def test_obd_negative_entropy_balance():
    movement = BregmanDivergence(NegativeEntropy(delta=0.01))
    cost = QuadraticCost([0.8, 0.1, 0.1], curvature=1.0)
    x_prev = np.full(3, 1 / 3)
    x = OBD(beta=1.0, movement=movement).reset(x_prev).step(cost)
    assert x.sum() == pytest.approx(1.0, abs=1e-7)
    assert movement(x, x_prev) == pytest.approx(cost(x), rel=1e-6)


# --- G-OBD and baselines --------------------------------------------------------


def test_gobd_hand_checked():
    # m = 1/4, mu = 1: weight mu sqrt(m) = 1/2. The OBD step from 0 on
    # (1/8)(x - 1)^2 solves (1/2) y^2 = (1/8)(1 - y)^2, y = 1/3; then
    # x = (1/2) * 1 + (1/2) * (1/3) = 2/3.
    cost = QuadraticCost([1.0], curvature=0.25)
    x = GreedyOBD(m=0.25).reset([0.0]).step(cost)
    assert x[0] == pytest.approx(2 / 3)
    # mu sqrt(m) >= 1: G-OBD goes to the minimiser.
    assert GreedyOBD(m=1.0).reset([0.0]).step(QuadraticCost([1.0]))[0] == 1.0


def test_gobd_scipy_route_matches_closed_form(rng):
    costs = _random_quadratics(rng, "diagonal", T=3, offset=0.05)
    closed = GreedyOBD(m=0.2).run(costs, np.zeros(3))
    scipy_xs = GreedyOBD(m=0.2).run([_as_convex_cost(c) for c in costs], np.zeros(3))
    np.testing.assert_allclose(closed, scipy_xs, atol=1e-6)


def test_baselines(rng):
    costs = _random_quadratics(rng, "scalar", T=4)
    x0 = rng.normal(size=3)
    np.testing.assert_array_equal(
        FollowTheMinimizer().run(costs, x0), [c.center for c in costs]
    )
    np.testing.assert_array_equal(StayPut().run(costs, x0), np.tile(x0, (4, 1)))


# --- errors ---------------------------------------------------------------------


def _nonconvex_double_well():
    return ConvexCost(
        lambda x: float(np.sum((x**2 - 1) ** 2)),
        lambda x: 4 * x * (x**2 - 1),
        dim=1,
        m=4.0,
    )


BAD_ALGORITHMS = [
    (lambda: RegularizedOBD(m=0.0), ValueError, r"m must be > 0 and finite; got 0\.0"),
    (lambda: RegularizedOBD(m=-1), ValueError, r"m must be > 0 and finite; got -1"),
    (lambda: RegularizedOBD(m=float("nan")), ValueError, r"m must be > 0.*nan"),
    (lambda: RegularizedOBD(m="1"), TypeError, r"m must be a real number; got str"),
    (lambda: RegularizedOBD(m=1, lambda1=-1.0), ValueError, r"lambda1 must be > 0"),
    (
        lambda: RegularizedOBD(m=1, lambda1=1.0, lambda2=-0.1),
        ValueError,
        r"lambda2 must be >= 0",
    ),
    (lambda: RegularizedOBD(m=1, lambda2=0.5), ValueError, r"lambda2 needs lambda1"),
    (
        lambda: RegularizedOBD(m=1, movement=BregmanDivergence(PNormPotential(3.0))),
        ValueError,
        r"alpha > 0 and finite beta",
    ),
    (lambda: RegularizedOBD(m=1, solver="fast"), ValueError, r"solver must be one of"),
    (lambda: RegularizedOBD(m=1, movement="l2"), TypeError, r"movement must be a"),
    (lambda: OBD(beta=0.0), ValueError, r"beta must be > 0"),
    (lambda: GreedyOBD(m=-0.5), ValueError, r"m must be > 0"),
    (lambda: GreedyOBD(m=1, gamma=0), ValueError, r"gamma must be > 0"),
    (lambda: GreedyOBD(m=1, mu=-1), ValueError, r"mu must be > 0"),
    (
        lambda: GreedyOBD(m=1, movement=BregmanDivergence(NegativeEntropy(0.1))),
        ValueError,
        r"SquaredEuclidean movement",
    ),
]


@pytest.mark.parametrize(("make", "exception", "pattern"), BAD_ALGORITHMS)
def test_bad_algorithm_parameters(make, exception, pattern):
    with pytest.raises(exception, match=pattern):
        make()


BAD_RUNS = [
    ({"costs": []}, ValueError, r"costs must contain at least one"),
    ({"x0": [0.0, 0.0, 0.0]}, ValueError, r"costs\[0\]\.dim must equal the length"),
    ({"x0": [0.0, np.nan]}, ValueError, r"x0 must be finite; got nan at index 1"),
    ({"x0": [[0.0, 0.0]]}, ValueError, r"x0 must be one-dimensional"),
    ({"x0": ["a", "b"]}, TypeError, r"x0 must be an array of real numbers"),
    ({"costs": ["f"]}, TypeError, r"costs\[0\] must be a HittingCost; got str"),
    (
        {"costs": [QuadraticCost([1.0, 0.0]), QuadraticCost([1.0])]},
        ValueError,
        r"costs\[1\]\.dim must equal the length of x0, 2; got 1",
    ),
]


@pytest.mark.parametrize(
    "make_alg",
    [lambda: RegularizedOBD(m=1.0), OBD, lambda: GreedyOBD(m=0.5), StayPut],
)
@pytest.mark.parametrize(("kwargs", "exception", "pattern"), BAD_RUNS)
def test_bad_run_inputs(make_alg, kwargs, exception, pattern):
    arguments = {"costs": [QuadraticCost([1.0, 0.0])], "x0": [0.0, 0.0], **kwargs}
    with pytest.raises(exception, match=pattern):
        make_alg().run(**arguments)


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match=r"call reset\(x0\)"):
        RegularizedOBD(m=1.0).step(QuadraticCost([1.0]))


def test_closed_form_solver_refuses_general_costs():
    cost = ConvexCost(lambda x: float(x @ x), lambda x: 2 * x, dim=1, m=2.0)
    alg = RegularizedOBD(m=1.0, solver="closed_form").reset([0.0])
    with pytest.raises(ValueError, match=r"solver='closed_form' needs QuadraticCost"):
        alg.step(cost)


def test_entropy_start_must_be_on_simplex():
    movement = BregmanDivergence(NegativeEntropy(0.01))
    with pytest.raises(ValueError, match=r"x0 must lie on the simplex"):
        RegularizedOBD(m=1.0, movement=movement).reset([0.5, 0.6])
    with pytest.raises(ValueError, match=r"x0 must be > 0 .* index 0"):
        RegularizedOBD(m=1.0, movement=movement).reset([-0.5, 1.5])


def test_nonconvex_black_box_cost_is_detected():
    alg = RegularizedOBD(m=4.0).reset([0.1])
    with pytest.raises(ValueError, match=r"not 4-strongly convex"):
        alg.step(_nonconvex_double_well())


def test_weaker_cost_than_m_warns():
    alg = RegularizedOBD(m=1.0).reset([0.0])
    with pytest.warns(UserWarning, match=r"below the algorithm's m=1"):
        alg.step(QuadraticCost([1.0], curvature=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alg.step(QuadraticCost([1.0], curvature=0.5))  # warned once per run


def test_squared_euclidean_default_movement():
    assert isinstance(OBD().movement, SquaredEuclidean)


def _generic_quadratic(x, s, b):
    import cvxpy as cp

    return 0.5 * cp.sum_squares(cp.multiply(s, x) - b)


def test_obd_generic_cvxpy_cost_matches_closed_form():
    # The same isotropic quadratic, once as a CvxpyCost (sublevel constraint
    # f(x) <= l, root finding on l) and once as a QuadraticCost (closed form).
    y = np.array([2.0, -1.0])
    generic = CvxpyCost(
        _generic_quadratic,
        2,
        m=0.3,
        parameters={"s": np.sqrt(0.3), "b": np.sqrt(0.3) * y},
        nonneg=("s",),
    )
    closed = QuadraticCost(y, 0.3)
    x_generic = GreedyOBD(m=0.3).reset([0.0, 0.0]).step(generic)
    x_closed = GreedyOBD(m=0.3).reset([0.0, 0.0]).step(closed)
    # Loosened: a projection solved to gap 1e-10 is accurate to about 1e-5.
    np.testing.assert_allclose(x_generic, x_closed, atol=1e-4)
