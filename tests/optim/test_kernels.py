"""The multi-tensor path against the per-parameter loop, the dual state against
recomputing the mirror map, weights changed outside step(), the cheap
non-finite check, and torch.compile."""

import copy
import io
import logging
import math

import numpy as np
import pytest
import torch

from lemmata.optim import PGD, MirrorDescent, PNormPower, PNormSquared, mirror_descent

SHAPES = [(5,), (3, 4), (2, 3, 2), (), (1, 7), (2, 0)]


def make_params(rng, dtype=torch.float64, shapes=SHAPES):
    return [
        torch.tensor(rng.standard_normal(s), dtype=dtype, requires_grad=True)
        for s in shapes
    ]


def run(params, optimizer, grads_per_step):
    for grads in grads_per_step:
        for w, g in zip(params, grads, strict=True):
            w.grad = g.clone()
        optimizer.step()
    return [w.detach().clone() for w in params]


def grad_sequence(rng, params, steps, scale=1.0):
    return [
        [
            torch.tensor(scale * rng.standard_normal(tuple(w.shape)), dtype=w.dtype)
            for w in params
        ]
        for _ in range(steps)
    ]


def twin_runs(rng, make_optimizer, kwargs_a, kwargs_b, dtype=torch.float64, steps=6):
    params_a = make_params(rng, dtype)
    params_b = [w.detach().clone().requires_grad_() for w in params_a]
    grads = grad_sequence(rng, params_a, steps)
    out_a = run(params_a, make_optimizer(params_a, **kwargs_a), grads)
    out_b = run(params_b, make_optimizer(params_b, **kwargs_b), grads)
    return out_a, out_b


# ------------------------------------------------ foreach path == loop path

VARIANTS = [
    {},
    {"weight_decay": 0.1},
    {"maximize": True},
    {"weight_decay": 0.1, "maximize": True},
]


@pytest.mark.parametrize("p", [1.1, 1.5, 2.0, 2.5, 3.0, 10.0])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dual_state", [True, False])
def test_foreach_matches_loop(rng, p, variant, dual_state):
    def make(params, **kwargs):
        return PGD(params, lr=0.01, p=p, dual_state=dual_state, **variant, **kwargs)

    with pytest.warns(UserWarning) if p > 6 else _no_warning():
        out_foreach, out_loop = twin_runs(
            rng, make, {"foreach": True}, {"foreach": False}
        )
    for a, b in zip(out_foreach, out_loop, strict=True):
        # The same elementwise operations; only pow may round differently in
        # its vectorised and scalar code paths.
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_foreach_matches_loop_in_low_precision(rng, dtype):
    def make(params, **kwargs):
        return PGD(params, lr=0.01, p=3.0, weight_decay=0.01, **kwargs)

    out_foreach, out_loop = twin_runs(
        rng, make, {"foreach": True}, {"foreach": False}, dtype=dtype
    )
    for a, b in zip(out_foreach, out_loop, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "potential", [PNormSquared(1.5), PNormSquared(3.0), PNormPower(2.5)]
)
def test_mirror_descent_foreach_matches_loop(rng, potential):
    def make(params, **kwargs):
        return MirrorDescent(params, lr=0.05, potential=potential, **kwargs)

    out_foreach, out_loop = twin_runs(rng, make, {"foreach": True}, {"foreach": False})
    for a, b in zip(out_foreach, out_loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-300)


