"""Candidate sets, controllers and closed loops, against python-control."""

import control as ct
import numpy as np
import pytest

from lemmata.control import (
    CandidateSet,
    Noise,
    SwitchedSystem,
    lqg_controller,
    random_candidates,
    simulate_closed_loop,
)


@pytest.fixture
def cs(rng):
    return random_candidates(3, 3, 1, 2, rng=rng, w_var=0.3, eta_var=0.2)


def _interconnect(cs, i, j):
    """Plant i under controller j, wired with python-control's interconnect."""
    d_x, d_u, d_y = cs.n_states, cs.n_inputs, cs.n_outputs
    w = [f"w[{k}]" for k in range(d_x)]
    plant = ct.ss(
        cs.A[i],
        np.hstack([cs.B[i], np.eye(d_x)]),
        cs.C[i],
        np.zeros((d_y, d_u + d_x)),
        dt=1,
        inputs=["u", *w],
        outputs=[f"ym[{k}]" for k in range(d_y)],
        name="plant",
    )
    c = cs.controllers[j].as_statespace()
    ctrl = ct.ss(
        c.A,
        c.B,
        c.C,
        c.D,
        dt=1,
        inputs=[*(f"y[{k}]" for k in range(d_y)), "v"],
        outputs=["u"],
        name="ctrl",
    )
    noise = ct.summing_junction(inputs=["ym", "eta"], output="y", dimension=d_y, dt=1)
    return ct.interconnect(
        [plant, ctrl, noise],
        inputs=["v", *w, *(f"eta[{k}]" for k in range(d_y))],
        outputs=[f"y[{k}]" for k in range(d_y)],
    )


def test_lqg_gains_match_python_control(cs):
    for i in range(cs.n_candidates):
        K, _, _ = ct.dlqr(cs.A[i], cs.B[i], cs.Q, cs.R)
        np.testing.assert_allclose(cs.K[i], K, rtol=1e-7, atol=1e-9)
        W, V = cs.w_var * np.eye(cs.n_states), cs.eta_var * np.eye(cs.n_outputs)
        K_dual, _, _ = ct.dlqr(cs.A[i].T, cs.C[i].T, W, V)
        np.testing.assert_allclose(cs.L[i], K_dual.T, rtol=1e-7, atol=1e-9)


def test_closed_loops_match_interconnection(cs):
    T = np.arange(8)
    for i in range(cs.n_candidates):
        for j in range(cs.n_candidates):
            ref = ct.impulse_response(_interconnect(cs, i, j), T=T).outputs
            mine = ct.impulse_response(cs.closed_loop(i, j).as_statespace(), T=T)
            np.testing.assert_allclose(mine.outputs, ref, atol=1e-9)
            poles = ct.poles(cs.closed_loop(i, j).as_statespace())
            assert cs.spectral_radii[i, j] == pytest.approx(np.abs(poles).max())


def test_markov_parameters_are_the_impulse_response(cs):
    h = 5
    for j in range(cs.n_candidates):
        G = cs.markov_parameters(j, h)
        for i in range(cs.n_candidates):
            loop = cs.closed_loop(i, j)
            sys_u = ct.ss(loop.A, loop.B_u, loop.C, 0, dt=1)
            resp = ct.impulse_response(sys_u, T=np.arange(h + 1), squeeze=False)
            # outputs[:, :, t] at t = k + 1 is C A^k B, the k-th block of G.
            blocks = np.concatenate([resp.outputs[:, :, k + 1] for k in range(h)], 1)
            np.testing.assert_allclose(G[i], blocks, atol=1e-10)


def test_matched_controller_minimises_lqg_cost(cs):
    for star in range(cs.n_candidates):
        costs = cs.stationary_cost(star)
        assert np.argmin(costs) == star
        loop = cs.closed_loop(star, star)
        F, _ = loop.noise_channels(w_var=cs.w_var, eta_var=cs.eta_var)
        X = ct.dlyap(loop.A, F @ F.T)
        d_x = cs.n_states
        u_cov = cs.K[star] @ X[d_x:, d_x:] @ cs.K[star].T
        ref = np.trace(cs.Q @ X[:d_x, :d_x]) + np.trace(cs.R @ u_cov)
        assert costs[star] == pytest.approx(ref, rel=1e-8)


