"""Smoke runs of five reproductions end to end on tiny configs (seconds each).

Each test runs the registered experiment function with its quick preset shrunk
(smaller models, fewer steps and evaluation samples) but with every variant and
every check of the quick preset, and asserts that the run completes, that the
checks are the ones the module defines, and that every metric and check value is
finite unless the module documents a NaN for it. slas-advantage is left out: it
has its own tiny run in test_flow_grpo.py.
"""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pytest

pytest.importorskip("torch")

from lemmata.experiments.registry import RunContext, get
from lemmata.repro import cologen, dipo, kvlock, mask_grpo, pretext_grpo

TINY = {
    "dipo-unlearning": dict(
        n_authors=10,
        # forget_quality needs >= 10 forget questions: 1 author x 5 attributes x 2.
        n_attributes=5,
        n_real_authors=3,
        n_world_facts=3,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        finetune_epochs=2,
        # 1 then 2 authors: a smaller split, and 2 chained sequential requests.
        forget_percents=(10.0, 20.0),
        lrs=(1e-3,),
        unlearn_steps=2,
        unlearn_batch=4,
        eval_retain=4,
        max_new_tokens=4,
    ),
    "mask-grpo": dict(
        d_model=16,
        num_layers=1,
        num_heads=2,
        pretrain_batch=16,
        pretrain_max_steps=25,  # one evaluation of the early-stopping rule
        num_steps=4,
        group_size=3,
        prompts_per_update=4,
        updates=2,
        seeds=2,  # the checks use the spread over seeds
        eval_per_class=4,
        eval_every=1,
        released_bool=True,  # the full preset's extra variant, cheap here
    ),
    "pretext-grpo": dict(
        d_model=16,
        num_layers=1,
        num_heads=2,
        sft_steps=2,
        sft_batch=8,
        updates=2,  # P1: one pretext update, then one query update
        prompts_per_update=2,
        group_size=2,
        eval_videos=8,
    ),
    "kv-lock": dict(
        dim=16,
        depth=1,
        heads=2,
        train_steps=3,
        batch_size=4,
        classifier_steps=2,
        edits=4,
        steps=6,
        kappa=3,  # the detector acts on the last kappa - window + 1 steps
        window=2,
        calibration_edits=2,
        sweep_edits=2,
        sweep_noises=2,
    ),
    "cologen-routing": dict(
        dim=16,
        depth=1,
        heads=2,
        base_steps=3,
        stage_steps=2,
        batch_size=4,
        rank=2,
        sample_steps=2,
        eval_size=4,  # >= 2: the conflict check uses a paired standard error
    ),
}

# Check names as each module builds them (the quick preset's).
CHECKS = {
    "dipo-unlearning": {
        "C0 retain model vs itself: forget quality",
        "C0 finetuned model: forget quality",
        "C1 log10 median FQ(DiPO) - best baseline, MU >= 85% of finetuned",
        "C2 baselines whose best point dominates DiPO's best",
        "C3 min over sizes and sequential of MU(DiPO) - MU(NPO)",
    },
    "mask-grpo": {
        "reward gain of the default candidate over the base",
        "min over paper candidates of (reward - AR reward) / seed std",
        "(reward without KL - reward with KL) / seed std",
        "gain on the first half of the steps / gain on all steps",
        "token entropy after Mask-GRPO / base entropy",
    },
    "pretext-grpo": {
        "P1 rotation accuracy after Pretext-GRPO",
        "P1 time-reversal accuracy after Pretext-GRPO",
        "P1 frame-group-swap accuracy after Pretext-GRPO",
        "query accuracy P1 - P0 (held-out)",
        "largest shortcut drop of P1, P2 minus P0's drop",
    },
    "kv-lock": {
        "full-lock PSNR minus KV-Lock PSNR (dB)",
        "no-lock success minus KV-Lock success",
        "Spearman(w0, late sigma2)",
        "AUC of final sigma2 for hallucinated edits",
        "KV-Lock minus fixed-0.5 background PSNR (dB)",
        "KV-Lock minus fixed-0.5 foreground success",
        "parameters changed by the edits",
    },
    "cologen-routing": {
        "CoLoGen minus co-training, editing",
        "CoLoGen minus co-training, customisation",
        "tasks where co-training trails specialists (> 2 SE)",
        "share of the co-training gap closed by CoLoGen",
        "CoLoGen worst relative drop of inpainting/grounding",
        "sequential minus CoLoGen relative drop",
        "frozen experts / base tensors changed",
    },
}

