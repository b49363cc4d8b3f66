"""The interface shared by the DP synthetic-data generators."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lemmata.privacy._accounting import PrivacyLedger, rho_from_epsilon
from lemmata.privacy._checks import check_delta, check_epsilon, check_int
from lemmata.privacy._domain import Domain

__all__ = ["BaseSynthesizer", "project_simplex"]


def project_simplex(v: np.ndarray) -> np.ndarray:
    r"""Euclidean projection of ``v`` onto the probability simplex.

    .. math:: \arg\min_{p \ge 0,\ \sum p = 1} \|p - v\|_2 = \max(v - \tau, 0)

    with the threshold :math:`\tau` found by sorting (Duchi et al. 2008).
    """
    v = np.asarray(v, dtype=float).ravel()
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    tau = css[rho] / (rho + 1.0)
    return np.maximum(v - tau, 0.0)


class BaseSynthesizer:
    """Common validation for ``fit(df, epsilon, delta)`` and ``sample(n)``.

    Subclasses implement ``_fit(codes, epsilon, delta, compositions)``,
    ``_sample(n)`` and ``_min_budget(n_rows)``.
    """

    def __init__(self, domain: Domain, rng: np.random.Generator | None = None):
        if not isinstance(domain, Domain):
            raise TypeError(f"domain must be a Domain; got {type(domain).__name__}")
        self.domain = domain
        self.rng = rng

    def _generator(self) -> np.random.Generator:
        if self.rng is None:
            self.rng = np.random.default_rng()
        return self.rng

    def fit(
        self, df: pd.DataFrame, epsilon: float, delta: float, *, compositions: int = 1
    ):
        """Fit the generator to ``df`` under an :math:`(\\varepsilon, \\delta)` budget.

        Parameters
        ----------
        df : DataFrame
            The private table; it must hold every column of the domain.
        epsilon : float
            Must be > 0.
        delta : float
            Must be in (0, 1).
        compositions : int, default=1
            This fit is one of ``compositions`` identical runs on the same rows
            that together must meet ``(epsilon, delta)``; the run spends
            :math:`1/\\text{compositions}` of the budget in the mechanism's
            own composition calculus (zCDP or RDP).

        Returns
        -------
        self
        """
        epsilon = check_epsilon(epsilon)
        delta = check_delta(delta)
        compositions = check_int("compositions", compositions, 1)
        codes = self.domain.encode(df)
        if len(codes) == 0:
            raise ValueError("df must have at least one row; got 0")
        allowed = self.max_compositions(epsilon, delta, len(codes))
        if compositions > allowed:
            raise ValueError(
                f"the budget epsilon={epsilon:g}, delta={delta:g} cannot be split "
                f"into compositions={compositions} runs of {type(self).__name__} on "
                f"{len(codes)} rows; it allows at most K={allowed}"
            )
        self.ledger_ = PrivacyLedger(epsilon, delta)
        self._fit(codes, epsilon, delta, compositions)
        self.n_rows_ = len(codes)
        return self

    def sample(self, n: int) -> pd.DataFrame:
        """Draw ``n`` synthetic rows, decoded to the domain's values."""
        if not hasattr(self, "ledger_"):
            raise RuntimeError(f"{type(self).__name__} must be fitted before sample")
        n = check_int("n", n, 1)
        return self.domain.decode(self._sample(n))

    def max_compositions(self, epsilon: float, delta: float, n_rows: int) -> int:
        """The largest number of runs the budget allows on ``n_rows`` rows.

        A run is refused when its share of the budget is below the mechanism's
        minimum (see the subclass's Notes); for zCDP mechanisms this is
        :math:`\\lfloor \\rho(\\varepsilon, \\delta) / \\rho_{\\min} \\rfloor`.
        """
        rho = rho_from_epsilon(epsilon, delta)
        return max(math.floor(rho / self._min_budget(n_rows) * (1 + 1e-12)), 0)

    def _min_budget(self, n_rows: int) -> float:
        raise NotImplementedError

    def _fit(self, codes, epsilon, delta, compositions) -> None:
        raise NotImplementedError

    def _sample(self, n: int) -> np.ndarray:
        raise NotImplementedError