def _loop_reference(cs, star, j, noise, T):
    """Plant and controller equations written out, one step at a time."""
    x, xc, ys = noise.x1.copy(), np.zeros(cs.n_states), []
    for t in range(T):
        y = cs.C[star] @ x + noise.eta[t]
        u = noise.upsilon[t] - cs.K[j] @ xc
        xc = cs.A[j] @ xc + cs.B[j] @ u + cs.L[j] @ (y - cs.C[j] @ xc)
        x = cs.A[star] @ x + cs.B[star] @ u + noise.w[t]
        ys.append(y)
    return np.array(ys)


def test_simulators_agree_with_reference_loop(cs, seed):
    T, star, j = 60, 0, 0
    rng = np.random.default_rng(seed)
    y_batch, ups = simulate_closed_loop(cs, star, j, T, rng=rng, u_var=0.5)
    # Same streams, same order: x1, w, eta, upsilon.
    g = np.random.default_rng(seed).spawn(4)
    noise = Noise(
        x1=g[0].standard_normal(cs.n_states),
        w=np.sqrt(cs.w_var) * g[1].standard_normal((T, cs.n_states)),
        eta=np.sqrt(cs.eta_var) * g[2].standard_normal((T, cs.n_outputs)),
        upsilon=np.sqrt(0.5) * g[3].standard_normal((T, cs.n_inputs)),
    )
    np.testing.assert_allclose(ups[0], noise.upsilon)
    ref = _loop_reference(cs, star, j, noise, T)
    np.testing.assert_allclose(y_batch[0], ref, rtol=1e-9, atol=1e-9)
    sim = SwitchedSystem(cs, star, u_var=0.5, noise=noise)
    ys = [sim.step(j)[0] for _ in range(T)]
    np.testing.assert_allclose(np.array(ys), ref, rtol=1e-12, atol=1e-12)
    # Drawn in blocks from the same generator, the streams coincide too.
    sim = SwitchedSystem(cs, star, u_var=0.5, rng=np.random.default_rng(seed), block=T)
    ys = [sim.step(j)[0] for _ in range(T)]
    np.testing.assert_allclose(np.array(ys), ref, rtol=1e-12, atol=1e-12)


def test_divergence_is_an_explicit_verdict(rng):
    while True:
        cs = random_candidates(3, 3, 1, 2, rng=rng)
        bad = np.argwhere(cs.spectral_radii > 1.2)
        if bad.size:
            break
    star, j = bad[0]
    sim = SwitchedSystem(cs, star, rng=rng, state_limit=1e6)
    while not sim.diverged:
        y = sim.step(j)[0]
        assert np.all(np.isfinite(y))
    with pytest.raises(RuntimeError, match="diverged"):
        sim.step(j)


def test_statespace_candidates_and_repr(rng):
    systems = [
        ct.ss(np.diag([0.5, 0.2 + k / 10]), [[1.0], [1.0]], [[1.0, 0.5]], 0, dt=1)
        for k in range(3)
    ]
    cs = CandidateSet(systems, w_var=0.0, eta_var=0.5)
    assert (cs.n_candidates, cs.n_states, cs.n_inputs, cs.n_outputs) == (3, 2, 1, 1)
    assert "n_candidates=3" in repr(cs)
    assert cs.instability_margin() == np.inf or cs.instability_margin() >= 0
    margins = cs.observability_margins()
    assert margins.shape == (3, 3) and np.all(margins >= 0)


def test_custom_controllers_are_used(cs):
    ctrl = [
        lqg_controller(
            cs.A[i],
            cs.B[i],
            cs.C[i],
            Q=10 * cs.Q,
            R=cs.R,
            W=np.eye(cs.n_states),
            V=np.eye(cs.n_outputs),
        )
        for i in range(cs.n_candidates)
    ]
    other = CandidateSet(
        [(cs.A[i], cs.B[i], cs.C[i]) for i in range(cs.n_candidates)],
        controllers=ctrl,
    )
    np.testing.assert_allclose(other.K, np.stack([c.K for c in ctrl]))
