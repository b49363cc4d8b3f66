"""Discriminator weights, the state GAN, the ORIS pipeline and bad inputs."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from lemmata.offline_rl import (
    ORIS,
    TD3BC,
    OfflineDataset,
    ORISConfig,
    StateGAN,
    collect_episodes,
    discriminator_weights,
    fit_discriminator,
    make_pendulum,
    project_pendulum_observations,
)

torch.set_num_threads(1)  # tiny networks: threads only add overhead


def test_weights_formula_and_saturation():
    logits = np.array([-100.0, -1.0, 0.0, 1.0, 100.0])
    raw = np.exp(np.clip(logits, -5.0, math.log(10.0)))
    np.testing.assert_allclose(discriminator_weights(logits), raw / raw.mean())
    w = discriminator_weights(logits, normalize=False)
    np.testing.assert_allclose(w[[0, -1]], [math.exp(-5.0), 10.0])
    # exp(logit) is D / (1 - D)
    d = 1 / (1 + math.exp(-1.0))
    assert w[3] == pytest.approx(d / (1 - d))


def test_discriminator_ratio_tracks_true_ratio(rng):
    torch.manual_seed(0)
    real = rng.normal(0.0, 1.0, (2000, 1))
    fake = rng.normal(0.5, 1.0, (2000, 1))
    net = fit_discriminator(real, fake, 600, rng)
    grid = np.linspace(-2, 2, 21)
    with torch.no_grad():
        logits = net(torch.as_tensor(grid[:, None], dtype=torch.float32)).numpy()[:, 0]
    est = discriminator_weights(logits, w_max=1e6, normalize=False)
    true = np.exp(-0.5 * grid + 0.125)  # N(0, 1) / N(0.5, 1) in closed form
    assert np.corrcoef(est, true)[0, 1] > 0.9


def _w1(a, b):
    return np.mean(np.abs(np.sort(a) - np.sort(b)))


def test_gan_matches_marginals_of_a_gaussian(rng):
    torch.manual_seed(0)
    x = rng.normal([1.0, -2.0], [0.5, 2.0], (2000, 2))
    gan = StateGAN(2, hidden=(32, 32)).fit(x, 1500, rng, batch_size=128)
    y = gan.sample(2000, rng)
    z = (x - x.mean(0)) / x.std(0)
    zy = (y - x.mean(0)) / x.std(0)
    assert max(_w1(z[:, j], zy[:, j]) for j in range(2)) < 0.25
    assert gan.logits(x[:5]).shape == (5,)


def _behaviour(obs, rng):
    return np.array([np.clip(-2.0 * obs[2], -2, 2) + rng.normal(0, 0.5)])


@pytest.fixture(scope="module")
def pendulum_data():
    data, _ = collect_episodes(make_pendulum(), _behaviour, 3, np.random.default_rng(1))
    return data


_TINY = {
    "gan_steps": 300,
    "bc_steps": 50,
    "steps": 20,
    "batch_size": 32,
    "horizon": 5,
    "n_rollouts": 20,
    "max_invalid_rate": 1.0,
}


def test_pipeline_runs_and_weights_have_mean_one(pendulum_data, rng):
    torch.manual_seed(0)
    oris = ORIS(ORISConfig(**_TINY), project=project_pendulum_observations)
    oris.fit(pendulum_data, make_pendulum(12.0, 1.3, 0.8), rng)
    assert len(oris.sim_data_) == 100
    assert oris.sim_weights_.mean() == pytest.approx(1.0)
    raw = oris.gan_.weights(oris.sim_data_.observations)
    np.testing.assert_allclose(oris.sim_weights_, raw)
    assert 0.0 <= oris.invalid_rate_ <= 1.0
    assert oris.agent_.act(pendulum_data.observations[0]).shape == (1,)
    unweighted = ORIS(ORISConfig(**_TINY, weighted=False, restarts="default"))
    unweighted.fit(pendulum_data, make_pendulum(12.0, 1.3, 0.8), rng)
    np.testing.assert_array_equal(unweighted.sim_weights_, 1.0)


def test_pipeline_fails_loudly_on_invalid_restarts(pendulum_data, rng):
    def everything_invalid(states):
        return states, np.ones(len(states), bool)

    cfg = ORISConfig(**{**_TINY, "max_invalid_rate": 0.2})
    with pytest.raises(RuntimeError, match="needed projection"):
        ORIS(cfg, project=everything_invalid).fit(pendulum_data, make_pendulum(), rng)


def _data(**changes):
    base = {
        "observations": np.zeros((4, 3)),
        "actions": np.zeros((4, 1)),
        "rewards": np.zeros(4),
        "next_observations": np.zeros((4, 3)),
        "terminations": np.zeros(4, bool),
        "truncations": np.zeros(4, bool),
    }
    return OfflineDataset(**{**base, **changes})


@pytest.mark.parametrize(
    "build, exception, regex",
    [
        (
            lambda: _data(rewards=np.array([0.0, np.nan, 1.0, np.inf])),
            ValueError,
            r"rewards must be finite; got 2 non-finite",
        ),
        (
            lambda: _data(
                observations=np.zeros((0, 3)),
                actions=np.zeros((0, 1)),
                rewards=np.zeros(0),
                next_observations=np.zeros((0, 3)),
                terminations=np.zeros(0, bool),
                truncations=np.zeros(0, bool),
            ),
            ValueError,
            "at least one transition",
        ),
        (
            lambda: _data(actions=np.zeros((3, 1))),
            ValueError,
            "actions must have 4 rows like observations; got 3",
        ),
        (
            lambda: ORIS(ORISConfig(**_TINY)).fit(
                _data(
                    observations=np.zeros((4, 2)), next_observations=np.zeros((4, 2))
                ),
                make_pendulum(),
                np.random.default_rng(0),
            ),
            ValueError,
            r"simulator.observation_space.shape must equal .*\(2,\); got \(3,\)",
        ),
        (
            lambda: ORIS(ORISConfig(**_TINY)).fit(
                _data(), gym.make("Pendulum-v1"), np.random.default_rng(0)
            ),
            NotImplementedError,
            r"Pendulum-v1.*SettableState",
        ),
        (
            lambda: ORISConfig(w_min=1.0, w_max=0.5),
            ValueError,
            r"clip range \[w_min, w_max\] must satisfy 0 < w_min < w_max",
        ),
        (lambda: ORISConfig(w_max=0.0), ValueError, r"clip range.*got \[.*, 0.0\]"),
        (
            lambda: discriminator_weights(np.zeros(3), w_max=1.0, w_min=2.0),
            ValueError,
            "clip range",
        ),
        (
            lambda: discriminator_weights(np.array([np.nan])),
            ValueError,
            "logits must be",
        ),
        (lambda: ORISConfig(horizon=0), ValueError, "horizon must be >= 1; got 0"),
        (
            lambda: ORISConfig(sim_weight=-1.0),
            ValueError,
            "sim_weight must be finite and >= 0; got -1.0",
        ),
        (lambda: ORISConfig(restarts="uniform"), ValueError, "restarts must be one of"),
        (lambda: TD3BC(3, 1, sim_weight=-0.5), ValueError, "sim_weight must be"),
        (
            lambda: make_pendulum(g=-1.0),
            ValueError,
            "g must be finite and > 0; got -1.0",
        ),
        (
            lambda: ORIS().fit(
                np.zeros((3, 3)), make_pendulum(), np.random.default_rng(0)
            ),
            TypeError,
            "offline must be an OfflineDataset",
        ),
    ],
)
def test_bad_inputs(build, exception, regex):
    with pytest.raises(exception, match=regex):
        build()
