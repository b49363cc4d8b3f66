r"""Mask-GRPO: GRPO for masked generative (MaskGIT-style) models.

The iterative unmasking of a masked generative model is a :math:`T`-step decision
process. At step :math:`t` the state :math:`s_t` is the partly masked token grid;
the model predicts every masked position in parallel, a value is sampled at each
one, the least confident samples are re-masked and the rest are kept. The action
:math:`a_t` is the set of kept values. Mask-GRPO [1]_ trains this process with
group-relative advantages, replacing the autoregressive likelihood of all masked
positions by a transition probability of what the step actually did.

Any model that maps ``(tokens, mask)`` (or ``(tokens, mask, cond)``) to logits of
shape ``(batch, num_tokens, codebook_size)`` can be trained;
:class:`MaskGITTransformer` is a small bidirectional one for tests and the
``mask-grpo`` reproduction.

References
----------
.. [1] Luo, Hu, Fan, Sun, Chen, Xia, Zhang, Chang, Wang. "Reinforcement Learning
   Meets Masked Generative Models: Mask-GRPO for Text-to-Image Generation."
   NeurIPS 2025. arXiv:2510.13418.
.. [2] Chang, Zhang, Jiang, Liu, Freeman. "MaskGIT: Masked Generative Image
   Transformer." CVPR 2022. arXiv:2202.04200.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lemmata.posttrain.grpo import group_advantages, policy_loss

__all__ = [
    "TRANSITIONS",
    "MaskGITTransformer",
    "MaskGRPO",
    "MaskGRPOConfig",
    "MaskTrajectory",
    "group_filter",
    "mask_schedule",
    "maskgit_loss",
    "select_steps",
    "transition_logps",
    "unmask_rollout",
]

logger = logging.getLogger(__name__)

TRANSITIONS = ("unmask_remask", "unmask", "ar")
_KL_LOG_RATIO_CLIP = 20.0
_LOG_FLOOR = 1e-20


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value}")
    return int(value)


def _check_transition(transition: str) -> str:
    if transition not in TRANSITIONS:
        raise ValueError(
            f"transition must be one of {list(TRANSITIONS)}; got {transition!r}"
        )
    return transition


def mask_schedule(num_tokens: int, num_steps: int) -> list[int]:
    r"""Number of positions still masked after each unmasking step.

    .. math::

        n_t = \min\Big(\big\lfloor N\cos\big(\tfrac{\pi}{2}\tfrac{t+1}{T}\big)
        \big\rfloor,\; n_{t-1} - 1\Big),\qquad n_{-1} = N,\quad n_{T-1} = 0

    :math:`N` is ``num_tokens`` and :math:`T` is ``num_steps``. Each step unmasks
    at least one token, every later step keeps at least one to unmask
    (:math:`n_t \ge T-1-t`), and the last step unmasks all that remain.

    Parameters
    ----------
    num_tokens : int
        Grid size :math:`N`; must be >= ``num_steps``.
    num_steps : int
        Unmasking steps :math:`T`; must be >= 1.

    Returns
    -------
    list of int
        :math:`(n_0, \dots, n_{T-1})`, strictly decreasing, ending in 0.
    """
    num_steps = _check_int("num_steps", num_steps, 1)
    num_tokens = _check_int("num_tokens", num_tokens, 1)
    if num_steps > num_tokens:
        raise ValueError(
            f"num_steps must be <= num_tokens={num_tokens} (one token per step at "
            f"least); got {num_steps}"
        )
    counts, previous = [], num_tokens
    for t in range(num_steps):
        n = math.floor(num_tokens * math.cos(math.pi / 2 * (t + 1) / num_steps))
        n = max(min(n, previous - 1), num_steps - 1 - t)
        counts.append(n)
        previous = n
    return counts


@dataclass
class MaskTrajectory:
    """A batch of stored unmasking trajectories (no gradient attached).

    Attributes
    ----------
    tokens : Tensor of shape (T + 1, B, N), long
        Grid before each step and, last, the final sample; masked positions hold 0.
    masked : Tensor of shape (T + 1, B, N), bool
        Which positions are masked before each step (all False at the end).
    sampled : Tensor of shape (T, B, N), long
        The value drawn at every position masked before step t (the current
        token elsewhere), including the values that were then re-masked.
    thresholds : Tensor of shape (T, B)
        :math:`c_t`, the probability of the kept value whose perturbed
        confidence was lowest.
    cond : Tensor of shape (B,), optional
        Conditioning passed to the model (prompt or class ids).
    """

    tokens: torch.Tensor
    masked: torch.Tensor
    sampled: torch.Tensor
    thresholds: torch.Tensor
    cond: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return self.sampled.shape[0]

    @property
    def final(self) -> torch.Tensor:
        """The generated grids, shape (B, N)."""
        return self.tokens[-1]

    def unmasked(self, t: int) -> torch.Tensor:
        """:math:`U_t`: positions whose sampled value was kept at step ``t``."""
        return self.masked[t] & ~self.masked[t + 1]

    def remasked(self, t: int) -> torch.Tensor:
        """:math:`R_t`: positions sampled at step ``t`` and then masked again."""
        return self.masked[t + 1]

    def index(self, rows: torch.Tensor) -> MaskTrajectory:
        """The trajectories ``rows`` (a 1-D index) of the batch."""
        return MaskTrajectory(
            self.tokens[:, rows],
            self.masked[:, rows],
            self.sampled[:, rows],
            self.thresholds[:, rows],
            None if self.cond is None else self.cond[rows],
        )

    @staticmethod
    def cat(parts: Sequence[MaskTrajectory]) -> MaskTrajectory:
        """Concatenate trajectories along the batch axis."""
        cond = None if parts[0].cond is None else torch.cat([p.cond for p in parts])
        return MaskTrajectory(
            torch.cat([p.tokens for p in parts], 1),
            torch.cat([p.masked for p in parts], 1),
            torch.cat([p.sampled for p in parts], 1),
            torch.cat([p.thresholds for p in parts], 1),
            cond,
        )


def _logits(model, tokens, masked, cond, codebook_size) -> torch.Tensor:
    logits = model(tokens, masked) if cond is None else model(tokens, masked, cond)
    expected = (*tokens.shape, codebook_size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else logits
        raise ValueError(
            "model logits must have shape (batch, num_tokens, codebook_size) = "
            f"{expected} to match the token grid; got {got}"
        )
    return logits


def _gumbel(shape, generator) -> torch.Tensor:
    # u is kept inside (0, 1) so that -log(-log u) stays finite.
    u = torch.rand(shape, generator=generator).clamp(1e-10, 1 - 1e-7)
    return -torch.log(-torch.log(u))


@torch.no_grad()
def unmask_rollout(
    model: Callable[..., torch.Tensor],
    batch_size: int,
    *,
    num_tokens: int,
    codebook_size: int,
    num_steps: int,
    cond: torch.Tensor | None = None,
    choice_temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> MaskTrajectory:
    r"""Sample grids by iterative unmasking and store each step's transition.

    At step :math:`t` every masked position :math:`i` draws
    :math:`x_i \sim p_\theta(\cdot \mid i, s_t)`; its confidence is
    :math:`\log p_\theta(x_i\mid i, s_t) + \tau (1 - \tfrac{t+1}{T}) g_i` with
    Gumbel noise :math:`g_i`, and the :math:`n_t` (:func:`mask_schedule`) least
    confident draws are masked again.

    Parameters
    ----------
    model : callable
        ``model(tokens, mask)`` or, when ``cond`` is given,
        ``model(tokens, mask, cond)`` -> logits of shape
        ``(batch, num_tokens, codebook_size)``. ``tokens`` is a long tensor
        (masked positions hold 0), ``mask`` a bool tensor, True where masked.
    batch_size : int
        Number of grids :math:`B`.
    num_tokens : int
        Grid size :math:`N`.
    codebook_size : int
        Vocabulary size :math:`V` of the model's logits.
    num_steps : int
        Unmasking steps :math:`T`.
    cond : Tensor of shape (batch_size,), optional
        Conditioning (prompt or class ids) passed to ``model``.
    choice_temperature : float, default=1.0
        :math:`\tau`, the Gumbel scale of the confidences; must be >= 0. It is
        annealed linearly to 0 over the steps, as in Show-o.
    generator : torch.Generator, optional
        Source of the sampling and Gumbel noise.

    Returns
    -------
    MaskTrajectory
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    codebook_size = _check_int("codebook_size", codebook_size, 1)
    counts = mask_schedule(num_tokens, num_steps)
    if not choice_temperature >= 0:
        raise ValueError(f"choice_temperature must be >= 0; got {choice_temperature!r}")
    if cond is not None and cond.shape[0] != batch_size:
        raise ValueError(
            f"cond must have batch_size={batch_size} rows; got {tuple(cond.shape)}"
        )

    tokens = torch.zeros(batch_size, num_tokens, dtype=torch.long)
    masked = torch.ones(batch_size, num_tokens, dtype=torch.bool)
    all_tokens, all_masked, all_sampled, all_thresholds = [tokens], [masked], [], []
    for t, n_masked in enumerate(counts):
        logits = _logits(model, tokens, masked, cond, codebook_size)
        if not torch.isfinite(logits).all():
            raise FloatingPointError(f"model logits are not finite at step {t}")
        logp = torch.log_softmax(logits.float(), dim=-1)
        draws = torch.multinomial(
            logp.exp().reshape(-1, codebook_size), 1, generator=generator
        ).view(batch_size, num_tokens)
        sampled = torch.where(masked, draws, tokens)
        sampled_logp = logp.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)

        noise = choice_temperature * (1 - (t + 1) / num_steps)
        confidence = sampled_logp + noise * _gumbel(sampled_logp.shape, generator)
        confidence = confidence.masked_fill(~masked, math.inf)
        order = confidence.argsort(dim=-1)
        remask = torch.zeros_like(masked)
        remask.scatter_(1, order[:, :n_masked], True)
        lowest_kept = order[:, n_masked : n_masked + 1]
        threshold = sampled_logp.gather(1, lowest_kept).squeeze(1).exp()

        tokens = sampled.masked_fill(remask, 0)
        masked = remask
        all_tokens.append(tokens)
        all_masked.append(masked)
        all_sampled.append(sampled)
        all_thresholds.append(threshold)
    return MaskTrajectory(
        torch.stack(all_tokens),
        torch.stack(all_masked),
        torch.stack(all_sampled),
        torch.stack(all_thresholds),
        cond,
    )


