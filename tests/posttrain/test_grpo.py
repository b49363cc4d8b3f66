"""Tests of lemmata.posttrain.grpo against slow loops written from the equations."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lemmata.posttrain.grpo import (  # noqa: E402
    group_advantages,
    k3_kl,
    policy_loss,
    shape_advantages,
    slas_advantages,
)


def _loop_advantages(r, G, scale, eps=1e-4, ddof=1):
    """Float64 loop over groups, from A = (r - mean_g) / (s + eps)."""
    r = np.asarray(r, dtype=float)
    out = np.zeros_like(r)
    batch_std = np.std(r, ddof=ddof)
    for g in range(len(r) // G):
        block = r[g * G : (g + 1) * G]
        centred = block - block.mean()
        if scale == "none":
            out[g * G : (g + 1) * G] = centred
            continue
        s = np.std(block, ddof=ddof) if scale == "group" else batch_std
        out[g * G : (g + 1) * G] = centred / (s + eps)
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_group_advantages_match_loop(rng, scale, ddof):
    r = rng.normal(size=24) * 3
    ours = group_advantages(torch.tensor(r), 6, scale=scale, ddof=ddof)
    np.testing.assert_allclose(ours.numpy(), _loop_advantages(r, 6, scale, ddof=ddof))


def test_slas_matches_formula(rng):
    r = rng.normal(size=32)
    z = _loop_advantages(r, 8, "batch")
    for gamma in (0.0, 0.5, 1.0, 2.0):
        expected = np.clip(np.sign(z) * np.abs(z) ** (1 + gamma), -5, 5)
        ours = slas_advantages(torch.tensor(r), 8, gamma=gamma)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_slas_gamma_zero_is_batch_scaling(rng):
    r = torch.tensor(rng.normal(size=16))
    torch.testing.assert_close(
        slas_advantages(r, 4, gamma=0.0, clip=None),
        group_advantages(r, 4, scale="batch"),
    )


def test_slas_is_scale_free_and_no_std_is_not(rng):
    r = torch.tensor(rng.normal(size=16))
    a = slas_advantages(r, 4, gamma=1.0, eps=0.0)
    torch.testing.assert_close(slas_advantages(1e3 * r, 4, gamma=1.0, eps=0.0), a)
    torch.testing.assert_close(
        group_advantages(10 * r, 4, scale="none"),
        10 * group_advantages(r, 4, scale="none"),
    )


def test_shape_is_odd_and_superlinear():
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)
    s = shape_advantages(z, gamma=1.0, clip=None)
    torch.testing.assert_close(s, -shape_advantages(-z, gamma=1.0, clip=None))
    torch.testing.assert_close(s, z * z.abs())
    # Non-integer powers of negative numbers stay finite.
    assert torch.isfinite(shape_advantages(z, gamma=0.5)).all()


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_equal_rewards_give_zero_not_nan(scale, eps):
    # 0.1 is not exact in binary: the group mean can be off by one rounding step.
    r = torch.tensor([0.1] * 4 + [1.0, 2.0, 3.0, 4.0])
    a = group_advantages(r, 4, scale=scale, eps=eps)
    assert torch.equal(a[:4], torch.zeros(4))
    assert torch.isfinite(a).all()
    all_equal = group_advantages(torch.full((8,), 0.3), 4, scale=scale, eps=eps)
    assert torch.equal(all_equal, torch.zeros(8))
    assert torch.equal(slas_advantages(torch.full((8,), 0.3), 4, gamma=1.0), all_equal)


def test_nan_rewards_are_left_out_and_get_zero():
    r = torch.tensor([1.0, math.nan, 3.0, 5.0, 0.0, 1.0, 2.0, 3.0])
    a = group_advantages(r, 4)
    assert a[1] == 0
    kept = np.array([1.0, 3.0, 5.0])
    expected = (kept - kept.mean()) / (kept.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(a[[0, 2, 3]].numpy(), expected, rtol=1e-6)


def test_inf_rewards_warn_and_get_zero():
    r = torch.tensor([1.0, math.inf, 3.0, 5.0])
    with pytest.warns(RuntimeWarning, match="rewards contain inf"):
        a = group_advantages(r, 4)
    assert a[1] == 0 and torch.isfinite(a).all()


ADV_BAD = [
    ({"group_size": 1}, ValueError, r"group_size must be >= 2; got 1"),
    ({"group_size": 3}, ValueError, r"divisible by group_size=3; got 8"),
    ({"group_size": 2.0}, TypeError, r"group_size must be an int; got float"),
    ({"scale": "std"}, ValueError, r"scale must be one of .*; got 'std'"),
    ({"eps": -1e-4}, ValueError, r"eps must be >= 0\.0; got -0\.0001"),
    ({"ddof": 2}, ValueError, r"ddof must be 0 or 1; got 2"),
    ({"rewards": torch.zeros(2, 4)}, ValueError, r"rewards must be 1-D .*got shape"),
    ({"rewards": "abc"}, TypeError, r"rewards must be a 1-D tensor of numbers; got"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), ADV_BAD)
def test_group_advantages_bad_inputs(kwargs, exc, pattern):
    args = {"rewards": torch.arange(8.0), "group_size": 4, **kwargs}
    with pytest.raises(exc, match=pattern):
        group_advantages(**args)


SLAS_BAD = [
    ({"gamma": -0.5}, ValueError, r"gamma must be >= 0\.0; got -0\.5"),
    ({"gamma": math.nan}, ValueError, r"gamma must be >= 0\.0; got nan"),
    ({"gamma": "1"}, TypeError, r"gamma must be a real number; got str"),
    ({"clip": 0.0}, ValueError, r"clip must be > 0\.0; got 0\.0"),
    ({"group_size": 1}, ValueError, r"group_size must be >= 2; got 1"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), SLAS_BAD)
def test_slas_bad_inputs(kwargs, exc, pattern):
    args = {"rewards": torch.arange(8.0), "group_size": 4, "gamma": 1.0, **kwargs}
    with pytest.raises(exc, match=pattern):
        slas_advantages(**args)


def test_k3_matches_definition_and_is_nonnegative(rng):
    lp = torch.tensor(rng.normal(size=(3, 5)))
    ref = torch.tensor(rng.normal(size=(3, 5)))
    ratio = np.exp(ref.numpy() - lp.numpy())
    expected = ratio - np.log(ratio) - 1
    np.testing.assert_allclose(k3_kl(lp, ref).numpy(), expected, rtol=1e-12)
    assert (k3_kl(lp, ref) >= 0).all()
    assert torch.equal(k3_kl(lp, lp), torch.zeros_like(lp))


def _loop_loss(lp, old, adv, mask, eps_lo, eps_hi, loss_type, beta, ref, L):
    """Float64 per-token loop of the clipped surrogate and its reductions."""
    B, T = lp.shape
    per = np.zeros((B, T))
    for i in range(B):
        for t in range(T):
            rho = math.exp(lp[i, t] - old[i, t])
            a = adv[i]
            per[i, t] = -min(rho * a, min(max(rho, 1 - eps_lo), 1 + eps_hi) * a)
            if beta:
                d = ref[i, t] - lp[i, t]
                per[i, t] += beta * (math.exp(d) - d - 1) * rho
    m = per * mask
    if loss_type == "grpo":
        return np.mean([m[i].sum() / max(mask[i].sum(), 1) for i in range(B)])
    if loss_type == "bnpo":
        return m.sum() / mask.sum()
    if loss_type == "dr_grpo":
        return m.sum() / (B * L)
    return m.sum() / mask.sum()


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_policy_loss_matches_loop(rng, loss_type, beta):
    B, T = 5, 7
    lp = torch.tensor(rng.normal(size=(B, T)), requires_grad=True)
    old = lp.detach() + torch.tensor(0.3 * rng.normal(size=(B, T)))
    ref = lp.detach() + torch.tensor(0.3 * rng.normal(size=(B, T)))
    adv = torch.tensor(rng.normal(size=B))
    mask = torch.tensor((rng.uniform(size=(B, T)) > 0.3).astype(float))
    mask[:, 0] = 1
    loss, stats = policy_loss(
        lp,
        old,
        adv,
        mask,
        epsilon_low=0.2,
        epsilon_high=0.28,
        loss_type=loss_type,
        beta=beta,
        ref_logps=ref,
        max_completion_length=10,
    )
    expected = _loop_loss(
        lp.detach().numpy(),
        old.numpy(),
        adv.numpy(),
        mask.numpy(),
        0.2,
        0.28,
        loss_type,
        beta,
        ref.numpy(),
        10,
    )
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-10)
    assert 0 <= stats["clip_ratio/region_mean"] <= 1


def test_policy_loss_gradient_is_advantage_weighted_score():
    # On-policy (ratio 1), no clipping: d loss / d logp_it = -A_i / (B |o_i|).
    lp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.5, -0.5], dtype=torch.float64)
    loss, _ = policy_loss(lp, lp.detach(), adv)
    loss.backward()
    expected = (-adv[:, None] / (2 * 3)).expand(2, 3)
    torch.testing.assert_close(lp.grad, expected)


def test_policy_loss_gradcheck():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    old = lp.detach() + 0.05 * torch.randn(3, 4, dtype=torch.float64)
    ref = lp.detach() + 0.1 * torch.randn(3, 4, dtype=torch.float64)
    adv = torch.randn(3, dtype=torch.float64)
    torch.autograd.gradcheck(
        lambda x: policy_loss(x, old, adv, beta=0.1, ref_logps=ref, epsilon_low=1.0)[0],
        (lp,),
    )


LOSS_BAD = [
    ({"loss_type": "ppo"}, ValueError, r"loss_type must be one of .*; got 'ppo'"),
    ({"old_logps": torch.zeros(2, 4)}, ValueError, r"old_logps must have the shape"),
    ({"advantages": torch.zeros(3)}, ValueError, r"advantages must have shape \(2,\)"),
    ({"mask": torch.ones(2, 2)}, ValueError, r"mask must have the shape of logps"),
    ({"beta": 0.1}, ValueError, r"ref_logps is required when beta != 0"),
    ({"beta": -0.1}, ValueError, r"beta must be >= 0\.0; got -0\.1"),
    ({"epsilon_low": -0.2}, ValueError, r"epsilon_low must be >= 0\.0; got -0\.2"),
    ({"logps": torch.zeros(6)}, ValueError, r"logps must be 2-D"),
    ({"logps": [[0.0]]}, TypeError, r"logps must be a torch\.Tensor; got list"),
    (
        {"importance_sampling_level": "seq"},
        ValueError,
        r"importance_sampling_level must be 'token' or 'sequence'; got 'seq'",
    ),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), LOSS_BAD)
def test_policy_loss_bad_inputs(kwargs, exc, pattern):
    args = {
        "logps": torch.zeros(2, 3),
        "old_logps": torch.zeros(2, 3),
        "advantages": torch.zeros(2),
        **kwargs,
    }
    if "logps" in kwargs and isinstance(kwargs["logps"], torch.Tensor):
        args["old_logps"] = kwargs["logps"]
    with pytest.raises(exc, match=pattern):
        policy_loss(**args)


def test_k3_shape_mismatch():
    with pytest.raises(ValueError, match=r"ref_logps must have the shape of logps"):
        k3_kl(torch.zeros(2, 3), torch.zeros(3, 2))
