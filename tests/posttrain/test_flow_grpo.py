"""Tests of the rectified-flow GRPO trainer and its stochastic sampler."""

from __future__ import annotations

import math
from functools import partial

import pytest

torch = pytest.importorskip("torch")

from lemmata.posttrain._flow_grpo import (  # noqa: E402
    ConditionalVelocityMLP,
    FlowGRPOTrainer,
    flow_matching_loss,
    flow_sigmas,
    sample_with_logprobs,
    sde_step,
    trajectory_log_probs,
)
from lemmata.posttrain.grpo import slas_advantages  # noqa: E402


class GaussianVelocity(torch.nn.Module):
    """Exact rectified-flow velocity for data N(m, s^2 I), in closed form.

    With x = (1 - sig) x0 + sig eps, (v, x) are jointly Gaussian, so
    E[eps - x0 | x] = -m + c (x - (1 - sig) m), c = (sig - (1 - sig) s^2) / var(x).
    """

    def __init__(self, m, s):
        super().__init__()
        self.m, self.s, self.dim = torch.as_tensor(m), s, len(m)

    def forward(self, x, sigma, prompts):
        sig = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])[:, None]
        var = (1 - sig) ** 2 * self.s**2 + sig**2
        c = (sig - (1 - sig) * self.s**2) / var
        return -self.m + c * (x - (1 - sig) * self.m)


@pytest.mark.parametrize("noise_level", [0.3, 0.8])
def test_sde_sampler_preserves_the_data_marginal(noise_level):
    m, s = [1.5, -0.5], 0.4
    model = GaussianVelocity(m, s)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.zeros(4000, dtype=torch.long)
    states, _ = sample_with_logprobs(
        model, prompts, n_steps=100, noise_level=noise_level, generator=gen
    )
    x = states[-1]
    # Monte Carlo error of 4000 samples (~0.006 on the mean) plus the Euler error
    # of 100 steps.
    torch.testing.assert_close(x.mean(0), torch.tensor(m), atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), s), atol=0.03, rtol=0)


def test_sde_step_log_prob_is_the_gaussian_density():
    torch.manual_seed(1)
    model = ConditionalVelocityMLP(2, 3, width=16, depth=1)
    x = torch.randn(5, 2)
    prompts = torch.tensor([0, 1, 2, 0, 1])
    sigma, sigma_next, eta = 0.6, 0.45, 0.3
    x_next, logp = sde_step(model, x, sigma, sigma_next, prompts, noise_level=eta)

    # DanceGRPO's form: score from the predicted clean sample x0 = x - sigma v.
    with torch.no_grad():
        v = model(x, torch.tensor(sigma), prompts)
    x0 = x - sigma * v
    score = -(x - (1 - sigma) * x0) / sigma**2
    dsigma = sigma_next - sigma
    mean = x + dsigma * v - 0.5 * eta**2 * score * dsigma
    std = eta * math.sqrt(sigma - sigma_next)
    expected = torch.distributions.Normal(mean, std).log_prob(x_next).mean(-1)
    torch.testing.assert_close(logp.detach(), expected, atol=1e-5, rtol=1e-5)


def test_replayed_log_probs_equal_sampled_ones():
    torch.manual_seed(2)
    model = ConditionalVelocityMLP(2, 4, width=32, depth=2)
    prompts = torch.arange(4).repeat_interleave(3)
    gen = torch.Generator().manual_seed(3)
    states, logps = sample_with_logprobs(
        model, prompts, n_steps=6, noise_level=0.3, shift=3.0, generator=gen
    )
    replay = trajectory_log_probs(model, states, prompts, noise_level=0.3, shift=3.0)
    torch.testing.assert_close(replay.detach(), logps, atol=1e-5, rtol=1e-5)
    sub = trajectory_log_probs(
        model, states, prompts, steps=torch.tensor([1, 4]), noise_level=0.3, shift=3.0
    )
    torch.testing.assert_close(sub.detach(), logps[:, [1, 4]], atol=1e-5, rtol=1e-5)


