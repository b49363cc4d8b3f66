"""A tiny end-to-end run of the oris-offline-rl reproduction."""

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("gymnasium")

import lemmata.repro.offline_rl  # noqa: F401  (registers the experiment)
from lemmata.experiments import RunContext, get


def test_oris_offline_rl_tiny_run():
    exp = get("oris-offline-rl")
    cfg = dataclasses.replace(
        exp.presets["quick"],
        # The state GAN keeps its quick budget: a shorter one does not fit the
        # offline states and the pipeline refuses its restarts.
        repeats=2,  # the checks use a pooled standard error over repeats
        steps=20,
        batch_size=32,
        bc_steps=20,
        online_steps=20,
        eval_episodes=2,
        toy_samples=100,
        toy_steps=20,
    )
    res = exp.fn(
        cfg, RunContext("oris-offline-rl", "quick", 0, np.random.SeedSequence(0))
    )
    assert len(res.checks) == 6
    assert all(math.isfinite(c.value) for c in res.checks)
    assert "returns_and_weights" in res.figures
    # The figure's weights are unnormalised density ratios, both within the clip.
    for key in ("weights/gan_by_step", "weights/default_by_step"):
        assert all(0 < w <= cfg.w_max for w in res.series[key])
