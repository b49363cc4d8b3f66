"""Evaluation metrics against slow loops and scikit-learn."""

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score

from lemmata.privacy import (
    Domain,
    accuracy,
    brier_score,
    expected_calibration_error,
    marginal_tv_distance,
)
from lemmata.privacy import roc_auc as our_auc


def slow_ece(y, proba, n_bins):
    """Bin by bin, with bins ((b-1)/M, b/M] and the first one closed at 0."""
    total = 0.0
    conf = [max(row) for row in proba]
    pred = [int(np.argmax(row)) for row in proba]
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [
            i for i, c in enumerate(conf) if (lo < c <= hi) or (b == 0 and c == 0.0)
        ]
        if not members:
            continue
        acc = sum(pred[i] == y[i] for i in members) / len(members)
        avg = sum(conf[i] for i in members) / len(members)
        total += len(members) / len(y) * abs(acc - avg)
    return total


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("n_bins", [1, 15, 40])
def test_ece_matches_slow_loop(rng, n_classes, n_bins):
    proba = rng.dirichlet(np.ones(n_classes) * 0.7, size=300)
    y = rng.integers(n_classes, size=300)
    assert expected_calibration_error(y, proba, n_bins) == pytest.approx(
        slow_ece(y, proba, n_bins), abs=1e-12
    )


def test_ece_bin_edges_and_perfect_calibration():
    # Confidence exactly 0.6 lies in the bin (8/15, 9/15]; 3 of 5 right.
    proba = np.array([[0.6, 0.4]] * 5)
    y = np.array([0, 0, 0, 1, 1])
    assert expected_calibration_error(y, proba) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(y, proba[:, 1]) == pytest.approx(0.0, abs=1e-12)


def test_binary_metrics_match_sklearn(rng):
    p = rng.random(500)
    p[:50] = 0.5  # ties
    y = (rng.random(500) < p).astype(int)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert our_auc(y, p) == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p > 0.5))


def test_marginal_tv_matches_crosstab(rng):
    domain = Domain({"a": ["x", "y", "z"], "b": ["u", "v"]}, {"c": (0.0, 1.0, 4)})
    make = lambda n: pd.DataFrame(  # noqa: E731
        {
            "a": rng.choice(["x", "y", "z"], n),
            "b": rng.choice(["u", "v"], n, p=[0.8, 0.2]),
            "c": rng.random(n),
        }
    )
    real, synth = make(200), make(300)
    assert marginal_tv_distance(real, real, domain, 2) == 0.0
    binned = lambda d: d.assign(c=np.minimum((d.c * 4).astype(int), 3))  # noqa: E731
    r, s = binned(real), binned(synth)
    tv1 = np.mean(
        [
            0.5
            * r[c]
            .value_counts(normalize=True)
            .sub(s[c].value_counts(normalize=True), fill_value=0)
            .abs()
            .sum()
            for c in "abc"
        ]
    )
    tv2 = np.mean(
        [
            0.5
            * pd.crosstab(r[i], r[j], normalize=True)
            .sub(pd.crosstab(s[i], s[j], normalize=True), fill_value=0)
            .abs()
            .to_numpy()
            .sum()
            for i, j in itertools.combinations("abc", 2)
        ]
    )
    assert marginal_tv_distance(real, synth, domain, 1) == pytest.approx(tv1)
    assert marginal_tv_distance(real, synth, domain, 2) == pytest.approx(tv2)


BAD = [
    (
        expected_calibration_error,
        ([0, 1], [[0.5, 0.5]]),
        ValueError,
        r"y must have shape \(1,\)",
    ),
    (
        expected_calibration_error,
        ([0], [[1.0]], 0),
        ValueError,
        r"n_bins must be >= 1; got 0",
    ),
    (
        brier_score,
        ([0], [[0.2, 0.3, 0.5]]),
        ValueError,
        r"brier_score needs 2 classes; got 3",
    ),
]


@pytest.mark.parametrize(("fn", "args", "exc", "pattern"), BAD)
def test_bad_inputs(fn, args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn(*args)
