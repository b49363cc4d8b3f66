"""The mirror-descent reproductions register, reject inconsistent configs, and
run end to end on tiny configs (the real runs are `lemmata run ...`)."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

import lemmata.repro.mirror_descent  # registers the experiments
import lemmata.repro.mirror_descent_deep  # noqa: F401
from lemmata.experiments import RunContext
from lemmata.experiments.registry import get


def context(name):
    return RunContext(name, "quick", 0, np.random.SeedSequence(7))


def test_experiments_are_registered():
    for name in ("pgd-margin", "pgd-regression", "md-homogeneous", "pgd-deep"):
        experiment = get(name)
        assert experiment.presets["quick"] is not None
    assert get("pgd-deep").seeds["full"] >= 3
    assert get("md-homogeneous").paper == "2306.13853"


@pytest.mark.slow
def test_md_homogeneous_tiny_run():
    experiment = get("md-homogeneous")
    cfg = dataclasses.replace(
        experiment.presets["quick"], steps_margin=300, steps_reg=300
    )
    result = experiment.fn(cfg, context("md-homogeneous"))
    names = [check.name for check in result.checks]
    assert len(names) == 16 and len(set(names)) == 16
    assert all(math.isfinite(check.value) for check in result.checks)


@pytest.mark.parametrize(
    ("name", "changes", "pattern"),
    [
        ("md-homogeneous", {"blocks_margin": (20, 20)}, r"blocks_margin must sum"),
        ("md-homogeneous", {"lr_reg": (0.1,)}, r"lr_reg must have one entry per p"),
        ("pgd-deep", {"lr_base": (0.1,)}, r"lr_base must have one entry per p"),
        ("pgd-deep", {"n_train": 5000}, r"n_train must be in \(0, 5000\)"),
    ],
)
def test_inconsistent_configs_are_rejected(name, changes, pattern):
    experiment = get(name)
    cfg = dataclasses.replace(experiment.presets["quick"], **changes)
    with pytest.raises(ValueError, match=pattern):
        experiment.fn(cfg, context(name))


@pytest.mark.slow
def test_pgd_deep_tiny_run():
    experiment = get("pgd-deep")
    cfg = dataclasses.replace(
        experiment.presets["quick"],
        ps=(1.5, 3.0),
        lr_base=(0.1, 0.03),
        lr_factors=(1.0, 3.0),
        max_epochs=2,
        n_train=300,
        channels=(2, 4),
        hidden=8,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may warn (p < 1.2, p > 6 unused)
        result = experiment.fn(cfg, context("pgd-deep"))
    assert {c.name for c in result.checks} == {
        "near-zero fraction, p=1.5 / largest other p",
        "near-max fraction, p=3 / largest other p",
    }
    for key in ("test_accuracy", "near_zero_fraction", "near_max_fraction", "lr"):
        for p in ("1.5", "3"):
            assert math.isfinite(result.metrics[f"{key}/p={p}"])
    assert result.metrics["epochs/p=1.5"] <= 2
    assert "weight_histograms" in result.figures