def transition_logps(
    model: Callable[..., torch.Tensor],
    trajectory: MaskTrajectory,
    steps: Sequence[int] | None = None,
    *,
    codebook_size: int,
    transition: str = "unmask_remask",
    released_bool_threshold: bool = False,
    return_floor_hits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, int]:
    r"""Log transition probabilities :math:`\log\pi_\theta(a_t\mid s_t)` by replay.

    The stored states :math:`s_t` are fed to ``model`` again (teacher forcing, with
    gradient) and, with :math:`U_t` the kept positions, :math:`R_t` the re-masked
    ones, :math:`M_t = U_t \cup R_t` the positions masked before the step, and
    :math:`x_i` the value drawn at :math:`i`:

    - ``"unmask"`` (the paper's simpler candidate):
      :math:`\sum_{i\in U_t}\log p_\theta(x_i\mid s_t)`;
    - ``"unmask_remask"`` (the paper's default): the above plus
      :math:`\sum_{j\in R_t}\log\sum_{v:\,p_\theta(v\mid j,s_t)<c_t}
      p_\theta(v\mid j, s_t)`, the log-probability that position :math:`j`
      would not have been kept, with :math:`c_t` from ``trajectory.thresholds``;
    - ``"ar"`` (autoregressive-style baseline):
      :math:`\sum_{i\in M_t}\log p_\theta(x_i\mid s_t)`, the likelihood of every
      draw, kept or not.

    Parameters
    ----------
    model : callable
        As in :func:`unmask_rollout`.
    trajectory : MaskTrajectory
        Stored rollouts.
    steps : sequence of int, optional
        Steps to replay (:func:`select_steps`); all when omitted.
    codebook_size : int
        Vocabulary size of the logits.
    transition : {"unmask_remask", "unmask", "ar"}, default="unmask_remask"
        The candidate transition probability.
    released_bool_threshold : bool, default=False
        Store :math:`c_t` as a boolean first, as the released code's
        ``mask_by_random_topk`` does: any non-zero :math:`c_t` becomes 1, every
        :math:`p < 1`, the inner sum is 1 and ``"unmask_remask"`` collapses to
        ``"unmask"``. Off by default; for reproducing the released code only.
    return_floor_hits : bool, default=False
        Also return how many inner sums were clamped at 1e-20.

    Returns
    -------
    logps : Tensor of shape (B, len(steps))
    floor_hits : int
        Only when ``return_floor_hits``.

    Notes
    -----
    :math:`c_t` is a stored constant (no gradient flows through it), as in the
    released code. An empty inner sum (no value below :math:`c_t`) is clamped at
    1e-20 before the log, as the released ``sampling.log`` does.
    """
    _check_transition(transition)
    num_steps = trajectory.num_steps
    steps = list(range(num_steps)) if steps is None else [int(s) for s in steps]
    if not steps or min(steps) < 0 or max(steps) >= num_steps:
        raise ValueError(
            f"steps must be a non-empty subset of range({num_steps}); got {steps}"
        )
    if int(trajectory.sampled.max()) >= codebook_size:
        raise ValueError(
            f"token ids must be < codebook_size={codebook_size}; got "
            f"{int(trajectory.sampled.max())}"
        )
    idx = torch.tensor(steps)
    n_steps, batch, n_tok = len(steps), *trajectory.sampled.shape[1:]
    tokens = trajectory.tokens[idx].reshape(-1, n_tok)
    masked = trajectory.masked[idx].reshape(-1, n_tok)
    cond = None if trajectory.cond is None else trajectory.cond.repeat(n_steps)
    logits = _logits(model, tokens, masked, cond, codebook_size)
    logp = torch.log_softmax(logits, dim=-1).view(n_steps, batch, n_tok, -1)

    sampled = trajectory.sampled[idx]
    drawn = logp.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)  # (S, B, N)
    before, after = trajectory.masked[idx], trajectory.masked[idx + 1]
    kept = before & ~after
    floor_hits = 0
    if transition == "ar":
        out = (drawn * before).sum(-1)
    else:
        out = (drawn * kept).sum(-1)
    if transition == "unmask_remask":
        c = trajectory.thresholds[idx].to(logp.dtype)
        if released_bool_threshold:
            c = (c != 0).to(logp.dtype)
        probs = logp.exp()
        below = (probs < c[..., None, None]).to(probs.dtype)
        inner = (probs * below).sum(-1)
        floor_hits = int(((inner < _LOG_FLOOR) & after).sum())
        out = out + (inner.clamp(min=_LOG_FLOOR).log() * after).sum(-1)
    out = out.transpose(0, 1)
    return (out, floor_hits) if return_floor_hits else out


