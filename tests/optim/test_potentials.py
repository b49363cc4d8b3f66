"""PNormPower: the maps are mutual inverses, match the math in float64 numpy,
never produce NaN for negative entries, and the class validates p."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lemmata.optim import PNormPower, Potential

# |w| above 1e-20 (or exactly 0): |w|**(p-1) stays a normal float64 for p <= 8.
finite_entries = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False).filter(
    lambda x: x == 0 or abs(x) > 1e-20
)


@settings(max_examples=60, deadline=None)
@given(
    p=st.floats(min_value=1.1, max_value=8.0),
    w=arrays(np.float64, st.integers(1, 20), elements=finite_entries),
)
def test_maps_are_mutual_inverses(p, w):
    potential = PNormPower(p)
    w_t = torch.tensor(w)

    u = potential.mirror_map(w_t)
    back = potential.inverse_mirror_map(u)

    assert torch.isfinite(u).all()
    torch.testing.assert_close(back, w_t, rtol=1e-10, atol=1e-300)
    torch.testing.assert_close(potential.mirror_map(back), u, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("p", [1.2, 1.5, 2.0, 3.0, 7.5])
def test_maps_match_numpy(rng, p):
    w = rng.standard_normal((4, 5))
    w[0, 0] = 0.0
    potential = PNormPower(p)
    expected_dual = np.sign(w) * np.abs(w) ** (p - 1)
    expected_value = np.sum(np.abs(w) ** p) / p

    np.testing.assert_allclose(
        potential.mirror_map(torch.tensor(w)).numpy(), expected_dual, rtol=1e-14
    )
    assert float(potential.value(torch.tensor(w))) == pytest.approx(
        expected_value, rel=1e-14
    )
    np.testing.assert_allclose(
        potential.inverse_mirror_map(torch.tensor(expected_dual)).numpy(), w, rtol=1e-12
    )


def test_mirror_map_is_the_gradient_of_value(rng):
    w = torch.tensor(rng.standard_normal(6), requires_grad=True)
    potential = PNormPower(2.7)
    potential.value(w).backward()
    with torch.no_grad():
        torch.testing.assert_close(w.grad, potential.mirror_map(w))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_negative_entries_give_no_nan(dtype):
    w = torch.tensor([-2.0, -0.5, -1e-3, 0.0, 0.5], dtype=dtype)
    for p in (1.1, 1.5, 3.0, 6.0):
        potential = PNormPower(p)
        assert torch.isfinite(potential.mirror_map(w)).all()
        assert torch.isfinite(potential.inverse_mirror_map(w)).all()
        # The sign survives, or the entry underflows to 0 (|-1e-3| ** 10 in fp16).
        assert (potential.inverse_mirror_map(w) * w >= 0).all()


def test_maps_do_not_modify_their_argument():
    w = torch.tensor([-1.5, 2.0])
    potential = PNormPower(3.0)
    potential.mirror_map(w)
    potential.inverse_mirror_map(w)
    assert torch.equal(w, torch.tensor([-1.5, 2.0]))


def test_potential_is_a_value_object():
    assert PNormPower(3) == PNormPower(3.0)
    assert PNormPower(3) != PNormPower(2.5)
    assert hash(PNormPower(3)) == hash(PNormPower(3.0))
    assert repr(PNormPower(1.5)) == "PNormPower(p=1.5)"
    assert pickle.loads(pickle.dumps(PNormPower(1.5))) == PNormPower(1.5)
    assert isinstance(PNormPower(2), Potential)


def test_potential_base_class_is_abstract():
    with pytest.raises(TypeError):
        Potential()


@pytest.mark.parametrize(
    ("p", "error", "pattern"),
    [
        (1.0, ValueError, r"p must be > 1; got 1\.0"),
        (-3, ValueError, r"p must be > 1; got -3\.0"),
        (float("nan"), ValueError, r"p must be > 1; got nan"),
        (float("inf"), ValueError, r"p must be finite; got inf"),
        ("2", TypeError, r"p must be a real number; got str"),
        (False, TypeError, r"p must be a real number; got bool"),
        (torch.tensor(2.0), TypeError, r"p must be a real number; got Tensor"),
    ],
)
def test_pnorm_power_rejects_bad_p(p, error, pattern):
    with pytest.raises(error, match=pattern):
        PNormPower(p)
