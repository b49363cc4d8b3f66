"""CoLoGen's Progressive Representation Weaving (arXiv:2602.22150): the LoRA
expert, the noisy top-1 router, the routed K/V deltas, the staged curriculum
and the veteran loss, against float64 loop references written from the
docstrings' equations; plus the "shapes world" scene sampler of the experiment."""

import itertools
import math
import re
import signal
import time

import numpy as np
import pytest
import torch
from torch import nn

from lemmata.nn._cologen import (
    LoRAExpert,
    PRWSourceKV,
    StagedCurriculum,
    noisy_top1_route,
    veteran_loss,
)

# --------------------------------------------------------------------- helpers


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _softplus(x):
    return np.log1p(np.exp(x))


def _expert_ref(h, A, B, scaling):
    """(h A^T B^T) * alpha / r as an explicit triple loop, float64."""
    L, d = h.shape
    r, o = A.shape[0], B.shape[0]
    out = np.zeros((L, o))
    for tok in range(L):
        for j in range(o):
            s = 0.0
            for q in range(r):
                s += B[j, q] * sum(A[q, i] * h[tok, i] for i in range(d))
            out[tok, j] = s * scaling
    return out


def _esc(msg):
    return re.escape(msg)


def _np(t):
    return t.detach().double().numpy()


def _prw(dim=6, kv_dim=5, rank=2, n=3, seed=0, lora_alpha=None):
    """A PRW layer with ``n`` experts, non-zero B and non-zero router columns."""
    torch.manual_seed(seed)
    m = PRWSourceKV(dim, kv_dim, rank=rank, lora_alpha=lora_alpha)
    for _ in range(n):
        m.add_expert()
    with torch.no_grad():
        for e in [*m.experts_k, *m.experts_v]:
            e.lora_B.normal_()
        for p in m.router_parameters():
            p.normal_()
    return m


def _route_ref(h, w_r, w_n, eps=None):
    """Per-sample loop of Eq. 2-3 on the mean-pooled tokens: probs and choice."""
    probs, choice = [], []
    for b in range(h.shape[0]):
        g = h[b].mean(0)
        w = g @ w_r
        if eps is not None:
            w = w + eps[b] * _softplus(g @ w_n)
        p = _softmax(w)
        probs.append(p)
        choice.append(int(np.argmax(p)))
    return np.array(probs), np.array(choice)


def _prw_ref(m, h, eps=None):
    """Loop reference of PRWSourceKV.forward: gated chosen expert per sample."""
    hn = _np(h)
    w_r = np.stack([_np(p) for p in m.router_r], 1)
    w_n = np.stack([_np(p) for p in m.router_n], 1)
    probs, choice = _route_ref(hn, w_r, w_n, None if eps is None else _np(eps))
    dk = np.zeros((*hn.shape[:2], m.kv_dim))
    dv = np.zeros_like(dk)
    for b in range(hn.shape[0]):
        k = choice[b]
        for experts, out in ((m.experts_k, dk), (m.experts_v, dv)):
            e = experts[k]
            out[b] = probs[b, k] * _expert_ref(
                hn[b], _np(e.lora_A), _np(e.lora_B), e.scaling
            )
    return dk, dv, probs, choice


# ------------------------------------------------------------------ LoRAExpert


def test_lora_expert_matches_hand_computation():
    torch.manual_seed(0)
    e = LoRAExpert(5, 3, rank=2, lora_alpha=3.0)
    with torch.no_grad():
        e.lora_B.normal_()
    assert e.lora_A.shape == (2, 5) and e.lora_B.shape == (3, 2)
    assert e.scaling == 1.5
    h = torch.randn(2, 4, 5)
    out = e(h)
    assert out.shape == (2, 4, 3)
    for b in range(2):
        ref = _expert_ref(_np(h[b]), _np(e.lora_A), _np(e.lora_B), 1.5)
        np.testing.assert_allclose(_np(out[b]), ref, rtol=1e-5, atol=1e-6)


def test_lora_expert_default_alpha_is_twice_rank():
    # alpha = 2r, so the scaling alpha / r is 2 for every rank (D5).
    for rank in (1, 3, 8):
        assert LoRAExpert(4, 4, rank).scaling == 2.0


