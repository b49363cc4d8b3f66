"""Preference losses: TRL 1.16 agreement, paper-equation references, bad inputs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

import torch.nn.functional as F  # noqa: E402
from trl import DPOTrainer  # noqa: E402

from lemmata.posttrain._preference import (  # noqa: E402
    DIVERGENCES,
    ddpm_elbo_scale,
    diffusion_preference_loss,
    divergence_score,
    divergence_weight,
    mio_loss,
    preference_loss,
)

# The agreement tests call TRL's own loss code; its alpha parametrisation and the
# bco_pair form changed between releases, so the version is pinned.
TRL_VERSION = "1.16.0"

pytestmark = pytest.mark.skipif(
    trl.__version__ != TRL_VERSION,
    reason=f"agreement tests are written against trl=={TRL_VERSION}",
)


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def _trl_loss(
    logps, *, beta, loss_type="sigmoid", f_divergence_type="reverse_kl", coef=0.5
):
    """Mean loss from TRL's DPOTrainer._compute_loss on given sequence log-probs.

    A stub model returns per-token log-probs whose completion sum is exactly the
    given sequence log-prob, and the reference log-probs are passed as TRL's
    precomputed columns, so TRL's own loss code runs on our numbers.
    """
    chosen, rejected, ref_chosen, ref_rejected = logps
    n = chosen.shape[0]
    seq = torch.cat([chosen, rejected])
    per_token = torch.stack([seq, torch.zeros_like(seq)], dim=1)  # (2B, 2)
    completion_mask = torch.tensor([[0, 1, 0]] * (2 * n))
    ones = torch.ones(2 * n, 2)

    def model(**kwargs):
        return SimpleNamespace(
            log_probs=per_token,
            entropy=ones,
            mean_logits=ones,
            is_top1=ones.bool(),
        )

    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=coef,
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(discopop_tau=0.05),
    )
    inputs = {
        "input_ids": torch.zeros(2 * n, 3, dtype=torch.long),
        "attention_mask": torch.ones(2 * n, 3, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return DPOTrainer._compute_loss(stub, model, inputs, False)


def _logps(rng, n=16, dtype=torch.float64, spread=3.0):
    base = torch.from_numpy(rng.normal(-20.0, 5.0, size=(4, n))).to(dtype)
    # Keep policy and reference close, as in training (|h| of a few nats).
    base[0] = base[2] + spread * torch.from_numpy(rng.normal(size=n)).to(dtype)
    base[1] = base[3] + spread * torch.from_numpy(rng.normal(size=n)).to(dtype)
    return [t.clone().requires_grad_(True) for t in base]


# Every f_divergence_type TRL 1.16 implements, with our name and alpha.
# TRL's coefficient a' is 1 - a (f-DPO's a), so a = 0.3 is coef 0.7.
TRL_DIVERGENCES = [
    ("reverse_kl", "reverse_kl", 0.5, 0.5, torch.float64),
    ("forward_kl", "forward_kl", 0.5, 0.5, torch.float64),
    ("js_divergence", "jensen_shannon", 0.5, 0.5, torch.float64),
    # Alpha runs in float32: TRL's clamp table has no float64 key.
    ("alpha_divergence", "alpha", 0.5, 0.5, torch.float32),
    ("alpha_divergence", "alpha", 0.7, 0.3, torch.float32),
    ("alpha_divergence", "alpha", 0.3, 0.7, torch.float32),
]


def _close(a, b, dtype):
    # float32 (alpha only): 1e-6 relative, as TRL's own computation rounds there.
    if dtype == torch.float32:
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 1.0])
@pytest.mark.parametrize(
    ("trl_name", "name", "coef", "alpha", "dtype"), TRL_DIVERGENCES
)
def test_preference_loss_matches_trl(rng, beta, trl_name, name, coef, alpha, dtype):
    ours_in = _logps(rng, dtype=dtype)
    trl_in = [t.detach().clone().requires_grad_(True) for t in ours_in]

    ours = preference_loss(*ours_in, beta=beta, divergence=name, alpha=alpha).mean()
    theirs = _trl_loss(trl_in, beta=beta, f_divergence_type=trl_name, coef=coef)
    _close(ours.detach(), theirs.detach(), dtype)

    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, trl_in, strict=True):
        _close(a.grad, b.grad, dtype)


def test_mio_is_half_trl_bco_pair(rng):
    ours_in = _logps(rng)
    trl_in = [t.detach().clone().requires_grad_(True) for t in ours_in]
    ours = 2.0 * mio_loss(*ours_in, beta=0.5).mean()
    theirs = _trl_loss(trl_in, beta=0.5, loss_type="bco_pair")
    _close(ours.detach(), theirs.detach(), torch.float64)
    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, trl_in, strict=True):
        _close(a.grad, b.grad, torch.float64)


def _f_prime(name, u, a):
    # f'(u) straight from the f-DPO table, constants included.
    return {
        "reverse_kl": lambda: math.log(u) + 1.0,
        "forward_kl": lambda: -1.0 / u,
        "jensen_shannon": lambda: math.log(2.0 * u / (1.0 + u)),
        "alpha": lambda: (1.0 - u ** (-a)) / a,
    }[name]()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_preference_loss_matches_paper_loop(rng, name):
    logps = [t.detach() for t in _logps(rng, n=8, spread=1.5)]
    ours = preference_loss(*logps, beta=0.7, divergence=name, alpha=0.4)
    for i in range(8):
        hw = float(logps[0][i] - logps[2][i])
        hl = float(logps[1][i] - logps[3][i])
        z = 0.7 * (
            _f_prime(name, math.exp(hw), 0.4) - _f_prime(name, math.exp(hl), 0.4)
        )
        expected = -math.log(1.0 / (1.0 + math.exp(-z)))
        assert ours[i].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_zero_logratios_give_log2(name):
    x = torch.full((5,), -3.0, dtype=torch.float64)
    loss = preference_loss(x, x, x, x, beta=2.0, divergence=name)
    torch.testing.assert_close(loss, torch.full_like(loss, math.log(2.0)))


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_gradcheck_and_weight(rng, name):
    logps = _logps(rng, n=6, spread=1.0)
    assert torch.autograd.gradcheck(
        lambda *a: preference_loss(*a, beta=0.5, divergence=name, alpha=0.3), logps
    )
    # d g(h) / dh equals the registered weight g'(h).
    h = torch.linspace(-4, 4, 17, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(divergence_score(h, name, 0.3).sum(), h)
    torch.testing.assert_close(grad, divergence_weight(h.detach(), name, 0.3))


def test_extreme_logratios_stay_finite():
    big = torch.tensor([-500.0, 500.0, 0.0], requires_grad=True)
    zero = torch.zeros(3)
    for name in DIVERGENCES:
        loss = preference_loss(
            big, -big.detach(), zero, zero, beta=10.0, divergence=name
        )
        (g,) = torch.autograd.grad(loss.sum(), big)
        assert torch.isfinite(loss).all() and torch.isfinite(g).all(), name
    loss = mio_loss(big, big.detach(), zero, zero, beta=10.0)
    assert torch.isfinite(loss).all()


def test_mio_gradients_are_decoupled(rng):
    # dL/dh_w = -beta/2 sigmoid(-beta h_w) whatever h_l is.
    hw = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(2, dtype=torch.float64)
    for hl in (torch.tensor([-5.0, 5.0]), torch.tensor([2.0, 0.0])):
        loss = mio_loss(hw, hl.double(), zero, zero, beta=0.8).sum()
        (g,) = torch.autograd.grad(loss, hw)
        torch.testing.assert_close(g, -0.4 * torch.sigmoid(-0.8 * hw.detach()))


def test_diffusion_reverse_kl_matches_diffusion_dpo(rng):
    # Diffusers' Diffusion-DPO: mse averaged over non-batch dims, one (t, eps),
    # logits = (ref_w - pol_w) - (ref_l - pol_l), loss = -logsigmoid(beta_dpo logits).
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(2, 4, 3, 8, 8, generator=g, dtype=torch.float64)
    preds = [
        eps + 0.1 * torch.randn(eps.shape, generator=g, dtype=torch.float64)
        for _ in range(2)
    ]
    pol, ref = preds
    mse = lambda p: ((p - eps) ** 2).mean(dim=(2, 3, 4))  # noqa: E731
    pol_w, pol_l = mse(pol)
    ref_w, ref_l = mse(ref)
    beta_dpo = 2500.0
    expected = -F.logsigmoid(beta_dpo * ((ref_w - pol_w) - (ref_l - pol_l)))
    ours = diffusion_preference_loss(
        pol_w, pol_l, ref_w, ref_l, beta=25.0, scale=100.0, divergence="reverse_kl"
    )
    torch.testing.assert_close(ours, expected)


def test_diffusion_averages_draws_before_score(rng):
    errs = [torch.from_numpy(rng.uniform(0.5, 1.5, size=(3, 4))) for _ in range(4)]
    scale = torch.from_numpy(rng.uniform(0.5, 2.0, size=(3, 4)))
    ours = diffusion_preference_loss(
        *errs, beta=1.3, divergence="forward_kl", scale=scale
    )
    hw = (scale * (errs[2] - errs[0])).mean(dim=1)
    hl = (scale * (errs[3] - errs[1])).mean(dim=1)
    expected = -F.logsigmoid(1.3 * (torch.exp(-hl) - torch.exp(-hw)))
    torch.testing.assert_close(ours, expected)


def test_ddpm_elbo_scale_closed_form():
    betas = torch.linspace(1e-4, 0.02, 100, dtype=torch.float64)
    t = torch.tensor([1, 50, 100])
    s = ddpm_elbo_scale(t, betas)
    for k, tk in enumerate(t.tolist()):
        b = betas[tk - 1].item()
        abar = math.prod(1 - betas[i].item() for i in range(tk))
        assert s[k].item() == pytest.approx(100 * b / (2 * (1 - b) * (1 - abar)))


_X = torch.zeros(4)
_GOOD_PAIR_ARGS = {
    "policy_chosen_logps": _X,
    "policy_rejected_logps": _X,
    "ref_chosen_logps": _X,
    "ref_rejected_logps": _X,
    "beta": 0.1,
}

BAD_PREFERENCE = [
    ({"beta": 0.0}, ValueError, r"beta must be > 0 and finite; got 0\.0"),
    ({"beta": -1.0}, ValueError, r"beta must be > 0 and finite; got -1\.0"),
    ({"beta": float("nan")}, ValueError, r"beta must be > 0 and finite; got nan"),
    ({"beta": "1"}, TypeError, r"beta must be a real number; got str"),
    (
        {"divergence": "chi2"},
        ValueError,
        r"divergence must be one of \['alpha', 'forward_kl', 'jensen_shannon', "
        r"'reverse_kl', .*\]; got 'chi2'",
    ),
    ({"divergence": 3}, TypeError, r"divergence must be a str; got int"),
    (
        {"divergence": "alpha", "alpha": 1.0},
        ValueError,
        r"alpha must be in \(0, 1\); got 1\.0",
    ),
    (
        {"divergence": "alpha", "alpha": 0.0},
        ValueError,
        r"alpha must be in \(0, 1\); got 0\.0",
    ),
    (
        {"policy_rejected_logps": torch.zeros(3)},
        ValueError,
        r"policy_rejected_logps must have the shape of policy_chosen_logps \(4,\); "
        r"got \(3,\)",
    ),
    (
        {"ref_chosen_logps": torch.tensor([0.0, float("nan"), 0.0, 0.0])},
        ValueError,
        r"ref_chosen_logps must be finite",
    ),
    (
        {"policy_chosen_logps": [0.0] * 4},
        TypeError,
        r"policy_chosen_logps must be a torch.Tensor; got list",
    ),
    (
        {"policy_chosen_logps": torch.zeros(4, dtype=torch.long)},
        TypeError,
        r"policy_chosen_logps must be a floating-point tensor",
    ),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), BAD_PREFERENCE)
def test_preference_loss_bad_inputs(kwargs, exc, pattern):
    args = {**_GOOD_PAIR_ARGS, **kwargs}
    with pytest.raises(exc, match=pattern):
        preference_loss(**args)


BAD_MIO = [
    ({"beta": 0}, ValueError, r"beta must be > 0 and finite; got 0"),
    (
        {"rejected_weight": -0.5},
        ValueError,
        r"rejected_weight must be >= 0 and finite; got -0\.5",
    ),
    (
        {"ref_rejected_logps": torch.tensor([0.0, 0.0, float("inf"), 0.0])},
        ValueError,
        r"ref_rejected_logps must be finite",
    ),
    (
        {
            "policy_chosen_logps": torch.zeros(0),
            "policy_rejected_logps": torch.zeros(0),
            "ref_chosen_logps": torch.zeros(0),
            "ref_rejected_logps": torch.zeros(0),
        },
        ValueError,
        r"policy_chosen_logps must hold at least one example",
    ),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), BAD_MIO)
def test_mio_loss_bad_inputs(kwargs, exc, pattern):
    args = {**_GOOD_PAIR_ARGS, **kwargs}
    with pytest.raises(exc, match=pattern):
        mio_loss(**args)


BAD_DIFFUSION = [
    ({"scale": 0.0}, ValueError, r"scale must be > 0 and finite; got 0\.0"),
    (
        {"scale": torch.tensor([1.0, -1.0, 1.0, 1.0])},
        ValueError,
        r"scale must be > 0 everywhere",
    ),
    (
        {
            "policy_chosen_err": torch.zeros(4, 1, 1),
            "policy_rejected_err": torch.zeros(4, 1, 1),
            "ref_chosen_err": torch.zeros(4, 1, 1),
            "ref_rejected_err": torch.zeros(4, 1, 1),
        },
        ValueError,
        r"policy_chosen_err must have shape \(B,\) or \(B, K\); got \(4, 1, 1\)",
    ),
    (
        {"divergence": "hellinger"},
        ValueError,
        r"divergence must be one of .*'hellinger'",
    ),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), BAD_DIFFUSION)
def test_diffusion_loss_bad_inputs(kwargs, exc, pattern):
    args = {
        "policy_chosen_err": _X,
        "policy_rejected_err": _X,
        "ref_chosen_err": _X,
        "ref_rejected_err": _X,
        "beta": 0.1,
    }
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        diffusion_preference_loss(**args)


@pytest.mark.parametrize(
    ("t", "pattern"),
    [
        (
            torch.tensor([0, 3]),
            r"timesteps must lie in \[1, 10\]; got values in \[0, 3\]",
        ),
        (torch.tensor([11]), r"timesteps must lie in \[1, 10\]"),
    ],
)
def test_ddpm_elbo_scale_bad_timesteps(t, pattern):
    with pytest.raises(ValueError, match=pattern):
        ddpm_elbo_scale(t, torch.full((10,), 0.01))
