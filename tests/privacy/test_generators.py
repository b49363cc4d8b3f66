"""Generators, domain encoding and ensembles: behaviour, accounting, bad inputs."""

import numpy as np
import pandas as pd
import pytest

from lemmata.privacy import (
    BaseSynthesizer,
    Domain,
    DPGANSynthesizer,
    MSTSynthesizer,
    MWEMSynthesizer,
    SyntheticDataEnsemble,
    marginal_tv_distance,
    project_simplex,
    rho_from_epsilon,
)

DOMAIN = Domain(
    {"a": ["x", "y", "z"], "b": ["u", "v"], "c": ["p", "q"], "label": ["no", "yes"]},
    {"num": (0.0, 10.0, 5)},
)


def make_table(rng, n=2000):
    """``b`` copies ``a`` (x -> u, else v), ``label`` follows ``num`` > 5."""
    a = rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2])
    num = rng.uniform(0, 10, n)
    flip = rng.random(n) < 0.1
    label = np.where((num > 5) ^ flip, "yes", "no")
    return pd.DataFrame(
        {
            "a": a,
            "b": np.where(a == "x", "u", "v"),
            "c": rng.choice(["p", "q"], n),
            "label": label,
            "num": num,
        }
    )


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the tiny DP-GAN (the machine has 2 cores)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_project_simplex_meets_kkt(rng):
    for _ in range(20):
        v = rng.normal(size=7) * 2
        p = project_simplex(v)
        assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
        # KKT: v - p is the same constant tau on the support and <= tau off it.
        tau = (v - p)[p > 0]
        assert np.ptp(tau) < 1e-12
        assert np.all(v[p == 0] <= tau[0] + 1e-12)


def test_domain_round_trip_and_fixed_one_hot():
    df = pd.DataFrame(
        {"a": ["z", "x"], "b": ["u", "u"], "c": ["q", "q"], "label": ["no", "no"]}
    ).assign(num=[0.1, 99.0])
    codes = DOMAIN.encode(df)
    assert codes.tolist() == [[2, 0, 1, 0, 0], [0, 0, 1, 0, 4]]
    back = DOMAIN.decode(codes)
    assert back["a"].tolist() == ["z", "x"] and back["num"].tolist() == [1.0, 9.0]
    assert DOMAIN.one_hot(df).shape == (2, 3 + 2 + 2 + 2 + 5)
    other = Domain({"a": ["x", "rest"]}, other={"a": "rest"})
    assert other.encode(pd.DataFrame({"a": ["x", "new"]}))[:, 0].tolist() == [0, 1]


@pytest.mark.parametrize("cls", [MSTSynthesizer, MWEMSynthesizer])
def test_zcdp_ledgers_meet_budget_in_closed_form(rng, cls):
    df = make_table(rng)
    gen = cls(DOMAIN, rng=rng).fit(df, 2.0, 1e-6, compositions=3)
    rho = sum(s.rho for s in gen.ledger_.entries)
    assert rho == pytest.approx(rho_from_epsilon(2.0, 1e-6) / 3, rel=1e-12)
    if cls is MSTSynthesizer:
        # one third each: 1-way, the r - 1 = 4 selections, the 2-way marginals
        first, *sel, second = (s.rho for s in gen.ledger_.entries)
        assert len(sel) == 4
        assert first == pytest.approx(rho / 3) and second == pytest.approx(rho / 3)
        assert sum(sel) == pytest.approx(rho / 3)


def test_mst_finds_the_dependency_and_fits_marginals(rng):
    df = make_table(rng, 5000)
    gen = MSTSynthesizer(DOMAIN, rng=rng).fit(df, 1e4, 1e-5)
    edges = {frozenset(e) for e in gen.edges_}
    assert frozenset((0, 1)) in edges  # a -- b
    assert frozenset((3, 4)) in edges  # label -- num
    synth = gen.sample(5000)
    assert marginal_tv_distance(df, synth, DOMAIN, 1) < 0.03
    assert marginal_tv_distance(df, synth, DOMAIN, 2) < 0.05


def test_mwem_fits_two_way_marginals(rng):
    df = make_table(rng, 3000)
    gen = MWEMSynthesizer(DOMAIN, rounds=20, rng=rng).fit(df, 50.0, 1e-5)
    synth = gen.sample(5000)
    assert set(synth.columns) == set(DOMAIN.columns)
    assert marginal_tv_distance(df, synth, DOMAIN, 2) < 0.1


