"""EAFO toolkit: the Gaussian-ReLU derivation of CRReLU, entropies, WAFBC."""

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, ndtr
from scipy.stats import differential_entropy

from lemmata.nn import (
    crrelu,
    crrelu_inverse_correction,
    eafo_activation,
    eafo_correction,
    entropy_gradient,
    histogram_entropy,
    output_entropy,
    vasicek_entropy,
    wafbc,
)

U = np.linspace(0.0, 6.0, 1201)  # output grid of ReLU's identity branch


def test_eafo_on_relu_reproduces_crrelu():
    # Spec check 6: the toolkit, given the Gaussian-ReLU correction, matches the
    # closed form on [0, 4] up to the O(eps^2) error of the first-order inverse.
    x = np.linspace(0.0, 4.0, 401)
    act = eafo_activation(U, U, crrelu_inverse_correction(U, 0.01), x)
    closed = crrelu(torch.from_numpy(x), 0.01).numpy()
    assert np.abs(act - closed).max() < 1e-3
    # The error is second order: it shrinks ~100x when epsilon shrinks 10x.
    act_small = eafo_activation(U, U, crrelu_inverse_correction(U, 0.001), x)
    closed_small = crrelu(torch.from_numpy(x), 0.001).numpy()
    assert np.abs(act_small - closed_small).max() < 2e-2 * np.abs(act - closed).max()


@pytest.mark.parametrize(("density", "tol"), [("gaussian", 0.01), ("kde", 0.1)])
def test_correction_from_gaussian_samples_has_the_crrelu_shape(rng, density, tol):
    samples = rng.standard_normal(100_000)
    eta = eafo_correction(samples, U, density=density)
    # -dH/dy on the identity branch is -p'(u) = u phi(u): CRReLU's window with
    # coefficient -1/sqrt(2 pi).
    closed = crrelu_inverse_correction(U, -1 / math.sqrt(2 * math.pi))
    relative = np.linalg.norm(eta - closed) / np.linalg.norm(closed)
    assert relative < tol


def _gaussian(t):
    return np.exp(-0.5 * np.asarray(t) ** 2) / math.sqrt(2 * math.pi)


def _gaussian_prime(t):
    return -np.asarray(t) * _gaussian(t)


@pytest.mark.parametrize("inverse", ["identity", "curved"])
def test_entropy_gradient_matches_finite_differences(inverse):
    # Independent check of the Euler-Lagrange derivation: the directional
    # derivative of output_entropy (change of variables, no functional
    # derivative involved) equals the integral of gradient * eta.
    u = np.linspace(0.05, 5.0, 4001)
    y = u if inverse == "identity" else u + 0.2 * np.tanh(u)
    eta = 0.3 * np.sin(np.pi * (u - u[0]) / (u[-1] - u[0])) * np.exp(-u)
    grad = entropy_gradient(u, y, _gaussian, _gaussian_prime)

    def entropy(inv):
        # Output U = f(X) with f = inv^{-1}; X restricted to inv's range.
        x = inv  # pre-activations on the grid, f(x) = u
        return output_entropy(x, u, _gaussian(x))

    t = 1e-4
    numeric = (entropy(y + t * eta) - entropy(y - t * eta)) / (2 * t)
    # The entropy is normalised on the grid's mass; the gradient is for the
    # unnormalised density, so scale by the mass.
    mass = np.trapezoid(_gaussian(y), y)
    analytic = np.trapezoid(grad * eta, u) / mass
    assert numeric == pytest.approx(analytic, rel=2e-3)


def test_eafo_step_lowers_entropy_and_positive_epsilon_raises_it():
    x = np.linspace(1e-6, 8.0, 4001)
    density = _gaussian(x)
    base = output_entropy(x, x, density)
    grid = np.linspace(0.0, 9.0, 4001)
    eta = eafo_correction(np.random.default_rng(0).standard_normal(50_000), grid)
    stepped = eafo_activation(grid, grid, 0.05 * eta, x)
    assert output_entropy(x, stepped, density) < base
    # CRReLU with epsilon > 0 moves the other way: +eps / (2 sqrt 2) nats.
    h_plus = output_entropy(x, crrelu(torch.from_numpy(x), 0.01).numpy(), density)
    assert (h_plus - base) / 0.01 == pytest.approx(1 / (2 * math.sqrt(2)), rel=0.02)


