"""Toy experiments for the framework's tests (importable by worker processes).

``toy-mean`` estimates the mean of N(mu, 1) from the run's generator: its
checks pass or fail depending on the config, so both exit codes can be tested.
``toy-raises`` raises inside the run. ``toy-cache`` writes one file through
``ctx.cache_file``.
"""

from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment


@dataclass(frozen=True)
class ToyConfig:
    """mu: the true mean; n: samples; tolerance: the check's threshold."""

    mu: float = 1.0
    n: int = 1000
    tolerance: float = 0.5
    sleep: float = 0.0


@experiment(
    name="toy-mean",
    paper="0000.00000",
    claim="The sample mean is close to the true mean.",
    config=ToyConfig,
    quick=ToyConfig(),
    full=ToyConfig(n=10_000),
    seeds={"quick": 3, "full": 2},
)
def toy_mean(cfg: ToyConfig, ctx: RunContext) -> Result:
    import time

    from matplotlib.figure import Figure

    time.sleep(cfg.sleep)
    sample = ctx.rng.normal(cfg.mu, 1.0, size=cfg.n)
    error = abs(float(sample.mean()) - cfg.mu)
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().hist(sample, bins=20)
    return Result(
        metrics={"estimate/mean": float(sample.mean()), "error/abs": error},
        checks=[Check("absolute error", error, cfg.tolerance, "<")],
        figures={"histogram": fig},
        series={"first": sample[:5].tolist()},
    )


@dataclass(frozen=True)
class RaiseConfig:
    """message: the error raised."""

    message: str = "boom"


@experiment(
    name="toy-raises",
    paper="0000.00000",
    claim="Nothing; it raises.",
    config=RaiseConfig,
    quick=RaiseConfig(),
    full=RaiseConfig(),
)
def toy_raises(cfg: RaiseConfig, ctx: RunContext) -> Result:
    raise RuntimeError(cfg.message)


@experiment(
    name="toy-cache",
    paper="0000.00000",
    claim="Nothing; it writes one cache file.",
    config=RaiseConfig,
    quick=RaiseConfig(),
    full=RaiseConfig(),
)
def toy_cache(cfg: RaiseConfig, ctx: RunContext) -> Result:
    path = ctx.cache_file("artefact", {"message": cfg.message})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cfg.message)
    return Result(metrics={"cached": float(path is not None)})


def draw(ctx: RunContext) -> np.ndarray:
    return ctx.rng.standard_normal(3)
