r"""Online supervisory switching control: the two bandit-style supervisors of
arXiv 2603.14762 (reconstructed) and the classical estimator-based baseline."""

from __future__ import annotations

import logging
import math

import numpy as np

from lemmata.control._candidates import CandidateSet
from lemmata.control._energy import gaussian_chaos_bound
from lemmata.control._result import SwitchingResult
from lemmata.control._simulate import SwitchedSystem
from lemmata.control._validate import (
    check_int,
    check_positive,
    check_probability,
)
from lemmata.control._windows import LoopBounds, ProjectedResidual

__all__ = ["EstimatorSupervisor", "SupervisoryController"]

logger = logging.getLogger(__name__)

_VARIANTS = ("elimination", "optimistic")


def _check_system(system: object, candidates: CandidateSet) -> SwitchedSystem:
    if not isinstance(system, SwitchedSystem):
        raise TypeError(f"system must be a SwitchedSystem; got {type(system).__name__}")
    if system.candidates is not candidates:
        raise ValueError("system must simulate the same CandidateSet as the supervisor")
    return system


def _finish(system, chosen, decision_step, decided, flagged, ratio, info):
    hist = system.history()
    return SwitchingResult(
        chosen=chosen,
        decision_step=decision_step,
        decided=decided,
        flagged=flagged,
        y=hist["y"],
        u=hist["u"],
        controller=hist["controller"],
        disturbance_sq=hist["disturbance_sq"],
        diverged=system.diverged,
        energy_ratio=ratio,
        info=info,
    )


