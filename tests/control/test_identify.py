"""Least-squares Markov parameters and the tournament (Algorithm 1)."""

import numpy as np
import pytest

from lemmata.control import (
    critical_directions,
    estimate_markov,
    identify,
    random_candidates,
    regressors,
    separation,
    simulate_closed_loop,
    tournament,
)


def _lstsq_reference(y, ups, h):
    """OLS written out: one regression row per t, solved by lstsq."""
    T = len(y)
    Z = np.array(
        [np.concatenate([ups[t - k] for k in range(1, h + 1)]) for t in range(h, T)]
    )
    coef, *_ = np.linalg.lstsq(Z, y[h:], rcond=None)
    return coef.T


def _tournament_reference(G_hat, G):
    """Algorithm 1 from its text, with explicit SVDs per comparison."""
    best = 0
    for j in range(1, len(G)):
        u, _, vt = np.linalg.svd(G[best] - G[j])
        a, b = u[:, 0], vt[0]
        if abs(a @ (G[j] - G_hat) @ b) < abs(a @ (G[best] - G_hat) @ b):
            best = j
    return best


def test_regressors_stack_lags(rng):
    ups = rng.standard_normal((10, 2))
    Z = regressors(ups, 3)
    assert Z.shape == (7, 6)
    np.testing.assert_array_equal(Z[0], np.concatenate([ups[2], ups[1], ups[0]]))


def test_ols_matches_lstsq_and_prefixes(rng):
    y, ups = rng.standard_normal((200, 2)), rng.standard_normal((200, 3))
    h = 4
    np.testing.assert_allclose(
        estimate_markov(y, ups, h), _lstsq_reference(y, ups, h), rtol=1e-8, atol=1e-10
    )
    lengths = np.array([50, 120, 200])
    G = estimate_markov(y, ups, h, lengths=lengths)
    for k, n in enumerate(lengths):
        np.testing.assert_allclose(
            G[k], _lstsq_reference(y[:n], ups[:n], h), rtol=1e-8, atol=1e-10
        )


def test_ols_batch_equals_loop(rng):
    y, ups = rng.standard_normal((4, 80, 2)), rng.standard_normal((4, 80, 1))
    batch = estimate_markov(y, ups, 5)
    for k in range(4):
        np.testing.assert_allclose(
            batch[k], estimate_markov(y[k], ups[k], 5), rtol=1e-10, atol=1e-12
        )


def test_ols_is_consistent_for_the_closed_loop(rng):
    from lemmata.control import LoopBounds

    cs = random_candidates(3, 3, 1, 2, rng=rng, w_var=0.1, eta_var=0.1)
    h, T = 6, 20000
    y, ups = simulate_closed_loop(cs, 1, 1, T, rng=rng)
    G_hat = estimate_markov(y[0], ups[0], h)
    G = cs.markov_parameters(1, h)[1]
    bounds = LoopBounds(cs)
    bounds.ensure(np.array([1]), 1)
    # Each entry's standard error is at most sqrt(peak / T) (noise spectrum below
    # the squared H-infinity gain, unit-variance white regressors); allow 5 sigma.
    tol = 5 * np.sqrt(bounds.peak[1, 1] * G.size / T)
    assert np.linalg.norm(G_hat - G) <= tol


def test_ill_conditioned_regressors_warn(rng):
    ups = np.ones((50, 1)) + 1e-9 * rng.standard_normal((50, 1))
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        estimate_markov(rng.standard_normal((50, 2)), ups, 3)


def test_critical_directions_attain_the_gap(rng):
    G = rng.standard_normal((5, 2, 6))
    U, V, gaps = critical_directions(G)
    for i in range(5):
        for j in range(5):
            if i != j:
                value = abs(U[i, j] @ (G[i] - G[j]) @ V[i, j])
                assert value == pytest.approx(np.linalg.norm(G[i] - G[j], 2))
    assert separation(G) == pytest.approx(gaps[~np.eye(5, dtype=bool)].min() / 2)


def test_duplicate_markov_parameters_are_refused(rng):
    G = rng.standard_normal((3, 2, 4))
    G[2] = G[0]
    with pytest.raises(ValueError, match="candidates 0 and 2 have the same Markov"):
        critical_directions(G)


def test_tournament_matches_reference(rng):
    G = rng.standard_normal((7, 2, 5))
    for k in range(7):
        assert tournament(G[k], G) == k
    G_hat = G[3] + 0.8 * rng.standard_normal((50, 2, 5))
    batch = tournament(G_hat, G)
    assert batch.shape == (50,)
    assert [int(b) for b in batch] == [_tournament_reference(g, G) for g in G_hat]


def test_tournament_wins_inside_the_separation(rng):
    """Within gamma of the truth along every direction, the truth wins."""
    G = rng.standard_normal((6, 2, 4))
    gamma = separation(G)
    for star in range(6):
        noise = rng.standard_normal((2, 4))
        G_hat = G[star] + 0.99 * gamma * noise / np.linalg.norm(noise, 2)
        assert tournament(G_hat, G) == star


def test_identify_end_to_end(rng):
    cs = random_candidates(4, 3, 1, 2, rng=rng, w_var=0.05, eta_var=0.05)
    h = 8
    G = cs.markov_parameters(2, h)
    y, ups = simulate_closed_loop(cs, 2, 2, 4000, rng=rng, u_var=1.0)
    assert identify(y[0], ups[0], G) == 2