def test_fresh_lora_expert_is_a_noop():
    torch.manual_seed(1)
    e = LoRAExpert(7, 4, rank=3)
    assert torch.count_nonzero(e.lora_B) == 0
    # Kaiming-uniform with a = sqrt(5): bound sqrt(6 / ((1 + 5) fan_in)).
    bound = 1 / math.sqrt(7)
    assert e.lora_A.abs().max() <= bound and e.lora_A.abs().max() > 0.5 * bound
    h = torch.randn(3, 2, 7)
    assert torch.equal(e(h), torch.zeros(3, 2, 4))


def test_fresh_prw_expert_leaves_base_kv_unchanged():
    torch.manual_seed(2)
    base = nn.Linear(6, 5)
    m = PRWSourceKV(6, 5, rank=2)
    m.add_expert()
    h = torch.randn(3, 4, 6)
    for train in (False, True):
        dk, dv = m(h, train=train)
        assert torch.equal(base(h) + dk, base(h))
        assert torch.equal(base(h) + dv, base(h))


# -------------------------------------------------------------------- routing


def test_route_without_noise_is_argmax_of_softmax():
    torch.manual_seed(3)
    g, w_r, w_n = torch.randn(6, 4), torch.randn(4, 3), torch.randn(4, 3)
    probs, choice = noisy_top1_route(g, w_r, w_n, train=False)
    assert probs.shape == (6, 3) and choice.shape == (6,)
    assert choice.dtype == torch.long
    for b in range(6):
        p = _softmax(_np(g[b]) @ _np(w_r))
        np.testing.assert_allclose(_np(probs[b]), p, rtol=1e-6)
        assert choice[b] == np.argmax(p)
        # The gate weight of the chosen expert is its softmax probability.
        assert probs[b, choice[b]].item() == pytest.approx(p.max(), rel=1e-6)
    # Inference ignores a supplied noise tensor (deterministic, Eq. 2).
    p2, c2 = noisy_top1_route(g, w_r, w_n, train=False, noise=torch.randn(6, 3))
    assert torch.equal(p2, probs) and torch.equal(c2, choice)


def test_route_with_explicit_noise_matches_eq2():
    torch.manual_seed(4)
    g, w_r, w_n = torch.randn(5, 4), torch.randn(4, 3), torch.randn(4, 3)
    eps = 3 * torch.randn(5, 3)
    probs, choice = noisy_top1_route(g, w_r, w_n, train=True, noise=eps)
    for b in range(5):
        gb = _np(g[b])
        w = gb @ _np(w_r) + _np(eps[b]) * _softplus(gb @ _np(w_n))
        p = _softmax(w)
        np.testing.assert_allclose(_np(probs[b]), p, rtol=1e-5)
        assert choice[b] == np.argmax(p)
    # The noise is large enough to change at least one decision.
    _, clean = noisy_top1_route(g, w_r, w_n, train=False)
    assert not torch.equal(clean, choice)


def test_route_noise_is_standard_normal_and_seeded():
    torch.manual_seed(5)
    g, w_r, w_n = torch.randn(8, 4), torch.randn(4, 3), torch.randn(4, 3)
    torch.manual_seed(123)
    p1, c1 = noisy_top1_route(g, w_r, w_n, train=True)
    torch.manual_seed(123)
    p2, c2 = noisy_top1_route(g, w_r, w_n, train=True)
    assert torch.equal(p1, p2) and torch.equal(c1, c2)
    # Same as an explicit eps ~ N(0, I) drawn from the same seed.
    torch.manual_seed(123)
    eps = torch.randn(8, 3)
    p3, c3 = noisy_top1_route(g, w_r, w_n, train=True, noise=eps)
    torch.testing.assert_close(p1, p3, rtol=0, atol=0)
    assert torch.equal(c1, c3)
    torch.manual_seed(124)
    p4, _ = noisy_top1_route(g, w_r, w_n, train=True)
    assert not torch.equal(p1, p4)


# ------------------------------------------------------------------ PRWSourceKV


