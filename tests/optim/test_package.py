"""The package surface: what importing lemmata.optim pulls in, and the error
when torch is missing."""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import lemmata.optim

PUBLIC = {
    "MirrorDescent",
    "PGD",
    "PNormPower",
    "PNormSquared",
    "Potential",
    "bregman_divergence",
    "margin",
    "max_margin_direction",
    "min_norm_interpolator",
    "mirror_descent",
}


def test_public_names():
    assert set(lemmata.optim.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(lemmata.optim, name).__doc__


def test_no_module_level_cvxpy_import():
    for path in pathlib.Path(lemmata.optim.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(name.split(".")[0] == "cvxpy" for name in names), path


@pytest.mark.slow
def test_importing_lemmata_optim_does_not_import_cvxpy():
    code = "import sys, lemmata.optim; assert 'cvxpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_torch_names_the_extra(monkeypatch):
    for name in list(sys.modules):
        if name == "lemmata.optim" or name.startswith("lemmata.optim."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)

    with pytest.raises(ImportError, match=r"lemmata\.optim needs torch: pip install"):
        importlib.import_module("lemmata.optim")
