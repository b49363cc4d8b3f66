"""Continued fraction regression (arXiv 2001.00624).

:class:`ContinuedFractionRegressor` is a scikit-learn regressor whose model is
a truncated analytic continued fraction of linear terms, fitted by a memetic
algorithm; :func:`evaluate_continued_fraction` evaluates a whole population of
such fractions on all rows at once.
"""

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without sklearn only
    raise ImportError(
        "lemmata.symbolic needs scikit-learn: pip install 'lemmata[symbolic]'"
    ) from exc

from lemmata.symbolic._estimator import ContinuedFractionRegressor, PoleWarning
from lemmata.symbolic._fraction import evaluate_continued_fraction

__all__ = ["ContinuedFractionRegressor", "PoleWarning", "evaluate_continued_fraction"]