def test_prw_forward_matches_loop_reference():
    m = _prw(seed=6)
    torch.manual_seed(7)
    h = torch.randn(8, 4, 6)
    base = nn.Linear(6, 5)
    for eps in (None, 2 * torch.randn(8, 3)):
        train = eps is not None
        dk, dv = m(h, train=train, noise=eps)
        rk, rv, probs, choice = _prw_ref(m, h, eps)
        assert len(set(choice.tolist())) >= 2  # the batch exercises several experts
        np.testing.assert_allclose(_np(dk), rk, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_np(dv), rv, rtol=1e-5, atol=1e-6)
        # Eq. 4: adapted KV = base KV + gated delta of the chosen expert.
        kv_base = _np(base(h))
        np.testing.assert_allclose(
            _np(base(h) + dk), kv_base + rk, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(_np(m.last_route["probs"]), probs, rtol=1e-5)
        assert m.last_route["choice"].tolist() == choice.tolist()


def test_prw_gradients_match_reference_autograd():
    """Gradients through the gate reach the router and only the chosen experts."""
    m = _prw(seed=8).double()
    torch.manual_seed(9)
    h = torch.randn(6, 3, 6, dtype=torch.float64)
    target = torch.randn(6, 3, 5, dtype=torch.float64)
    dk, dv = m(h, train=False)
    ((dk - target) ** 2 + dv**2).sum().backward()

    def leaf(t):
        return t.detach().clone().requires_grad_()

    w_r = leaf(torch.stack(list(m.router_r), 1))
    ref = {
        name: [(leaf(e.lora_A), leaf(e.lora_B), e.scaling) for e in experts]
        for name, experts in (("k", m.experts_k), ("v", m.experts_v))
    }
    loss, chosen = 0.0, set()
    for b in range(6):
        p = (h[b].mean(0) @ w_r).softmax(-1)
        k = int(p.argmax())
        chosen.add(k)
        deltas = {}
        for name in ("k", "v"):
            A, B, scaling = ref[name][k]
            deltas[name] = p[k] * (h[b] @ A.T @ B.T) * scaling
        loss = loss + ((deltas["k"] - target[b]) ** 2 + deltas["v"] ** 2).sum()
    loss.backward()
    assert len(chosen) >= 2
    torch.testing.assert_close(torch.stack([p.grad for p in m.router_r], 1), w_r.grad)
    for name, experts in (("k", m.experts_k), ("v", m.experts_v)):
        for k, e in enumerate(experts):
            A, B, _ = ref[name][k]
            if k in chosen:
                torch.testing.assert_close(e.lora_A.grad, A.grad)
                torch.testing.assert_close(e.lora_B.grad, B.grad)
            else:
                assert e.lora_B.grad is None or not e.lora_B.grad.any()
    # W_n gets no gradient without noise.
    assert all(p.grad is None or not p.grad.any() for p in m.router_n)


def test_prw_add_expert_grows_router_with_zero_columns_and_keeps_dtype():
    m = PRWSourceKV(4, 3, rank=2)
    m.add_expert()
    m.double()
    m.add_expert()
    assert m.num_experts == 2
    assert len(m.router_r) == len(m.router_n) == 2
    for p in [*m.router_parameters(), *m.expert_parameters(1)]:
        assert p.dtype == torch.float64
    assert all(torch.count_nonzero(p) == 0 for p in m.router_parameters())
    # A new stage with untrained router columns starts from uniform routing.
    m(torch.randn(5, 2, 4, dtype=torch.float64), train=False)
    torch.testing.assert_close(
        m.last_route["probs"], torch.full((5, 2), 0.5, dtype=torch.float64)
    )
    assert len(m.expert_parameters(0)) == 4


def test_prw_entropy_of_hard_usage():
    m = _prw(seed=10)
    torch.manual_seed(11)
    m(torch.randn(16, 2, 6), train=True, noise=3 * torch.randn(16, 3))
    counts = np.bincount(m.last_route["choice"].numpy(), minlength=3)
    p = counts[counts > 0] / counts.sum()
    assert m.entropy() == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-6)


# ---------------------------------------------------------------- veteran loss