class SupervisoryController:
    r"""Bandit-style supervisor over N candidate controllers (arXiv 2603.14762).

    Arms are the controllers; arm :math:`j` is the most suitable one when model
    :math:`j` is the true plant (its matched, LQG-optimal controller). A pull
    runs controller :math:`j` for a window. Two scores decide which models
    remain plausible.

    * **Output energy, history-free** (destabilisation). For every plausible
      model :math:`i \in S_j = \{i : \rho(\tilde A_i^{(j)}) < 1\}`, the output
      energy left after removing the best free response of loop :math:`(i, j)`
      from the window's unknown initial plant state (observability) and the
      forced response to the exploratory input, :math:`R_{ij}(k)`, is compared
      at every step :math:`k` of window :math:`w` with

      .. math::

          \xi_{ij}(k) = k s_{ij} + 2\sqrt{k s_{ij} h_{ij} t} + 2 h_{ij} t,
          \qquad t = \log\frac{4 w (w+1) k (k+1)}{\delta},

      :math:`s_{ij}` the output energy per step from the Lyapunov matrix of the
      loop and :math:`h_{ij}` its squared H-infinity noise gain (see
      :class:`ProjectedResidual`). Model :math:`i` is ruled out when
      :math:`R_{ij}(k) > \xi_{ij}(k)`. When every model of :math:`S_j` is ruled
      out, no loop that :math:`j` stabilises explains the output energy: arm
      :math:`j` is flagged destabilising and the window stops at once.
    * **Likelihood** (identification). Every model runs its Kalman filter from
      the prior :math:`x_1 \sim \mathcal N(0, I)` on the applied input and the
      output, giving the log-likelihood :math:`\ell_i(t) = -\tfrac12
      \sum_{s \le t} (e_s^{i\top} S_s^{i\,-1} e^i_s + \log\det S^i_s)` of its
      innovations. Model :math:`i` is ruled out when :math:`\max_{i'}
      \ell_{i'}(t) - \ell_i(t) \ge \log(2N/\delta)`.

    An arm is dropped with its model; the run decides when one model is left
    and deploys its controller for the remaining steps. Arm choice:

    * ``"elimination"``: round-robin over the remaining arms in epochs
      :math:`e = 0, 1, \dots` with windows of :math:`L_0 2^e` steps.
    * ``"optimistic"``: the remaining arm whose model is the most likely so
      far (ties to the fewest pulls), with windows of
      :math:`L_0 2^{\text{pulls}_j}` steps.

    Once some arm has completed a window without being flagged (certified),
    the supervisor returns to the most likely certified arm (the incumbent)
    before each test of another arm, for windows of :math:`L_0` steps until
    the output energy of the last :math:`\lceil 2 d_x / d_y \rceil` steps is
    back under the incumbent's stationary bound, so that tests start from rest
    (at most ``max_recovery`` windows).

    Parameters
    ----------
    candidates : CandidateSet
        Models and controllers.
    variant : {"elimination", "optimistic"}, default="elimination"
        Arm selection rule.
    delta : float, default=0.05
        Failure probability :math:`\delta \in (0, 1)`.
    window : int, optional
        First window length :math:`L_0`; default ``max(16, 4 ceil(2 d_x / d_y))``.
    max_recovery : int, default=20
        Most recovery windows before a test.

    Notes
    -----
    [reconstruction] The algorithms, scores and constants of arXiv
    2603.14762 are not available (only its abstract); this follows the
    spec's sketch where it can. Observability removes the effect of past
    states from the energy score: a true stable loop's score is a Gaussian
    quadratic form in the window's own noise whatever earlier (possibly
    destabilising) controllers did; the first :math:`\lfloor d_x/d_y \rfloor`
    outputs of a window are used up by the fit (the "dropped" outputs).
    Departures from the sketch, each ours: identification uses the models'
    Kalman-filter likelihoods, not the argmin of window residuals, because an
    absolute residual test can never rule out a model that predicts more
    noise than there is (seen in testing); the likelihood ratio of the true
    model against any other is a martingale even under feedback, so by
    Ville's inequality the true model survives that test with probability
    :math:`1-\delta/2`, and the energy test's union bound spends the other
    :math:`\delta/2`. The return to an incumbent between tests is ours too (it
    stops a run of destabilising tests from compounding). The run stops at
    ``n_steps``; if undecided it deploys the most likely remaining arm
    (``decided=False``). The "most suitable" controller is the one matched to
    the identified model (the later revision's wording).

    References
    ----------
    .. [1] Sun, Jadbabaie. "Online Learning for Supervisory Switching Control."
       arXiv:2603.14762.
    .. [2] Sun, Jadbabaie. "A least-square method for non-asymptotic
       identification in linear switching control." arXiv:2404.08120.
    """

    def __init__(
        self,
        candidates: CandidateSet,
        *,
        variant: str = "elimination",
        delta: float = 0.05,
        window: int | None = None,
        max_recovery: int = 20,
    ) -> None:
        if not isinstance(candidates, CandidateSet):
            raise TypeError(
                f"candidates must be a CandidateSet; got {type(candidates).__name__}"
            )
        if variant not in _VARIANTS:
            raise ValueError(
                f"variant must be one of {list(_VARIANTS)}; got {variant!r}"
            )
        self.candidates = candidates
        self.variant = variant
        self.delta = check_probability("delta", delta)
        n, d_y = 2 * candidates.n_states, candidates.n_outputs
        default = max(16, 4 * math.ceil(n / d_y))
        self.window = default if window is None else check_int("window", window, 2)
        self.max_recovery = check_int("max_recovery", max_recovery, 0)
        self.bounds = LoopBounds(candidates)
        self._n_rest = math.ceil(n / d_y)

    def run(self, system: SwitchedSystem, n_steps: int) -> SwitchingResult:
        """Supervise ``system`` for ``n_steps`` steps in total."""
        system = _check_system(system, self.candidates)
        n_steps = check_int("n_steps", n_steps, 1)
        cs = self.candidates
        st = _RunState(cs)
        self._rest = LoopBounds(cs, u_var=system.u_var)
        self._llr_level = math.log(2 * cs.n_candidates / self.delta)
        while system.t < n_steps and st.decided is None and not system.diverged:
            j, length = self._next_arm(st)
            if j is None:
                break
            self._recover(system, st, j, n_steps)
            if st.decided is not None or system.t >= n_steps or system.diverged:
                break
            if st.alive[j] and not st.flagged[j]:
                self._window(system, st, j, length, n_steps)
        decided = st.decided is not None
        chosen = st.decided if decided else self._most_likely(st, self._arms(st))
        if chosen is None:  # every model ruled out: the most likely unflagged arm
            pool = np.flatnonzero(~st.flagged)
            chosen = self._most_likely(
                st, pool if pool.size else np.arange(len(st.alive))
            )
        while chosen is not None and system.t < n_steps and not system.diverged:
            system.step(chosen)
        info = {
            "windows": st.windows,
            "recovery_steps": st.recovery_steps,
            "eliminated_at": st.eliminated_at,
            "flag_step": st.flag_step,
            "pulls": st.pulls,
            "loglik": st.loglik,
        }
        return _finish(
            system,
            chosen,
            st.decision_step if decided else None,
            decided,
            st.flagged,
            st.ratio,
            info,
        )

    # ------------------------------------------------------------- arm choice
    def _arms(self, st: _RunState) -> np.ndarray:
        return np.flatnonzero(st.alive & ~st.flagged)

    @staticmethod
    def _most_likely(st: _RunState, arms: np.ndarray) -> int | None:
        if arms.size == 0:
            return None
        order = np.lexsort((arms, st.pulls[arms], -st.loglik[arms]))
        return int(arms[order[0]])

    def _next_arm(self, st: _RunState) -> tuple[int | None, int]:
        arms = self._arms(st)
        if arms.size == 0:
            return None, 0
        if self.variant == "elimination":
            while st.queue and not (
                st.alive[st.queue[0]] and not st.flagged[st.queue[0]]
            ):
                st.queue.pop(0)
            if not st.queue:
                st.epoch += 1
                st.queue = list(arms)
            j = st.queue.pop(0)
            return int(j), self.window * 2**st.epoch
        j = self._most_likely(st, arms)
        return j, self.window * 2 ** int(st.pulls[j])

    def _incumbent(self, st: _RunState) -> int | None:
        return self._most_likely(
            st, np.flatnonzero(st.certified & st.alive & ~st.flagged)
        )

    def _log_inv(self, w: int) -> float:
        return math.log(4 * w * (w + 1) / self.delta)

    # ----------------------------------------------------------------- window
    def _energy_scorer(self, system, st, j):
        cs = self.candidates
        d_x = cs.n_states
        models = np.flatnonzero(st.alive & self.bounds.stable[:, j])
        self.bounds.ensure(models, j)
        f0 = np.zeros(2 * d_x)
        f0[d_x:] = system.controller_state
        scorer = ProjectedResidual(
            cs.closed_loop_A[models, j],
            cs.closed_loop_C[models],
            self.bounds.rate[models, j],
            self.bounds.peak[models, j],
            self._log_inv(st.n_windows),
            d_x,
            B=cs.closed_loop_B[models, j],
            f0=f0,
        )
        return scorer, models

    def _window(self, system, st, j, length, n_steps, recovery=False) -> None:
        st.n_windows += 1
        st.pulls[j] += 1
        energy, models = self._energy_scorer(system, st, j)
        start, worst, stopped = system.t, 0.0, False
        for _ in range(length):
            if system.t >= n_steps:
                stopped = True
                break
            y, u, ups = system.step(j)
            st.filter_step(y, u)
            energy.update(y, ups)
            st.recent.append(float(y @ y))
            self._likelihood_test(st, system.t)
            if system.diverged:
                logger.warning(
                    "state diverged under controller %d at step %d", j, system.t
                )
                self._flag(st, j, system.t, models)
                worst, stopped = math.inf, True
                break
            if energy.ready:
                worst = max(worst, self._screen(st, energy, models, system.t))
            energy.active &= st.alive[models]
            if not energy.active.any():
                self._flag(st, j, system.t, models)
                stopped = True
                break
            if not st.alive[j] or st.decided is not None:
                stopped = True
                break
        if not recovery:
            st.ratio[j] = max(st.ratio.get(j, 0.0), worst)
        st.windows.append((j, start, system.t))
        if not stopped and not st.flagged[j]:
            st.certified[j] = True
        del st.recent[: -self._n_rest]

    def _likelihood_test(self, st, t) -> None:
        gap = st.loglik.max() - st.loglik
        for i in np.flatnonzero(st.alive & (gap >= self._llr_level)):
            self._eliminate(st, i, t)

    def _screen(self, st, scorer, models, t) -> float:
        """Energy tests; returns min over active models of R / threshold."""
        scorer.active &= st.alive[models]
        act = np.flatnonzero(scorer.active)
        if act.size == 0:
            return 0.0
        R, xi = scorer.residuals(), scorer.thresholds()
        ratio = R[act] / xi[act]
        for pos in np.flatnonzero(R[act] > xi[act]):
            m = act[pos]
            exact = scorer.exact(m)
            ratio[pos] = exact / xi[m]
            if exact > xi[m]:
                scorer.active[m] = False
                self._eliminate(st, models[m], t)
        return float(ratio.min())

    def _eliminate(self, st, i, t) -> None:
        st.alive[i] = False
        st.eliminated_at[int(i)] = t
        logger.debug("model %d ruled out at step %d", i, t)
        alive = np.flatnonzero(st.alive)
        if alive.size == 1 and st.decided is None:
            st.decided, st.decision_step = int(alive[0]), t

    def _flag(self, st, j, t, models) -> None:
        st.flagged[j] = True
        st.flag_step[j] = t
        for i in models:
            if st.alive[i]:
                self._eliminate(st, i, t)
        logger.debug("controller %d flagged destabilising at step %d", j, t)

    def _recover(self, system, st, j, n_steps) -> None:
        """Before testing arm ``j``, bring the output back to rest under the
        incumbent (at most ``max_recovery`` windows of ``L_0`` steps)."""
        inc = self._incumbent(st)
        if inc is None or inc == j or len(st.recent) < self._n_rest:
            return
        models = np.flatnonzero(st.alive & self._rest.stable[:, inc])
        self._rest.ensure(models, inc)
        t = math.log(2 / self.delta)
        rest = gaussian_chaos_bound(
            self._n_rest * self._rest.rate[models, inc], self._rest.peak[models, inc], t
        ).max()
        for _ in range(self.max_recovery):
            if sum(st.recent[-self._n_rest :]) <= rest or system.t >= n_steps:
                break
            if system.diverged or st.decided is not None or not st.alive[inc]:
                break
            start = system.t
            self._window(system, st, inc, self.window, n_steps, recovery=True)
            st.recovery_steps += system.t - start


