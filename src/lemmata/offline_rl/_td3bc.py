"""TD3+BC with per-transition weights, online TD3 and behaviour cloning."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lemmata.offline_rl._dataset import OfflineDataset

__all__ = [
    "TD3BC",
    "evaluate_policy",
    "fit_behaviour_cloning",
    "td3bc_actor_loss",
    "train_offline",
    "train_online",
    "weighted_td_loss",
]

_LOG = logging.getLogger(__name__)


def _mlp(n_in: int, n_out: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def weighted_td_loss(
    q1: Tensor, q2: Tensor, target: Tensor, weights: Tensor | None
) -> Tensor:
    r"""Self-normalised weighted TD error of both critics.

    .. math::

        L = \frac{\sum_i w_i\,[(Q_1(s_i,a_i) - y_i)^2 + (Q_2(s_i,a_i) - y_i)^2]}
                 {\sum_i w_i}

    with :math:`Q_1, Q_2` = ``q1``, ``q2``, :math:`y` = ``target`` and
    :math:`w` = ``weights`` (all ones when None).
    """
    err = (q1 - target) ** 2 + (q2 - target) ** 2
    if weights is None:
        return err.mean()
    return (weights * err).sum() / weights.sum()


def td3bc_actor_loss(
    q: Tensor,
    policy_actions: Tensor,
    data_actions: Tensor | None,
    alpha: float | None,
    q_weights: Tensor | None = None,
) -> Tensor:
    r"""Actor loss of TD3+BC (Fujimoto & Gu 2021, eq. 3), optionally weighted.

    .. math::

        L_\pi = -\lambda\,\frac{\sum_i w_i Q(s_i, \pi(s_i))}{\sum_i w_i}
                + \frac{1}{N d}\sum_{j=1}^{N}\|\pi(s_j) - a_j\|^2,
        \qquad \lambda = \frac{\alpha}{\frac{1}{n}\sum_i |Q(s_i, \pi(s_i))|}

    :math:`Q(s_i, \pi(s_i))` is ``q`` (n values), :math:`w` is ``q_weights``
    (ones when None), :math:`\alpha` is ``alpha``, and the behaviour-cloning
    term runs over the first N = ``len(data_actions)`` rows of
    ``policy_actions`` (the offline states; d is the action dimension).
    :math:`\lambda` is treated as a constant (no gradient), as in the paper.
    With ``alpha=None`` the loss is TD3's :math:`-\bar Q` (no BC term).
    """
    mean_q = q.mean() if q_weights is None else (q_weights * q).sum() / q_weights.sum()
    if alpha is None:
        return -mean_q
    lam = alpha / q.abs().mean().detach().clamp_min(1e-8)
    n_bc = data_actions.shape[0]
    bc = ((policy_actions[:n_bc] - data_actions) ** 2).mean()
    return -lam * mean_q + bc


class TD3BC:
    r"""TD3+BC (arXiv 2106.06860) with optional weighted simulator transitions.

    Critic step, for an offline batch :math:`B_o` and an optional simulator
    batch :math:`B_s` with weights :math:`w`:

    .. math::

        y = r + \gamma (1 - d)\min_{k=1,2} Q'_k(s', \tilde a'),\quad
        \tilde a' = \operatorname{clip}(\pi'(s') + \operatorname{clip}(\epsilon,
        -c, c), -a_{max}, a_{max}),\ \epsilon \sim N(0, \sigma^2)

        L_Q = L_{TD}(B_o; 1) + \lambda_{sim}\, L_{TD}(B_s; w)

    with :math:`L_{TD}` from :func:`weighted_td_loss`. Every ``policy_delay``
    critic steps the actor minimises :func:`td3bc_actor_loss` on the states of
    :math:`B_o \cup B_s` (Q term weighted 1 on :math:`B_o` and :math:`w` on
    :math:`B_s`, BC term on :math:`B_o` only), and the target networks move by
    Polyak averaging :math:`\theta' \leftarrow \tau\theta + (1-\tau)\theta'`.

    Parameters
    ----------
    obs_dim, act_dim : int
        Observation and action sizes.
    max_action : float
        :math:`a_{max}`; the actor outputs :math:`a_{max}\tanh(\cdot)`.
    alpha : float or None, default=2.5
        :math:`\alpha`; None gives plain TD3 (no BC term).
    gamma : float, default=0.99
        :math:`\gamma`.
    tau : float, default=0.005
        :math:`\tau`.
    policy_noise, noise_clip : float, default=0.2, 0.5
        :math:`\sigma` and :math:`c`, as fractions of ``max_action``.
    policy_delay : int, default=2
        Critic steps per actor step.
    sim_weight : float, default=1.0
        :math:`\lambda_{sim}`; must be >= 0.
    hidden : tuple of int, default=(64, 64)
        Hidden widths of the actor and both critics.
    lr : float, default=3e-4
        Adam step size of actor and critics.
    obs_mean, obs_std : ndarray, optional
        State normalisation (TD3+BC normalises states with the offline
        dataset's statistics); zeros and ones when omitted.

    Notes
    -----
    [reconstruction] The weighting of simulator data is ours (the ORIS paper
    does not give its loss): weights enter the critic's TD term and the
    actor's Q term; the BC term uses offline actions only, so the policy is
    regularised towards the real behaviour data, not the simulator's.
    Terminal flags stop bootstrapping; time-limit truncations do not.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        max_action: float = 1.0,
        alpha: float | None = 2.5,
        gamma: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_delay: int = 2,
        sim_weight: float = 1.0,
        hidden: tuple[int, ...] = (64, 64),
        lr: float = 3e-4,
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
    ) -> None:
        if sim_weight < 0 or not np.isfinite(sim_weight):
            raise ValueError(f"sim_weight must be finite and >= 0; got {sim_weight}")
        if alpha is not None and not alpha > 0:
            raise ValueError(f"alpha must be > 0 or None; got {alpha}")
        if not 0 <= gamma < 1:
            raise ValueError(f"gamma must be in [0, 1); got {gamma}")
        if policy_delay < 1:
            raise ValueError(f"policy_delay must be >= 1; got {policy_delay}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.max_action, self.alpha, self.gamma, self.tau = (
            max_action,
            alpha,
            gamma,
            tau,
        )
        self.policy_noise, self.noise_clip = policy_noise, noise_clip
        self.policy_delay, self.sim_weight = policy_delay, sim_weight
        mean = np.zeros(obs_dim) if obs_mean is None else np.asarray(obs_mean)
        std = np.ones(obs_dim) if obs_std is None else np.asarray(obs_std)
        self.obs_mean = torch.as_tensor(mean, dtype=torch.float32)
        self.obs_std = torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3)
        self.actor = _mlp(obs_dim, act_dim, hidden)
        self.critic1 = _mlp(obs_dim + act_dim, 1, hidden)
        self.critic2 = _mlp(obs_dim + act_dim, 1, hidden)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic1_target = copy.deepcopy(self.critic1)
        self.critic2_target = copy.deepcopy(self.critic2)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        critic_params = [*self.critic1.parameters(), *self.critic2.parameters()]
        self.critic_opt = torch.optim.Adam(critic_params, lr=lr)
        self.steps = 0

    def policy(self, obs: Tensor, target: bool = False) -> Tensor:
        """Deterministic action :math:`\\pi(s)` for raw observations ``obs``."""
        net = self.actor_target if target else self.actor
        return self.max_action * torch.tanh(net((obs - self.obs_mean) / self.obs_std))

    def q_values(
        self, obs: Tensor, act: Tensor, target: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Both critics' :math:`Q_k(s, a)`, shape (n,) each."""
        x = torch.cat([(obs - self.obs_mean) / self.obs_std, act], dim=1)
        c1, c2 = (
            (self.critic1_target, self.critic2_target)
            if target
            else (self.critic1, self.critic2)
        )
        return c1(x).squeeze(1), c2(x).squeeze(1)

    def td_target(self, batch: dict[str, Tensor]) -> Tensor:
        """:math:`y` for a batch, with target policy smoothing."""
        with torch.no_grad():
            next_obs = batch["next_observations"]
            noise = torch.randn(next_obs.shape[0], self.act_dim) * self.policy_noise
            clip = self.noise_clip * self.max_action
            noise = (noise * self.max_action).clamp(-clip, clip)
            next_act = (self.policy(next_obs, target=True) + noise).clamp(
                -self.max_action, self.max_action
            )
            q1, q2 = self.q_values(next_obs, next_act, target=True)
            alive = 1.0 - batch["terminations"]
            return batch["rewards"] + self.gamma * alive * torch.minimum(q1, q2)

    def critic_loss(
        self,
        batch: dict[str, Tensor],
        sim_batch: dict[str, Tensor] | None = None,
        sim_weights: Tensor | None = None,
    ) -> Tensor:
        """:math:`L_Q` of the class docstring (one pass over both batches)."""
        use_sim = sim_batch is not None and self.sim_weight > 0
        both = batch
        if use_sim:
            both = {k: torch.cat([batch[k], sim_batch[k]]) for k in batch}
        q1, q2 = self.q_values(both["observations"], both["actions"])
        target = self.td_target(both)
        n = batch["observations"].shape[0]
        loss = weighted_td_loss(q1[:n], q2[:n], target[:n], None)
        if use_sim:
            sim = weighted_td_loss(q1[n:], q2[n:], target[n:], sim_weights)
            loss = loss + self.sim_weight * sim
        return loss

    def actor_loss(
        self,
        batch: dict[str, Tensor],
        sim_batch: dict[str, Tensor] | None = None,
        sim_weights: Tensor | None = None,
    ) -> Tensor:
        """:math:`L_\\pi` of the class docstring."""
        obs = batch["observations"]
        q_weights = None
        if sim_batch is not None and self.sim_weight > 0:
            n_sim = sim_batch["observations"].shape[0]
            obs = torch.cat([obs, sim_batch["observations"]])
            w_sim = torch.ones(n_sim) if sim_weights is None else sim_weights
            q_weights = torch.cat([torch.ones(batch["observations"].shape[0]), w_sim])
        pi = self.policy(obs)
        q1, _ = self.q_values(obs, pi)
        return td3bc_actor_loss(q1, pi, batch["actions"], self.alpha, q_weights)

    def update(
        self,
        batch: dict[str, Tensor],
        sim_batch: dict[str, Tensor] | None = None,
        sim_weights: Tensor | None = None,
    ) -> dict[str, float]:
        """One critic step, and an actor and target step every ``policy_delay``."""
        loss_q = self.critic_loss(batch, sim_batch, sim_weights)
        self.critic_opt.zero_grad()
        loss_q.backward()
        self.critic_opt.step()
        self.steps += 1
        info = {"loss/critic": loss_q.item()}
        if self.steps % self.policy_delay == 0:
            loss_pi = self.actor_loss(batch, sim_batch, sim_weights)
            self.actor_opt.zero_grad()
            loss_pi.backward()
            self.actor_opt.step()
            self._polyak()
            info["loss/actor"] = loss_pi.item()
        return info

    def _polyak(self) -> None:
        with torch.no_grad():
            for net, tgt in (
                (self.actor, self.actor_target),
                (self.critic1, self.critic1_target),
                (self.critic2, self.critic2_target),
            ):
                for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                    pt.mul_(1 - self.tau).add_(p, alpha=self.tau)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action for one raw observation (numpy in, numpy out)."""
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs), dtype=torch.float32).reshape(1, -1)
            return self.policy(x)[0].numpy().astype(np.float64)


def _tensors(data: OfflineDataset) -> dict[str, Tensor]:
    out = {
        "observations": data.observations,
        "actions": data.actions,
        "rewards": data.rewards,
        "next_observations": data.next_observations,
        "terminations": data.terminations.astype(np.float64),
    }
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in out.items()}


def _take(table: dict[str, Tensor], idx: np.ndarray) -> dict[str, Tensor]:
    index = torch.from_numpy(idx)
    return {k: v[index] for k, v in table.items()}


def train_offline(
    agent: TD3BC,
    offline: OfflineDataset,
    steps: int,
    rng: np.random.Generator,
    batch_size: int = 256,
    sim: OfflineDataset | None = None,
    sim_weights: np.ndarray | None = None,
) -> list[float]:
    """Run ``steps`` updates of ``agent`` on uniform minibatches.

    Each step draws ``batch_size`` offline transitions and, when ``sim`` is
    given, ``batch_size`` simulator transitions with their ``sim_weights``
    (ones when None), with replacement, indices from ``rng``.

    Returns
    -------
    list of float
        The critic loss of every step.
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(
            f"steps must be >= 0 and batch_size >= 1; got {steps}, {batch_size}"
        )
    off = _tensors(offline)
    sim_t = _tensors(sim) if sim is not None else None
    w_t = None
    if sim is not None and sim_weights is not None:
        w = np.asarray(sim_weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != len(sim) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(
                f"sim_weights must be {len(sim)} finite values >= 0; "
                f"got shape {w.shape}"
            )
        w_t = torch.as_tensor(w, dtype=torch.float32)
    losses = []
    for _ in range(steps):
        batch = _take(off, rng.integers(len(offline), size=batch_size))
        sim_batch, sim_w = None, None
        if sim_t is not None:
            idx = rng.integers(len(sim), size=batch_size)
            sim_batch = _take(sim_t, idx)
            sim_w = None if w_t is None else w_t[torch.from_numpy(idx)]
        losses.append(agent.update(batch, sim_batch, sim_w)["loss/critic"])
    return losses


def train_online(
    agent: TD3BC,
    env: Any,
    steps: int,
    rng: np.random.Generator,
    batch_size: int = 256,
    start_steps: int = 1000,
    expl_noise: float = 0.1,
) -> np.ndarray:
    """Online TD3 in ``env``: act, store, update once per environment step.

    The first ``start_steps`` actions are uniform; later ones are
    :math:`\\pi(s) + N(0, (\\sigma a_{max})^2)` with :math:`\\sigma` =
    ``expl_noise``. Returns the undiscounted return of each finished episode.
    """
    obs_dim, act_dim = agent.obs_dim, agent.act_dim
    buf = {
        "observations": np.zeros((steps, obs_dim)),
        "actions": np.zeros((steps, act_dim)),
        "rewards": np.zeros(steps),
        "next_observations": np.zeros((steps, obs_dim)),
        "terminations": np.zeros(steps),
    }
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    returns, ep_ret = [], 0.0
    for t in range(steps):
        if t < start_steps:
            action = rng.uniform(low, high)
        else:
            noise = rng.normal(0, expl_noise * agent.max_action, act_dim)
            action = np.clip(agent.act(obs) + noise, low, high)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(
            buf, (obs, action, reward, next_obs, float(terminated)), strict=True
        ):
            buf[key][t] = value
        ep_ret += float(reward)
        obs = next_obs
        if terminated or truncated:
            returns.append(ep_ret)
            ep_ret = 0.0
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
        if t + 1 >= min(start_steps, steps) and t + 1 >= batch_size:
            idx = torch.from_numpy(rng.integers(t + 1, size=batch_size))
            batch = {
                k: torch.as_tensor(v[: t + 1], dtype=torch.float32)[idx]
                for k, v in buf.items()
            }
            agent.update(batch)
    return np.asarray(returns)


def fit_behaviour_cloning(
    data: OfflineDataset,
    steps: int,
    rng: np.random.Generator,
    max_action: float = 1.0,
    hidden: tuple[int, ...] = (64, 64),
    batch_size: int = 256,
    lr: float = 1e-3,
) -> Callable[[np.ndarray], np.ndarray]:
    r"""Fit :math:`\pi(s) = a_{max}\tanh(f(s))` to the dataset's actions by MSE.

    Returns a function from one observation to a deterministic action.
    """
    mean = data.observations.mean(0)
    std = np.maximum(data.observations.std(0), 1e-3)
    net = _mlp(data.obs_dim, data.act_dim, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    obs = torch.as_tensor((data.observations - mean) / std, dtype=torch.float32)
    act = torch.as_tensor(data.actions, dtype=torch.float32)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(len(data), size=batch_size))
        loss = ((max_action * torch.tanh(net(obs[idx])) - act[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def policy(observation: np.ndarray) -> np.ndarray:
        x = torch.as_tensor((np.asarray(observation) - mean) / std, dtype=torch.float32)
        with torch.no_grad():
            return (max_action * torch.tanh(net(x.reshape(1, -1))))[0].numpy()

    return policy


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray], env: Any, seeds: list[int]
) -> np.ndarray:
    """Undiscounted return of one episode of ``policy`` per reset seed."""
    returns = np.zeros(len(seeds))
    for i, seed in enumerate(seeds):
        obs, _ = env.reset(seed=int(seed))
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            returns[i] += float(reward)
            done = bool(terminated or truncated)
    return returns