@pytest.mark.parametrize(
    ("usage", "rho", "alpha"), [(0.3, 0.8, 0.5), (0.95, 0.8, 0.5), (0.5, 0.2, 2.0)]
)
def test_veteran_loss_by_hand(usage, rho, alpha):
    u = torch.tensor(usage, dtype=torch.float64, requires_grad=True)
    loss = veteran_loss(u, rho, alpha)
    assert loss.item() == pytest.approx(alpha * abs(usage - rho), rel=1e-12)
    loss.backward()
    # Gradient descent moves U toward rho: d L / d U = alpha * sign(U - rho).
    assert u.grad.item() == pytest.approx(alpha * math.copysign(1.0, usage - rho))
    stepped = usage - 0.01 * u.grad.item()
    assert abs(stepped - rho) < abs(usage - rho)


def test_curriculum_veteran_loss_uses_soft_usage_of_newest_expert():
    torch.manual_seed(12)
    layers = [PRWSourceKV(6, 5, rank=2) for _ in range(3)]
    cur = StagedCurriculum(layers, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.0))
    cur.start_stage(0)
    cur.start_stage(1)
    cur.start_stage(2, rho=0.7, alpha=0.5)
    with torch.no_grad():
        for m in layers:
            for p in m.router_parameters():
                p.normal_()
    h = torch.randn(4, 3, 6)
    eps = torch.randn(4, 3)
    for m in layers:
        m(h, train=True, noise=eps)
    soft, hard = [], []
    for m in layers:
        w_r = np.stack([_np(p) for p in m.router_r], 1)
        w_n = np.stack([_np(p) for p in m.router_n], 1)
        probs, choice = _route_ref(_np(h), w_r, w_n, _np(eps))
        soft += probs[:, 2].tolist()
        hard += (choice == 2).tolist()
    u_soft, u_hard = np.mean(soft), np.mean(hard)
    logs = cur.step(torch.zeros(()))
    assert logs["usage/soft"] == pytest.approx(u_soft, rel=1e-5)
    assert logs["usage/hard"] == pytest.approx(u_hard)
    assert logs["loss/veteran"] == pytest.approx(0.5 * abs(u_soft - 0.7), rel=1e-5)
    assert logs["loss/task"] == 0.0


@pytest.mark.parametrize("rho", [0.9, 0.1])
def test_curriculum_veteran_loss_pulls_usage_toward_rho(rho):
    torch.manual_seed(13)
    layers = [PRWSourceKV(6, 5, rank=2) for _ in range(2)]
    cur = StagedCurriculum(layers, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.5))
    cur.start_stage(0)
    cur.start_stage(1, rho=rho, alpha=1.0)
    h = torch.randn(8, 3, 6) + 1.0  # non-zero pooled features move the router
    usages = []
    for _ in range(5):
        for m in layers:
            m(h, train=False)
        usages.append(cur.step(torch.zeros(()))["usage/soft"])
    assert usages[0] == pytest.approx(0.5)  # zero router columns: uniform start
    gaps = [abs(u - rho) for u in usages]
    assert all(b < a for a, b in itertools.pairwise(gaps))


# ------------------------------------------------------------ staged curriculum


def _clone(params):
    return [p.detach().clone() for p in params]


def _toy_steps(cur, layers, n, seed):
    """``n`` curriculum steps on a toy regression; per layer, whether the newest
    expert was routed to in any step."""
    torch.manual_seed(seed)
    target = torch.randn(4, 3, 5)
    routed = [False] * len(layers)
    for _ in range(n):
        h = torch.randn(4, 3, 6)
        task = 0.0
        for i, m in enumerate(layers):
            dk, dv = m(h, train=True)
            task = task + ((dk - target) ** 2).mean() + ((dv + target) ** 2).mean()
            routed[i] |= bool((m.last_route["choice"] == m.num_experts - 1).any())
        cur.step(task)
    return routed