def select_steps(
    num_steps: int,
    strategy: str = "all",
    *,
    fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Unmasking steps to train on (the reduction strategy of Mask-GRPO).

    Parameters
    ----------
    num_steps : int
        :math:`T`.
    strategy : {"all", "first", "random"}, default="all"
        Every step; the first ``ceil(fraction * T)`` steps (the released code's
        comment: train on the first 25 of 50); or that many steps drawn at random.
    fraction : float, default=0.5
        Share of the steps kept by ``"first"`` and ``"random"``; in (0, 1].
    generator : torch.Generator, optional
        For ``"random"``.

    Returns
    -------
    list of int
        Sorted step indices.
    """
    num_steps = _check_int("num_steps", num_steps, 1)
    if strategy not in ("all", "first", "random"):
        raise ValueError(
            f"strategy must be one of ['all', 'first', 'random']; got {strategy!r}"
        )
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    if strategy == "all":
        return list(range(num_steps))
    k = max(1, math.ceil(fraction * num_steps))
    if strategy == "first":
        return list(range(k))
    return sorted(torch.randperm(num_steps, generator=generator)[:k].tolist())


def group_filter(
    rewards: torch.Tensor, group_size: int, min_std: float
) -> torch.Tensor:
    """Which groups to keep: those whose reward standard deviation is >= ``min_std``.

    Parameters
    ----------
    rewards : Tensor of shape (n_groups * group_size,)
    group_size : int
        Samples per prompt; must be >= 2.
    min_std : float
        Threshold on the unbiased within-group standard deviation; must be >= 0.

    Returns
    -------
    Tensor of shape (n_groups,), bool
    """
    group_size = _check_int("group_size", group_size, 2)
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} "
            f"entries; got shape {tuple(rewards.shape)}"
        )
    if not min_std >= 0:
        raise ValueError(f"min_std must be >= 0; got {min_std!r}")
    return rewards.view(-1, group_size).std(dim=1) >= min_std


@dataclass(frozen=True)
class MaskGRPOConfig:
    r"""Settings of :class:`MaskGRPO`.

    Attributes
    ----------
    num_tokens : int
        Grid size :math:`N`.
    codebook_size : int
        Vocabulary size :math:`V`.
    num_steps : int, default=8
        Unmasking steps :math:`T` (training and sampling).
    group_size : int, default=6
        Samples per prompt :math:`G`; must be >= 2.
    transition : {"unmask_remask", "unmask", "ar"}, default="unmask_remask"
        Candidate transition probability (:func:`transition_logps`).
    released_bool_threshold : bool, default=False
        Reproduce the released code's boolean :math:`c_t`.
    train_steps : {"all", "first", "random"}, default="all"
        Reduction strategy (:func:`select_steps`).
    train_fraction : float, default=0.5
        Share of steps kept by the reduction strategy.
    beta : float, default=0.0
        k3 KL coefficient against ``ref_model``; 0 removes the KL (the paper's
        choice).
    epsilon_low, epsilon_high : float, default=0.1, 0.2
        Ratio clip ``(1 - epsilon_low, 1 + epsilon_high)`` = the released (0.9, 1.2).
    filter_min_std : float or None, default=None
        Drop groups whose reward std is below this and refill by resampling;
        ``None`` disables filtering.
    max_refills : int, default=3
        Resampling rounds used to refill dropped groups.
    choice_temperature : float, default=1.0
        Gumbel scale of the confidences.
    adv_eps : float, default=1e-4
        Added to the group std of the advantages.
    max_grad_norm : float or None, default=1.0
        Gradient-norm clip before each optimiser step (TRL's default); ``None``
        disables it.
    """

    num_tokens: int
    codebook_size: int
    num_steps: int = 8
    group_size: int = 6
    transition: str = "unmask_remask"
    released_bool_threshold: bool = False
    train_steps: str = "all"
    train_fraction: float = 0.5
    beta: float = 0.0
    epsilon_low: float = 0.1
    epsilon_high: float = 0.2
    filter_min_std: float | None = None
    max_refills: int = 3
    choice_temperature: float = 1.0
    adv_eps: float = 1e-4
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        mask_schedule(self.num_tokens, self.num_steps)
        _check_int("codebook_size", self.codebook_size, 1)
        _check_int("group_size", self.group_size, 2)
        _check_transition(self.transition)
        select_steps(self.num_steps, self.train_steps, fraction=self.train_fraction)
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0; got {self.beta!r}")
        if not 0 <= self.epsilon_low < 1:
            raise ValueError(f"epsilon_low must be in [0, 1); got {self.epsilon_low!r}")
        if not self.epsilon_high > 0:
            raise ValueError(f"epsilon_high must be > 0; got {self.epsilon_high!r}")


class MaskGRPO:
    r"""On-policy Mask-GRPO updates of a masked generative model.

    Each :meth:`step` samples :math:`G` grids per prompt, scores them, forms
    group-relative advantages :math:`A_b = (r_b - \bar r_g)/(\sigma_g + \epsilon)`,
    replays the chosen steps :math:`\mathcal S` and minimises

    .. math::

        L = \frac{1}{B}\sum_b \frac{1}{|\mathcal S|}\sum_{t\in\mathcal S}
        \Big[-\min\big(\rho_{bt}A_b,\ \operatorname{clip}(\rho_{bt},
        1-\epsilon_l, 1+\epsilon_h)A_b\big) + \beta\,k_3(\pi_\theta, \pi_{ref})_{bt}
        \Big],\qquad \rho_{bt} = \frac{\pi_\theta(a_t\mid s_t)}
        {\operatorname{sg}[\pi_\theta(a_t\mid s_t)]}

    with :math:`\pi_\theta(a_t\mid s_t)` from :func:`transition_logps`,
    :math:`\epsilon_l, \epsilon_h, \beta` from ``config`` and :math:`\pi_{ref}`
    = ``ref_model``. The unmasking steps play the role of tokens in
    :func:`lemmata.posttrain.grpo.policy_loss` with ``loss_type="grpo"``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(tokens, mask, cond)`` to logits ``(B, N, V)``.
    optimizer : torch.optim.Optimizer
        Over ``model``'s parameters.
    reward_fn : callable
        ``reward_fn(grids, cond) -> Tensor (B,)``, finite rewards.
    config : MaskGRPOConfig
    ref_model : torch.nn.Module, optional
        Frozen reference for the KL; required when ``config.beta > 0``.

    Notes
    -----
    Departures from the released code [1]_: the per-sample min of the clipped
    objective replaces the min of batch means (identical when
    :math:`\rho = 1`, i.e. one on-policy update per rollout, as released); the
    loss is averaged over the trained steps instead of divided by :math:`T`
    (a constant factor :math:`|\mathcal S|/T`); the optional KL is taken against
    a frozen reference copy, whereas the released KL uses the detached current
    policy and is identically 0; :math:`c_t` is a float unless
    ``released_bool_threshold``. [reconstruction] Filtering (described in the
    paper, absent from the released training script) drops groups whose reward
    std is below ``filter_min_std`` and resamples their prompts up to
    ``max_refills`` times; groups still degenerate are left out of the update.

    References
    ----------
    .. [1] Luo et al. Mask-GRPO. arXiv:2510.13418.
    """

    def __init__(self, model, optimizer, reward_fn, config, ref_model=None) -> None:
        if not isinstance(config, MaskGRPOConfig):
            raise TypeError(
                f"config must be a MaskGRPOConfig; got {type(config).__name__}"
            )
        if config.beta > 0 and ref_model is None:
            raise ValueError(
                f"ref_model is required when beta > 0; got beta={config.beta}"
            )
        self.model, self.optimizer, self.reward_fn = model, optimizer, reward_fn
        self.config, self.ref_model = config, ref_model

    def _sample(self, cond, generator):
        cfg = self.config
        self.model.eval()
        traj = unmask_rollout(
            self.model,
            cond.shape[0],
            num_tokens=cfg.num_tokens,
            codebook_size=cfg.codebook_size,
            num_steps=cfg.num_steps,
            cond=cond,
            choice_temperature=cfg.choice_temperature,
            generator=generator,
        )
        rewards = torch.as_tensor(self.reward_fn(traj.final, cond), dtype=torch.float32)
        if rewards.shape != (cond.shape[0],) or not torch.isfinite(rewards).all():
            raise ValueError(
                f"reward_fn must return {cond.shape[0]} finite rewards; got "
                f"{rewards if rewards.numel() < 8 else tuple(rewards.shape)}"
            )
        return traj, rewards

    def _rollouts(self, prompts, generator):
        cfg, g = self.config, self.config.group_size
        traj, rewards = self._sample(prompts.repeat_interleave(g), generator)
        if cfg.filter_min_std is None:
            return traj, rewards, 0
        n_filtered = 0
        for _ in range(cfg.max_refills):
            keep = group_filter(rewards, g, cfg.filter_min_std)
            if keep.all():
                break
            n_filtered += int((~keep).sum())
            redo = torch.nonzero(~keep).flatten()
            rows = torch.arange(rewards.numel()).view(-1, g)
            new_traj, new_r = self._sample(
                prompts[redo].repeat_interleave(g), generator
            )
            keep_rows = rows[keep].flatten()
            traj = MaskTrajectory.cat([traj.index(keep_rows), new_traj])
            rewards = torch.cat([rewards[keep_rows], new_r])
            prompts = torch.cat([prompts[keep], prompts[redo]])
        keep = group_filter(rewards, g, cfg.filter_min_std)
        n_filtered += int((~keep).sum())
        keep_rows = torch.arange(rewards.numel()).view(-1, g)[keep].flatten()
        return traj.index(keep_rows), rewards[keep_rows], n_filtered

    def step(
        self, prompts: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """One rollout-and-update round on ``prompts`` (shape (P,), condition ids).

        Returns
        -------
        dict of str to float
            ``reward/mean``, ``reward/std``, ``loss``, ``groups/filtered``
            (groups dropped, counting every refill round), ``backward/samples``
            (sample-steps that entered the loss), ``logp/floor_hits`` and ``kl``.
        """
        cfg = self.config
        traj, rewards, n_filtered = self._rollouts(prompts, generator)
        stats = {
            "reward/mean": float(rewards.mean()) if rewards.numel() else math.nan,
            "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "groups/filtered": float(n_filtered),
            "backward/samples": 0.0,
            "loss": 0.0,
            "logp/floor_hits": 0.0,
            "kl": 0.0,
        }
        if rewards.numel() == 0:
            logger.info("every group was filtered out; no update this step")
            return stats
        advantages = group_advantages(rewards, cfg.group_size, eps=cfg.adv_eps)
        steps = select_steps(
            cfg.num_steps,
            cfg.train_steps,
            fraction=cfg.train_fraction,
            generator=generator,
        )

        self.model.train()
        logps, hits = transition_logps(
            self.model,
            traj,
            steps,
            codebook_size=cfg.codebook_size,
            transition=cfg.transition,
            released_bool_threshold=cfg.released_bool_threshold,
            return_floor_hits=True,
        )
        ref_logps = None
        if cfg.beta > 0:
            with torch.no_grad():
                ref_logps = transition_logps(
                    self.ref_model,
                    traj,
                    steps,
                    codebook_size=cfg.codebook_size,
                    transition=cfg.transition,
                    released_bool_threshold=cfg.released_bool_threshold,
                )
        if ref_logps is not None:
            # One action here is a whole unmasking step, so its log-ratio to the
            # reference sums over many positions (and log-floor terms) and can pass
            # exp's float32 range; clip it at +-_KL_LOG_RATIO_CLIP while keeping
            # the gradient path through logps (the k3 gradient stays bounded).
            delta = (ref_logps - logps.detach()).clamp(
                -_KL_LOG_RATIO_CLIP, _KL_LOG_RATIO_CLIP
            )
            ref_logps = logps.detach() + delta
        loss, loss_stats = policy_loss(
            logps,
            logps.detach(),
            advantages,
            epsilon_low=cfg.epsilon_low,
            epsilon_high=cfg.epsilon_high,
            loss_type="grpo",
            ref_logps=ref_logps,
            beta=cfg.beta,
            kl_bias_correction=False,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.optimizer.step()
        stats.update(
            {
                "loss": float(loss.detach()),
                "backward/samples": float(logps.numel()),
                "logp/floor_hits": float(hits),
                "kl": float(loss_stats.get("kl", 0.0)),
            }
        )
        return stats


class MaskGITTransformer(nn.Module):
    """A small bidirectional transformer over a token grid, MaskGIT style.

    Input: an optional class token followed by the :math:`N` grid tokens, where
    masked positions get a learned mask embedding. Output: logits over the
    ``codebook_size`` values for every grid position.

    Parameters
    ----------
    codebook_size : int
        Number of token values :math:`V`.
    num_tokens : int
        Grid size :math:`N`.
    num_classes : int, default=0
        Number of condition ids; 0 for an unconditional model.
    d_model : int, default=64
    num_layers : int, default=2
    num_heads : int, default=4
    dropout : float, default=0.0
        Keep 0 for GRPO: replay must reproduce the rollout's probabilities.
    """

    def __init__(
        self,
        codebook_size: int,
        num_tokens: int,
        num_classes: int = 0,
        *,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.codebook_size = _check_int("codebook_size", codebook_size, 1)
        self.num_tokens = _check_int("num_tokens", num_tokens, 1)
        self.num_classes = _check_int("num_classes", num_classes, 0)
        self.embed = nn.Embedding(codebook_size + 1, d_model)
        self.position = nn.Parameter(torch.randn(num_tokens + 1, d_model) * 0.02)
        self.class_embed = nn.Embedding(max(num_classes, 1), d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            4 * d_model,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, codebook_size)

    def forward(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of shape (B, N, codebook_size) for ``tokens`` (B, N)."""
        if tokens.shape[-1] != self.num_tokens:
            raise ValueError(
                f"tokens must have num_tokens={self.num_tokens} columns; got "
                f"{tuple(tokens.shape)}"
            )
        ids = tokens.masked_fill(mask, self.codebook_size)
        x = self.embed(ids) + self.position[1:]
        if cond is None:
            cls = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        else:
            cls = cond
        head = (self.class_embed(cls) + self.position[0]).unsqueeze(1)
        x = self.encoder(torch.cat([head, x], dim=1))
        return self.head(self.norm(x[:, 1:]))


def maskgit_loss(
    model: Callable[..., torch.Tensor],
    tokens: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    codebook_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""MaskGIT pre-training loss: cross-entropy on a cosine-scheduled random mask.

    For each grid, :math:`u \sim U(0, 1)`, :math:`\lceil N\cos(\pi u/2)\rceil`
    (at least one) random positions are masked, and the loss is the mean
    cross-entropy of the true values at the masked positions [2]_.

    Parameters
    ----------
    model : callable
        As in :func:`unmask_rollout`.
    tokens : Tensor of shape (B, N), long
        Training grids.
    cond : Tensor of shape (B,), optional
    codebook_size : int
    generator : torch.Generator, optional

    Returns
    -------
    Tensor
        Scalar loss.
    """
    batch, n_tok = tokens.shape
    ratio = torch.cos(math.pi / 2 * torch.rand(batch, generator=generator))
    n_mask = (ratio * n_tok).ceil().clamp(min=1).long()
    ranks = torch.rand(batch, n_tok, generator=generator).argsort(-1).argsort(-1)
    masked = ranks < n_mask[:, None]
    logits = _logits(model, tokens.masked_fill(masked, 0), masked, cond, codebook_size)
    return nn.functional.cross_entropy(logits[masked], tokens[masked])