# Checks whose value the module sets to NaN (or +-inf) on purpose, and why.
NONFINITE_CHECKS = {
    # NaN when no learning rate keeps DiPO's utility above the floor.
    "dipo-unlearning": {
        "C1 log10 median FQ(DiPO) - best baseline, MU >= 85% of finetuned"
    },
    # z-scores are +-inf when the seed std is 0; the ratio is NaN when gain is 0.
    "mask-grpo": {
        "min over paper candidates of (reward - AR reward) / seed std",
        "(reward without KL - reward with KL) / seed std",
        "gain on the first half of the steps / gain on all steps",
    },
    "pretext-grpo": set(),
    # AUC is NaN when every (or no) edit hallucinates.
    "kv-lock": {"AUC of final sigma2 for hallucinated edits"},
    # NaN when co-training trails no specialist.
    "cologen-routing": {"share of the co-training gap closed by CoLoGen"},
}

# Metric-key prefixes that may be NaN, for the same reasons.
NAN_METRICS = {
    "dipo-unlearning": ("median_fq_kept/",),
    "mask-grpo": (),
    # Answer accuracy given a right / wrong transform: NaN when none is right
    # (or none wrong) on a family.
    "pretext-grpo": ("P2/answer_given_",),
    "kv-lock": ("auc/",),
    "cologen-routing": ("gap_closed_fraction",),
}

FIGURES = {
    "dipo-unlearning": {"fq_vs_utility"},
    "mask-grpo": {"reward_curves", "final_rewards"},
    "pretext-grpo": {"train_reward", "accuracies"},
    "kv-lock": {"tradeoff", "guidance_sweep"},
    "cologen-routing": {"methods"},
}


def _run(name, seed=0, cache_dir=None):
    exp = get(name)
    cfg = dataclasses.replace(exp.presets["quick"], **TINY[name])
    ctx = RunContext(name, "quick", 0, np.random.SeedSequence(seed), cache_dir)
    return exp.fn(cfg, ctx)


def _assert_sane(name, res):
    checks = {c.name: c for c in res.checks}
    assert len(checks) == len(res.checks), "duplicate check names"
    assert set(checks) == CHECKS[name]
    for check in res.checks:
        assert math.isfinite(check.value) or check.name in NONFINITE_CHECKS[name], check
        assert math.isfinite(check.threshold), check
        assert isinstance(check.passed, bool)
    assert res.metrics
    bad = [
        k
        for k, v in res.metrics.items()
        if not math.isfinite(v)
        and not (math.isnan(v) and k.startswith(NAN_METRICS[name]))
    ]
    assert not bad, {k: res.metrics[k] for k in bad}
    for key, values in res.series.items():
        assert all(math.isfinite(v) for v in values), key
    assert set(res.figures) == FIGURES[name]


def test_dipo_unlearning_tiny(monkeypatch):
    for module in ("transformers", "tokenizers", "rouge_score", "scipy"):
        pytest.importorskip(module)
    memory = pytest.importorskip("accelerate.utils.memory")
    # Trainer.train() runs gc.collect() (accelerate's free_memory) at the start of
    # each of the 11 unlearning runs, ~0.5 s each here; it changes no number.
    monkeypatch.setattr(memory, "gc", types.SimpleNamespace(collect=lambda *a: 0))
    name = "dipo-unlearning"
    res = _run(name)
    _assert_sane(name, res)
    m = res.metrics
    cfg = TINY[name]
    for method in dipo._QUICK.methods:
        for key in ("fq", "mu", "forget_rouge"):
            assert f"{key}/{method}/20.0/lr=0.001" in m
        assert 0.0 <= m[f"fq/{method}/20.0/lr=0.001"] <= 1.0
    for method in dipo._QUICK.size_methods:
        assert f"mu/{method}/10.0/lr=0.001" in m
    for method in dipo._QUICK.sequential_methods:
        assert 0.0 <= m[f"mu/{method}/sequential/lr=0.001"] <= 1.0
        # One utility per forget split, then the sequential requests.
        assert (
            len(res.series[f"mu_by_size/{method}"]) == len(cfg["forget_percents"]) + 1
        )
    # The retain model is the reference of its own forget quality.
    assert m["retain_model/20.0/fq_self"] == pytest.approx(1.0)


def test_mask_grpo_tiny():
    name = "mask-grpo"
    res = _run(name)
    _assert_sane(name, res)
    m = res.metrics
    variants = list(mask_grpo._VARIANTS)
    for v in variants:  # released_bool included (TINY sets it)
        assert 0.0 <= m[f"reward/{v}"] <= 1.0
        assert m[f"backward_samples/{v}"] > 0, v  # every variant took GRPO steps
        assert len(res.series[f"reward_curve/{v}"]) == TINY[name]["updates"]
    assert m["pretrain/steps"] >= 1
    assert m["entropy/base"] > 0
    assert m["fidelity/bool_vs_simpler_max_abs"] >= 0.0


def test_pretext_grpo_tiny():
    name = "pretext-grpo"
    res = _run(name)
    _assert_sane(name, res)
    m = res.metrics
    updates = TINY[name]["updates"]
    for p in ("P0", "P1", "P2"):
        assert 0.0 <= m[f"query_acc/{p}"] <= 1.0
        assert 0.0 <= m[f"shortcut_probe_acc/{p}"] <= 1.0
        assert len(res.series[f"train_reward/{p}"]) == updates
    for f in pretext_grpo._FAMILIES:
        assert 0.0 <= m[f"pretext_acc/P1/{f}"] <= 1.0
        assert 0.0 <= m[f"P2/transform_acc/{f}"] <= 1.0


