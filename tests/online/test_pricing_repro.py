"""Smoke test of the pricing-regret experiment at a tiny scale."""

import numpy as np

from lemmata.experiments.registry import RunContext, get


def test_pricing_regret_runs_small():
    import lemmata.repro.pricing  # noqa: F401  (registers the experiment)

    e = get("pricing-regret")
    cfg = type(e.presets["quick"])(horizon=64, n_horizons=4, n_markets=1)
    ctx = RunContext("pricing-regret", "quick", 0, np.random.SeedSequence(0))
    res = e.fn(cfg, ctx)
    assert len(res.checks) == 3 + 6 + 6 + 3
    assert {"regret_vs_T", "price_path"} <= set(res.figures)
    assert all(np.isfinite(v) for v in res.metrics.values())
    assert res.metrics["impossibility/bound_c_star"] > 0
    assert e.presets["full"].horizon == 10_000
