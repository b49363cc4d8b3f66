"""Results on disk: ``<out>/<experiment>/<run-id>/`` with atomic writes.

Each run's folder holds ``run.json`` (config, seed, code version, metrics,
checks, series, timing) and one PNG per figure. A folder is built under a
hidden temporary name and renamed into place when complete, so a reader never
sees a half-written run, and a killed process leaves only a hidden folder that
readers ignore and the next writer removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Store", "StoredRun", "code_version", "config_hash"]

_TMP_PREFIX = ".tmp-"


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of a config dict (sorted JSON)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``<lemmata version>+<hash of every .py file of the lemmata package>``.

    Any change to the package's code changes it, so stored runs made by other
    code are run again rather than reused.
    """
    global _CODE_VERSION
    if _CODE_VERSION is None:
        import lemmata

        root = Path(lemmata.__file__).parent
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
        _CODE_VERSION = f"{lemmata.__version__}+{digest.hexdigest()[:12]}"
    return _CODE_VERSION


@dataclass
class StoredRun:
    """One finished run as read back from disk."""

    path: Path
    record: dict[str, Any]
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return self.record["experiment"]

    @property
    def scale(self) -> str:
        return self.record["scale"]

    @property
    def seed_index(self) -> int:
        return self.record["seed_index"]


class Store:
    """The results folder ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def run_dir(self, experiment: str, run_id: str) -> Path:
        return self.root / experiment / run_id

    def load(self, experiment: str, run_id: str) -> StoredRun | None:
        """The finished run, or None if it is absent or unreadable."""
        return self._read(self.run_dir(experiment, run_id))

    def write(
        self,
        experiment: str,
        run_id: str,
        record: dict[str, Any],
        figures: dict[str, bytes],
    ) -> StoredRun:
        """Write a run atomically, replacing an older one with the same id."""
        parent = self.root / experiment
        parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp(parent)
        tmp = parent / f"{_TMP_PREFIX}{run_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            names = {}
            for name, png in figures.items():
                filename = f"{name}.png"
                (tmp / filename).write_bytes(png)
                names[name] = filename
            record = {**record, "figures": names}
            with open(tmp / "run.json", "w") as fh:
                json.dump(record, fh, indent=2, sort_keys=True, default=_jsonable)
                fh.flush()
                os.fsync(fh.fileno())
            final = parent / run_id
            if final.exists():
                old = parent / f"{_TMP_PREFIX}old-{run_id}-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        stored = self._read(final)
        assert stored is not None  # just written
        return stored

    def runs(self, experiment: str | None = None) -> list[StoredRun]:
        """Every finished run, sorted by experiment, scale and seed."""
        if not self.root.is_dir():
            return []
        found = []
        for exp_dir in sorted(self.root.iterdir()):
            if not exp_dir.is_dir() or exp_dir.name.startswith("."):
                continue
            if experiment is not None and exp_dir.name != experiment:
                continue
            for run_dir in sorted(exp_dir.iterdir()):
                if run_dir.name.startswith("."):
                    continue
                stored = self._read(run_dir)
                if stored is not None:
                    found.append(stored)
        found.sort(key=lambda r: (r.experiment, r.scale, r.seed_index, r.path.name))
        return found

    @staticmethod
    def _read(path: Path) -> StoredRun | None:
        try:
            with open(path / "run.json") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            return None
        figures = {n: path / f for n, f in record.get("figures", {}).items()}
        return StoredRun(path=path, record=record, figures=figures)

    @staticmethod
    def _remove_stale_tmp(parent: Path) -> None:
        """Remove temporary folders whose writing process is gone."""
        for tmp in parent.glob(f"{_TMP_PREFIX}*"):
            parts = tmp.name[len(_TMP_PREFIX) :].rsplit("-", 2)
            try:
                pid = int(parts[1])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays, tuples and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
