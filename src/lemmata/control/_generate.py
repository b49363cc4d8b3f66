"""Random candidate sets for experiments and tests."""

from __future__ import annotations

import numpy as np

from lemmata.control._candidates import CandidateSet
from lemmata.control._validate import (
    check_int,
    check_nonnegative,
    check_positive,
    check_rng,
)

__all__ = ["random_candidates", "random_plant_matrices"]


def random_plant_matrices(
    n_candidates: int,
    n_states: int,
    n_inputs: int,
    n_outputs: int,
    *,
    rng: np.random.Generator,
    spectral_radius: tuple[float, float] = (0.9, 1.2),
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    r"""Draw N plants ``(A_i, B_i, C_i)``.

    :math:`A_i` is a Gaussian matrix rescaled to a spectral radius drawn
    uniformly from ``spectral_radius``; :math:`B_i` has N(0, 1) entries and
    :math:`C_i` has N(0, 1/d_x) entries, so that the output variance does not
    grow with the state dimension (the spec draws :math:`C_i` from N(0, 1); the
    two agree up to a scale fixed by d_x).

    Parameters
    ----------
    n_candidates, n_states, n_inputs, n_outputs : int
        N, d_x, d_u, d_y.
    rng : numpy.random.Generator
        Source of randomness.
    spectral_radius : (float, float), default=(0.9, 1.2)
        Range of :math:`\rho(A_i)`; values above 1 give open-loop unstable plants.
    """
    N = check_int("n_candidates", n_candidates, 2)
    d_x = check_int("n_states", n_states, 1)
    d_u = check_int("n_inputs", n_inputs, 1)
    d_y = check_int("n_outputs", n_outputs, 1)
    rng = check_rng(rng)
    lo = check_positive("spectral_radius[0]", spectral_radius[0])
    hi = check_positive("spectral_radius[1]", spectral_radius[1])
    if hi < lo:
        raise ValueError(f"spectral_radius must be increasing; got {spectral_radius}")
    plants = []
    for _ in range(N):
        A = rng.standard_normal((d_x, d_x))
        A *= rng.uniform(lo, hi) / np.max(np.abs(np.linalg.eigvals(A)))
        B = rng.standard_normal((d_x, d_u))
        C = rng.standard_normal((d_y, d_x)) / np.sqrt(d_x)
        plants.append((A, B, C))
    return plants


def random_candidates(
    n_candidates: int,
    n_states: int,
    n_inputs: int,
    n_outputs: int,
    *,
    rng: np.random.Generator,
    spectral_radius: tuple[float, float] = (0.9, 1.2),
    w_var: float = 0.1,
    eta_var: float = 0.1,
) -> CandidateSet:
    """A :class:`CandidateSet` of plants from :func:`random_plant_matrices`
    with their LQG controllers (``Q = I``, ``R = I``)."""
    w_var = check_nonnegative("w_var", w_var)
    eta_var = check_nonnegative("eta_var", eta_var)
    plants = random_plant_matrices(
        n_candidates,
        n_states,
        n_inputs,
        n_outputs,
        rng=rng,
        spectral_radius=spectral_radius,
    )
    return CandidateSet(plants, w_var=w_var, eta_var=eta_var)
