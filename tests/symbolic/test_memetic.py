"""Operators, invariants and local searches of the memetic algorithm."""

import numpy as np
import pytest
from scipy import stats

from lemmata.symbolic._fraction import design
from lemmata.symbolic._local_search import levenberg_marquardt, mse, nelder_mead
from lemmata.symbolic._memetic import (
    Batch,
    Settings,
    blend_weights,
    mutate,
    mutation_kind,
    random_batch,
    recombine,
    run_memetic,
)


def test_invariants_hold_after_every_generation(rng):
    X = rng.uniform(-1, 1, size=(120, 3))
    y = X[:, 0] / (1.5 + X[:, 1]) + 0.1 * rng.normal(size=120)
    settings = Settings(depth=2, n_generations=12, mutation_rate=0.5, stagnation=2)
    seen = []

    def check(generation, pop):
        assert pop.invariants_hold(), f"invariants broken after {generation}"
        seen.append(generation)

    result = run_memetic(design(X), y, settings, rng, callback=check)

    assert seen == list(range(1, 13))
    assert result.n_resets >= 1  # stagnation=2 forces resets: they keep the order
    assert np.all(np.diff(result.history) <= 0)


def test_blend_weight_range(rng):
    lam = blend_weights(rng, 100_000)
    assert lam.min() >= -1 / 3 and lam.max() <= 4 / 3
    # Uniform on [-1/3, 4/3]: mean 1/2, and both ends are reached.
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.min() < -0.33 and lam.max() > 1.33


def test_recombination_operators_are_equally_likely(rng):
    parents = random_batch(3000, 4, 3, rng)
    partners = random_batch(3000, 4, 3, rng)
    _, ops = recombine(parents, partners, rng)
    counts = np.bincount(ops, minlength=3)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_recombination_masks_and_coefficients(rng):
    a = random_batch(500, 5, 3, rng)
    b = random_batch(500, 5, 3, rng)
    child, ops = recombine(a, b, rng)

    expected = np.where(
        ops[:, None] == 0,
        a.s | b.s,
        np.where(ops[:, None] == 1, a.s & b.s, a.s ^ b.s),
    )
    np.testing.assert_array_equal(child.s, expected)
    assert not np.any(child.T & ~child.s[:, None, :])  # terms use selected vars only
    assert np.all(child.W[..., 1:][~child.T] == 0)

    only_a = child.T & a.T & ~b.T
    np.testing.assert_array_equal(child.W[..., 1:][only_a], a.W[..., 1:][only_a])
    both = child.T & a.T & b.T
    spread = b.W[..., 1:][both] - a.W[..., 1:][both]
    lam = (child.W[..., 1:][both] - a.W[..., 1:][both]) / spread
    assert np.all((lam >= -1 / 3 - 1e-9) & (lam <= 4 / 3 + 1e-9))


@pytest.mark.parametrize(
    ("current", "pocket", "kind"),
    [
        (1.1, 1.0, "major"),  # below 1.2 pocket
        (1.2, 1.0, "soft"),
        (1.5, 1.0, "soft"),
        (2.0, 1.0, "soft"),
        (2.01, 1.0, "major"),  # above 2 pocket
    ],
)
def test_mutation_rule(current, pocket, kind):
    assert mutation_kind(current, pocket) == kind


def test_major_mutation_toggles_a_variable_in_every_term(rng):
    batch = random_batch(1, 6, 5, rng)
    before = batch.copy()
    mutate(batch, 0, "major", rng)
    changed = np.flatnonzero(batch.s[0] != before.s[0])
    assert changed.size == 1
    j = changed[0]
    assert np.all(batch.T[0, :, j] == batch.s[0, j])
    others = np.delete(np.arange(6), j)
    np.testing.assert_array_equal(batch.T[0][:, others], before.T[0][:, others])


def test_soft_mutation_toggles_one_term(rng):
    batch = random_batch(1, 6, 5, rng)
    batch.s[0, :3] = True
    batch.T[0, :, :3] = True
    before = batch.copy()
    mutate(batch, 0, "soft", rng)
    np.testing.assert_array_equal(batch.s, before.s)
    assert np.count_nonzero(batch.T != before.T) == 1


