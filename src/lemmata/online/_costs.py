r"""Hitting costs :math:`f_t` for smoothed online optimisation.

A hitting cost exposes its value, gradient, minimiser :math:`v_t` and a
strong-convexity modulus :math:`m` (quadratic growth around the minimiser,
:math:`f(x) \ge f(v) + \tfrac m2\|x - v\|_2^2`). Three kinds are provided:

* :class:`QuadraticCost`, with closed forms for every algorithm step;
* :class:`CvxpyCost`, a cvxpy expression builder with cvxpy parameters, so
  that a per-step problem is compiled once and re-solved with new values;
* :class:`ConvexCost`, a numpy callable with its gradient, solved with scipy.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lemmata.online._checks import check_nonnegative, check_positive, check_vector

__all__ = [
    "ConvexCost",
    "CvxpyCost",
    "CvxpyForm",
    "HittingCost",
    "QuadraticCost",
]

logger = logging.getLogger(__name__)

# Tolerance below zero tolerated for a solver-computed minimum value.
_NEGATIVE_TOL = 1e-7


@dataclass(frozen=True)
class CvxpyForm:
    r"""How to write a hitting cost as a parametrised cvxpy expression.

    Attributes
    ----------
    key : hashable
        Costs with equal keys share one compiled problem.
    build : callable
        ``build(x, params) -> cvxpy.Expression``, with ``params`` a dict of
        :class:`cvxpy.Parameter` named as in ``shapes``.
    shapes : dict of str to tuple
        Shape of each parameter.
    values : dict of str to ndarray
        This cost's parameter values.
    nonneg : frozenset of str
        Names of parameters declared non-negative.
    sublevel : callable, optional
        ``sublevel(x, params, r) -> constraint`` equivalent to
        :math:`f(x) \le l` when the parameter ``r`` holds ``level_value(l)``;
        by default ``build(x, params) <= r`` with ``r = l``.
    level_value : callable, optional
        Maps the level :math:`l` to the value of ``r``.
    """

    key: Hashable
    build: Callable[[Any, dict[str, Any]], Any]
    shapes: Mapping[str, tuple[int, ...]]
    values: Mapping[str, np.ndarray]
    nonneg: frozenset = field(default_factory=frozenset)
    sublevel: Callable[[Any, dict[str, Any], Any], Any] | None = None
    level_value: Callable[[float], float] | None = None

    def sublevel_constraint(self, x: Any, params: Mapping[str, Any], r: Any) -> Any:
        r"""The constraint :math:`f(x) \le l` written with the parameter ``r``."""
        if self.sublevel is None:
            return self.build(x, params) <= r
        return self.sublevel(x, params, r)

    def level_parameter(self, level: float) -> float:
        """The value of ``r`` that stands for the level ``level``."""
        return level if self.level_value is None else self.level_value(level)

    def parameters(self) -> dict[str, Any]:
        """Fresh cvxpy parameters with this form's shapes."""
        import cvxpy as cp

        return {
            name: cp.Parameter(shape, name=name, nonneg=name in self.nonneg)
            for name, shape in self.shapes.items()
        }

    def assign(self, params: Mapping[str, Any]) -> None:
        """Write this cost's values into ``params``."""
        for name, value in self.values.items():
            params[name].value = value

    def constant_expression(self, x: Any) -> Any:
        """The cost at the cvxpy expression ``x`` with constant parameters."""
        import cvxpy as cp

        return self.build(x, {k: cp.Constant(v) for k, v in self.values.items()})


