"""CRReLU (Correction Regularized ReLU) and helpers to put it into a model.

CRReLU is the activation that arXiv:2405.12954 derives from ReLU with its
entropy-based correction (EAFO, see :mod:`lemmata.nn._eafo`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from lemmata.nn._checks import check_finite

__all__ = [
    "ACTIVATIONS",
    "CRReLU",
    "activation_param_groups",
    "crrelu",
    "crrelu_epsilons",
    "make_activation",
    "swap_activations",
]

logger = logging.getLogger(__name__)


def crrelu(x: torch.Tensor, epsilon: float | torch.Tensor = 0.01) -> torch.Tensor:
    r"""Correction Regularized ReLU, applied elementwise.

    .. math::

        \operatorname{CRReLU}(x) = \max(0, x) + \varepsilon\, x\, e^{-x^2/2}

    :math:`x` is ``x`` and :math:`\varepsilon` is ``epsilon``. The derivative
    is :math:`\mathbb{1}[x > 0] + \varepsilon (1 - x^2) e^{-x^2/2}`, so the
    slope is :math:`1 + \varepsilon` just right of 0 and :math:`\varepsilon`
    just left of it.

    Parameters
    ----------
    x : Tensor
        Input of any shape, floating dtype.
    epsilon : float or Tensor, default=0.01
        Correction coefficient :math:`\varepsilon`; a float must be finite. A
        tensor is broadcast against ``x`` (a 0-d tensor is the paper's case).

    Returns
    -------
    Tensor
        Same shape and dtype as ``x``.

    Notes
    -----
    The Gaussian window is computed in the dtype of ``x``. In float16,
    :math:`x^2` overflows to ``inf`` for :math:`|x| > 256`; the window is then
    0 and the output is ``relu(x)``, which is the exact limit. An infinite
    input gives NaN (``inf * 0``), as ``torch.nn.functional.gelu`` does.

    References
    ----------
    .. [1] Sun, Wu, Xia et al. "A Method on Searching Better Activation
       Functions." arXiv:2405.12954 (ICLR 2025 as "Entropy-based Activation
       Function Optimization").
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype; got {x.dtype}")
    if not isinstance(epsilon, torch.Tensor):
        epsilon = check_finite("epsilon", epsilon)
    return torch.relu(x) + epsilon * x * torch.exp(-0.5 * x * x)


class CRReLU(nn.Module):
    r"""Correction Regularized ReLU with a learnable correction coefficient.

    .. math::

        \operatorname{CRReLU}(x) = \max(0, x) + \varepsilon\, x\, e^{-x^2/2}

    :math:`\varepsilon` is the parameter ``epsilon`` (one scalar per module),
    initialised to ``init``.

    Parameters
    ----------
    init : float, default=0.01
        Initial :math:`\varepsilon`; must be finite. 0.01 is the value of the
        authors' code.

    Attributes
    ----------
    epsilon : torch.nn.Parameter
        0-d learnable :math:`\varepsilon`.

    Notes
    -----
    Departures from and gaps in [1]:

    - The scalar :math:`\varepsilon` is as in the reference code; the
      parameter is named ``epsilon`` here.
    - Keep :math:`\varepsilon` out of weight decay (see
      :func:`activation_param_groups`); decay pulls the module back to ReLU.
      The paper does not say what it did.
    - For :math:`\varepsilon > 0` the function dips below 0 on
      :math:`x < 0`, down to :math:`-\varepsilon e^{-1/2}` at :math:`x = -1`,
      so it is not monotone there. :func:`crrelu_epsilons` warns when a
      trained :math:`|\varepsilon| > 1`, where the correction dominates.

    References
    ----------
    .. [1] Sun, Wu, Xia et al. "A Method on Searching Better Activation
       Functions." arXiv:2405.12954.

    Examples
    --------
    >>> import torch
    >>> act = CRReLU()
    >>> round(float(act(torch.tensor(1.0))), 6)
    1.006065
    """

    def __init__(self, init: float = 0.01) -> None:
        super().__init__()
        self.epsilon = nn.Parameter(torch.tensor(check_finite("init", init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crrelu(x, self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={float(self.epsilon.detach()):.4g}"


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "celu": nn.CELU,
    "crrelu": CRReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "mish": nn.Mish,
    "prelu": nn.PReLU,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}
"""Activation modules by name, for :func:`make_activation` and
:func:`swap_activations`."""


def _lookup(parameter: str, name) -> type[nn.Module]:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"{parameter} must be one of {sorted(ACTIVATIONS)}; got {name!r}"
        )
    return ACTIVATIONS[name]


def make_activation(name: str, **kwargs) -> nn.Module:
    """A fresh activation module of the registered ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`ACTIVATIONS` (``"relu"``, ``"gelu"``, ``"crrelu"``, ...).
    **kwargs
        Passed to the module's constructor (``init=0.01`` for CRReLU).
    """
    return _lookup("name", name)(**kwargs)


def swap_activations(
    model: nn.Module,
    source: str | Iterable[str] = "gelu",
    target: str = "crrelu",
    **target_kwargs,
) -> nn.Module:
    """Replace, in place, every activation module of kind ``source`` by ``target``.

    Each replaced module gets its own fresh ``target`` instance, so every
    CRReLU learns its own :math:`\\varepsilon`.

    Parameters
    ----------
    model : torch.nn.Module
        The model to edit (for instance a ViT whose MLPs use ``nn.GELU``).
    source : str or iterable of str, default="gelu"
        Names in :data:`ACTIVATIONS` of the modules to replace. A module is
        replaced when it is an instance of one of these classes.
    target : str, default="crrelu"
        Name in :data:`ACTIVATIONS` of the replacement.
    **target_kwargs
        Passed to the replacement's constructor.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Notes
    -----
    Only modules are swapped: an activation called as a function in
    ``forward`` (``F.gelu(x)``) is invisible here. A ``UserWarning`` is issued
    when nothing was replaced. New modules are moved to the device and
    floating dtype of the module they replace.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    names = [source] if isinstance(source, str) else list(source)
    classes = tuple(_lookup("source", name) for name in names)
    factory = _lookup("target", target)

    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, classes):
                continue
            new = factory(**target_kwargs)
            reference = next(child.parameters(), None)
            if reference is None:
                reference = next(parent.parameters(), None)
            if reference is not None:
                new = new.to(device=reference.device, dtype=reference.dtype)
            setattr(parent, child_name, new)
            replaced += 1

    if replaced == 0:
        warnings.warn(
            f"swap_activations found no module of kind {names} in the model; "
            "activations called as functions cannot be swapped",
            UserWarning,
            stacklevel=2,
        )
    logger.info("replaced %d activation modules %s by %s", replaced, names, target)
    return model


def activation_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: activation parameters without weight decay.

    The parameters of CRReLU and PReLU modules (their learned slopes and
    corrections) go into a group with ``weight_decay=0``; all other trainable
    parameters get ``weight_decay``.

    Parameters
    ----------
    model : torch.nn.Module
    weight_decay : float
        Decay of the main group; must be finite and >= 0.

    Returns
    -------
    list of dict
        ``[{"params": decayed, "weight_decay": weight_decay},
        {"params": activation_params, "weight_decay": 0.0}]``, ready for
        ``torch.optim.AdamW``.
    """
    weight_decay = check_finite("weight_decay", weight_decay)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}")
    special = {
        id(p)
        for module in model.modules()
        if isinstance(module, (CRReLU, nn.PReLU))
        for p in module.parameters(recurse=False)
    }
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {
            "params": [p for p in params if id(p) not in special],
            "weight_decay": weight_decay,
        },
        {"params": [p for p in params if id(p) in special], "weight_decay": 0.0},
    ]


def crrelu_epsilons(model: nn.Module) -> dict[str, float]:
    """The learned :math:`\\varepsilon` of every CRReLU in ``model``, by module name.

    Warns (``UserWarning``) when an :math:`\\varepsilon` is not finite, has
    :math:`|\\varepsilon| > 1` (the correction then dominates near 0, and for
    :math:`\\varepsilon < -1` the slope :math:`1 + \\varepsilon` just right of
    0 is negative) or is negative (outside the paper's derivation, which has
    :math:`\\varepsilon = C > 0`).
    """
    values = {
        name: float(module.epsilon.detach())
        for name, module in model.named_modules()
        if isinstance(module, CRReLU)
    }
    for name, value in values.items():
        if not math.isfinite(value) or abs(value) > 1:
            warnings.warn(
                f"CRReLU {name!r} has epsilon={value:.4g}; |epsilon| > 1 lets the "
                "correction dominate near 0",
                UserWarning,
                stacklevel=2,
            )
        elif value < 0:
            warnings.warn(
                f"CRReLU {name!r} has epsilon={value:.4g} < 0, outside the "
                "paper's derivation (epsilon = C > 0)",
                UserWarning,
                stacklevel=2,
            )
    return values
