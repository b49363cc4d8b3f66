"""Registered reproductions, one module per paper.

Importing this package imports every module in it, and each module registers
its experiments with :func:`lemmata.experiments.experiment`. Heavy libraries
(torch, cvxpy, scikit-learn) are imported inside the experiment functions, so
this import stays fast.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
