"""The vectorised evaluator and its derivatives against plain loops."""

import math

import numpy as np
import pytest

from lemmata.symbolic import evaluate_continued_fraction
from lemmata.symbolic._fraction import (
    design,
    format_continued_fraction,
    forward_with_gradient,
    to_sympy,
)
from lemmata.symbolic._local_search import _active_columns, _normal_equations


def _fraction_at(beta, alpha, x):
    """One row, one candidate, written from the definition (recursive)."""

    def h(k):
        return beta[k] + sum(alpha[k, j] * x[j] for j in range(len(x)))

    def tail(k):  # h_{2k} + h_{2k+1} / tail(k + 1), ending at h_{2d}
        depth = (len(beta) - 1) // 2
        if k == depth:
            return h(2 * depth)
        return h(2 * k) + h(2 * k + 1) / tail(k + 1)

    if len(beta) == 1:
        return h(0)
    return h(0) + h(1) / tail(1)


@pytest.mark.parametrize("depth", [0, 1, 2, 4])
def test_population_matches_row_loop(rng, depth):
    K, p, P, n = 2 * depth + 1, 3, 5, 7
    beta = rng.uniform(2, 3, size=(P, K))  # denominators kept away from zero
    alpha = rng.uniform(-0.3, 0.3, size=(P, K, p))
    X = rng.uniform(-1, 1, size=(n, p))

    values, smallest = evaluate_continued_fraction(beta, alpha, X)

    expected = np.array(
        [[_fraction_at(beta[c], alpha[c], X[i]) for i in range(n)] for c in range(P)]
    )
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    assert values.shape == (P, n) and smallest.shape == (P,)
    assert np.all(smallest > 0)


def test_safe_division_keeps_values_finite():
    # f = 0 + 1 / x: the denominator is exactly zero on the middle row.
    beta = np.array([0.0, 1.0, 0.0])
    alpha = np.array([[0.0], [0.0], [1.0]])
    X = np.array([[-1.0], [0.0], [2.0]])

    values, smallest = evaluate_continued_fraction(beta, alpha, X, pole_tol=1e-8)

    assert np.all(np.isfinite(values))
    assert smallest == 0.0
    np.testing.assert_allclose(values[[0, 2]], [-1.0, 0.5])
    assert values[1] == pytest.approx(1e8)


def test_gradient_matches_finite_differences(rng):
    depth, p, n = 3, 2, 6
    K = 2 * depth + 1
    W = np.concatenate(
        [rng.uniform(2, 3, size=(1, K, 1)), rng.uniform(-0.3, 0.3, size=(1, K, p))],
        axis=2,
    )
    Xa = design(rng.uniform(-1, 1, size=(n, p)))
    y = rng.normal(size=n)
    free = np.ones_like(W, dtype=bool)
    index, valid = _active_columns(free)

    _, JtJ, Jtr = _normal_equations(W, Xa, y, index, valid, 1e-8)

    # Central differences of the residuals r = f - y in every coefficient.
    eps = 1e-6
    J = np.empty((n, K * (p + 1)))
    for c in range(K * (p + 1)):
        step = np.zeros(K * (p + 1))
        step[c] = eps
        up = evaluate_continued_fraction(*_split(W[0].ravel() + step, K), Xa[:, 1:])[0]
        down = evaluate_continued_fraction(*_split(W[0].ravel() - step, K), Xa[:, 1:])[
            0
        ]
        J[:, c] = (up - down) / (2 * eps)
    r = evaluate_continued_fraction(*_split(W[0].ravel(), K), Xa[:, 1:])[0] - y
    order = index[0]
    # Loosened from 1e-10: central differences carry O(eps^2) truncation error.
    np.testing.assert_allclose(JtJ[0], (J.T @ J)[np.ix_(order, order)], rtol=1e-6)
    np.testing.assert_allclose(Jtr[0], (J.T @ r)[order], rtol=1e-6, atol=1e-9)


def _split(flat, K):
    W = flat.reshape(K, -1)
    return W[:, 0], W[:, 1:]


def test_gradient_of_h0_is_one_and_depth_zero_is_linear(rng):
    H = rng.normal(size=(2, 1, 4))
    values, G, smallest = forward_with_gradient(H, 1e-8)
    np.testing.assert_array_equal(values, H[:, 0])
    np.testing.assert_array_equal(G, np.ones_like(H))
    assert np.all(np.isinf(smallest))


def test_formula_text_evaluates_to_the_same_values(rng):
    beta = rng.uniform(2, 3, size=5)
    alpha = rng.uniform(-0.5, 0.5, size=(5, 2))
    alpha[3, 1] = 0.0
    X = rng.uniform(-1, 1, size=(4, 2))
    text = format_continued_fraction(beta, alpha, ["a", "b"], precision=17)

    got = [eval(text, {"a": x[0], "b": x[1]}) for x in X]

    np.testing.assert_allclose(got, evaluate_continued_fraction(beta, alpha, X)[0])


def test_sympy_expression_matches(rng):
    sympy = pytest.importorskip("sympy")
    beta = rng.uniform(2, 3, size=5)
    alpha = rng.uniform(-0.5, 0.5, size=(5, 2))
    X = rng.uniform(-1, 1, size=(4, 2))
    expr = to_sympy(beta, alpha, ["a", "b"])
    f = sympy.lambdify(sympy.symbols("a b"), expr, "math")
    got = [f(*x) for x in X]
    np.testing.assert_allclose(got, evaluate_continued_fraction(beta, alpha, X)[0])
    assert not math.isnan(got[0])


BAD_EVALUATE = [
    ({"X": np.ones(3)}, ValueError, r"X must be 2-dimensional; got shape \(3,\)"),
    (
        {"coef": np.ones((3, 4))},
        ValueError,
        r"coef must have shape intercept.shape \+ \(n_features,\) = \(3, 2\)",
    ),
    (
        {"intercept": np.ones(2), "coef": np.ones((2, 2))},
        ValueError,
        r"intercept must have an odd number of terms",
    ),
    ({"pole_tol": -1.0}, ValueError, r"pole_tol must be >= 0; got -1\.0"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), BAD_EVALUATE)
def test_evaluate_rejects_bad_input(kwargs, exc, pattern):
    args = {"intercept": np.ones(3), "coef": np.ones((3, 2)), "X": np.ones((4, 2))}
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        evaluate_continued_fraction(**args)
