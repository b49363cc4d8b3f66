r"""GRPO for continuous generative models: a rectified-flow model, a stochastic
sampler with per-step log-probabilities, and a trainer taking any advantage function.

The sampler follows DanceGRPO and Flow-GRPO: the deterministic flow ODE is replaced
by a reverse-time SDE with the same marginals, so each sampling step is a Gaussian
transition whose log-density is known. A trajectory's steps play the role of a
completion's tokens in :func:`lemmata.posttrain.grpo.policy_loss`.

Time runs from noise (:math:`\sigma = 1`) to data (:math:`\sigma = 0`):
:math:`x_\sigma = (1-\sigma)\,x_0 + \sigma\,\epsilon`, and the network predicts the
velocity :math:`v = \epsilon - x_0`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lemmata.posttrain.grpo import _check_real, group_advantages, policy_loss

__all__ = [
    "ConditionalVelocityMLP",
    "FlowGRPOTrainer",
    "flow_matching_loss",
    "flow_sigmas",
    "sample_with_logprobs",
    "sde_step",
    "trajectory_log_probs",
]

logger = logging.getLogger(__name__)


class ConditionalVelocityMLP(nn.Module):
    r"""Velocity field :math:`v_\theta(x, \sigma, c)` of a prompt-conditioned flow.

    An MLP with SiLU activations over the concatenation of :math:`x`, Fourier
    features of :math:`\sigma` and a learned embedding of the prompt index :math:`c`.

    Parameters
    ----------
    dim : int, default=2
        Dimension of :math:`x`.
    n_prompts : int, default=6
        Number of prompts (rows of the embedding table).
    width : int, default=128
        Hidden width.
    depth : int, default=3
        Number of hidden layers; must be >= 1.
    embed_dim : int, default=16
        Size of the prompt embedding.
    n_frequencies : int, default=4
        Fourier frequencies of the time features.
    """

    def __init__(
        self,
        dim: int = 2,
        n_prompts: int = 6,
        width: int = 128,
        depth: int = 3,
        embed_dim: int = 16,
        n_frequencies: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("n_prompts", n_prompts),
            ("width", width),
            ("depth", depth),
            ("embed_dim", embed_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        self.dim = dim
        self.n_prompts = n_prompts
        self.register_buffer(
            "frequencies", math.pi * torch.arange(1, n_frequencies + 1).float()
        )
        self.embed = nn.Embedding(n_prompts, embed_dim)
        layers: list[nn.Module] = []
        fan_in = dim + 1 + 2 * n_frequencies + embed_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.SiLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, dim))
        self.net = nn.Sequential(*layers)

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, prompts: torch.Tensor
    ) -> torch.Tensor:
        """Velocity at ``x`` (batch, dim), time ``sigma`` (batch,) or scalar."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma = sigma.expand(x.shape[0]).unsqueeze(-1)
        angles = sigma * self.frequencies
        features = [x, sigma, angles.sin(), angles.cos(), self.embed(prompts)]
        return self.net(torch.cat(features, dim=-1))