def test_staged_curriculum_freezes_earlier_experts():
    layers = [PRWSourceKV(6, 5, rank=2) for _ in range(2)]
    cur = StagedCurriculum(layers, lr=1e-2)
    for stage in range(3):
        opt = cur.start_stage(stage, rho=0.5 if stage else None, alpha=0.5)
        assert cur.stage == stage and opt is cur.optimizer
        for m in layers:
            assert m.num_experts == stage + 1
            for k in range(stage):
                assert not any(p.requires_grad for p in m.expert_parameters(k))
            assert all(p.requires_grad for p in m.expert_parameters(stage))
            assert all(p.requires_grad for p in m.router_parameters())
        # The optimizer holds exactly the newest experts and the routers.
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        want = {id(p) for p in cur.trainable_parameters()}
        frozen = [
            p for m in layers for k in range(stage) for p in m.expert_parameters(k)
        ]
        assert held == want and not held & {id(p) for p in frozen}
        assert len(want) == 2 * (4 + 2 * (stage + 1))

        before_frozen = _clone(frozen)
        before_new = _clone([p for m in layers for p in m.expert_parameters(stage)])
        before_router = _clone([p for m in layers for p in m.router_parameters()])
        routed = _toy_steps(cur, layers, 4, seed=20 + stage)
        assert any(routed)  # the newest expert was routed to at least once
        after_frozen = [p.detach() for p in frozen]
        assert all(
            torch.equal(a, b) for a, b in zip(before_frozen, after_frozen, strict=True)
        )
        # A newest expert trains exactly when the noisy router picked it.
        for m, hit in zip(layers, routed, strict=True):
            for e in (m.experts_k[stage], m.experts_v[stage]):
                assert bool(e.lora_B.any()) == hit
        after_new = [p for m in layers for p in m.expert_parameters(stage)]
        assert any(
            not torch.equal(a, b) for a, b in zip(before_new, after_new, strict=True)
        )
        if stage:  # one expert: softmax is 1 and the router has no gradient
            after_router = [p for m in layers for p in m.router_parameters()]
            assert any(
                not torch.equal(a, b)
                for a, b in zip(before_router, after_router, strict=True)
            )


def test_staged_curriculum_without_router_training():
    layers = [PRWSourceKV(6, 5, rank=2)]
    cur = StagedCurriculum(layers, lr=1e-2, train_router=False)
    cur.start_stage(0)
    cur.start_stage(1, rho=0.5, alpha=0.5)
    assert not any(p.requires_grad for p in layers[0].router_parameters())
    assert len(cur.trainable_parameters()) == 4
    before = _clone(layers[0].router_parameters())
    _toy_steps(cur, layers, 2, seed=30)
    after = layers[0].router_parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_stage_zero_has_no_veteran_loss():
    layers = [PRWSourceKV(6, 5, rank=2)]
    cur = StagedCurriculum(layers)
    cur.start_stage(0, rho=0.5, alpha=3.0)  # alpha ignored at stage 0
    layers[0](torch.randn(2, 3, 6), train=False)
    logs = cur.step(torch.zeros((), requires_grad=True))
    assert logs["loss/veteran"] == 0.0 and logs["usage/soft"] == 1.0


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("rho", "alpha", "exc", "msg"),
    [
        (0, 0.5, ValueError, "rho must lie in (0, 1); got 0.0"),
        (1, 0.5, ValueError, "rho must lie in (0, 1); got 1.0"),
        (-0.5, 0.5, ValueError, "rho must lie in (0, 1); got -0.5"),
        (1.5, 0.5, ValueError, "rho must lie in (0, 1); got 1.5"),
        (float("nan"), 0.5, ValueError, "rho must be finite; got nan"),
        ("0.5", 0.5, TypeError, "rho must be a real number; got str"),
        (0.5, -0.1, ValueError, "alpha must be >= 0; got -0.1"),
        (0.5, float("inf"), ValueError, "alpha must be finite; got inf"),
        (0.5, True, TypeError, "alpha must be a real number; got bool"),
    ],
)
def test_veteran_loss_rejects(rho, alpha, exc, msg):
    with pytest.raises(exc, match=f"^{_esc(msg)}$"):
        veteran_loss(torch.tensor(0.5), rho, alpha)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "msg"),
    [
        ((0, 3, 2), {}, ValueError, "in_features must be >= 1; got 0"),
        ((3, 0, 2), {}, ValueError, "out_features must be >= 1; got 0"),
        ((3, 3, 0), {}, ValueError, "rank must be >= 1; got 0"),
        ((3, 3, -2), {}, ValueError, "rank must be >= 1; got -2"),
        ((3, 3, 2.0), {}, TypeError, "rank must be an integer; got float"),
        (
            (3, 3, 2),
            {"lora_alpha": 0.0},
            ValueError,
            "lora_alpha must be > 0.0; got 0.0",
        ),
        (
            (3, 3, 2),
            {"lora_alpha": -1},
            ValueError,
            "lora_alpha must be > 0.0; got -1.0",
        ),
        (
            (3, 3, 2),
            {"lora_alpha": float("nan")},
            ValueError,
            "lora_alpha must be finite; got nan",
        ),
    ],
)
def test_lora_expert_rejects(args, kwargs, exc, msg):
    with pytest.raises(exc, match=f"^{_esc(msg)}$"):
        LoRAExpert(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "msg"),
    [
        ((0, 4), {}, ValueError, "dim must be >= 1; got 0"),
        ((4, 0), {}, ValueError, "kv_dim must be >= 1; got 0"),
        ((4, 4), {"rank": 0}, ValueError, "rank must be >= 1; got 0"),
        ((4, 4), {"rank": -1}, ValueError, "rank must be >= 1; got -1"),
        ((4, 4), {"rank": True}, TypeError, "rank must be an integer; got bool"),
        (
            (4, 4),
            {"top_k": 2},
            ValueError,
            "top_k must be 1 (only top-1 routing is supported); got 2",
        ),
        ((4, 4), {"top_k": 0}, ValueError, "top_k must be >= 1; got 0"),
    ],
)
def test_prw_constructor_rejects(args, kwargs, exc, msg):
    with pytest.raises(exc, match=f"^{_esc(msg)}$"):
        PRWSourceKV(*args, **kwargs)


