"""Mask-GRPO: unmasking rollouts, transition probabilities and the update."""

import copy
import math

import pytest
import torch

from lemmata.posttrain._mask_grpo import (
    TRANSITIONS,
    MaskGITTransformer,
    MaskGRPO,
    MaskGRPOConfig,
    group_filter,
    mask_schedule,
    maskgit_loss,
    select_steps,
    transition_logps,
    unmask_rollout,
)
from lemmata.posttrain.grpo import group_advantages

N, V, T = 9, 5, 4


def _model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return MaskGITTransformer(V, N, 2, d_model=16, num_layers=1, num_heads=2).to(dtype)


def _rollout(model, batch=6, seed=0, cond=None):
    cond = torch.arange(batch) % 2 if cond is None else cond
    return unmask_rollout(
        model.eval(),
        batch,
        num_tokens=N,
        codebook_size=V,
        num_steps=T,
        cond=cond,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize(("n", "t"), [(16, 8), (9, 4), (5, 5), (1024, 50), (7, 1)])
def test_schedule_is_cosine_strict_and_complete(n, t):
    counts = mask_schedule(n, t)
    assert counts[-1] == 0
    previous = n
    for step, c in enumerate(counts):
        assert c < previous  # at least one token unmasked per step
        cosine = math.floor(n * math.cos(math.pi / 2 * (step + 1) / t))
        assert c <= cosine or c == t - 1 - step
        previous = c


def test_rollout_bookkeeping():
    traj = _rollout(_model())
    counts = mask_schedule(N, T)
    for t in range(T):
        assert (traj.masked[t + 1].sum(1) == counts[t]).all()
        kept = traj.unmasked(t)
        assert kept.sum(1).min() >= 1
        # A kept value never changes afterwards.
        assert torch.equal(traj.final[kept], traj.sampled[t][kept])
        # Positions known before the step are carried over unchanged.
        known = ~traj.masked[t]
        assert torch.equal(traj.sampled[t][known], traj.tokens[t][known])
    assert not traj.masked[-1].any()
    assert ((traj.thresholds > 0) & (traj.thresholds <= 1)).all()


def _reference_logp(model, traj, b, t, transition, bool_threshold=False):
    """Slow loop over positions, written from the formulas of the spec."""
    cond = traj.cond[b : b + 1]
    with torch.no_grad():
        logits = model(traj.tokens[t, b : b + 1], traj.masked[t, b : b + 1], cond)[0]
    probs = torch.softmax(logits, -1)
    c = float(traj.thresholds[t, b])
    c = 1.0 if (bool_threshold and c != 0) else c
    total = 0.0
    for i in range(N):
        before, after = bool(traj.masked[t, b, i]), bool(traj.masked[t + 1, b, i])
        x = int(traj.sampled[t, b, i])
        if transition == "ar" and before:
            total += math.log(float(probs[i, x]))
        elif transition != "ar" and before and not after:
            total += math.log(float(probs[i, x]))
        if transition == "unmask_remask" and after:
            below = sum(float(p) for p in probs[i] if float(p) < c)
            total += math.log(max(below, 1e-20))
    return total


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_transition_logps_match_position_loop(transition):
    model = _model()
    traj = _rollout(model)
    with torch.no_grad():
        got = transition_logps(model, traj, codebook_size=V, transition=transition)
    for b in range(3):
        for t in range(T):
            want = _reference_logp(model, traj, b, t, transition)
            assert got[b, t].item() == pytest.approx(want, abs=1e-9)


def test_released_bool_threshold_collapses_default_to_simpler():
    # The released mask_by_random_topk stores c_t in a bool tensor: every
    # non-zero c_t becomes 1, every p < 1 counts, and the re-masked term is
    # log(1) = 0, so the default candidate silently equals the simpler one.
    model = _model()
    traj = _rollout(model, batch=8)
    kw = {"codebook_size": V, "transition": "unmask_remask"}
    with torch.no_grad():
        released = transition_logps(model, traj, released_bool_threshold=True, **kw)
        simpler = transition_logps(model, traj, codebook_size=V, transition="unmask")
        default = transition_logps(model, traj, **kw)
    torch.testing.assert_close(released, simpler, atol=1e-6, rtol=0)
    # lemmata keeps the float threshold: the re-masked term is really there.
    remasked_steps = traj.masked[1:-1].any(-1).T  # steps 0..T-2 re-mask something
    gap = (default - simpler)[:, :-1][remasked_steps]
    assert (gap <= 1e-12).all()  # the extra term is a log-probability
    assert (gap < -1e-3).float().mean() > 0.5
    assert torch.equal(default[:, -1], simpler[:, -1])  # the last step re-masks none
    b, t = 0, 0
    assert released[b, t].item() == pytest.approx(
        _reference_logp(model, traj, b, t, "unmask_remask", bool_threshold=True),
        abs=1e-9,
    )


def test_update_equals_released_reinforce_gradient():
    # With one on-policy update the released loss is
    # -(1/T) sum_t mean_b A_b log pi_b(a_t | s_t) (rho = 1, clip inactive).
    model = _model(dtype=torch.float64)
    reference = copy.deepcopy(model)
    prompts = torch.tensor([0, 1])
    cfg = MaskGRPOConfig(N, V, num_steps=T, group_size=3, max_grad_norm=None)

    def reward(grids, cond):
        return (grids == cond[:, None]).double().mean(1)

    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    MaskGRPO(model, opt, reward, cfg).step(prompts, torch.Generator().manual_seed(3))

    traj = unmask_rollout(
        reference.eval(),
        6,
        num_tokens=N,
        codebook_size=V,
        num_steps=T,
        cond=prompts.repeat_interleave(3),
        generator=torch.Generator().manual_seed(3),
    )
    adv = group_advantages(reward(traj.final, traj.cond), 3)
    logps = transition_logps(reference.train(), traj, codebook_size=V)
    loss = -(adv[:, None] * logps).mean()
    loss.backward()
    # Updates are up to ~7e-3; transitions with probability ~1e-10 enter through
    # the log of small inner sums, which amplifies float64 round-off to ~1e-8
    # relative in a few gradient entries, so agreement is asked to 1e-8 absolute.
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q.detach() - 1e-2 * q.grad, rtol=0, atol=1e-8)


