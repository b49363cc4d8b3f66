"""CRReLU: values, derivatives, dtypes, the swap helper and parameter groups."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lemmata.nn import (
    ACTIVATIONS,
    CRReLU,
    activation_param_groups,
    crrelu,
    crrelu_epsilons,
    make_activation,
    swap_activations,
)

# Values measured independently in a prior check (spec table, epsilon = 0.01).
SPEC_VALUES = [(1.0, 1.0060653), (-1.0, -0.0060653), (2.0, 2.0027067), (0.5, 0.5044125)]


@pytest.mark.parametrize(("x", "expected"), SPEC_VALUES)
def test_values_match_the_spec_table(x, expected):
    assert float(crrelu(torch.tensor(x, dtype=torch.float64), 0.01)) == pytest.approx(
        expected, abs=5e-8
    )
    assert float(CRReLU()(torch.tensor(x)).detach()) == pytest.approx(
        expected, abs=1e-6
    )


def test_matches_float64_numpy_formula(rng):
    x = rng.normal(scale=3.0, size=1000)
    reference = np.maximum(x, 0) + 0.3 * x * np.exp(-(x**2) / 2)
    out = crrelu(torch.from_numpy(x), 0.3).numpy()
    np.testing.assert_allclose(out, reference, rtol=1e-14, atol=1e-15)


def test_gradcheck_in_x_and_epsilon(rng):
    # Keep inputs away from the kink at 0, where finite differences straddle it.
    x = rng.normal(size=20)
    x = np.where(np.abs(x) < 0.05, 0.3, x)
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    eps = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(crrelu, (x, eps))
    assert torch.autograd.gradgradcheck(crrelu, (x, eps))


def test_derivative_in_epsilon_is_the_gaussian_window():
    x = torch.linspace(-4, 4, 41, dtype=torch.float64)
    eps = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    crrelu(x, eps).sum().backward()
    assert float(eps.grad) == pytest.approx(float((x * torch.exp(-(x**2) / 2)).sum()))


def test_one_sided_slopes_at_zero():
    for x0, slope in ((1e-12, 1.01), (-1e-12, 0.01)):
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        crrelu(x, 0.01).backward()
        assert float(x.grad) == pytest.approx(slope, abs=1e-10)


def test_module_parameter_learns():
    act = CRReLU()
    assert act.epsilon.shape == () and float(act.epsilon.detach()) == pytest.approx(
        0.01
    )
    act(torch.linspace(-3, 3, 13)).pow(2).sum().backward()
    assert act.epsilon.grad is not None and float(act.epsilon.grad) != 0.0
    assert "epsilon=0.01" in repr(act)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_dtypes(dtype):
    x64 = torch.linspace(-6, 6, 241, dtype=torch.float64)
    out = crrelu(x64.to(dtype), 0.1)
    assert out.dtype == dtype
    reference = crrelu(x64, 0.1)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-6}[dtype]
    np.testing.assert_allclose(out.double().numpy(), reference.numpy(), atol=tol)
    # The module's 0-d float32 epsilon must not promote the output.
    assert CRReLU()(x64.to(dtype)).dtype == dtype


def test_float16_overflow_of_the_window_is_harmless():
    x = torch.tensor([-300.0, 300.0, -1000.0, 1000.0], dtype=torch.float16)
    out = crrelu(x, 0.5)
    assert torch.isfinite(out).all()
    assert out.tolist() == [0.0, 300.0, 0.0, 1000.0]


def _mlp():
    return nn.Sequential(
        nn.Linear(4, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 8), nn.GELU())
    )


def test_swap_replaces_every_gelu_with_its_own_crrelu():
    torch.manual_seed(0)
    model = _mlp()
    x = torch.randn(5, 4)
    before = model(x)
    assert swap_activations(model) is model
    acts = [m for m in model.modules() if isinstance(m, CRReLU)]
    assert len(acts) == 2 and acts[0] is not acts[1]
    assert not any(isinstance(m, nn.GELU) for m in model.modules())
    assert not torch.allclose(before, model(x))
    assert set(crrelu_epsilons(model)) == {"1", "2.1"}


def test_swap_other_names_and_kwargs():
    model = swap_activations(_mlp(), source=["gelu"], target="crrelu", init=0.2)
    assert all(v == pytest.approx(0.2) for v in crrelu_epsilons(model).values())
    model = swap_activations(model, source="crrelu", target="prelu")
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == 2


def test_swap_keeps_dtype():
    model = _mlp().double()
    swap_activations(model)
    assert all(
        m.epsilon.dtype == torch.float64
        for m in model.modules()
        if isinstance(m, CRReLU)
    )
    model(torch.randn(2, 4, dtype=torch.float64))


def test_swap_warns_when_nothing_matches():
    with pytest.warns(UserWarning, match="no module of kind"):
        swap_activations(nn.Linear(2, 2))


def test_param_groups_keep_epsilon_out_of_decay():
    model = swap_activations(_mlp())
    decay, no_decay = activation_param_groups(model, 0.05)
    eps_ids = {id(m.epsilon) for m in model.modules() if isinstance(m, CRReLU)}
    assert {id(p) for p in no_decay["params"]} == eps_ids
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert len(decay["params"]) + len(no_decay["params"]) == len(
        list(model.parameters())
    )
    torch.optim.AdamW(activation_param_groups(model, 0.05), lr=1e-3)


def test_epsilon_warnings():
    model = nn.Sequential(CRReLU(2.0), CRReLU(-0.1), CRReLU(0.3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = crrelu_epsilons(model)
    messages = [str(w.message) for w in caught]
    assert values["2"] == pytest.approx(0.3)
    assert len(messages) == 2
    assert "|epsilon| > 1" in messages[0] and "< 0" in messages[1]


def test_make_activation_registry():
    for name in ACTIVATIONS:
        assert isinstance(make_activation(name), nn.Module)
    assert math.isclose(
        float(make_activation("crrelu", init=0.5).epsilon.detach()), 0.5
    )


VALID = r"\['celu', 'crrelu', 'elu', 'gelu'"

BAD_INPUTS = [
    (lambda: CRReLU(float("nan")), ValueError, r"init must be finite; got nan"),
    (lambda: CRReLU("0.1"), TypeError, r"init must be a real number; got str"),
    (
        lambda: crrelu(torch.arange(3), 0.1),
        TypeError,
        r"x must have a floating dtype; got torch.int64",
    ),
    (lambda: crrelu([1.0], 0.1), TypeError, r"x must be a torch.Tensor; got list"),
    (
        lambda: crrelu(torch.ones(2), float("inf")),
        ValueError,
        r"epsilon must be finite; got inf",
    ),
    (
        lambda: swap_activations(_mlp(), source="gleu"),
        ValueError,
        rf"source must be one of {VALID}.*got 'gleu'",
    ),
    (
        lambda: swap_activations(_mlp(), target="swish"),
        ValueError,
        rf"target must be one of {VALID}.*got 'swish'",
    ),
    (lambda: make_activation("Relu"), ValueError, r"name must be one of .*got 'Relu'"),
    (
        lambda: swap_activations("model"),
        TypeError,
        r"model must be a torch.nn.Module; got str",
    ),
    (
        lambda: activation_param_groups(_mlp(), -1.0),
        ValueError,
        r"weight_decay must be >= 0; got -1.0",
    ),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), BAD_INPUTS)
def test_bad_inputs(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
