r"""Candidate models, their matched controllers and the N x N closed loops.

A candidate set holds N partially observed discrete-time plants

.. math::

    x_{t+1} = A_i x_t + B_i u_t + w_t, \qquad y_t = C_i x_t + \eta_t,
    \qquad w_t \sim \mathcal N(0, \sigma_w^2 I),\
    \eta_t \sim \mathcal N(0, \sigma_\eta^2 I),

and one observer-based controller per plant. Controller :math:`j` applied to
plant :math:`i` gives the closed loop :math:`(\tilde C_i, \tilde A_i^{(j)},
\tilde B_i^{(j)})` of arXiv 2404.08120; all :math:`N^2` loops are precomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import control as ct
import numpy as np
import scipy.linalg as sla

from lemmata.control._validate import (
    check_index,
    check_int,
    check_matrix,
    check_nonnegative,
)

__all__ = [
    "CandidateSet",
    "ClosedLoop",
    "ObserverController",
    "lqg_controller",
]

# Floor for the observer design weights when a noise variance is 0, so that the
# dual Riccati equation keeps a unique stabilising solution.
_DESIGN_FLOOR = 1e-9


@dataclass(frozen=True)
class ObserverController:
    r"""Certainty-equivalent state feedback with a one-step-ahead observer.

    .. math::

        u_t = -K \check x_t + \upsilon_t, \qquad
        \check x_{t+1} = A \check x_t + B u_t + L (y_t - C \check x_t)

    :math:`\upsilon_t` is the exploratory input added on top of the feedback;
    the observer is fed the total applied input :math:`u_t`.

    Attributes
    ----------
    A, B, C : ndarray
        The model the observer runs, shapes ``(d_x, d_x)``, ``(d_x, d_u)``,
        ``(d_y, d_x)``.
    K : ndarray of shape (d_u, d_x)
        State-feedback gain.
    L : ndarray of shape (d_x, d_y)
        Observer (predictor) gain.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    K: np.ndarray
    L: np.ndarray

    def as_statespace(self) -> ct.StateSpace:
        r"""The controller as a python-control system, :math:`(y, \upsilon) \to u`."""
        d_u, d_y = self.K.shape[0], self.C.shape[0]
        A_c = self.A - self.B @ self.K - self.L @ self.C
        B_c = np.hstack([self.L, self.B])
        D_c = np.hstack([np.zeros((d_u, d_y)), np.eye(d_u)])
        return ct.ss(A_c, B_c, -self.K, D_c, dt=1)


def lqg_controller(
    A: np.ndarray,
    B: np.ndarray,
    C: np.ndarray,
    *,
    Q: np.ndarray,
    R: np.ndarray,
    W: np.ndarray,
    V: np.ndarray,
) -> ObserverController:
    r"""LQR gain plus steady-state Kalman predictor gain for one model.

    .. math::

        K = (R + B^\top S B)^{-1} B^\top S A, \qquad
        S = A^\top S A - A^\top S B (R + B^\top S B)^{-1} B^\top S A + Q,

    and :math:`L = A \Sigma C^\top (C \Sigma C^\top + V)^{-1}` with
    :math:`\Sigma` the solution of the dual Riccati equation in
    :math:`(A^\top, C^\top, W, V)`. Solved with :func:`scipy.linalg.solve_discrete_are`
    (the tests cross-check against ``control.dlqr``).

    Parameters
    ----------
    A, B, C : ndarray
        Model matrices.
    Q, R : ndarray
        State and input weights of the LQR cost.
    W, V : ndarray
        Process and measurement noise covariances used for the observer.

    Raises
    ------
    ValueError
        If either Riccati equation has no stabilising solution.
    """
    try:
        S = sla.solve_discrete_are(A, B, Q, R)
        Sigma = sla.solve_discrete_are(A.T, C.T, W, V)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ValueError(
            "the model is not stabilisable/detectable: the Riccati equation has "
            f"no stabilising solution ({exc})"
        ) from None
    K = np.linalg.solve(R + B.T @ S @ B, B.T @ S @ A)
    L = np.linalg.solve(C @ Sigma @ C.T + V, C @ Sigma @ A.T).T
    return ObserverController(A=A, B=B, C=C, K=K, L=L)