def test_filtering_drops_flat_groups_and_refills():
    model = _model(dtype=torch.float32)
    calls = []

    def reward(grids, cond):
        calls.append(len(cond))
        # Prompt 0 always gets the same reward: its groups are never informative.
        return torch.where(cond == 0, 0.5, (grids == 1).float().mean(1))

    cfg = MaskGRPOConfig(N, V, num_steps=T, group_size=3, filter_min_std=0.01,
                         max_refills=2)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stats = MaskGRPO(model, opt, reward, cfg).step(torch.tensor([0, 1]))
    assert calls == [6, 3, 3]  # one refill per round for the flat group
    assert stats["groups/filtered"] == 3.0
    assert stats["backward/samples"] == 3 * T  # only prompt 1's group remains


def test_group_filter_and_select_steps():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.5])
    assert group_filter(r, 3, 0.05).tolist() == [False, True]
    assert select_steps(8, "all") == list(range(8))
    assert select_steps(8, "first") == [0, 1, 2, 3]
    steps = select_steps(8, "random", generator=torch.Generator().manual_seed(0))
    assert len(steps) == 4 and steps == sorted(set(steps))


def test_kl_against_frozen_reference_is_zero_at_start():
    model = _model(dtype=torch.float32)
    ref = copy.deepcopy(model)
    cfg = MaskGRPOConfig(N, V, num_steps=T, group_size=2, beta=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = MaskGRPO(model, opt, lambda g, c: g.float().mean(1), cfg, ref_model=ref)
    assert trainer.step(torch.tensor([0, 1]))["kl"] == pytest.approx(0.0, abs=1e-6)
    assert trainer.step(torch.tensor([0, 1]))["kl"] > 0.0


def test_maskgit_loss_trains():
    model = _model(dtype=torch.float32)
    grids = torch.arange(N).repeat(16, 1) % V
    cond = torch.zeros(16, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    first = None
    for _ in range(40):
        loss = maskgit_loss(model, grids, cond, codebook_size=V, generator=gen)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


class _WrongGrid(torch.nn.Module):
    def __init__(self, extra_tokens=0, extra_values=0):
        super().__init__()
        self.extra = (extra_tokens, extra_values)

    def forward(self, tokens, mask):
        b, n = tokens.shape
        return torch.zeros(b, n + self.extra[0], V + self.extra[1])


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (_WrongGrid(extra_tokens=1), r"to match the token grid; got \(2, 10, 5\)"),
        (_WrongGrid(extra_values=1), r"\(2, 9, 5\) to match the token grid; got"),
    ],
)
def test_logits_must_match_token_grid(model, match):
    with pytest.raises(ValueError, match=match):
        unmask_rollout(model, 2, num_tokens=N, codebook_size=V, num_steps=T)


