r"""History-free window scores: residual energies with the window's initial
state projected out through observability.

A window starts at step :math:`s` in an unknown state. For a candidate linear
model with state matrix :math:`\mathcal A`, output matrix :math:`\mathcal C`
and known drive :math:`d`, a signal :math:`r` over the window is explained as

.. math::

    r_{s+m} = \mathcal C \mathcal A^m \, (E z + f_0) + f_m + n_{s+m},

with :math:`z` the unknown part of the initial state (selected by :math:`E`),
:math:`f_0` its known part, :math:`f_m` the forced response to the known
drive and :math:`n` the response to the window's own noise. The score

.. math::

    R(k) = \min_z \sum_{m<k} \big\| r_{s+m} - f_m - \mathcal C \mathcal A^m
    (E z + f_0) \big\|^2

does not depend on anything before the window when the model is true: the past
enters only through :math:`z`, which is fitted away. The supervisor uses it for
the output energy of loop :math:`(i, j)`: :math:`r = y`, :math:`\mathcal A =
\tilde A_i^{(j)}`, drive :math:`\tilde B \upsilon`, :math:`z = x_s` and
:math:`f_0 = (0, \check x_s)` (the controller state is known).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg as sla

from lemmata.control._candidates import CandidateSet
from lemmata.control._energy import gaussian_chaos_bound, hinf_norm_batch

__all__ = ["LoopBounds", "ProjectedResidual"]


def _rate_and_peak(As, Fs, Cs, Ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lyapunov matrices, tr(F'PF) + tr(D'D) and squared H-infinity gains."""
    P = np.stack(
        [sla.solve_discrete_lyapunov(A.T, C.T @ C) for A, C in zip(As, Cs, strict=True)]
    )
    P = 0.5 * (P + np.swapaxes(P, -1, -2))
    rate = np.einsum("mba,mbc,mca->m", Fs, P, Fs) + np.sum(Ds * Ds, axis=(-2, -1))
    peak, _ = hinf_norm_batch(As, Fs, Cs, Ds)
    return P, rate, peak**2


class LoopBounds:
    r"""Cached Lyapunov matrices, energy rates and H-infinity peaks of stable loops.

    For loop :math:`(i, j)` with unit-variance noise channels :math:`(F, D)`
    (see :meth:`ClosedLoop.noise_channels`): ``P[i, j]`` solves
    :math:`\tilde A^\top P \tilde A - P + \tilde C^\top \tilde C = 0`,
    ``rate[i, j]`` :math:`= \operatorname{tr}(F^\top P F) + \operatorname{tr}
    (D^\top D)` (stationary output energy per step) and ``peak[i, j]`` is the
    squared H-infinity norm of the noise-to-output map. ``u_var > 0`` counts
    the exploratory input as noise.
    """

    def __init__(self, candidates: CandidateSet, u_var: float = 0.0) -> None:
        self.candidates = candidates
        self.u_var = u_var
        N = candidates.n_candidates
        self.stable = candidates.spectral_radii < 1.0
        n = 2 * candidates.n_states
        self.P = np.full((N, N, n, n), np.nan)
        self.rate = np.full((N, N), np.nan)
        self.peak = np.full((N, N), np.nan)
        self._done = np.zeros((N, N), dtype=bool)

    def ensure(self, models: np.ndarray, j: int) -> None:
        """Compute the bounds of loops ``(models, j)`` not computed yet."""
        models = np.asarray(models, dtype=int)
        todo = models[~self._done[models, j]]
        if todo.size == 0:
            return
        if not np.all(self.stable[todo, j]):
            bad = todo[~self.stable[todo, j]]
            raise ValueError(f"loops of models {bad.tolist()} under {j} are unstable")
        cs = self.candidates
        loops = [cs.closed_loop(int(i), j) for i in todo]
        FD = [
            lp.noise_channels(w_var=cs.w_var, eta_var=cs.eta_var, u_var=self.u_var)
            for lp in loops
        ]
        P, rate, peak = _rate_and_peak(
            np.stack([lp.A for lp in loops]),
            np.stack([f for f, _ in FD]),
            np.stack([lp.C for lp in loops]),
            np.stack([d for _, d in FD]),
        )
        self.P[todo, j], self.rate[todo, j], self.peak[todo, j] = P, rate, peak
        self._done[todo, j] = True


