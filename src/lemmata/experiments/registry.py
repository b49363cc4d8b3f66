"""Experiment specs and the ``@experiment`` decorator.

An experiment is a plain function ``fn(config, ctx) -> Result`` registered with
its paper, its claim and two config presets (``quick`` and ``full``). The
framework never imports :mod:`lemmata.repro`; the repro modules register
themselves here on import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCALES",
    "Check",
    "Experiment",
    "Result",
    "RunContext",
    "experiment",
    "get",
    "names",
    "registry",
]

SCALES = ("quick", "full")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Check:
    """A measured value compared with a threshold fixed before the run.

    ``passed`` is ``value <op> threshold``; a NaN value never passes.
    """

    name: str
    value: float
    threshold: float
    op: str = "<"

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"op must be one of {sorted(_OPS)}; got {self.op!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def passed(self) -> bool:
        return not math.isnan(self.value) and _OPS[self.op](self.value, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "op": self.op,
            "passed": self.passed,
        }


@dataclass
class Result:
    """What an experiment function returns.

    Attributes
    ----------
    metrics : dict of str to float
        Scalar results, with namespaced keys (``"gap/p=2"``).
    checks : list of Check
        The claims tested in this run.
    figures : dict of str to matplotlib.figure.Figure
        Saved as ``<name>.png`` in the run's folder.
    series : dict of str to list of float
        Small curves kept in ``run.json`` for later plotting.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


def _hash32(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass
class RunContext:
    """Where a run is: its experiment, scale, seed index and random streams.

    ``seed_sequence`` is spawned from the root seed, the experiment name, the
    config and the seed index, so the same command gives the same numbers.
    """

    experiment: str
    scale: str
    seed_index: int
    seed_sequence: np.random.SeedSequence
    cache_dir: Path | None = None
    root_seed: int = 0

    def derived_seed(self, name: str, key: Mapping[str, Any]) -> int:
        """A 63-bit seed for one part of the run (say, training a base model)
        that depends only on the root seed, the seed index, ``name`` and
        ``key`` (the config fields that part reads), not on the rest of the
        config: changing an evaluation setting leaves that part's draws alone.
        """
        from lemmata.experiments.store import config_hash

        words = [
            self.root_seed,
            _hash32(f"{self.experiment}/{name}"),
            _hash32(config_hash(dict(key))),
        ]
        seq = np.random.SeedSequence(words, spawn_key=(self.seed_index,))
        return int(seq.generate_state(2, np.uint64)[0] >> np.uint64(1))

    def cache_file(self, name: str, key: Mapping[str, Any]) -> Path | None:
        """Where to keep an artefact that is costly to rebuild (a trained base
        model), under the results folder's hidden ``.cache/<experiment>/``.

        ``key`` must name everything the artefact depends on (the config fields
        and seed it is built from, a hash of the code that builds it); the file
        name hashes it. None when the run has no cache folder (a direct call).
        Delete the folder to rebuild everything.
        """
        if self.cache_dir is None:
            return None
        from lemmata.experiments.store import config_hash

        return Path(self.cache_dir) / f"{name}-{config_hash(dict(key))}.pt"

    @property
    def rng(self) -> np.random.Generator:
        """A Generator on this run's stream (created once per run)."""
        if not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(self.seed_sequence)
        return self._rng

    @property
    def seed(self) -> int:
        """A 63-bit integer seed for libraries that want one (torch, sklearn)."""
        return int(self.seed_sequence.generate_state(2, np.uint64)[0] >> np.uint64(1))

    def seed_torch(self) -> None:
        """Seed torch's global generators and use one intra-op thread."""
        import torch

        torch.manual_seed(self.seed)
        torch.set_num_threads(1)


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction."""

    name: str
    paper: str
    claim: str
    config_cls: type
    presets: Mapping[str, Any]
    fn: Callable[[Any, RunContext], Result]
    seeds: Mapping[str, int]
    requires: tuple[str, ...] = ()

    def config(self, scale: str, overrides: Mapping[str, str] | None = None) -> Any:
        """The preset of ``scale`` with ``overrides`` (``key -> text``) applied."""
        if scale not in self.presets:
            raise ValueError(f"scale must be one of {list(SCALES)}; got {scale!r}")
        cfg = self.presets[scale]
        if not overrides:
            return cfg
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        changes = {}
        for key, text in overrides.items():
            if key not in fields:
                raise ValueError(
                    f"unknown config key {key!r} for {self.name}; "
                    f"valid keys: {', '.join(sorted(fields))}"
                )
            changes[key] = _parse_like(getattr(cfg, key), text, key)
        return dataclasses.replace(cfg, **changes)


def _parse_like(current: Any, text: str, key: str) -> Any:
    """Parse ``text`` to the type of ``current`` (bool, int, float, str, tuple)."""
    try:
        if isinstance(current, bool):
            if text.lower() not in {"true", "false", "1", "0"}:
                raise ValueError
            return text.lower() in {"true", "1"}
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            kind = type(current[0]) if current else float
            return tuple(kind(part) for part in text.split(",") if part.strip())
        return text
    except ValueError:
        kind = type(current).__name__
        raise ValueError(
            f"config key {key!r} must be {kind}-valued; got {text!r}"
        ) from None


_REGISTRY: dict[str, Experiment] = {}


def experiment(
    *,
    name: str,
    paper: str,
    claim: str,
    config: type,
    quick: Any,
    full: Any,
    seeds: Mapping[str, int] | None = None,
    requires: tuple[str, ...] = (),
) -> Callable[[Callable[[Any, RunContext], Result]], Callable[..., Result]]:
    """Register ``fn(config, ctx) -> Result`` as experiment ``name``.

    Parameters
    ----------
    name : str
        Kebab-case, unique.
    paper : str
        arXiv id of the paper whose claim is tested.
    claim : str
        One sentence, the claim in our words.
    config : type
        A dataclass; ``quick`` and ``full`` are its two presets.
    seeds : dict, default={"quick": 1, "full": 5}
        Default number of seeds per scale.
    requires : tuple of str
        Importable modules the experiment needs (checked before running).
    """
    if not _NAME.match(name):
        raise ValueError(f"experiment name must be kebab-case; got {name!r}")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a dataclass; got {config!r}")
    for scale, preset in (("quick", quick), ("full", full)):
        if not isinstance(preset, config):
            raise TypeError(f"{scale} preset of {name} must be a {config.__name__}")

    def register(fn: Callable[[Any, RunContext], Result]) -> Callable[..., Result]:
        if name in _REGISTRY and _REGISTRY[name].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"experiment {name!r} is registered twice")
        _REGISTRY[name] = Experiment(
            name=name,
            paper=paper,
            claim=claim,
            config_cls=config,
            presets={"quick": quick, "full": full},
            fn=fn,
            seeds=dict(seeds or {"quick": 1, "full": 5}),
            requires=tuple(requires),
        )
        return fn

    return register


def registry() -> dict[str, Experiment]:
    """All registered experiments, by name."""
    return dict(_REGISTRY)


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment ``name``; ValueError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(names()) or "(none registered)"
        raise ValueError(f"unknown experiment {name!r}; valid names: {valid}") from None
