"""TD3+BC losses against hand computations and slow loops; learning on a toy."""

import numpy as np
import pytest
import torch

from lemmata.offline_rl import (
    TD3BC,
    OfflineDataset,
    td3bc_actor_loss,
    train_offline,
    weighted_td_loss,
)

torch.set_num_threads(1)  # tiny networks: threads only add overhead


def test_actor_loss_matches_hand_computation():
    q = torch.tensor([1.0, -3.0, 2.0, 4.0])
    pi = torch.tensor([[0.5], [-0.5], [1.0], [0.0]])
    a = torch.tensor([[0.0], [0.5]])  # BC on the first two rows only
    w = torch.tensor([1.0, 1.0, 0.5, 2.0])
    # lambda = 2.5 / mean|q| = 2.5 / 2.5 = 1
    q_term = -(1.0 - 3.0 + 1.0 + 8.0) / 4.5
    bc = (0.25 + 1.0) / 2
    got = td3bc_actor_loss(q, pi, a, alpha=2.5, q_weights=w)
    assert got.item() == pytest.approx(q_term + bc, rel=1e-6)
    assert td3bc_actor_loss(q, pi, a, alpha=None).item() == pytest.approx(-1.0)


def _batch(rng, n, terminal_every=3):
    return {
        "observations": torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32),
        "actions": torch.as_tensor(rng.uniform(-2, 2, (n, 1)), dtype=torch.float32),
        "rewards": torch.as_tensor(rng.normal(size=n), dtype=torch.float32),
        "next_observations": torch.as_tensor(
            rng.normal(size=(n, 3)), dtype=torch.float32
        ),
        "terminations": torch.as_tensor(
            np.arange(n) % terminal_every == 0, dtype=torch.float32
        ),
    }


def test_weighted_critic_loss_matches_slow_loop(rng):
    agent = TD3BC(3, 1, max_action=2.0, policy_noise=0.0, sim_weight=0.7, gamma=0.9)
    off, sim = _batch(rng, 5), _batch(rng, 4)
    w = torch.tensor([0.1, 2.0, 1.0, 3.0])
    got = agent.critic_loss(off, sim, w).item()

    def per_transition(batch, i):
        s, a = batch["observations"][i : i + 1], batch["actions"][i : i + 1]
        s2 = batch["next_observations"][i : i + 1]
        with torch.no_grad():
            a2 = agent.policy(s2, target=True)
            t1, t2 = agent.q_values(s2, a2, target=True)
            y = batch["rewards"][i] + 0.9 * (1 - batch["terminations"][i]) * min(
                t1.item(), t2.item()
            )
            q1, q2 = agent.q_values(s, a)
        return (q1.item() - y.item()) ** 2 + (q2.item() - y.item()) ** 2

    off_loss = sum(per_transition(off, i) for i in range(5)) / 5
    sim_loss = (
        sum(w[i].item() * per_transition(sim, i) for i in range(4)) / w.sum().item()
    )
    assert got == pytest.approx(off_loss + 0.7 * sim_loss, rel=1e-5)
    # uniform weights equal the unweighted mean
    q1 = torch.tensor([1.0, 2.0])
    q2 = torch.tensor([0.0, 1.0])
    y = torch.tensor([1.0, 1.0])
    assert weighted_td_loss(q1, q2, y, torch.full((2,), 3.0)).item() == pytest.approx(
        weighted_td_loss(q1, q2, y, None).item()
    )


def _bandit(rng, n, slope):
    """One-step task: reward -(a - slope*s)^2, every transition terminal."""
    s = rng.uniform(-1, 1, (n, 1))
    a = rng.uniform(-1, 1, (n, 1))
    return OfflineDataset(
        observations=s,
        actions=a,
        rewards=-((a - slope * s) ** 2)[:, 0],
        next_observations=s,
        terminations=np.ones(n, bool),
        truncations=np.zeros(n, bool),
    )


@pytest.mark.slow
def test_learns_a_contextual_bandit_and_respects_weights(seed):
    """TD3 (alpha=None) finds a* = 0.5 s; weights switch off the wrong sim half."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    offline = _bandit(rng, 1000, 0.5)
    good, bad = _bandit(rng, 500, 0.5), _bandit(rng, 500, -0.5)
    sim = good.concatenate(bad)
    grid = np.linspace(-1, 1, 21)[:, None]

    def fitted_slope_error(weights):
        agent = TD3BC(
            1, 1, max_action=1.0, alpha=None, hidden=(32, 32), lr=1e-3, sim_weight=3.0
        )
        train_offline(
            agent, offline, 1500, rng, batch_size=64, sim=sim, sim_weights=weights
        )
        acts = np.array([agent.act(s)[0] for s in grid])
        return np.abs(acts - 0.5 * grid[:, 0]).mean()

    w = np.r_[np.ones(500), np.full(500, 1e-4)]
    assert fitted_slope_error(w) < 0.1
    assert fitted_slope_error(None) > fitted_slope_error(w)
