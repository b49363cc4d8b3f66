"""Ensembles of downstream models trained on several DP synthetic tables."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd

from lemmata.privacy._accounting import PrivacyLedger, Spend
from lemmata.privacy._base import BaseSynthesizer
from lemmata.privacy._checks import check_delta, check_epsilon, check_int

__all__ = ["MODES", "SyntheticDataEnsemble", "member_spend"]

logger = logging.getLogger(__name__)

MODES = ("split", "shard", "naive", "repeat")
_MIN_SHARD_ROWS = 50


def member_spend(name: str, ledger: PrivacyLedger) -> Spend:
    """One generator run's ledger folded into a single spend (zCDP or RDP)."""
    eps, delta = ledger.total()
    entries = ledger.entries
    if entries and all(s.rho is not None for s in entries):
        return Spend(name, eps, delta, rho=sum(s.rho for s in entries))
    if entries and all(s.rdp is not None for s in entries):
        curve = np.sum([np.asarray(s.rdp) for s in entries], axis=0)
        return Spend(name, eps, delta, orders=entries[0].orders, rdp=tuple(curve))
    return Spend(name, eps, delta)


class _ConstantModel:
    """The fallback for a synthetic table with a single class: its prior."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, X) -> np.ndarray:
        return np.tile(self.proba, (len(X), 1))


class SyntheticDataEnsemble:
    r"""K downstream models, each trained on its own DP synthetic table.

    .. math:: \hat p(y \mid x) = \frac1K \sum_{k=1}^K f_k(x), \qquad
        f_k = \mathrm{fit}(S_k), \quad S_k = M_k(D_k)

    :math:`M` is ``generator`` (a :class:`BaseSynthesizer`, copied per member),
    :math:`f_k` a clone of ``estimator`` and :math:`K` is ``n_members``. The
    total budget :math:`(\varepsilon, \delta)` passed to :meth:`fit` is shared
    according to ``mode``:

    - ``"split"``: every run sees all rows and gets :math:`1/K` of the budget in
      the mechanism's own calculus (:math:`\rho/K` in zCDP; for DP-SGD, noise
      such that the :math:`K` runs compose through RDP), so the ledger total
      meets :math:`(\varepsilon, \delta)`;
    - ``"shard"``: :math:`K` disjoint shards of the rows, the full budget each
      (parallel composition);
    - ``"naive"``: :math:`(\varepsilon/K, \delta/K)` each (basic composition);
    - ``"repeat"``: the full budget each, an ablation whose total is
      :math:`K` runs' worth (the ledger's target is :math:`K\varepsilon`);
      never the same privacy as the others.

    Parameters
    ----------
    generator : BaseSynthesizer
        An unfitted DP generator whose domain holds ``target`` and the features.
    estimator : scikit-learn classifier
        Any estimator with ``fit`` and ``predict_proba``; cloned per member.
    target : str
        The label column, categorical in the generator's domain.
    n_members : int, default=4
        :math:`K`, >= 1.
    mode : {"split", "shard", "naive", "repeat"}, default="split"
    n_synthetic : int, optional
        Rows per synthetic table; default the rows the member saw.
    rng : numpy.random.Generator, optional
        Spawned into one stream per member (generator and estimator seeds).

    Attributes
    ----------
    ledger_ : PrivacyLedger
        One entry per member run, with the composed total.
    members_ : list
        The fitted downstream models.
    synthetic_ : list of DataFrame
        The synthetic tables.
    n_degenerate_ : int
        Members whose synthetic table had a single class (constant predictor
        with the synthetic prior).

    Notes
    -----
    [reconstruction] The paper (arXiv:2310.09729) says the mechanism is applied
    "several times in parallel" without saying how the budget is shared; the
    modes above are the alternatives, ``"split"`` the default. Features are
    one-hot over the declared domain, so every member has the same columns.
    Probabilities are averaged (soft voting), which keeps calibration.

    References
    ----------
    .. [1] Sun, Azizan, Srivastava, Wang. "Private Synthetic Data Meets Ensemble
       Learning." arXiv:2310.09729.
    """

    def __init__(
        self,
        generator: BaseSynthesizer,
        estimator,
        target: str,
        n_members: int = 4,
        mode: str = "split",
        n_synthetic: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.generator = generator
        self.estimator = estimator
        self.target = target
        self.n_members = n_members
        self.mode = mode
        self.n_synthetic = n_synthetic
        self.rng = rng

    def _validate(self, df: pd.DataFrame) -> None:
        if not isinstance(self.generator, BaseSynthesizer):
            raise TypeError(
                "generator must be a BaseSynthesizer; "
                f"got {type(self.generator).__name__}"
            )
        check_int("n_members", self.n_members, 1)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}; got {self.mode!r}")
        if self.n_synthetic is not None:
            check_int("n_synthetic", self.n_synthetic, 1)
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}")
        if len(df) == 0:
            raise ValueError("df must have at least one row; got 0")
        domain = self.generator.domain
        if self.target not in domain.categorical:
            raise ValueError(
                f"target must be a categorical column of the domain; "
                f"got {self.target!r}"
            )
        if self.target not in df.columns:
            raise ValueError(f"target column {self.target!r} is missing from df")
        if df[self.target].nunique() < 2:
            raise ValueError(
                f"target column {self.target!r} must have at least 2 classes; "
                f"got {df[self.target].nunique()}"
            )

    def _check_estimator(self) -> None:
        if not (
            hasattr(self.estimator, "fit") and hasattr(self.estimator, "predict_proba")
        ):
            raise TypeError(
                "estimator must have fit and predict_proba; "
                f"got {type(self.estimator).__name__}"
            )

    def _budgets(self, n: int, epsilon: float, delta: float):
        """Per-member (epsilon, delta, compositions) and the ledger."""
        k = self.n_members
        if self.mode == "split":
            allowed = self.generator.max_compositions(epsilon, delta, n)
            if k > allowed:
                raise ValueError(
                    f"the budget epsilon={epsilon:g}, delta={delta:g} cannot be "
                    f"split into n_members={k} runs of "
                    f"{type(self.generator).__name__} on {n} rows; "
                    f"it allows at most K={allowed}"
                )
            return (epsilon, delta, k), PrivacyLedger(epsilon, delta)
        if self.mode == "shard":
            allowed = n // _MIN_SHARD_ROWS
            if k > allowed:
                raise ValueError(
                    f"n_members must be <= n/{_MIN_SHARD_ROWS} in shard mode so that "
                    f"shards are not too small; got {k} for {n} rows; "
                    f"it allows at most K={allowed}"
                )
            return (epsilon, delta, 1), PrivacyLedger(epsilon, delta, disjoint=True)
        if self.mode == "naive":
            return (epsilon / k, delta / k, 1), PrivacyLedger(epsilon, delta)
        return (epsilon, delta, 1), PrivacyLedger(min(k * epsilon, 1e300), delta)

    def fit(self, df: pd.DataFrame, epsilon: float, delta: float):
        """Generate the K tables under the total budget and fit one model on each.

        Returns
        -------
        self
        """
        self._check_estimator()
        tables, ledger = self.generate(df, epsilon, delta)
        return self.fit_tables(tables, ledger)

    def generate(
        self, df: pd.DataFrame, epsilon: float, delta: float
    ) -> tuple[list[pd.DataFrame], PrivacyLedger]:
        """The K synthetic tables under the total budget, and their ledger.

        Useful to train several estimators on the same tables (then call
        :meth:`fit_tables` on a copy with another ``estimator``).
        """
        epsilon = check_epsilon(epsilon)
        delta = check_delta(delta)
        self._validate(df)
        k = self.n_members
        (eps_k, delta_k, comps), ledger = self._budgets(len(df), epsilon, delta)
        rng = self.rng if self.rng is not None else np.random.default_rng()
        streams = rng.spawn(k)
        if self.mode == "shard":
            order = rng.permutation(len(df))
            parts = [df.iloc[idx] for idx in np.array_split(order, k)]
        else:
            parts = [df] * k
        tables = []
        for j, (part, stream) in enumerate(zip(parts, streams, strict=True)):
            gen = copy.deepcopy(self.generator)
            gen.rng = stream
            gen.fit(part, eps_k, delta_k, compositions=comps)
            ledger.record(member_spend(f"member {j + 1}", gen.ledger_))
            tables.append(gen.sample(self.n_synthetic or len(part)))
        logger.info(
            "%d synthetic tables (%s): privacy total %s", k, self.mode, ledger.total()
        )
        return tables, ledger

    def fit_tables(
        self, tables: list[pd.DataFrame], ledger: PrivacyLedger | None = None
    ):
        """Fit one clone of ``estimator`` per synthetic table.

        Returns
        -------
        self
        """
        from sklearn.base import clone

        self._check_estimator()
        if not tables:
            raise ValueError("tables must hold at least one table; got 0")
        domain = self.generator.domain
        self.classes_ = list(domain.categorical[self.target])
        self.features_ = [c for c in domain.columns if c != self.target]
        self._feature_domain = domain.subset(self.features_)
        rng = np.random.default_rng(
            None if self.rng is None else self.rng.integers(2**63)
        )
        self.members_, self.n_degenerate_ = [], 0
        for synth, stream in zip(tables, rng.spawn(len(tables)), strict=True):
            self.members_.append(self._fit_member(synth, clone(self.estimator), stream))
        self.synthetic_ = list(tables)
        self.ledger_ = ledger
        return self

    def _fit_member(self, synth: pd.DataFrame, est, stream: np.random.Generator):
        X = self._feature_domain.one_hot(synth)
        y = (
            synth[self.target]
            .map({c: i for i, c in enumerate(self.classes_)})
            .to_numpy()
        )
        counts = np.bincount(y, minlength=len(self.classes_))
        if np.count_nonzero(counts) < 2:
            self.n_degenerate_ += 1
            logger.warning("synthetic table with one class; constant predictor")
            return _ConstantModel(counts / counts.sum())
        if "random_state" in est.get_params():
            est.set_params(random_state=int(stream.integers(2**31 - 1)))
        est.fit(X, y)
        return est

    def member_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Each member's class probabilities, shape (K, n_rows, n_classes)."""
        if not hasattr(self, "members_"):
            raise RuntimeError("SyntheticDataEnsemble must be fitted first")
        X = self._feature_domain.one_hot(df)
        out = np.zeros((len(self.members_), len(df), len(self.classes_)))
        for j, m in enumerate(self.members_):
            p = m.predict_proba(X)
            cols = getattr(m, "classes_", np.arange(len(self.classes_)))
            out[j][:, np.asarray(cols, dtype=np.int64)] = p
        return out

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """The averaged class probabilities, shape (n_rows, n_classes)."""
        return self.member_proba(df).mean(axis=0)

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """The most probable class label per row (values of the target column)."""
        return np.asarray(self.classes_, dtype=object)[
            self.predict_proba(df).argmax(axis=1)
        ]
