r"""The true plant under a switched multi-controller, simulated step by step.

At each step :math:`t`, with :math:`p_t` the controller chosen by the supervisor,

.. math::

    y_t &= C_\star x_t + \eta_t, \\
    u_t &= -K_{p_t} \check x_t + \upsilon_t, \qquad
        \upsilon_t \sim \mathcal N(0, \sigma_u^2 I), \\
    \check x_{t+1} &= A_{p_t} \check x_t + B_{p_t} u_t
        + L_{p_t} (y_t - C_{p_t} \check x_t), \\
    x_{t+1} &= A_\star x_t + B_\star u_t + w_t,

with :math:`x_1 \sim \mathcal N(0, I)` and :math:`\check x_1 = 0`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lemmata.control._candidates import CandidateSet
from lemmata.control._validate import (
    check_index,
    check_int,
    check_nonnegative,
    check_positive,
    check_rng,
)

__all__ = ["Noise", "SwitchedSystem", "simulate_closed_loop"]


@dataclass(frozen=True)
class Noise:
    r"""Pre-drawn noise, for reproducing a run exactly.

    Attributes
    ----------
    x1 : ndarray of shape (d_x,)
        Initial state.
    w : ndarray of shape (T, d_x)
        Process noise :math:`w_t`.
    eta : ndarray of shape (T, d_y)
        Measurement noise :math:`\eta_t`.
    upsilon : ndarray of shape (T, d_u)
        Exploratory input :math:`\upsilon_t`.
    """

    x1: np.ndarray
    w: np.ndarray
    eta: np.ndarray
    upsilon: np.ndarray


class _Streams:
    """Four independent Gaussian streams (x1, w, eta, upsilon), drawn in blocks."""

    def __init__(self, rng, scales, dims, block):
        gens = rng.spawn(4)
        self.x1 = gens[0].standard_normal(dims[0])
        self._gens, self._scales, self._dims = gens[1:], scales, dims
        self._block, self._pos, self._buf = block, block, None

    def next(self):
        if self._pos == self._block:
            self._buf = [
                s * g.standard_normal((self._block, d))
                for g, s, d in zip(self._gens, self._scales, self._dims, strict=True)
            ]
            self._pos = 0
        k = self._pos
        self._pos += 1
        return self._buf[0][k], self._buf[1][k], self._buf[2][k]


class SwitchedSystem:
    r"""The true candidate in closed loop with a switched observer-based controller.

    Call :meth:`step` with the controller index :math:`p_t` once per time step;
    it returns :math:`(y_t, u_t, \upsilon_t)`: the output seen by the controller,
    the input applied and the exploratory part of that input. The
    multi-controller keeps one observer state :math:`\check x_t` across
    switches (see the module docstring for the equations).

    Parameters
    ----------
    candidates : CandidateSet
        The models and controllers.
    true_index : int
        :math:`\star`, the index of the true plant.
    u_var : float, default=1.0
        Exploratory input variance :math:`\sigma_u^2`; must be >= 0.
    rng : numpy.random.Generator, optional
        Source of randomness. Four child streams are spawned from it, for
        :math:`x_1`, :math:`w`, :math:`\eta` and :math:`\upsilon`, so that each is
        reproducible on its own. Required unless ``noise`` is given.
    noise : Noise, optional
        Pre-drawn noise (then ``rng`` is not used); the run may not exceed its
        length.
    state_limit : float, default=1e12
        When :math:`\|x_t\|` exceeds it the simulation stops: :attr:`diverged`
        becomes True and further calls to :meth:`step` raise ``RuntimeError``.

    Attributes
    ----------
    t : int
        Steps taken so far.
    diverged : bool
        Whether the state norm passed ``state_limit``.
    """

    def __init__(
        self,
        candidates: CandidateSet,
        true_index: int,
        *,
        u_var: float = 1.0,
        rng: np.random.Generator | None = None,
        noise: Noise | None = None,
        state_limit: float = 1e12,
        block: int = 1024,
    ) -> None:
        if not isinstance(candidates, CandidateSet):
            raise TypeError(
                f"candidates must be a CandidateSet; got {type(candidates).__name__}"
            )
        self.candidates = candidates
        self.true_index = check_index("true_index", true_index, len(candidates))
        self.u_var = check_nonnegative("u_var", u_var)
        self.state_limit = check_positive("state_limit", state_limit)
        cs, i = candidates, self.true_index
        dims = (cs.n_states, cs.n_outputs, cs.n_inputs)
        if noise is None:
            if rng is None:
                raise ValueError("rng must be given when noise is None")
            scales = (np.sqrt(cs.w_var), np.sqrt(cs.eta_var), np.sqrt(self.u_var))
            self._streams = _Streams(
                check_rng(rng), scales, dims, check_int("block", block, 1)
            )
            x1 = self._streams.x1
        else:
            self._streams = None
            self._noise = noise
            x1 = np.asarray(noise.x1, dtype=float)
        self.A, self.B, self.C = cs.A[i], cs.B[i], cs.C[i]
        self.x = x1.copy()
        self.xc = np.zeros(cs.n_states)
        self.t = 0
        self.diverged = False
        self._log: dict[str, list] = {k: [] for k in ("y", "u", "ups", "p", "d2")}

    @property
    def controller_state(self) -> np.ndarray:
        r"""The multi-controller's observer state :math:`\check x_t` (known to the
        supervisor, which runs the controller)."""
        return self.xc.copy()

    def _draw(self):
        if self._streams is not None:
            return self._streams.next()
        n = self._noise
        if self.t >= len(n.w):
            raise RuntimeError(f"the pre-drawn noise has only {len(n.w)} steps")
        return n.w[self.t], n.eta[self.t], n.upsilon[self.t]

    def step(self, controller: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Advance one step under controller ``controller``; return
        :math:`(y_t, u_t, \upsilon_t)`."""
        if self.diverged:
            raise RuntimeError(
                f"the simulation diverged at step {self.t} (|x| > {self.state_limit:g})"
            )
        j = controller
        if not 0 <= j < self.candidates.n_candidates:
            check_index("controller", j, self.candidates.n_candidates)
        cs = self.candidates
        w, eta, ups = self._draw()
        y = self.C @ self.x + eta
        u = ups - cs.K[j] @ self.xc
        self.xc = cs.A[j] @ self.xc + cs.B[j] @ u + cs.L[j] @ (y - cs.C[j] @ self.xc)
        self.x = self.A @ self.x + self.B @ u + w
        log = self._log
        log["y"].append(y)
        log["u"].append(u)
        log["ups"].append(ups)
        log["p"].append(j)
        log["d2"].append(w @ w + eta @ eta + ups @ ups)
        self.t += 1
        if not np.linalg.norm(self.x) <= self.state_limit:
            self.diverged = True
        return y, u, ups

    def history(self) -> dict[str, np.ndarray]:
        r"""The run so far: ``y (T, d_y)``, ``u (T, d_u)``, ``upsilon (T, d_u)``,
        ``controller (T,)`` and ``disturbance_sq (T,)`` =
        :math:`\|w_t\|^2 + \|\eta_t\|^2 + \|\upsilon_t\|^2`."""
        cs = self.candidates
        log = self._log

        def stack(key, width):
            return np.array(log[key]).reshape(len(log[key]), width)

        return {
            "y": stack("y", cs.n_outputs),
            "u": stack("u", cs.n_inputs),
            "upsilon": stack("ups", cs.n_inputs),
            "controller": np.array(log["p"], dtype=int),
            "disturbance_sq": np.array(log["d2"], dtype=float),
        }