def test_prw_rejects_bad_lora_alpha_when_adding_an_expert():
    m = PRWSourceKV(4, 4, lora_alpha=-2.0)
    with pytest.raises(
        ValueError, match=f"^{_esc('lora_alpha must be > 0.0; got -2.0')}$"
    ):
        m.add_expert()


@pytest.mark.parametrize(
    ("shape", "msg"),
    [
        ((3, 6), "h must have shape (batch, tokens, 6); got (3, 6)"),
        ((2, 3, 5), "h must have shape (batch, tokens, 6); got (2, 3, 5)"),
        ((1, 2, 3, 6), "h must have shape (batch, tokens, 6); got (1, 2, 3, 6)"),
    ],
)
def test_prw_forward_rejects_wrong_input(shape, msg):
    m = PRWSourceKV(6, 4, rank=2)
    m.add_expert()
    with pytest.raises(ValueError, match=f"^{_esc(msg)}$"):
        m(torch.randn(*shape), train=False)


def test_prw_forward_without_expert_raises():
    m = PRWSourceKV(6, 4, rank=2)
    msg = "PRWSourceKV has no expert; call add_expert() first"
    with pytest.raises(RuntimeError, match=f"^{_esc(msg)}$"):
        m(torch.randn(2, 3, 6), train=False)


@pytest.mark.parametrize(
    ("make", "exc", "msg"),
    [
        (lambda: [], TypeError, "layers must be a non-empty sequence of PRWSourceKV"),
        (
            lambda: [nn.Linear(2, 2)],
            TypeError,
            "layers must be a non-empty sequence of PRWSourceKV",
        ),
        (lambda: [_prw(n=0), _prw(n=1)], ValueError, None),
    ],
)
def test_curriculum_constructor_rejects(make, exc, msg):
    msg = msg or "layers must start with 0 experts; got counts [0, 1]"
    with pytest.raises(exc, match=f"^{_esc(msg)}$"):
        StagedCurriculum(make())


def test_curriculum_rejects_bad_lr():
    with pytest.raises(ValueError, match=f"^{_esc('lr must be > 0.0; got -1.0')}$"):
        StagedCurriculum([PRWSourceKV(4, 4)], lr=-1.0)


