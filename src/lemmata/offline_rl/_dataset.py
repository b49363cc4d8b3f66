"""Offline transition datasets: validation, ``.npz`` storage and collection."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np

__all__ = ["OfflineDataset", "collect_episodes"]

_LOG = logging.getLogger(__name__)
_FIELDS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminations",
    "truncations",
)
_FORMAT = "lemmata.offline_rl/1"


@dataclass(frozen=True)
class OfflineDataset:
    """A flat table of transitions :math:`(s, a, r, s', d_{term}, d_{trunc})`.

    The field names follow minari's ``EpisodeData`` (``observations``,
    ``actions``, ``rewards``, ``terminations``, ``truncations``), flattened
    over episodes with ``next_observations`` stored explicitly, as in D4RL's
    ``qlearning_dataset``.

    Attributes
    ----------
    observations : ndarray of shape (n, obs_dim)
        States :math:`s` where each transition starts.
    actions : ndarray of shape (n, act_dim)
        Actions :math:`a`.
    rewards : ndarray of shape (n,)
        Rewards :math:`r`; must be finite.
    next_observations : ndarray of shape (n, obs_dim)
        Next states :math:`s'`.
    terminations : ndarray of bool, shape (n,)
        True where :math:`s'` is terminal (no bootstrapping).
    truncations : ndarray of bool, shape (n,)
        True where the episode was cut by a time limit (bootstrapping goes on).

    Notes
    -----
    minari is not installed here, so :meth:`save` writes a documented
    ``.npz`` file instead of minari's HDF5 layout: one array per field above,
    plus ``format`` (the string ``"lemmata.offline_rl/1"``) and an optional
    JSON-free ``metadata`` of str keys and str values. Converting to minari is
    a matter of splitting at ``terminations | truncations``.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __post_init__(self) -> None:
        obs = np.asarray(self.observations, dtype=np.float64)
        act = np.asarray(self.actions, dtype=np.float64)
        if obs.ndim == 1:
            obs = obs[:, None]
        if act.ndim == 1:
            act = act[:, None]
        n = obs.shape[0]
        if n == 0:
            raise ValueError("observations must hold at least one transition; got 0")
        arrays = {
            "observations": obs,
            "actions": act,
            "rewards": np.asarray(self.rewards, dtype=np.float64).reshape(-1),
            "next_observations": np.asarray(
                self.next_observations, dtype=np.float64
            ).reshape(obs.shape),
            "terminations": np.asarray(self.terminations, dtype=bool).reshape(-1),
            "truncations": np.asarray(self.truncations, dtype=bool).reshape(-1),
        }
        for name, value in arrays.items():
            if value.shape[0] != n:
                raise ValueError(
                    f"{name} must have {n} rows like observations; got {value.shape[0]}"
                )
            if value.dtype != bool and not np.all(np.isfinite(value)):
                bad = int(np.sum(~np.isfinite(value)))
                raise ValueError(f"{name} must be finite; got {bad} non-finite values")
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        """Length of one observation."""
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        """Length of one action."""
        return int(self.actions.shape[1])

    def check_spaces(self, env: Any, name: str = "env") -> None:
        """Raise ValueError if ``env``'s observation or action shape differs.

        Parameters
        ----------
        env : gymnasium.Env
            Environment whose ``observation_space.shape`` and
            ``action_space.shape`` must be ``(obs_dim,)`` and ``(act_dim,)``.
        name : str
            How the environment is named in the message.
        """
        obs_shape = tuple(env.observation_space.shape)
        act_shape = tuple(env.action_space.shape)
        if obs_shape != (self.obs_dim,):
            raise ValueError(
                f"{name}.observation_space.shape must equal the dataset's "
                f"({self.obs_dim},); got {obs_shape}"
            )
        if act_shape != (self.act_dim,):
            raise ValueError(
                f"{name}.action_space.shape must equal the dataset's "
                f"({self.act_dim},); got {act_shape}"
            )

    def concatenate(self, other: OfflineDataset) -> OfflineDataset:
        """Transitions of ``self`` followed by those of ``other``."""
        if (other.obs_dim, other.act_dim) != (self.obs_dim, self.act_dim):
            raise ValueError(
                "other must have obs_dim and act_dim "
                f"({self.obs_dim}, {self.act_dim}); "
                f"got ({other.obs_dim}, {other.act_dim})"
            )
        return OfflineDataset(
            **{
                f: np.concatenate([getattr(self, f), getattr(other, f)])
                for f in _FIELDS
            }
        )

    def save(self, path: str | PathLike[str], **metadata: str) -> None:
        """Write the dataset to ``path`` as ``.npz`` (format in the class Notes)."""
        meta = np.array([f"{k}={v}" for k, v in metadata.items()], dtype=str)
        np.savez_compressed(
            path,
            format=np.array(_FORMAT),
            metadata=meta,
            **{f: getattr(self, f) for f in _FIELDS},
        )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> OfflineDataset:
        """Read a dataset written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            fmt = str(data["format"]) if "format" in data else "<missing>"
            if fmt != _FORMAT:
                raise ValueError(f"path must hold format {_FORMAT!r}; got {fmt!r}")
            return cls(**{f: data[f] for f in _FIELDS})


def collect_episodes(
    env: Any,
    policy: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    n_episodes: int,
    rng: np.random.Generator,
) -> tuple[OfflineDataset, np.ndarray]:
    """Record ``n_episodes`` full episodes of ``policy`` in ``env``.

    Parameters
    ----------
    env : gymnasium.Env
        Environment with a Box action space; reset with seeds drawn from ``rng``.
    policy : callable
        ``policy(observation, rng) -> action``; any noise it adds must come
        from the ``rng`` it is given.
    n_episodes : int
        Number of episodes; must be >= 1.
    rng : numpy.random.Generator
        Source of the reset seeds and of the policy's noise.

    Returns
    -------
    dataset : OfflineDataset
        All transitions, actions clipped to the action space.
    returns : ndarray of shape (n_episodes,)
        Undiscounted return of each episode.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1; got {n_episodes}")
    low, high = env.action_space.low, env.action_space.high
    rows: dict[str, list[Any]] = {f: [] for f in _FIELDS}
    returns = np.zeros(n_episodes)
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done:
            action = np.clip(np.asarray(policy(obs, rng), dtype=np.float64), low, high)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for f, v in zip(
                _FIELDS,
                (obs, action, reward, next_obs, terminated, truncated),
                strict=True,
            ):
                rows[f].append(v)
            returns[episode] += float(reward)
            obs, done = next_obs, bool(terminated or truncated)
    _LOG.debug("collected %d episodes, mean return %.1f", n_episodes, returns.mean())
    return OfflineDataset(**{f: np.asarray(v) for f, v in rows.items()}), returns
