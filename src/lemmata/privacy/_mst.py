"""A small MST-style marginal-based DP synthesizer with a tree sampler."""

from __future__ import annotations

import itertools
import math

import numpy as np

from lemmata.privacy._accounting import (
    Spend,
    exponential_mechanism_rho,
    gaussian_rho,
    rho_from_epsilon,
    rho_to_epsilon,
)
from lemmata.privacy._base import BaseSynthesizer, project_simplex

__all__ = ["MSTSynthesizer", "marginal_counts"]


def marginal_counts(codes: np.ndarray, cols: tuple[int, ...], sizes) -> np.ndarray:
    """Counts of the marginal on ``cols``, an array of shape ``sizes[cols]``."""
    shape = tuple(sizes[c] for c in cols)
    flat = np.ravel_multi_index(tuple(codes[:, c] for c in cols), shape)
    return np.bincount(flat, minlength=math.prod(shape)).reshape(shape).astype(float)


class MSTSynthesizer(BaseSynthesizer):
    r"""Marginal-based DP synthetic data in the style of MST (McKenna et al. 2021).

    With :math:`r` columns and the per-run zCDP budget :math:`\rho`, and
    :math:`\sigma = \sqrt{3 / (2\rho)}`:

    1. measure every 1-way marginal :math:`c_j` as
       :math:`\tilde c_j = c_j + \mathcal N(0, r\sigma^2 I)` (joint L2
       sensitivity :math:`\sqrt r`, cost :math:`\rho/3`);
    2. choose :math:`r-1` tree edges one at a time with the exponential
       mechanism, :math:`\varepsilon_{em} = \sqrt{8 (\rho/3)/(r-1)}`, among pairs
       joining two components, scoring pair :math:`(i, j)` by how badly the
       independence model misses it,
       :math:`\|c_{ij} - \hat n\, \hat p_i \hat p_j^\top\|_1` (sensitivity 1;
       cost :math:`\rho/3`);
    3. measure the chosen 2-way marginals with noise variance
       :math:`(r-1)\sigma^2` (cost :math:`\rho/3`);
    4. project each noisy table onto the simplex and sample a tree model: the
       root column from its 1-way marginal, then each child column from the
       conditional :math:`\hat P(x_b \mid x_a)` of its edge's 2-way table.

    :math:`\hat n` is the mean total of the noisy 1-way marginals, and
    :math:`\rho` comes from ``epsilon`` and ``delta`` by
    :func:`~lemmata.privacy.rho_from_epsilon` (divided by ``compositions``).

    Parameters
    ----------
    domain : Domain
        The public domain of every column (the target included).
    rng : numpy.random.Generator, optional
        The source of all noise and sampling.

    Attributes
    ----------
    edges_ : list of (int, int)
        The chosen tree edges, (parent, child) in breadth-first order from
        column 0.
    ledger_ : PrivacyLedger
        The spend of each measurement and selection.

    Notes
    -----
    Departures from MST [1]: [reconstruction] no domain compression (the
    domains here are small); the edge score compares with the independence
    model of the noisy 1-way marginals instead of a fitted graphical model; the
    graphical-model inference (private-pgm) is replaced by the closed-form
    tree sampler above, where a conditional row with no mass falls back to the
    child's 1-way marginal. The ``(epsilon, delta)`` to zCDP conversion is the
    simple bound of Bun and Steinke, not the tighter one of the reference code.
    A run is refused when the 1-way noise standard deviation
    :math:`\sqrt{r}\,\sigma` would exceed the number of rows, i.e. when
    :math:`\rho < 3r / (2n^2)`.

    References
    ----------
    .. [1] McKenna, Miklau, Sheldon. "Winning the NIST Contest: A scalable and
       general approach to differentially private synthetic data."
       arXiv:2108.04978.
    .. [2] Sun, Azizan, Srivastava, Wang. "Private Synthetic Data Meets Ensemble
       Learning." arXiv:2310.09729.
    """

    def _min_budget(self, n_rows: int) -> float:
        return 3.0 * len(self.domain.columns) / (2.0 * n_rows**2)

    def _record(self, name: str, rho: float, delta: float) -> None:
        self.ledger_.record(Spend(name, rho_to_epsilon(rho, delta), delta, rho=rho))

    def _fit(self, codes, epsilon, delta, compositions) -> None:
        rng = self._generator()
        sizes = self.domain.sizes
        r = len(sizes)
        rho = rho_from_epsilon(epsilon, delta) / compositions
        sigma = math.sqrt(3.0 / (2.0 * rho))

        s1 = sigma * math.sqrt(r)
        noisy1 = [
            marginal_counts(codes, (j,), sizes) + rng.normal(0.0, s1, sizes[j])
            for j in range(r)
        ]
        self._record("one-way marginals", gaussian_rho(math.sqrt(r), s1), delta)
        n_hat = max(float(np.mean([m.sum() for m in noisy1])), 1.0)
        self.marginals_ = [project_simplex(m / n_hat) for m in noisy1]

        self.edges_, self.conditionals_ = [], []
        if r == 1:
            return
        chosen = self._select_edges(codes, sizes, n_hat, rho / 3.0, delta)

        s2 = sigma * math.sqrt(r - 1)
        tables = {}
        for i, j in chosen:
            noisy = marginal_counts(codes, (i, j), sizes)
            noisy += rng.normal(0.0, s2, noisy.shape)
            tables[(i, j)] = project_simplex(noisy.ravel() / n_hat).reshape(noisy.shape)
        self._record("two-way marginals", gaussian_rho(math.sqrt(r - 1), s2), delta)
        self._build_tree(tables, r)

    def _select_edges(self, codes, sizes, n_hat, rho_sel, delta):
        rng = self._generator()
        r = len(sizes)
        eps_em = math.sqrt(8.0 * rho_sel / (r - 1))
        score = {}
        for i, j in itertools.combinations(range(r), 2):
            indep = n_hat * np.outer(self.marginals_[i], self.marginals_[j])
            score[(i, j)] = np.abs(marginal_counts(codes, (i, j), sizes) - indep).sum()
        component = list(range(r))
        chosen = []
        for _ in range(r - 1):
            cands = [e for e in score if component[e[0]] != component[e[1]]]
            s = np.array([score[e] for e in cands])
            # Exponential mechanism with sensitivity 1, shifted for stability.
            logits = eps_em * (s - s.max()) / 2.0
            prob = np.exp(logits) / np.exp(logits).sum()
            i, j = cands[int(rng.choice(len(cands), p=prob))]
            old, new = component[j], component[i]
            component = [new if c == old else c for c in component]
            chosen.append((i, j))
            self._record(
                f"edge selection {len(chosen)}",
                exponential_mechanism_rho(eps_em),
                delta,
            )
        return chosen

    def _build_tree(self, tables, r) -> None:
        adjacent = {j: [] for j in range(r)}
        for i, j in tables:
            adjacent[i].append(j)
            adjacent[j].append(i)
        seen, queue = {0}, [0]
        while queue:
            a = queue.pop(0)
            for b in adjacent[a]:
                if b in seen:
                    continue
                joint = tables[(a, b)] if (a, b) in tables else tables[(b, a)].T
                rows = joint.sum(axis=1, keepdims=True)
                cond = np.where(
                    rows > 0, joint / np.where(rows > 0, rows, 1.0), self.marginals_[b]
                )
                self.edges_.append((a, b))
                self.conditionals_.append(cond)
                seen.add(b)
                queue.append(b)

    def _sample(self, n: int) -> np.ndarray:
        rng = self._generator()
        sizes = self.domain.sizes
        out = np.zeros((n, len(sizes)), dtype=np.int64)
        out[:, 0] = rng.choice(sizes[0], size=n, p=self.marginals_[0])
        for (a, b), cond in zip(self.edges_, self.conditionals_, strict=True):
            cum = np.cumsum(cond, axis=1)[out[:, a]]
            u = rng.random(n)[:, None] * cum[:, -1:]
            out[:, b] = np.minimum((u >= cum).sum(axis=1), sizes[b] - 1)
        return out
