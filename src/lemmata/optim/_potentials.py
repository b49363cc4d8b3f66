"""Mirror-descent potentials on torch tensors.

A potential :math:`\\psi` is a strictly convex, differentiable function of one
whole tensor. Mirror descent needs its gradient (the mirror map) and the
inverse of that gradient; the value itself is only used for diagnostics such
as the Bregman divergence.
"""

from __future__ import annotations

import abc
import math
import numbers

import torch

__all__ = ["PNormPower", "PNormSquared", "Potential"]

# Exponents within this relative distance of a multiple of 1/2 are computed
# with square roots and multiplications instead of pow (see _signed_power).
_SNAP_RTOL = 1e-12
_MAX_HALF_STEPS = 64


def _check_exponent(name: str, value: object) -> float:
    """Return ``value`` as a float after checking that it is a finite real > 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not value > 1:  # also rejects NaN
        raise ValueError(f"{name} must be > 1; got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value


def _half_steps(e: float) -> int | None:
    """``2 e`` as an int if ``e`` is (up to rounding) a multiple of 1/2 in [1/2, 32]."""
    k = round(2.0 * e)
    if 1 <= k <= _MAX_HALF_STEPS and abs(2.0 * e - k) <= _SNAP_RTOL * k:
        return k
    return None


def _integer_power(a: torch.Tensor, n: int) -> torch.Tensor:
    """``a ** n`` for an int ``n >= 1`` by repeated squaring; consumes ``a``."""
    result = None
    while True:
        if n & 1:
            result = a if result is None else result.mul_(a)
        n >>= 1
        if not n:
            return result
        a = a * a


def _signed_power(
    u: torch.Tensor, e: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Return :math:`\operatorname{sign}(u)\,|u|^e`, in ``out`` if given.

    For :math:`e` a multiple of 1/2 up to 32 (e.g. 1/2, 1, 2, 10) the power is
    built from one square root and multiplications (repeated squaring), which
    on CPU is several times cheaper than a general ``pow``; otherwise
    ``copysign(pow(|u|, e), u)``. ``out`` (shaped like ``u``, of its dtype,
    not overlapping it) avoids allocating the result.
    """
    k = _half_steps(e)
    if k == 2:  # e = 1
        return u.clone() if out is None else out.copy_(u)
    magnitude = torch.abs(u) if out is None else torch.abs(u, out=out)
    if k is None:
        magnitude.pow_(e)
    elif k == 1:
        magnitude.sqrt_()
    else:
        if k % 2:  # e = k/2, k odd: u |u|^(e-1) = u sqrt(|u|)^(k-2)
            magnitude.sqrt_()
            n = k - 2
        else:  # e = k/2 = n + 1: u |u|^n
            n = k // 2 - 1
        power = _integer_power(magnitude, n).mul_(u)
        if out is None or power is out:
            return power
        return out.copy_(power)
    return torch.copysign(magnitude, u, out=magnitude)


