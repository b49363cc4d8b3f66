r"""Entropy of activations and the EAFO correction, on a 1-D grid (numpy).

arXiv:2405.12954 looks at an activation :math:`f` through its inverse
:math:`y = f^{-1}` (output :math:`u` to pre-activation :math:`y(u)`). With
pre-activation density :math:`p`, the output density is
:math:`q(u) = p(y(u))\,y'(u)` and its entropy

.. math::

    H[y] = -\int q \log q \,du = -\int p(y)\,y' \log\bigl(p(y)\,y'\bigr)\,du .

Two results of the paper are computed here: the *worst* activation with
boundary conditions (WAFBC), which maximises :math:`H` and is the scaled CDF of
:math:`p` (:func:`wafbc`), and the EAFO step, which moves the inverse against
the first variation of :math:`H` (:func:`eafo_correction`,
:func:`eafo_activation`). Under Gaussian pre-activations this step, applied to
ReLU's identity branch, has the shape of CRReLU's correction.
"""

from __future__ import annotations

import math

import numpy as np

from lemmata.nn._checks import check_finite, check_int

__all__ = [
    "crrelu_inverse_correction",
    "eafo_activation",
    "eafo_correction",
    "entropy_gradient",
    "histogram_entropy",
    "output_entropy",
    "vasicek_entropy",
    "wafbc",
]

_MIN_GRID = 100
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _grid(name: str, values) -> np.ndarray:
    grid = np.asarray(values, dtype=float)
    if grid.ndim != 1 or grid.size < _MIN_GRID:
        raise ValueError(
            f"{name} must be a 1-D grid of at least {_MIN_GRID} points; "
            f"got shape {grid.shape}"
        )
    if not np.all(np.isfinite(grid)) or not np.all(np.diff(grid) > 0):
        raise ValueError(f"{name} must be finite and strictly increasing")
    return grid