def test_wafbc_is_the_cdf_and_has_the_largest_entropy():
    x = np.linspace(-6.0, 6.0, 2001)
    density = _gaussian(x)
    f = wafbc(x, density)
    np.testing.assert_allclose(f, ndtr(x) - ndtr(-6.0), atol=2e-5)
    scaled = wafbc(x, density, lower=-1.0, upper=3.0)
    assert output_entropy(x, scaled, density) == pytest.approx(math.log(4), abs=1e-3)
    h_cdf = output_entropy(x, f, density)
    h_sigmoid = output_entropy(x, expit(x), density)
    h_tanh = output_entropy(x, 0.5 * (np.tanh(x) + 1), density)
    assert abs(h_cdf) < 1e-3
    assert h_cdf > h_tanh > h_sigmoid


def test_entropy_estimators_against_closed_forms_and_scipy(rng):
    u = ndtr(rng.standard_normal(200_000))  # uniform on (0, 1): entropy 0
    assert abs(histogram_entropy(u, bins=200, range=(0, 1))) < 0.02
    assert abs(vasicek_entropy(u)) < 0.02
    z = rng.standard_normal(20_000)
    assert vasicek_entropy(z) == pytest.approx(
        differential_entropy(z, method="vasicek"), abs=1e-10
    )
    gaussian_entropy = 0.5 * math.log(2 * math.pi * math.e)
    assert histogram_entropy(z, bins=100) == pytest.approx(gaussian_entropy, abs=0.03)


GRID = np.linspace(-3, 3, 200)

BAD_INPUTS = [
    (
        lambda: output_entropy(GRID[:50], GRID[:50], np.ones(50)),
        ValueError,
        r"x must be a 1-D grid of at least 100 points; got shape \(50,\)",
    ),
    (
        lambda: output_entropy(GRID[::-1], GRID, np.ones(200)),
        ValueError,
        r"x must be finite and strictly increasing",
    ),
    (
        lambda: output_entropy(GRID, GRID, -np.ones(200)),
        ValueError,
        r"density must be >= 0 on the grid",
    ),
    (
        lambda: output_entropy(GRID, GRID, np.zeros(200)),
        ValueError,
        r"density must have positive mass on the grid",
    ),
    (
        lambda: output_entropy(GRID, GRID**2, np.ones(200)),
        ValueError,
        r"activation must be strictly increasing on the grid",
    ),
    (
        lambda: eafo_activation(U, U, crrelu_inverse_correction(U, 2.0), U),
        ValueError,
        r"inverse \+ correction must be strictly increasing",
    ),
    (
        lambda: eafo_activation(U, U, np.zeros(10), U),
        ValueError,
        r"correction must have one value per grid point",
    ),
    (
        lambda: eafo_activation(U, U, np.zeros_like(U), [7.0]),
        ValueError,
        r"x must lie in \[0, 6\]",
    ),
    (
        lambda: eafo_correction(np.ones(10), U),
        ValueError,
        r"samples must not all be equal",
    ),
    (
        lambda: eafo_correction([0.1, 0.2], U, density="histogram"),
        ValueError,
        r"density must be one of \['gaussian', 'kde'\]; got 'histogram'",
    ),
    (
        lambda: eafo_correction([np.nan, 0.2], U),
        ValueError,
        r"samples must hold at least 2 finite values",
    ),
    (
        lambda: wafbc(GRID, np.ones(200), lower=1.0, upper=0.0),
        ValueError,
        r"upper must be > lower \(1.0\); got 0.0",
    ),
    (
        lambda: crrelu_inverse_correction(U, float("nan")),
        ValueError,
        r"epsilon must be finite; got nan",
    ),
    (lambda: histogram_entropy([0.5], bins=1), ValueError, r"bins must be >= 2"),
    (
        lambda: vasicek_entropy([1.0, 2.0]),
        ValueError,
        r"samples must hold at least 3 values; got 2",
    ),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), BAD_INPUTS)
def test_bad_inputs(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