def flow_matching_loss(
    model: nn.Module,
    x0: torch.Tensor,
    prompts: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Rectified-flow (conditional flow-matching) loss.

    .. math::

        \mathcal L = \mathbb E_{\sigma\sim U(0,1),\,\epsilon\sim N(0, I)}
        \big\|v_\theta\big((1-\sigma)x_0 + \sigma\epsilon, \sigma, c\big)
        - (\epsilon - x_0)\big\|^2

    :math:`x_0` is ``x0`` (batch, dim), :math:`c` is ``prompts`` (batch,) and
    :math:`v_\theta` is ``model``. Returns the batch mean (over dims too).
    """
    sigma = torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    x = (1 - sigma[:, None]) * x0 + sigma[:, None] * noise
    return (model(x, sigma, prompts) - (noise - x0)).pow(2).mean()


def flow_sigmas(n_steps: int, *, shift: float = 1.0) -> torch.Tensor:
    r"""Sampling times :math:`\sigma_0 = 1 > \dots > \sigma_K = 0`.

    Uniform in :math:`[0, 1]`, then warped by
    :math:`\sigma \mapsto s\sigma / (1 + (s-1)\sigma)` with :math:`s` = ``shift``
    (1 leaves the grid uniform; SD3 and FLUX use 3).
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1; got {n_steps!r}")
    shift = _check_real("shift", shift, low=0.0, strict=True)
    sigmas = torch.linspace(1.0, 0.0, n_steps + 1)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sde_step(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    prompts: torch.Tensor,
    *,
    noise_level: float,
    x_next: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One reverse-SDE step and the log-density of the transition.

    .. math::

        \mu = x + \Delta\sigma\,\Big(v_\theta - \frac{\eta^2}{2}\,s_\theta\Big),
        \qquad s_\theta = -\frac{x + (1-\sigma)\,v_\theta}{\sigma},
        \qquad x' \sim N\big(\mu,\ \eta^2 |\Delta\sigma|\, I\big)

    :math:`\Delta\sigma = \sigma' - \sigma < 0` with :math:`\sigma` = ``sigma`` and
    :math:`\sigma'` = ``sigma_next``; :math:`\eta` is ``noise_level``;
    :math:`s_\theta` is the score implied by the velocity (the predicted noise over
    :math:`-\sigma`). The log-density of :math:`x'` is averaged over dimensions.

    Parameters
    ----------
    model : nn.Module
        Velocity network ``model(x, sigma, prompts)``.
    x : Tensor of shape (batch, dim)
    sigma, sigma_next : float
        Current and next time, ``1 >= sigma > sigma_next >= 0``.
    prompts : Tensor of shape (batch,)
    noise_level : float
        :math:`\eta`; must be > 0.
    x_next : Tensor of shape (batch, dim), optional
        A recorded next state to score; drawn from the transition when omitted.
    generator : torch.Generator, optional
        Source of the step noise.

    Returns
    -------
    x_next : Tensor of shape (batch, dim)
        Detached.
    log_prob : Tensor of shape (batch,)
        Differentiable with respect to the model parameters.
    """
    noise_level = _check_real("noise_level", noise_level, low=0.0, strict=True)
    if not 1.0 >= sigma > sigma_next >= 0.0:
        raise ValueError(
            f"need 1 >= sigma > sigma_next >= 0; got sigma={sigma}, "
            f"sigma_next={sigma_next}"
        )
    v = model(x, torch.tensor(sigma, dtype=x.dtype), prompts)
    dsigma = sigma_next - sigma
    score = -(x + (1 - sigma) * v) / sigma
    mean = x + dsigma * (v - 0.5 * noise_level**2 * score)
    std = noise_level * math.sqrt(-dsigma)
    if x_next is None:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x_next = (mean + std * noise).detach()
    log_prob = (
        -((x_next.detach() - mean) ** 2) / (2 * std**2)
        - math.log(std)
        - 0.5 * math.log(2 * math.pi)
    )
    return x_next, log_prob.mean(dim=-1)


def sample_with_logprobs(
    model: nn.Module,
    prompts: torch.Tensor,
    *,
    n_steps: int = 10,
    noise_level: float = 0.3,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample trajectories with :func:`sde_step` from Gaussian noise.

    Parameters
    ----------
    model : nn.Module
        Velocity network with a ``dim`` attribute.
    prompts : Tensor of shape (batch,)
    n_steps, noise_level, shift
        See :func:`flow_sigmas` and :func:`sde_step`.
    generator : torch.Generator, optional

    Returns
    -------
    states : Tensor of shape (n_steps + 1, batch, dim)
        ``states[0]`` is the noise, ``states[-1]`` the sample.
    log_probs : Tensor of shape (batch, n_steps)
        Log-density of each transition, computed without gradient.
    """
    sigmas = flow_sigmas(n_steps, shift=shift).tolist()
    x = torch.randn((prompts.shape[0], model.dim), generator=generator)
    states, logps = [x], []
    with torch.no_grad():
        for k in range(n_steps):
            x, lp = sde_step(
                model,
                x,
                sigmas[k],
                sigmas[k + 1],
                prompts,
                noise_level=noise_level,
                generator=generator,
            )
            states.append(x)
            logps.append(lp)
    return torch.stack(states), torch.stack(logps, dim=1)


def trajectory_log_probs(
    model: nn.Module,
    states: torch.Tensor,
    prompts: torch.Tensor,
    *,
    steps: torch.Tensor | None = None,
    noise_level: float = 0.3,
    shift: float = 1.0,
) -> torch.Tensor:
    """Log-densities of recorded transitions under ``model``, with gradient.

    Parameters
    ----------
    states : Tensor of shape (n_steps + 1, batch, dim)
        From :func:`sample_with_logprobs`.
    prompts : Tensor of shape (batch,)
    steps : Tensor of int, optional
        Indices of the steps to score; all when omitted.
    noise_level, shift
        As used when sampling.

    Returns
    -------
    Tensor of shape (batch, len(steps))
    """
    n_steps = states.shape[0] - 1
    sigmas = flow_sigmas(n_steps, shift=shift).tolist()
    steps = torch.arange(n_steps) if steps is None else steps
    # All chosen steps go through the network as one batch.
    k = steps.tolist()
    x = states[k].reshape(-1, states.shape[-1])
    x_next = states[[i + 1 for i in k]].reshape(-1, states.shape[-1])
    sigma = torch.tensor([sigmas[i] for i in k]).repeat_interleave(states.shape[1])
    sigma_next = torch.tensor([sigmas[i + 1] for i in k])
    sigma_next = sigma_next.repeat_interleave(states.shape[1])
    v = model(x, sigma, prompts.repeat(len(k)))

    dsigma = (sigma_next - sigma)[:, None]
    score = -(x + (1 - sigma[:, None]) * v) / sigma[:, None]
    mean = x + dsigma * (v - 0.5 * noise_level**2 * score)
    std = noise_level * (-dsigma).sqrt()
    log_prob = (
        -((x_next - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
    )
    return log_prob.mean(dim=-1).view(len(k), -1).T


AdvantageFn = Callable[[torch.Tensor, int], torch.Tensor]
RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FlowGRPOTrainer:
    r"""GRPO for a flow model sampled with a stochastic sampler.

    Each :meth:`step` draws ``group_size`` trajectories per prompt with
    :func:`sample_with_logprobs`, scores the final states with ``reward_fn``, turns
    the rewards into advantages with ``advantage_fn``, and takes ``inner_epochs``
    optimiser steps on

    .. math::

        \mathcal L(\theta) = \frac{1}{B}\sum_{i=1}^{B}\frac{1}{|K|}\sum_{k\in K}
        -\min\big(\rho_{ik}A_i,\ \operatorname{clip}(\rho_{ik}, 1-\epsilon,
        1+\epsilon)A_i\big) + \beta\,k_3,\qquad
        \rho_{ik} = \frac{p_\theta(x_{k+1}^i\mid x_k^i)}{p_{old}(x_{k+1}^i\mid x_k^i)}

    :math:`A_i` is ``advantage_fn(rewards, group_size)[i]``, :math:`K` the trained
    steps (a random ``timestep_fraction`` of them), :math:`\epsilon` is
    ``clip_range`` and :math:`\beta` is ``beta`` (the k3 KL of the step log-densities
    to ``ref_model``). This is :func:`lemmata.posttrain.grpo.policy_loss` with
    ``loss_type="grpo"`` over sampling steps instead of tokens.

    Parameters
    ----------
    model : nn.Module
        Velocity network ``model(x, sigma, prompts)`` with a ``dim`` attribute.
    reward_fn : callable
        ``reward_fn(samples, prompts) -> Tensor of shape (batch,)``.
    advantage_fn : callable, default=group_advantages
        ``advantage_fn(rewards, group_size) -> Tensor of shape (batch,)``, e.g.
        ``functools.partial(slas_advantages, gamma=1.0)``.
    group_size : int, default=8
        Samples per prompt; must be >= 2.
    n_steps : int, default=10
        Sampling steps.
    noise_level : float, default=0.3
        SDE noise :math:`\eta`; must be > 0.
    shift : float, default=1.0
        Time-grid shift (:func:`flow_sigmas`).
    clip_range : float, default=1e-4
        :math:`\epsilon` (DanceGRPO's value).
    timestep_fraction : float, default=1.0
        Fraction of the sampling steps trained per update, in (0, 1].
    inner_epochs : int, default=1
        Optimiser steps per batch of trajectories.
    lr : float, default=1e-4
        Adam learning rate (ignored when ``optimizer`` is given).
    max_grad_norm : float or None, default=1.0
        Gradient-norm clip; ``None`` disables it.
    beta : float, default=0.0
        KL coefficient; needs ``ref_model`` when > 0.
    ref_model : nn.Module, optional
        Frozen reference velocity network.
    optimizer : torch.optim.Optimizer, optional
    generator : torch.Generator, optional
        Source of all sampling noise.

    Notes
    -----
    Departures from DanceGRPO [1]_ and Flow-GRPO [2]_: the SDE noise is DanceGRPO's
    (constant :math:`\eta`, step std :math:`\eta\sqrt{|\Delta\sigma|}`), not Flow-GRPO's
    :math:`a\sqrt{\sigma/(1-\sigma)}`; the KL term is the k3 estimator on step
    log-densities rather than Flow-GRPO's closed-form Gaussian KL; there is no
    classifier-free guidance; advantages are not clipped here (pass a clipping
    ``advantage_fn``, e.g. :func:`~lemmata.posttrain.grpo.slas_advantages`).

    References
    ----------
    .. [1] Xue et al. "DanceGRPO: Unleashing GRPO on Visual Generation." 2025.
       arXiv:2505.07818.
    .. [2] Liu et al. "Flow-GRPO: Training Flow Matching Models via Online RL."
       2025. arXiv:2505.05470.
    """

    def __init__(
        self,
        model: nn.Module,
        reward_fn: RewardFn,
        advantage_fn: AdvantageFn = group_advantages,
        *,
        group_size: int = 8,
        n_steps: int = 10,
        noise_level: float = 0.3,
        shift: float = 1.0,
        clip_range: float = 1e-4,
        timestep_fraction: float = 1.0,
        inner_epochs: int = 1,
        lr: float = 1e-4,
        max_grad_norm: float | None = 1.0,
        beta: float = 0.0,
        ref_model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not callable(reward_fn):
            raise TypeError(
                f"reward_fn must be callable; got {type(reward_fn).__name__}"
            )
        if not callable(advantage_fn):
            raise TypeError(
                f"advantage_fn must be callable; got {type(advantage_fn).__name__}"
            )
        if not isinstance(group_size, int) or group_size < 2:
            raise ValueError(f"group_size must be an int >= 2; got {group_size!r}")
        if not isinstance(inner_epochs, int) or inner_epochs < 1:
            raise ValueError(f"inner_epochs must be an int >= 1; got {inner_epochs!r}")
        _check_real("noise_level", noise_level, low=0.0, strict=True)
        _check_real("clip_range", clip_range, low=0.0, strict=True)
        timestep_fraction = _check_real(
            "timestep_fraction", timestep_fraction, low=0.0, strict=True
        )
        if timestep_fraction > 1:
            raise ValueError(
                f"timestep_fraction must be in (0, 1]; got {timestep_fraction!r}"
            )
        _check_real("beta", beta, low=0.0, strict=False)
        if beta > 0 and ref_model is None:
            raise ValueError("ref_model is required when beta > 0; got None")
        flow_sigmas(n_steps, shift=shift)  # validates n_steps and shift

        self.model = model
        self.reward_fn = reward_fn
        self.advantage_fn = advantage_fn
        self.group_size = group_size
        self.n_steps = n_steps
        self.noise_level = noise_level
        self.shift = shift
        self.clip_range = clip_range
        self.timestep_fraction = timestep_fraction
        self.inner_epochs = inner_epochs
        self.max_grad_norm = max_grad_norm
        self.beta = beta
        self.ref_model = ref_model
        self.generator = generator
        self.optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
        self.n_updates = 0

    def sample(self, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trajectories and step log-probs for ``prompts`` (one sample each)."""
        return sample_with_logprobs(
            self.model,
            prompts,
            n_steps=self.n_steps,
            noise_level=self.noise_level,
            shift=self.shift,
            generator=self.generator,
        )

    def step(self, prompts: torch.Tensor) -> dict[str, Any]:
        """One GRPO update on ``group_size`` samples of each prompt in ``prompts``.

        Returns
        -------
        dict
            ``reward/mean``, ``reward/std``, ``advantage/abs_mean``, ``loss``,
            the stats of :func:`~lemmata.posttrain.grpo.policy_loss`, and the
            tensors ``samples``, ``rewards`` and ``advantages``.
        """
        prompts = torch.as_tensor(prompts).repeat_interleave(self.group_size)
        states, old_logps = self.sample(prompts)
        rewards = torch.as_tensor(self.reward_fn(states[-1], prompts)).float()
        if rewards.shape != prompts.shape:
            raise ValueError(
                f"reward_fn must return shape {tuple(prompts.shape)}; got "
                f"{tuple(rewards.shape)}"
            )
        advantages = self.advantage_fn(rewards, self.group_size).detach()

        n_train = max(1, round(self.timestep_fraction * self.n_steps))
        steps = torch.randperm(self.n_steps, generator=self.generator)[:n_train]
        steps = steps.sort().values
        ref_logps = None
        if self.beta > 0:
            with torch.no_grad():
                ref_logps = self._log_probs(self.ref_model, states, prompts, steps)

        for _ in range(self.inner_epochs):
            logps = self._log_probs(self.model, states, prompts, steps)
            loss, stats = policy_loss(
                logps,
                old_logps[:, steps],
                advantages,
                epsilon_low=self.clip_range,
                loss_type="grpo",
                ref_logps=ref_logps,
                beta=self.beta,
            )
            self.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
        self.n_updates += 1

        out: dict[str, Any] = {k: float(v) for k, v in stats.items()}
        out.update(
            {
                "loss": float(loss.detach()),
                "reward/mean": float(rewards.mean()),
                "reward/std": float(rewards.std()),
                "advantage/abs_mean": float(advantages.abs().mean()),
                "samples": states[-1],
                "rewards": rewards,
                "advantages": advantages,
            }
        )
        return out

    def _log_probs(self, model, states, prompts, steps):
        return trajectory_log_probs(
            model,
            states,
            prompts,
            steps=steps,
            noise_level=self.noise_level,
            shift=self.shift,
        )