def test_mixed_dtypes_in_one_group_are_bucketed(rng):
    dtypes = [torch.float64, torch.float32, torch.bfloat16, torch.float32]
    shapes = [(4,), (3, 2), (5,), (2,)]
    params_a = [
        torch.tensor(rng.standard_normal(s), dtype=d, requires_grad=True)
        for s, d in zip(shapes, dtypes, strict=True)
    ]
    params_b = [w.detach().clone().requires_grad_() for w in params_a]
    grads = grad_sequence(rng, params_a, 4)
    out_a = run(params_a, PGD(params_a, lr=0.02, p=1.5, foreach=True), grads)
    out_b = run(params_b, PGD(params_b, lr=0.02, p=1.5, foreach=False), grads)
    for a, b, dtype in zip(out_a, out_b, dtypes, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_functional_paths_agree_and_update_duals(rng):
    w_np = [rng.standard_normal(s) for s in SHAPES[:3]]
    g_np = [rng.standard_normal(s) for s in SHAPES[:3]]
    potential = PNormPower(3.0)
    results = []
    for foreach in (True, False):
        ws = [torch.tensor(w) for w in w_np]
        duals = [potential.mirror_map(w) for w in ws]
        with torch.no_grad():
            mirror_descent(
                ws,
                [torch.tensor(g) for g in g_np],
                duals,
                potential=potential,
                lr=0.1,
                foreach=foreach,
            )
        expected_duals = [
            np.sign(w) * np.abs(w) ** 2 - 0.1 * g
            for w, g in zip(w_np, g_np, strict=True)
        ]
        for dual, expected in zip(duals, expected_duals, strict=True):
            np.testing.assert_allclose(dual.numpy(), expected, rtol=1e-14)
        results.append(ws)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_functional_rejects_dual_length_mismatch():
    with pytest.raises(
        ValueError, match=r"duals must have one entry per parameter \(1\); got 2"
    ):
        mirror_descent(
            [torch.zeros(2)],
            [torch.zeros(2)],
            [torch.zeros(2), torch.zeros(2)],
            potential=PNormPower(3),
            lr=0.1,
        )


# ------------------------------------------ p = 2 is SGD, bit for bit


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_p2_is_sgd_bit_for_bit(rng, foreach, variant):
    def make_pgd(params):
        return PGD(params, lr=0.03, p=2.0, foreach=foreach, **variant)

    def make_sgd(params):
        return torch.optim.SGD(params, lr=0.03, foreach=foreach, **variant)

    params_a = make_params(rng, torch.float32)
    params_b = [w.detach().clone().requires_grad_() for w in params_a]
    grads = grad_sequence(rng, params_a, 8)
    for a, b in zip(
        run(params_a, make_pgd(params_a), grads),
        run(params_b, make_sgd(params_b), grads),
        strict=True,
    ):
        assert torch.equal(a, b)


# --------------------------------------------- dual state vs recomputation


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("p", [1.5, 3.0])
def test_dual_state_matches_recomputing_in_float64(rng, foreach, p):
    def make(params, **kwargs):
        return PGD(params, lr=0.01, p=p, foreach=foreach, **kwargs)

    out_dual, out_recompute = twin_runs(
        rng, make, {"dual_state": True}, {"dual_state": False}, steps=30
    )
    for a, b in zip(out_dual, out_recompute, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("foreach", [True, False])
def test_dual_state_accumulates_steps_below_bfloat16_resolution(foreach):
    # lr * g = 1e-3 is below half the bfloat16 spacing at 1.0 (2**-8), so a step
    # recomputed from the rounded weight never moves it; the float32 dual adds up.
    w_dual = torch.ones(4, dtype=torch.bfloat16, requires_grad=True)
    w_recompute = torch.ones(4, dtype=torch.bfloat16, requires_grad=True)
    opt_dual = PGD([w_dual], lr=1e-3, p=2.0, foreach=foreach)
    opt_recompute = PGD(
        [w_recompute], lr=1e-3, p=2.0, dual_state=False, foreach=foreach
    )
    for _ in range(100):
        for w, optimizer in ((w_dual, opt_dual), (w_recompute, opt_recompute)):
            w.grad = torch.ones(4, dtype=torch.bfloat16)
            optimizer.step()
    assert torch.equal(w_recompute.detach(), torch.ones(4, dtype=torch.bfloat16))
    expected = torch.tensor(0.9, dtype=torch.bfloat16)  # 1 - 100 * 1e-3, rounded
    assert torch.all(torch.abs(w_dual.detach().float() - 0.9) <= 2**-8)
    assert w_dual.dtype == expected.dtype
    assert opt_dual.state[w_dual]["dual"].dtype == torch.float32


def test_dual_state_is_one_buffer_per_parameter(rng):
    params = make_params(rng, torch.float32)
    optimizer = PGD(params, lr=0.01, p=3.0)
    run(params, optimizer, grad_sequence(rng, params, 2))
    for w in params:
        dual = optimizer.state[w]["dual"]
        assert dual.shape == w.shape and dual.dtype == torch.float32
        np.testing.assert_allclose(
            dual.numpy(),
            np.sign(w.detach().numpy()) * np.abs(w.detach().numpy()) ** 2,
            rtol=1e-5,
            atol=1e-7,
        )
    assert set(optimizer.state[params[0]]) == {"dual"}


def test_no_state_without_dual(rng):
    params = make_params(rng)
    optimizer = PGD(params, lr=0.01, p=3.0, dual_state=False)
    run(params, optimizer, grad_sequence(rng, params, 2))
    assert all(not optimizer.state[w] for w in params)


# ----------------------------------------- weights changed outside step()


def one_step_reference(w, g, lr, p):
    u = np.sign(w) * np.abs(w) ** (p - 1) - lr * g
    return np.sign(u) * np.abs(u) ** (1 / (p - 1))


def changed_then_stepped(rng, change, foreach):
    """Step, change the weights, step again; return (w after change, w after)."""
    model = torch.nn.Linear(3, 2).double()
    optimizer = PGD(model.parameters(), lr=0.05, p=3.0, foreach=foreach)
    grads = grad_sequence(rng, list(model.parameters()), 2)
    run(list(model.parameters()), optimizer, grads[:1])

    change(model)
    before = [w.detach().clone().numpy() for w in model.parameters()]
    after = run(list(model.parameters()), optimizer, grads[1:])
    return before, [g.numpy() for g in grads[1]], [w.numpy() for w in after]


def clamp(model):
    with torch.no_grad():
        model.weight.clamp_(-0.1, 0.1)


def load_other_weights(model):
    torch.manual_seed(123)
    model.load_state_dict(torch.nn.Linear(3, 2).double().state_dict())


def swap_storage(model):
    model.weight.data = torch.full_like(model.weight, 0.25)


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("change", [clamp, load_other_weights, swap_storage])
def test_weights_changed_outside_step_are_picked_up(rng, caplog, foreach, change):
    with caplog.at_level(logging.INFO, logger="lemmata.optim._mirror_descent"):
        before, grads, after = changed_then_stepped(rng, change, foreach)
    for w0, g, w1 in zip(before, grads, after, strict=True):
        np.testing.assert_allclose(w1, one_step_reference(w0, g, 0.05, 3.0), rtol=1e-12)
    assert "changed outside PGD.step()" in caplog.text


def test_writes_through_data_need_reset_dual_state(rng):
    model = torch.nn.Linear(3, 2).double()
    optimizer = PGD(model.parameters(), lr=0.05, p=3.0)
    params = list(model.parameters())
    grads = grad_sequence(rng, params, 3)
    run(params, optimizer, grads[:1])

    model.weight.data.mul_(2.0)  # invisible to the version counter
    w_doubled = model.weight.detach().clone().numpy()
    run(params, optimizer, grads[1:2])
    stale = model.weight.detach().numpy()
    assert not np.allclose(
        stale, one_step_reference(w_doubled, grads[1][0].numpy(), 0.05, 3.0)
    )

    model.weight.data.mul_(0.5)
    w_halved = model.weight.detach().clone().numpy()
    optimizer.reset_dual_state()
    run(params, optimizer, grads[2:])
    np.testing.assert_allclose(
        model.weight.detach().numpy(),
        one_step_reference(w_halved, grads[2][0].numpy(), 0.05, 3.0),
        rtol=1e-12,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_resume_from_state_dict_is_exact(rng, dtype):
    def build():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3).to(dtype)

    straight = build()
    params = list(straight.parameters())
    grads = grad_sequence(rng, params, 8, scale=0.1)
    run(params, PGD(params, lr=0.01, p=1.5), grads)

    first = build()
    optimizer = PGD(first.parameters(), lr=0.01, p=1.5)
    run(list(first.parameters()), optimizer, grads[:4])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = build()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = PGD(resumed.parameters(), lr=0.01, p=1.5)
    resumed_optimizer.load_state_dict(checkpoint["optim"])
    for w in resumed.parameters():
        assert resumed_optimizer.state[w]["dual"].dtype == torch.float32
    run(list(resumed.parameters()), resumed_optimizer, grads[4:])

    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)


def test_deepcopy_keeps_stepping_identically(rng):
    params = make_params(rng)
    optimizer = PGD(params, lr=0.01, p=3.0)
    grads = grad_sequence(rng, params, 4)
    run(params, optimizer, grads[:2])
    clone_params, clone = copy.deepcopy((params, optimizer))
    for a, b in zip(
        run(params, optimizer, grads[2:]),
        run(clone_params, clone, grads[2:]),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_switching_path_between_steps_keeps_one_dual(rng):
    params = make_params(rng)
    reference = [w.detach().clone().requires_grad_() for w in params]
    grads = grad_sequence(rng, params, 6)
    optimizer = PGD(params, lr=0.01, p=3.0, foreach=True)
    for t, step_grads in enumerate(grads):
        optimizer.param_groups[0]["foreach"] = t % 2 == 0
        run(params, optimizer, [step_grads])
    out = run(reference, PGD(reference, lr=0.01, p=3.0, foreach=False), grads)
    for a, b in zip(params, out, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=1e-14, atol=0)


def test_grad_appearing_later_keeps_duals_in_sync(rng):
    params = make_params(rng)
    reference = [w.detach().clone().requires_grad_() for w in params]
    grads = grad_sequence(rng, params, 5)
    for t in (1, 2):  # parameter 0 has no gradient in steps 1 and 2
        grads[t][0] = None
    ours, ref = (
        PGD(params, lr=0.01, p=3.0),
        PGD(reference, lr=0.01, p=3.0, foreach=False),
    )
    for step_grads in grads:
        for group, optimizer in ((params, ours), (reference, ref)):
            for w, g in zip(group, step_grads, strict=True):
                w.grad = None if g is None else g.clone()
            optimizer.step()
    for a, b in zip(params, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


# ---------------------------------------------------- the non-finite check


@pytest.mark.parametrize("foreach", [True, False])
def test_huge_finite_gradients_pass_the_check(foreach):
    # The fused sum overflows to inf; the exact check then finds no NaN or inf.
    params = [torch.ones(4, requires_grad=True) for _ in range(2)]
    for w in params:
        w.grad = torch.full((4,), 3e38)
    PGD(params, lr=1e-40, p=2.0, foreach=foreach).step()
    for w in params:
        assert torch.isfinite(w).all()


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_gradient_leaves_weights_and_duals_alone(rng, foreach, bad):
    params = make_params(rng)
    optimizer = PGD(
        [{"params": params[:2]}, {"params": params[2:], "foreach": not foreach}],
        lr=0.1,
        foreach=foreach,
    )
    run(params, optimizer, grad_sequence(rng, params, 1))
    weights = [w.detach().clone() for w in params]
    duals = [optimizer.state[w]["dual"].clone() for w in params]

    grads = grad_sequence(rng, params, 1)[0]
    grads[3].view(-1)[0] = bad
    with pytest.raises(ValueError, match=r"param group 1, parameter 1 \(shape \(\)\)"):
        run(params, optimizer, [grads])
    for w, w0, dual in zip(params, weights, duals, strict=True):
        assert torch.equal(w.detach(), w0)
        assert torch.equal(optimizer.state[w]["dual"], dual)


# ------------------------------------------------------------- the default


def test_foreach_is_the_default_on_cpu():
    w = torch.zeros(2, requires_grad=True)
    assert PGD([w]).param_groups[0]["foreach"] is None
    from lemmata.optim._mirror_descent import _foreach_default

    assert _foreach_default([w])

    class Sub(torch.Tensor):
        pass

    assert not _foreach_default([w.detach().as_subclass(Sub)])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"foreach": "yes"}, r"foreach must be a bool; got str"),
        ({"dual_state": None}, r"dual_state must be a bool; got NoneType"),
    ],
)
def test_rejects_bad_flags(kwargs, pattern):
    with pytest.raises(TypeError, match=pattern):
        PGD([torch.zeros(2, requires_grad=True)], **kwargs)


# ------------------------------------------------------------ torch.compile


@pytest.mark.slow
def test_compiled_step_matches_eager(rng):
    """A compiled model and a compiled step give the eager trajectory, including
    a weight change outside step() that the compiled step must notice."""

    def train(compile_model, compile_step):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 3, 3),
            torch.nn.Tanh(),
            torch.nn.Flatten(),
            torch.nn.Linear(3 * 4 * 4, 2),
        )
        optimizer = PGD(model.parameters(), lr=0.05, p=3.0)
        forward = torch.compile(model) if compile_model else model
        step = torch.compile(optimizer.step) if compile_step else optimizer.step
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(8, 1, 6, 6, generator=generator)
        y = torch.randint(0, 2, (8,), generator=generator)
        for t in range(6):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(forward(x), y).backward()
            step()
            if t == 2:
                with torch.no_grad():
                    model[0].weight.clamp_(-0.05, 0.05)
        return [w.detach() for w in model.parameters()]

    eager = train(False, False)
    for compiled in (train(True, False), train(False, True)):
        for a, b in zip(compiled, eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class _NoWarning:
    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("error", UserWarning)

    def __exit__(self, *exc):
        return self._catcher.__exit__(*exc)


def _no_warning():
    return _NoWarning()
