"""A small MWEM-style workload-based DP synthesizer over a full histogram."""

from __future__ import annotations

import itertools
import math

import numpy as np

from lemmata.privacy._accounting import (
    Spend,
    exponential_mechanism_rho,
    gaussian_rho,
    laplace_rho,
    rho_from_epsilon,
    rho_to_epsilon,
)
from lemmata.privacy._base import BaseSynthesizer
from lemmata.privacy._checks import check_int
from lemmata.privacy._domain import Domain
from lemmata.privacy._mst import marginal_counts

__all__ = ["MWEMSynthesizer"]

_COUNT_SHARE = 0.02


class MWEMSynthesizer(BaseSynthesizer):
    r"""Workload-based DP synthetic data in the style of MWEM (Hardt et al. 2012).

    The synthetic distribution :math:`A` is a full histogram over the product of
    the column domains, started uniform. The workload :math:`Q` is every 2-way
    marginal. With per-run zCDP budget :math:`\rho`, a share
    :math:`0.02\rho` measures the row count :math:`\hat n` with Gaussian noise,
    and the rest is split evenly over ``rounds`` :math:`T`. In round :math:`t`
    (budget :math:`\rho_t = 0.98\rho/T`):

    1. select a marginal :math:`q \in Q` with the exponential mechanism,
       :math:`\varepsilon_{em} = \sqrt{8 \rho_t / 2}`, scoring
       :math:`\|c_q - \hat n A_q\|_1` (sensitivity 1; cost :math:`\rho_t/2`);
    2. measure :math:`m_q = c_q + \mathrm{Lap}(1/\varepsilon_{lap})` per cell with
       :math:`\varepsilon_{lap} = \sqrt{\rho_t}` (L1 sensitivity 1; cost
       :math:`\varepsilon_{lap}^2/2 = \rho_t/2`);
    3. for ``replays`` passes over all measurements so far, multiply
       :math:`A \leftarrow A \cdot \exp\big((m_q - \hat n A_q) / (2\hat n)\big)`
       (broadcast from the marginal's cells) and renormalise.

    Parameters
    ----------
    domain : Domain
        The public domain of every column (the target included).
    rounds : int, default=15
        The number of select-measure rounds :math:`T`; must be >= 1.
    replays : int, default=10
        Multiplicative-weights passes per round; must be >= 1.
    max_cells : int, default=100_000
        Refuse domains whose full histogram has more cells.
    rng : numpy.random.Generator, optional
        The source of all noise and sampling.

    Notes
    -----
    Departures from MWEM [1]: [reconstruction] queries are whole 2-way marginals
    rather than single counting queries, the row count is measured privately
    (the original treats it as public), accounting is in zCDP (so the Laplace
    and exponential mechanisms are converted to zCDP, which is loose for pure
    DP), and the final histogram is sampled instead of the average of the
    iterates. A run is refused when the Laplace scale would exceed the number
    of rows, i.e. when :math:`\rho_t < 1/n^2`.

    References
    ----------
    .. [1] Hardt, Ligett, McSherry. "A Simple and Practical Algorithm for
       Differentially Private Data Release." NeurIPS 2012. arXiv:1012.4763.
    .. [2] Sun, Azizan, Srivastava, Wang. "Private Synthetic Data Meets Ensemble
       Learning." arXiv:2310.09729.
    """

    def __init__(
        self,
        domain: Domain,
        rounds: int = 15,
        replays: int = 10,
        max_cells: int = 100_000,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(domain, rng)
        self.rounds = check_int("rounds", rounds, 1)
        self.replays = check_int("replays", replays, 1)
        self.max_cells = check_int("max_cells", max_cells, 1)
        cells = math.prod(domain.sizes)
        if cells > self.max_cells:
            raise ValueError(
                f"the full histogram of the domain has {cells} cells; "
                f"it must be <= max_cells={self.max_cells}"
            )

    def _min_budget(self, n_rows: int) -> float:
        return self.rounds / ((1.0 - _COUNT_SHARE) * n_rows**2)

    def _record(self, name: str, rho: float, delta: float) -> None:
        self.ledger_.record(Spend(name, rho_to_epsilon(rho, delta), delta, rho=rho))

    def _fit(self, codes, epsilon, delta, compositions) -> None:
        rng = self._generator()
        sizes = self.domain.sizes
        r = len(sizes)
        rho = rho_from_epsilon(epsilon, delta) / compositions

        rho_n = _COUNT_SHARE * rho
        sigma_n = math.sqrt(1.0 / (2.0 * rho_n))
        n_hat = max(len(codes) + rng.normal(0.0, sigma_n), 1.0)
        self._record("row count", gaussian_rho(1.0, sigma_n), delta)

        workload = list(itertools.combinations(range(r), 2)) or [(0,)]
        true = {q: marginal_counts(codes, q, sizes) for q in workload}
        rho_t = (rho - rho_n) / self.rounds
        eps_em = math.sqrt(8.0 * rho_t / 2.0)
        eps_lap = math.sqrt(rho_t)

        hist = np.full(sizes, 1.0 / math.prod(sizes))
        measured = []
        for t in range(self.rounds):
            errors = np.array(
                [np.abs(true[q] - n_hat * _marginal(hist, q)).sum() for q in workload]
            )
            logits = eps_em * (errors - errors.max()) / 2.0
            prob = np.exp(logits) / np.exp(logits).sum()
            q = workload[int(rng.choice(len(workload), p=prob))]
            rho_em = exponential_mechanism_rho(eps_em)
            self._record(f"round {t + 1} selection", rho_em, delta)

            noisy = true[q] + rng.laplace(0.0, 1.0 / eps_lap, true[q].shape)
            self._record(f"round {t + 1} measurement", laplace_rho(eps_lap), delta)
            measured.append((q, noisy))
            for _ in range(self.replays):
                for q_m, m in measured:
                    hist = _multiplicative_update(hist, q_m, m, n_hat)
        self.histogram_ = hist
        self.workload_ = workload

    def _sample(self, n: int) -> np.ndarray:
        flat = self.histogram_.ravel()
        idx = self._generator().choice(flat.size, size=n, p=flat / flat.sum())
        return np.stack(np.unravel_index(idx, self.histogram_.shape), axis=1)


def _marginal(hist: np.ndarray, cols: tuple[int, ...]) -> np.ndarray:
    other = tuple(a for a in range(hist.ndim) if a not in cols)
    return hist.sum(axis=other)


def _multiplicative_update(hist, cols, measured, n_hat) -> np.ndarray:
    err = (measured - n_hat * _marginal(hist, cols)) / (2.0 * n_hat)
    shape = [1] * hist.ndim
    for c in cols:
        shape[c] = hist.shape[c]
    out = hist * np.exp(err.reshape(shape))
    return out / out.sum()