def test_kv_lock_tiny():
    pytest.importorskip("diffusers")
    name = "kv-lock"
    res = _run(name)
    _assert_sane(name, res)
    m = res.metrics
    for v in kvlock._VARIANTS:
        assert 0.0 <= m[f"success/{v}"] <= 1.0
        assert 0.0 <= m[f"late_steps_over_tau/{v}"] <= 1.0
    assert m["tau"] > 0
    assert len(res.series["sweep/late_sigma2"]) == len(kvlock.KVLockConfig().sweep_w0)
    # The edits must not write to the DiT.
    checks = {c.name: c for c in res.checks}
    assert checks["parameters changed by the edits"].passed


def test_cologen_routing_tiny():
    name = "cologen-routing"
    res = _run(name)
    _assert_sane(name, res)
    m = res.metrics
    for task in cologen.TASKS:
        for method in ("cologen", "cologen_post_stage", "sequential", "cotrain"):
            assert f"{method}/{task}" in m
        assert f"specialist/{task}" in m
    assert len(res.series["usage_newest"]) == len(cologen.TASKS)
    assert all(0.0 <= u <= 1.0 for u in res.series["usage_newest"])
    checks = {c.name: c for c in res.checks}
    # Earlier experts and the base stay frozen.
    assert checks["frozen experts / base tensors changed"].passed


def test_cologen_routing_is_deterministic():
    first, second = _run("cologen-routing", 3), _run("cologen-routing", 3)
    assert first.metrics.keys() == second.metrics.keys()
    for key, value in first.metrics.items():
        assert value == second.metrics[key] or (
            math.isnan(value) and math.isnan(second.metrics[key])
        ), key
    assert [c.name for c in first.checks] == [c.name for c in second.checks]
    for a, b in zip(first.checks, second.checks, strict=True):
        assert a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
    assert first.series == second.series


# --- regressions --------------------------------------------------------------


def test_pretext_summarise_all_nan_conditional_accuracy_is_quiet():
    # An all-NaN median over seeds must give NaN without a RuntimeWarning.
    import warnings

    families = pretext_grpo._FAMILIES
    stats = {}
    for f in families:
        stats[f"transform_acc/{f}"] = 1.0  # every transform right: none wrong
        stats[f"answer_given_right_transform/{f}"] = 0.5
        stats[f"answer_given_wrong_transform/{f}"] = math.nan
    runs = {p: {"curve": [0.0, 1.0]} for p in ("P0", "P1", "P2")}
    runs["P1"]["pretext"] = dict.fromkeys(families, 0.5)
    scores = {"P0": (0.5, 0.4, {}), "P1": (0.6, 0.5, {}), "P2": (0.7, 0.6, stats)}
    cfg = dataclasses.replace(pretext_grpo._QUICK, seeds=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = pretext_grpo._summarise(
            cfg, [(runs, scores)], 0.25, dict.fromkeys(families, 0.3)
        )
    assert math.isnan(res.metrics["P2/answer_given_wrong_transform/rotate"])


def test_mask_grpo_equal_rewards_with_zero_spread_do_not_pass():
    # Without a seed spread, a z-score check cannot pass (it used to be +inf).
    summary = {v: (0.5, 0.0) for v in mask_grpo._VARIANTS}
    metrics = {"gain/default": 0.1, "gain/half": 0.1, "entropy/default": 1.0}
    checks = {c.name: c for c in mask_grpo._checks(metrics, summary, 1.0)}
    assert not checks[
        "min over paper candidates of (reward - AR reward) / seed std"
    ].passed


def test_kv_lock_cached_dit_gives_the_same_numbers(tmp_path):
    # First run trains and stores the DiT; the second loads it. Both, and a run
    # without a cache, must give identical results.
    plain = _run("kv-lock")
    first = _run("kv-lock", cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("dit-") and files[0].endswith(".pt")
    stamp = (tmp_path / files[0]).stat().st_mtime_ns
    second = _run("kv-lock", cache_dir=tmp_path)
    assert (tmp_path / files[0]).stat().st_mtime_ns == stamp  # loaded, not rewritten
    # Another edit setting (not a training field) reuses the same DiT.
    exp = get("kv-lock")
    cfg = dataclasses.replace(exp.presets["quick"], **{**TINY["kv-lock"], "edits": 3})
    ctx = RunContext("kv-lock", "quick", 0, np.random.SeedSequence(0), tmp_path)
    exp.fn(cfg, ctx)
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    for res in (first, second):
        assert res.series == plain.series
        for key, value in plain.metrics.items():
            other = res.metrics[key]
            assert other == value or (math.isnan(other) and math.isnan(value)), key
