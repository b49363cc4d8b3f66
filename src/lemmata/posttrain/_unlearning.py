r"""Unlearning objectives as pure per-example functions over logits and labels.

Every function takes next-token logits of shape ``(B, T, V)`` and labels of shape
``(B, T)`` that are already aligned (``labels[b, t]`` is the token predicted by
``logits[b, t]``; use :func:`shift_for_causal_lm` on the output of a causal LM)
and returns one loss per example, shape ``(B,)``; the caller reduces. Positions
whose label is ``-100`` (prompt and padding) are masked before any gather.

The objectives: distribution preference optimisation (DiPO, arXiv 2510.04773),
gradient ascent, gradient difference, negative preference optimisation (NPO,
arXiv 2404.05868) and SimNPO (arXiv 2410.07163). :data:`OBJECTIVES` maps each
name to its forget loss and its published default hyper-parameters, and
:func:`get_objective` looks a name up.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX",
    "OBJECTIVES",
    "UnlearningObjective",
    "dipo_loss",
    "get_objective",
    "graddiff_loss",
    "gradient_ascent_loss",
    "npo_loss",
    "retain_nll",
    "sequence_logps",
    "shift_for_causal_lm",
    "simnpo_loss",
    "topk_mask",
]

IGNORE_INDEX = -100


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not value > 0 or math.isinf(value):  # also rejects NaN
        raise ValueError(f"{name} must be > 0 and finite; got {value!r}")
    return float(value)


def _check_nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{name} must be >= 0 and finite; got {value!r}")
    return float(value)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast to float32; float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_pair(logits: Any, labels: Any, name: str = "logits") -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(logits).__name__}")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor; got {type(labels).__name__}")
    if logits.ndim != 3:
        raise ValueError(
            f"{name} must have shape (batch, length, vocab); got {tuple(logits.shape)}"
        )
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:2])} to match {name}; "
            f"got {tuple(labels.shape)}"
        )


def _check_reference(logits: torch.Tensor, ref_logits: Any) -> None:
    if not isinstance(ref_logits, torch.Tensor):
        raise TypeError(
            f"ref_logits must be a torch.Tensor; got {type(ref_logits).__name__}"
        )
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"ref_logits must have shape {tuple(logits.shape)} to match logits; "
            f"got {tuple(ref_logits.shape)}"
        )


def shift_for_causal_lm(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Align a causal LM's logits with its labels (drop the last logit and the first
    label), as the model's own loss does internally.

    Parameters
    ----------
    logits : Tensor of shape (B, T, V)
    labels : Tensor of shape (B, T)
        Input ids with ``-100`` on positions that carry no loss.

    Returns
    -------
    logits : Tensor of shape (B, T - 1, V)
    labels : Tensor of shape (B, T - 1)
    """
    return logits[:, :-1, :], labels[:, 1:]


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Summed log-probability of the labelled tokens and their count, per example.

    .. math:: \log\pi(y\mid x) = \sum_t m_t \log\operatorname{softmax}(z_t)_{y_t}

    with :math:`z_t` = ``logits[:, t]``, :math:`y_t` = ``labels[:, t]`` and
    :math:`m_t = [y_t \ne -100]`. The log-softmax runs in float32 at least.

    Returns
    -------
    logps : Tensor of shape (B,)
    counts : Tensor of shape (B,)
        Number of labelled tokens :math:`|y|`.
    """
    _check_pair(logits, labels)
    mask = labels != IGNORE_INDEX
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    logp = torch.log_softmax(_at_least_fp32(logits), dim=-1)
    token_logps = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def retain_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Mean token negative log-likelihood :math:`-\log\pi(y\mid x)/|y|` per example.

    This is the retain term of GradDiff, NPO, SimNPO and DiPO, and the fine-tuning
    loss. An example without labelled tokens gets 0.
    """
    logps, counts = sequence_logps(logits, labels)
    return -logps / counts.clamp_min(1)


