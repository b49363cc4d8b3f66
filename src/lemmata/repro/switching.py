"""Reproductions of arXiv 2404.08120 and arXiv 2603.14762 (switching control).

``switching-identification``: the least-squares tournament identifies the true
model among N candidates from a trajectory whose length needed for 95% success
does not grow with the state dimension (at a fixed normalised separation).
``supervisory-control``: the bandit-style supervisors reject destabilising
controllers before their output energy passes the Prop. 5-style bound, find
the matched controller in at most O(N log N) steps and keep a finite L2 gain.

Both use :mod:`lemmata.control` only (numpy, scipy, python-control).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = [
    "IdentificationConfig",
    "SupervisoryConfig",
    "supervisory_control",
    "switching_identification",
]

_P3 = "2404.08120"
_P4 = "2603.14762"


# ----------------------------------------------------------------------------
# switching-identification
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentificationConfig:
    """Identification error against trajectory length, per state dimension.

    Attributes
    ----------
    dims : tuple of int
        State dimensions d_x to compare; the check compares the last with the
        first.
    n_candidates : int
        N, the candidate models per set.
    n_inputs, n_outputs : int
        d_u and d_y.
    horizon : int
        Markov horizon h, the same for every dimension (the regression has
        h * d_u unknowns per output whatever d_x is).
    separation : float
        Normalised separation sigma_u * gamma / sigma_e held fixed for every
        candidate set, with gamma = min_{i<j} ||G_i - G_j||_op / 2 under the true
        controller and sigma_e^2 the squared H-infinity gain from (w, eta) to y
        of the true loop (P3's bound on sigma_e^2 + sigma_eta^2).
    noise_var : float
        w_var = eta_var.
    u_var : float
        Exploratory input variance sigma_u^2.
    spectral_radius : tuple of float
        Range of rho(A_i) for the random plants.
    n_sets, n_traj : int
        Candidate sets per dimension (each with a uniformly drawn truth under its
        matched controller) and trajectories per set.
    min_length, max_length, n_lengths : int
        Log-spaced grid of trajectory lengths tau.
    target : float
        Success rate that defines tau_95.
    growth_threshold : float
        Largest allowed tau_95(dims[-1]) / tau_95(dims[0]).
    sweep_n : tuple of int
        Candidate counts for the log-N check at dimension dims[0] (empty: skip).
    sweep_threshold : float
        Largest allowed tau_95(sweep_n[-1]) / tau_95(sweep_n[0]).
    delta : float
        delta of the Prop. 4 scale (1/snr) log(N^2/delta) used to report the
        constant c_95 = tau_95 / scale.
    """

    dims: tuple[int, ...] = (2, 8, 32)
    n_candidates: int = 8
    n_inputs: int = 1
    n_outputs: int = 2
    horizon: int = 8
    separation: float = 0.05
    noise_var: float = 1.0
    u_var: float = 1.0
    spectral_radius: tuple[float, ...] = (0.9, 1.2)
    n_sets: int = 20
    n_traj: int = 10
    min_length: int = 16
    max_length: int = 3000
    n_lengths: int = 36
    target: float = 0.95
    growth_threshold: float = 1.5
    sweep_n: tuple[int, ...] = (4, 16)
    sweep_threshold: float = 2.0
    delta: float = 0.05


def _normalised_set(cfg, d, N, rng):
    """A candidate set at dimension d with sigma_u gamma / sigma_e = cfg.separation
    under the true controller; returns (set, truth, info)."""
    from lemmata.control import (
        CandidateSet,
        ObserverController,
        random_plant_matrices,
        separation,
    )
    from lemmata.control._windows import LoopBounds

    plants = random_plant_matrices(
        N,
        d,
        cfg.n_inputs,
        cfg.n_outputs,
        rng=rng,
        spectral_radius=tuple(cfg.spectral_radius),
    )
    base = CandidateSet(plants, w_var=cfg.noise_var, eta_var=cfg.noise_var)
    star = int(rng.integers(N))
    bounds = LoopBounds(base)
    bounds.ensure(np.array([star]), star)
    sigma2 = float(bounds.peak[star, star])
    gamma = separation(base.markov_parameters(star, cfg.horizon))
    # Scaling B by s and R by s^2 keeps every closed loop and scales G by s.
    s = cfg.separation * math.sqrt(sigma2 / cfg.u_var) / gamma
    controllers = [
        ObserverController(c.A, s * c.B, c.C, c.K / s, c.L) for c in base.controllers
    ]
    scaled = CandidateSet(
        [(A, s * B, C) for A, B, C in plants],
        w_var=cfg.noise_var,
        eta_var=cfg.noise_var,
        R=s**2 * base.R,
        controllers=controllers,
    )
    return scaled, star, {"sigma2": sigma2}


def _success_curve(cfg, d, N, lengths, rng):
    """Pooled success rate of the tournament at each length, and sigma_e^2."""
    from lemmata.control import estimate_markov, simulate_closed_loop, tournament

    wins = np.zeros(len(lengths))
    sigma2 = []
    for _ in range(cfg.n_sets):
        cs, star, info = _normalised_set(cfg, d, N, rng)
        sigma2.append(info["sigma2"])
        y, ups = simulate_closed_loop(
            cs,
            star,
            star,
            int(lengths[-1]),
            rng=rng,
            u_var=cfg.u_var,
            n_trials=cfg.n_traj,
        )
        G_hat = estimate_markov(y, ups, cfg.horizon, lengths=lengths)
        G = cs.markov_parameters(star, cfg.horizon)
        wins += (tournament(G_hat, G) == star).sum(axis=1)
    return wins / (cfg.n_sets * cfg.n_traj), float(np.median(sigma2))


def _tau_target(lengths, rate, target):
    """Smallest length after which the success rate stays >= target, with
    log-linear interpolation from the previous grid point; nan if never."""
    ok = rate >= target
    if not ok[-1]:
        return float("nan")
    k = len(ok) - 1
    while k > 0 and ok[k - 1]:
        k -= 1
    if k == 0:
        return float(lengths[0])
    r0, r1 = rate[k - 1], rate[k]
    frac = (target - r0) / (r1 - r0) if r1 > r0 else 1.0
    return float(
        np.exp(np.log(lengths[k - 1]) + frac * np.log(lengths[k] / lengths[k - 1]))
    )


@experiment(
    name="switching-identification",
    paper=_P3,
    claim=(
        "Least squares on exploratory inputs plus pairwise comparisons along "
        "critical directions identifies the true model among N candidates with a "
        "sample complexity that is dimension-free and logarithmic in N."
    ),
    config=IdentificationConfig,
    quick=IdentificationConfig(),
    full=IdentificationConfig(
        n_sets=100, n_traj=20, n_lengths=48, max_length=5000, sweep_n=(4, 16, 64)
    ),
    seeds={"quick": 1, "full": 3},
    requires=("control",),
)
def switching_identification(cfg: IdentificationConfig, ctx: RunContext) -> Result:
    from matplotlib.figure import Figure

    lengths = np.unique(
        np.geomspace(cfg.min_length, cfg.max_length, cfg.n_lengths).astype(int)
    )
    lengths = lengths[lengths > cfg.horizon]
    result = Result()
    fig = Figure(figsize=(10, 4))
    ax_d, ax_n = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    snr = cfg.separation**2

    def record(ax, key, label, rate, N):
        tau = _tau_target(lengths, rate, cfg.target)
        scale = math.log(N**2 / cfg.delta) / snr
        result.metrics[f"tau95/{key}"] = tau
        result.metrics[f"prop4_c95/{key}"] = tau / scale
        result.series[f"error_rate/{key}"] = (1 - rate).tolist()
        line = ax.plot(lengths, np.maximum(1 - rate, 1e-3), label=label)[0]
        if math.isfinite(tau):
            ax.axvline(tau, color=line.get_color(), ls=":", lw=1)
        return tau

    taus = {}
    for d in cfg.dims:
        rate, sigma2 = _success_curve(cfg, d, cfg.n_candidates, lengths, ctx.rng)
        result.metrics[f"sigma_e2/median/d={d}"] = sigma2
        taus[d] = record(ax_d, f"d={d}", f"d_x = {d}", rate, cfg.n_candidates)
    result.series["lengths"] = lengths.astype(float).tolist()
    growth = taus[cfg.dims[-1]] / taus[cfg.dims[0]]
    result.metrics[f"tau95/growth_d{cfg.dims[0]}_to_d{cfg.dims[-1]}"] = growth
    result.checks.append(
        Check(
            f"tau_95 growth from d_x={cfg.dims[0]} to d_x={cfg.dims[-1]}",
            growth,
            cfg.growth_threshold,
            "<=",
        )
    )

    if cfg.sweep_n:
        taus_n = {}
        for N in cfg.sweep_n:
            rate, _ = _success_curve(cfg, cfg.dims[0], N, lengths, ctx.rng)
            taus_n[N] = record(ax_n, f"N={N}", f"N = {N}", rate, N)
        growth_n = taus_n[cfg.sweep_n[-1]] / taus_n[cfg.sweep_n[0]]
        result.metrics[f"tau95/growth_N{cfg.sweep_n[0]}_to_N{cfg.sweep_n[-1]}"] = (
            growth_n
        )
        result.checks.append(
            Check(
                f"tau_95 growth from N={cfg.sweep_n[0]} to N={cfg.sweep_n[-1]} "
                f"(d_x={cfg.dims[0]})",
                growth_n,
                cfg.sweep_threshold,
                "<=",
            )
        )

    for ax, title in (
        (ax_d, f"N = {cfg.n_candidates}"),
        (ax_n, f"d_x = {cfg.dims[0]}"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1 - cfg.target, color="grey", lw=0.8)
        ax.set_xlabel("trajectory length tau")
        ax.set_ylabel("identification error rate")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    result.figures["error_vs_length"] = fig
    return result


# ----------------------------------------------------------------------------
# supervisory-control
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SupervisoryConfig:
    """Online supervisors on random candidate sets of growing size.

    Attributes
    ----------
    ns : tuple of int
        Numbers of candidates N.
    n_states, n_inputs, n_outputs : int
        d_x, d_u, d_y.
    spectral_radius : tuple of float
        Range of rho(A_i); (0.9, 1.2) makes most mismatched controllers
        destabilising.
    noise_var : float
        w_var = eta_var.
    u_var : float
        Exploratory input variance.
    delta : float
        Failure probability of the supervisors.
    n_systems : int
        Candidate sets per N, each with a uniformly drawn true plant.
    n_steps : int
        Length of every run; the decided controller is deployed until then.
    l2_early : int
        Step at which the early L2-gain estimate is taken.
    p3_max_n : int
        Run Algorithm 2 of arXiv 2404.08120 for N up to this (0: never).
    p3_steps : int
        Step budget of Algorithm 2 runs.
    energy_factor : float
        Documented bound: a destabilising controller must be stopped before its
        history-free output energy exceeds energy_factor times its threshold
        (the factor 2 of Prop. 5 (ii)); checked in the supervisor runs and in
        the detection probe.
    probe_per_set : int
        Detection probe: per candidate set, up to this many destabilising and
        this many stabilising controllers are each applied alone (after
        probe_rest steps of the matched controller) with detect_instability.
    probe_rest, probe_steps : int
        Steps of the matched controller before a probe, and most probe steps.
    found_threshold : float
        Smallest allowed share of runs that deploy the matched controller.
    slope_threshold : float
        Largest allowed slope of log(mean decision steps) against
        log(N log N).
    l2_growth_threshold : float
        Largest allowed gamma_hat^2(n_steps) / gamma_hat^2(l2_early).
    """

    ns: tuple[int, ...] = (4, 8, 16, 32, 64)
    n_states: int = 3
    n_inputs: int = 1
    n_outputs: int = 2
    spectral_radius: tuple[float, ...] = (0.9, 1.2)
    noise_var: float = 1.0
    u_var: float = 1.0
    delta: float = 0.05
    n_systems: int = 4
    n_steps: int = 10_000
    l2_early: int = 1_000
    p3_max_n: int = 8
    p3_steps: int = 20_000
    energy_factor: float = 2.0
    probe_per_set: int = 4
    probe_rest: int = 50
    probe_steps: int = 300
    found_threshold: float = 0.95
    slope_threshold: float = 1.0
    l2_growth_threshold: float = 1.5


_VARIANTS = ("elimination", "optimistic")


def _run_all(cfg, cs, star, rng):
    """Every algorithm on one candidate set, each with its own noise stream."""
    from lemmata.control import (
        EstimatorSupervisor,
        SupervisoryController,
        SwitchedSystem,
        SwitchingStrategy,
    )

    algorithms = {
        v: (SupervisoryController(cs, variant=v, delta=cfg.delta), cfg.n_steps)
        for v in _VARIANTS
    }
    algorithms["estimator-baseline"] = (EstimatorSupervisor(cs), cfg.n_steps)
    if cs.n_candidates <= cfg.p3_max_n:
        algorithms["p3-algorithm2"] = (
            SwitchingStrategy(cs, delta=cfg.delta),
            cfg.p3_steps,
        )
    seeds = rng.spawn(len(algorithms))
    out = {}
    for (name, (alg, steps)), gen in zip(algorithms.items(), seeds, strict=True):
        system = SwitchedSystem(cs, star, u_var=cfg.u_var, rng=gen)
        out[name] = alg.run(system, steps)
    return out


def _fit_growth(ns, steps):
    """Slope of log steps on log(N log N), and c, c' of c N log N, c' N log^2 N."""
    ns, steps = np.asarray(ns, float), np.asarray(steps, float)
    x = ns * np.log(ns)
    slope = float(np.polyfit(np.log(x), np.log(steps), 1)[0])
    c = float(steps @ x / (x @ x))
    x2 = ns * np.log(ns) ** 2
    c2 = float(steps @ x2 / (x2 @ x2))
    return slope, c, c2


@experiment(
    name="supervisory-control",
    paper=_P4,
    claim=(
        "A bandit-style supervisor whose scores use observability to remove past "
        "states rejects destabilising controllers, finds the most suitable "
        "controller in O(N log N) steps and keeps a finite L2 gain."
    ),
    config=SupervisoryConfig,
    quick=SupervisoryConfig(),
    full=SupervisoryConfig(
        n_systems=20, n_steps=20_000, l2_early=2_000, p3_max_n=16, p3_steps=60_000
    ),
    seeds={"quick": 1, "full": 3},
    requires=("control",),
)
def supervisory_control(cfg: SupervisoryConfig, ctx: RunContext) -> Result:
    from lemmata.control import random_candidates

    records = []  # (N, name, result, destabilising flags, star, costs argmin)
    probes = []
    example = None
    for N in cfg.ns:
        for _ in range(cfg.n_systems):
            cs = random_candidates(
                N,
                cfg.n_states,
                cfg.n_inputs,
                cfg.n_outputs,
                rng=ctx.rng,
                spectral_radius=tuple(cfg.spectral_radius),
                w_var=cfg.noise_var,
                eta_var=cfg.noise_var,
            )
            star = int(ctx.rng.integers(N))
            des = cs.destabilizing(star)
            best = int(np.argmin(cs.stationary_cost(star)))
            runs = _run_all(cfg, cs, star, ctx.rng)
            for name, res in runs.items():
                records.append((N, name, res, des, star, best))
            if example is None and N >= 16:
                example = runs
            probes.extend(_probe(cfg, cs, star, ctx.rng))
    result = _summarise(cfg, records, example)
    _summarise_probes(cfg, probes, result)
    return result


def _probe(cfg, cs, star, rng):
    """Apply single controllers from rest; (destabilising?, rho, verdict)."""
    from lemmata.control import LoopBounds, SwitchedSystem, detect_instability

    radii = cs.spectral_radii[star]
    out, bounds = [], LoopBounds(cs)
    for flag in (True, False):
        pool = np.flatnonzero((radii >= 1) == flag)
        chosen = rng.permutation(pool)[: cfg.probe_per_set]
        for j in chosen:
            system = SwitchedSystem(cs, star, u_var=cfg.u_var, rng=rng)
            for _ in range(cfg.probe_rest):
                system.step(star)
            verdict = detect_instability(
                system, int(j), cfg.probe_steps, delta=cfg.delta, bounds=bounds
            )
            out.append((flag, float(radii[j]), verdict))
    return out


def _summarise_probes(cfg, probes, result) -> None:
    bad = [(rho, v) for flag, rho, v in probes if flag]
    good = [v for flag, _, v in probes if not flag]
    if bad:
        ratios = np.array([v.ratio for _, v in bad])
        result.metrics["probe/destabilisers"] = float(len(bad))
        result.metrics["probe/flagged_share"] = float(
            np.mean([v.flagged for _, v in bad])
        )
        result.metrics["probe/max_energy_ratio"] = float(ratios.max())
        result.metrics["probe/share_within_bound"] = float(
            np.mean(ratios <= cfg.energy_factor)
        )
        steps = [v.steps for _, v in bad if v.flagged]
        result.metrics["probe/median_steps_to_flag"] = (
            float(np.median(steps)) if (steps) else float("nan")
        )
        result.series["probe/rho"] = [rho for rho, _ in bad]
        result.series["probe/steps"] = [float(v.steps) for _, v in bad]
        result.series["probe/ratio"] = ratios.tolist()
        result.figures["probe_steps_vs_rho"] = _probe_figure(bad, cfg)
        result.checks.append(
            Check(
                "detection probe: destabilising controllers stopped before their "
                f"history-free output energy exceeds {cfg.energy_factor:g} x threshold "
                "(max ratio)",
                float(ratios.max()),
                cfg.energy_factor,
                "<=",
            )
        )
    if good:
        rate = float(np.mean([v.flagged for v in good]))
        result.metrics["probe/false_flag_rate"] = rate
        result.checks.append(
            Check(
                "detection probe: share of stabilising controllers flagged "
                "(Prop. 5 (i))",
                rate,
                cfg.delta,
                "<=",
            )
        )


def _summarise(cfg, records, example) -> Result:
    result = Result()
    names = sorted({r[1] for r in records})
    p4 = [r for r in records if r[1] in _VARIANTS]

    # Destabilisers: energy at rejection, never deployed.
    ratios = [
        res.energy_ratio[j]
        for _, _, res, des, _, _ in p4
        for j in res.energy_ratio
        if des[j]
    ]
    worst = max(ratios, default=0.0)
    result.metrics["destabilisers/max_energy_ratio"] = worst
    result.metrics["destabilisers/share_within_bound"] = (
        float(np.mean(np.array(ratios) <= cfg.energy_factor)) if ratios else 1.0
    )
    result.metrics["destabilisers/share_of_controllers"] = float(
        np.mean([des.mean() for _, _, _, des, _, _ in p4])
    )
    caught = [res.flagged[des].sum() / max(des.sum(), 1) for _, _, res, des, _, _ in p4]
    result.metrics["destabilisers/flagged_share"] = float(np.mean(caught))
    false_flags = [int((res.flagged & ~des).sum()) for _, _, res, des, _, _ in p4]
    result.metrics["destabilisers/false_flags"] = float(np.sum(false_flags))
    result.checks.append(
        Check(
            "destabilising controllers stopped before their history-free output "
            f"energy exceeds {cfg.energy_factor:g} x threshold (max ratio)",
            worst,
            cfg.energy_factor,
            "<=",
        )
    )
    deployed_bad = [
        res.chosen is None or bool(des[res.chosen]) for _, _, res, des, _, _ in p4
    ]
    result.checks.append(
        Check(
            "share of runs deploying a destabilising controller",
            float(np.mean(deployed_bad)),
            0.0,
            "<=",
        )
    )

    # Best controller found, and the steps it takes.
    for name in names:
        rows = [r for r in records if r[1] == name]
        found = [res.chosen == star for _, _, res, _, star, _ in rows]
        result.metrics[f"found/{name}"] = float(np.mean(found))
        for N in cfg.ns:
            sub = [r for r in rows if r[0] == N]
            if not sub:
                continue
            steps = [_steps(res, cfg, name) for _, _, res, *_ in sub]
            result.metrics[f"steps/{name}/N={N}"] = float(np.mean(steps))
            result.metrics[f"undecided/{name}/N={N}"] = float(
                np.mean([res.decision_step is None for _, _, res, *_ in sub])
            )
            result.metrics[f"diverged/{name}/N={N}"] = float(
                np.mean([res.diverged for _, _, res, *_ in sub])
            )
    result.metrics["matched_is_lqg_best"] = float(
        np.mean([star == best for *_, star, best in p4])
    )
    found_p4 = float(np.mean([res.chosen == star for _, _, res, _, star, _ in p4]))
    result.checks.append(
        Check(
            "share of supervisor runs that deploy the matched controller",
            found_p4,
            cfg.found_threshold,
            ">=",
        )
    )
    slopes = []
    for name in _VARIANTS:
        mean_steps = [result.metrics[f"steps/{name}/N={N}"] for N in cfg.ns]
        slope, c, c2 = _fit_growth(cfg.ns, mean_steps)
        result.metrics[f"growth/{name}/slope_vs_NlogN"] = slope
        result.metrics[f"growth/{name}/c_NlogN"] = c
        result.metrics[f"growth/{name}/c_Nlog2N"] = c2
        slopes.append(slope)
    result.checks.append(
        Check(
            "slope of log(decision steps) against log(N log N), worst variant",
            max(slopes),
            cfg.slope_threshold,
            "<=",
        )
    )

    # L2 gain.
    gains, growth = [], []
    for _, _, res, *_ in p4:
        early, late = res.l2_gain(cfg.l2_early), res.l2_gain()
        gains.append(late)
        growth.append((late / early) ** 2)
    result.metrics["l2/gain_max"] = float(np.max(gains))
    result.metrics["l2/gain_median"] = float(np.median(gains))
    result.metrics["l2/growth_max"] = float(np.max(growth))
    for name in names:
        g = [res.l2_gain() for _, n, res, *_ in records if n == name]
        result.metrics[f"l2/{name}/median"] = float(np.median(g))
    result.checks.append(
        Check(
            "largest L2-gain estimate over supervisor runs (finite)",
            float(np.max(gains)),
            float("inf"),
            "<",
        )
    )
    result.checks.append(
        Check(
            f"largest gamma_hat^2(T={cfg.n_steps}) / gamma_hat^2(T={cfg.l2_early})",
            float(np.max(growth)),
            cfg.l2_growth_threshold,
            "<=",
        )
    )

    result.figures["steps_vs_n"] = _steps_figure(cfg, result, names)
    if example is not None:
        result.figures["output_norm"] = _trace_figure(example)
    return result


def _steps(res, cfg, name) -> float:
    """Decision step; a run without a decision counts as its whole budget."""
    if res.decision_step is not None:
        return float(max(res.decision_step, 1))
    return float(cfg.p3_steps if name == "p3-algorithm2" else cfg.n_steps)


def _steps_figure(cfg, result, names):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    ns = np.asarray(cfg.ns, float)
    for name in names:
        pts = [
            (N, result.metrics[f"steps/{name}/N={N}"])
            for N in cfg.ns
            if f"steps/{name}/N={N}" in result.metrics
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=name)
    c = max(result.metrics[f"growth/{v}/c_NlogN"] for v in _VARIANTS)
    ax.plot(ns, c * ns * np.log(ns), "k--", lw=1, label="c N log N (fit)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of candidates N")
    ax.set_ylabel("steps to decide (mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _trace_figure(runs):
    from matplotlib.figure import Figure

    shown = [
        n for n in ("elimination", "optimistic", "estimator-baseline") if n in runs
    ]
    fig = Figure(figsize=(8, 2.4 * len(shown)))
    for k, name in enumerate(shown):
        res = runs[name]
        ax = fig.add_subplot(len(shown), 1, k + 1)
        horizon = min(len(res.y), max(400, 2 * (res.decision_step or 0)))
        norm = np.linalg.norm(res.y[:horizon], axis=1)
        ax.semilogy(np.maximum(norm, 1e-6), lw=0.8)
        for t in res.switch_times:
            if t < horizon:
                flagged = bool(res.flagged[res.controller[t]])
                ax.axvline(t, color="red" if flagged else "grey", lw=0.6, alpha=0.7)
        if res.decision_step is not None and res.decision_step < horizon:
            ax.axvline(res.decision_step, color="green", lw=1.5)
        ax.set_ylabel("||y_t||")
        ax.set_title(
            f"{name}: switches (grey), flagged (red), decision (green)", fontsize=9
        )
    fig.axes[-1].set_xlabel("step t")
    fig.tight_layout()
    return fig


def _probe_figure(bad, cfg):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rho = np.array([r for r, _ in bad])
    steps = np.array([v.steps for _, v in bad])
    ratio = np.array([v.ratio for _, v in bad])
    flagged = np.array([v.flagged for _, v in bad])
    ax.scatter(rho[flagged], steps[flagged], s=12, label="flagged")
    ax.scatter(
        rho[~flagged],
        steps[~flagged],
        s=12,
        marker="x",
        label=f"not flagged in {cfg.probe_steps} steps",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("spectral radius of the true loop")
    ax.set_ylabel("steps applied")
    ax.legend(fontsize=8)
    ax2.scatter(rho, np.maximum(ratio, 1e-3), s=12)
    ax2.axhline(cfg.energy_factor, color="red", lw=1, label="documented bound")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("spectral radius of the true loop")
    ax2.set_ylabel("energy / threshold at the stop")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