@pytest.mark.parametrize(
    ("done", "index", "kwargs", "exc", "msg"),
    [
        (
            0,
            1,
            {},
            ValueError,
            "index must be the next stage 0 (no skips or repeats); got 1",
        ),
        (
            1,
            0,
            {},
            ValueError,
            "index must be the next stage 1 (no skips or repeats); got 0",
        ),
        (
            1,
            2,
            {},
            ValueError,
            "index must be the next stage 1 (no skips or repeats); got 2",
        ),
        (0, -1, {}, ValueError, "index must be >= 0; got -1"),
        (0, 0.0, {}, TypeError, "index must be an integer; got float"),
        (0, 0, {"alpha": -0.5}, ValueError, "alpha must be >= 0; got -0.5"),
        (1, 1, {"alpha": -0.5}, ValueError, "alpha must be >= 0; got -0.5"),
        (1, 1, {"alpha": float("nan")}, ValueError, "alpha must be finite; got nan"),
        (1, 1, {"rho": 0, "alpha": 0.5}, ValueError, "rho must lie in (0, 1); got 0.0"),
        (1, 1, {"rho": 1, "alpha": 0.5}, ValueError, "rho must lie in (0, 1); got 1.0"),
        (
            1,
            1,
            {"rho": -0.5, "alpha": 0.5},
            ValueError,
            "rho must lie in (0, 1); got -0.5",
        ),
        (
            1,
            1,
            {"rho": 1.5, "alpha": 0.5},
            ValueError,
            "rho must lie in (0, 1); got 1.5",
        ),
        (
            1,
            1,
            {"rho": 0.5, "alpha": float("inf")},
            ValueError,
            "alpha must be finite; got inf",
        ),
    ],
)
def test_start_stage_rejects_and_leaves_state(done, index, kwargs, exc, msg):
    layers = [PRWSourceKV(4, 4, rank=2) for _ in range(2)]
    cur = StagedCurriculum(layers)
    for t in range(done):
        cur.start_stage(t)
    opt = cur.optimizer
    with pytest.raises(exc, match=f"^{_esc(msg)}$"):
        cur.start_stage(index, **kwargs)
    # Rejected before any layer was touched.
    assert cur.stage == done - 1 and cur.optimizer is opt
    assert [m.num_experts for m in layers] == [done, done]
    for m in layers:
        for k in range(done):
            assert all(p.requires_grad for p in m.expert_parameters(k))


def test_start_stage_rejects_expert_count_mismatch():
    m = PRWSourceKV(4, 4, rank=2)
    cur = StagedCurriculum([m, m])  # the same layer twice gets two experts
    msg = "expert count must be stage + 1 = 1; got 2"
    with pytest.raises(ValueError, match=f"^{_esc(msg)}$"):
        cur.start_stage(0)


def test_step_before_start_stage_raises():
    cur = StagedCurriculum([PRWSourceKV(4, 4)])
    with pytest.raises(
        RuntimeError, match=f"^{_esc('call start_stage(0) before step()')}$"
    ):
        cur.step(torch.zeros(()))


def test_start_stage_missing_rho_message_names_none():
    cur = StagedCurriculum([PRWSourceKV(4, 4)])
    cur.start_stage(0)
    with pytest.raises(ValueError, match=r"^rho .*None"):
        cur.start_stage(1, alpha=0.5)


# ----------------------------------------------------------------- scene sampler


def test_scene_sampler_terminates_and_spaces_objects():
    """Regression: the 8x8 sampler looped forever when the first object left no
    free spot (commit 5cbee7d)."""
    from lemmata.repro.cologen import _scene

    def _hang(signum, frame):
        raise TimeoutError("_scene did not return within 10 s")

    old = signal.signal(signal.SIGALRM, _hang)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        draws = [_scene(rng, 8, 2) for _ in range(2000)]
        elapsed = time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert elapsed < 1.0
    for img, objs in draws:
        assert img.shape == (3, 8, 8) and np.isfinite(img).all()
        assert len(objs) == 2
        for o in objs:
            assert 1 <= o["r"] <= 4 and 1 <= o["c"] <= 4  # 3x3 object inside
        a, b = objs
        assert abs(a["r"] - b["r"]) >= 3 or abs(a["c"] - b["c"]) >= 3
    # Every spot that leaves room for a second object is used as the first one;
    # the four central spots leave none and must never be kept.
    firsts = {(objs[0]["r"], objs[0]["c"]) for _, objs in draws}
    edge = {(r, c) for r in range(1, 5) for c in range(1, 5) if {r, c} & {1, 4}}
    assert firsts == edge
