"""lemmata: research systems as tested components, with reproductions of their claims.

Importing :mod:`lemmata` imports nothing heavy; each field package
(:mod:`lemmata.optim`, ...) imports its own dependencies.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
