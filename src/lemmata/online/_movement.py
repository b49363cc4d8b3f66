r"""Movement costs :math:`c(x_t, x_{t-1})` for smoothed online optimisation.

Each movement cost is a Bregman divergence

.. math::

    c(x, y) = D_h(x \,\|\, y) = h(x) - h(y) - \langle \nabla h(y), x - y \rangle

of a potential :math:`h`, with the first argument the new point and the second
the previous one. :class:`SquaredEuclidean` is the case
:math:`h = \tfrac12\|\cdot\|_2^2`, :math:`c(x, y) = \tfrac12\|x - y\|_2^2`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lemmata.online._checks import check_nonnegative, check_positive

__all__ = [
    "BregmanDivergence",
    "MovementCost",
    "NegativeEntropy",
    "PNormPotential",
    "Potential",
    "SquaredEuclidean",
]


class MovementCost(ABC):
    """Interface of a movement cost :math:`c(x, y)`, convex in ``x``.

    Attributes
    ----------
    alpha : float
        Strong-convexity constant of the potential in the Euclidean norm on the
        domain the iterates live in (0 when it is not strongly convex there).
    beta : float
        Smoothness constant of the potential in the Euclidean norm on that
        domain (``inf`` when it is not smooth there).
    """

    alpha: float
    beta: float

    @abstractmethod
    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        """The cost of moving from ``y`` to ``x``."""

    @abstractmethod
    def gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The gradient of ``c(., y)`` at ``x``."""

    @property
    def has_domain(self) -> bool:
        """Whether the potential restricts the iterates to a set."""
        return False

    def check_domain(self, name: str, x: np.ndarray) -> None:  # noqa: B027
        """Raise ValueError when ``x`` is outside the potential's domain."""

    # The cvxpy hooks below are used by the step solvers and the offline
    # program; cvxpy is imported by the caller.

    @abstractmethod
    def _anchor_value(self, y: np.ndarray) -> np.ndarray:
        """The parameter value that stands for the second argument ``y``."""

    @abstractmethod
    def _cvxpy_expression(self, x: Any, anchor: Any) -> Any:
        """``c(x, y)`` up to an additive constant, with ``anchor`` from ``y``."""

    def _cvxpy_joint(self, x: Any, y: Any) -> Any:
        """``c(x, y)`` as an expression jointly convex in ``(x, y)``."""
        raise NotImplementedError(
            f"{type(self).__name__} is not jointly convex in (x_t, x_(t-1)); the "
            "offline horizon problem with this movement cost is not a convex "
            "program"
        )

    def _cvxpy_domain(self, x: Any) -> list:
        """Constraints that keep ``x`` in the potential's domain."""
        return []


class SquaredEuclidean(MovementCost):
    r"""The movement cost :math:`c(x, y) = \tfrac12\|x - y\|_2^2`.

    It is the Bregman divergence of :math:`h = \tfrac12\|\cdot\|_2^2`, which is
    1-strongly convex and 1-smooth, so ``alpha = beta = 1``.

    Notes
    -----
    The factor :math:`\tfrac12` is the convention of [1]_ as we reconstruct it
    (the reference implementation ``jonhue/soco`` uses it too). A problem posed
    with :math:`\|x - y\|^2` is the same problem with every hitting cost halved,
    i.e. with strong convexity :math:`m/2` in this convention; every bound in
    :mod:`lemmata.online` depends on this choice.

    References
    ----------
    .. [1] Goel, Lin, Sun, Wierman. "Beyond Online Balanced Descent: An Optimal
       Algorithm for Smoothed Online Optimization." NeurIPS 2019.
       arXiv:1905.12776.
    """

    alpha = 1.0
    beta = 1.0

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        diff = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
        return 0.5 * float(diff @ diff)

    def gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)

    def _anchor_value(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float64)

    def _cvxpy_expression(self, x: Any, anchor: Any) -> Any:
        import cvxpy as cp

        return 0.5 * cp.sum_squares(x - anchor)

    def _cvxpy_joint(self, x: Any, y: Any) -> Any:
        import cvxpy as cp

        return 0.5 * cp.sum_squares(x - y)

    def __repr__(self) -> str:
        return "SquaredEuclidean()"


