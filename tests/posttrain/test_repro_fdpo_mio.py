"""Smoke runs of fdpo-diffusion and mio-vs-dpo on tiny configs (seconds)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lemmata.experiments.registry import RunContext, get
from lemmata.repro import fdpo, mio  # noqa: F401


def _run(name, **overrides):
    exp = get(name)
    cfg = dataclasses.replace(exp.presets["quick"], **overrides)
    return exp.fn(cfg, RunContext(name, "quick", 0, np.random.SeedSequence(0)))


def test_fdpo_diffusion_tiny():
    res = _run(
        "fdpo-diffusion",
        hidden=16,
        embed_dim=8,
        n_steps=10,
        pretrain_steps=30,
        pretrain_batch=64,
        n_pairs=200,
        divergences=(("reverse_kl", 0.5), ("jensen_shannon", 0.5), ("alpha", 0.3)),
        n_draws=2,
        finetune_steps=3,
        finetune_batch=16,
        n_eval=300,
    )
    assert {c.name for c in res.checks} >= {
        "js/pareto_dominated_by",
        "js/reward_gain_over_reverse_kl",
        "js/entropy_minus_reverse_kl",
    }
    for key in ("reverse_kl/reward_gain", "alpha=0.3/entropy", "ref/spread"):
        assert math.isfinite(res.metrics[key])
    assert "reward_vs_diversity" in res.figures
    assert len(res.series["ref/mode_hist"]) == 8


def test_fdpo_diffusion_rejects_missing_baseline():
    with pytest.raises(ValueError, match="divergences must include reverse_kl"):
        _run("fdpo-diffusion", divergences=(("forward_kl", 0.5),), pretrain_steps=1)


def test_fdpo_diffusion_digits_tiny():
    pytest.importorskip("diffusers")
    pytest.importorskip("sklearn")
    res = _run(
        "fdpo-diffusion",
        dataset="digits",
        unet_channels=(8, 16),
        n_steps=5,
        pretrain_steps=3,
        pretrain_batch=16,
        n_pairs=40,
        divergences=(("reverse_kl", 0.5), ("jensen_shannon", 0.5)),
        n_draws=1,
        finetune_steps=2,
        finetune_batch=4,
        n_eval=40,
    )
    assert {c.name for c in res.checks} >= {
        "alignment/min_reward_gain",
        "js/pareto_dominated_by",
        "js/entropy_minus_reverse_kl",
        "js/spread_minus_reverse_kl",
    }
    for label in ("ref", "reverse_kl", "jensen_shannon"):
        for key in ("entropy", "coverage", "spread"):
            assert math.isfinite(res.metrics[f"{label}/{key}"])
    assert math.isfinite(res.metrics["ref/reward"])
    assert math.isfinite(res.metrics["jensen_shannon/reward_gain"])
    # Reward is a log acceptance probability: in [log(reward_floor), 0].
    assert math.log(0.01) - 1e-6 <= res.metrics["ref/reward"] <= 0.0
    assert 0.0 < res.metrics["pairs/n"] <= 40
    assert len(res.series["ref/mode_hist"]) == 10
    assert sum(res.series["ref/mode_hist"]) == pytest.approx(1.0)
    assert "reward_vs_diversity" in res.figures


def test_fdpo_diffusion_bad_dataset():
    with pytest.raises(
        ValueError, match=r"dataset must be one of \['mixture', 'digits'\]; got 'mnist'"
    ):
        _run("fdpo-diffusion", dataset="mnist", pretrain_steps=1)


def test_mio_vs_dpo_tiny():
    res = _run(
        "mio-vs-dpo",
        hidden=16,
        layers=1,
        heads=2,
        sft_steps=20,
        n_pairs=64,
        n_heldout=50,
        steps=4,
        batch=8,
        log_every=2,
    )
    assert {c.name for c in res.checks} >= {
        "dpo/chosen_decline",
        "mio_minus_dpo/chosen_decline",
        "mio_minus_dpo/heldout_reward_accuracy",
    }
    for name in ("dpo", "mio"):
        # At step 0 the policy is the reference: all held-out pairs tie.
        assert res.series[f"{name}/reward_acc"][0] == 0.5
        assert res.series[f"{name}/step"] == [0, 2, 4]
        assert res.metrics[f"{name}/chosen_decline"] >= 0.0
    assert res.series["dpo/chosen"][0] == res.series["mio/chosen"][0]
    assert "loglik_over_training" in res.figures


def test_mio_vs_dpo_bad_model():
    with pytest.raises(ValueError, match=r"model must be one of .*got 'gpt5'"):
        _run("mio-vs-dpo", model="gpt5")
