"""PNormPower: the maps are mutual inverses, match the math in float64 numpy,
never produce NaN for negative entries, and the class validates p."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lemmata.optim import PNormPower, PNormSquared, Potential

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


# ------------------------------------------------------- the signed power


@pytest.mark.parametrize("e", [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 6.5, 10.0, 1 / 9, 1 / 3])
@pytest.mark.parametrize("with_out", [False, True])
def test_signed_power_matches_numpy(rng, e, with_out):
    from lemmata.optim._potentials import _signed_power

    u = rng.standard_normal(257) * 3.0
    u[0] = 0.0
    out = torch.empty(257, dtype=torch.float64) if with_out else None
    result = _signed_power(torch.tensor(u), e, out=out)
    if with_out:
        assert result is out
    expected = np.sign(u) * np.abs(u) ** e
    # Repeated squaring rounds once per multiplication: a few ulp.
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-14, atol=0)


def test_exponents_within_rounding_of_a_half_integer_are_snapped(rng):
    from lemmata.optim._potentials import _half_steps

    assert 1.0 / (1.1 - 1.0) != 10.0
    assert _half_steps(1.0 / (1.1 - 1.0)) == 20
    assert _half_steps(1.0 / (1.5 - 1.0)) == 4
    assert _half_steps(1 / 9) is None
    assert _half_steps(33.0) is None
    w = torch.tensor(rng.uniform(0.1, 2.0, 50))
    np.testing.assert_allclose(
        PNormPower(1.1).inverse_mirror_map(w).numpy(), w.numpy() ** 10, rtol=1e-14
    )


def test_separable_flags():
    assert PNormPower.separable is True
    assert PNormSquared.separable is False
    assert Potential.separable is False


def test_inverse_mirror_map_into_default_copies(rng):
    class Scaled(Potential):
        def value(self, w):
            return (w**2).sum()

        def mirror_map(self, w):
            return 2 * w

        def inverse_mirror_map(self, u):
            return u / 2

    u = torch.tensor(rng.standard_normal(5))
    out = torch.empty(5, dtype=torch.float64)
    assert Scaled().inverse_mirror_map_into(u, out) is out
    torch.testing.assert_close(out, u / 2)
    assert PNormPower(3).inverse_mirror_map_into(u, out) is out
    torch.testing.assert_close(out, PNormPower(3).inverse_mirror_map(u))


# ----------------------------------------------------------- PNormSquared


def squared_gradient(w, p):
    """grad of (1/2)||w||_p^2 in float64 numpy: ||w||_p^(2-p) sign(w)|w|^(p-1)."""
    norm = np.sum(np.abs(w) ** p) ** (1 / p)
    return norm ** (2 - p) * np.sign(w) * np.abs(w) ** (p - 1)


@pytest.mark.parametrize("p", [1.1, 1.5, 2.0, 3.0, 7.5])
def test_squared_maps_match_numpy(rng, p):
    w = rng.standard_normal((4, 5))
    w[0, 0] = 0.0
    potential = PNormSquared(p)
    q = p / (p - 1)
    u = squared_gradient(w, p)

    np.testing.assert_allclose(
        potential.mirror_map(torch.tensor(w)).numpy(), u, rtol=1e-12, atol=1e-300
    )
    # The inverse is the gradient of the conjugate (1/2)||u||_q^2.
    np.testing.assert_allclose(
        potential.inverse_mirror_map(torch.tensor(u)).numpy(),
        squared_gradient(u, q),
        rtol=1e-12,
        atol=1e-300,
    )
    np.testing.assert_allclose(
        squared_gradient(u, q), w, rtol=1e-10, atol=1e-14
    )  # the closed forms are inverse to each other
    expected_value = 0.5 * np.sum(np.abs(w) ** p) ** (2 / p)
    assert float(potential.value(torch.tensor(w))) == pytest.approx(
        expected_value, rel=1e-13
    )


@settings(max_examples=60, deadline=None)
@given(
    p=st.floats(min_value=1.1, max_value=8.0),
    w=arrays(np.float64, st.integers(1, 20), elements=finite_entries),
)
def test_squared_maps_are_mutual_inverses(p, w):
    potential = PNormSquared(p)
    w_t = torch.tensor(w)
    back = potential.inverse_mirror_map(potential.mirror_map(w_t))
    scale = float(np.max(np.abs(w))) if np.any(w) else 1.0
    torch.testing.assert_close(back, w_t, rtol=1e-9, atol=1e-12 * scale)


def test_squared_mirror_map_is_the_gradient_of_value(rng):
    w = torch.tensor(rng.standard_normal(7), requires_grad=True)
    potential = PNormSquared(2.7)
    potential.value(w).backward()
    with torch.no_grad():
        torch.testing.assert_close(w.grad, potential.mirror_map(w))


def test_squared_maps_are_one_homogeneous(rng):
    w = torch.tensor(rng.standard_normal(9))
    potential = PNormSquared(4.0)
    torch.testing.assert_close(
        potential.mirror_map(3.5 * w), 3.5 * potential.mirror_map(w)
    )
    torch.testing.assert_close(
        potential.inverse_mirror_map(-2.0 * w), -2.0 * potential.inverse_mirror_map(w)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_squared_maps_do_not_overflow(dtype):
    # ||w||_p^p overflows float32 for these entries and p; scaling by max|w| avoids it.
    w = torch.tensor([1e30, -3e29, 0.0, 2e28], dtype=dtype)
    for p in (1.5, 6.0):
        potential = PNormSquared(p)
        u = potential.mirror_map(w)
        assert torch.isfinite(u).all()
        back = potential.inverse_mirror_map(u)
        torch.testing.assert_close(back.float(), w.float(), rtol=1e-2, atol=1e27)


def test_squared_zero_maps_to_zero():
    empty = torch.zeros(2, 0)
    assert PNormSquared(3.0).mirror_map(empty).shape == (2, 0)
    assert PNormSquared(3.0).inverse_mirror_map(empty).shape == (2, 0)
    assert float(PNormSquared(3.0).value(empty)) == 0.0
    for p in (1.5, 3.0):
        zero = torch.zeros(3)
        assert torch.equal(PNormSquared(p).mirror_map(zero), zero)
        assert torch.equal(PNormSquared(p).inverse_mirror_map(zero), zero)
        assert float(PNormSquared(p).value(zero)) == 0.0


def test_squared_is_a_value_object():
    assert PNormSquared(3) == PNormSquared(3.0)
    assert PNormSquared(3) != PNormPower(3)
    assert hash(PNormSquared(3)) == hash(PNormSquared(3.0))
    assert repr(PNormSquared(1.5)) == "PNormSquared(p=1.5)"
    assert PNormSquared(1.5).q == pytest.approx(3.0)
    assert pickle.loads(pickle.dumps(PNormSquared(1.5))) == PNormSquared(1.5)


@pytest.mark.parametrize(
    ("p", "error", "pattern"),
    [
        (1.0, ValueError, r"p must be > 1; got 1\.0"),
        (float("inf"), ValueError, r"p must be finite; got inf"),
        ("2", TypeError, r"p must be a real number; got str"),
    ],
)
def test_pnorm_squared_rejects_bad_p(p, error, pattern):
    with pytest.raises(error, match=pattern):
        PNormSquared(p)