class ProjectedResidual:
    r"""Running scores :math:`R(k)` of M models at once (see the module docstring).

    :meth:`update` takes one step; :meth:`residuals` returns :math:`R(k)` for
    all models from the normal equations of the fit of :math:`z` (fast, for
    screening); :meth:`exact` recomputes one with a QR-based ``lstsq`` (for
    confirming before acting). :meth:`thresholds` returns

    .. math::

        \xi(k) = k s + 2\sqrt{k s h t_k} + 2 h t_k, \qquad
        t_k = \log(1/\delta_w) + \log(k(k+1)),

    under which a true model's score stays for every :math:`k` with
    probability :math:`1-\delta_w`: :math:`R(k)` is at most the energy of the
    noise response :math:`n`, a Gaussian quadratic form with mean at most
    :math:`k s` (:math:`s` the stationary rate, from the Lyapunov matrix) and
    operator norm at most :math:`h` (the squared H-infinity gain).

    Parameters
    ----------
    A : ndarray of shape (M, n, n)
        Stable state matrices.
    C : ndarray of shape (M, p, n)
        Output matrices.
    rate, peak : ndarray of shape (M,)
        :math:`s` and :math:`h`.
    log_inv_delta : float
        :math:`\log(1/\delta_w)`.
    n_unknown : int
        Size of :math:`z`, the first ``n_unknown`` state coordinates.
    B : ndarray of shape (M, n, m), optional
        Drive matrices (known input).
    f0 : ndarray of shape (n,), optional
        Known part of the initial state.
    """

    def __init__(self, A, C, rate, peak, log_inv_delta, n_unknown, B=None, f0=None):
        M, n = A.shape[0], A.shape[-1]
        self.A, self.C, self.B = A, C, B
        self.rate, self.peak = np.asarray(rate), np.asarray(peak)
        self.log_inv_delta = log_inv_delta
        self.r = n_unknown
        self.Phi = np.broadcast_to(np.eye(n)[:, :n_unknown], (M, n, n_unknown)).copy()
        self.f = np.zeros((M, n))
        if f0 is not None:
            self.f[:] = f0
        self._f0 = self.f.copy()
        self.G = np.zeros((M, n_unknown, n_unknown))
        self.b = np.zeros((M, n_unknown))
        self.e = np.zeros(M)
        self.k = 0
        self.k_min = n_unknown // C.shape[1] + 1
        self.active = np.ones(M, dtype=bool)
        self._signals: list[np.ndarray] = []
        self._drives: list[np.ndarray] = []

    @property
    def ready(self) -> bool:
        """Whether enough outputs were seen to leave residual degrees of freedom."""
        return self.k >= self.k_min

    def update(self, signal: np.ndarray, drive: np.ndarray | None = None) -> None:
        """One step: ``signal`` of shape (p,) or (M, p), ``drive`` of shape (m,)."""
        obs = self.C @ self.Phi
        res = signal - np.einsum("mpn,mn->mp", self.C, self.f)
        self.G += np.swapaxes(obs, -1, -2) @ obs
        self.b += np.einsum("mpn,mp->mn", obs, res)
        self.e += np.einsum("mp,mp->m", res, res)
        self.Phi = self.A @ self.Phi
        self.f = np.einsum("mab,mb->ma", self.A, self.f)
        if drive is not None:
            self.f += self.B @ drive
        self.k += 1
        self._signals.append(np.broadcast_to(signal, res.shape).copy())
        if drive is not None:
            self._drives.append(drive)

    def residuals(self) -> np.ndarray:
        """Screening values of :math:`R(k)` for every model."""
        r = self.r
        scale = np.trace(self.G, axis1=-2, axis2=-1)[:, None, None] / r
        reg = self.G + 1e-12 * scale * np.eye(r)
        sol = np.linalg.solve(reg, self.b[..., None])[..., 0]
        return np.maximum(self.e - np.einsum("mn,mn->m", self.b, sol), 0.0)

    def exact(self, m: int) -> float:
        """:math:`R(k)` of model ``m`` by QR least squares."""
        A, C = self.A[m], self.C[m]
        rows, pred = [], []
        Phi, f = np.eye(A.shape[0])[:, : self.r], self._f0[m].copy()
        for step in range(self.k):
            rows.append(C @ Phi)
            pred.append(C @ f)
            Phi = A @ Phi
            f = A @ f
            if self._drives:
                f = f + self.B[m] @ self._drives[step]
        obs = np.vstack(rows)
        signal = np.array([s[m] for s in self._signals])
        res = (signal - np.array(pred)).ravel()
        coef, *_ = np.linalg.lstsq(obs, res, rcond=None)
        res = res - obs @ coef
        return float(res @ res)

    def thresholds(self) -> np.ndarray:
        k = self.k
        t = self.log_inv_delta + math.log(k * (k + 1))
        return gaussian_chaos_bound(k * self.rate, self.peak, t)
