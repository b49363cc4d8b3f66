"""Hitting costs and movement costs against hand formulas and finite differences."""

import numpy as np
import pytest

from lemmata.online import (
    BregmanDivergence,
    ConvexCost,
    CvxpyCost,
    NegativeEntropy,
    PNormPotential,
    QuadraticCost,
    SquaredEuclidean,
)


def _finite_difference(fun, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (fun(x + step) - fun(x - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "matrix"])
def test_quadratic_value_gradient_and_modulus(kind, rng):
    d = 4
    y = rng.normal(size=d)
    if kind == "scalar":
        curvature, matrix = 0.7, 0.7 * np.eye(d)
    elif kind == "diagonal":
        curvature = rng.uniform(0.5, 2.0, d)
        matrix = np.diag(curvature)
    else:
        q = np.linalg.qr(rng.normal(size=(d, d)))[0]
        matrix = q @ np.diag([0.3, 1.0, 2.0, 5.0]) @ q.T
        curvature = matrix
    cost = QuadraticCost(y, curvature, offset=0.25)
    x = rng.normal(size=d)

    assert cost.kind == kind
    assert cost(x) == pytest.approx(0.5 * (x - y) @ matrix @ (x - y) + 0.25)
    np.testing.assert_allclose(cost.gradient(x), matrix @ (x - y), rtol=1e-12)
    assert cost.m == pytest.approx(np.linalg.eigvalsh(matrix)[0])
    np.testing.assert_array_equal(cost.minimizer(), y)
    assert cost.minimum() == 0.25


def _log_sum_exp(x, A, y):
    import cvxpy as cp

    return cp.log_sum_exp(A @ x) + 0.25 * cp.sum_squares(x - y)


def test_cvxpy_cost_matches_numpy_formula(rng):
    d = 3
    A, y = rng.normal(size=(4, d)), rng.normal(size=d)
    cost = CvxpyCost(_log_sum_exp, d, m=0.5, parameters={"A": A, "y": y})
    x = rng.normal(size=d)

    def numpy_value(z):
        return np.log(np.sum(np.exp(A @ z))) + 0.25 * np.sum((z - y) ** 2)

    assert cost(x) == pytest.approx(numpy_value(x), rel=1e-10)
    np.testing.assert_allclose(
        cost.gradient(x), _finite_difference(numpy_value, x), atol=1e-6
    )
    # The minimiser solves grad = 0: check with the finite-difference gradient.
    v = cost.minimizer()
    np.testing.assert_allclose(_finite_difference(numpy_value, v), 0.0, atol=1e-5)


def test_convex_cost_minimizer_by_lbfgs():
    cost = ConvexCost(
        lambda x: 0.5 * np.sum((x - 2.0) ** 2) + np.sum(x**4),
        lambda x: (x - 2.0) + 4 * x**3,
        dim=2,
        m=1.0,
    )
    v = cost.minimizer()
    # 1-D root of (v - 2) + 4 v^3 = 0, solved by hand-checked bisection bounds.
    assert np.all((v > 0.68) & (v < 0.70))
    np.testing.assert_allclose(cost.gradient(v), 0.0, atol=1e-8)


def test_squared_euclidean_is_p2_bregman(rng):
    x, y = rng.normal(size=5), rng.normal(size=5)
    euclid = SquaredEuclidean()
    bregman = BregmanDivergence(PNormPotential(2.0))
    assert euclid(x, y) == pytest.approx(0.5 * np.sum((x - y) ** 2))
    assert bregman(x, y) == pytest.approx(euclid(x, y))
    assert (bregman.alpha, bregman.beta) == (1.0, 1.0)


def test_negative_entropy_divergence_is_kl(rng):
    x = rng.dirichlet(np.ones(4))
    y = rng.dirichlet(np.ones(4))
    movement = BregmanDivergence(NegativeEntropy(delta=0.01))
    assert movement(x, y) == pytest.approx(np.sum(x * np.log(x / y)))
    assert (movement.alpha, movement.beta) == (1.0, 100.0)
    np.testing.assert_allclose(
        movement.gradient(x, y),
        _finite_difference(lambda z: movement(z, y), x),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("p", "lower", "upper", "alpha", "beta"),
    [
        (3.0, 0.5, 2.0, 2 * 0.5, 2 * 2.0),
        (1.5, 0.25, 4.0, 0.5 * 4.0**-0.5, 0.5 * 0.25**-0.5),
        (3.0, 0.0, 2.0, 0.0, 4.0),
    ],
)
def test_pnorm_constants_from_hessian_range(p, lower, upper, alpha, beta):
    potential = PNormPotential(p, lower=lower, upper=upper)
    assert potential.alpha == pytest.approx(alpha)
    assert potential.beta == pytest.approx(beta)


def test_pnorm_bregman_gradient(rng):
    movement = BregmanDivergence(PNormPotential(3.0))
    x, y = rng.normal(size=3), rng.normal(size=3)
    np.testing.assert_allclose(
        movement.gradient(x, y),
        _finite_difference(lambda z: movement(z, y), x),
        atol=1e-6,
    )


def _concave(x):
    import cvxpy as cp

    return -cp.sum_squares(x)


def _vector_valued(x):
    return x


BAD_COSTS = [
    (lambda: QuadraticCost([0.0, np.nan]), ValueError, r"center must be finite"),
    (lambda: QuadraticCost([[0.0]]), ValueError, r"center must be one-dimensional"),
    (lambda: QuadraticCost([0.0], curvature=0.0), ValueError, r"curvature must be > 0"),
    (lambda: QuadraticCost([0.0], curvature=-1.0), ValueError, r"got -1\.0"),
    (
        lambda: QuadraticCost([0.0, 0.0], curvature=[1.0, -1.0]),
        ValueError,
        r"curvature must be > 0 in every coordinate",
    ),
    (
        lambda: QuadraticCost([0.0, 0.0], curvature=[[1.0, 2.0], [2.0, 1.0]]),
        ValueError,
        r"curvature must be positive definite",
    ),
    (
        lambda: QuadraticCost([0.0, 0.0], curvature=[[1.0, 0.5], [0.0, 1.0]]),
        ValueError,
        r"curvature must be a symmetric matrix",
    ),
    (
        lambda: QuadraticCost([0.0, 0.0], curvature=[1.0, 1.0, 1.0]),
        ValueError,
        r"curvature must have shape \(2,\)",
    ),
    (lambda: QuadraticCost([0.0], curvature=np.inf), ValueError, r"must be finite"),
    (lambda: QuadraticCost([0.0], offset=-1.0), ValueError, r"offset must be >= 0"),
    (lambda: QuadraticCost([0.0], offset="1"), TypeError, r"offset must be a real"),
    (lambda: CvxpyCost(_concave, 2, m=1.0), ValueError, r"must be convex"),
    (lambda: CvxpyCost(_vector_valued, 2, m=1.0), ValueError, r"scalar expression"),
    (lambda: CvxpyCost(_concave, 2, m=0.0), ValueError, r"m must be > 0"),
    (lambda: CvxpyCost("f", 2, m=1.0), TypeError, r"expression must be callable"),
    (
        lambda: CvxpyCost(_log_sum_exp, 3, m=1.0, parameters={"A": [[np.inf] * 3]}),
        ValueError,
        r"parameters\['A'\] must be finite",
    ),
    (lambda: ConvexCost(abs, abs, dim=0, m=1.0), ValueError, r"dim must be >= 1"),
    (lambda: ConvexCost(abs, abs, dim=1, m=-2.0), ValueError, r"m must be > 0"),
    (lambda: ConvexCost(abs, None, dim=1, m=1.0), TypeError, r"grad must be callable"),
    (lambda: PNormPotential(1.0), ValueError, r"p must be > 1; got 1\.0"),
    (lambda: PNormPotential(3.0, lower=2.0, upper=1.0), ValueError, r"upper must be"),
    (lambda: NegativeEntropy(0.0), ValueError, r"delta must be > 0"),
    (lambda: BregmanDivergence("entropy"), TypeError, r"potential must be a Potential"),
]


@pytest.mark.parametrize(("make", "exception", "pattern"), BAD_COSTS)
def test_bad_cost_inputs(make, exception, pattern):
    with pytest.raises(exception, match=pattern):
        make()


def test_convex_cost_rejects_nan_values():
    cost = ConvexCost(lambda x: float("nan"), lambda x: x, dim=1, m=1.0)
    with pytest.raises(ValueError, match=r"fun must return a number; got nan"):
        cost(np.zeros(1))
