r"""Critic-free reinforcement fine-tuning: the GRPO core as pure functions.

Group-relative advantages (per-group, batch or no standard deviation), Super-Linear
Advantage Shaping (SLAS), the clipped policy-ratio loss with the sequence- and
token-level reductions TRL's ``GRPOTrainer`` offers, and the k3 KL estimator.

Every function takes flat tensors and returns tensors, so the same code serves a
language model (one log-probability per token) and a diffusion or flow model (one
log-probability per sampling step). Rewards are laid out group after group: the
``group_size`` samples of prompt 0 first, then those of prompt 1, and so on, as TRL
lays them out.

References
----------
.. [1] Shao et al. "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
   Language Models." 2024. arXiv:2402.03300.
.. [2] Sun, Wang, Song et al. "Power Reinforcement Post-Training of Text-to-Image
   Models with Super-Linear Advantage Shaping." 2026. arXiv:2605.10937.
.. [3] Sun, Wu, Xia et al. "Reinforcement Fine-Tuning Powers Reasoning Capability of
   Multimodal Large Language Models." 2025. arXiv:2505.18536.
.. [4] Liu et al. "Understanding R1-Zero-Like Training: A Critical Perspective."
   2025. arXiv:2503.20783.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from typing import Any

import torch

__all__ = [
    "LOSS_TYPES",
    "SCALES",
    "group_advantages",
    "k3_kl",
    "policy_loss",
    "shape_advantages",
    "slas_advantages",
]

logger = logging.getLogger(__name__)

SCALES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _as_rewards(rewards: Any) -> torch.Tensor:
    if not isinstance(rewards, torch.Tensor):
        try:
            rewards = torch.as_tensor(rewards)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"rewards must be a 1-D tensor of numbers; got {type(rewards).__name__}"
            ) from err
    if rewards.ndim != 1:
        raise ValueError(
            f"rewards must be 1-D (n_groups * group_size,); got shape "
            f"{tuple(rewards.shape)}"
        )
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    return rewards


def _check_group_size(group_size: Any, n: int) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise TypeError(f"group_size must be an int; got {type(group_size).__name__}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2; got {group_size}")
    if n % group_size != 0:
        raise ValueError(
            f"len(rewards) must be divisible by group_size={group_size}; got {n}"
        )
    return int(group_size)


def _check_real(name: str, value: Any, *, low: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    ok = value > low if strict else value >= low
    if not ok:  # also rejects NaN
        raise ValueError(
            f"{name} must be {'>' if strict else '>='} {low}; got {value!r}"
        )
    return float(value)


def _nanstd(x: torch.Tensor, dim: int | None, ddof: int) -> torch.Tensor:
    """Standard deviation ignoring NaN entries; NaN where fewer than ddof+1 remain."""
    if dim is None:
        x, dim = x.reshape(-1), 0
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True)
    denom = (count - ddof).to(x.dtype)
    var = torch.where(denom > 0, sq / denom.clamp(min=1), torch.full_like(sq, math.nan))
    return var.sqrt().squeeze(dim)


def group_advantages(
    rewards: Any,
    group_size: int,
    *,
    scale: str = "group",
    eps: float = 1e-4,
    ddof: int = 1,
) -> torch.Tensor:
    r"""Group-relative advantages of GRPO and its no-std and batch-std variants.

    .. math::

        A_{gi} = \frac{r_{gi} - \bar r_g}{s + \varepsilon},\qquad
        \bar r_g = \frac{1}{G}\sum_{j=1}^{G} r_{gj}

    :math:`r_{gi}` is ``rewards[g * G + i]``, :math:`G` is ``group_size`` and
    :math:`\varepsilon` is ``eps``. The scale :math:`s` depends on ``scale``:
    ``"group"`` uses the standard deviation of group :math:`g` (GRPO [1]_),
    ``"batch"`` the standard deviation of all rewards in the batch, and
    ``"none"`` uses no division at all (Dr. GRPO [2]_; :math:`s + \varepsilon = 1`).

    Parameters
    ----------
    rewards : Tensor of shape (n_groups * group_size,)
        Scalar rewards, groups contiguous. NaN marks an unscorable sample.
    group_size : int
        Samples per prompt, :math:`G`; must be >= 2.
    scale : {"group", "batch", "none"}, default="group"
        Which standard deviation divides the centred reward.
    eps : float, default=1e-4
        :math:`\varepsilon`, added to the standard deviation; must be >= 0.
    ddof : {1, 0}, default=1
        Delta degrees of freedom of the standard deviation: 1 (Bessel) as in TRL,
        0 (population) as in Flow-GRPO's global std.

    Returns
    -------
    Tensor of shape (n_groups * group_size,)
        Advantages, same dtype as ``rewards``.

    Notes
    -----
    With the defaults this equals TRL 1.16's ``GRPOTrainer`` advantages for
    ``scale_rewards`` in {"group", "batch", "none"} and
    ``multi_objective_aggregation="sum_then_normalize"``. NaN rewards are left out of
    the means and standard deviations and get advantage 0, as in TRL; infinite
    rewards are treated the same way after a ``RuntimeWarning``. A group whose
    rewards are all equal gets advantage exactly 0 (not NaN), also when ``eps=0``.

    References
    ----------
    .. [1] Shao et al. DeepSeekMath. arXiv:2402.03300.
    .. [2] Liu et al. Understanding R1-Zero-Like Training. arXiv:2503.20783.
    """
    rewards = _as_rewards(rewards)
    group_size = _check_group_size(group_size, rewards.numel())
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}; got {scale!r}")
    eps = _check_real("eps", eps, low=0.0, strict=False)
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1; got {ddof!r}")

    if torch.isinf(rewards).any():
        warnings.warn(
            "rewards contain inf; those samples are treated as unscorable "
            "(advantage 0)",
            RuntimeWarning,
            stacklevel=2,
        )
        rewards = torch.where(torch.isinf(rewards), math.nan, rewards)

    grouped = rewards.view(-1, group_size)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    # The mean of equal floats can be off by one rounding step, which the division
    # by eps would blow up: zero groups whose (non-NaN) rewards are all equal.
    nan = torch.isnan(grouped)
    top = torch.where(nan, -math.inf, grouped).amax(dim=1, keepdim=True)
    bottom = torch.where(nan, math.inf, grouped).amin(dim=1, keepdim=True)
    centred = torch.where(top == bottom, torch.zeros_like(centred), centred).reshape(-1)
    if scale == "none":
        advantages = centred
    else:
        if scale == "group":
            std = _nanstd(grouped, dim=1, ddof=ddof).repeat_interleave(group_size)
        else:
            std = _nanstd(rewards, dim=None, ddof=ddof).expand_as(rewards)
        denom = std + eps
        safe = torch.where(denom > 0, denom, torch.ones_like(denom))
        advantages = torch.where(denom > 0, centred / safe, torch.zeros_like(centred))
    return torch.nan_to_num(advantages, nan=0.0)


def shape_advantages(
    advantages: torch.Tensor, *, gamma: float, clip: float | None = 5.0
) -> torch.Tensor:
    r"""The super-linear map of SLAS, :math:`\operatorname{sign}(z)|z|^{1+\gamma}`.

    Parameters
    ----------
    advantages : Tensor
        Normalised advantages :math:`z`, any shape.
    gamma : float
        Exponent offset :math:`\gamma`; must be >= 0 (0 leaves ``advantages``
        unchanged before clipping).
    clip : float or None, default=5.0
        Symmetric clip applied after shaping; must be > 0. ``None`` disables it.

    Returns
    -------
    Tensor
        The shaped advantages, same shape and dtype.
    """
    gamma = _check_real("gamma", gamma, low=0.0, strict=False)
    if clip is not None:
        clip = _check_real("clip", clip, low=0.0, strict=True)
    # sign(z) * |z|^p: a plain z ** p is NaN for negative z and non-integer p.
    shaped = advantages.sign() * advantages.abs().pow(1.0 + gamma)
    if clip is not None and math.isfinite(clip):
        shaped = shaped.clamp(-clip, clip)
    return shaped


def slas_advantages(
    rewards: Any,
    group_size: int,
    *,
    gamma: float,
    eps: float = 1e-4,
    clip: float | None = 5.0,
    ddof: int = 1,
) -> torch.Tensor:
    r"""Super-Linear Advantage Shaping (SLAS) of group-centred rewards.

    .. math::

        z_{gi} = \frac{r_{gi} - \bar r_g}{\operatorname{std}(r) + \varepsilon},
        \qquad
        \tilde A_{gi} = \operatorname{clip}\big(\operatorname{sign}(z_{gi})\,
        |z_{gi}|^{1+\gamma},\, -c,\, c\big)

    :math:`r_{gi}` is ``rewards[g * G + i]`` with :math:`G` = ``group_size``,
    :math:`\bar r_g` the mean of group :math:`g` (no per-group std),
    :math:`\operatorname{std}(r)` the standard deviation over the whole batch,
    :math:`\varepsilon` = ``eps``, :math:`\gamma` = ``gamma`` and :math:`c` = ``clip``.
    High-|advantage| samples are amplified and low ones suppressed [1]_.

    Parameters
    ----------
    rewards : Tensor of shape (n_groups * group_size,)
        Scalar rewards, groups contiguous; NaN marks an unscorable sample.
    group_size : int
        Samples per prompt; must be >= 2.
    gamma : float
        Super-linearity; must be >= 0. ``gamma=0`` gives batch-std normalisation
        (TRL ``scale_rewards="batch"``) clipped at ``clip``.
    eps : float, default=1e-4
        Added to the batch standard deviation; must be >= 0.
    clip : float or None, default=5.0
        Advantage clip after shaping (DanceGRPO's ``adv_clip_max``); ``None`` or
        ``inf`` disables it.
    ddof : {1, 0}, default=1
        1 for the Bessel-corrected std (TRL), 0 for the population std (Flow-GRPO).

    Returns
    -------
    Tensor of shape (n_groups * group_size,)

    Notes
    -----
    No SLAS code is public; the shaping formula comes from third-party summaries
    of [1]_. [reconstruction] choices: the centring is per prompt group; the batch
    std is taken of the raw rewards and divides *before* the power, so that the
    amplification threshold is one batch std and ``gamma=0`` reproduces TRL's batch
    scaling exactly; the clip is applied after shaping; the shaped advantages are not
    re-centred within a group. Because ``z`` is scale free, multiplying all rewards
    by a constant leaves the result unchanged (up to ``eps``). Negative ``gamma``
    (a sub-linear map) is rejected.

    References
    ----------
    .. [1] Sun, Wang, Song et al. "Power Reinforcement Post-Training of Text-to-Image
       Models with Super-Linear Advantage Shaping." 2026. arXiv:2605.10937.
    """
    gamma = _check_real("gamma", gamma, low=0.0, strict=False)
    if clip is not None:
        clip = _check_real("clip", clip, low=0.0, strict=True)
    z = group_advantages(rewards, group_size, scale="batch", eps=eps, ddof=ddof)
    return shape_advantages(z, gamma=gamma, clip=clip)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    r"""Per-element k3 estimator of :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})`.

    .. math::

        k_3 = e^{\log\pi_{ref} - \log\pi_\theta} - (\log\pi_{ref} - \log\pi_\theta) - 1

    :math:`\log\pi_\theta` is ``logps`` and :math:`\log\pi_{ref}` is ``ref_logps``.
    It is non-negative and unbiased for the KL when the samples come from
    :math:`\pi_\theta`.

    Parameters
    ----------
    logps, ref_logps : Tensor
        Log-probabilities of the sampled tokens (or steps), same shape.

    Returns
    -------
    Tensor
        Same shape as the inputs.
    """
    if logps.shape != ref_logps.shape:
        raise ValueError(
            f"ref_logps must have the shape of logps {tuple(logps.shape)}; got "
            f"{tuple(ref_logps.shape)}"
        )
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1.0


def _check_loss_inputs(logps, old_logps, advantages, mask, ref_logps):
    for name, t in (("logps", logps), ("old_logps", old_logps)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if logps.ndim != 2:
        raise ValueError(f"logps must be 2-D (batch, seq); got {tuple(logps.shape)}")
    if old_logps.shape != logps.shape:
        raise ValueError(
            f"old_logps must have the shape of logps {tuple(logps.shape)}; got "
            f"{tuple(old_logps.shape)}"
        )
    advantages = torch.as_tensor(advantages, dtype=logps.dtype, device=logps.device)
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(1)
    if advantages.shape not in (logps.shape, (logps.shape[0], 1)):
        raise ValueError(
            f"advantages must have shape ({logps.shape[0]},) or {tuple(logps.shape)} "
            f"to match logps; got {tuple(advantages.shape)}"
        )
    if mask is None:
        mask = torch.ones_like(logps)
    elif mask.shape != logps.shape:
        raise ValueError(
            f"mask must have the shape of logps {tuple(logps.shape)}; got "
            f"{tuple(mask.shape)}"
        )
    if ref_logps is not None and ref_logps.shape != logps.shape:
        raise ValueError(
            f"ref_logps must have the shape of logps {tuple(logps.shape)}; got "
            f"{tuple(ref_logps.shape)}"
        )
    return advantages, mask.to(logps.dtype)


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    importance_sampling_level: str = "token",
    kl_bias_correction: bool = True,
    max_completion_length: int | None = None,
    num_items_in_batch: float | None = None,
    delta: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Clipped policy-ratio loss of GRPO with a choice of reductions.

    Per token (or sampling step) :math:`t` of sample :math:`i`:

    .. math::

        \rho_{it} = e^{\log\pi_\theta - \log\pi_{old}},\qquad
        \ell_{it} = -\min\big(\rho_{it} A_i,\;
        \operatorname{clip}(\rho_{it}, 1-\epsilon_l, 1+\epsilon_h) A_i\big)
        + \beta\, k_3(\log\pi_\theta, \log\pi_{ref})_{it}\,[\rho_{it}]

    :math:`\log\pi_\theta` is ``logps``, :math:`\log\pi_{old}` is ``old_logps``,
    :math:`A_i` is ``advantages`` (per sample, or per token when 2-D),
    :math:`\epsilon_l, \epsilon_h` are ``epsilon_low`` and ``epsilon_high``,
    :math:`\beta` is ``beta`` and :math:`\log\pi_{ref}` is ``ref_logps``; the factor
    :math:`[\rho_{it}]` multiplies the KL only when ``kl_bias_correction``. With
    mask :math:`m_{it}` and :math:`|o_i| = \sum_t m_{it}` the reductions are

    - ``"grpo"``: :math:`\frac1B\sum_i \frac{1}{|o_i|}\sum_t m_{it}\ell_{it}` [1]_;
    - ``"bnpo"``: :math:`\sum_{it} m_{it}\ell_{it} / \sum_{it} m_{it}`;
    - ``"dr_grpo"``: :math:`\sum_{it} m_{it}\ell_{it} / (B\,L)`, :math:`L` =
      ``max_completion_length`` [2]_;
    - ``"dapo"``: :math:`\sum_{it} m_{it}\ell_{it} / N`, :math:`N` =
      ``num_items_in_batch``, the number of active tokens of the whole generation
      batch (the local mask's total when omitted) [3]_.

    Parameters
    ----------
    logps : Tensor of shape (batch, seq)
        Log-probabilities of the sampled tokens under the policy being trained.
    old_logps : Tensor of shape (batch, seq)
        The same under the policy that sampled them (no gradient flows).
    advantages : Tensor of shape (batch,) or (batch, seq)
    mask : Tensor of shape (batch, seq), optional
        1 for tokens that count, 0 for padding; all ones when omitted.
    epsilon_low : float, default=0.2
        Lower clip :math:`\epsilon_l`; must be >= 0.
    epsilon_high : float, optional
        Upper clip :math:`\epsilon_h`; ``epsilon_low`` when omitted.
    loss_type : {"grpo", "bnpo", "dr_grpo", "dapo"}, default="grpo"
        The reduction (above); the names are TRL's.
    ref_logps : Tensor of shape (batch, seq), optional
        Reference-policy log-probabilities; required when ``beta != 0``.
    beta : float, default=0.0
        KL coefficient :math:`\beta`; must be >= 0.
    importance_sampling_level : {"token", "sequence"}, default="token"
        ``"sequence"`` replaces :math:`\log\rho_{it}` by its masked mean over
        :math:`t` (GSPO, arXiv:2507.18071).
    kl_bias_correction : bool, default=True
        Multiply the per-token KL by the ratio, as TRL's
        ``use_bias_correction_kl``.
    max_completion_length : int, optional
        :math:`L` of ``"dr_grpo"``; ``seq`` when omitted.
    num_items_in_batch : float, optional
        :math:`N` of ``"dapo"``.
    delta : float, optional
        Upper cap on the unclipped ratio :math:`\rho` (TRL's ``delta``).

    Returns
    -------
    loss : Tensor
        Scalar.
    stats : dict of str to Tensor
        Detached scalars: ``clip_ratio/low_mean``, ``clip_ratio/high_mean``,
        ``clip_ratio/region_mean`` (fractions of active tokens whose ratio was
        clipped), ``ratio/mean``, and ``kl`` (masked mean k3) when ``beta != 0``.

    Notes
    -----
    With one generation batch per optimiser step (no gradient accumulation) each
    reduction equals TRL 1.16's ``GRPOTrainer._compute_loss`` for the same
    ``loss_type``; TRL additionally divides ``grpo``, ``bnpo`` and ``dr_grpo`` by the
    gradient-accumulation steps, which a caller that accumulates does itself. The
    default ``loss_type`` is ``"grpo"`` (the DeepSeekMath form); TRL's default is
    ``"dapo"``.

    References
    ----------
    .. [1] Shao et al. DeepSeekMath. arXiv:2402.03300.
    .. [2] Liu et al. Understanding R1-Zero-Like Training. arXiv:2503.20783.
    .. [3] Yu et al. "DAPO: An Open-Source LLM Reinforcement Learning System at
       Scale." 2025. arXiv:2503.14476.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(
            f"loss_type must be one of {list(LOSS_TYPES)}; got {loss_type!r}"
        )
    if importance_sampling_level not in ("token", "sequence"):
        raise ValueError(
            "importance_sampling_level must be 'token' or 'sequence'; got "
            f"{importance_sampling_level!r}"
        )
    epsilon_low = _check_real("epsilon_low", epsilon_low, low=0.0, strict=False)
    epsilon_high = (
        epsilon_low
        if epsilon_high is None
        else _check_real("epsilon_high", epsilon_high, low=0.0, strict=False)
    )
    beta = _check_real("beta", beta, low=0.0, strict=False)
    if beta != 0.0 and ref_logps is None:
        raise ValueError("ref_logps is required when beta != 0; got None")
    advantages, mask = _check_loss_inputs(logps, old_logps, advantages, mask, ref_logps)

    log_ratio = logps - old_logps.detach()
    if importance_sampling_level == "sequence":
        log_ratio = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        log_ratio = log_ratio.unsqueeze(-1)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    capped = ratio if delta is None else torch.clamp(ratio, max=delta)
    per_token = -torch.min(capped * advantages, clipped * advantages)

    stats: dict[str, torch.Tensor] = {}
    if beta != 0.0:
        kl = k3_kl(logps, ref_logps)
        if kl_bias_correction:
            kl = kl * ratio
        per_token = per_token + beta * kl
        stats["kl"] = _masked_mean(kl.detach(), mask)
    per_token = per_token.expand_as(mask)

    loss = _reduce(
        per_token * mask, mask, loss_type, max_completion_length, num_items_in_batch
    )

    with torch.no_grad():
        r = ratio.expand_as(mask)
        adv = advantages.expand_as(mask)
        low = ((r < 1 - epsilon_low) & (adv < 0)).to(mask.dtype)
        high = ((r > 1 + epsilon_high) & (adv > 0)).to(mask.dtype)
        stats["clip_ratio/low_mean"] = _masked_mean(low, mask)
        stats["clip_ratio/high_mean"] = _masked_mean(high, mask)
        stats["clip_ratio/region_mean"] = _masked_mean(low + high, mask)
        stats["ratio/mean"] = _masked_mean(r, mask)
    return loss, stats


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x.expand_as(mask) * mask).sum() / mask.sum().clamp(min=1.0)


def _reduce(masked, mask, loss_type, max_completion_length, num_items_in_batch):
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = (
            mask.shape[1] if max_completion_length is None else max_completion_length
        )
        length = _check_real("max_completion_length", length, low=0.0, strict=True)
        return masked.sum() / (mask.shape[0] * length)
    n = (
        mask.sum()
        if num_items_in_batch is None
        else torch.as_tensor(num_items_in_batch)
    )
    return masked.sum() / n.to(masked.dtype).clamp(min=1.0)
