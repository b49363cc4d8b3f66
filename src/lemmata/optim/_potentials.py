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

__all__ = ["PNormPower", "Potential"]


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
    """

    @abc.abstractmethod
    def value(self, w: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\psi(w)` as a 0-dim tensor."""

    @abc.abstractmethod
    def mirror_map(self, w: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\nabla\psi(w)`, a tensor shaped like ``w``."""

    @abc.abstractmethod
    def inverse_mirror_map(self, u: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`(\nabla\psi)^{-1}(u)`, a tensor shaped like ``u``."""

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

    def __init__(self, p: float) -> None:
        self._p = _check_exponent("p", p)

    @property
    def p(self) -> float:
        """The exponent :math:`p`."""
        return self._p

    def value(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().pow(self._p).sum() / self._p

    def mirror_map(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().pow_(self._p - 1.0).mul_(w.sign())

    def inverse_mirror_map(self, u: torch.Tensor) -> torch.Tensor:
        return u.abs().pow_(1.0 / (self._p - 1.0)).mul_(u.sign())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self._p!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._p == other._p

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._p))