class Potential(ABC):
    """A strictly convex, differentiable potential :math:`h` for a Bregman cost."""

    alpha: float
    beta: float

    @abstractmethod
    def __call__(self, x: np.ndarray) -> float:
        """:math:`h(x)`."""

    @abstractmethod
    def gradient(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\nabla h(x)`."""

    @abstractmethod
    def _cvxpy(self, x: Any) -> Any:
        """:math:`h(x)` as a convex cvxpy expression."""

    def check_domain(self, name: str, x: np.ndarray) -> None:  # noqa: B027
        """Raise ValueError when ``x`` is outside the domain of :math:`h`."""

    def _cvxpy_domain(self, x: Any) -> list:
        return []

    def _cvxpy_joint(self, x: Any, y: Any) -> Any:
        raise NotImplementedError(
            f"the Bregman divergence of {self!r} is not jointly convex in "
            "(x_t, x_(t-1)); the offline horizon problem is not a convex program"
        )

    @property
    def has_domain(self) -> bool:
        return False


class PNormPotential(Potential):
    r"""The potential :math:`h(x) = \tfrac1p \|x\|_p^p = \tfrac1p\sum_i |x_i|^p`.

    Its Hessian is :math:`\operatorname{diag}((p-1)|x_i|^{p-2})`, so its
    Euclidean strong-convexity and smoothness constants depend on where the
    iterates are. They are computed on the region
    ``lower <= |x_i| <= upper``, which the caller asserts the iterates stay in.

    Parameters
    ----------
    p : float
        Exponent; must be > 1. ``p = 2`` gives :math:`\tfrac12\|x - y\|^2`.
    lower, upper : float, default=0 and inf
        Bounds on :math:`|x_i|` over the iterates, used only for ``alpha`` and
        ``beta``; ``0 <= lower < upper``.

    Notes
    -----
    For ``p > 2`` and ``lower = 0`` the potential is not strongly convex
    (``alpha = 0``), and for ``p < 2`` and ``lower = 0`` it is not smooth
    (``beta = inf``); R-OBD's default parameters then cannot be formed and
    :class:`~lemmata.online.RegularizedOBD` asks for ``lambda1``. Its Bregman
    divergence is not jointly convex for ``p != 2``, so
    :func:`~lemmata.online.offline_optimum` refuses it.
    """

    def __init__(self, p: float, *, lower: float = 0.0, upper: float = math.inf):
        p = check_positive("p", p)
        if not p > 1:
            raise ValueError(f"p must be > 1; got {p!r}")
        lower = check_nonnegative("lower", lower)
        if not (isinstance(upper, (int, float)) and upper > lower):
            raise ValueError(f"upper must be > lower={lower!r}; got {upper!r}")
        self.p = p
        self.lower = lower
        self.upper = float(upper)
        self.alpha, self.beta = self._constants()

    def _constants(self) -> tuple[float, float]:
        p = self.p
        if p == 2:
            return 1.0, 1.0

        def curvature(r: float) -> float:
            if r == 0:
                return 0.0 if p > 2 else math.inf
            if math.isinf(r):
                return math.inf if p > 2 else 0.0
            return (p - 1) * r ** (p - 2)

        lo, hi = curvature(self.lower), curvature(self.upper)
        return min(lo, hi), max(lo, hi)

    def __call__(self, x: np.ndarray) -> float:
        return float(np.sum(np.abs(x) ** self.p) / self.p)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.sign(x) * np.abs(x) ** (self.p - 1)

    def _cvxpy(self, x: Any) -> Any:
        import cvxpy as cp

        return cp.sum(cp.power(cp.abs(x), self.p)) / self.p

    def _cvxpy_joint(self, x: Any, y: Any) -> Any:
        if self.p == 2:
            import cvxpy as cp

            return 0.5 * cp.sum_squares(x - y)
        return super()._cvxpy_joint(x, y)

    def __repr__(self) -> str:
        return (
            f"PNormPotential(p={self.p!r}, lower={self.lower!r}, upper={self.upper!r})"
        )


class NegativeEntropy(Potential):
    r"""The potential :math:`h(x) = \sum_i x_i \log x_i` on a shrunken simplex.

    The iterates live in :math:`\Delta_\delta = \{x : \sum_i x_i = 1,\ x_i \ge
    \delta\}`. There :math:`\nabla^2 h = \operatorname{diag}(1/x_i)` lies
    between :math:`I` and :math:`I/\delta`, so ``alpha = 1`` and
    ``beta = 1/delta`` in the Euclidean norm. The divergence is the
    (generalised) Kullback-Leibler divergence
    :math:`\sum_i x_i\log(x_i/y_i) - x_i + y_i`, jointly convex.

    Parameters
    ----------
    delta : float
        Lower bound on every coordinate; must be > 0, and at most ``1/d`` for
        the set to be non-empty in dimension ``d``.

    Notes
    -----
    The constants are in the Euclidean norm, the norm in which the hitting
    costs' strong convexity ``m`` is stated throughout :mod:`lemmata.online`.
    The reference implementation ``jonhue/soco`` states them for the
    :math:`\ell_1` norm and base-2 logarithms instead; which norm the paper's
    Bregman theorem uses is not confirmed.
    """

    def __init__(self, delta: float):
        delta = check_positive("delta", delta)
        if not delta < 1:
            raise ValueError(f"delta must be < 1; got {delta!r}")
        self.delta = delta
        self.alpha = 1.0
        self.beta = 1.0 / delta

    @property
    def has_domain(self) -> bool:
        return True

    def __call__(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(np.sum(x * np.log(x)))

    def gradient(self, x: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(x, dtype=np.float64)) + 1.0

    def check_domain(self, name: str, x: np.ndarray) -> None:
        if self.delta * x.shape[0] > 1 + 1e-12:
            raise ValueError(
                f"delta must be <= 1/d = {1 / x.shape[0]:.6g} for the shrunken "
                f"simplex in dimension {x.shape[0]} to be non-empty; got {self.delta}"
            )
        bad = np.flatnonzero(x <= 0)
        if bad.size:
            raise ValueError(
                f"{name} must be > 0 for the negative-entropy potential; got "
                f"{float(x[bad[0]])!r} at index {int(bad[0])}"
            )
        total = float(np.sum(x))
        if abs(total - 1) > 1e-8:
            raise ValueError(
                f"{name} must lie on the simplex (sum to 1) for the "
                f"negative-entropy potential; got sum {total!r}"
            )

    def _cvxpy(self, x: Any) -> Any:
        import cvxpy as cp

        return -cp.sum(cp.entr(x))

    def _cvxpy_domain(self, x: Any) -> list:
        import cvxpy as cp

        return [cp.sum(x) == 1, x >= self.delta]

    def _cvxpy_joint(self, x: Any, y: Any) -> Any:
        import cvxpy as cp

        return cp.sum(cp.kl_div(x, y))

    def __repr__(self) -> str:
        return f"NegativeEntropy(delta={self.delta!r})"


class BregmanDivergence(MovementCost):
    r"""The movement cost :math:`c(x, y) = D_h(x\,\|\,y)` of a potential :math:`h`.

    .. math::

        D_h(x\,\|\,y) = h(x) - h(y) - \langle \nabla h(y), x - y \rangle

    Parameters
    ----------
    potential : Potential
        :math:`h`: a :class:`PNormPotential` or a :class:`NegativeEntropy`.

    Notes
    -----
    The argument order (new point first) is the standard one; the order used
    in [1]_ is not confirmed. ``alpha`` and ``beta`` are the potential's.

    References
    ----------
    .. [1] Goel, Lin, Sun, Wierman. "Beyond Online Balanced Descent: An Optimal
       Algorithm for Smoothed Online Optimization." NeurIPS 2019.
       arXiv:1905.12776.
    """

    def __init__(self, potential: Potential):
        if not isinstance(potential, Potential):
            raise TypeError(
                f"potential must be a Potential; got {type(potential).__name__}"
            )
        self.potential = potential
        self.alpha = potential.alpha
        self.beta = potential.beta

    @property
    def has_domain(self) -> bool:
        return self.potential.has_domain

    def check_domain(self, name: str, x: np.ndarray) -> None:
        self.potential.check_domain(name, x)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        h = self.potential
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return h(x) - h(y) - float(h.gradient(y) @ (x - y))

    def gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.potential.gradient(x) - self.potential.gradient(y)

    def _anchor_value(self, y: np.ndarray) -> np.ndarray:
        return self.potential.gradient(y)

    def _cvxpy_expression(self, x: Any, anchor: Any) -> Any:
        # h(x) - <grad h(y), x>: the divergence less terms constant in x.
        return self.potential._cvxpy(x) - anchor @ x

    def _cvxpy_joint(self, x: Any, y: Any) -> Any:
        return self.potential._cvxpy_joint(x, y)

    def _cvxpy_domain(self, x: Any) -> list:
        return self.potential._cvxpy_domain(x)

    def __repr__(self) -> str:
        return f"BregmanDivergence({self.potential!r})"