BAD_CONFIGS = [
    ({"group_size": 1}, ValueError, r"group_size must be >= 2; got 1"),
    ({"transition": "full"}, ValueError, r"transition must be one of .*'ar'.*'full'"),
    ({"num_steps": 10}, ValueError, r"num_steps must be <= num_tokens=9"),
    ({"num_steps": 0}, ValueError, r"num_steps must be >= 1; got 0"),
    ({"epsilon_low": 1.0}, ValueError, r"epsilon_low must be in \[0, 1\); got 1\.0"),
    ({"epsilon_high": 0.0}, ValueError, r"epsilon_high must be > 0; got 0\.0"),
    ({"beta": -0.1}, ValueError, r"beta must be >= 0; got -0\.1"),
    ({"train_steps": "last"}, ValueError, r"strategy must be one of"),
    ({"group_size": 2.0}, TypeError, r"group_size must be an int; got float"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_CONFIGS)
def test_bad_config(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MaskGRPOConfig(**{"num_tokens": N, "codebook_size": V, **kwargs})


def test_bad_inputs_elsewhere():
    model = _model()
    traj = _rollout(model)
    with pytest.raises(ValueError, match=r"token ids must be < codebook_size=3"):
        transition_logps(model, traj, codebook_size=3)
    with pytest.raises(ValueError, match=r"steps must be a non-empty subset"):
        transition_logps(model, traj, [T], codebook_size=V)
    with pytest.raises(ValueError, match=r"ref_model is required when beta > 0"):
        MaskGRPO(model, None, None, MaskGRPOConfig(N, V, num_steps=T, beta=0.1))
    with pytest.raises(TypeError, match=r"config must be a MaskGRPOConfig; got dict"):
        MaskGRPO(model, None, None, {})
    cfg = MaskGRPOConfig(N, V, num_steps=T, group_size=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bad = MaskGRPO(model, opt, lambda g, c: torch.full((len(c),), math.nan), cfg)
    with pytest.raises(ValueError, match=r"reward_fn must return 2 finite rewards"):
        bad.step(torch.tensor([0]))


def test_kl_stays_finite_when_the_reference_is_far_away():
    # A policy with much sharper logits than its reference: the re-mask terms of
    # the policy hit the 1e-20 floor, so the summed per-step log-ratio to the
    # reference passes exp's float32 range; the clipped k3 term stays finite.
    model = _model(dtype=torch.float32)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)
    cfg = MaskGRPOConfig(N, V, num_steps=T, group_size=2, beta=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer = MaskGRPO(model, opt, lambda g, c: g.float().mean(1), cfg, ref_model=ref)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        stats = trainer.step(torch.tensor([0, 1]), gen)
        assert math.isfinite(stats["loss"]) and math.isfinite(stats["kl"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
