"""Mirror descent as a ``torch.optim.Optimizer``: a general potential and p-GD."""

from __future__ import annotations

import logging
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from lemmata.optim._potentials import PNormPower, Potential, _check_exponent

__all__ = ["PGD", "MirrorDescent", "mirror_descent"]

logger = logging.getLogger(__name__)

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FOREACH_DEVICES = ("cpu", "cuda", "xpu", "mps")

# torch's C++ flatten/unflatten (behind torch._utils._flatten_dense_tensors);
# the Python fallbacks in _flatten and _views do the same, about 2x slower.
_FLATTEN = getattr(torch._C._nn, "flatten_dense_tensors", None)
_UNFLATTEN = getattr(torch._C._nn, "unflatten_dense_tensors", None)
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


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the step's arithmetic and of the dual state: fp32 for fp16/bf16."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _separable(potential: Potential) -> bool:
    return getattr(potential, "separable", False) is True


def _flatten(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """The entries of ``tensors`` (each in row-major order) in one new 1-D tensor."""
    if _FLATTEN is not None and all(t.is_contiguous() for t in tensors):
        flat = _FLATTEN(list(tensors))
    else:
        flat = torch.cat([t.reshape(-1) for t in tensors])
    return flat if flat.dtype == dtype else flat.to(dtype)


def _views(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive slices of the 1-D ``flat``, shaped like the tensors of ``like``."""
    if _UNFLATTEN is not None:
        return list(_UNFLATTEN(flat, list(like)))
    pieces = flat.split([t.numel() for t in like])
    return [piece.view(tuple(t.shape)) for piece, t in zip(pieces, like, strict=True)]


def _map_each(potential: Potential, name: str, tensors: Sequence[torch.Tensor]):
    one = getattr(potential, name)
    return [one(t) for t in tensors]


def _single_tensor_mirror_descent(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    duals: Sequence[torch.Tensor] | None,
    *,
    potential: Potential,
    lr: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for i, (w, grad) in enumerate(zip(params, grads, strict=True)):
        # fp16/bf16: do the arithmetic in fp32, round once when copying back.
        dtype = _math_dtype(w.dtype)
        w_math = w if w.dtype == dtype else w.to(dtype)
        g = grad if grad.dtype == dtype else grad.to(dtype)

        g = -g if maximize else g
        if weight_decay != 0:
            g = g.add(w_math, alpha=weight_decay)

        dual = potential.mirror_map(w_math) if duals is None else duals[i]
        dual.add_(g, alpha=-lr)

        w.copy_(potential.inverse_mirror_map(dual))


def _flat_mirror_descent(
    params: Sequence[torch.Tensor],
    flat_grad: torch.Tensor,
    flat_dual: torch.Tensor | None,
    *,
    potential: Potential,
    lr: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One step on tensors of one device and dtype, through their concatenation.

    ``flat_grad`` is the concatenated gradient, which this overwrites;
    ``flat_dual`` the concatenated dual points in the arithmetic dtype,
    updated in place, or None to compute them from ``params``. The
    elementwise operations are those of :func:`_single_tensor_mirror_descent`
    in the same order; a separable potential maps the whole concatenation in
    one call, any other one tensor at a time.
    """
    dtype = _math_dtype(params[0].dtype)
    separable = _separable(potential)
    g = flat_grad if flat_grad.dtype == dtype else flat_grad.to(dtype)
    w_flat = None
    if weight_decay != 0 or flat_dual is None:
        w_flat = _flatten(params, dtype)

    # u + lr g is bitwise u - lr (-g), so maximize without decay needs no pass.
    alpha = lr if maximize and weight_decay == 0 else -lr
    if maximize and weight_decay != 0:
        g.neg_()
    if weight_decay != 0:
        g.add_(w_flat, alpha=weight_decay)

    if flat_dual is not None:
        u = flat_dual
    elif separable:
        u = potential.mirror_map(w_flat)
    else:
        u = _flatten(_map_each(potential, "mirror_map", _views(w_flat, params)), dtype)
    u.add_(g, alpha=alpha)

    if separable:
        into = getattr(potential, "inverse_mirror_map_into", None)
        w_new = into(u, g) if callable(into) else potential.inverse_mirror_map(u)
        torch._foreach_copy_(list(params), _views(w_new, params))
    else:
        w_new = _map_each(potential, "inverse_mirror_map", _views(u, params))
        torch._foreach_copy_(list(params), w_new)


def _by_device_and_dtype(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in order of appearance."""
    device, dtype = tensors[0].device, tensors[0].dtype
    if all(t.dtype == dtype and t.device == device for t in tensors):
        return [list(range(len(tensors)))]
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return list(groups.values())


def _multi_tensor_mirror_descent(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    duals: Sequence[torch.Tensor] | None,
    *,
    potential: Potential,
    lr: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for indices in _by_device_and_dtype(params):
        ws = [params[i] for i in indices]
        dtype = _math_dtype(ws[0].dtype)
        flat_dual = None
        if duals is not None:
            flat_dual = _flatten([duals[i] for i in indices], dtype)
        _flat_mirror_descent(
            ws,
            _flatten([grads[i] for i in indices], grads[indices[0]].dtype),
            flat_dual,
            potential=potential,
            lr=lr,
            weight_decay=weight_decay,
            maximize=maximize,
        )
        if flat_dual is not None:
            torch._foreach_copy_([duals[i] for i in indices], _views(flat_dual, ws))


def _fits(dual: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``dual`` can serve as the dual point of ``w``."""
    return (
        dual.shape == w.shape
        and dual.dtype == _math_dtype(w.dtype)
        and dual.device == w.device
    )


def _foreach_default(params: Sequence[torch.Tensor]) -> bool:
    """The multi-tensor path, unless a tensor is a subclass or on an odd device."""
    plain = (torch.Tensor, torch.nn.Parameter)
    if not all(type(w) in plain for w in params):
        return False
    return all(d.type in _FOREACH_DEVICES for d in {w.device for w in params})


def mirror_descent(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    duals: Sequence[torch.Tensor] | None = None,
    *,
    potential: Potential,
    lr: float,
    weight_decay: float = 0.0,
    maximize: bool = False,
    foreach: bool | None = None,
) -> None:
    r"""Apply one mirror-descent step to ``params`` in place.

    .. math::

        u \leftarrow u - \eta\, g,
        \qquad w \leftarrow (\nabla\psi)^{-1}(u),
        \qquad g = \pm\,\mathrm{grad} + \lambda w

    for each triple ``(w, grad, u)``; :math:`u` is ``duals[i]`` when
    ``duals`` is given (updated in place) and :math:`\nabla\psi(w)` computed
    afresh otherwise. :math:`\psi` is ``potential``, :math:`\eta` is ``lr``,
    :math:`\lambda` is ``weight_decay``, and the sign of the gradient is
    minus when ``maximize``. This is the functional form of
    :class:`MirrorDescent`; it does no input validation beyond matching
    lengths and must be called under :func:`torch.no_grad`.

    Parameters
    ----------
    params : sequence of Tensor
        Parameters, updated in place.
    grads : sequence of Tensor
        Their gradients, one per parameter and of the same shape.
    duals : sequence of Tensor, optional
        Dual points :math:`u = \nabla\psi(w)`, one per parameter, in float32
        for float16/bfloat16 parameters and in the parameter's dtype
        otherwise; updated in place. ``None`` recomputes them from ``params``.
    potential : Potential
        Provides ``mirror_map`` and ``inverse_mirror_map`` (and optionally
        their ``_foreach`` list versions).
    lr : float
        Step size :math:`\eta`.
    weight_decay : float, default=0.0
        Coupled L2 penalty :math:`\lambda`, added to the gradient.
    maximize : bool, default=False
        Ascend instead of descend.
    foreach : bool, optional
        Use the multi-tensor path: the tensors of one device and dtype are
        concatenated, updated together and copied back with
        ``torch._foreach_copy_`` (see :class:`MirrorDescent`). ``None`` picks
        it unless a tensor is a tensor subclass or lives outside CPU, CUDA,
        XPU and MPS. Both paths compute the same elementwise operations.
    """
    if len(params) != len(grads):
        raise ValueError(
            f"grads must have one entry per parameter ({len(params)}); got {len(grads)}"
        )
    if duals is not None and len(duals) != len(params):
        raise ValueError(
            f"duals must have one entry per parameter ({len(params)}); got {len(duals)}"
        )
    if not params:
        return
    if foreach is None:
        foreach = _foreach_default(params)
    kernel = _multi_tensor_mirror_descent if foreach else _single_tensor_mirror_descent
    kernel(
        params,
        grads,
        duals,
        potential=potential,
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
    )


@dataclass
class _Bucket:
    """Parameters of one group (and, on the multi-tensor path, one device and
    dtype) that have gradients, as :meth:`MirrorDescent.step` handles them."""

    group_index: int
    group: dict[str, Any]
    foreach: bool
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    flat_grad: torch.Tensor | None = None


class MirrorDescent(Optimizer):
    r"""Mirror descent with a user-given potential :math:`\psi`.

    .. math::

        u_{t+1} = u_t - \eta\, g_t, \qquad
        w_{t+1} = (\nabla\psi)^{-1}(u_{t+1}), \qquad
        u_0 = \nabla\psi(w_0), \qquad g_t = \nabla L(w_t) + \lambda w_t

    :math:`w` is each tensor in ``params`` (the potential sees one whole
    tensor at a time), :math:`u` its dual point (``state[w]["dual"]``),
    :math:`\psi` is ``potential``, :math:`\eta` is ``lr``, :math:`\lambda` is
    ``weight_decay`` and :math:`\nabla L(w_t)` is the ``.grad`` left by
    ``backward()`` (negated when ``maximize``).

    Parameters
    ----------
    params : iterable of Tensor or dict
        Tensors to optimise, or parameter groups. A group may override
        ``lr``, ``potential``, ``weight_decay``, ``maximize``,
        ``check_finite``, ``foreach`` and ``dual_state``.
    lr : float, default=1e-2
        Step size :math:`\eta`; must be finite and >= 0.
    potential : Potential
        Required. Any object with callable ``mirror_map(w)`` and
        ``inverse_mirror_map(u)``, such as :class:`PNormPower` or
        :class:`PNormSquared`.
    weight_decay : float, default=0.0
        Coupled L2 penalty :math:`\lambda` added to the gradient, as in
        :class:`torch.optim.SGD`; must be finite and >= 0.
    maximize : bool, default=False
        Ascend the objective instead of descending it.
    check_finite : bool, default=True
        Check every gradient for NaN and inf before updating (see Notes).
    foreach : bool, optional
        Use the multi-tensor path, which updates all tensors of one group,
        device and dtype together (see Notes). ``None`` (the default) picks
        it unless a parameter is a tensor subclass (e.g. a ``DTensor``) or
        lives outside CPU, CUDA, XPU and MPS; ``False`` is the per-parameter
        loop, the reference implementation. Both compute the same
        operations.
    dual_state : bool, default=True
        Keep :math:`u_t` between steps (one float32 or float64 buffer per
        parameter) instead of recomputing :math:`\nabla\psi(w_t)` at every
        step (see Notes).

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
    **Dual state.** With ``dual_state=True`` the optimizer stores
    :math:`u_t` and each step costs one update of :math:`u` and one inverse
    map; recomputing :math:`\nabla\psi(w_t)` (``dual_state=False``) costs a
    forward map and a copy of the weights on top, and rounds the dual point
    to the parameter's dtype every step. Measured by
    ``benchmarks/bench_pgd.py`` (p-GD on a 65-tensor ResNet, one CPU thread),
    the two are equally fast within the noise (about 10%) for ``p`` in
    {1.5, 2, 3, 10}, where the forward map is cheap, and the stored state is
    about 20% faster for ``p=1.1``, whose forward map needs a general
    ``pow``; the stored state has the lower peak memory during a step (about
    2 parameter sizes, the state and one temporary, against 3), at the price
    of one persistent buffer per parameter, as :class:`torch.optim.SGD` with
    momentum. It was chosen because it is also exact: for float16/bfloat16
    parameters :math:`u` is kept in float32, so steps smaller than the
    parameter's rounding accumulate instead of being lost, and for ``p``
    close to 1 a weight that underflows to 0 keeps its dual point.

    The state must follow the weights. The optimizer records each weight's
    version counter and storage pointer when it writes it; if either moved
    before the next step, something else changed the weight (in-place
    clipping or projection such as ``w.clamp_()``, ``module.load_state_dict``,
    ``torch.nn.init.*``, ``w.data = ...``, ``module.to(...)``), and that
    weight's dual point is recomputed from its current value, i.e. mirror
    descent restarts from the changed weight (logged at INFO level). A
    change made in place through ``w.data`` (``w.data.mul_(2)``) moves
    neither and is not seen: call :meth:`reset_dual_state` after one.
    :meth:`state_dict` saves the dual points, so a checkpoint resumes
    exactly; after :meth:`load_state_dict` the stored dual points are trusted
    for weights this optimizer has not written yet, so load the matching
    model weights too. Without the state, the optimizer keeps no
    per-parameter state and sees every change to the weights.

    **Multi-tensor path.** The gradients of a group's tensors (per device
    and dtype) are concatenated, the dual update and, for a potential with
    ``separable = True`` such as :class:`PNormPower`, the inverse map run
    once on the concatenation, and the results are copied back with one
    ``torch._foreach_copy_``; a non-separable potential is mapped tensor by
    tensor. On CPU, ``torch._foreach_*`` operations cost a dispatch per
    tensor and allocate a temporary per operation, which made a step
    built from them 2-3 times slower on a 65-tensor model than the
    concatenated one; the stored dual points are views into one buffer per
    group, device and dtype. For float16 and bfloat16 parameters the
    arithmetic is in float32 and rounded once, when copied back.

    **Non-finite gradients.** With ``check_finite=True``, :meth:`step`
    checks every gradient of every group before it changes any parameter or
    dual point, and raises ``ValueError`` naming the group index and the
    parameter index within the group. The check is one reduction per group
    (the sum of the concatenated gradients, or a fused 2-norm on the loop
    path) and one host synchronisation per step; only when that total is
    not finite, which a huge finite gradient can also cause by overflow, is
    each gradient checked exactly. Without the check a NaN gradient turns
    the weights into NaN. The check does not cover the result: a finite
    dual point can still overflow to ``inf`` in the inverse map (e.g.
    :class:`PNormPower` with ``p`` close to 1).

    **torch.compile and distributed training.** A compiled model with an
    eager step, and ``torch.compile(optimizer.step)``, give the eager
    trajectory (tested); the synchronisation of the non-finite check breaks
    the compiled step's graph in two, which ``check_finite=False`` avoids.
    Under :class:`torch.nn.parallel.DistributedDataParallel` every rank
    gets the averaged gradient and applies the same deterministic step, so
    the ranks stay identical (tested with gloo against one process on the
    global batch); nothing in the optimizer communicates.

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
        foreach: bool | None = None,
        dual_state: bool = True,
    ) -> None:
        if potential is None:
            raise TypeError("potential must be given, e.g. PNormPower(3.0); got None")
        defaults = {
            "lr": lr,
            "potential": potential,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "check_finite": check_finite,
            "foreach": foreach,
            "dual_state": dual_state,
        }
        self._check_hyperparameters(defaults)
        self._reset_caches()
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Not saved: the first step after loading trusts a dual that fits.
        self._reset_caches()
        for group in self.param_groups:
            group.setdefault("weight_decay", 0.0)
            group.setdefault("maximize", False)
            group.setdefault("check_finite", True)
            group.setdefault("foreach", None)
            group.setdefault("dual_state", True)

    def _reset_caches(self) -> None:
        # id(w) -> (version counter, data pointer) of w when step last wrote it.
        self._written: dict[int, tuple[int, int]] = {}
        # (group index, device, dtype) -> (ids of its parameters, flat dual).
        self._flat: dict[tuple, tuple[tuple[int, ...], torch.Tensor]] = {}

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
            if group["foreach"] is not None:
                _check_flag("foreach", group["foreach"])
            _check_flag("dual_state", group["dual_state"])
            self._check_group_potential(group)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc}{where}") from None

    def _check_group_potential(self, group: dict[str, Any]) -> None:
        _check_potential(group["potential"])

    def _group_potential(self, group: dict[str, Any]) -> Potential:
        return group["potential"]

    def _gather(self) -> list[_Bucket]:
        """The parameters with a gradient, by group and then by device and dtype."""
        buckets = []
        for group_index, group in enumerate(self.param_groups):
            params, grads = [], []
            for w in group["params"]:
                g = w.grad
                if g is None:
                    continue
                if g.is_sparse:
                    i = next(j for j, v in enumerate(group["params"]) if v is w)
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients; "
                        f"got one in param group {group_index}, parameter {i}"
                    )
                params.append(w)
                grads.append(g)
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = _foreach_default(params)
            parts = _by_device_and_dtype(params) if foreach else [None]
            for part in parts:
                ws, gs = params, grads
                if len(parts) > 1:
                    ws, gs = [params[i] for i in part], [grads[i] for i in part]
                buckets.append(_Bucket(group_index, group, foreach, ws, gs))
        return buckets

    def _check_finite(self, buckets: list[_Bucket]) -> None:
        """Raise before any update if a checked gradient has a NaN or an inf.

        Fast path: one reduction per bucket (the sum of the concatenated
        gradients on the multi-tensor path, a fused 2-norm on the loop path;
        NaN, inf and -inf all make it non-finite), added up, and one host
        synchronisation for all groups. Only if the total is not finite,
        which huge finite gradients can also cause by overflow, is each
        gradient checked exactly.
        """
        totals = []
        for bucket in buckets:
            if not bucket.group["check_finite"]:
                continue
            if bucket.flat_grad is not None:
                totals.append(bucket.flat_grad.sum())
            else:
                grads = [g for g in bucket.grads if g.numel()]
                if grads:
                    totals.append(torch.stack(torch._foreach_norm(grads, 2)).sum())
        if not totals:
            return
        if len(totals) == 1:
            total = totals[0]
        else:
            try:
                total = torch.stack(totals).sum()
            except RuntimeError:  # totals on several devices
                total = torch.stack([t.cpu() for t in totals]).sum()
        if math.isfinite(total.item()):
            return

        for bucket in buckets:
            if not bucket.group["check_finite"]:
                continue
            for w, g in zip(bucket.params, bucket.grads, strict=True):
                if not bool(torch.isfinite(g).all()):
                    params = bucket.group["params"]
                    i = next(j for j, v in enumerate(params) if v is w)
                    raise ValueError(
                        f"non-finite gradient in param group {bucket.group_index}, "
                        f"parameter {i} (shape {tuple(w.shape)}); no parameter "
                        f"was updated. Pass check_finite=False to skip this check."
                    )

    def _stale(self, params: list[torch.Tensor]) -> list[int]:
        """Indices of ``params`` whose dual point must be (re)computed.

        A dual is stale when it is missing or does not fit the weight, or
        when the weight changed since this optimizer last wrote it: its
        version counter moved (an in-place change) or its storage moved
        (``w.data = ...``, ``module.to(...)``). A dual that fits a weight this
        optimizer has not written yet (after :meth:`load_state_dict`) is
        trusted.
        """
        written = self._written
        stale = []
        for i, w in enumerate(params):
            mark = written.get(id(w))
            if mark is not None and mark == (w._version, w.data_ptr()):
                continue
            dual = self.state[w].get("dual")
            if dual is None or mark is not None or not _fits(dual, w):
                stale.append(i)
        return stale

    def _fresh_duals(
        self, params: list[torch.Tensor], potential: Potential
    ) -> list[torch.Tensor]:
        changed = sum(id(w) in self._written for w in params)
        if changed:
            logger.info(
                "%d parameter(s) changed outside %s.step(); their dual points "
                "were recomputed from the current weights",
                changed,
                type(self).__name__,
            )
        return [potential.mirror_map(w.to(_math_dtype(w.dtype))) for w in params]

    def _duals(self, params: list[torch.Tensor], potential: Potential) -> list:
        """The per-parameter dual points (loop path), recomputed where stale."""
        stale = self._stale(params)
        if stale:
            fresh = self._fresh_duals([params[i] for i in stale], potential)
            for i, dual in zip(stale, fresh, strict=True):
                self.state[params[i]]["dual"] = dual
        return [self.state[w]["dual"] for w in params]

    def _flat_dual(self, bucket: _Bucket, potential: Potential) -> torch.Tensor:
        """The bucket's duals as one 1-D tensor (multi-tensor path).

        The tensor is kept between steps; each parameter's ``state["dual"]``
        is a view into it, so the loop path, :meth:`state_dict` and this
        cache always agree. It is rebuilt (one concatenation) when the
        bucket's parameters change; stale duals are recomputed in place.
        """
        params = bucket.params
        key = tuple(map(id, params))
        slot = (bucket.group_index, params[0].device, params[0].dtype)
        cached = self._flat.get(slot)
        stale = self._stale(params)
        if cached is not None and cached[0] == key:
            flat = cached[1]
            if stale:
                fresh = self._fresh_duals([params[i] for i in stale], potential)
                for i, dual in zip(stale, fresh, strict=True):
                    self.state[params[i]]["dual"].copy_(dual)
            return flat

        duals = [self.state[w].get("dual") for w in params]
        if stale:
            fresh = self._fresh_duals([params[i] for i in stale], potential)
            for i, dual in zip(stale, fresh, strict=True):
                duals[i] = dual
        flat = _flatten(duals, _math_dtype(params[0].dtype))
        for w, view in zip(params, _views(flat, params), strict=True):
            self.state[w]["dual"] = view
        self._flat[slot] = (key, flat)
        return flat

    def _mark_written(self, params: list[torch.Tensor]) -> None:
        written = self._written
        for w in params:
            written[id(w)] = (w._version, w.data_ptr())

    def reset_dual_state(self) -> None:
        """Drop the stored dual points; the next step recomputes them from the weights.

        Needed only after changing weights in a way that neither the version
        counter nor the storage pointer shows, such as ``w.data.mul_(2)``; see
        Notes.
        """
        for state in self.state.values():
            state.pop("dual", None)
        self._written.clear()
        self._flat.clear()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by :meth:`state_dict`, keeping float32 duals.

        :class:`torch.optim.Optimizer` casts floating state to the parameter
        dtype; the dual points of float16/bfloat16 parameters are put back in
        float32 from ``state_dict``.
        """
        saved = {
            key: value["dual"]
            for key, value in state_dict["state"].items()
            if isinstance(value, dict) and isinstance(value.get("dual"), torch.Tensor)
        }
        super().load_state_dict(state_dict)
        saved_ids = (i for g in state_dict["param_groups"] for i in g["params"])
        params = (w for g in self.param_groups for w in g["params"])
        for key, w in zip(saved_ids, params, strict=True):
            dual = saved.get(key)
            if dual is not None and dual.dtype != w.dtype:
                self.state[w]["dual"] = dual.to(
                    device=w.device, dtype=_math_dtype(w.dtype), copy=True
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

        buckets = self._gather()
        for bucket in buckets:
            if bucket.foreach:
                bucket.flat_grad = _flatten(bucket.grads, bucket.grads[0].dtype)
        self._check_finite(buckets)

        for bucket in buckets:
            group = bucket.group
            potential = self._group_potential(group)
            hyper = {
                "potential": potential,
                "lr": group["lr"],
                "weight_decay": group["weight_decay"],
                "maximize": group["maximize"],
            }
            if bucket.foreach:
                flat_dual = None
                if group["dual_state"]:
                    flat_dual = self._flat_dual(bucket, potential)
                _flat_mirror_descent(
                    bucket.params, bucket.flat_grad, flat_dual, **hyper
                )
            else:
                duals = None
                if group["dual_state"]:
                    duals = self._duals(bucket.params, potential)
                _single_tensor_mirror_descent(
                    bucket.params, bucket.grads, duals, **hyper
                )
            if group["dual_state"]:
                self._mark_written(bucket.params)
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
    dual point :math:`u` is kept between steps (``dual_state=True``), so a
    step is one update of :math:`u` and one inverse map: about five
    elementwise passes (SGD makes one). The inverse map's power costs a
    square root and a few multiplications when :math:`1/(p-1)` is a multiple
    of 1/2 up to 32 (``p`` in {1.1, 1.5, 2, 3}, among others) and a general
    ``pow``, much slower on CPU, otherwise (e.g. ``p=10``).

    Parameters
    ----------
    params : iterable of Tensor or dict
        Tensors to optimise, or parameter groups. A group may override
        ``lr``, ``p``, ``weight_decay``, ``maximize``, ``check_finite``,
        ``foreach`` and ``dual_state``, so ``p`` can differ between groups:
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
    foreach : bool, optional
        Multi-tensor path (the default where supported) or the per-parameter
        loop; see :class:`MirrorDescent`.
    dual_state : bool, default=True
        Keep the dual point (one buffer per parameter) instead of
        recomputing it every step; see :class:`MirrorDescent`.

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

    With ``p=2`` the maps are the identity and a step is bit for bit
    :meth:`torch.optim.SGD.step` without momentum (tested, on both paths).
    Parameter groups hold ``p`` as a plain number, so :meth:`state_dict`
    loads with ``torch.load(weights_only=True)``. See :class:`MirrorDescent`
    for the dual state and what happens when something else changes the
    weights, the multi-tensor path, the non-finite gradient check,
    ``torch.compile`` and distributed training.

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
        foreach: bool | None = None,
        dual_state: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "p": p,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "check_finite": check_finite,
            "foreach": foreach,
            "dual_state": dual_state,
        }
        self._check_hyperparameters(defaults)
        self._reset_caches()
        # Skip MirrorDescent.__init__: PGD groups hold "p", not a potential.
        Optimizer.__init__(self, params, defaults)

    def _check_group_potential(self, group: dict[str, Any]) -> None:
        _check_exponent("p", group["p"])

    def _group_potential(self, group: dict[str, Any]) -> Potential:
        return PNormPower(group["p"])
