"""Mirror descent as a ``torch.optim.Optimizer``: a general potential and p-GD."""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from lemmata.optim._potentials import PNormPower, Potential, _check_exponent

__all__ = ["PGD", "MirrorDescent", "mirror_descent"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_INTERNAL_DIRS = (
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,
)

# p-GD exponents outside this range get a warning (see PGD's Notes).
_P_LARGE = 6.0
_P_SMALL = 1.2


def _check_nonnegative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0; got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__}")
    return value


def _check_potential(potential: object) -> Potential:
    for method in ("mirror_map", "inverse_mirror_map"):
        if not callable(getattr(potential, method, None)):
            raise TypeError(
                f"potential must provide a callable {method}(); "
                f"got {type(potential).__name__} without one"
            )
    return potential  # type: ignore[return-value]


def _warn(message: str) -> None:
    """Warn at the first stack frame outside torch and this module."""
    frame = sys._getframe(0)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(
        _INTERNAL_DIRS
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _warn_about_exponent(p: float, params: Sequence[torch.Tensor]) -> None:
    if p > _P_LARGE:
        _warn(
            f"p={p!r} is > {_P_LARGE:g}: from w = 0 the first step is "
            f"|lr * g|**(1/(p-1)) per entry, which is large even for tiny "
            f"gradients, and the weights can explode; use a small lr."
        )
    low = sorted({str(w.dtype) for w in params if w.dtype != torch.float64})
    if p < _P_SMALL and low:
        _warn(
            f"p={p!r} is < {_P_SMALL:g} with {', '.join(low)} parameters: the "
            f"inverse mirror map raises the dual to the power 1/(p-1) = "
            f"{1 / (p - 1):.3g}, which underflows to 0 for small dual values; "
            f"use float64 parameters."
        )


def _single_tensor_mirror_descent(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    *,
    potential: Potential,
    lr: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for w, grad in zip(params, grads, strict=True):
        # fp16/bf16: do the pow round trip in fp32, round once when copying back.
        w_math = w.float() if w.dtype in _LOW_PRECISION else w
        g = grad if grad.dtype == w_math.dtype else grad.to(w_math.dtype)

        g = -g if maximize else g
        if weight_decay != 0:
            g = g.add(w_math, alpha=weight_decay)

        dual = potential.mirror_map(w_math)
        dual = dual.sub(g, alpha=lr)

        w.copy_(potential.inverse_mirror_map(dual))


def mirror_descent(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    *,
    potential: Potential,
    lr: float,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> None:
    r"""Apply one mirror-descent step to ``params`` in place.

    .. math::

        w \leftarrow (\nabla\psi)^{-1}\bigl(\nabla\psi(w) - \eta\, g\bigr),
        \qquad g = \pm\,\mathrm{grad} + \lambda w

    for each pair ``(w, grad)``; :math:`\psi` is ``potential``, :math:`\eta`
    is ``lr``, :math:`\lambda` is ``weight_decay``, and the sign of the
    gradient is minus when ``maximize``. This is the functional form of
    :class:`MirrorDescent`; it does no input validation beyond matching
    lengths and must be called under :func:`torch.no_grad`.

    Parameters
    ----------
    params : sequence of Tensor
        Parameters, updated in place.
    grads : sequence of Tensor
        Their gradients, one per parameter and of the same shape.
    potential : Potential
        Provides ``mirror_map`` and ``inverse_mirror_map``.
    lr : float
        Step size :math:`\eta`.
    weight_decay : float, default=0.0
        Coupled L2 penalty :math:`\lambda`, added to the gradient.
    maximize : bool, default=False
        Ascend instead of descend.
    """
    if len(params) != len(grads):
        raise ValueError(
            f"grads must have one entry per parameter ({len(params)}); got {len(grads)}"
        )
    _single_tensor_mirror_descent(
        params,
        grads,
        potential=potential,
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
    )


class MirrorDescent(Optimizer):
    r"""Mirror descent with a user-given potential :math:`\psi`.

    .. math::

        w_{t+1} = (\nabla\psi)^{-1}\bigl(\nabla\psi(w_t) - \eta\, g_t\bigr),
        \qquad g_t = \nabla L(w_t) + \lambda w_t

    :math:`w` is each tensor in ``params`` (the potential sees one whole
    tensor at a time), :math:`\psi` is ``potential``, :math:`\eta` is ``lr``,
    :math:`\lambda` is ``weight_decay`` and :math:`\nabla L(w_t)` is the
    ``.grad`` left by ``backward()`` (negated when ``maximize``).

    Parameters
    ----------
    params : iterable of Tensor or dict
        Tensors to optimise, or parameter groups. A group may override
        ``lr``, ``potential``, ``weight_decay``, ``maximize`` and
        ``check_finite``.
    lr : float, default=1e-2
        Step size :math:`\eta`; must be finite and >= 0.
    potential : Potential
        Required. Any object with callable ``mirror_map(w)`` and
        ``inverse_mirror_map(u)``, such as :class:`PNormPower`.
    weight_decay : float, default=0.0
        Coupled L2 penalty :math:`\lambda` added to the gradient, as in
        :class:`torch.optim.SGD`; must be finite and >= 0.
    maximize : bool, default=False
        Ascend the objective instead of descending it.
    check_finite : bool, default=True
        Check every gradient for NaN and inf before updating (see Notes).

    Raises
    ------
    TypeError
        If ``potential`` lacks a callable ``inverse_mirror_map`` or
        ``mirror_map``, or a hyperparameter has the wrong type.
    ValueError
        If ``lr`` or ``weight_decay`` is negative or not finite; from
        :meth:`step`, if a gradient is not finite and ``check_finite``.

    Notes
    -----
    :math:`\nabla\psi(w_t)` is recomputed from the parameter at every step;
    no dual state is kept, so the optimizer has no per-parameter state and
    the dual point is rounded to the parameter's dtype each step. For
    float16 and bfloat16 parameters the step is computed in float32 and
    rounded once, when it is copied back; float32 and float64 parameters are
    computed in their own dtype.

    With ``check_finite=True``, :meth:`step` checks every gradient of every
    group before it changes any parameter, and raises ``ValueError`` naming
    the group index and the parameter index within the group; the parameters
    are then unchanged. Without the check a NaN gradient turns the weights
    into NaN. The check does not cover the result: a finite dual point can
    still overflow to ``inf`` in the inverse map (e.g. :class:`PNormPower`
    with ``p`` close to 1). The check costs one device synchronisation per
    group.

    ``weight_decay`` and ``maximize`` are not part of [1]_ or [2]_; they
    follow the conventions of :class:`torch.optim.SGD`. Sparse gradients and
    complex parameters are not supported.

    A potential stored in the parameter groups travels with
    :meth:`state_dict`; loading such a checkpoint with
    ``torch.load(weights_only=True)`` needs the potential's class in
    :func:`torch.serialization.add_safe_globals`. :class:`PGD` stores only
    floats.

    References
    ----------
    .. [1] Sun, Ahn, Thrampoulidis, Azizan. "Mirror Descent Maximizes
       Generalized Margin and Can Be Implemented Efficiently." NeurIPS 2022.
       arXiv:2205.12808.
    .. [2] Sun, Gatmiry, Ahn, Azizan. "A Unified Approach to Controlling
       Implicit Regularization via Mirror Descent." arXiv:2306.13853.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        potential: Potential | None = None,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        check_finite: bool = True,
    ) -> None:
        if potential is None:
            raise TypeError("potential must be given, e.g. PNormPower(3.0); got None")
        defaults = {
            "lr": lr,
            "potential": potential,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "check_finite": check_finite,
        }
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("weight_decay", 0.0)
            group.setdefault("maximize", False)
            group.setdefault("check_finite", True)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group after checking its hyperparameters.

        Keys missing from ``param_group`` take the optimizer's defaults.
        """
        merged = {**self.defaults, **param_group}
        self._check_hyperparameters(
            merged, where=f" (param group {len(self.param_groups)})"
        )
        super().add_param_group(param_group)

        group = self.param_groups[-1]
        for index, w in enumerate(group["params"]):
            if w.is_complex():
                raise TypeError(
                    f"params must be real tensors; got {w.dtype} in param group "
                    f"{len(self.param_groups) - 1}, parameter {index}"
                )
        potential = self._group_potential(group)
        if isinstance(potential, PNormPower):
            _warn_about_exponent(potential.p, group["params"])

    def _check_hyperparameters(self, group: dict[str, Any], where: str = "") -> None:
        try:
            _check_nonnegative("lr", group["lr"])
            _check_nonnegative("weight_decay", group["weight_decay"])
            _check_flag("maximize", group["maximize"])
            _check_flag("check_finite", group["check_finite"])
            self._check_group_potential(group)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc}{where}") from None

    def _check_group_potential(self, group: dict[str, Any]) -> None:
        _check_potential(group["potential"])

    def _group_potential(self, group: dict[str, Any]) -> Potential:
        return group["potential"]

    def _check_gradients(self) -> None:
        """Raise before any update if a gradient is sparse or, if asked, not finite."""
        for group_index, group in enumerate(self.param_groups):
            indexed = [
                (i, w) for i, w in enumerate(group["params"]) if w.grad is not None
            ]
            for i, w in indexed:
                if w.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients; "
                        f"got one in param group {group_index}, parameter {i}"
                    )
            if not group["check_finite"] or not indexed:
                continue

            finite = torch.stack([torch.isfinite(w.grad).all() for _, w in indexed])
            if bool(finite.all()):
                continue
            i, w = indexed[int(torch.argmin(finite.to(torch.uint8)))]
            raise ValueError(
                f"non-finite gradient in param group {group_index}, parameter {i} "
                f"(shape {tuple(w.shape)}); no parameter was updated. Pass "
                f"check_finite=False to skip this check."
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one mirror-descent step; return the closure's loss, if given.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; run with gradients
            enabled.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        self._check_gradients()

        for group in self.param_groups:
            params = [w for w in group["params"] if w.grad is not None]
            mirror_descent(
                params,
                [w.grad for w in params],
                potential=self._group_potential(group),
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        return loss


class PGD(MirrorDescent):
    r"""p-GD: mirror descent with :math:`\psi(w) = \tfrac{1}{p}\|w\|_p^p`.

    .. math::

        \nabla\psi(w_{t+1}) = \nabla\psi(w_t) - \eta\, g_t,
        \qquad \nabla\psi(w)_j = \operatorname{sign}(w_j)\,|w_j|^{p-1},

    so that, entry by entry,

    .. math::

        w_{t+1,j} = \operatorname{sign}(u_j)\,|u_j|^{1/(p-1)},
        \qquad u = \operatorname{sign}(w_t)\,|w_t|^{p-1} - \eta\, g_t,
        \qquad g_t = \nabla L(w_t) + \lambda w_t.

    :math:`w` is each tensor in ``params``, :math:`\eta` is ``lr``, :math:`p`
    is ``p``, :math:`\lambda` is ``weight_decay`` and :math:`\nabla L(w_t)` is
    the ``.grad`` left by ``backward()`` (negated when ``maximize``). The
    update is elementwise: about ten elementwise passes over each parameter
    (SGD makes one), two of them a ``pow``, which torch computes fast for
    the exponents 0.5, 1 and 2 (``p`` in {1.5, 2, 3}) and much more slowly
    for others on CPU.

    Parameters
    ----------
    params : iterable of Tensor or dict
        Tensors to optimise, or parameter groups. A group may override
        ``lr``, ``p``, ``weight_decay``, ``maximize`` and ``check_finite``, so
        ``p`` can differ between groups:
        ``[{"params": a, "p": 1.5}, {"params": b, "p": 3}]``.
    lr : float, default=1e-2
        Step size :math:`\eta`; must be finite and >= 0. The effective step
        on an entry is about :math:`\eta\,|w_j|^{2-p}/(p-1)`, so tune ``lr``
        per ``p``.
    p : float, default=3.0
        Exponent of the potential; a finite real number > 1. ``p=2`` is
        :class:`torch.optim.SGD` without momentum.
    weight_decay : float, default=0.0
        Coupled L2 penalty :math:`\lambda` added to the gradient; >= 0.
    maximize : bool, default=False
        Ascend the objective instead of descending it.
    check_finite : bool, default=True
        Check every gradient for NaN and inf before updating; see
        :class:`MirrorDescent`.

    Warns
    -----
    UserWarning
        If ``p > 6``: from :math:`w = 0` the first step is
        :math:`|\eta g|^{1/(p-1)}` per entry, close to 1 even for tiny
        gradients, and the weights can explode. If ``p < 1.2`` with float32
        or lower-precision parameters: the inverse map's exponent
        :math:`1/(p-1) > 5` underflows small dual values to 0.

    Notes
    -----
    The potential carries the factor :math:`1/p`. [1]_'s abstract names only
    "the p-th power of the :math:`\ell_p`-norm"; the factor follows a public
    reproduction of [2]_'s Appendix H (``fekonrad/Implicit-Bias``). Code that
    uses :math:`\|w\|_p^p` without it has a mirror map ``p`` times larger:
    its learning rate ``lr`` equals ``lr / p`` here.

    Departures from [1]_ and [2]_: ``maximize`` and ``weight_decay`` are not
    in the papers (they follow :class:`torch.optim.SGD`; the decay is
    coupled, i.e. added to the gradient before the mirror step). The papers'
    theory takes full-batch gradients and exponential-tailed losses; this
    class takes whatever gradient ``backward()`` leaves. [2]_'s normalised
    step sizes are not built in; an LR scheduler or a group ``lr`` set by
    the caller can implement them.

    For ``p > 2`` the effective step :math:`\eta|w_j|^{2-p}/(p-1)` grows
    without bound as :math:`w_j \to 0`: an ``lr`` that is stable elsewhere can
    oscillate forever around a solution with tiny entries. On least squares
    the step is stable near :math:`w^*` when ``lr`` is below
    :math:`2/\lambda_{\max}(X D X^\top)` with
    :math:`D = \mathrm{diag}(|w^*_j|^{2-p}/(p-1))`.

    :math:`\nabla\psi(w_t)` is recomputed from the parameter at every step
    (no dual state), in float32 for float16/bfloat16 parameters. Parameter
    groups hold ``p`` as a plain number, so :meth:`state_dict` loads with
    ``torch.load(weights_only=True)``. See :class:`MirrorDescent` for the
    non-finite gradient check.

    References
    ----------
    .. [1] Sun, Ahn, Thrampoulidis, Azizan. "Mirror Descent Maximizes
       Generalized Margin and Can Be Implemented Efficiently." NeurIPS 2022.
       arXiv:2205.12808.
    .. [2] Sun, Gatmiry, Ahn, Azizan. "A Unified Approach to Controlling
       Implicit Regularization via Mirror Descent." arXiv:2306.13853.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        p: float = 3.0,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        check_finite: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "p": p,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "check_finite": check_finite,
        }
        self._check_hyperparameters(defaults)
        # Skip MirrorDescent.__init__: PGD groups hold "p", not a potential.
        Optimizer.__init__(self, params, defaults)

    def _check_group_potential(self, group: dict[str, Any]) -> None:
        _check_exponent("p", group["p"])

    def _group_potential(self, group: dict[str, Any]) -> Potential:
        return PNormPower(group["p"])
