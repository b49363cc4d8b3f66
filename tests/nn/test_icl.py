"""In-context learning blocks: layers against loop references, the kernel
construction, task samplers, baselines, and bad inputs."""

import math

import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge

from lemmata.nn.icl import (
    CubicTasks,
    GLUFeedForward,
    ICLBlock,
    ICLTransformer,
    LinearSelfAttention,
    LinearTasks,
    PromptLayout,
    QuadraticTasks,
    build_prompt,
    fit_preconditioner,
    kernel_ridge_predict,
    least_squares_predict,
    polynomial_features,
    preconditioned_gd_predict,
)


def test_prompt_layout_and_values():
    layout = PromptLayout(d=2, pad=3)
    assert layout.embed_dim == 7 and layout.y_index == 6
    assert layout.pad_slice == slice(3, 6) and layout.x_slice == slice(0, 2)
    xc, yc, xq = torch.randn(4, 5, 2), torch.randn(4, 5), torch.randn(4, 2)
    z = build_prompt(xc, yc, xq, layout=layout)
    assert z.shape == (4, 6, 7)
    torch.testing.assert_close(z[:, :5, :2], xc)
    torch.testing.assert_close(z[:, 5, :2], xq)
    assert torch.all(z[:, :, 2] == 1) and torch.all(z[:, :, 3:6] == 0)
    torch.testing.assert_close(z[:, :5, 6], yc)
    assert torch.all(z[:, 5, 6] == 0)
    assert build_prompt(xc, yc, xq).shape == (4, 6, 4)


def test_lsa_matches_column_convention_loop(rng):
    # Reference: Z + (1/n) W_PV Z M Z^T W_KQ Z with Z of shape (D, n + 1).
    torch.manual_seed(0)
    layer = LinearSelfAttention(5, init_std=0.5).double()
    z = torch.from_numpy(rng.normal(size=(3, 8, 5)))
    out = layer(z).detach().numpy()
    w_kq, w_pv = layer.w_kq.detach().numpy(), layer.w_pv.detach().numpy()
    n = 7
    mask = np.diag([1.0] * n + [0.0])
    for b in range(3):
        col = z[b].numpy().T
        expected = col + w_pv @ col @ mask @ col.T @ w_kq @ col / n
        np.testing.assert_allclose(out[b], expected.T, rtol=1e-12, atol=1e-12)


def test_glu_matches_formula_and_respects_read_write(rng):
    torch.manual_seed(0)
    layer = GLUFeedForward(6, 4, read=(0, 5), write=(2, 5)).double()
    z = torch.from_numpy(rng.normal(size=(2, 3, 6)))
    out = layer(z).detach().numpy()
    w1, w2, w3 = (w.detach().numpy() for w in (layer.w1, layer.w2, layer.w3))
    flat = z.reshape(-1, 6).numpy()
    hidden = (flat[:, :5] @ w1.T) * (flat[:, :5] @ w2.T)
    expected = flat.copy()
    expected[:, 2:5] += hidden @ w3.T
    np.testing.assert_allclose(out.reshape(-1, 6), expected, rtol=1e-12, atol=1e-12)
    assert layer.w1.shape == (4, 5) and layer.w3.shape == (3, 4)


def test_feature_major_path_equals_row_path(rng):
    torch.manual_seed(1)
    block = ICLBlock(7, 3, init_std=0.3).double()
    z = torch.from_numpy(rng.normal(size=(2, 6, 7)))
    row = block.ff(z)
    row = block.attn(row)
    torch.testing.assert_close(block(z), row)


def _kernel_construction(model, gamma):
    """Set a d=2, m=3 model to write x_j x_k and take one kernel GD step."""
    ff, attn = model.blocks[0].ff, model.blocks[0].attn
    with torch.no_grad():
        for w in (ff.w1, ff.w2, ff.w3, attn.w_kq, attn.w_pv):
            w.zero_()
        for k, (a, b) in enumerate([(0, 0), (0, 1), (1, 1)]):
            ff.w1[k, a], ff.w2[k, b], ff.w3[k, k] = 1.0, 1.0, 1.0
        # polynomial_features order [1, x0, x1, x0^2, x0 x1, x1^2] -> token
        # coordinates [2, 0, 1, 3, 4, 5].
        where = [2, 0, 1, 3, 4, 5]
        for i in range(6):
            for j in range(6):
                attn.w_kq[where[i], where[j]] = float(gamma[j, i])
        attn.w_pv[6, 6] = -1.0


