"""Privacy accounting against closed forms and opacus' RDP accountant."""

import math

import numpy as np
import pytest

from lemmata.privacy import (
    DEFAULT_ORDERS,
    PrivacyLedger,
    Spend,
    calibrate_noise,
    exponential_mechanism_rho,
    gaussian_rho,
    laplace_rho,
    rdp_to_epsilon,
    rho_from_epsilon,
    rho_to_epsilon,
    subsampled_gaussian_rdp,
)


@pytest.mark.parametrize(
    ("sensitivity", "sigma"), [(1.0, 1.0), (2.0, 0.5), (math.sqrt(7), 3.0)]
)
def test_gaussian_rho_closed_form(sensitivity, sigma):
    assert gaussian_rho(sensitivity, sigma) == pytest.approx(
        sensitivity**2 / (2 * sigma**2), rel=1e-15
    )


def test_pure_dp_mechanisms():
    # Bun-Steinke Prop. 1.4: eps-DP is eps^2/2-zCDP; the exponential mechanism is
    # eps^2/8-zCDP (Cesar-Rogers).
    assert laplace_rho(0.3) == pytest.approx(0.045)
    assert exponential_mechanism_rho(0.4) == pytest.approx(0.02)


@pytest.mark.parametrize("rho", [1e-4, 0.02, 0.5, 3.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-9, 0.1])
def test_rho_to_epsilon_closed_form_and_inverse(rho, delta):
    expected = rho + 2 * math.sqrt(rho * math.log(1 / delta))
    assert rho_to_epsilon(rho, delta) == pytest.approx(expected, rel=1e-14)
    assert rho_from_epsilon(expected, delta) == pytest.approx(rho, rel=1e-9)


def test_rho_from_epsilon_is_the_largest_rho():
    rho = rho_from_epsilon(1.0, 1e-5)
    assert rho_to_epsilon(rho, 1e-5) <= 1.0 + 1e-12
    assert rho_to_epsilon(rho * 1.001, 1e-5) > 1.0


def test_composition_adds_rho_like_one_gaussian():
    # Two Gaussian releases of a sensitivity-1 statistic with sigma1, sigma2 are
    # worth one release with 1/sigma^2 = 1/sigma1^2 + 1/sigma2^2.
    s1, s2, delta = 2.0, 3.0, 1e-6
    ledger = PrivacyLedger(10.0, delta)
    for name, s in (("a", s1), ("b", s2)):
        rho = gaussian_rho(1.0, s)
        ledger.record(Spend(name, rho_to_epsilon(rho, delta), delta, rho=rho))
    rho_total = 0.5 * (1 / s1**2 + 1 / s2**2)
    expected = rho_total + 2 * math.sqrt(rho_total * math.log(1 / delta))
    assert ledger.total() == pytest.approx((expected, delta))
    assert ledger.within_budget()


def test_ledger_parallel_and_basic_composition():
    disjoint = PrivacyLedger(1.0, 1e-5, disjoint=True)
    basic = PrivacyLedger(1.0, 1e-5)
    for eps in (0.2, 0.7, 0.5):
        disjoint.record(Spend("s", eps, 1e-6))
        basic.record(Spend("s", eps, 1e-6))
    assert disjoint.total() == (0.7, 1e-6)
    assert basic.total() == pytest.approx((1.4, 3e-6))
    assert not basic.within_budget()


def test_rdp_conversion_matches_opacus():
    from opacus.accountants.analysis.rdp import get_privacy_spent

    rdp = subsampled_gaussian_rdp(0.05, 1.3, 400)
    ours = rdp_to_epsilon(DEFAULT_ORDERS, rdp, 1e-5)
    theirs = get_privacy_spent(orders=DEFAULT_ORDERS, rdp=rdp, delta=1e-5)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-10)
    assert ours[1] == theirs[1]


def test_rdp_ledger_of_k_runs_matches_opacus_accountant():
    from opacus.accountants import RDPAccountant

    q, steps, k, delta = 0.04, 150, 4, 1e-5
    sigma = calibrate_noise(2.0, delta, q, steps * k)
    acc = RDPAccountant()
    ledger = PrivacyLedger(2.0, delta)
    for j in range(k):
        acc.history.append((sigma, q, steps))
        rdp = subsampled_gaussian_rdp(q, sigma, steps)
        ledger.record(
            Spend(f"run {j}", 0.0, delta, orders=tuple(DEFAULT_ORDERS), rdp=tuple(rdp))
        )
    theirs = acc.get_epsilon(delta=delta, alphas=list(DEFAULT_ORDERS))
    assert ledger.total()[0] == pytest.approx(theirs, rel=1e-9)
    assert theirs <= 2.0 + 1e-9
    # Calibration is tight to 1e-3: 1% less noise breaks the budget.
    acc_less = RDPAccountant()
    acc_less.history = [(sigma * 0.99, q, steps * k)]
    assert acc_less.get_epsilon(delta=delta, alphas=list(DEFAULT_ORDERS)) > 2.0


def test_mixed_zcdp_and_rdp_entries_compose_as_rdp():
    ledger = PrivacyLedger(5.0, 1e-5)
    ledger.record(Spend("z", 0.0, 1e-5, rho=0.1))
    ledger.record(Spend("z", 0.0, 1e-5, rho=0.2))
    ledger.record(
        Spend(
            "r",
            0.0,
            1e-5,
            orders=tuple(DEFAULT_ORDERS),
            rdp=(0.0,) * len(DEFAULT_ORDERS),
        )
    )
    curve = 0.3 * np.asarray(DEFAULT_ORDERS)
    expected = rdp_to_epsilon(DEFAULT_ORDERS, curve, 1e-5)[0]
    # RDP conversion of rho*alpha is within the zCDP closed form's looseness.
    assert ledger.total()[0] == pytest.approx(expected)
    assert expected <= rho_to_epsilon(0.3, 1e-5)


BAD = [
    (rho_to_epsilon, (-0.1, 1e-5), ValueError, r"rho must be >= 0; got -0\.1"),
    (rho_to_epsilon, (0.1, 0.0), ValueError, r"delta must be in \(0, 1\); got 0\.0"),
    (rho_from_epsilon, (0.0, 1e-5), ValueError, r"epsilon must be > 0; got 0\.0"),
    (rho_from_epsilon, (-1.0, 1e-5), ValueError, r"epsilon must be > 0; got -1\.0"),
    (rho_from_epsilon, (1.0, 1.0), ValueError, r"delta must be in \(0, 1\); got 1\.0"),
    (
        rho_from_epsilon,
        ("1", 1e-5),
        TypeError,
        r"epsilon must be a real number; got str",
    ),
    (gaussian_rho, (1.0, 0.0), ValueError, r"sigma must be > 0; got 0\.0"),
    (PrivacyLedger, (float("nan"), 1e-5), ValueError, r"epsilon must be > 0; got nan"),
    (PrivacyLedger, (1.0, 1.5), ValueError, r"delta must be in \(0, 1\); got 1\.5"),
]


@pytest.mark.parametrize(("fn", "args", "exc", "pattern"), BAD)
def test_bad_inputs(fn, args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn(*args)