def gradient_ascent_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Gradient ascent on the forget set: :math:`L = \log\pi_\theta(y\mid x)/|y|`.

    Minimising it raises the mean token negative log-likelihood of the forget
    answer without bound.

    Parameters
    ----------
    logits : Tensor of shape (B, T, V)
        Policy logits on forget examples.
    labels : Tensor of shape (B, T)

    Returns
    -------
    Tensor of shape (B,)

    References
    ----------
    .. [1] Maini, Feng, Schwarzschild, Lipton, Kolter. "TOFU: A Task of Fictitious
       Unlearning for LLMs." 2024. arXiv:2401.06121.
    """
    return -retain_nll(logits, labels)


def graddiff_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    retain_logits: torch.Tensor,
    retain_labels: torch.Tensor,
    *,
    alpha: float = 1.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    r"""Gradient difference: ascend on forget, descend on retain.

    .. math::

        L = \gamma\,\log\pi_\theta(y_f\mid x_f)/|y_f|
            + \alpha\,\bigl(-\log\pi_\theta(y_r\mid x_r)/|y_r|\bigr)

    :math:`(x_f, y_f)` are ``logits``/``labels`` (forget), :math:`(x_r, y_r)` are
    ``retain_logits``/``retain_labels``, paired row by row; :math:`\gamma` is
    ``gamma`` and :math:`\alpha` is ``alpha``.

    Returns
    -------
    Tensor of shape (B,)

    References
    ----------
    .. [1] Liu, Mirzasoleiman, et al. "Continual learning and private unlearning."
       CoLLAs 2022. arXiv:2203.12817.
    """
    alpha = _check_nonnegative("alpha", alpha)
    gamma = _check_nonnegative("gamma", gamma)
    _check_pair(retain_logits, retain_labels, "retain_logits")
    if retain_logits.shape[0] != logits.shape[0]:
        raise ValueError(
            f"retain_logits must have batch size {logits.shape[0]} to match logits; "
            f"got {retain_logits.shape[0]}"
        )
    forget = gradient_ascent_loss(logits, labels)
    return gamma * forget + alpha * retain_nll(retain_logits, retain_labels)


def npo_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ref_logits: torch.Tensor,
    *,
    beta: float = 0.1,
) -> torch.Tensor:
    r"""Negative preference optimisation, forget term.

    .. math::

        L = -\frac{2}{\beta}\log\sigma\bigl(-\beta\,h\bigr),\qquad
        h = \log\pi_\theta(y\mid x) - \log\pi_{\mathrm{ref}}(y\mid x)

    :math:`\pi_\theta` is given by ``logits``, :math:`\pi_{\mathrm{ref}}` by
    ``ref_logits`` (same shape), :math:`y` by ``labels`` and :math:`\beta` by
    ``beta``. At :math:`\theta = \mathrm{ref}` the loss is
    :math:`(2/\beta)\log 2` and :math:`\partial L/\partial h = 2\sigma(\beta h)`.

    Returns
    -------
    Tensor of shape (B,)

    Notes
    -----
    The log-ratio is the sum over answer tokens (no length normalisation), as in
    the open-unlearning implementation. The retain term of the NPO recipe is
    :func:`retain_nll`, added by the caller.

    References
    ----------
    .. [1] Zhang, Lin, Bai, Mei. "Negative Preference Optimization: From
       Catastrophic Collapse to Effective Unlearning." 2024. arXiv:2404.05868.
    """
    beta = _check_positive("beta", beta)
    _check_pair(logits, labels)
    _check_reference(logits, ref_logits)
    logps, _ = sequence_logps(logits, labels)
    ref_logps, _ = sequence_logps(ref_logits.detach(), labels)
    h = logps - ref_logps
    return -(2.0 / beta) * F.logsigmoid(-beta * h)


def simnpo_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: float = 4.5,
    delta: float = 0.0,
) -> torch.Tensor:
    r"""SimNPO, forget term: NPO with a length-normalised, reference-free reward.

    .. math::

        L = -\frac{2}{\beta}\log\sigma\Bigl(-\frac{\beta}{|y|}\log\pi_\theta(y\mid x)
            - \beta\,\delta\Bigr)

    :math:`\beta` is ``beta``, :math:`\delta` is ``delta`` (reward margin).

    Returns
    -------
    Tensor of shape (B,)

    Notes
    -----
    The forget weight :math:`\gamma = 0.125` of the published recipe is applied by
    the caller (see :data:`OBJECTIVES`).

    References
    ----------
    .. [1] Fan, Liu, Lin, Jia, Zhang, Mei, Liu. "Simplicity Prevails: Rethinking
       Negative Preference Optimization for LLM Unlearning." 2024.
       arXiv:2410.07163.
    """
    beta = _check_positive("beta", beta)
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise TypeError(f"delta must be a real number; got {type(delta).__name__}")
    mean_logps = -retain_nll(logits, labels)
    return -(2.0 / beta) * F.logsigmoid(-beta * mean_logps - beta * float(delta))


def topk_mask(ref_logits: torch.Tensor, k: int) -> torch.Tensor:
    r"""One-hot indicator :math:`\mathbb 1[K_t]` of the ``k`` largest logits.

    Ties are broken towards the smaller token id (a stable descending sort), so
    the set is deterministic.

    Parameters
    ----------
    ref_logits : Tensor of shape (..., V)
    k : int
        Must satisfy ``1 <= k < V``.

    Returns
    -------
    Tensor of ref_logits' shape and dtype, entries in {0, 1}.
    """
    vocab = ref_logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int; got {type(k).__name__}")
    if not 1 <= k < vocab:
        raise ValueError(f"k must be >= 1 and < the vocabulary size {vocab}; got {k}")
    order = torch.sort(ref_logits, dim=-1, descending=True, stable=True).indices
    mask = torch.zeros_like(ref_logits)
    return mask.scatter_(-1, order[..., :k], 1.0)


def dipo_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ref_logits: torch.Tensor,
    *,
    beta: float = 0.1,
    lam: float = 5.0,
    k: int = 1,
    length_normalize: bool = False,
) -> torch.Tensor:
    r"""Distribution preference optimisation (DiPO), forget term [reconstruction].

    At each answer position :math:`t` let :math:`z_t` be the reference logits and
    :math:`K_t` the :math:`k` tokens with the largest :math:`z_t`. Two target
    distributions are built by shifting those logits by :math:`\lambda`:

    .. math::

        p^+_t = \operatorname{softmax}(z_t - \lambda\,\mathbb 1[K_t])
        \quad\text{(forgetting-promoting, preferred)},\qquad
        p^-_t = \operatorname{softmax}(z_t + \lambda\,\mathbb 1[K_t])

    and compared with a distribution-level token reward
    :math:`R(p;s_t) = \mathbb E_{a\sim p}[\log\pi_\theta(a\mid s_t)
    - \log\pi_{\mathrm{ref}}(a\mid s_t)]` in a Bradley-Terry loss:

    .. math::

        \Delta = \sum_t m_t\,\bigl[R(p^+_t; s_t) - R(p^-_t; s_t)\bigr],\qquad
        L = -\frac{2}{\beta}\log\sigma(\beta\,\Delta)

    :math:`\pi_\theta` comes from ``logits``, :math:`z_t` from ``ref_logits``,
    :math:`m_t = [y_t \ne -100]` from ``labels``, :math:`\beta` is ``beta``,
    :math:`\lambda` is ``lam`` and :math:`k` is ``k``. Since
    :math:`\mathbb E_p[\log\pi_\theta - \log\pi_{\mathrm{ref}}] =
    \mathrm{KL}(p\|\pi_{\mathrm{ref}}) - \mathrm{KL}(p\|\pi_\theta)`, :math:`\Delta`
    equals :math:`\sum_t[\mathrm{KL}(p^-_t\|\pi_\theta)
    - \mathrm{KL}(p^+_t\|\pi_\theta)]`
    up to a constant: the loss pulls the policy towards :math:`p^+` and away from
    :math:`p^-`. The gradient with respect to the policy logits at :math:`t` is
    :math:`-2\sigma(-\beta\Delta)\,(p^+_t - p^-_t)`, whose entries are negative on
    :math:`K_t` (a descent step lowers them) and positive elsewhere.

    Parameters
    ----------
    logits : Tensor of shape (B, T, V)
        Policy logits on forget examples.
    labels : Tensor of shape (B, T)
        Aligned labels; only their mask is used (the answer tokens themselves do
        not enter the loss, only the positions).
    ref_logits : Tensor of shape (B, T, V)
        Logits of the frozen reference (the model before unlearning).
    beta : float, default=0.1
        Inverse temperature :math:`\beta > 0`.
    lam : float, default=5.0
        Logit shift :math:`\lambda > 0`.
    k : int, default=1
        Size of :math:`K_t`; ``1 <= k < V``.
    length_normalize : bool, default=False
        Divide :math:`\Delta` by the number of answer tokens.

    Returns
    -------
    Tensor of shape (B,)

    Notes
    -----
    The DiPO paper's loss is not public in any source we could read; this is the
    reconstruction of ``shared/specs/distribution-preference-unlearning.md``, with
    these choices: :math:`K_t` is the top-k of the *reference* logits (ties to
    the smaller id); :math:`p^\pm` are built from the fixed reference logits, not
    from the moving policy; rewards are summed over answer tokens. One departure
    from the spec's sketch: the loss is scaled by :math:`2/\beta`, as NPO is, so
    that at :math:`\theta = \mathrm{ref}` the per-token gradient is
    :math:`p^+_t - p^-_t` and the same learning rates suit both; without it the
    DiPO gradient is :math:`\beta/2 = 0.05` times smaller. At
    :math:`\lambda \to 0` the loss tends to :math:`(2/\beta)\log 2` with zero
    gradient. :math:`\Delta` is formed from the difference
    :math:`p^+ - p^-` and log-probabilities, never from :math:`\log p^\pm`, so a
    near one-hot :math:`p^-` at large :math:`\lambda` gives no NaN.

    References
    ----------
    .. [1] Qin, Wu, He, Sun, Zhao, Liang, Chang, Zhang, Liu. "Distribution
       Preference Optimization: A Fine-grained Perspective for LLM Unlearning."
       2025. arXiv:2510.04773.
    .. [2] Zeng, Liu, Ma, Yang, Zhang, Wang. "Token-level Direct Preference
       Optimization." ICML 2024. arXiv:2404.11999.
    """
    beta = _check_positive("beta", beta)
    lam = _check_positive("lam", lam)
    _check_pair(logits, labels)
    _check_reference(logits, ref_logits)

    ref = _at_least_fp32(ref_logits.detach())
    top = topk_mask(ref, k)
    p_plus = torch.softmax(ref - lam * top, dim=-1)
    p_minus = torch.softmax(ref + lam * top, dim=-1)

    log_ratio = torch.log_softmax(_at_least_fp32(logits), -1) - torch.log_softmax(
        ref, -1
    )
    gap = ((p_plus - p_minus) * log_ratio).sum(-1)  # (B, T)

    mask = labels != IGNORE_INDEX
    delta = (gap * mask).sum(-1)
    if length_normalize:
        delta = delta / mask.sum(-1).clamp_min(1)
    return -(2.0 / beta) * F.logsigmoid(beta * delta)


@dataclass(frozen=True)
class UnlearningObjective:
    """One unlearning recipe: a forget loss, its defaults and the loss weights.

    The full per-example loss is
    ``forget_weight * forget_loss(...) + retain_weight * retain_nll(retain)``.

    Attributes
    ----------
    name : str
    forget_loss : callable
        ``forget_loss(logits, labels, [ref_logits,] **kwargs) -> (B,)``.
    needs_reference : bool
        Whether ``forget_loss`` takes ``ref_logits`` as its third argument.
    defaults : mapping
        Published default keyword arguments of ``forget_loss``.
    forget_weight, retain_weight : float
        :math:`\\gamma` and :math:`\\alpha` of the recipe.
    paper : str
        arXiv id.
    """

    name: str
    forget_loss: Callable[..., torch.Tensor]
    needs_reference: bool
    defaults: Mapping[str, Any] = field(default_factory=dict)
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    paper: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


# Defaults follow open-unlearning's configs/trainer/*.yaml (GA, GradDiff, NPO,
# SimNPO) and the reconstruction spec for DiPO.
OBJECTIVES: Mapping[str, UnlearningObjective] = MappingProxyType(
    {
        "ga": UnlearningObjective(
            "ga", gradient_ascent_loss, False, {}, 1.0, 0.0, "2401.06121"
        ),
        "graddiff": UnlearningObjective(
            "graddiff", gradient_ascent_loss, False, {}, 1.0, 1.0, "2203.12817"
        ),
        "npo": UnlearningObjective(
            "npo", npo_loss, True, {"beta": 0.1}, 1.0, 1.0, "2404.05868"
        ),
        "simnpo": UnlearningObjective(
            "simnpo",
            simnpo_loss,
            False,
            {"beta": 4.5, "delta": 0.0},
            0.125,
            1.0,
            "2410.07163",
        ),
        "dipo": UnlearningObjective(
            "dipo",
            dipo_loss,
            True,
            {"beta": 0.1, "lam": 5.0, "k": 1},
            1.0,
            1.0,
            "2510.04773",
        ),
    }
)


def get_objective(name: str) -> UnlearningObjective:
    """The registered objective called ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"objective must be a str; got {type(name).__name__}")
    key = name.lower()
    if key not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}; got {name!r}")
    return OBJECTIVES[key]