def test_one_block_implements_one_kernel_gradient_step(rng):
    gamma = rng.normal(size=(6, 6))
    model = ICLTransformer(2, ff_width=3).double()
    _kernel_construction(model, gamma)
    batch = QuadraticTasks(2).sample(50, 12, dtype=torch.float64)
    pred = model(batch.prompt(model.layout)).detach().numpy()
    phi = polynomial_features(batch.x.numpy(), 2)
    expected = preconditioned_gd_predict(
        phi[:, :-1], batch.y[:, :-1].numpy(), phi[:, -1], gamma
    )
    np.testing.assert_allclose(pred, expected, rtol=1e-10, atol=1e-10)


def test_lsa_implements_one_linear_gradient_step(rng):
    gamma = rng.normal(size=(3, 3))  # on [1, x0, x1]
    model = ICLTransformer(2).double()
    attn = model.blocks[0].attn
    where = [2, 0, 1]
    with torch.no_grad():
        attn.w_kq.zero_()
        attn.w_pv.zero_()
        for i in range(3):
            for j in range(3):
                attn.w_kq[where[i], where[j]] = float(gamma[j, i])
        attn.w_pv[3, 3] = -1.0
    batch = LinearTasks(2).sample(40, 9, dtype=torch.float64)
    phi = polynomial_features(batch.x.numpy(), 1)
    expected = preconditioned_gd_predict(
        phi[:, :-1], batch.y[:, :-1].numpy(), phi[:, -1], gamma
    )
    pred = model(batch.prompt(model.layout)).detach().numpy()
    np.testing.assert_allclose(pred, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sampler", [LinearTasks(3), QuadraticTasks(3), CubicTasks(2)])
def test_targets_have_unit_variance_plus_noise(sampler):
    gen = torch.Generator().manual_seed(0)
    batch = sampler.sample(40_000, 4, generator=gen, dtype=torch.float64)
    var = batch.y.var().item()
    assert var == pytest.approx(1 + sampler.noise**2, rel=0.04)


@pytest.mark.parametrize("sampler", [QuadraticTasks(2), CubicTasks(2), LinearTasks(2)])
def test_best_linear_is_the_least_squares_fit_of_each_task(sampler):
    # Reference: least squares of y on [1, x] over many inputs of one task.
    gen = torch.Generator().manual_seed(1)
    params = sampler.draw_params(1, gen, torch.float64)
    x = torch.randn(1, 400_000, 2, generator=gen, dtype=torch.float64)
    y = sampler.evaluate(x, params)[0].numpy()
    design = np.column_stack([np.ones(len(y)), x[0].numpy()])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    intercept, slope = sampler.best_linear(params)
    np.testing.assert_allclose(coef, [intercept.item(), *slope[0].tolist()], atol=0.02)


def test_fit_preconditioner_recovers_a_known_gamma(rng):
    gamma = rng.normal(size=(4, 4))
    phi = rng.normal(size=(500, 6, 4))
    y = rng.normal(size=(500, 5))
    yq = preconditioned_gd_predict(phi[:, :-1], y, phi[:, -1], gamma)
    fitted = fit_preconditioner(phi[:, :-1], y, phi[:, -1], yq)
    np.testing.assert_allclose(fitted, gamma, atol=1e-8)


def test_kernel_ridge_matches_scikit_learn(rng):
    xc, yc, xq = (
        rng.normal(size=(3, 15, 2)),
        rng.normal(size=(3, 15)),
        rng.normal(size=(3, 2)),
    )
    ours = kernel_ridge_predict(xc, yc, xq, alpha=0.3, degree=3, coef0=0.5, gamma=0.7)
    for b in range(3):
        peer = KernelRidge(alpha=0.3, kernel="poly", degree=3, gamma=0.7, coef0=0.5)
        peer.fit(xc[b], yc[b])
        assert ours[b] == pytest.approx(peer.predict(xq[b : b + 1])[0], rel=1e-8)


def test_least_squares_matches_lstsq(rng):
    xc, yc, xq = (
        rng.normal(size=(4, 10, 3)),
        rng.normal(size=(4, 10)),
        rng.normal(size=(4, 3)),
    )
    ours = least_squares_predict(xc, yc, xq)
    for b in range(4):
        design = np.column_stack([np.ones(10), xc[b]])
        coef, *_ = np.linalg.lstsq(design, yc[b], rcond=None)
        assert ours[b] == pytest.approx(coef[0] + xq[b] @ coef[1:], rel=1e-9)


def test_polynomial_features_sizes():
    x = np.arange(6.0).reshape(2, 3)
    assert polynomial_features(x, 2).shape == (2, 1 + 3 + 6)
    assert polynomial_features(x, 3).shape == (2, 1 + 3 + 6 + 10)
    np.testing.assert_allclose(polynomial_features(x[:1], 2)[0, 4:7], [0, 0, 0])


def test_training_lsa_on_linear_tasks_reduces_risk():
    torch.manual_seed(0)
    sampler = LinearTasks(2)
    model = ICLTransformer(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    test = sampler.sample(2000, 10)

    def risk():
        with torch.no_grad():
            return (model(test.prompt(model.layout)) - test.query_target).pow(2).mean()

    start = risk()
    for _ in range(40):
        batch = sampler.sample(64, 10)
        loss = (model(batch.prompt(model.layout)) - batch.query_target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert risk() < 0.6 * start


def _prompt(batch=2, tokens=6, dim=7):
    return torch.zeros(batch, tokens, dim)


BAD_INPUTS = [
    (
        lambda: LinearSelfAttention(7)(torch.zeros(8, 21, 5)),
        ValueError,
        r"z must have shape \(batch, tokens, 7\); got \(8, 21, 5\)",
    ),
    (
        lambda: ICLTransformer(2, ff_width=3)(torch.zeros(4, 11, 6)),
        ValueError,
        r"z must have shape \(batch, tokens, 7\); got \(4, 11, 6\)",
    ),
    (
        lambda: ICLBlock(7, 3)(torch.zeros(11, 7)),
        ValueError,
        r"z must have shape \(batch, tokens, 7\); got \(11, 7\)",
    ),
    (
        lambda: GLUFeedForward(7, 3)(torch.zeros(2, 3, 4)),
        ValueError,
        r"z must have shape \(\.\.\., 7\); got \(2, 3, 4\)",
    ),
    (
        lambda: LinearSelfAttention(7)(_prompt(tokens=1)),
        ValueError,
        r"prompt length n \(tokens - 1\) must be >= 1; got 0",
    ),
    (
        lambda: build_prompt(
            torch.zeros(2, 0, 3), torch.zeros(2, 0), torch.zeros(2, 3)
        ),
        ValueError,
        r"prompt length n must be >= 1; got 0",
    ),
    (
        lambda: QuadraticTasks(2).sample(4, 0),
        ValueError,
        r"prompt length n must be >= 1; got 0",
    ),
    (
        lambda: build_prompt(
            torch.zeros(2, 5, 3), torch.zeros(2, 4), torch.zeros(2, 3)
        ),
        ValueError,
        r"y_context must have shape \(2, 5\); got \(2, 4\)",
    ),
    (
        lambda: build_prompt(
            torch.zeros(2, 5, 3), torch.zeros(2, 5), torch.zeros(2, 2)
        ),
        ValueError,
        r"x_query must have shape \(2, 3\); got \(2, 2\)",
    ),
    (
        lambda: ICLTransformer(2)(torch.ones(2, 5, 4)),
        ValueError,
        r"query y-slot must be 0",
    ),
    (lambda: ICLTransformer(0), ValueError, r"d must be >= 1; got 0"),
    (lambda: QuadraticTasks(0), ValueError, r"d must be >= 1; got 0"),
    (
        lambda: ICLTransformer(2, ff_width=0),
        ValueError,
        r"ff_width must be >= 1; got 0",
    ),
    (
        lambda: ICLTransformer(2, n_blocks=0),
        ValueError,
        r"n_blocks must be >= 1; got 0",
    ),
    (
        lambda: ICLTransformer(2, ff_width=3, pad=2),
        ValueError,
        r"pad must be >= ff_width \(3\).*got 2",
    ),
    (
        lambda: ICLTransformer(2, ff_coordinates="some"),
        ValueError,
        r"ff_coordinates must be one of \['features', 'all'\]; got 'some'",
    ),
    (
        lambda: GLUFeedForward(7, 3, write=(5, 9)),
        ValueError,
        r"write must satisfy 0 <= start < stop <= embed_dim \(7\); got \(5, 9\)",
    ),
    (
        lambda: QuadraticTasks(2, noise=-0.1),
        ValueError,
        r"noise must be >= 0; got -0.1",
    ),
    (
        lambda: QuadraticTasks(2).evaluate(
            torch.zeros(1, 3, 2),
            {"B": torch.full((1, 2, 2), math.nan), "w": torch.zeros(1, 2)},
        ),
        ValueError,
        r"params\['B'\] must be finite",
    ),
    (
        lambda: QuadraticTasks(2).evaluate(
            torch.zeros(1, 3, 2), {"w": torch.zeros(1, 2)}
        ),
        ValueError,
        r"params must hold \['B', 'w'\]",
    ),
    (lambda: LinearSelfAttention(1), ValueError, r"embed_dim must be >= 2; got 1"),
    (
        lambda: LinearSelfAttention(4, init_std=0.0),
        ValueError,
        r"init_std must be > 0.0; got 0.0",
    ),
    (
        lambda: fit_preconditioner(
            np.zeros((3, 4, 2)), np.zeros((3, 4)), np.zeros((3, 2)), np.zeros(2)
        ),
        ValueError,
        r"y_query must have shape \(3,\); got \(2,\)",
    ),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), BAD_INPUTS)
def test_bad_inputs(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