def test_dp_gan_runs_accounts_and_is_reproducible(rng, one_torch_thread):
    df = make_table(rng, 600)
    kw = {"steps": 15, "batch_size": 64, "hidden": 16}
    a = DPGANSynthesizer(DOMAIN, rng=np.random.default_rng(1), **kw)
    a.fit(df, 3.0, 1e-5, compositions=2)
    b = DPGANSynthesizer(DOMAIN, rng=np.random.default_rng(1), **kw)
    b.fit(df, 3.0, 1e-5, compositions=2)
    sa, sb = a.sample(50), b.sample(50)
    pd.testing.assert_frame_equal(sa, sb)
    assert set(sa["a"]) <= {"x", "y", "z"}
    # One run of two spends at most the budget; with a single run's budget the
    # noise is smaller.
    assert a.ledger_.total()[0] < 3.0
    c = DPGANSynthesizer(DOMAIN, rng=np.random.default_rng(1), **kw).fit(df, 3.0, 1e-5)
    assert c.noise_multiplier_ < a.noise_multiplier_
    assert c.ledger_.total()[0] <= 3.0


@pytest.mark.parametrize("mode", ["split", "shard", "naive"])
def test_ensemble_ledger_meets_total_budget(rng, mode):
    from sklearn.linear_model import LogisticRegression

    df = make_table(rng, 1000)
    ens = SyntheticDataEnsemble(
        MSTSynthesizer(DOMAIN), LogisticRegression(), "label", 4, mode, rng=rng
    ).fit(df, 1.0, 1e-5)
    eps, delta = ens.ledger_.total()
    assert eps <= 1.0 + 1e-9 and delta <= 1e-5 * (1 + 1e-12)
    assert len(ens.ledger_.entries) == 4
    test = make_table(rng, 200)
    members = ens.member_proba(test)
    assert members.shape == (4, 200, 2)
    np.testing.assert_allclose(ens.predict_proba(test), members.mean(axis=0))
    np.testing.assert_allclose(ens.predict_proba(test).sum(axis=1), 1.0)
    assert set(ens.predict(test)) <= {"no", "yes"}


def test_repeat_mode_is_labelled_with_k_budgets(rng):
    from sklearn.linear_model import LogisticRegression

    ens = SyntheticDataEnsemble(
        MSTSynthesizer(DOMAIN), LogisticRegression(), "label", 3, "repeat", rng=rng
    ).fit(make_table(rng, 500), 1.0, 1e-5)
    assert ens.ledger_.epsilon == 3.0
    assert 1.0 < ens.ledger_.total()[0] <= 3.0


class OneClass(BaseSynthesizer):
    """A fake generator whose tables have a single label."""

    def _min_budget(self, n_rows):
        return 1e-12

    def _fit(self, codes, epsilon, delta, compositions):
        pass

    def _sample(self, n):
        return np.zeros((n, len(self.domain.columns)), dtype=np.int64)


def test_single_class_synthetic_falls_back_to_prior(rng):
    from sklearn.linear_model import LogisticRegression

    ens = SyntheticDataEnsemble(
        OneClass(DOMAIN), LogisticRegression(), "label", 2, rng=rng
    ).fit(make_table(rng, 300), 1.0, 1e-5)
    assert ens.n_degenerate_ == 2
    np.testing.assert_allclose(ens.predict_proba(make_table(rng, 5)), [[1, 0]] * 5)


def _fit_kwargs(**over):
    kw = {"epsilon": 1.0, "delta": 1e-5}
    kw.update(over)
    return kw


BAD_FIT = [
    ({"epsilon": 0.0}, ValueError, r"epsilon must be > 0; got 0\.0"),
    ({"epsilon": -2.0}, ValueError, r"epsilon must be > 0; got -2\.0"),
    ({"delta": 0.0}, ValueError, r"delta must be in \(0, 1\); got 0\.0"),
    ({"delta": 1.0}, ValueError, r"delta must be in \(0, 1\); got 1\.0"),
    ({"compositions": 0}, ValueError, r"compositions must be >= 1; got 0"),
    ({"epsilon": 1e-4, "compositions": 10**6}, ValueError, r"allows at most K=\d+"),
]


