r"""Destabilisation test from the history-free output energy (Prop. 5 of
arXiv 2404.08120, in the observability form of arXiv 2603.14762)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lemmata.control._simulate import SwitchedSystem
from lemmata.control._validate import check_index, check_int, check_probability
from lemmata.control._windows import LoopBounds, ProjectedResidual

__all__ = ["InstabilityVerdict", "detect_instability"]


@dataclass(frozen=True)
class InstabilityVerdict:
    """Outcome of :func:`detect_instability`.

    Attributes
    ----------
    flagged : bool
        Whether the controller was found destabilising.
    steps : int
        Steps it was applied (up to and including the flagging step).
    ratio : float
        Largest over the steps of :math:`\\min_{i} R_{ij}(k) / \\xi_{ij}(k)`; at
        a flag it is the overshoot of the last step (above 1).
    """

    flagged: bool
    steps: int
    ratio: float


def detect_instability(
    system: SwitchedSystem,
    controller: int,
    n_steps: int,
    *,
    delta: float = 0.05,
    bounds: LoopBounds | None = None,
) -> InstabilityVerdict:
    r"""Apply ``controller`` and stop as soon as its output energy is inexplicable.

    For every model :math:`i` in :math:`S_j = \{i : \rho(\tilde A_i^{(j)}) <
    1\}` the history-free output energy :math:`R_{ij}(k)` (the window's
    initial plant state and the forced response to the exploratory input
    removed; see :class:`ProjectedResidual`) is compared at each step with

    .. math::

        \xi_{ij}(k) = k s_{ij} + 2\sqrt{k s_{ij} h_{ij} t_k} + 2 h_{ij} t_k,
        \qquad t_k = \log(1/\delta) + \log(k(k+1)),

    built from the Lyapunov matrix (:math:`s_{ij}`) and the H-infinity gain
    (:math:`h_{ij}`) of loop :math:`(i, j)`. The controller is flagged at the
    first step at which every model of :math:`S_j` is over its threshold.

    If the true loop is stable, the probability of a flag is at most
    :math:`\delta` (Prop. 5 (i)); if it is unstable, :math:`R_{ij}(k)` grows
    geometrically for every :math:`i \in S_j` and the flag comes after a number
    of steps logarithmic in :math:`1/\delta` (Prop. 5 (ii)).

    Parameters
    ----------
    system : SwitchedSystem
        The plant, in whatever state earlier controllers left it.
    controller : int
        :math:`j`.
    n_steps : int
        Most steps to apply it.
    delta : float, default=0.05
        False-flag probability for a stabilising controller.
    bounds : LoopBounds, optional
        A cache of loop constants to reuse across calls.

    Notes
    -----
    [reconstruction] Prop. 5 of arXiv 2404.08120 tests the raw output energy
    against a threshold with a transient term :math:`M`; fitting the window's
    initial state away (the observability idea of arXiv 2603.14762) makes
    :math:`M = 0`, at the price of :math:`\lfloor d_x / d_y \rfloor` outputs
    before the first test. A fast destabiliser can overshoot the threshold by
    its one-step energy growth at the step it is flagged.
    """
    if not isinstance(system, SwitchedSystem):
        raise TypeError(f"system must be a SwitchedSystem; got {type(system).__name__}")
    cs = system.candidates
    j = check_index("controller", controller, cs.n_candidates)
    n_steps = check_int("n_steps", n_steps, 1)
    delta = check_probability("delta", delta)
    if bounds is None:
        bounds = LoopBounds(cs)
    models = np.flatnonzero(bounds.stable[:, j])
    bounds.ensure(models, j)
    d_x = cs.n_states
    f0 = np.zeros(2 * d_x)
    f0[d_x:] = system.controller_state
    scorer = ProjectedResidual(
        cs.closed_loop_A[models, j],
        cs.closed_loop_C[models],
        bounds.rate[models, j],
        bounds.peak[models, j],
        math.log(1 / delta),
        d_x,
        B=cs.closed_loop_B[models, j],
        f0=f0,
    )
    worst = 0.0
    for k in range(1, n_steps + 1):
        y, _, ups = system.step(j)
        scorer.update(y, ups)
        if system.diverged:
            return InstabilityVerdict(True, k, math.inf)
        if not scorer.ready:
            continue
        R, xi = scorer.residuals(), scorer.thresholds()
        over = R > xi
        if over.all():
            R = np.array([scorer.exact(m) for m in range(len(models))])
            over = R > xi
        ratio = float(np.min(R / xi))
        worst = max(worst, ratio)
        if over.all():
            return InstabilityVerdict(True, k, worst)
    return InstabilityVerdict(False, n_steps, worst)