def test_levenberg_marquardt_solves_the_linear_case(rng):
    # depth 0: the fraction is linear, so the optimum is the least-squares fit.
    X = rng.normal(size=(50, 4))
    y = X @ np.array([1.0, -2.0, 0.0, 0.5]) + 0.1 * rng.normal(size=50)
    Xa = design(X)
    free = np.array([[[True, True, True, False, True]]])
    W0 = np.zeros((1, 1, 5))

    found = levenberg_marquardt(W0, free, Xa, y, max_iter=50, tol=1e-12, pole_tol=1e-8)

    cols = free[0, 0]
    expected = np.linalg.lstsq(Xa[:, cols], y, rcond=None)[0]
    np.testing.assert_allclose(found.W[0, 0, cols], expected, rtol=1e-6)
    assert found.W[0, 0, 3] == 0.0  # a fixed coefficient does not move


def test_levenberg_marquardt_recovers_an_exact_fraction(rng):
    # y = 1 + x0 / (2 + x1), from a start near the truth, for 8 problems at once.
    X = rng.uniform(-1, 1, size=(80, 2))
    y = 1 + X[:, 0] / (2 + X[:, 1])
    truth = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    W0 = truth + rng.uniform(-0.3, 0.3, size=(8, 3, 3))
    free = np.ones_like(W0, dtype=bool)

    found = levenberg_marquardt(
        W0, free, design(X), y, max_iter=100, tol=1e-14, pole_tol=1e-8
    )

    assert np.all(found.loss < 1e-12)
    np.testing.assert_allclose(found.loss, mse(found.W, design(X), y, 1e-8))


def test_nelder_mead_improves_and_respects_the_mask(rng):
    X = rng.uniform(-1, 1, size=(60, 2))
    y = 1 + X[:, 0] / (2 + X[:, 1])
    W0 = np.array([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [1.5, 0.0, 0.5]]])
    free = np.ones_like(W0, dtype=bool)
    free[0, 0, 1:] = False
    start = mse(W0, design(X), y, 1e-8)[0]

    found = nelder_mead(W0, free, design(X), y, max_iter=400, tol=1e-8, pole_tol=1e-8)

    assert found.loss[0] < 0.1 * start
    np.testing.assert_array_equal(found.W[0, 0, 1:], 0.0)


def test_local_search_batches_and_per_problem_rows_agree(rng):
    # The same problem given shared rows or per-problem rows gives the same result.
    X = rng.uniform(-1, 1, size=(40, 2))
    y = X[:, 0] / (2 + X[:, 1])
    W0 = rng.uniform(-1, 1, size=(3, 3, 3))
    W0[:, 2, 0] = 3.0
    free = np.ones_like(W0, dtype=bool)
    Xa = design(X)
    kwargs = {"max_iter": 10, "tol": 1e-9, "pole_tol": 1e-8}
    shared = levenberg_marquardt(W0, free, Xa, y, **kwargs)
    stacked = levenberg_marquardt(
        W0, free, np.repeat(Xa[None], 3, 0), np.repeat(y[None], 3, 0), **kwargs
    )
    np.testing.assert_allclose(shared.W, stacked.W)
    one = levenberg_marquardt(W0[1:2], free[1:2], Xa, y, **kwargs)
    np.testing.assert_allclose(one.W[0], shared.W[1])


def test_batch_free_mask_includes_intercepts(rng):
    batch = random_batch(2, 3, 3, rng)
    free = batch.free
    assert free.shape == batch.W.shape
    assert free[..., 0].all()
    np.testing.assert_array_equal(free[..., 1:], batch.T)
    assert isinstance(batch.take([0]), Batch)


def test_pole_margin_rejects_a_pole_near_the_rows():
    # f = 1 / (x - 0.001) has a pole next to the row x = 0: the plain guard
    # (1e-8) accepts it, a relative margin of 1% of the median |t| does not.
    X = np.linspace(-1, 1, 21)[:, None]
    W = np.array([[[0.0, 0.0], [1.0, 0.0], [-0.001, 1.0]]])
    y = np.zeros(21)
    assert np.isfinite(mse(W, design(X), y, 1e-8)[0])
    assert np.isinf(mse(W, design(X), y, 1e-8, pole_margin=0.01)[0])
    shifted = W.copy()
    shifted[0, 2, 0] = -2.0  # pole at x = 2, outside the rows
    assert np.isfinite(mse(shifted, design(X), y, 1e-8, pole_margin=0.01)[0])