def simulate_closed_loop(
    candidates: CandidateSet,
    true_index: int,
    controller: int,
    n_steps: int,
    *,
    rng: np.random.Generator,
    u_var: float = 1.0,
    n_trials: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Batched simulation of plant ``true_index`` under one fixed controller.

    Runs the closed loop :math:`(\tilde C_\star, \tilde A_\star^{(j)},
    \tilde B_\star^{(j)})` of :meth:`CandidateSet.closed_loop` from
    :math:`\xi_1 = (x_1, 0)` for ``n_trials`` independent trajectories at once.
    Same equations as :class:`SwitchedSystem` with a constant :math:`p_t = j`.

    Returns
    -------
    y : ndarray of shape (n_trials, n_steps, d_y)
    upsilon : ndarray of shape (n_trials, n_steps, d_u)
        The exploratory inputs.
    """
    if not isinstance(candidates, CandidateSet):
        raise TypeError(
            f"candidates must be a CandidateSet; got {type(candidates).__name__}"
        )
    loop = candidates.closed_loop(true_index, controller)
    T = check_int("n_steps", n_steps, 1)
    n_trials = check_int("n_trials", n_trials, 1)
    u_var = check_nonnegative("u_var", u_var)
    rng = check_rng(rng)
    d_x, d_y, d_u = candidates.n_states, candidates.n_outputs, candidates.n_inputs
    g_x, g_w, g_e, g_u = rng.spawn(4)
    xi = np.zeros((n_trials, 2 * d_x))
    xi[:, :d_x] = g_x.standard_normal((n_trials, d_x))
    w = np.sqrt(candidates.w_var) * g_w.standard_normal((n_trials, T, d_x))
    eta = np.sqrt(candidates.eta_var) * g_e.standard_normal((n_trials, T, d_y))
    ups = np.sqrt(u_var) * g_u.standard_normal((n_trials, T, d_u))
    drive = w @ loop.B_w.T + eta @ loop.B_eta.T + ups @ loop.B_u.T
    y = np.empty((n_trials, T, d_y))
    At, Ct = loop.A.T, loop.C.T
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            y[:, t] = xi @ Ct
            xi = xi @ At + drive[:, t]
    y += eta
    return y, ups