class HittingCost(ABC):
    """Interface of a hitting cost :math:`f_t : \\mathbb{R}^d \\to [0, \\infty)`.

    Attributes
    ----------
    dim : int
        The dimension :math:`d`.
    m : float
        Strong-convexity modulus in the Euclidean norm (> 0).
    """

    dim: int
    m: float

    @abstractmethod
    def __call__(self, x: np.ndarray) -> float:
        """:math:`f(x)`."""

    @abstractmethod
    def gradient(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\nabla f(x)`."""

    @abstractmethod
    def minimizer(self) -> np.ndarray:
        """The unconstrained minimiser :math:`v = \\arg\\min f` (cached)."""

    def minimum(self) -> float:
        """:math:`f(v)`."""
        return self(self.minimizer())

    def _cvxpy_form(self) -> CvxpyForm | None:
        """The cost as a parametrised cvxpy expression, or None."""
        return None


def _lru_get(cache: OrderedDict, key: Hashable, make: Callable[[], Any]) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = make()
    cache[key] = value
    if len(cache) > 64:
        cache.popitem(last=False)
    return value


class QuadraticCost(HittingCost):
    r"""The quadratic hitting cost :math:`f(x) = \tfrac12 (x-y)^\top A (x-y) + h`.

    Parameters
    ----------
    center : array_like of shape (d,)
        The minimiser :math:`y`.
    curvature : float, array_like of shape (d,) or (d, d), default=1.0
        :math:`A`: a scalar :math:`a` (:math:`A = aI`), the diagonal of
        :math:`A`, or a symmetric positive-definite matrix.
    offset : float, default=0.0
        The minimum value :math:`h`; must be >= 0 (the competitive ratio needs
        non-negative hitting costs).

    Attributes
    ----------
    m : float
        The smallest eigenvalue of :math:`A`, the strong-convexity modulus.
    kind : {"scalar", "diagonal", "matrix"}
        How :math:`A` is stored.

    Notes
    -----
    Positive definiteness is checked (a Cholesky factorisation for a matrix),
    so a non-convex quadratic is refused at construction.
    """

    def __init__(
        self,
        center: Any,
        curvature: Any = 1.0,
        offset: float = 0.0,
    ):
        self.center = check_vector("center", center)
        self.dim = self.center.shape[0]
        self.offset = check_nonnegative("offset", offset)
        self.curvature, self.kind, self.m, self._factor = _parse_curvature(
            curvature, self.dim
        )

    def __call__(self, x: np.ndarray) -> float:
        diff = np.asarray(x, dtype=np.float64) - self.center
        return 0.5 * float(diff @ self.apply(diff)) + self.offset

    def gradient(self, x: np.ndarray) -> np.ndarray:
        return self.apply(np.asarray(x, dtype=np.float64) - self.center)

    def apply(self, z: np.ndarray) -> np.ndarray:
        """:math:`A z`."""
        if self.kind == "matrix":
            return self.curvature @ z
        return self.curvature * z

    def minimizer(self) -> np.ndarray:
        return self.center.copy()

    def minimum(self) -> float:
        return self.offset

    def _cvxpy_form(self) -> CvxpyForm:
        d = self.dim
        if self.kind == "matrix":
            shapes = {"L": (d, d), "b": (d,), "h": ()}
            values = {"L": self._factor, "b": self._factor @ self.center}
            nonneg = frozenset({"h"})
        else:
            scale = np.sqrt(self.curvature)
            shapes = {"s": np.shape(scale), "b": (d,), "h": ()}
            values = {"s": scale, "b": scale * self.center}
            nonneg = frozenset({"s", "h"})
        values["h"] = np.float64(self.offset)
        offset = self.offset
        return CvxpyForm(
            key=("quadratic", self.kind, d),
            build=_build_quadratic,
            shapes=shapes,
            values=values,
            nonneg=nonneg,
            sublevel=_quadratic_sublevel,
            # f(x) <= l  <=>  ||L (x - y)|| <= sqrt(2 (l - h)): a second-order
            # cone, which Clarabel solves more accurately than the quadratic.
            level_value=lambda level: float(np.sqrt(2.0 * max(level - offset, 0.0))),
        )

    def __repr__(self) -> str:
        return (
            f"QuadraticCost(dim={self.dim}, kind={self.kind!r}, m={self.m:.4g}, "
            f"offset={self.offset:.4g})"
        )


def _quadratic_residual(x: Any, params: Mapping[str, Any]) -> Any:
    import cvxpy as cp

    if "L" in params:
        return params["L"] @ x - params["b"]
    if params["s"].ndim == 0:
        return params["s"] * x - params["b"]
    return cp.multiply(params["s"], x) - params["b"]


def _build_quadratic(x: Any, params: Mapping[str, Any]) -> Any:
    import cvxpy as cp

    return 0.5 * cp.sum_squares(_quadratic_residual(x, params)) + params["h"]


def _quadratic_sublevel(x: Any, params: Mapping[str, Any], r: Any) -> Any:
    import cvxpy as cp

    return cp.norm(_quadratic_residual(x, params), 2) <= r


def _parse_curvature(curvature: Any, dim: int) -> tuple[Any, str, float, Any]:
    """(stored curvature, kind, smallest eigenvalue, Cholesky factor L.T)."""
    arr = np.asarray(curvature, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"curvature must be finite; got {curvature!r}")
    if arr.ndim == 0:
        a = float(arr)
        if not a > 0:
            raise ValueError(f"curvature must be > 0 (convex cost); got {a!r}")
        return a, "scalar", a, None
    if arr.ndim == 1:
        if arr.shape != (dim,):
            raise ValueError(
                f"curvature must have shape ({dim},) to match center; got {arr.shape}"
            )
        if not np.all(arr > 0):
            raise ValueError(
                "curvature must be > 0 in every coordinate (convex cost); got "
                f"minimum {arr.min()!r}"
            )
        return arr.copy(), "diagonal", float(arr.min()), None
    if arr.shape != (dim, dim):
        raise ValueError(
            f"curvature must have shape ({dim}, {dim}) to match center; got {arr.shape}"
        )
    if not np.allclose(arr, arr.T, rtol=1e-10, atol=1e-12):
        raise ValueError("curvature must be a symmetric matrix")
    arr = 0.5 * (arr + arr.T)
    eigenvalues = np.linalg.eigvalsh(arr)
    if not eigenvalues[0] > 0:
        raise ValueError(
            "curvature must be positive definite (convex cost); got smallest "
            f"eigenvalue {eigenvalues[0]!r}"
        )
    return arr, "matrix", float(eigenvalues[0]), np.linalg.cholesky(arr).T


class CvxpyCost(HittingCost):
    r"""A convex hitting cost written as a cvxpy expression with parameters.

    ``expression(x, **params)`` must return a scalar convex (DCP) cvxpy
    expression of the variable ``x``; ``params`` are cvxpy parameters named
    as in ``parameters``, whose values are this cost's. Costs that share
    ``expression``, ``dim`` and parameter shapes share one compiled problem in
    every algorithm, which only updates the parameter values at each step.

    Parameters
    ----------
    expression : callable
        ``expression(x, **params) -> cvxpy.Expression``. For the compiled
        problem to be reused it should follow cvxpy's DPP rules (parameters
        enter affinely or multiply parameter-free terms).
    dim : int
        Dimension of ``x``.
    m : float
        Strong-convexity modulus of the cost in the Euclidean norm; must be
        > 0. It is the user's statement and is not verified.
    parameters : dict of str to array_like, optional
        This cost's parameter values.
    minimizer : array_like of shape (dim,), optional
        The unconstrained minimiser if known; otherwise solved for (cached).
    nonneg : iterable of str, default=()
        Names of parameters to declare non-negative, which DCP analysis may
        need (e.g. a weight multiplying a convex term).

    Notes
    -----
    Convexity is checked through cvxpy's DCP analysis at construction
    (cheap); strong convexity ``m`` is not checked. The value and gradient
    are evaluated through cvxpy (``Expression.value`` and ``.grad``), which
    is slower than numpy code; :class:`ConvexCost` is the numpy route.
    """

    _evaluators: ClassVar[OrderedDict] = OrderedDict()

    def __init__(
        self,
        expression: Callable[..., Any],
        dim: int,
        m: float,
        parameters: Mapping[str, Any] | None = None,
        *,
        minimizer: Any = None,
        nonneg: Iterable[str] = (),
    ):
        if not callable(expression):
            raise TypeError(
                f"expression must be callable; got {type(expression).__name__}"
            )
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int; got {type(dim).__name__}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim!r}")
        self.dim = int(dim)
        self.m = check_positive("m", m)
        self.expression = expression
        self.parameters = {}
        for name, value in (parameters or {}).items():
            arr = np.asarray(value, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"parameters[{name!r}] must be finite; got {value!r}")
            self.parameters[name] = arr
        nonneg = frozenset(nonneg)
        unknown = sorted(nonneg - set(self.parameters))
        if unknown:
            raise ValueError(
                f"nonneg must name parameters; got unknown names {unknown}"
            )
        for name in nonneg:
            if np.any(self.parameters[name] < 0):
                raise ValueError(f"parameters[{name!r}] must be >= 0 (nonneg)")
        self._form = CvxpyForm(
            key=("cvxpy", expression, self.dim, self._signature(), nonneg),
            build=lambda x, params: expression(x, **params),
            shapes={k: v.shape for k, v in self.parameters.items()},
            values=self.parameters,
            nonneg=nonneg,
        )
        self._check_convex()
        self._minimizer = (
            None if minimizer is None else check_vector("minimizer", minimizer, dim)
        )

    def _signature(self) -> tuple:
        return tuple(sorted((k, v.shape) for k, v in self.parameters.items()))

    def _check_convex(self) -> None:
        _, _, expr = self._evaluator()
        if expr.shape != ():
            raise ValueError(
                f"expression must return a scalar expression; got shape {expr.shape}"
            )
        if not expr.is_convex():
            raise ValueError(
                "expression must be convex under cvxpy's DCP rules; got curvature "
                f"{expr.curvature}"
            )

    def _evaluator(self) -> tuple[Any, dict[str, Any], Any]:
        def make() -> tuple[Any, dict[str, Any], Any]:
            import cvxpy as cp

            x = cp.Variable(self.dim, name="x")
            params = self._form.parameters()
            return x, params, self._form.build(x, params)

        return _lru_get(self._evaluators, self._form.key, make)

    def __call__(self, x: np.ndarray) -> float:
        var, params, expr = self._evaluator()
        var.value = np.asarray(x, dtype=np.float64)
        self._form.assign(params)
        value = expr.value
        if value is None:
            return float("inf")
        return float(value)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        var, params, expr = self._evaluator()
        var.value = np.asarray(x, dtype=np.float64)
        self._form.assign(params)
        grad = expr.grad.get(var)
        if grad is None:
            raise ValueError("expression is not differentiable at x")
        grad = grad.toarray() if hasattr(grad, "toarray") else np.asarray(grad)
        return np.asarray(grad, dtype=np.float64).reshape(self.dim)

    def minimizer(self) -> np.ndarray:
        if self._minimizer is None:
            from lemmata.online._steps import solve_minimizer

            self._minimizer = solve_minimizer(self, None)
        return self._minimizer.copy()

    def _cvxpy_form(self) -> CvxpyForm:
        return self._form

    def __repr__(self) -> str:
        name = getattr(self.expression, "__name__", "expression")
        return f"CvxpyCost({name}, dim={self.dim}, m={self.m:.4g})"


class ConvexCost(HittingCost):
    r"""A convex hitting cost given as numpy callables ``fun`` and ``grad``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> float``, :math:`f(x)` for ``x`` of shape ``(dim,)``.
    grad : callable
        ``grad(x) -> ndarray``, :math:`\nabla f(x)`.
    dim : int
        Dimension of ``x``.
    m : float
        Strong-convexity modulus in the Euclidean norm; must be > 0.
    minimizer : array_like of shape (dim,), optional
        The minimiser if known; otherwise found with L-BFGS (cached).

    Notes
    -----
    Convexity of a black-box callable cannot be checked cheaply. The
    algorithms check the strong-convexity inequality
    :math:`f(y) \ge f(x) + \nabla f(x)^\top (y - x) + \tfrac m2\|y - x\|^2`
    between the points each step visits, and raise ValueError when it fails by
    more than a relative tolerance; a cost that is non-convex elsewhere goes
    undetected and voids every guarantee.
    """

    def __init__(
        self,
        fun: Callable[[np.ndarray], float],
        grad: Callable[[np.ndarray], np.ndarray],
        dim: int,
        m: float,
        *,
        minimizer: Any = None,
    ):
        if not callable(fun):
            raise TypeError(f"fun must be callable; got {type(fun).__name__}")
        if not callable(grad):
            raise TypeError(f"grad must be callable; got {type(grad).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int; got {type(dim).__name__}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim!r}")
        self.fun = fun
        self.grad = grad
        self.dim = int(dim)
        self.m = check_positive("m", m)
        self._minimizer = (
            None if minimizer is None else check_vector("minimizer", minimizer, dim)
        )

    def __call__(self, x: np.ndarray) -> float:
        value = float(self.fun(np.asarray(x, dtype=np.float64)))
        if np.isnan(value):
            raise ValueError(f"fun must return a number; got nan at x={x!r}")
        return value

    def gradient(self, x: np.ndarray) -> np.ndarray:
        g = np.asarray(self.grad(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        if g.shape != (self.dim,):
            raise ValueError(f"grad must return shape ({self.dim},); got {g.shape}")
        if not np.all(np.isfinite(g)):
            raise ValueError(f"grad must return finite values; got {g!r}")
        return g

    def minimizer(self) -> np.ndarray:
        if self._minimizer is None:
            from lemmata.online._steps import solve_minimizer

            self._minimizer = solve_minimizer(self, None)
        return self._minimizer.copy()

    def __repr__(self) -> str:
        name = getattr(self.fun, "__name__", "fun")
        return f"ConvexCost({name}, dim={self.dim}, m={self.m:.4g})"
