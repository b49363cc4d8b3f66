"""The ``lemmata`` command: list, run, reproduce and report experiments.

Exit codes: 0 when every check passed, 1 when a check failed or a run raised,
2 for a bad name or option (one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from typer.exceptions import TyperException

import lemmata.repro  # noqa: F401  (registers the experiments)
from lemmata.experiments import (
    RunOutcome,
    Store,
    expand,
    get,
    names,
    registry,
    summary_records,
    write_report,
)
from lemmata.experiments import run as run_specs

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Reproduce the claims of the papers that lemmata implements.",
)
_CPUS = os.cpu_count() or 1
# Outside a terminal (CI logs, pipes) rich would wrap tables at 80 columns.
out_console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class Scale(str, Enum):
    quick = "quick"
    full = "full"


class Backend(str, Enum):
    local = "local"
    ray = "ray"


ScaleOpt = Annotated[Scale, typer.Option(help="Preset: quick (minutes) or full.")]
SeedsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Seeds per experiment [default: the preset's]."),
]
JobsOpt = Annotated[
    int, typer.Option(min=1, help="Runs in parallel [default: number of CPUs].")
]
BackendOpt = Annotated[Backend, typer.Option(help="local process pool, or Ray tasks.")]
AddressOpt = Annotated[
    str | None, typer.Option(help="Address of an existing Ray cluster.")
]
OutOpt = Annotated[Path, typer.Option(help="Results folder.")]
RootSeedOpt = Annotated[int, typer.Option(min=0, help="Root seed of every run.")]
FreshOpt = Annotated[
    bool, typer.Option("--fresh", help="Run again even if a stored result matches.")
]


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress of each run.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command("list")
def list_experiments() -> None:
    """Every registered experiment with its paper and claim."""
    table = Table("experiment", "paper", "claim", "quick/full seeds")
    for name, exp in sorted(registry().items()):
        seeds = f"{exp.seeds.get('quick', 1)}/{exp.seeds.get('full', 1)}"
        table.add_row(name, f"arXiv:{exp.paper}", exp.claim, seeds)
    out_console.print(table)


@app.command("run")
def run_command(
    names_: Annotated[
        list[str], typer.Argument(metavar="NAME...", help="Experiments.")
    ],
    scale: ScaleOpt = Scale.quick,
    seeds: SeedsOpt = None,
    jobs: JobsOpt = _CPUS,
    backend: BackendOpt = Backend.local,
    address: AddressOpt = None,
    out: OutOpt = Path("results"),
    root_seed: RootSeedOpt = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a config field."),
    ] = None,
    fresh: FreshOpt = False,
) -> None:
    """Run the named experiments and store their results."""
    overrides = _parse_overrides(set_ or [])
    if overrides and len(names_) > 1:
        raise ValueError("--set applies to one experiment; name exactly one")
    experiments = [get(n) for n in dict.fromkeys(names_)]
    outcomes = _execute(
        experiments,
        scale,
        seeds,
        jobs,
        backend,
        address,
        out,
        root_seed,
        overrides,
        fresh,
    )
    raise typer.Exit(_exit_code(outcomes))


@app.command()
def reproduce(
    scale: ScaleOpt = Scale.quick,
    seeds: SeedsOpt = None,
    jobs: JobsOpt = _CPUS,
    backend: BackendOpt = Backend.local,
    address: AddressOpt = None,
    out: OutOpt = Path("results"),
    root_seed: RootSeedOpt = 0,
    fresh: FreshOpt = False,
) -> None:
    """Run every experiment, then write the report."""
    experiments = [get(n) for n in names()]
    outcomes = _execute(
        experiments, scale, seeds, jobs, backend, address, out, root_seed, {}, fresh
    )
    md, page = write_report(out)
    err_console.print(f"report: {page} (and {md.name})")
    raise typer.Exit(_exit_code(outcomes))


@app.command()
def report(out: OutOpt = Path("results")) -> None:
    """Render report.md and report.html from the stored results."""
    if not Store(out).runs():
        raise ValueError(f"out holds no stored runs; got {str(out)!r}")
    md, page = write_report(out)
    err_console.print(f"report: {page} (and {md.name})")


def _parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set must be KEY=VALUE; got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def _execute(
    experiments, scale, seeds, jobs, backend, address, out, root_seed, overrides, fresh
) -> list[RunOutcome]:
    specs = expand(
        experiments, scale.value, seeds=seeds, root_seed=root_seed, overrides=overrides
    )
    store = Store(out)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task("running", total=len(specs))

        def on_event(kind: str, outcome: RunOutcome) -> None:
            verb = {"skip": "stored", "done": "done", "error": "FAILED"}[kind]
            progress.update(
                task, advance=1, description=f"{verb}: {outcome.spec.label}"
            )
            if outcome.error:
                progress.console.print(f"[red]{outcome.spec.label}: {outcome.error}")

        outcomes = run_specs(
            specs,
            store,
            jobs=jobs,
            backend=backend.value,
            address=address,
            resume=not fresh,
            on_event=on_event,
        )
    records = summary_records(outcomes)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".summary.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(records, indent=2))
    tmp.replace(out / "summary.json")
    _print_checks(records)
    return outcomes


def _print_checks(records: list[dict]) -> None:
    table = Table("experiment", "scale", "seed", "check", "measured", "threshold", "")
    for r in records:
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        threshold = "-" if r["threshold"] is None else f"{r['op']} {r['threshold']:.4g}"
        style = {"pass": "green", "fail": "red", "error": "red"}[r["verdict"]]
        verdict = f"[{style}]{r['verdict'].upper()}[/{style}]"
        table.add_row(
            r["experiment"],
            r["scale"],
            str(r["seed"]),
            r["check"],
            value,
            threshold,
            verdict,
        )
    out_console.print(table)
    failed = sum(r["verdict"] != "pass" for r in records)
    err_console.print(f"{len(records) - failed} passed, {failed} failed")


def _exit_code(outcomes: list[RunOutcome]) -> int:
    for outcome in outcomes:
        if outcome.error is not None:
            return 1
        if not all(c["passed"] for c in outcome.stored.record["checks"]):
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input becomes one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="lemmata", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        print("lemmata: interrupted; finished runs are stored", file=sys.stderr)
        return 130
    except TyperException as exc:  # usage errors: bad option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else exc
        print(f"lemmata: error: {message}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, ImportError) as exc:
        print(f"lemmata: error: {exc}", file=sys.stderr)
        return 2
    return rv if isinstance(rv, int) else 0


def _script() -> None:
    """Console-script entry: exit with :func:`main`'s code."""
    sys.exit(main())
