"""Expand experiments x seeds into runs and execute them, with resume.

Two backends give the same stored results: a local process pool (default)
and Ray tasks. In both, a worker executes the experiment function and returns
its record and figures as PNG bytes; the calling process writes them to the
store, one run at a time, atomically. Runs whose folder already holds a
result made by the same config and code version are skipped.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import random
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from lemmata.experiments.registry import (
    Check,
    Experiment,
    Result,
    RunContext,
    _hash32,
)
from lemmata.experiments.store import Store, StoredRun, code_version, config_hash

__all__ = ["RunOutcome", "RunSpec", "expand", "run", "summary_records"]

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class RunSpec:
    """One run: an experiment at a scale, with a config and a seed index."""

    experiment: Experiment
    scale: str
    config: Any
    seed_index: int
    root_seed: int = 0
    cache_dir: str | None = None  # set by run(): <results>/.cache/<experiment>

    @property
    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    @property
    def group(self) -> str:
        """Hash of what the seeds of one setting share: config and root seed."""
        return config_hash({"config": self.config_dict, "root_seed": self.root_seed})

    @property
    def run_id(self) -> str:
        return f"{self.scale}-seed{self.seed_index}-{self.group}"

    @property
    def label(self) -> str:
        return f"{self.experiment.name} [{self.scale}, seed {self.seed_index}]"

    def seed_sequence(self) -> np.random.SeedSequence:
        """Spawned from the root seed, experiment name, config and seed index."""
        words = [self.root_seed, _hash32(self.experiment.name), _hash32(self.group)]
        return np.random.SeedSequence(words, spawn_key=(self.seed_index,))


@dataclass
class RunOutcome:
    """A run's fate: stored (fresh or resumed), or an error message."""

    spec: RunSpec
    stored: StoredRun | None = None
    error: str | None = None
    resumed: bool = False


def expand(
    experiments: Iterable[Experiment],
    scale: str,
    *,
    seeds: int | None = None,
    root_seed: int = 0,
    overrides: dict[str, str] | None = None,
) -> list[RunSpec]:
    """Runs for ``experiments`` at ``scale``, ``seeds`` each (default: preset)."""
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {seeds}")
    specs = []
    for exp in experiments:
        config = exp.config(scale, overrides)
        n = seeds if seeds is not None else exp.seeds.get(scale, 1)
        specs.extend(RunSpec(exp, scale, config, i, root_seed) for i in range(n))
    return specs


def execute(spec: RunSpec) -> dict[str, Any]:
    """Run one spec in this process; return its record and PNG figures."""
    import matplotlib

    matplotlib.use("Agg")
    from threadpoolctl import threadpool_limits

    exp = spec.experiment
    ctx = RunContext(
        exp.name,
        spec.scale,
        spec.seed_index,
        spec.seed_sequence(),
        Path(spec.cache_dir) if spec.cache_dir else None,
        spec.root_seed,
    )
    started = time.time()
    try:
        with threadpool_limits(limits=1):
            _check_requirements(exp)
            random.seed(ctx.seed)
            if "torch" in exp.requires:
                ctx.seed_torch()
            result = exp.fn(spec.config, ctx)
            _validate_result(exp.name, result)
            figures = {name: _png(fig) for name, fig in result.figures.items()}
    except Exception as exc:  # reported per run; the other runs go on
        logger.debug("run %s failed", spec.label, exc_info=True)
        return {
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
        }
    record = {
        "experiment": exp.name,
        "paper": exp.paper,
        "claim": exp.claim,
        "scale": spec.scale,
        "seed_index": spec.seed_index,
        "root_seed": spec.root_seed,
        "group": spec.group,
        "config": spec.config_dict,
        "code_version": code_version(exp.fn.__module__),
        "started": started,
        "seconds": time.time() - started,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "checks": [c.to_dict() for c in result.checks],
        "series": {k: [float(x) for x in v] for k, v in result.series.items()},
    }
    return {"record": record, "figures": figures}


def _check_requirements(exp: Experiment) -> None:
    import importlib.util

    missing = [m for m in exp.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"experiment {exp.name} needs {', '.join(missing)}; "
            "install them with pip install 'lemmata[all]'"
        )


