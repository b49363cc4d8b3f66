"""Dataset storage and collection, Pendulum restarts, rollouts."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from lemmata.offline_rl import (
    OfflineDataset,
    collect_episodes,
    find_settable,
    make_pendulum,
    project_pendulum_observations,
    rollout_from_starts,
)

torch.set_num_threads(1)  # tiny networks: threads only add overhead


def _random_policy(obs, rng):
    return rng.uniform(-2.0, 2.0, size=1)


def test_collect_matches_manual_loop_and_round_trips(tmp_path, seed):
    env = make_pendulum()
    data, returns = collect_episodes(
        env, _random_policy, 2, np.random.default_rng(seed)
    )
    assert len(data) == 400 and data.obs_dim == 3 and data.act_dim == 1
    assert (
        data.truncations.sum() == 2 and data.truncations[199] and data.truncations[-1]
    )
    assert not data.terminations.any()

    # the same seeds and actions replayed by hand give the same transitions
    rng = np.random.default_rng(seed)
    manual_returns = []
    for _ in range(2):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        total = 0.0
        for _ in range(200):
            obs, reward, *_ = env.step(_random_policy(obs, rng))
            total += reward
        manual_returns.append(total)
    np.testing.assert_allclose(returns, manual_returns, rtol=1e-6)
    np.testing.assert_allclose(returns.sum(), data.rewards.sum(), rtol=1e-6)
    np.testing.assert_allclose(
        data.next_observations[:-1][~data.truncations[:-1]],
        data.observations[1:][~data.truncations[:-1]],
    )

    path = tmp_path / "pendulum.npz"
    data.save(path, source="test")
    back = OfflineDataset.load(path)
    for field in (
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminations",
        "truncations",
    ):
        np.testing.assert_array_equal(getattr(back, field), getattr(data, field))


def test_load_rejects_foreign_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, observations=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="format"):
        OfflineDataset.load(path)


def _pendulum_step(theta, speed, u, g, m, dt=0.05, length=1.0):
    """Closed-form Euler step of gymnasium's Pendulum (semi-implicit)."""
    speed = (
        speed
        + (3 * g / (2 * length) * math.sin(theta) + 3.0 / (m * length**2) * u) * dt
    )
    speed = min(max(speed, -8.0), 8.0)
    return theta + speed * dt, speed


@pytest.mark.parametrize("g, m, gain", [(10.0, 1.0, 1.0), (12.0, 1.3, 0.8)])
def test_set_state_then_step_follows_the_physics(g, m, gain):
    env = make_pendulum(g, m, gain)
    theta, speed, action = 2.5, -1.2, 1.5
    obs0 = find_settable(env).set_state(
        np.array([math.cos(theta), math.sin(theta), speed]), seed=0
    )
    np.testing.assert_allclose(
        obs0, [math.cos(theta), math.sin(theta), speed], atol=1e-6
    )
    obs, *_ = env.step(np.array([action]))
    th1, sp1 = _pendulum_step(theta, speed, gain * action, g, m)
    np.testing.assert_allclose(obs, [math.cos(th1), math.sin(th1), sp1], atol=1e-5)


def test_projection_flags_invalid_states():
    raw = np.array(
        [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 9.0], [0.6, 0.8, -3.0]]
    )
    proj, needed = project_pendulum_observations(raw)
    np.testing.assert_array_equal(needed, [False, True, True, False])
    np.testing.assert_allclose(np.hypot(proj[:, 0], proj[:, 1]), 1.0)
    np.testing.assert_allclose(proj[:, 2], [0.0, 0.0, 8.0, -3.0])


def test_rollouts_from_starts(rng):
    env = make_pendulum(12.0, 1.3, 0.8)
    starts = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [-1.0, 0.0, -2.0]])
    data, steps = rollout_from_starts(env, starts, _random_policy, 4, rng)
    assert len(data) == 12
    np.testing.assert_array_equal(steps, np.tile(np.arange(4), 3))
    np.testing.assert_allclose(data.observations[steps == 0], starts, atol=1e-6)
    np.testing.assert_array_equal(data.truncations, steps == 3)
    default, _ = rollout_from_starts(env, None, _random_policy, 5, rng, n_rollouts=2)
    assert len(default) == 10


def test_unsettable_environment_is_named():
    env = gym.make("CartPole-v1")
    with pytest.raises(NotImplementedError, match=r"CartPole-v1.*SettableState"):
        find_settable(env)