@dataclass(frozen=True)
class ClosedLoop:
    r"""Plant :math:`i` under controller :math:`j`, state :math:`\xi = (x, \check x)`.

    .. math::

        \xi_{t+1} = \tilde A \xi_t + \tilde B \upsilon_t + B_w w_t + B_\eta \eta_t,
        \qquad y_t = \tilde C \xi_t + \eta_t,

    with :math:`\tilde A = \begin{bmatrix} A_i & -B_i K_j \\ L_j C_i &
    A_j - B_j K_j - L_j C_j \end{bmatrix}`, :math:`\tilde B = [B_i; B_j]`,
    :math:`B_w = [I; 0]`, :math:`B_\eta = [0; L_j]`, :math:`\tilde C = [C_i, 0]`.

    Attributes
    ----------
    A, B_u, B_w, B_eta, C : ndarray
        The matrices above, with ``n = 2 d_x`` states.
    """

    A: np.ndarray
    B_u: np.ndarray
    B_w: np.ndarray
    B_eta: np.ndarray
    C: np.ndarray

    @property
    def spectral_radius(self) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(self.A))))

    def noise_channels(
        self, *, w_var: float, eta_var: float, u_var: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        r"""``(F, D)`` for unit-variance noise,
        :math:`\xi_{t+1} = \tilde A\xi_t + F\nu_t`,
        :math:`y_t = \tilde C \xi_t + D \nu_t`, :math:`\nu_t \sim \mathcal N(0, I)`.

        :math:`\nu_t` stacks :math:`(w_t, \eta_t)` and, when ``u_var > 0``, the
        exploratory input :math:`\upsilon_t`, each scaled by its standard deviation.
        """
        sw, se = np.sqrt(w_var), np.sqrt(eta_var)
        d_y = self.C.shape[0]
        F = [sw * self.B_w, se * self.B_eta]
        D = [np.zeros((d_y, self.B_w.shape[1])), se * np.eye(d_y)]
        if u_var > 0:
            F.append(np.sqrt(u_var) * self.B_u)
            D.append(np.zeros((d_y, self.B_u.shape[1])))
        return np.hstack(F), np.hstack(D)

    def as_statespace(self) -> ct.StateSpace:
        r"""python-control system, inputs :math:`(\upsilon, w, \eta)`, output y."""
        d_y = self.C.shape[0]
        B = np.hstack([self.B_u, self.B_w, self.B_eta])
        D = np.hstack(
            [np.zeros((d_y, self.B_u.shape[1] + self.B_w.shape[1])), np.eye(d_y)]
        )
        return ct.ss(self.A, B, self.C, D, dt=1)


def _as_plant(k: int, system: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, C) of ``systems[k]``, a discrete StateSpace or an (A, B, C) tuple."""
    name = f"systems[{k}]"
    if isinstance(system, ct.StateSpace):
        if not system.isdtime():
            raise ValueError(f"{name} must be discrete-time; got dt={system.dt!r}")
        if system.dt is not True and system.dt != 1:
            raise ValueError(f"{name} must have dt=1; got dt={system.dt!r}")
        if np.any(np.asarray(system.D) != 0):
            raise ValueError(f"{name} must be strictly proper (D = 0); got D != 0")
        return np.asarray(system.A), np.asarray(system.B), np.asarray(system.C)
    if isinstance(system, tuple | list) and len(system) == 3:
        return system  # type: ignore[return-value]
    raise TypeError(
        f"{name} must be a control.StateSpace or an (A, B, C) tuple; "
        f"got {type(system).__name__}"
    )


def _check_plants(
    systems: Sequence[object],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(systems, ct.StateSpace) or not isinstance(systems, Sequence):
        raise TypeError(
            "systems must be a sequence of candidate models; "
            f"got {type(systems).__name__}"
        )
    if len(systems) < 2:
        raise ValueError(
            f"systems must hold at least 2 candidate models; got {len(systems)}"
        )
    A0, B0, C0 = _as_plant(0, systems[0])
    A0 = check_matrix("systems[0].A", A0, square=True)
    d_x = A0.shape[0]
    B0 = check_matrix("systems[0].B", B0, rows=d_x, against="systems[0].A")
    C0 = check_matrix("systems[0].C", C0, cols=d_x, against="systems[0].A")
    As, Bs, Cs = [A0], [B0], [C0]
    for k in range(1, len(systems)):
        A, B, C = _as_plant(k, systems[k])
        ref = "systems[0]"
        As.append(check_matrix(f"systems[{k}].A", A, rows=d_x, cols=d_x, against=ref))
        Bs.append(
            check_matrix(f"systems[{k}].B", B, rows=d_x, cols=B0.shape[1], against=ref)
        )
        Cs.append(
            check_matrix(f"systems[{k}].C", C, rows=C0.shape[0], cols=d_x, against=ref)
        )
    A, B, C = np.stack(As), np.stack(Bs), np.stack(Cs)
    for k in range(1, len(systems)):
        for m in range(k):
            if (
                np.array_equal(A[k], A[m])
                and np.array_equal(B[k], B[m])
                and np.array_equal(C[k], C[m])
            ):
                raise ValueError(
                    f"systems[{k}] duplicates systems[{m}]; candidates must be "
                    "distinct (their separation gamma would be 0)"
                )
    return A, B, C


class CandidateSet:
    r"""N candidate plants with noise levels and one matched controller each.

    .. math::

        x_{t+1} = A_i x_t + B_i u_t + w_t, \quad y_t = C_i x_t + \eta_t, \quad
        w_t \sim \mathcal N(0, \sigma_w^2 I), \
        \eta_t \sim \mathcal N(0, \sigma_\eta^2 I),
        \ x_1 \sim \mathcal N(0, I).

    :math:`(A_i, B_i, C_i)` is ``systems[i]``, :math:`\sigma_w^2` is ``w_var``
    and :math:`\sigma_\eta^2` is ``eta_var``. Controller :math:`j` is the LQG
    controller of plant :math:`j` (see :func:`lqg_controller`): LQR gain with
    weights ``(Q, R)`` and Kalman predictor gain with ``(W, V)``, by default the
    true noise covariances, unless ``controllers`` supplies other gains.

    Parameters
    ----------
    systems : sequence of control.StateSpace or (A, B, C) tuples
        At least 2 distinct plants with ``dt=1``, ``D=0`` and common shapes
        ``A (d_x, d_x)``, ``B (d_x, d_u)``, ``C (d_y, d_x)``.
    w_var, eta_var : float, default=1.0
        Process and measurement noise variances; must be >= 0.
    Q : ndarray of shape (d_x, d_x), optional
        LQR state weight, default identity.
    R : ndarray of shape (d_u, d_u), optional
        LQR input weight, default identity.
    W : ndarray of shape (d_x, d_x), optional
        Process noise covariance assumed by the observer design, default
        :math:`\sigma_w^2 I`.
    V : ndarray of shape (d_y, d_y), optional
        Measurement noise covariance assumed by the observer design, default
        :math:`\sigma_\eta^2 I`.
    controllers : sequence of ObserverController, optional
        One controller per plant, replacing the LQG design.

    Raises
    ------
    ValueError
        On mismatched shapes (naming the matrix and both shapes), fewer than two
        or duplicate candidates, negative variances, non-finite matrices, or a
        matched controller that does not stabilise its own plant.

    Notes
    -----
    The observer-based controller is the spec's recommended reading of the
    multi-controller :math:`K(p_t; \check x_t, y_t)` of [1]; [1] leaves the
    controller class open. Because the observer of controller :math:`j` runs
    model :math:`j` and is fed the applied input, :math:`\tilde B` is
    :math:`[B_i; B_j]`, which depends on :math:`j` as well as :math:`i`
    ([1] states that :math:`\tilde B` depends on plant :math:`i` only, for its
    general controller class). When a noise variance is 0 the observer design
    weight is floored at 1e-9 so that the dual Riccati equation stays solvable.

    References
    ----------
    .. [1] Sun, Jadbabaie. "A least-square method for non-asymptotic
       identification in linear switching control." arXiv:2404.08120.
    """

    def __init__(
        self,
        systems: Sequence[object],
        *,
        w_var: float = 1.0,
        eta_var: float = 1.0,
        Q: np.ndarray | None = None,
        R: np.ndarray | None = None,
        W: np.ndarray | None = None,
        V: np.ndarray | None = None,
        controllers: Sequence[ObserverController] | None = None,
    ) -> None:
        self.A, self.B, self.C = _check_plants(systems)
        self.w_var = check_nonnegative("w_var", w_var)
        self.eta_var = check_nonnegative("eta_var", eta_var)
        N, d_x, d_u = self.B.shape
        d_y = self.C.shape[1]
        self.Q = (
            np.eye(d_x)
            if Q is None
            else check_matrix("Q", Q, rows=d_x, cols=d_x, against="A")
        )
        self.R = (
            np.eye(d_u)
            if R is None
            else check_matrix("R", R, rows=d_u, cols=d_u, against="B")
        )
        self.systems = tuple(
            ct.ss(self.A[i], self.B[i], self.C[i], np.zeros((d_y, d_u)), dt=1)
            for i in range(N)
        )
        W = (
            max(self.w_var, _DESIGN_FLOOR) * np.eye(d_x)
            if W is None
            else (check_matrix("W", W, rows=d_x, cols=d_x, against="A"))
        )
        V = (
            max(self.eta_var, _DESIGN_FLOOR) * np.eye(d_y)
            if V is None
            else (check_matrix("V", V, rows=d_y, cols=d_y, against="C"))
        )
        if controllers is None:
            controllers = []
            for i in range(N):
                try:
                    controllers.append(
                        lqg_controller(
                            self.A[i],
                            self.B[i],
                            self.C[i],
                            Q=self.Q,
                            R=self.R,
                            W=W,
                            V=V,
                        )
                    )
                except ValueError as exc:
                    raise ValueError(f"systems[{i}]: {exc}") from None
        self.controllers = tuple(self._check_controllers(controllers))
        self.K = np.stack([c.K for c in self.controllers])
        self.L = np.stack([c.L for c in self.controllers])
        radii = self.spectral_radii
        for i in range(N):
            if radii[i, i] >= 1:
                raise ValueError(
                    f"controller {i} must stabilise its own model {i}; got closed-loop "
                    f"spectral radius {radii[i, i]:.4g}"
                )

    def _check_controllers(self, controllers: Sequence[object]) -> list:
        N, d_x, d_u = self.B.shape
        d_y = self.C.shape[1]
        if len(controllers) != N:
            raise ValueError(
                f"controllers must hold one controller per model ({N}); "
                f"got {len(controllers)}"
            )
        out = []
        for j, c in enumerate(controllers):
            if not isinstance(c, ObserverController):
                raise TypeError(
                    f"controllers[{j}] must be an ObserverController; "
                    f"got {type(c).__name__}"
                )
            out.append(
                ObserverController(
                    A=check_matrix(
                        f"controllers[{j}].A",
                        c.A,
                        rows=d_x,
                        cols=d_x,
                        against="systems[0].A",
                    ),
                    B=check_matrix(
                        f"controllers[{j}].B",
                        c.B,
                        rows=d_x,
                        cols=d_u,
                        against="systems[0].B",
                    ),
                    C=check_matrix(
                        f"controllers[{j}].C",
                        c.C,
                        rows=d_y,
                        cols=d_x,
                        against="systems[0].C",
                    ),
                    K=check_matrix(
                        f"controllers[{j}].K",
                        c.K,
                        rows=d_u,
                        cols=d_x,
                        against="systems[0].B.T",
                    ),
                    L=check_matrix(
                        f"controllers[{j}].L",
                        c.L,
                        rows=d_x,
                        cols=d_y,
                        against="systems[0].C.T",
                    ),
                )
            )
        return out

    # ------------------------------------------------------------------ sizes
    @property
    def n_candidates(self) -> int:
        return self.A.shape[0]

    @property
    def n_states(self) -> int:
        return self.A.shape[1]

    @property
    def n_inputs(self) -> int:
        return self.B.shape[2]

    @property
    def n_outputs(self) -> int:
        return self.C.shape[1]

    def __len__(self) -> int:
        return self.n_candidates

    def __repr__(self) -> str:
        return (
            f"CandidateSet(n_candidates={self.n_candidates}, n_states={self.n_states}, "
            f"n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
            f"w_var={self.w_var}, eta_var={self.eta_var})"
        )

    # ------------------------------------------------------------ closed loops
    @cached_property
    def _loops(self) -> dict[str, np.ndarray]:
        """All N x N closed-loop matrices, indexed [plant i, controller j]."""
        N, d_x, d_u = self.B.shape
        d_y = self.C.shape[1]
        A, B, C, K, L = self.A, self.B, self.C, self.K, self.L
        Ac = np.stack([c.A for c in self.controllers])
        Bc = np.stack([c.B for c in self.controllers])
        Cc = np.stack([c.C for c in self.controllers])
        n = 2 * d_x
        Acl = np.zeros((N, N, n, n))
        Acl[:, :, :d_x, :d_x] = A[:, None]
        Acl[:, :, :d_x, d_x:] = -np.einsum("iab,jbc->ijac", B, K)
        Acl[:, :, d_x:, :d_x] = np.einsum("jab,ibc->ijac", L, C)
        Acl[:, :, d_x:, d_x:] = (Ac - Bc @ K - L @ Cc)[None]
        Bu = np.zeros((N, N, n, d_u))
        Bu[:, :, :d_x] = B[:, None]
        Bu[:, :, d_x:] = Bc[None]
        Beta = np.zeros((N, n, d_y))
        Beta[:, d_x:] = L
        Ccl = np.zeros((N, d_y, n))
        Ccl[:, :, :d_x] = C
        return {"A": Acl, "B_u": Bu, "B_eta": Beta, "C": Ccl}

    @property
    def closed_loop_A(self) -> np.ndarray:
        r""":math:`\tilde A_i^{(j)}` for all pairs, shape ``(N, N, 2 d_x, 2 d_x)``."""
        return self._loops["A"]

    @property
    def closed_loop_B(self) -> np.ndarray:
        r""":math:`\tilde B_i^{(j)}` for all pairs, shape ``(N, N, 2 d_x, d_u)``."""
        return self._loops["B_u"]

    @property
    def closed_loop_C(self) -> np.ndarray:
        r""":math:`\tilde C_i`, shape ``(N, d_y, 2 d_x)``."""
        return self._loops["C"]

    def closed_loop(self, i: int, j: int) -> ClosedLoop:
        """Plant ``i`` under controller ``j``."""
        i = check_index("i", i, self.n_candidates)
        j = check_index("j", j, self.n_candidates)
        d_x = self.n_states
        B_w = np.vstack([np.eye(d_x), np.zeros((d_x, d_x))])
        return ClosedLoop(
            A=self._loops["A"][i, j],
            B_u=self._loops["B_u"][i, j],
            B_w=B_w,
            B_eta=self._loops["B_eta"][j],
            C=self._loops["C"][i],
        )

    @cached_property
    def spectral_radii(self) -> np.ndarray:
        r""":math:`\rho(\tilde A_i^{(j)})`, shape ``(N, N)``, [plant, controller]."""
        return np.max(np.abs(np.linalg.eigvals(self.closed_loop_A)), axis=-1)

    def destabilizing(self, true_index: int) -> np.ndarray:
        """Flags of the controllers that destabilise plant ``true_index``."""
        i = check_index("true_index", true_index, self.n_candidates)
        return self.spectral_radii[i] >= 1.0

    def instability_margin(self) -> float:
        r""":math:`\varepsilon_a`: min of :math:`\rho - 1` over the unstable loops
        (Assumption 2 of [1]); ``inf`` when every loop is stable."""
        radii = self.spectral_radii
        unstable = radii[radii >= 1.0]
        return float(unstable.min() - 1.0) if unstable.size else float("inf")

    def observability_margins(self) -> np.ndarray:
        r""":math:`\varepsilon_c` per loop: :math:`\min_q \|\tilde C q\| / \|q\|` over
        the eigenvectors :math:`q` of :math:`\tilde A_i^{(j)}` (Assumption 3 of
        [1]). Shape ``(N, N)``.

        A loop whose observability matrix is numerically rank-deficient
        (:math:`\sigma_{\min}/\sigma_{\max} < 10^{-10}`) gets 0, so that a
        Jordan block, whose eigenvectors do not span the space, cannot hide an
        unobservable direction.
        """
        Acl, Ccl = self.closed_loop_A, self.closed_loop_C
        N = Acl.shape[0]
        _, vecs = np.linalg.eig(Acl)
        vecs = vecs / np.linalg.norm(vecs, axis=-2, keepdims=True)
        seen = np.linalg.norm(np.einsum("iab,ijbc->ijac", Ccl, vecs), axis=-2)
        margins = seen.min(axis=-1)
        for i in range(N):
            for j in range(N):
                obs = np.asarray(ct.obsv(Acl[i, j], Ccl[i]))
                sv = np.linalg.svd(obs, compute_uv=False)
                if not sv[-1] > 1e-10 * sv[0]:
                    margins[i, j] = 0.0
        return margins

    # --------------------------------------------------------------- Markov
    def markov_parameters(self, controller: int, h: int) -> np.ndarray:
        r"""Markov matrices :math:`G_i^{(j)}` of every plant under controller ``j``.

        .. math::

            G_i^{(j)} = [\tilde C_i \tilde B,\ \tilde C_i \tilde A \tilde B,\ \dots,\
            \tilde C_i \tilde A^{h-1} \tilde B], \qquad \tilde A = \tilde A_i^{(j)},
            \ \tilde B = \tilde B_i^{(j)},

        the map from :math:`z_t = (\upsilon_{t-1}, \dots, \upsilon_{t-h})` to the
        mean of :math:`y_t`. Returns shape ``(N, d_y, h d_u)``.
        """
        j = check_index("controller", controller, self.n_candidates)
        h = check_int("h", h, 1)
        Acl, Ccl = self.closed_loop_A[:, j], self.closed_loop_C
        X = self.closed_loop_B[:, j]
        blocks = []
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(h):
                blocks.append(Ccl @ X)
                X = Acl @ X
        G = np.concatenate(blocks, axis=-1)
        if not np.all(np.isfinite(G)):
            raise ValueError(
                f"h={h} is too long: the Markov parameters of an unstable loop "
                "under this controller overflow"
            )
        return G

    # ------------------------------------------------------------- LQG cost
    def stationary_cost(self, true_index: int) -> np.ndarray:
        r"""Average cost :math:`\lim \mathbb E[x_t^\top Q x_t + u_t^\top R u_t]` of each
        controller on plant ``true_index`` without exploration; ``inf`` where the
        loop is unstable. Shape ``(N,)``. The matched controller minimises it
        (LQG optimality), which is why it is the "best" controller."""
        i = check_index("true_index", true_index, self.n_candidates)
        d_x = self.n_states
        costs = np.full(self.n_candidates, np.inf)
        for j in range(self.n_candidates):
            if self.spectral_radii[i, j] >= 1:
                continue
            loop = self.closed_loop(i, j)
            F, _ = loop.noise_channels(w_var=self.w_var, eta_var=self.eta_var)
            X = sla.solve_discrete_lyapunov(loop.A, F @ F.T)
            weight = np.zeros((2 * d_x, 2 * d_x))
            weight[:d_x, :d_x] = self.Q
            weight[d_x:, d_x:] = self.K[j].T @ self.R @ self.K[j]
            costs[j] = float(np.trace(weight @ X))
        return costs
