"""MirrorDescent and PGD: the torch Optimizer contract, a float64 numpy
reference of the update, SGD at p = 2, and convergence to the interpolator
that the theory predicts (computed independently with cvxpy)."""

import copy
import io
import pickle
import warnings

import numpy as np
import pytest
import torch

from lemmata.optim import (
    PGD,
    MirrorDescent,
    PNormPower,
    Potential,
    bregman_divergence,
    min_norm_interpolator,
    mirror_descent,
)


def reference_step(w, g, *, lr, p, weight_decay=0.0, maximize=False):
    """One p-GD step in float64 numpy, written from the update rule."""
    w = np.asarray(w, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    g = -g if maximize else g
    g = g + weight_decay * w
    u = np.sign(w) * np.abs(w) ** (p - 1) - lr * g
    return np.sign(u) * np.abs(u) ** (1 / (p - 1))


def small_model(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )
    return model.to(dtype)


def regression_batch(seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(32, 4, generator=generator, dtype=dtype)
    return x, torch.randn(32, 1, generator=generator, dtype=dtype)


def train(model, optimizer, batch, steps, scheduler=None):
    x, y = batch
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


# ---------------------------------------------------------------- p = 2 is SGD


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"weight_decay": 0.05}, {"maximize": True}],
    ids=["plain", "weight_decay", "maximize"],
)
def test_p2_matches_sgd_trajectory(seed, kwargs):
    model_pgd, model_sgd = small_model(seed), small_model(seed)
    batch = regression_batch(seed)
    lr = 1e-3 if kwargs.get("maximize") else 0.05

    train(model_pgd, PGD(model_pgd.parameters(), lr=lr, p=2.0, **kwargs), batch, 100)
    sgd = torch.optim.SGD(model_sgd.parameters(), lr=lr, **kwargs)
    train(model_sgd, sgd, batch, 100)

    for w_pgd, w_sgd in zip(
        model_pgd.parameters(), model_sgd.parameters(), strict=True
    ):
        relative = (w_pgd - w_sgd).norm() / w_sgd.norm()
        assert relative < 1e-6


# ------------------------------------------------------ the update, one step


@pytest.mark.parametrize("p", [1.3, 1.5, 2.0, 3.0, 4.5])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"weight_decay": 0.1},
        {"maximize": True},
        {"weight_decay": 0.1, "maximize": True},
    ],
)
def test_step_matches_numpy_reference(rng, p, kwargs):
    shapes = [(5,), (3, 4), (2, 3, 2)]
    w_np = [rng.standard_normal(s) for s in shapes]
    g_np = [rng.standard_normal(s) for s in shapes]
    w_np[0][0] = 0.0  # sign(0) = 0 path
    params = [torch.tensor(w, requires_grad=True) for w in w_np]
    for w, g in zip(params, g_np, strict=True):
        w.grad = torch.tensor(g)

    PGD(params, lr=0.07, p=p, **kwargs).step()

    for w, w0, g in zip(params, w_np, g_np, strict=True):
        expected = reference_step(w0, g, lr=0.07, p=p, **kwargs)
        np.testing.assert_allclose(
            w.detach().numpy(), expected, rtol=1e-12, atol=1e-300
        )


def test_functional_matches_optimizer(rng):
    w_np, g_np = rng.standard_normal(7), rng.standard_normal(7)
    w_fn = torch.tensor(w_np)
    with torch.no_grad():
        mirror_descent([w_fn], [torch.tensor(g_np)], potential=PNormPower(2.5), lr=0.1)

    w_opt = torch.tensor(w_np, requires_grad=True)
    w_opt.grad = torch.tensor(g_np)
    MirrorDescent([w_opt], lr=0.1, potential=PNormPower(2.5)).step()

    torch.testing.assert_close(w_fn, w_opt.detach(), rtol=0, atol=0)


def test_functional_rejects_length_mismatch():
    with pytest.raises(
        ValueError, match=r"grads must have one entry per parameter \(2\); got 1"
    ):
        mirror_descent(
            [torch.zeros(2), torch.zeros(2)],
            [torch.zeros(2)],
            potential=PNormPower(3),
            lr=0.1,
        )