class _RunState:
    """Mutable bookkeeping of one supervisor run, with the models' Kalman filters."""

    def __init__(self, cs: CandidateSet) -> None:
        N, d_x = cs.n_candidates, cs.n_states
        self.cs = cs
        self.alive = np.ones(N, dtype=bool)
        self.flagged = np.zeros(N, dtype=bool)
        self.certified = np.zeros(N, dtype=bool)
        self.pulls = np.zeros(N, dtype=int)
        self.eliminated_at: dict[int, int] = {}
        self.flag_step: dict[int, int] = {}
        self.ratio: dict[int, float] = {}
        self.windows: list[tuple[int, int, int]] = []
        self.queue: list[int] = []
        self.epoch = -1
        self.n_windows = 0
        self.decided: int | None = None
        self.decision_step: int | None = None
        self.recent: list[float] = []
        self.recovery_steps = 0
        self.xhat = np.zeros((N, d_x))
        self.cov = np.broadcast_to(np.eye(d_x), (N, d_x, d_x)).copy()
        self.loglik = np.zeros(N)
        self._W = cs.w_var * np.eye(d_x)
        # Floored so that the innovation covariance stays invertible.
        self._V = max(cs.eta_var, 1e-9) * np.eye(cs.n_outputs)

    def filter_step(self, y: np.ndarray, u: np.ndarray) -> None:
        r"""One time-varying Kalman step per model; adds :math:`\log p_i(y_t)`."""
        cs = self.cs
        C, A = cs.C, cs.A
        Ct = np.swapaxes(C, -1, -2)
        S = C @ self.cov @ Ct + self._V
        e = y - np.einsum("ipn,in->ip", C, self.xhat)
        Sinv_e = np.linalg.solve(S, e[..., None])[..., 0]
        _, logdet = np.linalg.slogdet(S)
        self.loglik -= 0.5 * (np.einsum("ip,ip->i", e, Sinv_e) + logdet)
        gain = A @ self.cov @ Ct @ np.linalg.inv(S)
        self.xhat = (
            np.einsum("iab,ib->ia", A, self.xhat)
            + cs.B @ u
            + np.einsum("iab,ib->ia", gain, e)
        )
        cov = A @ self.cov @ np.swapaxes(A, -1, -2) + self._W
        cov -= gain @ S @ np.swapaxes(gain, -1, -2)
        self.cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))


