"""Simulators whose state can be set, and short rollouts restarted from states."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lemmata.offline_rl._dataset import OfflineDataset

__all__ = [
    "SettableState",
    "find_settable",
    "make_pendulum",
    "project_pendulum_observations",
    "rollout_from_starts",
]

_LOG = logging.getLogger(__name__)


@runtime_checkable
class SettableState(Protocol):
    """An environment that can be restarted from a given observation.

    ``set_state(observation, seed)`` resets the environment (episode counters
    included), puts it in the state that ``observation`` describes and returns
    the observation recomputed from that state.
    """

    def set_state(self, observation: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Reset, then move to the state given by ``observation``."""
        ...


def find_settable(env: Any) -> SettableState:
    """Return ``env`` or the first wrapper around it that has ``set_state``.

    Raises
    ------
    NotImplementedError
        If no layer implements :class:`SettableState`; the message names the
        environment and the protocol, and nothing falls back to default resets.
    """
    layer = env
    while layer is not None:
        if isinstance(layer, SettableState):
            return layer
        layer = getattr(layer, "env", None)
    spec = getattr(env, "spec", None)
    name = getattr(spec, "id", None) or type(env).__name__
    raise NotImplementedError(
        f"environment {name!r} cannot be restarted from a state: it must implement "
        "lemmata.offline_rl.SettableState (a set_state(observation, seed) method, "
        "e.g. by wrapping it like make_pendulum does)"
    )


def project_pendulum_observations(
    observations: np.ndarray, max_speed: float = 8.0, tol: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    r"""Map Pendulum observations to valid ones.

    An observation is :math:`(\cos\theta, \sin\theta, \dot\theta)`; the
    projection sets :math:`\theta = \operatorname{atan2}(\sin, \cos)` and
    :math:`\dot\theta` is clipped to :math:`[-v_{max}, v_{max}]` (``max_speed``).

    Returns
    -------
    projected : ndarray of shape (n, 3)
    needed : ndarray of bool, shape (n,)
        True where the input was invalid: :math:`|\|(\cos,\sin)\| - 1| >` ``tol``
        or :math:`|\dot\theta| > v_{max}`.
    """
    obs = np.asarray(observations, dtype=np.float64).reshape(-1, 3)
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    speed = np.clip(obs[:, 2], -max_speed, max_speed)
    radius = np.hypot(obs[:, 0], obs[:, 1])
    needed = (np.abs(radius - 1.0) > tol) | (np.abs(obs[:, 2]) > max_speed)
    projected = np.stack([np.cos(theta), np.sin(theta), speed], axis=1)
    return projected, needed


def make_pendulum(g: float = 10.0, mass: float = 1.0, torque_gain: float = 1.0) -> Any:
    """Gymnasium ``Pendulum-v1`` with settable state and optional wrong physics.

    Parameters
    ----------
    g : float
        Gravity (10.0 in the real task).
    mass : float
        Pendulum mass (1.0 in the real task).
    torque_gain : float
        The applied torque is ``torque_gain`` times the commanded action, after
        clipping the action to [-2, 2].

    Returns
    -------
    gymnasium.Env
        Implements :class:`SettableState`.
    """
    import gymnasium as gym

    for name, value in (("g", g), ("mass", mass), ("torque_gain", torque_gain)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0; got {value}")

    class _PendulumSettable(gym.Wrapper):
        def step(self, action):
            action = np.clip(np.asarray(action, dtype=np.float64), -2.0, 2.0)
            return self.env.step(action * torque_gain)

        def set_state(self, observation, seed=None):
            projected, _ = project_pendulum_observations(observation)
            self.env.reset(seed=seed)
            cos, sin, speed = projected[0]
            self.env.unwrapped.state = np.array([np.arctan2(sin, cos), speed])
            return projected[0].astype(np.float32)

    env = gym.make("Pendulum-v1", g=float(g))
    env.unwrapped.m = float(mass)
    return _PendulumSettable(env)


def rollout_from_starts(
    env: Any,
    starts: np.ndarray | None,
    policy: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    horizon: int,
    rng: np.random.Generator,
    n_rollouts: int | None = None,
) -> tuple[OfflineDataset, np.ndarray]:
    """Roll ``policy`` out for ``horizon`` steps from each start state.

    Parameters
    ----------
    env : gymnasium.Env
        The simulator. With ``starts`` it must implement :class:`SettableState`.
    starts : ndarray of shape (R, obs_dim) or None
        Restart observations; ``None`` uses the simulator's own reset
        distribution ``n_rollouts`` times.
    policy : callable
        ``policy(observation, rng) -> action``.
    horizon : int
        Steps per rollout H; must be >= 1. A rollout stops early if the
        episode ends.
    rng : numpy.random.Generator
        Source of reset seeds and of the policy's noise.
    n_rollouts : int, optional
        Number of default-reset rollouts, used only when ``starts`` is None.

    Returns
    -------
    dataset : OfflineDataset
        The rollouts; the last transition of each is marked truncated.
    step_index : ndarray of int, shape (n,)
        Position of each transition in its rollout (0 for the start state).
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1; got {horizon}")
    settable = find_settable(env) if starts is not None else None
    count = len(starts) if starts is not None else int(n_rollouts or 0)
    if count < 1:
        raise ValueError(f"the number of rollouts must be >= 1; got {count}")
    low, high = env.action_space.low, env.action_space.high
    cols: dict[str, list[Any]] = {k: [] for k in ("o", "a", "r", "n", "te", "tr")}
    steps: list[int] = []
    for i in range(count):
        seed = int(rng.integers(2**31))
        if settable is not None:
            obs = settable.set_state(starts[i], seed=seed)
        else:
            obs, _ = env.reset(seed=seed)
        for t in range(horizon):
            action = np.clip(np.asarray(policy(obs, rng), dtype=np.float64), low, high)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            last = t == horizon - 1 or terminated or truncated
            for key, value in zip(
                cols,
                (obs, action, reward, next_obs, terminated, bool(truncated or last)),
                strict=True,
            ):
                cols[key].append(value)
            steps.append(t)
            obs = next_obs
            if terminated or truncated:
                break
    data = OfflineDataset(
        observations=np.asarray(cols["o"]),
        actions=np.asarray(cols["a"]),
        rewards=np.asarray(cols["r"]),
        next_observations=np.asarray(cols["n"]),
        terminations=np.asarray(cols["te"]),
        truncations=np.asarray(cols["tr"]),
    )
    return data, np.asarray(steps, dtype=np.int64)
