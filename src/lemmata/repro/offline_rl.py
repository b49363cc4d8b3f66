"""Reproduction of arXiv 2405.04307 (ORIS) on Pendulum with a wrong simulator.

``oris-offline-rl``: the real environment is gymnasium's Pendulum-v1 with its
default physics; the inaccurate simulator has the wrong gravity, mass and
torque gain. An offline dataset comes from a mediocre, noisy swing-up
heuristic. Five learners get the same number of gradient steps and are
scored by their return in the real environment: TD3+BC on the offline data
only; plus unweighted simulator data from default resets; plus unweighted
data from GAN restarts; ORIS (GAN restarts and discriminator weights); and
online TD3 in the simulator (the sim-to-real reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["ORISPendulumConfig", "oris_offline_rl"]

_PAPER = "2405.04307"
_METHODS = ("offline", "default_sim", "gan_sim", "oris", "online_td3")


@dataclass(frozen=True)
class ORISPendulumConfig:
    """Pendulum offline RL with an inaccurate simulator, several training seeds.

    Attributes
    ----------
    repeats : int
        Independent repeats (new offline dataset, GAN and learners each); the
        standard errors of the checks are across repeats.
    offline_episodes : int
        Episodes of 200 steps in the offline dataset.
    behaviour_gain, behaviour_kp, behaviour_kd : float
        The behaviour policy: energy pumping u = gain * w * (E_top - E) away
        from the top, PD control -(kp * theta + kd * w) near it.
    behaviour_switch : float
        The PD controller takes over where cos(theta) > this.
    behaviour_noise : float
        Standard deviation of the Gaussian action noise of the behaviour.
    sim_g, sim_mass, sim_torque_gain : float
        Physics of the inaccurate simulator (real: 10, 1, 1).
    steps, batch_size : int
        Gradient steps and batch size (per data source) of every offline learner.
    gan_steps, bc_steps : int
        Training steps of the state GAN and of the rollout policy.
    horizon : int
        Simulator rollout length H; R = ceil(offline size / H) rollouts.
    w_max : float
        Upper clip of the discriminator weights.
    online_steps : int
        Environment steps (one update each) of online TD3 in the simulator.
    eval_episodes : int
        Real-environment episodes per learner (same reset seeds for all).
    toy_samples, toy_steps : int
        Samples per class and training steps of the 1-D density-ratio toy.
    toy_r_min : float
        The toy's Pearson r between estimated and true ratio must exceed this.
    w1_max : float
        Largest accepted 1-D Wasserstein distance between offline and GAN
        marginals of theta and theta-dot (standardised).
    """

    repeats: int = 3
    offline_episodes: int = 20
    behaviour_gain: float = 0.02
    behaviour_kp: float = 3.0
    behaviour_kd: float = 0.5
    behaviour_switch: float = 0.9
    behaviour_noise: float = 1.0
    sim_g: float = 12.0
    sim_mass: float = 1.3
    sim_torque_gain: float = 0.8
    steps: int = 1500
    batch_size: int = 256
    gan_steps: int = 2000
    bc_steps: int = 1000
    horizon: int = 10
    w_max: float = 10.0
    online_steps: int = 3000
    eval_episodes: int = 10
    toy_samples: int = 2000
    toy_steps: int = 800
    toy_r_min: float = 0.9
    w1_max: float = 0.2


_FULL = ORISPendulumConfig(
    repeats=5, steps=10_000, gan_steps=5000, bc_steps=2000, online_steps=20_000
)


def _behaviour(cfg: ORISPendulumConfig):
    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cos, sin, speed = (float(v) for v in obs)
        if cos > cfg.behaviour_switch:
            u = -(cfg.behaviour_kp * math.atan2(sin, cos) + cfg.behaviour_kd * speed)
        else:
            energy = 0.5 * speed**2 + 15.0 * cos
            u = cfg.behaviour_gain * speed * (15.0 - energy)
        return np.array([np.clip(u, -2.0, 2.0) + rng.normal(0.0, cfg.behaviour_noise)])

    return policy


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    """1-D Wasserstein distance of two equal-size samples (sorted matching)."""
    return float(np.mean(np.abs(np.sort(a) - np.sort(b))))


def _restart_fidelity(offline_obs: np.ndarray, generated: np.ndarray) -> float:
    from lemmata.offline_rl import project_pendulum_observations

    gen, _ = project_pendulum_observations(generated)
    out = []
    for col in (0, 1):
        if col == 0:
            x = np.arctan2(offline_obs[:, 1], offline_obs[:, 0])
            y = np.arctan2(gen[:, 1], gen[:, 0])
        else:
            x, y = offline_obs[:, 2], gen[:, 2]
        mu, sd = x.mean(), x.std()
        out.append(_w1((x - mu) / sd, (y - mu) / sd))
    return max(out)


def _toy_ratio_r(cfg: ORISPendulumConfig, rng: np.random.Generator) -> float:
    import torch

    from lemmata.offline_rl import discriminator_weights, fit_discriminator

    real = rng.normal(0.0, 1.0, (cfg.toy_samples, 1))
    fake = rng.normal(0.5, 1.0, (cfg.toy_samples, 1))
    net = fit_discriminator(real, fake, cfg.toy_steps, rng)
    grid = np.linspace(-2.0, 2.0, 41)
    with torch.no_grad():
        logits = net(torch.as_tensor(grid[:, None], dtype=torch.float32))
    est = discriminator_weights(logits.numpy()[:, 0], w_max=1e6, normalize=False)
    true = np.exp(-0.5 * grid + 0.125)  # N(0,1) / N(0.5,1)
    return float(np.corrcoef(est, true)[0, 1])


def _one_repeat(
    cfg: ORISPendulumConfig, rng: np.random.Generator, eval_seeds: list[int]
):
    from lemmata.offline_rl import (
        ORIS,
        TD3BC,
        collect_episodes,
        evaluate_policy,
        make_pendulum,
        project_pendulum_observations,
        rollout_from_starts,
        train_offline,
        train_online,
    )
    from lemmata.offline_rl import ORISConfig as PipelineConfig

    real = make_pendulum()
    sim = make_pendulum(cfg.sim_g, cfg.sim_mass, cfg.sim_torque_gain)
    offline, behaviour_returns = collect_episodes(
        real, _behaviour(cfg), cfg.offline_episodes, rng
    )
    pipe_cfg = PipelineConfig(
        gan_steps=cfg.gan_steps,
        horizon=cfg.horizon,
        bc_steps=cfg.bc_steps,
        w_max=cfg.w_max,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
    )
    oris = ORIS(pipe_cfg, project=project_pendulum_observations).fit(offline, sim, rng)
    n_rollouts = math.ceil(len(offline) / cfg.horizon)
    default_data, default_steps = rollout_from_starts(
        sim, None, oris.rollout_policy_, cfg.horizon, rng, n_rollouts=n_rollouts
    )

    def learner(alpha: float | None = 2.5) -> TD3BC:
        return TD3BC(
            3,
            1,
            max_action=2.0,
            alpha=alpha,
            obs_mean=offline.observations.mean(0),
            obs_std=offline.observations.std(0),
        )

    agents = {"oris": oris.agent_}
    for name, sim_data in (
        ("offline", None),
        ("default_sim", default_data),
        ("gan_sim", oris.sim_data_),
    ):
        agents[name] = learner()
        train_offline(agents[name], offline, cfg.steps, rng, cfg.batch_size, sim_data)
    agents["online_td3"] = TD3BC(3, 1, max_action=2.0, alpha=None)
    train_online(agents["online_td3"], sim, cfg.online_steps, rng, cfg.batch_size)
    returns = {
        m: float(evaluate_policy(agents[m].act, real, eval_seeds).mean())
        for m in _METHODS
    }
    steps = oris.sim_steps_
    # The pipeline's weights, unnormalised (density-ratio estimates), so that the
    # two curves of the figure share one scale; training uses mean-1 weights.
    oc = oris.config

    def raw_weights(data):
        at = data.observations if oc.weight_on == "state" else data.next_observations
        return oris.gan_.weights(at, w_max=oc.w_max, w_min=oc.w_min, normalize=False)

    w_gan, w_def = raw_weights(oris.sim_data_), raw_weights(default_data)
    diag = {
        "behaviour": float(behaviour_returns.mean()),
        "invalid_rate": oris.invalid_rate_,
        "w1": _restart_fidelity(
            offline.observations, oris.gan_.sample(len(offline), rng)
        ),
        "w_step_gan": [float(w_gan[steps == t].mean()) for t in range(cfg.horizon)],
        "w_step_default": [
            float(w_def[default_steps == t].mean()) for t in range(cfg.horizon)
        ],
    }
    return returns, diag


def _mean_se(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    se = a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
    return float(a.mean()), float(se)


def _figure(stats: dict, w_gan: np.ndarray, w_def: np.ndarray):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 2, 1)
    means = [stats[m][0] for m in _METHODS]
    ses = [stats[m][1] for m in _METHODS]
    ax.bar(range(len(_METHODS)), means, yerr=ses, capsize=4, color="tab:blue")
    ax.set_xticks(range(len(_METHODS)), _METHODS, rotation=20)
    ax.set_ylabel("real-environment return (mean ± s.e.)")
    ax.set_title("Pendulum, learners at equal gradient steps")
    ax = fig.add_subplot(1, 2, 2)
    steps = np.arange(w_gan.shape[1])
    for w, label in ((w_gan, "GAN restarts"), (w_def, "default resets")):
        m = w.mean(0)
        s = w.std(0, ddof=1) / math.sqrt(len(w)) if len(w) > 1 else 0 * m
        ax.errorbar(steps, m, yerr=s, marker="o", capsize=3, label=label)
    ax.set_xlabel("rollout step")
    ax.set_ylabel("mean discriminator weight")
    ax.set_title("Weights of simulated transitions")
    ax.legend()
    fig.tight_layout()
    return fig


@experiment(
    name="oris-offline-rl",
    paper=_PAPER,
    claim=(
        "Restarting an inaccurate simulator from states generated by a GAN fitted "
        "to the offline data, and reweighting its transitions with the "
        "discriminator, lets offline RL benefit from both the simulator and the "
        "limited dataset."
    ),
    config=ORISPendulumConfig,
    quick=ORISPendulumConfig(),
    full=_FULL,
    seeds={"quick": 1, "full": 1},
    requires=("torch", "gymnasium"),
)
def oris_offline_rl(cfg: ORISPendulumConfig, ctx: RunContext) -> Result:
    """Five learners on Pendulum; checks the ORIS claims and the weight sanity."""
    ctx.seed_torch()
    rng = ctx.rng
    eval_seeds = [int(s) for s in rng.integers(2**31, size=cfg.eval_episodes)]
    runs = [_one_repeat(cfg, rng, eval_seeds) for _ in range(cfg.repeats)]
    per_method = {m: [r[m] for r, _ in runs] for m in _METHODS}
    stats = {m: _mean_se(v) for m, v in per_method.items()}
    diags = [d for _, d in runs]
    w_gan = np.array([d["w_step_gan"] for d in diags])
    w_def = np.array([d["w_step_default"] for d in diags])

    metrics: dict[str, float] = {}
    for m, (mean, se) in stats.items():
        metrics[f"return/{m}"] = mean
        metrics[f"return_se/{m}"] = se
    metrics["return/behaviour"] = float(np.mean([d["behaviour"] for d in diags]))
    best = max(("offline", "default_sim"), key=lambda m: stats[m][0])
    pooled = math.hypot(stats["oris"][1], stats[best][1])
    margin = stats["oris"][0] - stats[best][0] - pooled
    diffs = {
        "gan_minus_default": ("gan_sim", "default_sim"),
        "weighted_minus_unweighted": ("oris", "gan_sim"),
    }
    for key, (a, b) in diffs.items():
        d = np.asarray(per_method[a]) - np.asarray(per_method[b])
        mean, se = _mean_se(list(d))
        metrics[f"diff/{key}"] = mean
        metrics[f"diff_ci95_low/{key}"] = mean - 1.96 * se
        metrics[f"diff_ci95_high/{key}"] = mean + 1.96 * se
    toy_r = _toy_ratio_r(cfg, rng)
    drift = float(w_gan[:, -1].mean() / w_gan[:, 0].mean())
    w1 = float(max(d["w1"] for d in diags))
    metrics.update(
        {
            "oris/margin_over_best_baseline": margin,
            "oris/pooled_se": pooled,
            "gan/invalid_rate": float(max(d["invalid_rate"] for d in diags)),
            "gan/w1_max": w1,
            "weights/last_over_first_step": drift,
            "toy/pearson_r": toy_r,
        }
    )
    checks = [
        Check("oris beats the better baseline by one pooled s.e.", margin, 0.0, ">="),
        Check(
            "GAN restarts beat default resets",
            metrics["diff/gan_minus_default"],
            0.0,
            ">=",
        ),
        Check(
            "weights beat no weights",
            metrics["diff/weighted_minus_unweighted"],
            0.0,
            ">=",
        ),
        Check("toy density ratio Pearson r", toy_r, cfg.toy_r_min, ">"),
        Check("weight at step H over weight at restart", drift, 1.0, "<"),
        Check("restart fidelity W1 (standardised)", w1, cfg.w1_max, "<"),
    ]
    series = {f"returns/{m}": v for m, v in per_method.items()}
    series["weights/gan_by_step"] = list(w_gan.mean(0))
    series["weights/default_by_step"] = list(w_def.mean(0))
    return Result(
        metrics=metrics,
        checks=checks,
        figures={"returns_and_weights": _figure(stats, w_gan, w_def)},
        series=series,
    )