@pytest.mark.parametrize(("over", "exc", "pattern"), BAD_FIT)
def test_bad_fit_inputs(rng, over, exc, pattern):
    df = make_table(rng, 200)
    with pytest.raises(exc, match=pattern):
        MSTSynthesizer(DOMAIN, rng=rng).fit(df, **_fit_kwargs(**over))


def test_unseen_category_raises_at_fit_and_at_prediction(rng):
    from sklearn.linear_model import LogisticRegression

    bad = make_table(rng, 100)
    bad.loc[3, "a"] = "w"
    with pytest.raises(ValueError, match=r"column 'a' has values outside .*'w'"):
        MSTSynthesizer(DOMAIN, rng=rng).fit(bad, 1.0, 1e-5)
    ens = SyntheticDataEnsemble(
        MSTSynthesizer(DOMAIN), LogisticRegression(), "label", 1, rng=rng
    ).fit(make_table(rng, 300), 1.0, 1e-5)
    with pytest.raises(ValueError, match=r"column 'a' has values outside"):
        ens.predict_proba(bad)


def test_budget_error_says_which_k_is_allowed(rng):
    from sklearn.linear_model import LogisticRegression

    df = make_table(rng, 300)
    gen = DPGANSynthesizer(DOMAIN, steps=50, batch_size=64, max_noise_multiplier=2.0)
    allowed = gen.max_compositions(1.0, 1e-5, 300)
    ens = SyntheticDataEnsemble(gen, LogisticRegression(), "label", allowed + 1)
    with pytest.raises(ValueError, match=rf"it allows at most K={allowed}$"):
        ens.fit(df, 1.0, 1e-5)


BAD_ENSEMBLE = [
    ({"mode": "bagging"}, ValueError, r"mode must be one of .*; got 'bagging'"),
    ({"n_members": 0}, ValueError, r"n_members must be >= 1; got 0"),
    ({"n_members": 5, "mode": "shard"}, ValueError, r"at most K=4"),
    ({"target": "num"}, ValueError, r"target must be a categorical column"),
    ({"estimator": object()}, TypeError, r"estimator must have fit and predict_proba"),
]


@pytest.mark.parametrize(("over", "exc", "pattern"), BAD_ENSEMBLE)
def test_bad_ensemble_inputs(rng, over, exc, pattern):
    from sklearn.linear_model import LogisticRegression

    kw = {
        "generator": MSTSynthesizer(DOMAIN),
        "estimator": LogisticRegression(),
        "target": "label",
        "n_members": 2,
    }
    kw.update(over)
    with pytest.raises(exc, match=pattern):
        SyntheticDataEnsemble(**kw, rng=rng).fit(make_table(rng, 200), 1.0, 1e-5)


@pytest.mark.parametrize(
    ("df_fn", "pattern"),
    [
        (lambda t: t.iloc[:0], r"df must have at least one row; got 0"),
        (lambda t: t.drop(columns="c"), r"df lacks the declared columns \['c'\]"),
        (lambda t: t.assign(label="no"), r"must have at least 2 classes; got 1"),
    ],
)
def test_bad_tables(rng, df_fn, pattern):
    from sklearn.linear_model import LogisticRegression

    ens = SyntheticDataEnsemble(MSTSynthesizer(DOMAIN), LogisticRegression(), "label")
    with pytest.raises(ValueError, match=pattern):
        ens.fit(df_fn(make_table(rng, 200)), 1.0, 1e-5)


BAD_DOMAIN = [
    (
        {"numeric": {"n": (1.0, 1.0, 3)}},
        r"bounds of 'n' must be finite with low < high",
    ),
    ({"numeric": {"n": (0.0, 1.0, 0)}}, r"n_bins of 'n' must be >= 1; got 0"),
    ({"categorical": {"a": ["x", "x"]}}, r"categories of 'a' must be non-empty"),
    ({"categorical": {"a": ["x"]}, "other": {"a": "y"}}, r"other\['a'\] must be one"),
    ({}, r"a Domain needs at least one column"),
]


@pytest.mark.parametrize(("kwargs", "pattern"), BAD_DOMAIN)
def test_bad_domains(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Domain(**kwargs)


def test_sample_needs_fit_and_positive_n(rng):
    gen = MSTSynthesizer(DOMAIN, rng=rng)
    with pytest.raises(RuntimeError, match="must be fitted before sample"):
        gen.sample(3)
    gen.fit(make_table(rng, 200), 1.0, 1e-5)
    with pytest.raises(ValueError, match=r"n must be >= 1; got 0"):
        gen.sample(0)
