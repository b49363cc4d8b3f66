"""Smoke runs of the two soco experiments at a tiny scale."""

import dataclasses

import numpy as np
import pytest

from lemmata.experiments.registry import RunContext, get


@pytest.fixture(scope="module")
def registered():
    import lemmata.repro.soco  # noqa: F401  (registers the experiments)

    return get


def _context(name):
    return RunContext(name, "quick", 0, np.random.SeedSequence(0))


def test_competitive_ratio_experiment_tiny(registered):
    spec = registered("soco-competitive-ratio")
    cfg = dataclasses.replace(
        spec.presets["quick"],
        m_values=(0.01, 0.1, 1.0),
        horizon=10,
        trials=2,
        rounds_grid=5,
        rounds_scale=3.0,
        offsets=(0.0,),
        bregman_trials=1,
        bregman_horizon=3,
    )
    result = spec.fn(cfg, _context(spec.name))
    checks = {check.name: check for check in result.checks}
    assert checks["robd_over_bound_max/random"].passed
    assert checks["robd_over_bound_max/adversarial"].passed
    assert checks["robd_over_bound_max/bregman"].passed
    assert set(result.figures) == {"ratio_vs_m"}
    assert result.series["m"] == [0.01, 0.1, 1.0]
    assert all(np.isfinite(v) for v in result.metrics.values())


def test_regret_experiment_tiny(registered):
    spec = registered("soco-regret")
    cfg = dataclasses.replace(spec.presets["quick"], horizons=(50, 100, 200), trials=1)
    result = spec.fn(cfg, _context(spec.name))
    checks = {check.name: check for check in result.checks}
    assert checks["regret_minus_bound_max/robd_regret_weights"].passed
    assert np.isfinite(result.metrics["exponent/competitive"])
    assert set(result.figures) == {"regret_vs_T"}


def test_snap_back_family_drives_robd_to_the_bound():
    from lemmata.online import RegularizedOBD, competitive_lower_bound
    from lemmata.repro.soco import snap_back_ratio

    m = 0.05
    ratio, n, w = snap_back_ratio(
        lambda: RegularizedOBD(m), m, np.array([5, 20, 60]), 0.0, 1e7
    )
    assert 0.99 * competitive_lower_bound(m) <= ratio <= competitive_lower_bound(m)
    assert n == 60 and w < 0
