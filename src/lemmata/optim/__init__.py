"""Mirror descent with p-norm and homogeneous potentials (p-GD).

:class:`PGD` and :class:`MirrorDescent` are ``torch.optim`` optimizers;
:func:`max_margin_direction` and :func:`min_norm_interpolator` compute the
solutions they are proven to reach (arXiv:2205.12808, arXiv:2306.13853).
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError(
        "lemmata.optim needs torch: pip install 'lemmata[optim]'"
    ) from exc

from lemmata.optim._mirror_descent import PGD, MirrorDescent, mirror_descent
from lemmata.optim._potentials import PNormPower, PNormSquared, Potential
from lemmata.optim._reference import (
    bregman_divergence,
    margin,
    max_margin_direction,
    min_norm_interpolator,
)

__all__ = [
    "PGD",
    "MirrorDescent",
    "PNormPower",
    "PNormSquared",
    "Potential",
    "bregman_divergence",
    "margin",
    "max_margin_direction",
    "min_norm_interpolator",
    "mirror_descent",
]
