"""The non-separable potential sum_b (1/2)||w_b||_p^2 (PNormSquared per
tensor): its references satisfy their optimality conditions, written here in
numpy, and mirror descent reaches its own interpolator, not p-GD's."""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from lemmata.optim import (
    MirrorDescent,
    PNormSquared,
    bregman_divergence,
    margin,
    max_margin_direction,
    min_norm_interpolator,
)


def split(w, blocks):
    return np.split(np.asarray(w), np.cumsum(blocks)[:-1])


def block_gradient(w, p, blocks):
    """grad of sum_b (1/2)||w_b||_p^2, block by block, in float64 numpy."""
    parts = []
    for part in split(w, blocks):
        norm = np.sum(np.abs(part) ** p) ** (1 / p)
        parts.append(
            np.zeros_like(part)
            if norm == 0
            else norm ** (2 - p) * np.sign(part) * np.abs(part) ** (p - 1)
        )
    return np.concatenate(parts)


def block_norm(w, p, blocks):
    return np.sqrt(sum(np.sum(np.abs(b) ** p) ** (2 / p) for b in split(w, blocks)))


@pytest.fixture
def separable(rng):
    X = rng.standard_normal((12, 20))
    y = rng.choice([-1.0, 1.0], size=12)
    y[:2] = (-1.0, 1.0)
    return X, y


@pytest.fixture
def regression(rng):
    X = rng.standard_normal((6, 15)) / np.sqrt(15)
    return X, rng.standard_normal(6), 0.5 * rng.standard_normal(15)


# ------------------------------------------------------------- references


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_block_max_margin_satisfies_kkt(separable, p):
    X, y = separable
    blocks = (8, 12)
    Z = y[:, None] * X
    w_star = max_margin_direction(X, y, p, potential="squared", blocks=blocks)

    assert block_norm(w_star, p, blocks) == pytest.approx(1.0, rel=1e-12)
    # w~ = w*/gamma solves min (1/2)N(w)^2 s.t. Zw >= 1: grad = Z_A^T alpha,
    # alpha >= 0 on the active constraints.
    w_tilde = w_star / (Z @ w_star).min()
    active = Z @ w_tilde <= 1 + 1e-9
    _, residual = nnls(Z[active].T, block_gradient(w_tilde, p, blocks))
    assert residual / np.linalg.norm(block_gradient(w_tilde, p, blocks)) < 1e-8
    assert np.min(Z @ w_tilde) >= 1 - 1e-10


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_blocks_change_the_max_margin_direction_except_at_p2(separable, p):
    X, y = separable
    l_p = max_margin_direction(X, y, p)
    one_block = max_margin_direction(X, y, p, potential="squared")
    two_blocks = max_margin_direction(X, y, p, potential="squared", blocks=(8, 12))
    np.testing.assert_allclose(one_block, l_p, rtol=0, atol=1e-12)
    assert np.linalg.norm(two_blocks - l_p) > 1e-3
    np.testing.assert_allclose(
        max_margin_direction(X, y, 2.0, potential="squared", blocks=(8, 12)),
        max_margin_direction(X, y, 2.0),
        atol=1e-8,
    )
    # Each maximises its own normalised margin.
    own = margin(X, y, two_blocks, p, potential="squared", blocks=(8, 12))
    assert own > margin(X, y, l_p, p, potential="squared", blocks=(8, 12))
    assert margin(X, y, l_p, p) > margin(X, y, two_blocks, p)


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
@pytest.mark.parametrize("blocks", [None, (5, 10)])
def test_squared_interpolator_satisfies_kkt(regression, p, blocks):
    X, y, w0 = regression
    sizes = blocks or (15,)
    w = min_norm_interpolator(X, y, p, w0, potential="squared", blocks=blocks)

    assert np.linalg.norm(X @ w - y) < 1e-12
    gradient = block_gradient(w, p, sizes) - block_gradient(w0, p, sizes)
    multipliers = np.linalg.lstsq(X.T, gradient, rcond=None)[0]
    assert np.linalg.norm(X.T @ multipliers - gradient) < 1e-10 * np.linalg.norm(
        gradient
    )


