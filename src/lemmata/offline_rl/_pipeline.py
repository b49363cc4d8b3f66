"""The ORIS pipeline: GAN restarts, discriminator weights, weighted TD3+BC."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lemmata.offline_rl._dataset import OfflineDataset
from lemmata.offline_rl._gan import StateGAN
from lemmata.offline_rl._simulator import find_settable, rollout_from_starts
from lemmata.offline_rl._td3bc import TD3BC, fit_behaviour_cloning, train_offline

__all__ = ["ORIS", "ORISConfig"]

_LOG = logging.getLogger(__name__)
_RESTARTS = ("gan", "default", "none")


@dataclass(frozen=True)
class ORISConfig:
    """Settings of :class:`ORIS`.

    Attributes
    ----------
    restarts : str
        ``"gan"`` (restart the simulator from generated states, the method),
        ``"default"`` (the simulator's own reset distribution) or ``"none"``
        (offline data only).
    weighted : bool
        Weight simulated transitions with the discriminator (the method) or
        give them weight 1.
    gan_steps : int
        GAN training steps (one D and one G step each).
    horizon : int
        Steps per simulator rollout H; must be >= 1.
    n_rollouts : int or None
        Rollouts R; None gives ``ceil(len(offline) / horizon)`` so that the
        simulated and offline datasets have about the same size.
    rollout_noise : float
        Gaussian noise on the behaviour-cloned rollout policy, as a fraction
        of the maximum action.
    bc_steps : int
        Training steps of the behaviour-cloned rollout policy.
    w_max, w_min : float
        Clip range of the weights before normalisation; 0 < w_min < w_max.
    weight_on : str
        ``"state"`` weights a transition by D at its start state s,
        ``"next_state"`` by D at s'.
    sim_weight : float
        lambda_sim, the weight of the simulator TD term; must be >= 0.
    steps, batch_size : int
        TD3+BC gradient steps and batch size (per source).
    alpha : float
        TD3+BC's alpha.
    hidden : tuple of int
        Hidden widths of actor and critics.
    max_invalid_rate : float
        Largest accepted share of generated states that needed projection.
    """

    restarts: str = "gan"
    weighted: bool = True
    gan_steps: int = 5000
    horizon: int = 10
    n_rollouts: int | None = None
    rollout_noise: float = 0.1
    bc_steps: int = 2000
    w_max: float = 10.0
    w_min: float = math.exp(-5.0)
    weight_on: str = "state"
    sim_weight: float = 1.0
    steps: int = 10_000
    batch_size: int = 256
    alpha: float = 2.5
    hidden: tuple[int, ...] = (64, 64)
    max_invalid_rate: float = 0.2

    def __post_init__(self) -> None:
        if self.restarts not in _RESTARTS:
            raise ValueError(
                f"restarts must be one of {_RESTARTS}; got {self.restarts!r}"
            )
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1; got {self.horizon}")
        if not (0 < self.w_min < self.w_max and math.isfinite(self.w_max)):
            raise ValueError(
                "the clip range [w_min, w_max] must satisfy 0 < w_min < w_max < inf; "
                f"got [{self.w_min}, {self.w_max}]"
            )
        if not (self.sim_weight >= 0 and math.isfinite(self.sim_weight)):
            raise ValueError(
                f"sim_weight must be finite and >= 0; got {self.sim_weight}"
            )
        if self.weight_on not in ("state", "next_state"):
            raise ValueError(
                f"weight_on must be 'state' or 'next_state'; got {self.weight_on!r}"
            )
        if self.n_rollouts is not None and self.n_rollouts < 1:
            raise ValueError(f"n_rollouts must be >= 1 or None; got {self.n_rollouts}")
        if not 0 <= self.max_invalid_rate <= 1:
            raise ValueError(
                f"max_invalid_rate must be in [0, 1]; got {self.max_invalid_rate}"
            )


class ORIS:
    r"""Offline RL with an inaccurate simulator (Hou et al., arXiv 2405.04307).

    1. Fit a :class:`StateGAN` to the offline states.
    2. Draw R states :math:`s_0 = \Pi(G(z))` (``project`` is :math:`\Pi`),
       restart the simulator there (:class:`SettableState`) and roll out H
       steps of the behaviour-cloned policy plus Gaussian noise.
    3. Weight each simulated transition by :func:`discriminator_weights` of
       the frozen discriminator at its start state.
    4. Train :class:`TD3BC` on the offline data plus the weighted simulated data.

    Parameters
    ----------
    config : ORISConfig
        All settings; ``ORISConfig(restarts="default", weighted=False)`` and
        friends give the ablations.
    project : callable, optional
        ``project(states) -> (valid_states, needed_mask)``; maps generated
        states onto valid ones (e.g. :func:`project_pendulum_observations`).
        Identity when omitted.

    Attributes
    ----------
    agent_ : TD3BC
    gan_ : StateGAN or None
    sim_data_ : OfflineDataset or None
    sim_weights_ : ndarray or None
        Weights used in training (ones when ``weighted`` is False).
    sim_logit_weights_ : ndarray or None
        Discriminator weights of the simulated transitions, computed even when
        unused (for diagnostics).
    rollout_policy_ : callable or None
        ``rollout_policy_(observation, rng)``: the behaviour-cloned policy plus
        noise used in the simulator.
    sim_steps_ : ndarray of int or None
        Rollout step of each simulated transition.
    invalid_rate_ : float
        Share of generated restart states that needed projection.

    Notes
    -----
    [reconstruction] The base learner (TD3+BC), the weight formula, H, R, the
    rollout policy and lambda_sim are not given by the paper; the defaults
    follow the project's specification. A run fails (RuntimeError) when more
    than ``max_invalid_rate`` of the generated states were invalid, because
    the restarts would then not follow the data distribution.

    References
    ----------
    Hou, Sun, Ma, Wu. Improving Offline Reinforcement Learning with Inaccurate
    Simulators. ICRA 2024, arXiv 2405.04307.
    """

    def __init__(
        self,
        config: ORISConfig | None = None,
        project: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.config = ORISConfig() if config is None else config
        self.project = project

    def fit(
        self, offline: OfflineDataset, simulator: Any, rng: np.random.Generator
    ) -> ORIS:
        """Run the pipeline; ``simulator`` is a gymnasium environment."""
        cfg = self.config
        if not isinstance(offline, OfflineDataset):
            raise TypeError(f"offline must be an OfflineDataset; got {type(offline)}")
        offline.check_spaces(simulator, "simulator")
        if cfg.restarts == "gan":
            find_settable(simulator)
        max_action = float(np.max(simulator.action_space.high))
        self.gan_, self.sim_data_, self.sim_weights_ = None, None, None
        self.sim_logit_weights_, self.sim_steps_, self.invalid_rate_ = None, None, 0.0
        self.rollout_policy_ = None
        if cfg.restarts != "none":
            self.gan_ = StateGAN(offline.obs_dim).fit(
                offline.observations, cfg.gan_steps, rng, cfg.batch_size
            )
        if cfg.restarts != "none":
            self._simulate(offline, simulator, rng, max_action)
        self.agent_ = TD3BC(
            offline.obs_dim,
            offline.act_dim,
            max_action=max_action,
            alpha=cfg.alpha,
            sim_weight=cfg.sim_weight,
            hidden=cfg.hidden,
            obs_mean=offline.observations.mean(0),
            obs_std=offline.observations.std(0),
        )
        train_offline(
            self.agent_,
            offline,
            cfg.steps,
            rng,
            cfg.batch_size,
            sim=self.sim_data_,
            sim_weights=self.sim_weights_,
        )
        return self

    def _simulate(
        self,
        offline: OfflineDataset,
        simulator: Any,
        rng: np.random.Generator,
        a_max: float,
    ) -> None:
        cfg = self.config
        n = cfg.n_rollouts or math.ceil(len(offline) / cfg.horizon)
        bc = fit_behaviour_cloning(offline, cfg.bc_steps, rng, max_action=a_max)

        def rollout_policy(obs: np.ndarray, gen: np.random.Generator) -> np.ndarray:
            return bc(obs) + gen.normal(0, cfg.rollout_noise * a_max, offline.act_dim)

        self.rollout_policy_ = rollout_policy

        starts = None
        if cfg.restarts == "gan":
            starts = self.gan_.sample(n, rng)
            if self.project is not None:
                starts, needed = self.project(starts)
                self.invalid_rate_ = float(np.mean(needed))
            if self.invalid_rate_ > cfg.max_invalid_rate:
                raise RuntimeError(
                    f"{self.invalid_rate_:.0%} of the generated restart states needed "
                    f"projection (max_invalid_rate={cfg.max_invalid_rate}); "
                    "the GAN does not fit the offline states: train it longer"
                )
        self.sim_data_, self.sim_steps_ = rollout_from_starts(
            simulator, starts, rollout_policy, cfg.horizon, rng, n_rollouts=n
        )
        at = (
            self.sim_data_.observations
            if cfg.weight_on == "state"
            else self.sim_data_.next_observations
        )
        self.sim_logit_weights_ = self.gan_.weights(
            at, w_max=cfg.w_max, w_min=cfg.w_min
        )
        self.sim_weights_ = (
            self.sim_logit_weights_ if cfg.weighted else np.ones(len(self.sim_data_))
        )
        _LOG.debug(
            "simulated %d transitions from %s restarts",
            len(self.sim_data_),
            cfg.restarts,
        )
