"""ContinuedFractionRegressor: the scikit-learn contract, recovery, bad input."""

import pickle
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.linear_model import LinearRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from lemmata.symbolic import (
    ContinuedFractionRegressor,
    PoleWarning,
    evaluate_continued_fraction,
)

# A small budget keeps the ~50 checks to a few seconds; every check passes at
# this budget except check_array_api_input, which scikit-learn itself skips
# unless SCIPY_ARRAY_API is set (the estimator is numpy-only).
_SMALL = {"depth": 1, "n_generations": 3, "local_search_iter": 5}


@parametrize_with_checks([ContinuedFractionRegressor(**_SMALL)])
def test_scikit_learn_contract(estimator, check):
    check(estimator)


def _ratio_data(rng, n=200):
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, 1 + X[:, 0] / (2 + X[:, 1])


def _solved(X, y, seeds, generations):
    count = 0
    for seed in seeds:
        model = ContinuedFractionRegressor(
            depth=1, n_generations=generations, random_state=seed
        )
        count += np.mean((model.fit(X, y).predict(X) - y) ** 2) < 1e-6
    return count


def test_recovers_a_representable_fraction(rng):
    # y = 1 + x1 / (2 + x2) is a depth-1 fraction: training MSE should reach ~0.
    X, y = _ratio_data(rng, 100)
    assert _solved(X, y, range(4), generations=20) >= 3


@pytest.mark.slow
def test_recovers_a_representable_fraction_in_most_seeds(rng):
    # The spec's sanity claim: within 50 generations in >= 8 of 10 seeds.
    X, y = _ratio_data(rng)
    assert _solved(X, y, range(10), generations=50) >= 8


def test_fitted_attributes_describe_the_predictions(rng):
    X, y = _ratio_data(rng)
    X = np.column_stack([X, np.full(len(y), 3.0)])  # a constant column
    X[:, 0] = 100 + 5 * X[:, 0]  # original units differ from standardised ones
    model = ContinuedFractionRegressor(depth=2, n_generations=5, random_state=0)
    model.fit(X, y)

    K = 5
    assert model.intercept_.shape == (K,) and model.coef_.shape == (K, 3)
    assert np.all(model.coef_[:, 2] == 0) and not model.support_[2]
    assert model.n_constants_ == K + np.count_nonzero(model.coef_)
    assert model.history_.shape == (5,) and model.n_evaluations_ > 0

    # predict equals the fraction of intercept_ and coef_ on the raw rows
    values, _ = evaluate_continued_fraction(model.intercept_, model.coef_, X)
    np.testing.assert_allclose(model.predict(X), np.clip(values, *model.target_bounds_))
    # formula_ is the same model, rounded to 4 significant digits
    text = model.formula_.replace("x0", "a").replace("x1", "b")
    at = [eval(text, {"a": r[0], "b": r[1]}) for r in X[:5]]
    np.testing.assert_allclose(at, values[:5], rtol=1e-2, atol=1e-2)


