"""What a switching-control run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SwitchingResult"]


@dataclass
class SwitchingResult:
    r"""Outcome of one run of a switching strategy or supervisor.

    Attributes
    ----------
    chosen : int or None
        Controller deployed at the end (the one matched to the identified
        model); None if the run ended without a decision.
    decision_step : int or None
        Steps taken until the decision (the time to decide).
    decided : bool
        Whether the algorithm's own stopping rule fired (False when ``chosen``
        is a fallback at the step budget, or None).
    flagged : ndarray of bool, shape (N,)
        Controllers detected as destabilising.
    y : ndarray of shape (T, d_y)
        Outputs of the whole run.
    u : ndarray of shape (T, d_u)
        Applied inputs.
    controller : ndarray of int, shape (T,)
        Controller applied at each step.
    disturbance_sq : ndarray of shape (T,)
        :math:`\|w_t\|^2 + \|\eta_t\|^2 + \|\upsilon_t\|^2` per step.
    diverged : bool
        Whether the state norm passed the simulator's limit.
    energy_ratio : dict of int to float
        Per controller that was tested, the largest ratio of its output energy
        to its destabilisation threshold: history-free energy for
        :class:`SupervisoryController`, raw phase energy for
        :class:`SwitchingStrategy`. Above 1 means the controller was flagged.
    info : dict
        Algorithm-specific details (phase lengths, elimination times, ...).
    """

    chosen: int | None
    decision_step: int | None
    decided: bool
    flagged: np.ndarray
    y: np.ndarray
    u: np.ndarray
    controller: np.ndarray
    disturbance_sq: np.ndarray
    diverged: bool = False
    energy_ratio: dict[int, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def switch_times(self) -> np.ndarray:
        """Steps at which the applied controller changed (0 included)."""
        p = self.controller
        if p.size == 0:
            return np.zeros(0, dtype=int)
        return np.flatnonzero(np.r_[True, p[1:] != p[:-1]])

    def l2_gain(self, upto: int | None = None) -> float:
        r"""Empirical gain :math:`\hat\gamma = \big(\sum_t \|y_t\|^2 /
        \sum_t (\|w_t\|^2 + \|\eta_t\|^2 + \|\upsilon_t\|^2)\big)^{1/2}`
        over the first ``upto`` steps (all by default).

        Notes
        -----
        [reconstruction] The L2-gain definition of arXiv 2603.14762 is not
        available; this ratio counts the exploratory input as a disturbance and
        includes the free response of :math:`x_1`.
        """
        T = len(self.y) if upto is None else int(upto)
        num = float(np.sum(self.y[:T] ** 2))
        den = float(np.sum(self.disturbance_sq[:T]))
        return float(np.sqrt(num / den)) if den > 0 else float("inf")