def test_flow_sigmas():
    torch.testing.assert_close(flow_sigmas(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0]))
    shifted = flow_sigmas(4, shift=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0
    assert (shifted[1:-1] > flow_sigmas(4)[1:-1]).all()


def test_flow_matching_pretraining_reduces_loss():
    torch.manual_seed(4)
    model = ConditionalVelocityMLP(2, 2, width=32, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(5)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    losses = []
    for _ in range(80):
        prompts = torch.randint(2, (64,), generator=gen)
        x0 = centres[prompts] + 0.1 * torch.randn(64, 2, generator=gen)
        loss = flow_matching_loss(model, x0, prompts, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def _target_reward(x, prompts):
    target = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])[prompts]
    return -((x - target) ** 2).sum(-1)


@pytest.mark.parametrize(
    "advantage_fn",
    [None, partial(slas_advantages, gamma=1.0)],
    ids=["group-std", "slas"],
)
def test_trainer_improves_reward(advantage_fn):
    torch.manual_seed(6)
    model = ConditionalVelocityMLP(2, 2, width=32, depth=2)
    kwargs = {} if advantage_fn is None else {"advantage_fn": advantage_fn}
    trainer = FlowGRPOTrainer(
        model,
        _target_reward,
        group_size=8,
        n_steps=5,
        noise_level=0.5,
        lr=1e-2,
        generator=torch.Generator().manual_seed(7),
        **kwargs,
    )
    prompts = torch.tensor([0, 1])
    first = [trainer.step(prompts)["reward/mean"] for _ in range(5)]
    for _ in range(50):
        trainer.step(prompts)
    last = [trainer.step(prompts)["reward/mean"] for _ in range(5)]
    assert sum(last) / 5 > sum(first) / 5 + 0.5
    assert trainer.n_updates == 60


def test_trainer_options_run():
    torch.manual_seed(8)
    model = ConditionalVelocityMLP(2, 2, width=16, depth=1)
    ref = ConditionalVelocityMLP(2, 2, width=16, depth=1)
    trainer = FlowGRPOTrainer(
        model,
        _target_reward,
        group_size=4,
        n_steps=6,
        timestep_fraction=0.5,
        inner_epochs=2,
        clip_range=0.2,
        lr=1e-2,
        beta=0.05,
        ref_model=ref,
        generator=torch.Generator().manual_seed(9),
    )
    out = trainer.step(torch.tensor([0, 1]))
    assert out["samples"].shape == (8, 2)
    assert out["advantages"].shape == (8,)
    assert "kl" in out and out["kl"] >= 0
    # The second inner epoch sees a moved policy, so the ratio is no longer 1.
    assert out["ratio/mean"] != 1.0


TRAINER_BAD = [
    ({"group_size": 1}, ValueError, r"group_size must be an int >= 2; got 1"),
    ({"noise_level": 0.0}, ValueError, r"noise_level must be > 0\.0; got 0\.0"),
    ({"timestep_fraction": 0.0}, ValueError, r"timestep_fraction must be > 0\.0"),
    ({"timestep_fraction": 1.5}, ValueError, r"timestep_fraction must be in \(0, 1\]"),
    ({"clip_range": -1.0}, ValueError, r"clip_range must be > 0\.0; got -1\.0"),
    ({"beta": 0.1}, ValueError, r"ref_model is required when beta > 0"),
    ({"n_steps": 0}, ValueError, r"n_steps must be an int >= 1; got 0"),
    ({"inner_epochs": 0}, ValueError, r"inner_epochs must be an int >= 1; got 0"),
    ({"reward_fn": 3}, TypeError, r"reward_fn must be callable; got int"),
    ({"advantage_fn": "slas"}, TypeError, r"advantage_fn must be callable; got str"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), TRAINER_BAD)
def test_trainer_bad_inputs(kwargs, exc, pattern):
    args = {
        "model": ConditionalVelocityMLP(2, 2, width=8, depth=1),
        "reward_fn": _target_reward,
        **kwargs,
    }
    with pytest.raises(exc, match=pattern):
        FlowGRPOTrainer(**args)


def test_trainer_rejects_wrong_reward_shape():
    model = ConditionalVelocityMLP(2, 2, width=8, depth=1)
    trainer = FlowGRPOTrainer(model, lambda x, p: torch.zeros(3), group_size=2)
    with pytest.raises(ValueError, match=r"reward_fn must return shape \(4,\); got"):
        trainer.step(torch.tensor([0, 1]))


def test_sde_step_bad_times():
    model = ConditionalVelocityMLP(2, 1, width=8, depth=1)
    x, p = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"need 1 >= sigma > sigma_next >= 0"):
        sde_step(model, x, 0.3, 0.5, p, noise_level=0.3)
    with pytest.raises(ValueError, match=r"noise_level must be > 0\.0; got -0\.3"):
        sde_step(model, x, 0.5, 0.3, p, noise_level=-0.3)


@pytest.mark.slow
def test_slas_experiment_smoke():
    import numpy as np

    import lemmata.repro.slas  # noqa: F401  (registers the experiment)
    from lemmata.experiments.registry import RunContext, get

    exp = get("slas-advantage")
    cfg = exp.presets["quick"].__class__(
        bandit_steps=3,
        widths=(8,),
        replicates=1,
        pretrain_steps=5,
        pretrain_batch=32,
        updates=4,
        eval_every=2,
        eval_samples=4,
        gammas=(1.0,),
    )
    ctx = RunContext("slas-advantage", "quick", 0, np.random.SeedSequence(0))
    res = exp.fn(cfg, ctx)
    names = {c.name for c in res.checks}
    assert {"c1/nostd_update_linear_r2", "c2/speed_ratio_w8"} <= names
    assert set(res.figures) == {"rewards", "samples"}
    assert "w8/slas-1/gap" in res.metrics