def test_depth_zero_is_least_squares_on_the_support(rng):
    X = rng.normal(size=(150, 4))
    y = X @ np.array([2.0, -1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=150)
    model = ContinuedFractionRegressor(depth=0, n_generations=10, random_state=0)
    model.fit(X, y)
    reference = LinearRegression().fit(X[:, model.support_], y)
    np.testing.assert_allclose(model.coef_[0, model.support_], reference.coef_, 1e-6)
    assert model.intercept_[0] == pytest.approx(reference.intercept_, abs=1e-6)
    assert model.support_[:2].all()


def test_same_seed_same_model_and_parallel_runs_agree(rng):
    X, y = _ratio_data(rng, 120)
    kwargs = {"depth": 1, "n_generations": 4, "n_runs": 2, "random_state": 3}
    serial = ContinuedFractionRegressor(n_jobs=1, **kwargs).fit(X, y)
    # Threads keep the test fast; the runs are independent either way.
    with parallel_config(backend="threading"):
        parallel = ContinuedFractionRegressor(n_jobs=2, **kwargs).fit(X, y)
    again = ContinuedFractionRegressor(n_jobs=1, **kwargs).fit(X, y)
    assert serial.formula_ == parallel.formula_ == again.formula_
    np.testing.assert_array_equal(serial.predict(X), parallel.predict(X))


def test_feature_names_and_sympy(rng):
    pd = pytest.importorskip("pandas")
    X, y = _ratio_data(rng, 120)
    frame = pd.DataFrame(X, columns=["mass", "speed"])
    model = ContinuedFractionRegressor(depth=1, n_generations=10, random_state=0)
    model.fit(frame, y)
    assert "mass" in model.formula_ and "x0" not in model.formula_

    sympy = pytest.importorskip("sympy")
    expr = model.to_sympy()
    f = sympy.lambdify(sympy.symbols("mass speed"), expr, "numpy")
    np.testing.assert_allclose(f(X[:, 0], X[:, 1]), model.predict(frame), atol=1e-9)


def test_predictions_stay_finite_at_a_pole(rng):
    X, y = _ratio_data(rng, 60)
    model = ContinuedFractionRegressor(depth=1, n_generations=1, clip_margin=None)
    model.fit(X, y)
    # Force the fitted model to 1 / x0 and predict at x0 = 0.
    model.intercept_ = np.array([0.0, 1.0, 0.0])
    model.coef_ = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    with pytest.warns(PoleWarning, match="smallest \\|denominator\\| 0"):
        pred = model.predict(np.array([[0.0, 0.5], [2.0, 0.0]]))
    assert np.all(np.isfinite(pred))
    assert pred[1] == pytest.approx(0.5)


def test_clip_margin_bounds_predictions(rng):
    X, y = _ratio_data(rng, 80)
    model = ContinuedFractionRegressor(depth=1, n_generations=2, clip_margin=0.0)
    model.fit(X, y)
    far = model.predict(np.array([[50.0, -1.9], [-50.0, -1.9]]))
    assert np.all(far >= y.min()) and np.all(far <= y.max())


def test_constant_target_is_fitted_exactly():
    X = np.arange(20.0).reshape(10, 2)
    y = np.full(10, 4.5)
    model = ContinuedFractionRegressor(depth=1, n_generations=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = model.fit(X, y).predict(X)
    np.testing.assert_allclose(pred, 4.5)


def test_validation_split_and_nelder_mead_run(rng):
    X, y = _ratio_data(rng, 80)
    early = ContinuedFractionRegressor(
        depth=1, n_generations=3, validation_fraction=0.25, random_state=0
    ).fit(X, y)
    simplex = ContinuedFractionRegressor(
        depth=1,
        n_generations=2,
        local_search="nelder-mead",
        local_search_iter=30,
        random_state=0,
    ).fit(X, y)
    for model in (early, simplex):
        assert model.score(X, y) > 0.5
    restored = pickle.loads(pickle.dumps(simplex))
    np.testing.assert_array_equal(restored.predict(X), simplex.predict(X))


_X = np.arange(12.0).reshape(6, 2)
_Y = np.arange(6.0)

BAD_INPUTS = [
    # (estimator kwargs, fit X, fit y, exception, message)
    ({}, np.where(_X == 3, np.nan, _X), _Y, ValueError, "Input X contains NaN"),
    ({}, _X, np.where(_Y == 2, np.inf, _Y), ValueError, "Input y contains infinity"),
    ({}, _X[:1], _Y[:1], ValueError, r"Found array with 1 sample\(s\)"),
    ({}, _X, _Y[:5], ValueError, "inconsistent numbers of samples: \\[6, 5\\]"),
    (
        {},
        np.array([["a", "b"]] * 6, dtype=object),
        _Y,
        ValueError,
        "could not convert|Unable to convert",
    ),
    ({"depth": -1}, _X, _Y, ValueError, r"depth must be >= 0; got -1"),
    ({"depth": 1.5}, _X, _Y, TypeError, r"depth must be an integer; got float"),
    ({"delta": -0.1}, _X, _Y, ValueError, r"delta must be >= 0.0; got -0.1"),
    ({"mutation_rate": 1.5}, _X, _Y, ValueError, r"mutation_rate must be <= 1.0"),
    ({"n_children": 0}, _X, _Y, ValueError, r"n_children must be >= 1; got 0"),
    ({"local_search": "bfgs"}, _X, _Y, ValueError, r"local_search must be one of"),
    ({"subsample": 0.0}, _X, _Y, ValueError, r"subsample must be > 0.0; got 0.0"),
    ({"pole_tol": float("nan")}, _X, _Y, ValueError, r"pole_tol must be >= 0.0"),
    ({"clip_margin": -1}, _X, _Y, ValueError, r"clip_margin must be >= 0.0"),
    ({"pole_margin": -0.1}, _X, _Y, ValueError, r"pole_margin must be >= 0.0"),
    ({"n_runs": 0}, _X, _Y, ValueError, r"n_runs must be >= 1; got 0"),
    (
        {"validation_fraction": 1.0},
        _X,
        _Y,
        ValueError,
        r"validation_fraction must be < 1.0; got 1.0",
    ),
    (
        {"validation_fraction": 0.1},
        _X,
        _Y,
        ValueError,
        r"must leave at least 2 rows for fitting and 2 for validation",
    ),
]


@pytest.mark.parametrize(("kwargs", "X", "y", "exc", "pattern"), BAD_INPUTS)
def test_bad_input_is_rejected(kwargs, X, y, exc, pattern):
    with pytest.raises(exc, match=pattern):
        ContinuedFractionRegressor(n_generations=1, **kwargs).fit(X, y)


def test_predict_checks_fitted_and_feature_count(rng):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ContinuedFractionRegressor().predict(_X)
    model = ContinuedFractionRegressor(n_generations=1).fit(_X, _Y)
    with pytest.raises(ValueError, match="X has 3 features"):
        model.predict(np.ones((2, 3)))