def _validate_result(name: str, result: Any) -> None:
    if not isinstance(result, Result):
        raise TypeError(f"experiment {name} must return a Result; got {type(result)}")
    for check in result.checks:
        if not isinstance(check, Check):
            raise TypeError(f"experiment {name} returned a non-Check: {check!r}")
    for key, value in result.metrics.items():
        if not isinstance(value, int | float | np.floating | np.integer):
            raise TypeError(f"metric {key!r} of {name} must be a number; got {value!r}")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def run(
    specs: list[RunSpec],
    store: Store,
    *,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    resume: bool = True,
    on_event: Callable[[str, RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Execute ``specs``, store each result as it arrives, and return outcomes.

    ``on_event(kind, outcome)`` is called with kind ``"skip"`` (resumed from
    the store), ``"done"`` or ``"error"``; the CLI uses it for its progress bar.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}; got {backend!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    notify = on_event or (lambda kind, outcome: None)
    outcomes: dict[int, RunOutcome] = {}
    pending = []
    for i, spec in enumerate(specs):
        stored = store.load(spec.experiment.name, spec.run_id) if resume else None
        if stored is not None and _matches(stored, spec):
            outcomes[i] = RunOutcome(spec, stored=stored, resumed=True)
            notify("skip", outcomes[i])
        else:
            pending.append(i)

    todo = [
        dataclasses.replace(
            specs[i], cache_dir=str(store.root / ".cache" / specs[i].experiment.name)
        )
        for i in pending
    ]
    if backend == "ray":
        results = _ray_results(todo, jobs, address)
    elif jobs == 1 or len(pending) <= 1:
        results = ((k, execute(spec)) for k, spec in enumerate(todo))
    else:
        results = _pool_results(todo, jobs)

    for k, payload in results:
        i = pending[k]
        outcome = _store_payload(store, specs[i], payload)
        outcomes[i] = outcome
        notify("error" if outcome.error else "done", outcome)
    return [outcomes[i] for i in range(len(specs))]


def _matches(stored: StoredRun, spec: RunSpec) -> bool:
    record = stored.record
    return (
        record.get("code_version") == code_version(spec.experiment.fn.__module__)
        and record.get("config") == _json_roundtrip(spec.config_dict)
        and record.get("root_seed") == spec.root_seed
    )


def _json_roundtrip(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _store_payload(store: Store, spec: RunSpec, payload: dict[str, Any]) -> RunOutcome:
    if "error" in payload:
        logger.info("run %s failed:\n%s", spec.label, payload.get("trace", ""))
        return RunOutcome(spec, error=payload["error"])
    stored = store.write(
        spec.experiment.name, spec.run_id, payload["record"], payload["figures"]
    )
    return RunOutcome(spec, stored=stored)


@contextmanager
def _one_blas_thread_env() -> Iterator[None]:
    """Children started while this is active load BLAS with one thread."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pool_results(specs: list[RunSpec], jobs: int) -> Iterator[tuple[int, dict]]:
    with _one_blas_thread_env():
        pool = ProcessPoolExecutor(
            max_workers=min(jobs, len(specs)), mp_context=get_context("spawn")
        )
    try:
        futures = {pool.submit(execute, spec): k for k, spec in enumerate(specs)}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                if exc is not None:  # the worker died (killed, out of memory)
                    yield futures[future], {"error": f"worker failed: {exc!r}"}
                else:
                    yield futures[future], future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _ray_results(
    specs: list[RunSpec], jobs: int, address: str | None
) -> Iterator[tuple[int, dict]]:
    if not specs:
        return
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray backend needs ray: pip install 'lemmata[distributed]'"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        env = {"env_vars": {k: "1" for k in _THREAD_VARS}}
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(
                num_cpus=jobs,
                runtime_env=env,
                include_dashboard=False,
                log_to_driver=False,
            )
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(execute)
        refs = {task.remote(spec): k for k, spec in enumerate(specs)}
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                try:
                    yield refs[ref], ray.get(ref)
                except Exception as exc:  # the task's worker died
                    yield refs[ref], {"error": f"ray task failed: {exc!r}"}
    finally:
        if started_here:
            ray.shutdown()


def summary_records(outcomes: list[RunOutcome]) -> list[dict[str, Any]]:
    """One record per check (and one per failed run), for summary.json."""
    records = []
    for outcome in outcomes:
        spec = outcome.spec
        base = {
            "experiment": spec.experiment.name,
            "seed": spec.seed_index,
            "root_seed": spec.root_seed,
            "scale": spec.scale,
        }
        if outcome.error is not None:
            records.append(
                {
                    **base,
                    "check": "run",
                    "value": None,
                    "threshold": None,
                    "op": None,
                    "verdict": "error",
                    "error": outcome.error,
                }
            )
            continue
        for check in outcome.stored.record["checks"]:
            value = check["value"]
            records.append(
                {
                    **base,
                    "check": check["name"],
                    "value": None if math.isnan(value) else value,
                    "threshold": check["threshold"],
                    "op": check["op"],
                    "verdict": "pass" if check["passed"] else "fail",
                }
            )
    return records