class EstimatorSupervisor:
    r"""Classical estimator-based supervision (Hespanha-Morse style), a baseline.

    A multi-estimator runs the Kalman predictor of every model on the applied
    input and the output,

    .. math::

        e^i_t = y_t - C_i \hat x^i_t, \qquad
        \hat x^i_{t+1} = A_i \hat x^i_t + B_i u_t + L_i e^i_t, \qquad
        \mu_i(t) = \lambda \mu_i(t-1) + \|e^i_t\|^2,

    and the supervisor switches to :math:`\arg\min_i \mu_i(t)` when that
    monitoring signal beats the current one by the factor ``1 + hysteresis``
    and at least ``dwell`` steps have passed since the last switch.

    Parameters
    ----------
    candidates : CandidateSet
        Models and controllers (the observer gains :math:`L_i` are reused).
    forgetting : float, default=0.99
        :math:`\lambda \in (0, 1)`.
    dwell : int, default=20
        Minimum steps between switches.
    hysteresis : float, default=0.1
        Relative margin a challenger needs.

    Notes
    -----
    The baseline has no stopping rule and no finite-time guarantee; its
    ``decision_step`` is the step of its last switch (known only in
    hindsight), and ``decided`` is always False. It never flags controllers.
    """

    def __init__(
        self,
        candidates: CandidateSet,
        *,
        forgetting: float = 0.99,
        dwell: int = 20,
        hysteresis: float = 0.1,
    ) -> None:
        if not isinstance(candidates, CandidateSet):
            raise TypeError(
                f"candidates must be a CandidateSet; got {type(candidates).__name__}"
            )
        self.candidates = candidates
        self.forgetting = check_probability("forgetting", forgetting)
        self.dwell = check_int("dwell", dwell, 1)
        self.hysteresis = check_positive("hysteresis", hysteresis)

    def run(self, system: SwitchedSystem, n_steps: int) -> SwitchingResult:
        """Supervise ``system`` for ``n_steps`` steps in total."""
        system = _check_system(system, self.candidates)
        n_steps = check_int("n_steps", n_steps, 1)
        cs = self.candidates
        N = cs.n_candidates
        xhat = np.zeros((N, cs.n_states))
        mu = np.zeros(N)
        current, last_switch = 0, 0
        while system.t < n_steps and not system.diverged:
            t = system.t
            if t - last_switch >= self.dwell:
                best = int(np.argmin(mu))
                if (1 + self.hysteresis) * mu[best] < mu[current]:
                    current, last_switch = best, t
            y, u, _ = system.step(current)
            err = y - np.einsum("ipn,in->ip", cs.C, xhat)
            mu = self.forgetting * mu + np.einsum("ip,ip->i", err, err)
            xhat = (
                np.einsum("iab,ib->ia", cs.A, xhat)
                + cs.B @ u
                + np.einsum("iab,ib->ia", cs.L, err)
            )
        return _finish(
            system, current, last_switch, False, np.zeros(N, dtype=bool), {}, {}
        )