def _on_grid(name: str, values, grid: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != grid.shape:
        raise ValueError(
            f"{name} must have one value per grid point, shape {grid.shape}; "
            f"got {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite on the grid")
    return values


def _density(values, grid: np.ndarray) -> np.ndarray:
    """``values`` normalised to integrate to 1 on ``grid`` (trapezoid rule)."""
    p = _on_grid("density", values, grid)
    if np.any(p < 0):
        raise ValueError(f"density must be >= 0 on the grid; got min {p.min():.3g}")
    mass = np.trapezoid(p, grid)
    if not mass > 0:
        raise ValueError(f"density must have positive mass on the grid; got {mass}")
    return p / mass


def _increasing(name: str, values: np.ndarray) -> None:
    if not np.all(np.diff(values) > 0):
        k = int(np.argmin(np.diff(values)))
        raise ValueError(
            f"{name} must be strictly increasing on the grid (it needs an "
            f"inverse); it decreases at index {k}"
        )


def output_entropy(x, activation, density) -> float:
    r"""Differential entropy (nats) of :math:`f(X)` for :math:`X \sim p`.

    For strictly increasing :math:`f`, by the change of variables,

    .. math::

        H[f(X)] = -\int p \log p \,dx + \int p \log f' \,dx ,

    which equals the paper's :math:`H[y]` with :math:`y = f^{-1}`.

    Parameters
    ----------
    x : array_like of shape (n_grid,)
        Strictly increasing grid of pre-activations, at least 100 points.
    activation : array_like of shape (n_grid,)
        :math:`f(x)` on the grid; must be strictly increasing.
    density : array_like of shape (n_grid,)
        :math:`p(x)` on the grid, >= 0; renormalised to integrate to 1 on the
        grid (mass outside the grid is ignored).

    Notes
    -----
    Integrals use the trapezoid rule and :math:`f'` uses second-order finite
    differences (``numpy.gradient``). For ReLU, which is constant on
    :math:`x < 0` (an atom at 0, entropy :math:`-\infty`), pass the branch
    :math:`x > 0` with the conditional density.
    """
    x = _grid("x", x)
    f = _on_grid("activation", activation, x)
    _increasing("activation", f)
    p = _density(density, x)
    slope = np.gradient(f, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
        plogslope = np.where(p > 0, p * np.log(slope), 0.0)
    return float(-np.trapezoid(plogp, x) + np.trapezoid(plogslope, x))


def wafbc(x, density, lower: float = 0.0, upper: float = 1.0) -> np.ndarray:
    r"""The worst activation with boundary conditions (maximum entropy).

    .. math::

        f(x) = C_1 \int_{-\infty}^{x} p(t)\,dt + C_2,
        \qquad C_2 = \text{lower},\ C_1 = \text{upper} - \text{lower}

    the solution of the Euler-Lagrange equation of :math:`H` with
    :math:`f(-\infty) = ` ``lower`` and :math:`f(\infty) = ` ``upper``. Its
    output is uniform on (``lower``, ``upper``), entropy
    :math:`\log(\text{upper} - \text{lower})`.

    Parameters
    ----------
    x : array_like of shape (n_grid,)
        Strictly increasing grid, at least 100 points.
    density : array_like of shape (n_grid,)
        :math:`p(x)` on the grid, renormalised on the grid.
    lower, upper : float
        Boundary values, ``lower < upper``.

    Returns
    -------
    ndarray of shape (n_grid,)
        :math:`f(x)`, by cumulative trapezoid integration.
    """
    x = _grid("x", x)
    p = _density(density, x)
    lower = check_finite("lower", lower)
    upper = check_finite("upper", upper)
    if not upper > lower:
        raise ValueError(f"upper must be > lower ({lower}); got {upper}")
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
    return lower + (upper - lower) * cdf


def entropy_gradient(u, inverse, density, density_derivative) -> np.ndarray:
    r"""First variation :math:`\delta H / \delta y` of the output entropy.

    .. math::

        \frac{\delta H}{\delta y}(u) = p'(y)\,y' + p(y)\,\frac{y''}{y'}

    so that :math:`H[y + t\eta] = H[y] + t \int \eta\,\delta H/\delta y \,du
    + O(t^2)` for corrections :math:`\eta` that vanish at the ends of the grid.

    Parameters
    ----------
    u : array_like of shape (n_grid,)
        Strictly increasing grid of activation outputs, at least 100 points.
    inverse : array_like of shape (n_grid,)
        :math:`y(u)`, the pre-activation mapped to ``u``; strictly increasing.
    density, density_derivative : callable
        :math:`p` and :math:`p'`, vectorised over numpy arrays.

    Returns
    -------
    ndarray of shape (n_grid,)

    Notes
    -----
    [reconstruction] The paper's general correction is not available to us;
    the third-party transcription we have divides by :math:`y''` and has
    inconsistent signs. This is our own Euler-Lagrange derivation of
    :math:`G(y', y) = -p(y)\,y' \log(p(y)\,y')`:
    :math:`\partial_y G - \tfrac{d}{du}\partial_{y'} G`. A test compares it
    with finite differences of :func:`output_entropy`.
    """
    u = _grid("u", u)
    y = _on_grid("inverse", inverse, u)
    _increasing("inverse", y)
    dy = np.gradient(y, u)
    d2y = np.gradient(dy, u)
    return np.asarray(density_derivative(y)) * dy + np.asarray(density(y)) * d2y / dy


def _gaussian_fit(samples: np.ndarray):
    mean, std = float(samples.mean()), float(samples.std(ddof=1))
    if not std > 0:
        raise ValueError(f"samples must not all be equal; got std {std}")

    def p(t):
        z = (np.asarray(t) - mean) / std
        return np.exp(-0.5 * z * z) / (std * _SQRT_2PI)

    def dp(t):
        return -(np.asarray(t) - mean) / std**2 * p(t)

    return p, dp


def _kde_fit(samples: np.ndarray, bandwidth: float | None):
    n = samples.size
    std = float(samples.std(ddof=1))
    if not std > 0:
        raise ValueError(f"samples must not all be equal; got std {std}")
    # Silverman's constant with the n^(-1/7) rate that suits the derivative
    # p' (the n^(-1/5) density rate leaves p' about twice as noisy).
    h = 1.06 * std * n ** (-1 / 7) if bandwidth is None else bandwidth
    # Binned KDE: the samples are counted on 2048 bins of width << h (at most
    # 1/8 of it for any sample size), so the cost is grid x bins, not grid x n.
    low, high = samples.min(), samples.max()
    bins = int(min(2048, max(64, np.ceil(8 * (high - low) / h))))
    counts, edges = np.histogram(samples, bins=bins, range=(low, high))
    centres = 0.5 * (edges[1:] + edges[:-1])
    weights = counts / n

    def both(t):
        t = np.asarray(t, dtype=float)
        z = (t[..., None] - centres) / h
        k = weights * np.exp(-0.5 * z * z) / (h * _SQRT_2PI)
        return k.sum(axis=-1), -(z * k).sum(axis=-1) / h

    return (lambda t: both(t)[0]), (lambda t: both(t)[1])


def eafo_correction(
    samples,
    u,
    inverse=None,
    *,
    density: str = "gaussian",
    bandwidth: float | None = None,
) -> np.ndarray:
    r"""EAFO direction :math:`\eta = -\delta H/\delta y` from pre-activation samples.

    .. math::

        \eta(u) = -\bigl(\hat p'(y)\,y' + \hat p(y)\,y''/y'\bigr)

    where :math:`\hat p` is estimated from ``samples``. A small step
    :math:`g = y + t\eta` (:math:`t > 0`) lowers the output entropy to first
    order; :func:`eafo_activation` turns :math:`g` back into an activation.

    On ReLU's identity branch (:math:`y = u`, the default) with standard
    Gaussian pre-activations this is

    .. math::

        \eta(u) = -p'(u) = \frac{1}{\sqrt{2\pi}}\, u\, e^{-u^2/2}
        = \texttt{crrelu\_inverse\_correction}(u, -1/\sqrt{2\pi}),

    the shape of CRReLU's correction: a step :math:`t` gives, to first order,
    CRReLU with :math:`\varepsilon = -t/\sqrt{2\pi}`.

    Parameters
    ----------
    samples : array_like of shape (n_samples,)
        Pre-activation samples, at least 2, finite.
    u : array_like of shape (n_grid,)
        Output grid, strictly increasing, at least 100 points.
    inverse : array_like of shape (n_grid,), optional
        :math:`y(u)`; default ``u`` (ReLU on :math:`u > 0`, identity).
    density : {"gaussian", "kde"}, default="gaussian"
        ``"gaussian"`` fits the mean and standard deviation (the paper's
        assumption); ``"kde"`` uses a Gaussian kernel density estimate.
    bandwidth : float, optional
        KDE bandwidth; default :math:`1.06\,\hat\sigma N^{-1/7}`, the
        rule-of-thumb rate for estimating :math:`p'`.

    Returns
    -------
    ndarray of shape (n_grid,)

    Notes
    -----
    [reconstruction] The sign: :math:`\eta = -\delta H/\delta y` is the
    steepest *descent* of the entropy (the paper's WAFBC maximises it, and
    EAFO moves away from it). By this derivation the entropy-lowering
    coefficient of CRReLU is *negative*; the paper's CRReLU, and the authors'
    code, start from :math:`\varepsilon = +0.01`, which raises the Gaussian
    output entropy to first order (by
    :math:`\varepsilon/(2\sqrt{2}) \approx 0.354\,\varepsilon` nats on the
    branch :math:`u > 0` with its conditional density). The shape
    :math:`u e^{-u^2/2}` agrees; the sign of the learned
    :math:`\varepsilon` is left to training. For pre-activations that are
    not standardised the window is
    :math:`(u-\mu)/\sigma^3\,\varphi((u-\mu)/\sigma)`, not CRReLU's.
    """
    samples = np.asarray(samples, dtype=float).ravel()
    if samples.size < 2 or not np.all(np.isfinite(samples)):
        raise ValueError(
            f"samples must hold at least 2 finite values; got {samples.size} values"
        )
    u = _grid("u", u)
    y = u.copy() if inverse is None else inverse
    if density == "gaussian":
        p, dp = _gaussian_fit(samples)
    elif density == "kde":
        if bandwidth is not None:
            bandwidth = check_finite("bandwidth", bandwidth, low=0.0)
        p, dp = _kde_fit(samples, bandwidth)
    else:
        raise ValueError(f"density must be one of ['gaussian', 'kde']; got {density!r}")
    return -entropy_gradient(u, y, p, dp)


def crrelu_inverse_correction(u, epsilon: float) -> np.ndarray:
    r"""The correction of the inverse whose first-order inverse is CRReLU.

    .. math::

        \eta(u) = -\varepsilon\, u\, e^{-u^2/2},
        \qquad g(u) = u + \eta(u),
        \qquad g^{-1}(x) = x + \varepsilon\, x\, e^{-x^2/2} + O(\varepsilon^2)

    :math:`u` is ``u`` and :math:`\varepsilon` is ``epsilon``.
    """
    u = np.asarray(u, dtype=float)
    epsilon = check_finite("epsilon", epsilon)
    return -epsilon * u * np.exp(-0.5 * u * u)


def eafo_activation(u, inverse, correction, x) -> np.ndarray:
    r"""The corrected activation :math:`g^{-1}` with :math:`g = y + \eta`.

    Parameters
    ----------
    u : array_like of shape (n_grid,)
        Output grid, strictly increasing, at least 100 points.
    inverse : array_like of shape (n_grid,)
        :math:`y(u)`, strictly increasing.
    correction : array_like of shape (n_grid,)
        :math:`\eta(u)` (for instance :func:`eafo_correction` times a step).
    x : array_like
        Pre-activations at which to evaluate the new activation; must lie in
        :math:`[g(u_0), g(u_{-1})]`.

    Returns
    -------
    ndarray, shape of ``x``
        :math:`g^{-1}(x)`, by linear interpolation of the monotone table
        :math:`(g(u), u)`.
    """
    u = _grid("u", u)
    y = _on_grid("inverse", inverse, u)
    _increasing("inverse", y)
    g = y + _on_grid("correction", correction, u)
    _increasing("inverse + correction", g)
    x = np.asarray(x, dtype=float)
    if x.size and (x.min() < g[0] or x.max() > g[-1]):
        raise ValueError(
            f"x must lie in [{g[0]:.4g}, {g[-1]:.4g}] (the range of the corrected "
            f"inverse); got [{x.min():.4g}, {x.max():.4g}]"
        )
    return np.interp(x, g, u)


def histogram_entropy(samples, bins: int = 200, range=None) -> float:
    """Plug-in entropy estimate (nats) from a histogram density.

    :math:`\\hat H = -\\sum_k \\hat p_k \\log(\\hat p_k / w_k)` with bin
    probabilities :math:`\\hat p_k` and widths :math:`w_k`; ``range`` is
    ``(low, high)``, default the sample range.
    """
    samples = np.asarray(samples, dtype=float).ravel()
    bins = check_int("bins", bins, low=2)
    counts, edges = np.histogram(samples, bins=bins, range=range)
    total = counts.sum()
    if total == 0:
        raise ValueError("samples must have values inside range; got none")
    prob = counts[counts > 0] / total
    widths = np.diff(edges)[counts > 0]
    return float(-np.sum(prob * np.log(prob / widths)))


def vasicek_entropy(samples, window: int | None = None) -> float:
    r"""Vasicek's spacing estimate of the entropy (nats).

    .. math::

        \hat H = \frac{1}{N}\sum_{i=1}^{N}
        \log\Bigl(\frac{N}{2m}\bigl(X_{(i+m)} - X_{(i-m)}\bigr)\Bigr)

    with order statistics clamped at the ends; ``window`` is :math:`m`
    (default :math:`\lfloor\sqrt{N} + 0.5\rfloor`, as in SciPy). Equivalent to
    ``scipy.stats.differential_entropy(method="vasicek")``.
    """
    x = np.sort(np.asarray(samples, dtype=float).ravel())
    n = x.size
    if n < 3:
        raise ValueError(f"samples must hold at least 3 values; got {n}")
    m = math.floor(math.sqrt(n) + 0.5) if window is None else window
    m = check_int("window", m, low=1)
    upper = x[np.minimum(np.arange(n) + m, n - 1)]
    lower = x[np.maximum(np.arange(n) - m, 0)]
    spacing = np.maximum(upper - lower, np.finfo(float).tiny)
    return float(np.mean(np.log(n / (2 * m) * spacing)))