def test_negative_entries_give_no_nan():
    # A naive (-0.5) ** (1 / (p - 1)) is NaN; sign times magnitude is not.
    w = torch.tensor([-0.5, -1e-8, 0.0, 2.0], requires_grad=True)
    w.grad = torch.tensor([3.0, 1.0, -1.0, 10.0])
    PGD([w], lr=0.1, p=1.5).step()
    assert torch.isfinite(w).all()
    assert w[0] < 0 and w[3] < 2.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_step_is_computed_in_float32(rng, dtype):
    w16 = torch.tensor(rng.standard_normal(64), dtype=dtype, requires_grad=True)
    g16 = torch.tensor(rng.standard_normal(64), dtype=dtype)
    w16.grad = g16
    w_before = w16.detach().double().numpy()

    PGD([w16], lr=0.05, p=3.0).step()

    assert w16.dtype == dtype
    assert torch.isfinite(w16).all()
    expected = reference_step(w_before, g16.double().numpy(), lr=0.05, p=3.0)
    # One rounding to the parameter dtype: at most one unit in the last place.
    rtol = torch.finfo(dtype).eps
    np.testing.assert_allclose(w16.detach().double().numpy(), expected, rtol=rtol)


def test_float64_stays_float64(rng):
    w = torch.tensor(rng.standard_normal(5), requires_grad=True)
    w.grad = torch.ones(5, dtype=torch.float64)
    PGD([w], lr=0.1, p=3.0).step()
    assert w.dtype == torch.float64


def test_parameters_without_grad_are_left_alone():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    a.grad = torch.ones(3)
    PGD([a, b], lr=0.1, p=3.0).step()
    assert torch.equal(b, torch.ones(3))
    assert not torch.equal(a, torch.ones(3))


# ---------------------------------------------------- the Optimizer contract


def test_state_dict_round_trip_equals_straight_run(seed):
    batch = regression_batch(seed)

    def groups(model):
        first, second = model[0], model[2]
        return [
            {"params": first.parameters(), "p": 1.5, "lr": 0.02},
            {"params": second.parameters(), "p": 4},
        ]

    straight = small_model(seed)
    train(straight, PGD(groups(straight), lr=0.05, p=3.0), batch, 20)

    first_half = small_model(seed)
    optimizer = PGD(groups(first_half), lr=0.05, p=3.0)
    train(first_half, optimizer, batch, 10)
    buffer = io.BytesIO()
    torch.save(
        {"model": first_half.state_dict(), "optim": optimizer.state_dict()}, buffer
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = small_model(seed + 100)  # other weights and p, overwritten below
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = PGD(
        [{"params": resumed[0].parameters()}, {"params": resumed[2].parameters()}],
        lr=1.0,
        p=2.0,
    )
    resumed_optimizer.load_state_dict(checkpoint["optim"])
    assert [g["p"] for g in resumed_optimizer.param_groups] == [1.5, 4]
    train(resumed, resumed_optimizer, batch, 10)

    for w_resumed, w_straight in zip(
        resumed.parameters(), straight.parameters(), strict=True
    ):
        torch.testing.assert_close(w_resumed, w_straight, rtol=0, atol=0)


def test_mirror_descent_state_dict_pickles_its_potential():
    w = torch.ones(3, requires_grad=True)
    optimizer = MirrorDescent([w], lr=0.1, potential=PNormPower(2.5))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)
    assert state["param_groups"][0]["potential"] == PNormPower(2.5)

    clone = pickle.loads(pickle.dumps(optimizer))
    assert clone.param_groups[0]["potential"] == PNormPower(2.5)
    assert copy.deepcopy(optimizer).defaults["potential"] == PNormPower(2.5)


def test_setstate_fills_missing_keys():
    w = torch.ones(3, requires_grad=True)
    optimizer = PGD([w], lr=0.1)
    state = optimizer.__getstate__()
    for key in ("weight_decay", "maximize", "check_finite"):
        del state["param_groups"][0][key]
    optimizer.__setstate__(state)
    group = optimizer.param_groups[0]
    assert (group["weight_decay"], group["maximize"], group["check_finite"]) == (
        0.0,
        False,
        True,
    )


