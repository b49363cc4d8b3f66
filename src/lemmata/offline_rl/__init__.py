"""Offline RL with an inaccurate simulator (ORIS, arXiv 2405.04307).

A GAN fitted to the offline states gives restart states for the simulator, its
discriminator reweights the simulated transitions, and TD3+BC learns from both.
"""

try:
    import gymnasium  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "lemmata.offline_rl needs torch and gymnasium: pip install 'lemmata[rl]'"
    ) from exc

from lemmata.offline_rl._dataset import OfflineDataset, collect_episodes
from lemmata.offline_rl._gan import StateGAN, discriminator_weights, fit_discriminator
from lemmata.offline_rl._pipeline import ORIS, ORISConfig
from lemmata.offline_rl._simulator import (
    SettableState,
    find_settable,
    make_pendulum,
    project_pendulum_observations,
    rollout_from_starts,
)
from lemmata.offline_rl._td3bc import (
    TD3BC,
    evaluate_policy,
    fit_behaviour_cloning,
    td3bc_actor_loss,
    train_offline,
    train_online,
    weighted_td_loss,
)

__all__ = [
    "ORIS",
    "TD3BC",
    "ORISConfig",
    "OfflineDataset",
    "SettableState",
    "StateGAN",
    "collect_episodes",
    "discriminator_weights",
    "evaluate_policy",
    "find_settable",
    "fit_behaviour_cloning",
    "fit_discriminator",
    "make_pendulum",
    "project_pendulum_observations",
    "rollout_from_starts",
    "td3bc_actor_loss",
    "train_offline",
    "train_online",
    "weighted_td_loss",
]
