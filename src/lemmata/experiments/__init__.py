"""The reproduction framework: registry, runner, results store and report."""

from lemmata.experiments.registry import (
    SCALES,
    Check,
    Experiment,
    Result,
    RunContext,
    experiment,
    get,
    names,
    registry,
)
from lemmata.experiments.report import write_report
from lemmata.experiments.runner import RunOutcome, RunSpec, expand, run, summary_records
from lemmata.experiments.store import Store, StoredRun

__all__ = [
    "SCALES",
    "Check",
    "Experiment",
    "Result",
    "RunContext",
    "RunOutcome",
    "RunSpec",
    "Store",
    "StoredRun",
    "expand",
    "experiment",
    "get",
    "names",
    "registry",
    "run",
    "summary_records",
    "write_report",
]