def test_lr_scheduler_sets_the_step_size(rng):
    w0, g = rng.standard_normal(6), rng.standard_normal(6)
    w = torch.tensor(w0, requires_grad=True)
    optimizer = PGD([w], lr=0.08, p=3.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)

    expected = w0
    for t in range(5):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.08 * 0.5 ** (t // 2))
        w.grad = torch.tensor(g)
        optimizer.step()
        scheduler.step()
        expected = reference_step(expected, g, lr=0.08 * 0.5 ** (t // 2), p=3.0)

    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12)


def test_step_with_closure_returns_the_loss(rng):
    x = torch.tensor(rng.standard_normal((8, 3)))
    y = torch.tensor(rng.standard_normal(8))
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = PGD([w], lr=0.1, p=1.5)

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * ((x @ w - y) ** 2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    expected_loss = 0.5 * float((y**2).sum())
    assert float(loss.detach()) == pytest.approx(expected_loss)
    gradient = -(x.T @ y).numpy()
    np.testing.assert_allclose(
        w.detach().numpy(), reference_step(np.zeros(3), gradient, lr=0.1, p=1.5)
    )


def test_p_may_differ_between_groups(rng):
    a0, b0, ga, gb = (rng.standard_normal(4) for _ in range(4))
    a = torch.tensor(a0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    a.grad, b.grad = torch.tensor(ga), torch.tensor(gb)
    PGD([{"params": [a], "p": 1.5}, {"params": [b], "p": 3}], lr=0.1).step()
    np.testing.assert_allclose(
        a.detach().numpy(), reference_step(a0, ga, lr=0.1, p=1.5)
    )
    np.testing.assert_allclose(
        b.detach().numpy(), reference_step(b0, gb, lr=0.1, p=3.0)
    )


class ScaledQuadratic(Potential):
    """psi(w) = c/2 ||w||^2 (a potential written outside lemmata): MD is GD at lr/c."""

    def __init__(self, c):
        self.c = c

    def value(self, w):
        return 0.5 * self.c * (w**2).sum()

    def mirror_map(self, w):
        return self.c * w

    def inverse_mirror_map(self, u):
        return u / self.c


def test_user_potential_is_used(rng):
    w0, g = rng.standard_normal(5), rng.standard_normal(5)
    w = torch.tensor(w0, requires_grad=True)
    w.grad = torch.tensor(g)
    MirrorDescent([w], lr=0.3, potential=ScaledQuadratic(4.0)).step()
    np.testing.assert_allclose(w.detach().numpy(), w0 - 0.3 / 4.0 * g, rtol=1e-14)


def test_bregman_divergence_of_potential_matches_numpy(rng):
    w, w0 = rng.standard_normal(6), rng.standard_normal(6)
    torch_value = PNormPower(2.7).bregman_divergence(torch.tensor(w), torch.tensor(w0))
    assert float(torch_value) == pytest.approx(
        bregman_divergence(w, w0, 2.7), rel=1e-12
    )


# ------------------------------------------------------ non-finite gradients


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_gradient_raises_before_any_update(rng, bad):
    params = [
        torch.tensor(rng.standard_normal(3), requires_grad=True) for _ in range(4)
    ]
    for w in params:
        w.grad = torch.ones(3, dtype=torch.float64)
    params[3].grad[1] = bad
    before = [w.detach().clone() for w in params]
    optimizer = PGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)

    with pytest.raises(
        ValueError, match=r"non-finite gradient in param group 1, parameter 1"
    ):
        optimizer.step()
    for w, w_before in zip(params, before, strict=True):
        assert torch.equal(w.detach(), w_before)


def test_check_finite_false_lets_nan_through():
    w = torch.ones(2, requires_grad=True)
    w.grad = torch.tensor([float("nan"), 1.0])
    PGD([w], lr=0.1, check_finite=False).step()
    assert torch.isnan(w[0]) and torch.isfinite(w[1])


# ------------------------------------------------------------ bad inputs


class NoInverse:
    def mirror_map(self, w):
        return w


BAD_PGD = [
    ({"p": 1.0}, ValueError, r"p must be > 1; got 1\.0"),
    ({"p": 0.5}, ValueError, r"p must be > 1; got 0\.5"),
    ({"p": float("nan")}, ValueError, r"p must be > 1; got nan"),
    ({"p": float("inf")}, ValueError, r"p must be finite; got inf"),
    ({"p": "3"}, TypeError, r"p must be a real number; got str"),
    ({"p": True}, TypeError, r"p must be a real number; got bool"),
    ({"lr": -1.0}, ValueError, r"lr must be >= 0; got -1\.0"),
    ({"lr": float("nan")}, ValueError, r"lr must be >= 0; got nan"),
    ({"lr": float("inf")}, ValueError, r"lr must be finite; got inf"),
    ({"lr": "0.1"}, TypeError, r"lr must be a real number; got str"),
    ({"weight_decay": -0.1}, ValueError, r"weight_decay must be >= 0; got -0\.1"),
    ({"maximize": 1}, TypeError, r"maximize must be a bool; got int"),
    ({"check_finite": None}, TypeError, r"check_finite must be a bool; got NoneType"),
]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), BAD_PGD)
def test_pgd_rejects_bad_hyperparameters(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        PGD([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "pattern"), BAD_PGD[:6])
def test_pgd_rejects_bad_group_overrides(kwargs, error, pattern):
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(error, match=pattern + r" \(param group 1\)"):
        PGD(
            [
                {"params": [torch.zeros(2, requires_grad=True)]},
                {"params": [w], **kwargs},
            ]
        )


BAD_MIRROR_DESCENT = [
    ({"potential": None}, TypeError, r"potential must be given"),
    (
        {"potential": NoInverse()},
        TypeError,
        r"potential must provide a callable inverse_mirror_map",
    ),
    ({"potential": 3.0}, TypeError, r"potential must provide a callable mirror_map"),
    (
        {"potential": PNormPower(3), "lr": -1.0},
        ValueError,
        r"lr must be >= 0; got -1\.0",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), BAD_MIRROR_DESCENT)
def test_mirror_descent_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        MirrorDescent([torch.zeros(2, requires_grad=True)], **kwargs)


def test_complex_parameters_are_rejected():
    w = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(
        TypeError, match=r"params must be real tensors; got torch\.complex64"
    ):
        PGD([w])


def test_sparse_gradients_are_rejected():
    w = torch.zeros(3, requires_grad=True)
    w.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        PGD([w]).step()


# ------------------------------------------------------------------ warnings


def test_warns_for_large_p_at_the_callers_line():
    with pytest.warns(UserWarning, match=r"p=8\.0 is > 6") as record:
        PGD([torch.zeros(2, requires_grad=True)], p=8.0)
    assert record[0].filename == __file__


def test_warns_for_small_p_in_float32_only():
    with pytest.warns(UserWarning, match=r"p=1\.1 is < 1\.2 with torch\.float32"):
        PGD([torch.zeros(2, requires_grad=True)], p=1.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PGD([torch.zeros(2, dtype=torch.float64, requires_grad=True)], p=1.1)
        PGD([torch.zeros(2, requires_grad=True)], p=3.0)


# ------------------------------------- convergence to the predicted solution


def least_squares_problem(seed, n=10, d=30):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    return X, rng.standard_normal(n)


def full_batch_pgd(X, y, p, lr, w0, max_steps=20_000):
    """Full-batch p-GD in float64 on 1/2 ||Xw - y||^2, gradient written out;
    stops once ||Xw - y|| < 1e-12."""
    Xt, yt = torch.tensor(X), torch.tensor(y)
    w = torch.tensor(w0, requires_grad=True)
    optimizer = PGD([w], lr=lr, p=p)
    for _ in range(max_steps // 100):
        for _ in range(100):
            w.grad = Xt.T @ (Xt @ w.detach() - yt)
            optimizer.step()
        if torch.linalg.norm(Xt @ w.detach() - yt) < 1e-12:
            break
    return w.detach().numpy()


def stable_step_size(X, p, w_star):
    """A step size that is stable near w_star.

    In the dual u = grad psi(w) the loss has Hessian X^T X scaled by
    dw/du = |w|^(2-p) / (p-1), which is large at small |w_j| for p > 2; a
    fixed lr can then oscillate forever around a solution with tiny entries.
    """
    slope = np.abs(w_star) ** (2 - p) / (p - 1)
    curvature = np.linalg.eigvalsh((X * slope) @ X.T)[-1]
    # 1.5 / curvature: inside the local stability limit 2 / curvature.
    return min(0.5, 1.5 / curvature)


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_pgd_from_zero_reaches_min_norm_interpolator(seed, p):
    X, y = least_squares_problem(seed)
    w_star = min_norm_interpolator(X, y, p)

    w = full_batch_pgd(X, y, p, stable_step_size(X, p, w_star), np.zeros(X.shape[1]))

    assert np.linalg.norm(w - w_star) / np.linalg.norm(w_star) < 1e-6
    assert np.linalg.norm(X @ w - y) < 1e-8


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_pgd_from_w0_reaches_bregman_closest_interpolator(seed, p):
    X, y = least_squares_problem(seed)
    w0 = 0.5 * np.random.default_rng(seed + 7).standard_normal(X.shape[1])
    w_bregman = min_norm_interpolator(X, y, p, w0=w0)
    w_min_norm = min_norm_interpolator(X, y, p)

    w = full_batch_pgd(X, y, p, stable_step_size(X, p, w_bregman), w0)

    assert np.linalg.norm(w - w_bregman) / np.linalg.norm(w_bregman) < 1e-6
    assert np.linalg.norm(w - w_min_norm) / np.linalg.norm(w_min_norm) > 1e-2
