"""Downstream metrics on real data and the fidelity of synthetic tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from lemmata.privacy._checks import check_int
from lemmata.privacy._domain import Domain
from lemmata.privacy._mst import marginal_counts

__all__ = [
    "accuracy",
    "brier_score",
    "expected_calibration_error",
    "marginal_tv_distance",
    "roc_auc",
]


def _proba_2d(proba) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must have shape (n,) or (n, n_classes); got {p.shape}")
    return p


def _labels(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match proba; got {y.shape}")
    return y.astype(np.int64)


def accuracy(y, proba) -> float:
    """Share of rows whose most probable class is the label ``y`` (codes 0..C-1)."""
    p = _proba_2d(proba)
    return float(np.mean(p.argmax(axis=1) == _labels(y, len(p))))


def brier_score(y, proba) -> float:
    r"""Brier score of a binary classifier, :math:`\frac1n\sum_i (p_i - y_i)^2`.

    ``proba`` is :math:`p_i = P(y_i = 1)` of shape (n,), or (n, 2).
    """
    p = _proba_2d(proba)
    if p.shape[1] != 2:
        raise ValueError(f"brier_score needs 2 classes; got {p.shape[1]}")
    return float(np.mean((p[:, 1] - _labels(y, len(p))) ** 2))


def roc_auc(y, proba) -> float:
    r"""ROC AUC of a binary classifier, the Mann-Whitney statistic with ties
    counted one half: :math:`P(p_+ > p_-) + \tfrac12 P(p_+ = p_-)`."""
    p = _proba_2d(proba)[:, 1]
    y = _labels(y, len(p))
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = pd.Series(p).rank(method="average").to_numpy()
    u = ranks[y == 1].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def expected_calibration_error(y, proba, n_bins: int = 15) -> float:
    r"""Expected calibration error on the top-class confidence.

    .. math:: \mathrm{ECE} = \sum_b \frac{|B_b|}{n}\,
        \big|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\big|

    where :math:`B_b` are the rows whose confidence
    :math:`\max_c p_{ic}` falls in the ``n_bins`` equal-width bins
    :math:`((b-1)/M, b/M]` (the first bin also holds 0). Empty bins are skipped.
    """
    n_bins = check_int("n_bins", n_bins, 1)
    p = _proba_2d(proba)
    y = _labels(y, len(p))
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.bincount(idx, weights=correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / len(p))


def marginal_tv_distance(
    real: pd.DataFrame, synthetic: pd.DataFrame, domain: Domain, way: int = 1
) -> float:
    r"""Mean total-variation distance of the ``way``-way marginals (1 or 2).

    .. math:: \frac{1}{|S|}\sum_{s \in S} \tfrac12 \| \hat P_s - \hat Q_s \|_1

    over all column sets :math:`s` of size ``way``, with :math:`\hat P_s,
    \hat Q_s` the normalised marginal counts of ``real`` and ``synthetic`` on
    the domain's codes.
    """
    if way not in (1, 2):
        raise ValueError(f"way must be 1 or 2; got {way!r}")
    a, b = domain.encode(real), domain.encode(synthetic)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("real and synthetic must both have rows")
    sizes = domain.sizes
    dists = []
    for cols in itertools.combinations(range(len(sizes)), way):
        pa = marginal_counts(a, cols, sizes)
        pb = marginal_counts(b, cols, sizes)
        dists.append(0.5 * np.abs(pa / pa.sum() - pb / pb.sum()).sum())
    return float(np.mean(dists))
