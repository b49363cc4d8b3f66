r"""The switching strategy of arXiv 2404.08120 (Algorithm 2): try controllers in
order, certify one by its output energy, wait, identify the model."""

from __future__ import annotations

import logging
import math

import numpy as np

from lemmata.control._candidates import CandidateSet
from lemmata.control._energy import gaussian_chaos_bound, initial_state_bound
from lemmata.control._identify import estimate_markov, separation, tournament
from lemmata.control._result import SwitchingResult
from lemmata.control._simulate import SwitchedSystem
from lemmata.control._supervisor import _check_system, _finish
from lemmata.control._validate import (
    check_index,
    check_int,
    check_nonnegative,
    check_positive,
    check_probability,
)
from lemmata.control._windows import LoopBounds

__all__ = ["SwitchingStrategy"]

logger = logging.getLogger(__name__)


class SwitchingStrategy:
    r"""Algorithm 2 of [1]: certify a stabilising controller, then identify.

    With the exploratory input on throughout, for the controllers
    :math:`j = p_1, p_2, \dots` in a fixed order (phase :math:`m`):

    1. apply :math:`j` for up to :math:`\tau_m` steps, rejecting it as soon
       as the phase's output energy :math:`E_k = \sum_{l \le k} \|y_{s+l}\|^2`
       exceeds :math:`\xi_m(k) = \max_{i \in S_j} (\sqrt{M_{ij}} +
       \sqrt{Q_{ij}(k)})^2` (Prop. 5; :math:`S_j` the models :math:`j`
       stabilises, :math:`Q_{ij}` the noise quantile of :class:`EnergyBound`
       with the exploratory input counted as noise, at confidence
       :math:`1-\delta/(2N)`);
    2. if :math:`j` survives :math:`\tau_m` steps it is certified: keep it for
       :math:`c_{wait}(\tau_1 + \dots + \tau_{m-1})` more steps so that
       transients decay, then for :math:`\tau_f` steps;
    3. return Algorithm 1 (:func:`tournament`) on the OLS estimate from those
       :math:`\tau_f` steps against :math:`\{G_i^{(j)}\}_i`, and deploy the
       controller matched to the identified model.

    Constants:

    .. math::

        \tau_m = \Big\lceil \frac{(m + \log(1/\delta))\, d_x}{2 \log(1 + \varepsilon_a)}
        \Big\rceil, \qquad
        \tau_f = \Big\lceil c_{id} \frac{\bar h_j}{\sigma_u^2 \gamma_j^2}
        \log\frac{2N^2}{\delta} \Big\rceil,

    :math:`\bar h_j` the largest squared H-infinity gain from :math:`(w, \eta)`
    to :math:`y` over :math:`S_j` (the bound on :math:`\sigma_e^2 +
    \sigma_\eta^2`) and :math:`\gamma_j` the separation of
    :math:`\{G_i^{(j)}\}_i`; :math:`\tau_f` is at least :math:`4 h d_u` so
    that the regressor Gram matrix is well conditioned.

    Parameters
    ----------
    candidates : CandidateSet
        Models and controllers.
    delta : float, default=0.05
        Failure probability.
    h : int, optional
        Markov horizon; default :math:`2 \cdot 2 d_x` (twice the closed-loop
        order).
    eps_a : float, default=0.05
        Instability margin :math:`\varepsilon_a` of Assumption 2 that sets
        :math:`\tau_m`.
    c_wait : float, default=1.0
        Dwell factor :math:`c_{wait}`.
    c_id : float, default=0.2
        Constant :math:`c_{id}` of :math:`\tau_f` (Prop. 4).
    order : sequence of int, optional
        Order in which controllers are tried; default ``0, ..., N-1``.

    Notes
    -----
    [reconstruction] Theorem 6 of [1] gives :math:`\tau_m = \tilde O(m d_x +
    \log(1/\delta) d_x)` and :math:`\tau_f` only up to constants; the forms
    above fix them: :math:`\tau_m` is long enough for a loop with spectral
    radius :math:`1+\varepsilon_a` to grow its energy by
    :math:`e^{(m + \log(1/\delta)) d_x}`. The default :math:`c_{id}` comes
    from the ``switching-identification`` experiment: its measured
    :math:`\tau_{95}` over the Prop. 4 scale :math:`(\sigma^2 /
    (\sigma_u^2\gamma^2)) \log(N^2/\delta)` was 0.08 to 0.14 across
    :math:`d_x \in \{2, 8, 32\}` and :math:`N \in \{4, 8, 16\}`, rounded up
    to 0.2. The transient
    bounds :math:`M_{ij}`: phase 1 uses :func:`initial_state_bound` on the
    :math:`x`-block of :math:`P_{ij}` (:math:`\check x_1 = 0`); after a
    rejected phase, the state :math:`\xi_s` at the switch is bounded from the
    phase's last :math:`n_o = \lceil 2 d_x / d_y\rceil + 1` outputs through
    strict observability (Assumption 3):
    :math:`\|\xi_{s-n_o}\| \le (\|Y\| + \sqrt{q_Y}) / \sigma_{\min}(O_{n_o})`
    and :math:`\|\xi_s\| \le \|\tilde A^{n_o}\| \|\xi_{s-n_o}\| + \sqrt{q_X}`
    (:math:`q_Y, q_X` Gaussian-chaos bounds of the noise in those outputs and
    in that state), maximised over every candidate plant, and
    :math:`M_{ij} = \lambda_{\max}(P_{ij}) \|\xi_s\|^2`. This is where [1]'s
    :math:`M_j \lesssim e^{d_x} M_{j-1}` growth comes from. The identification
    regression uses the exploratory input only, as in [1].

    References
    ----------
    .. [1] Sun, Jadbabaie. "A least-square method for non-asymptotic
       identification in linear switching control." arXiv:2404.08120.
    """

    def __init__(
        self,
        candidates: CandidateSet,
        *,
        delta: float = 0.05,
        h: int | None = None,
        eps_a: float = 0.05,
        c_wait: float = 1.0,
        c_id: float = 0.2,
        order: list[int] | None = None,
    ) -> None:
        if not isinstance(candidates, CandidateSet):
            raise TypeError(
                f"candidates must be a CandidateSet; got {type(candidates).__name__}"
            )
        self.candidates = candidates
        N = candidates.n_candidates
        self.delta = check_probability("delta", delta)
        self.h = 4 * candidates.n_states if h is None else check_int("h", h, 1)
        self.eps_a = check_positive("eps_a", eps_a)
        self.c_wait = check_nonnegative("c_wait", c_wait)
        self.c_id = check_positive("c_id", c_id)
        if order is None:
            order = list(range(N))
        order = [int(j) for j in order]
        if sorted(set(order)) != sorted(order) or any(not 0 <= j < N for j in order):
            raise ValueError(
                f"order must list distinct controller indices in [0, {N - 1}]; "
                f"got {order}"
            )
        self.order = order

    def phase_length(self, m: int) -> int:
        r""":math:`\tau_m` of phase ``m`` (1-based)."""
        d_x = self.candidates.n_states
        num = (m + math.log(1 / self.delta)) * d_x
        return math.ceil(num / (2 * math.log1p(self.eps_a)))

    def identification_length(self, j: int, u_var: float) -> int:
        r""":math:`\tau_f` for identification under controller ``j``."""
        cs = self.candidates
        j = check_index("j", j, cs.n_candidates)
        u_var = check_positive("u_var", u_var)
        noise = LoopBounds(cs, u_var=0.0)
        models = np.flatnonzero(noise.stable[:, j])
        noise.ensure(models, j)
        gamma = separation(cs.markov_parameters(j, self.h))
        scale = np.max(noise.peak[models, j]) / (u_var * gamma**2)
        N = cs.n_candidates
        tau = math.ceil(self.c_id * scale * math.log(2 * N**2 / self.delta))
        return max(tau, 4 * self.h * cs.n_inputs)

    def run(self, system: SwitchedSystem, n_steps: int) -> SwitchingResult:
        """Run Algorithm 2 on ``system`` and deploy its choice until ``n_steps``."""
        system = _check_system(system, self.candidates)
        n_steps = check_int("n_steps", n_steps, 1)
        if not system.u_var > 0:
            raise ValueError(
                f"system.u_var must be > 0 for identification; got {system.u_var}"
            )
        cs = self.candidates
        N = cs.n_candidates
        bounds = LoopBounds(cs, u_var=system.u_var)
        log_inv = math.log(2 * N / self.delta)
        flagged = np.zeros(N, dtype=bool)
        ratio: dict[int, float] = {}
        info: dict = {"phases": [], "certified": None}
        taus: list[int] = []
        state_sq = None
        chosen = decision = None
        for m, j in enumerate(self.order, start=1):
            if system.t >= n_steps or system.diverged:
                break
            tau = self.phase_length(m)
            models = np.flatnonzero(bounds.stable[:, j])
            bounds.ensure(models, j)
            M = self._transients(bounds, models, j, state_sq, log_inv)
            start = system.t
            rejected, worst, ys = self._phase(
                system, bounds, models, j, M, tau, log_inv, n_steps
            )
            ratio[j] = worst
            info["phases"].append((j, start, system.t, bool(rejected)))
            taus.append(tau)
            if rejected:
                flagged[j] = True
                state_sq = self._state_bound(bounds, j, ys, state_sq, log_inv)
                continue
            if system.t - start < tau:
                break
            info["certified"] = j
            chosen = self._identify(system, j, sum(taus[:-1]), n_steps)
            decision = system.t if chosen is not None else None
            break
        while chosen is not None and system.t < n_steps and not system.diverged:
            system.step(chosen)
        return _finish(
            system, chosen, decision, chosen is not None, flagged, ratio, info
        )

    # ----------------------------------------------------------------- pieces
    def _transients(self, bounds, models, j, state_sq, log_inv) -> np.ndarray:
        d_x = self.candidates.n_states
        P = bounds.P[models, j]
        if state_sq is None:
            delta = 1 / math.exp(log_inv)
            return np.array([initial_state_bound(p[:d_x, :d_x], delta) for p in P])
        return np.linalg.eigvalsh(P)[:, -1] * state_sq

    def _phase(self, system, bounds, models, j, M, tau, log_inv, n_steps):
        rate, peak = bounds.rate[models, j], bounds.peak[models, j]
        energy, worst, ys = 0.0, 0.0, []
        for k in range(1, tau + 1):
            if system.t >= n_steps:
                return False, worst, ys
            y, _, _ = system.step(j)
            ys.append(y)
            energy += float(y @ y)
            t = log_inv + math.log(k * (k + 1))
            Q = gaussian_chaos_bound(k * rate, peak, t)
            threshold = float(np.max((np.sqrt(M) + np.sqrt(Q)) ** 2))
            worst = max(worst, energy / threshold)
            if energy > threshold or system.diverged:
                logger.debug("controller %d rejected after %d steps", j, k)
                return True, worst, ys
        return False, worst, ys

    def _state_bound(self, bounds, j, ys, prev_sq, log_inv) -> float:
        """High-probability bound on ||xi_s||^2 after a rejected phase."""
        cs = self.candidates
        n, d_y = 2 * cs.n_states, cs.n_outputs
        n_o = math.ceil(n / d_y) + 1
        k = len(ys)
        worst = 0.0
        for i in range(cs.n_candidates):
            loop = cs.closed_loop(i, j)
            F, D = loop.noise_channels(
                w_var=cs.w_var, eta_var=cs.eta_var, u_var=bounds.u_var
            )
            steps = min(k, n_o)
            obs, Gam, Psi = _window_maps(loop.A, loop.C, F, D, steps)
            q_x = _chaos(Psi, log_inv)
            power = np.linalg.norm(np.linalg.matrix_power(loop.A, steps), 2)
            sv = np.linalg.svd(obs, compute_uv=False)
            if k >= n_o and sv[-1] > 0:
                Y = np.concatenate(ys[-steps:])
                start = (np.linalg.norm(Y) + math.sqrt(_chaos(Gam, log_inv))) / sv[-1]
            else:
                start = math.sqrt(prev_sq) if prev_sq is not None else math.inf
            worst = max(worst, (power * start + math.sqrt(q_x)) ** 2)
        return worst

    def _identify(self, system, j, previous, n_steps) -> int | None:
        cs = self.candidates
        wait = math.ceil(self.c_wait * previous)
        tau_f = self.identification_length(j, system.u_var)
        for _ in range(wait):
            if system.t >= n_steps or system.diverged:
                return None
            system.step(j)
        ys, ups = [], []
        for _ in range(tau_f + self.h):
            if system.t >= n_steps or system.diverged:
                return None
            y, _, v = system.step(j)
            ys.append(y)
            ups.append(v)
        G = cs.markov_parameters(j, self.h)
        G_hat = estimate_markov(np.array(ys), np.array(ups), self.h)
        return int(tournament(G_hat, G))


def _window_maps(A, C, F, D, steps):
    """Observability matrix, noise-to-outputs and noise-to-final-state maps."""
    n, m = A.shape[0], F.shape[1]
    p = C.shape[0]
    obs = np.zeros((steps * p, n))
    Gam = np.zeros((steps * p, steps * m))
    Psi = np.zeros((n, steps * m))
    powers = [np.eye(n)]
    for _ in range(steps):
        powers.append(A @ powers[-1])
    for r in range(steps):
        obs[r * p : (r + 1) * p] = C @ powers[r]
        Gam[r * p : (r + 1) * p, r * m : (r + 1) * m] = D
        for c in range(r):
            Gam[r * p : (r + 1) * p, c * m : (c + 1) * m] = C @ powers[r - 1 - c] @ F
    for c in range(steps):
        Psi[:, c * m : (c + 1) * m] = powers[steps - 1 - c] @ F
    return obs, Gam, Psi


def _chaos(L: np.ndarray, log_inv: float) -> float:
    """Gaussian-chaos bound on ||L g||^2 with g ~ N(0, I)."""
    sv = np.linalg.svd(L, compute_uv=False)
    return float(gaussian_chaos_bound(float(np.sum(sv**2)), float(sv[0] ** 2), log_inv))