def test_squared_interpolator_from_zero_is_the_min_block_norm_one(regression):
    X, y, _ = regression
    w = min_norm_interpolator(X, y, 3.0, potential="squared", blocks=(5, 10))
    gradient = block_gradient(w, 3.0, (5, 10))
    multipliers = np.linalg.lstsq(X.T, gradient, rcond=None)[0]
    assert np.linalg.norm(X.T @ multipliers - gradient) < 1e-10 * np.linalg.norm(
        gradient
    )
    np.testing.assert_allclose(
        min_norm_interpolator(X, y, 3.0, potential="squared"),
        min_norm_interpolator(X, y, 3.0),
        atol=1e-12,
    )


def test_squared_bregman_divergence_matches_torch(rng):
    w, w0 = rng.standard_normal(9), rng.standard_normal(9)
    potential = PNormSquared(2.5)
    expected = sum(
        float(potential.bregman_divergence(torch.tensor(a), torch.tensor(b)))
        for a, b in zip(split(w, (4, 5)), split(w0, (4, 5)), strict=True)
    )
    value = bregman_divergence(w, w0, 2.5, potential="squared", blocks=(4, 5))
    assert value == pytest.approx(expected, rel=1e-12)
    assert value > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"potential": "cubic"}, ValueError, r"potential must be one of \['power', "),
        ({"blocks": (5, 5)}, ValueError, r"blocks must be positive sizes summing to"),
        ({"blocks": (0, 15)}, ValueError, r"blocks must be positive sizes summing to"),
        ({"blocks": "ab"}, TypeError, r"blocks must be a sequence of ints; got str"),
    ],
)
def test_references_reject_bad_potential_arguments(regression, kwargs, error, pattern):
    X, y, w0 = regression
    with pytest.raises(error, match=pattern):
        min_norm_interpolator(X, y, 2.0, w0, **{"potential": "squared", **kwargs})


# ------------------------------------- mirror descent reaches its solution


def stable_lr(X, p, w_ref, blocks):
    """A fixed step that is stable near w_ref: 1.5 / the largest curvature of
    the loss in the dual, X J X^T with J the Jacobian of the inverse map
    (finite differences of the closed form)."""
    q = p / (p - 1)
    u = block_gradient(w_ref, p, blocks)
    h = 1e-7 * np.maximum(np.abs(u), 1e-3)
    J = np.stack(
        [
            (block_gradient(u + h[i] * e, q, blocks) - block_gradient(u, q, blocks))
            / h[i]
            for i, e in enumerate(np.eye(u.size))
        ],
        axis=1,
    )
    curvature = np.max(np.abs(np.linalg.eigvals(X @ J @ X.T)))
    return min(0.5, 1.5 / curvature)


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_mirror_descent_reaches_its_own_interpolator(regression, p):
    X, y, w0 = regression
    blocks = (5, 10)
    w_own = min_norm_interpolator(X, y, p, w0, potential="squared", blocks=blocks)
    w_pgd = min_norm_interpolator(X, y, p, w0)

    tensors = [torch.tensor(part) for part in split(w0, blocks)]
    optimizer = MirrorDescent(
        tensors,
        lr=stable_lr(X, p, w_own, blocks),
        potential=PNormSquared(p),
    )
    Xt, yt = torch.tensor(X), torch.tensor(y)
    edges = np.cumsum([0, *blocks])
    for _ in range(4000):
        w = torch.cat(tensors)
        residual = Xt @ w - yt
        if torch.linalg.norm(residual) < 1e-13:
            break
        gradient = Xt.T @ residual
        for b, tensor in enumerate(tensors):
            tensor.grad = gradient[edges[b] : edges[b + 1]]
        optimizer.step()
    w = torch.cat(tensors).numpy()

    assert np.linalg.norm(w - w_own) / np.linalg.norm(w_own) < 1e-6
    assert np.linalg.norm(w - w_pgd) / np.linalg.norm(w_pgd) > 1e-2
