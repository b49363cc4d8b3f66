"""The reproduction framework: registry, seeding, store, runner, report."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import toy_experiments

from lemmata.experiments import (
    Check,
    Result,
    RunContext,
    Store,
    expand,
    experiment,
    get,
    run,
    summary_records,
    write_report,
)
from lemmata.experiments.runner import execute


def test_check_verdicts():
    assert Check("a", 0.5, 1.0, "<").passed
    assert not Check("a", 1.0, 1.0, "<").passed
    assert Check("a", 1.0, 1.0, "<=").passed
    assert Check("a", 2.0, 1.0, ">").passed
    assert not Check("a", float("nan"), 1.0, "<").passed
    assert not Check("a", float("nan"), 1.0, ">").passed


BAD_REGISTRATIONS = [
    ({"name": "Not_Kebab"}, ValueError, r"kebab-case; got 'Not_Kebab'"),
    ({"config": dict}, TypeError, r"config must be a dataclass"),
    ({"quick": object()}, TypeError, r"quick preset of toy-x must be a ToyConfig"),
]


@pytest.mark.parametrize(("change", "exc", "pattern"), BAD_REGISTRATIONS)
def test_bad_registration(change, exc, pattern):
    kwargs = {
        "name": "toy-x",
        "paper": "0",
        "claim": "c",
        "config": toy_experiments.ToyConfig,
        "quick": toy_experiments.ToyConfig(),
        "full": toy_experiments.ToyConfig(),
        **change,
    }
    with pytest.raises(exc, match=pattern):
        experiment(**kwargs)


BAD_INPUTS = [
    (lambda: Check("a", 1, 1, "!="), ValueError, r"op must be one of"),
    (
        lambda: get("nope"),
        ValueError,
        r"unknown experiment 'nope'; valid names: .*toy-mean",
    ),
    (lambda: get("toy-mean").config("huge"), ValueError, r"scale must be one of"),
    (
        lambda: get("toy-mean").config("quick", {"zz": "1"}),
        ValueError,
        r"unknown config key 'zz' for toy-mean; valid keys: mu, n, sleep, tolerance",
    ),
    (
        lambda: get("toy-mean").config("quick", {"n": "ten"}),
        ValueError,
        r"config key 'n' must be int-valued; got 'ten'",
    ),
    (
        lambda: expand([get("toy-mean")], "quick", seeds=0),
        ValueError,
        r"seeds must be >= 1; got 0",
    ),
    (lambda: run([], Store("x"), jobs=0), ValueError, r"jobs must be >= 1; got 0"),
    (
        lambda: run([], Store("x"), backend="slurm"),
        ValueError,
        r"backend must be one of \['local', 'ray'\]; got 'slurm'",
    ),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), BAD_INPUTS)
def test_bad_inputs(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_overrides_parse_to_field_types():
    cfg = get("toy-mean").config("quick", {"n": "12", "mu": "-2.5"})
    assert cfg.n == 12 and cfg.mu == -2.5


def test_seeds_are_reproducible_and_distinct():
    specs = expand([get("toy-mean")], "quick", seeds=3)
    first = [np.random.default_rng(s.seed_sequence()).random(4) for s in specs]
    again = [np.random.default_rng(s.seed_sequence()).random(4) for s in specs]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], first[1])
    other_root = expand([get("toy-mean")], "quick", seeds=1, root_seed=7)[0]
    assert not np.allclose(
        np.random.default_rng(other_root.seed_sequence()).random(4), first[0]
    )
    # A different config is a different stream too.
    changed = expand([get("toy-mean")], "quick", seeds=1, overrides={"n": "5"})[0]
    assert changed.run_id != specs[0].run_id


def test_local_run_stores_and_resumes(tmp_path):
    store = Store(tmp_path)
    specs = expand([get("toy-mean")], "quick")
    events = []
    outcomes = run(specs, store, jobs=1, on_event=lambda k, o: events.append(k))
    assert events == ["done"] * 3
    assert all(o.error is None and not o.resumed for o in outcomes)
    runs = store.runs("toy-mean")
    assert len(runs) == 3
    record = runs[0].record
    assert record["checks"][0]["name"] == "absolute error"
    assert (runs[0].path / "histogram.png").read_bytes()[:4] == b"\x89PNG"

    events.clear()
    again = run(specs, store, jobs=1, on_event=lambda k, o: events.append(k))
    assert events == ["skip"] * 3
    assert [o.stored.record["metrics"] for o in again] == [
        o.stored.record["metrics"] for o in outcomes
    ]


def test_pool_gives_the_same_numbers_as_in_process(tmp_path):
    specs = expand([get("toy-mean")], "quick")
    serial = run(specs, Store(tmp_path / "a"), jobs=1)
    pooled = run(specs, Store(tmp_path / "b"), jobs=2)
    for s, p in zip(serial, pooled, strict=True):
        assert s.stored.record["metrics"] == p.stored.record["metrics"]
        assert s.stored.record["series"] == p.stored.record["series"]


def test_changed_code_version_reruns(tmp_path, monkeypatch):
    store = Store(tmp_path)
    specs = expand([get("toy-mean")], "quick", seeds=1)
    run(specs, store)
    import lemmata.experiments.runner as runner

    monkeypatch.setattr(runner, "code_version", lambda module=None: "other")
    events = []
    run(specs, store, on_event=lambda k, o: events.append(k))
    assert events == ["done"]
    assert store.runs()[0].record["code_version"] == "other"


def test_errors_are_reported_not_stored(tmp_path):
    store = Store(tmp_path)
    outcomes = run(expand([get("toy-raises")], "quick"), store)
    assert outcomes[0].error == "RuntimeError: boom"
    assert store.runs() == []
    records = summary_records(outcomes)
    assert records[0]["verdict"] == "error"


def test_half_written_runs_are_never_read(tmp_path):
    store = Store(tmp_path)
    spec = expand([get("toy-mean")], "quick", seeds=1)[0]
    # A folder left by a killed writer (dead pid) and a run folder without run.json.
    stale = tmp_path / "toy-mean" / f".tmp-{spec.run_id}-999999999-abcdef01"
    stale.mkdir(parents=True)
    (stale / "run.json").write_text("{")
    (tmp_path / "toy-mean" / spec.run_id).mkdir()
    assert store.runs() == []
    events = []
    run([spec], store, on_event=lambda k, o: events.append(k))
    assert events == ["done"]
    assert not stale.exists()
    assert len(store.runs()) == 1


def test_execute_matches_direct_call():
    spec = expand([get("toy-mean")], "quick", seeds=1)[0]
    payload = execute(spec)
    ctx = RunContext("toy-mean", "quick", 0, spec.seed_sequence())
    direct = toy_experiments.toy_mean(spec.config, ctx)
    assert payload["record"]["metrics"] == direct.metrics


def test_report_shows_checks_and_figures(tmp_path):
    store = Store(tmp_path)
    failing = dataclasses.replace(get("toy-mean").presets["quick"], tolerance=1e-9)
    specs = expand([get("toy-mean")], "quick")
    run(specs, store)
    bad = expand([get("toy-mean")], "quick", seeds=1, overrides={"tolerance": "1e-9"})
    assert bad[0].config == failing
    run(bad, store)
    md, page = write_report(tmp_path)
    text = md.read_text()
    assert "The sample mean is close to the true mean." in text
    assert "PASS (3/3 seeds)" in text
    assert "FAIL" in text
    assert "histogram.png" in page.read_text()
    # The 3-seed group embeds seed 0's figure and links the other two seeds'.
    group = [r for r in store.runs() if r.record["group"] == specs[0].group]
    other = sorted(str(r.figures["histogram"].relative_to(tmp_path)) for r in group)
    assert "Figures of the other seeds: seed 1: [histogram](" in text
    assert sum(path in text for path in other) == 3
    assert "Figures of the other seeds: seed 1: <a href=" in page.read_text()
    errors = [r.record["metrics"]["error/abs"] for r in group]
    assert f"{np.mean(errors):.4g} ± {np.std(errors, ddof=1):.4g}" in text


def test_result_type_is_enforced(tmp_path, monkeypatch):
    exp = get("toy-mean")
    spec = expand([exp], "quick", seeds=1)[0]
    bad = dataclasses.replace(exp, fn=_returns_dict)
    payload = execute(dataclasses.replace(spec, experiment=bad))
    assert payload["error"].startswith("TypeError: experiment toy-mean must return")


def _returns_dict(cfg, ctx):
    return {"metrics": {}}


def test_summary_records_have_every_field(tmp_path):
    outcomes = run(expand([get("toy-mean")], "quick", seeds=2), Store(tmp_path))
    records = summary_records(outcomes)
    assert len(records) == 2
    assert set(records[0]) == {
        "experiment",
        "seed",
        "root_seed",
        "scale",
        "check",
        "value",
        "threshold",
        "op",
        "verdict",
    }
    json.dumps(records)


def test_ray_backend_gives_the_same_results(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    # Ray's workers inherit the environment, not this test's sys.path.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    specs = expand([get("toy-mean")], "quick", seeds=2)
    local = run(specs, Store(tmp_path / "local"), jobs=1)
    remote = run(specs, Store(tmp_path / "ray"), jobs=2, backend="ray")
    for a, b in zip(local, remote, strict=True):
        assert b.error is None, b.error
        assert a.stored.record["metrics"] == b.stored.record["metrics"]
        assert a.stored.path.name == b.stored.path.name


def test_result_dataclass_defaults_are_independent():
    a, b = Result(), Result()
    a.metrics["x"] = 1.0
    assert b.metrics == {}


def _write(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_module_closure_follows_lazy_imports_but_not_the_repro_registry(tmp_path):
    from lemmata.experiments.store import module_closure

    root = tmp_path / "lemmata"
    _write(root / "__init__.py")
    _write(root / "field" / "__init__.py", "from lemmata.field._a import A\n")
    _write(root / "field" / "_a.py", "import numpy\nA = 1\n")
    _write(root / "field" / "_b.py", "B = 2\n")
    _write(root / "other" / "__init__.py")
    _write(root / "other" / "_c.py", "C = 3\n")
    _write(root / "repro" / "__init__.py", "import lemmata.repro.y\n")
    _write(
        root / "repro" / "x.py",
        "def run():\n    from lemmata.field import _b\n    return _b.B\n",
    )
    _write(root / "repro" / "y.py", "import lemmata.other._c\n")
    got = {str(p.relative_to(root)) for p in module_closure("lemmata.repro.x", root)}
    assert got == {
        "__init__.py",
        "field/__init__.py",
        "field/_a.py",
        "field/_b.py",
        "repro/x.py",
    }


def test_code_version_is_per_experiment_module():
    from lemmata.experiments.store import code_version

    whole = code_version()
    soco, fdpo = code_version("lemmata.repro.soco"), code_version("lemmata.repro.fdpo")
    assert len({whole, soco, fdpo}) == 3
    assert code_version("lemmata.repro.soco") == soco


def test_runs_get_a_cache_folder_that_readers_ignore(tmp_path):
    store = Store(tmp_path)
    (outcome,) = run(expand([get("toy-cache")], "quick"), store)
    assert outcome.stored.record["metrics"]["cached"] == 1.0
    files = list((tmp_path / ".cache" / "toy-cache").iterdir())
    assert len(files) == 1 and files[0].name.startswith("artefact-")
    assert [r.experiment for r in store.runs()] == ["toy-cache"]
    # A direct call has no cache folder.
    exp = get("toy-cache")
    ctx = RunContext("toy-cache", "quick", 0, np.random.SeedSequence(0))
    assert exp.fn(exp.presets["quick"], ctx).metrics["cached"] == 0.0


def test_derived_seed_depends_only_on_root_index_name_and_key():
    def seed(root=0, index=0, name="part", key=None, sequence=0):
        ctx = RunContext(
            "toy-mean", "quick", index, np.random.SeedSequence(sequence), None, root
        )
        return ctx.derived_seed(name, key or {"a": 1})

    base = seed()
    assert seed(sequence=99) == base  # the run's own stream does not enter
    assert 0 <= base < 2**63
    assert (
        len({base, seed(root=1), seed(index=1), seed(name="x"), seed(key={"a": 2})})
        == 5
    )