class Potential(abc.ABC):
    r"""Base class of mirror-descent potentials :math:`\psi`.

    A potential maps one whole tensor :math:`w` (any shape) to a scalar. It is
    not required to be separable: a subclass may couple all entries of the
    tensor, e.g. :math:`\tfrac12\|w\|_p^2`.

    Subclasses implement three methods, each taking and returning a tensor of
    the input's shape (``value`` returns a 0-dim tensor):

    - :meth:`value`: :math:`\psi(w)`;
    - :meth:`mirror_map`: :math:`\nabla\psi(w)`;
    - :meth:`inverse_mirror_map`: :math:`(\nabla\psi)^{-1}(u)`.

    The maps are called under :func:`torch.no_grad` by the optimizers, must
    not modify their argument, and must return a new tensor (the optimizer
    may update the result in place).

    Two optional hooks let the optimizers' multi-tensor path go faster:
    set the class attribute :attr:`separable` to True when :math:`\psi` is a
    sum of one function of each entry (the maps then act entry by entry, and
    are applied once to the concatenation of many tensors instead of once
    per tensor), and override :meth:`inverse_mirror_map_into` to write the
    result into a given tensor without allocating one.
    """

    separable: bool = False
    r"""Whether the maps act entry by entry (:math:`\psi(w) = \sum_j f(w_j)`)."""

    @abc.abstractmethod
    def value(self, w: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\psi(w)` as a 0-dim tensor."""

    @abc.abstractmethod
    def mirror_map(self, w: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\nabla\psi(w)`, a tensor shaped like ``w``."""

    @abc.abstractmethod
    def inverse_mirror_map(self, u: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`(\nabla\psi)^{-1}(u)`, a tensor shaped like ``u``."""

    def inverse_mirror_map_into(
        self, u: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        r"""Write :math:`(\nabla\psi)^{-1}(u)` into ``out`` and return ``out``.

        ``out`` has the shape and dtype of ``u`` and does not overlap it. The
        default computes :meth:`inverse_mirror_map` and copies it.
        """
        return out.copy_(self.inverse_mirror_map(u))

    def bregman_divergence(self, w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`D_\psi(w, w_0)`.

        .. math::

            D_\psi(w, w_0) = \psi(w) - \psi(w_0)
                - \langle \nabla\psi(w_0),\, w - w_0 \rangle
        """
        return (
            self.value(w) - self.value(w0) - torch.sum(self.mirror_map(w0) * (w - w0))
        )


class PNormPower(Potential):
    r"""The potential :math:`\psi(w) = \tfrac{1}{p}\sum_j |w_j|^p` of p-GD.

    .. math::

        \nabla\psi(w)_j = \operatorname{sign}(w_j)\,|w_j|^{p-1},
        \qquad
        (\nabla\psi)^{-1}(u)_j = \operatorname{sign}(u_j)\,|u_j|^{1/(p-1)}

    :math:`p` is ``p``; the sums and maps run over every entry of the tensor.

    Parameters
    ----------
    p : float
        Exponent; must be a finite real number > 1. ``p=2`` makes both maps
        the identity, so mirror descent is gradient descent.

    Notes
    -----
    Both maps are written as sign times a power of the magnitude, so a
    negative entry never reaches ``pow`` (a negative base with a fractional
    exponent gives NaN). :math:`\operatorname{sign}(0) = 0`, so zeros map to
    zeros.

    For ``p`` close to 1 the inverse exponent :math:`1/(p-1)` is large: dual
    values below 1 in magnitude underflow towards 0 and values above 1 can
    overflow to ``inf``, first in low precision.

    Speed: when an exponent (:math:`p-1` or :math:`1/(p-1)`) is a multiple of
    1/2 up to 32, e.g. for ``p`` in {1.1, 1.5, 2, 3} (inverse exponents 10,
    2, 1, 1/2), the power is computed from at most one square root and a few
    multiplications (repeated squaring) instead of ``pow``, which for a
    general exponent is the slowest elementwise operation on CPU (30 to 150
    times an addition on the 2-core machine this was measured on, against
    3 to 10 times for a square root). Exponents within
    a relative 1e-12 of such a multiple are rounded to it: ``p=1.1`` has
    :math:`1/(p-1) = 9.999999999999991` in float64 and is computed as 10.
    Each multiplication rounds once, so the result can differ from ``pow``
    by a few units in the last place (:math:`\lceil\log_2 e\rceil + 2`
    roundings at most).

    The factor :math:`1/p` follows a public reproduction of the follow-up
    paper's Appendix H (arXiv:2306.13853, ``fekonrad/Implicit-Bias``); [1]_'s
    abstract names only the p-th power of the :math:`\ell_p`-norm. Without the
    factor the mirror map is ``p`` times larger, which is p-GD with learning
    rate ``lr / p``.

    References
    ----------
    .. [1] Sun, Ahn, Thrampoulidis, Azizan. "Mirror Descent Maximizes
       Generalized Margin and Can Be Implemented Efficiently." NeurIPS 2022.
       arXiv:2205.12808.
    """

    separable = True

    def __init__(self, p: float) -> None:
        self._p = _check_exponent("p", p)

    @property
    def p(self) -> float:
        """The exponent :math:`p`."""
        return self._p

    def value(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().pow(self._p).sum() / self._p

    def mirror_map(self, w: torch.Tensor) -> torch.Tensor:
        return _signed_power(w, self._p - 1.0)

    def inverse_mirror_map(self, u: torch.Tensor) -> torch.Tensor:
        return _signed_power(u, 1.0 / (self._p - 1.0))

    def inverse_mirror_map_into(
        self, u: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        return _signed_power(u, 1.0 / (self._p - 1.0), out=out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self._p!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._p == other._p

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._p))


def _scaled_signed_power(
    w: torch.Tensor, r: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Return :math:`m`, :math:`\operatorname{sign}(v)|v|^{r-1}` and
    :math:`\sum_j |v_j|^r` for :math:`v = w/m`, :math:`m = \max_j |w_j|`.

    Scaling by :math:`m` keeps every power in [0, 1] and the sum in
    [1, ``w.numel()``], so nothing overflows; for :math:`w = 0` the sum is
    set to 1 and the direction is 0.
    """
    m = w.abs().amax()
    v = w / torch.where(m > 0, m, torch.ones_like(m))
    direction = _signed_power(v, r - 1.0)
    # |v|^r = v * sign(v)|v|^(r-1): one multiplication instead of a second pow.
    total = torch.dot(v.reshape(-1), direction.reshape(-1)).clamp_min(1.0)
    return m, direction, total


class PNormSquared(Potential):
    r"""The 2-homogeneous potential :math:`\psi(w) = \tfrac12\|w\|_p^2`.

    .. math::

        \nabla\psi(w) = \|w\|_p^{2-p}\,\operatorname{sign}(w)\,|w|^{p-1},
        \qquad
        (\nabla\psi)^{-1}(u) = \|u\|_q^{2-q}\,\operatorname{sign}(u)\,|u|^{q-1},
        \qquad \tfrac1p + \tfrac1q = 1

    :math:`p` is ``p``; the norm couples every entry of the tensor, so the
    potential is not separable (unlike :class:`PNormPower`). The inverse is
    the mirror map of :math:`\tfrac12\|u\|_q^2`, the convex conjugate of
    :math:`\psi`, and :math:`q - 1 = 1/(p-1)`.

    Used with :class:`MirrorDescent`, the potential is applied to each
    parameter tensor on its own: the potential of the whole model is
    :math:`\sum_b \tfrac12\|w_b\|_p^2` over its tensors :math:`w_b`, i.e.
    half the square of the block norm
    :math:`N(w) = (\sum_b \|w_b\|_p^2)^{1/2}`. On separable data with an
    exponential-tailed loss its iterates converge in direction to the
    maximum-:math:`N`-margin classifier, and on under-determined least
    squares to the interpolator closest to :math:`w_0` in its Bregman
    divergence (references: :func:`max_margin_direction` and
    :func:`min_norm_interpolator` with ``potential="squared"``).

    Parameters
    ----------
    p : float
        Exponent; must be a finite real number > 1. ``p=2`` gives
        :math:`\tfrac12\|w\|_2^2`, whose maps are the identity up to rounding.

    Notes
    -----
    [1]_ proves the implicit bias for homogeneous potentials in general; this
    one is our choice of a non-separable example [reconstruction]. It is
    2-homogeneous, :math:`\psi(cw) = c^2\psi(w)`, so both maps are
    1-homogeneous: the step in weight space scales with the dual step for
    every ``p``. p-GD lacks this: its first step from :math:`w = 0` is
    :math:`|\eta g|^{1/(p-1)}`, close to 1 for large ``p`` even for tiny
    gradients.

    Both maps divide by :math:`m = \max_j|w_j|` first (see the code), so the
    powers stay in [0, 1] and neither the norm nor the power overflows; the
    zero tensor maps to zero. One map costs one signed power (a ``pow`` for
    a general exponent, cheaper for multiples of 1/2; see
    :class:`PNormPower`), a max-reduction and a dot product.

    References
    ----------
    .. [1] Sun, Gatmiry, Ahn, Azizan. "A Unified Approach to Controlling
       Implicit Regularization via Mirror Descent." arXiv:2306.13853.
    """

    def __init__(self, p: float) -> None:
        self._p = _check_exponent("p", p)
        self._q = self._p / (self._p - 1.0)

    @property
    def p(self) -> float:
        """The exponent :math:`p`."""
        return self._p

    @property
    def q(self) -> float:
        """The dual exponent :math:`q = p/(p-1)`."""
        return self._q

    def value(self, w: torch.Tensor) -> torch.Tensor:
        if w.numel() == 0:
            return w.sum()
        # Differentiable (no in-place operations); scaled by max |w_j| as below.
        m = w.detach().abs().amax()
        m = torch.where(m > 0, m, torch.ones_like(m))
        return 0.5 * (m * torch.linalg.vector_norm(w / m, self._p)) ** 2

    def mirror_map(self, w: torch.Tensor) -> torch.Tensor:
        return self._map(w, self._p)

    def inverse_mirror_map(self, u: torch.Tensor) -> torch.Tensor:
        return self._map(u, self._q)

    @staticmethod
    def _map(w: torch.Tensor, r: float) -> torch.Tensor:
        if w.numel() == 0:
            return w.clone()
        # grad of (1/2)||w||_r^2 at w = m v: m ||v||_r^(2-r) sign(v)|v|^(r-1).
        m, direction, total = _scaled_signed_power(w, r)
        return direction.mul_(m * total ** ((2.0 - r) / r))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self._p!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._p == other._p

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._p))
