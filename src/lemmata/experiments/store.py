"""Results on disk: ``<out>/<experiment>/<run-id>/`` with atomic writes.

Each run's folder holds ``run.json`` (config, seed, code version, metrics,
checks, series, timing) and one PNG per figure. A folder is built under a
hidden temporary name and renamed into place when complete, so a reader never
sees a half-written run, and a killed process leaves only a hidden folder that
readers ignore and the next writer removes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Store", "StoredRun", "code_version", "config_hash", "module_closure"]

_TMP_PREFIX = ".tmp-"


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of a config dict (sorted JSON)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_CODE_VERSION: str | None = None
_MODULE_VERSIONS: dict[str, str] = {}

# Packages whose __init__ is not followed when collecting what a module runs:
# lemmata.repro's __init__ imports every reproduction only to register them.
_NOT_FOLLOWED = frozenset({"lemmata.repro"})


def _module_file(root: Path, name: str) -> Path | None:
    """The source file of module ``name`` (``lemmata.x.y``) under package ``root``."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    if base.is_dir() and (base / "__init__.py").is_file():
        return base / "__init__.py"
    file = base.with_suffix(".py")
    return file if parts and file.is_file() else None


def _imported_modules(source: str, package: str, root: Path) -> set[str]:
    """``package``-internal modules imported anywhere in ``source``, including
    inside functions (experiments import their heavy pieces lazily) and modules
    named in string constants (``importlib.import_module`` tables)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            # ``from lemmata.x import y`` may import the submodule lemmata.x.y.
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]  # a module named in a string (lazy imports)
        else:
            continue
        for name in names:
            if name == package or name.startswith(package + "."):
                if _module_file(root, name) is not None:
                    found.add(name)
    return found


def module_closure(module: str, root: Path, package: str = "lemmata") -> list[Path]:
    """Source files that importing ``module`` can execute, found statically.

    The module, every ``package`` module it imports (transitively), and the
    ``__init__`` of every package on the way, except those in ``_NOT_FOLLOWED``.
    Returns sorted absolute paths under ``root``.
    """
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += [p for p in parents if p not in _NOT_FOLLOWED]
        if name in _NOT_FOLLOWED and name != module:
            continue
        file = _module_file(root, name)
        if file is not None:
            todo += _imported_modules(file.read_text(), package, root)
    files = {
        _module_file(root, n) for n in seen if n not in _NOT_FOLLOWED or n == module
    }
    return sorted(f for f in files if f is not None)


def code_version(module: str | None = None) -> str:
    """``<lemmata version>+<hash of source files>``.

    Without ``module``: every .py file of the lemmata package. With ``module``
    (an experiment function's module): the files importing it can execute,
    found statically (:func:`module_closure`), plus the experiments framework.
    Stored runs made by other code are run again rather than reused; a change
    to a module an experiment does not import leaves that experiment's runs
    valid.
    """
    global _CODE_VERSION
    import lemmata

    root = Path(lemmata.__file__).parent
    if module is None or not module.startswith("lemmata."):
        # Modules outside the package (tests' toy experiments) cannot be traced
        # here: fall back to the whole package.
        if _CODE_VERSION is None:
            _CODE_VERSION = _digest(root, sorted(root.rglob("*.py")))
        return _CODE_VERSION
    if module not in _MODULE_VERSIONS:
        files = set(module_closure(module, root))
        files |= set(module_closure("lemmata.experiments", root))
        _MODULE_VERSIONS[module] = _digest(root, sorted(files))
    return _MODULE_VERSIONS[module]


def _digest(root: Path, files: list[Path]) -> str:
    import lemmata

    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return f"{lemmata.__version__}+{digest.hexdigest()[:12]}"


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
