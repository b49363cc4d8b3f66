"""Reproductions of arXiv 1905.12776 (smoothed online convex optimisation).

``soco-competitive-ratio``: the empirical competitive ratio of R-OBD, G-OBD,
OBD and two naive baselines against the offline optimum, swept over the
strong-convexity modulus m, on random quadratic instances and on an adaptive
"snap-back" adversary (our reconstruction of the lower-bound construction).
``soco-regret``: R-OBD's static regret against the best fixed point in
hindsight, as a function of the horizon T.

Both use :mod:`lemmata.online` only (numpy, scipy, cvxpy for the Bregman part).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = [
    "CompetitiveRatioConfig",
    "RegretConfig",
    "competitive_ratio_sweep",
    "regret_growth",
    "snap_back_ratio",
]

_PAPER = "1905.12776"
_ALGORITHMS = ("robd", "gobd", "obd", "follow", "stay")
_LABELS = {
    "robd": "R-OBD",
    "gobd": "G-OBD",
    "obd": "OBD",
    "follow": "follow the minimiser",
    "stay": "stay put",
}


# ----------------------------------------------------------------------------
# soco-competitive-ratio
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CompetitiveRatioConfig:
    """Competitive ratio against m on random and adversarial instances.

    Attributes
    ----------
    m_values : tuple of float
        Strong-convexity moduli swept (the algorithms are told each m).
    dim : int
        Dimension d of the random instances.
    horizon : int
        Rounds T of each random instance.
    trials : int
        Random instances per m; the worst ratio over them is reported.
    curvature_spread : float
        Random costs are 1/2 (x - y_t)^T A_t (x - y_t) with A_t diagonal and
        entries log-uniform in [m, curvature_spread * m]; the minimisers y_t
        are a Gaussian random walk with unit steps from x_0 = 0.
    rounds_scale : float
        The adversary tries up to ceil(rounds_scale / sqrt(m)) mild rounds.
    rounds_grid : int
        Number of log-spaced run lengths n the adversary tries.
    offsets : tuple of float
        Minimum values of the mild rounds, in units of m/2 (OBD's balance
        depends on them; R-OBD's step does not).
    steep_curvature : float
        Curvature M of the adversary's final cost, large enough to pin every
        algorithm and the optimum to its minimiser.
    bregman_trials : int
        Random instances per m with negative-entropy movement (R-OBD only,
        through cvxpy); 0 skips that part.
    bregman_dim, bregman_horizon : int
        Dimension and rounds of those instances.
    bregman_delta : float
        Lower bound delta of the shrunken simplex.
    slope_max_m : float
        Log-log slopes against 1/m are fitted over m <= slope_max_m.
    obd_beta : float
        OBD's balance parameter.
    gobd_gamma, gobd_mu : float
        G-OBD's parameters.
    """

    m_values: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 10.0)
    dim: int = 3
    horizon: int = 50
    trials: int = 10
    curvature_spread: float = 10.0
    rounds_scale: float = 6.0
    rounds_grid: int = 16
    offsets: tuple[float, ...] = (0.0, 1.0, 4.0)
    steep_curvature: float = 1e7
    bregman_trials: int = 2
    bregman_dim: int = 3
    bregman_horizon: int = 10
    bregman_delta: float = 0.05
    slope_max_m: float = 0.1
    obd_beta: float = 1.0
    gobd_gamma: float = 1.0
    gobd_mu: float = 1.0


def _factories(cfg: CompetitiveRatioConfig, m: float) -> dict[str, Callable]:
    from lemmata.online import (
        OBD,
        FollowTheMinimizer,
        GreedyOBD,
        RegularizedOBD,
        StayPut,
    )

    return {
        "robd": lambda: RegularizedOBD(m),
        "gobd": lambda: GreedyOBD(m, gamma=cfg.gobd_gamma, mu=cfg.gobd_mu),
        "obd": lambda: OBD(cfg.obd_beta),
        "follow": FollowTheMinimizer,
        "stay": StayPut,
    }


def _quadratic_form(values: list[float]) -> np.ndarray:
    """The 2x2 form q with q(1, w) = value at w, from values at w = -1, 0, 1."""
    low, mid, high = values
    a0, a1, a2 = mid, (high - low) / 2, (high + low) / 2 - mid
    return np.array([[a0, a1 / 2], [a1 / 2, a2]])


def snap_back_ratio(
    make_algorithm: Callable,
    m: float,
    rounds: np.ndarray,
    offset: float,
    steep_curvature: float,
) -> tuple[float, int, float]:
    r"""The worst ratio of the snap-back family for one algorithm.

    The family, in one dimension from :math:`x_0 = 0`: :math:`n` mild rounds
    :math:`f(x) = \tfrac m2 (x - 1)^2 + h`, then one steep round
    :math:`\tfrac M2 (x - w)^2`. For every :math:`n` in ``rounds`` the
    adversary picks the :math:`w` that maximises ALG/OPT. For an algorithm
    whose steep step is affine in :math:`w` (all of ours), ALG and OPT are
    quadratics in :math:`w`, fitted exactly from :math:`w \in \{-1, 0, 1\}`,
    and the best :math:`w` is the top generalised eigenvector of the two
    2x2 forms; the reported ratio is re-measured directly at that :math:`w`.

    Returns
    -------
    (ratio, n, w)
        The worst ratio and the instance that attains it.
    """
    from scipy.linalg import eigh

    from lemmata.online import QuadraticCost, competitive_ratio, offline_optimum

    n_max = int(np.max(rounds))
    mild = [QuadraticCost([1.0], m, offset=offset) for _ in range(n_max)]
    algorithm = make_algorithm()
    xs = algorithm.run(mild, [0.0])[:, 0]
    moves = np.diff(np.concatenate([[0.0], xs]))
    prefix = np.cumsum(0.5 * m * (xs - 1.0) ** 2 + offset + 0.5 * moves**2)

    best = (0.0, 0, 0.0)
    for n in rounds:
        p = xs[n - 1]
        alg_values, opt_values = [], []
        for w in (-1.0, 0.0, 1.0):
            steep = QuadraticCost([w], steep_curvature)
            x = algorithm.reset([p]).step(steep)[0]
            alg_values.append(prefix[n - 1] + steep([x]) + 0.5 * (x - p) ** 2)
            opt_values.append(offline_optimum([*mild[:n], steep], [0.0]).cost)
        _, vectors = eigh(_quadratic_form(alg_values), _quadratic_form(opt_values))
        top = vectors[:, -1]
        w_star = top[1] / top[0] if abs(top[0]) > 1e-12 * abs(top[1]) else 1e6
        costs = [*mild[:n], QuadraticCost([w_star], steep_curvature)]
        ratio = competitive_ratio(make_algorithm(), costs, [0.0])
        if ratio > best[0]:
            best = (ratio, int(n), float(w_star))
    return best


def _random_instance(rng: np.random.Generator, m: float, cfg: CompetitiveRatioConfig):
    from lemmata.online import QuadraticCost

    centers = np.cumsum(rng.normal(size=(cfg.horizon, cfg.dim)), axis=0)
    log_spread = math.log(cfg.curvature_spread)
    return [
        QuadraticCost(y, m * np.exp(rng.uniform(0.0, log_spread, cfg.dim)))
        for y in centers
    ]


def _bregman_ratio(rng: np.random.Generator, m: float, cfg: CompetitiveRatioConfig):
    """Worst R-OBD ratio with negative-entropy movement, and its bound."""
    from lemmata.online import (
        BregmanDivergence,
        NegativeEntropy,
        QuadraticCost,
        RegularizedOBD,
        competitive_ratio,
    )

    movement = BregmanDivergence(NegativeEntropy(cfg.bregman_delta))
    x0 = np.full(cfg.bregman_dim, 1.0 / cfg.bregman_dim)
    worst, bound = 0.0, float("nan")
    for _ in range(cfg.bregman_trials):
        centers = rng.dirichlet(np.full(cfg.bregman_dim, 0.5), cfg.bregman_horizon)
        costs = [QuadraticCost(y, m) for y in centers]
        algorithm = RegularizedOBD(m, movement=movement)
        worst = max(worst, competitive_ratio(algorithm, costs, x0))
        bound = algorithm.bound
    return worst, bound


def _slope(m_values: np.ndarray, ratios: np.ndarray, max_m: float) -> float:
    """Least-squares slope of log(ratio) against log(1/m) over m <= max_m."""
    keep = m_values <= max_m
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(1 / m_values[keep]), np.log(ratios[keep]), 1)[0])


def _ratio_figure(m_values, adversarial, random, lower_bound):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.4))
    panels = fig.subplots(1, 2, sharey=True)
    styles = {"robd": "o-", "gobd": "s-", "obd": "^-", "follow": "x--", "stay": "+--"}
    shown = [data[name] for data in (adversarial, random) for name in _ALGORITHMS[:4]]
    top = 3.0 * float(np.max(shown))
    small = m_values <= 0.1
    for ax, data, title in (
        (panels[0], adversarial, "snap-back adversary (worst over n, w, offset)"),
        (panels[1], random, "random quadratic instances (worst over trials)"),
    ):
        for name in _ALGORITHMS:
            ax.loglog(m_values, data[name], styles[name], label=_LABELS[name], ms=4)
        if np.max(data["stay"]) > top:
            ax.text(
                0.02,
                0.02,
                "stay put: above the top of the axis",
                transform=ax.transAxes,
                fontsize=7,
            )
        ax.loglog(
            m_values,
            lower_bound,
            "k-",
            lw=2,
            alpha=0.5,
            label="lower bound = R-OBD bound",
        )
        if small.any():
            m_ref = m_values[small][-1]
            anchor = data["obd"][small][-1]
            ax.loglog(
                m_values[small],
                anchor * (m_values[small] / m_ref) ** (-2 / 3),
                "k:",
                label="slope of m^(-2/3) (paper: OBD)",
            )
        ax.set_xlabel("m (strong convexity)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0.9, top)
        ax.grid(True, which="both", alpha=0.3)
    panels[0].set_ylabel("competitive ratio ALG / OPT")
    panels[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


@experiment(
    name="soco-competitive-ratio",
    paper=_PAPER,
    claim=(
        "R-OBD and G-OBD are O(m^-1/2)-competitive, matching the lower bound, "
        "while OBD is Omega(m^-2/3)."
    ),
    config=CompetitiveRatioConfig,
    quick=CompetitiveRatioConfig(),
    full=CompetitiveRatioConfig(
        m_values=tuple(float(m) for m in np.geomspace(1e-3, 10.0, 13)),
        trials=20,
        rounds_scale=12.0,
        rounds_grid=30,
        offsets=(0.0, 0.5, 1.0, 2.0, 4.0),
        bregman_trials=5,
        bregman_horizon=20,
    ),
    seeds={"quick": 1, "full": 5},
    requires=("cvxpy",),
)
def competitive_ratio_sweep(cfg: CompetitiveRatioConfig, ctx: RunContext) -> Result:
    r"""Sweep m; measure ALG/OPT on random and adversarial instances.

    For every m: the worst ratio over ``trials`` random quadratic instances
    (against the exact offline optimum), and the worst ratio the snap-back
    adversary (:func:`snap_back_ratio`) finds for each algorithm, maximised
    over the run length n, the final target w and the offsets. R-OBD also runs
    with negative-entropy movement on the simplex (cvxpy) against its Bregman
    bound. Slopes are least-squares fits of log ratio against log(1/m) over
    m <= ``slope_max_m``.

    Checks: R-OBD stays below :math:`\tfrac12(1+\sqrt{1+4/m})` on every
    instance (and below its Bregman bound); R-OBD's and G-OBD's slopes are at
    most 0.55 (O(m^-1/2), with 0.05 of slack for the fit); OBD's slope on the
    adversarial family exceeds R-OBD's; on that family R-OBD's ratio is at
    least half the lower bound (the family attains the bound's order).

    Notes
    -----
    [reconstruction] The paper's adversarial constructions are not available
    to us. The snap-back family (n rounds pulling towards 1 with curvature m,
    then one steep cost at w) is our reconstruction of the lower-bound
    construction: a ski-rental dilemma between following a persistent mild
    cost and being sent back. On it R-OBD's worst ratio equals
    :math:`\tfrac12(1+\sqrt{1+4/m})` to about 5e-6 relative (the gap comes
    from the finite steep curvature), which supports both the reconstructed
    constant and R-OBD's optimality. The construction behind OBD's
    :math:`\Omega(m^{-2/3})` is unknown: in one dimension with quadratic costs
    OBD moves a fixed fraction :math:`\sqrt{\beta m}/(1+\sqrt{\beta m})`
    towards the minimiser, like R-OBD, and on this family its ratio is about
    twice the bound at every m, with the same slope; offsets on the mild rounds
    (which change OBD's balance, not R-OBD's step) do not change that. The
    OBD-slope check is kept as the issue states it, and its failure on this
    family is a finding, not a refutation of the paper. G-OBD's constants are
    unknown, so its bound is checked through the slope only and the constant
    :math:`C = \max_m \text{ratio} \cdot \sqrt m` is reported.
    """
    from lemmata.online import (
        competitive_lower_bound,
        competitive_ratio,
        offline_optimum,
    )

    rng = ctx.rng
    m_values = np.array(sorted(cfg.m_values), dtype=float)
    random = {name: np.zeros(m_values.size) for name in _ALGORITHMS}
    adversarial = {name: np.zeros(m_values.size) for name in _ALGORITHMS}
    bregman, bregman_bound = (
        np.full(m_values.size, np.nan),
        np.full(m_values.size, np.nan),
    )
    metrics: dict[str, float] = {}

    for i, m in enumerate(m_values):
        factories = _factories(cfg, m)
        x0 = np.zeros(cfg.dim)
        for _ in range(cfg.trials):
            costs = _random_instance(rng, m, cfg)
            opt = offline_optimum(costs, x0)
            for name, make in factories.items():
                ratio = competitive_ratio(make(), costs, x0, opt=opt)
                random[name][i] = max(random[name][i], ratio)

        n_max = math.ceil(cfg.rounds_scale / math.sqrt(m))
        rounds = np.unique(np.geomspace(1, n_max, cfg.rounds_grid).astype(int))
        for name, make in factories.items():
            for eta in cfg.offsets:
                ratio, n, w = snap_back_ratio(
                    make, m, rounds, eta * m / 2, cfg.steep_curvature
                )
                if ratio > adversarial[name][i]:
                    adversarial[name][i] = ratio
                    metrics[f"adversary/{name}/m={m:g}/rounds"] = n
                    metrics[f"adversary/{name}/m={m:g}/target"] = w
                    metrics[f"adversary/{name}/m={m:g}/offset"] = eta

        if cfg.bregman_trials > 0:
            bregman[i], bregman_bound[i] = _bregman_ratio(rng, m, cfg)

    lower_bound = np.array([competitive_lower_bound(m) for m in m_values])
    for i, m in enumerate(m_values):
        metrics[f"bound/lower/m={m:g}"] = lower_bound[i]
        for name in _ALGORITHMS:
            metrics[f"ratio/random/{name}/m={m:g}"] = random[name][i]
            metrics[f"ratio/adversarial/{name}/m={m:g}"] = adversarial[name][i]
        if cfg.bregman_trials > 0:
            metrics[f"ratio/bregman/robd/m={m:g}"] = bregman[i]
            metrics[f"bound/bregman_robd/m={m:g}"] = bregman_bound[i]

    slopes = {
        name: _slope(m_values, adversarial[name], cfg.slope_max_m)
        for name in _ALGORITHMS
    }
    worst_gobd = np.maximum(random["gobd"], adversarial["gobd"])
    for name, slope in slopes.items():
        metrics[f"slope/adversarial/{name}"] = slope
        metrics[f"slope/random/{name}"] = _slope(
            m_values, random[name], cfg.slope_max_m
        )
    metrics["slope/lower_bound"] = _slope(m_values, lower_bound, cfg.slope_max_m)
    gobd_slope = _slope(m_values, worst_gobd, cfg.slope_max_m)
    small = m_values <= cfg.slope_max_m
    metrics["gobd/constant_C"] = float(
        np.max(worst_gobd[small] * np.sqrt(m_values[small]))
    )

    robd_random = float(np.max(random["robd"] / lower_bound))
    robd_adversarial = float(np.max(adversarial["robd"] / lower_bound))
    robd_tightness = float(np.min(adversarial["robd"] / lower_bound))
    checks = [
        Check("robd_over_bound_max/random", robd_random, 1.0, "<="),
        Check("robd_over_bound_max/adversarial", robd_adversarial, 1.0, "<="),
        Check("robd_slope/adversarial", slopes["robd"], 0.55, "<="),
        Check("gobd_slope/worst_of_both", gobd_slope, 0.55, "<="),
        Check(
            "obd_minus_robd_slope/adversarial", slopes["obd"] - slopes["robd"], 0.0, ">"
        ),
        Check("robd_over_lower_bound_min/adversarial", robd_tightness, 0.5, ">="),
    ]
    if cfg.bregman_trials > 0:
        checks.append(
            Check(
                "robd_over_bound_max/bregman",
                float(np.max(bregman / bregman_bound)),
                1.0,
                "<=",
            )
        )
    series = {"m": m_values.tolist(), "lower_bound": lower_bound.tolist()}
    for name in _ALGORITHMS:
        series[f"adversarial/{name}"] = adversarial[name].tolist()
        series[f"random/{name}"] = random[name].tolist()
    figures = {"ratio_vs_m": _ratio_figure(m_values, adversarial, random, lower_bound)}
    return Result(metrics=metrics, checks=checks, figures=figures, series=series)


# ----------------------------------------------------------------------------
# soco-regret
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RegretConfig:
    """Static regret of R-OBD against the horizon T.

    Attributes
    ----------
    m : float
        Curvature of the hitting costs f_t(x) = (m/2) ||x - y_t||^2.
    dim : int
        Dimension d.
    horizons : tuple of int
        Horizons T at which the regret is read (one run of the largest).
    trials : int
        Independent sequences; curves are averaged over them.
    mean_distance : float
        Distance from x_0 = 0 to the mean of the minimisers y_t.
    noise : float
        Standard deviation of each coordinate of y_t around its mean.
    regret_lambda1 : float
        R-OBD's lambda1 for the regret run (lambda2 = 0).
    """

    m: float = 0.01
    dim: int = 3
    horizons: tuple[int, ...] = (100, 200, 400, 800, 1600, 3200, 6400)
    trials: int = 4
    mean_distance: float = 3.0
    noise: float = 1.0
    regret_lambda1: float = 1.0


def _prefix_regret(xs: np.ndarray, ys: np.ndarray, m: float, x0: np.ndarray):
    """Regret after every prefix t, and (1/2)||u_t - x0||^2 for its best u_t."""
    moves = np.diff(np.vstack([x0, xs]), axis=0)
    alg = np.cumsum(
        0.5 * m * np.sum((xs - ys) ** 2, axis=1) + 0.5 * np.sum(moves**2, 1)
    )
    t = np.arange(1, ys.shape[0] + 1)
    first = np.cumsum(ys, axis=0)
    second = np.cumsum(np.sum(ys**2, axis=1))
    # min_u sum_s (m/2)||u - y_s||^2 = (m/2) (sum ||y_s||^2 - ||sum y_s||^2 / t).
    comparator = 0.5 * m * (second - np.sum(first**2, axis=1) / t)
    best = first / t[:, None]
    return alg - comparator, 0.5 * np.sum((best - x0) ** 2, axis=1)


def _regret_figure(horizons, worst, final, labels):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    for key, label in labels.items():
        left.loglog(horizons, worst[key], "o-", label=label)
        right.semilogx(horizons, final[key], "o-", label=label)
    ref = worst["competitive"][-1] * horizons / horizons[-1]
    left.loglog(horizons, ref, "k:", label="slope 1 (linear regret)")
    left.set_title("max over t <= T of regret_t", fontsize=10)
    right.set_title("regret_T", fontsize=10)
    right.axhline(0.0, color="k", lw=0.8)
    for ax in (left, right):
        ax.set_xlabel("horizon T")
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylabel("static regret")
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


@experiment(
    name="soco-regret",
    paper=_PAPER,
    claim=(
        "R-OBD achieves sublinear static regret while keeping a constant, "
        "dimension-free competitive ratio."
    ),
    config=RegretConfig,
    quick=RegretConfig(),
    full=RegretConfig(
        horizons=tuple(100 * 2**k for k in range(11)),
        trials=4,
        dim=5,
    ),
    seeds={"quick": 1, "full": 5},
)
def regret_growth(cfg: RegretConfig, ctx: RunContext) -> Result:
    r"""Regret of R-OBD (regret weights and competitive weights) against T.

    The minimisers :math:`y_t` are i.i.d. Gaussian around a mean at distance
    ``mean_distance`` from :math:`x_0 = 0`. Regret after every prefix t is
    :math:`\sum_{s \le t} [f_s(x_s) + \tfrac12\|x_s - x_{s-1}\|^2] -
    \min_u \sum_{s \le t} f_s(u)`; the statistic fitted against T is its
    running maximum :math:`\max_{t \le T}`, averaged over trials, since the
    regret itself turns negative (the learner sees :math:`f_t` before moving).

    Checks: the fitted exponent of the regret weights' curve is below 1, and
    :math:`\text{regret}_t \le \lambda_1 \tfrac12\|u_t - x_0\|^2` at every
    t, the bound derived in :class:`lemmata.online.RegularizedOBD`'s Notes.

    Notes
    -----
    [reconstruction] The paper's regret theorem (its comparator, weights and
    rate) is unknown to us. We use :math:`\lambda_1 = 1, \lambda_2 = 0`, for
    which summing the strong-convexity inequality of R-OBD's step gives the
    bounded regret above while the competitive ratio stays
    :math:`1 + 1/m` (constant and dimension-free, as the abstract says). The
    competitive weights :math:`\lambda_1 = 2/(1+\sqrt{1+4/m})` are run too:
    at small m their regret on this sequence grows linearly, which shows why a
    different weight is needed for the regret claim.
    """
    from lemmata.online import QuadraticCost, RegularizedOBD

    rng = ctx.rng
    horizons = np.array(sorted(cfg.horizons))
    t_max = int(horizons[-1])
    x0 = np.zeros(cfg.dim)
    mean = np.full(cfg.dim, cfg.mean_distance / math.sqrt(cfg.dim))
    variants = {
        "regret": lambda: RegularizedOBD(cfg.m, lambda1=cfg.regret_lambda1),
        "competitive": lambda: RegularizedOBD(cfg.m),
    }
    worst = {key: np.zeros(horizons.size) for key in variants}
    final = {key: np.zeros(horizons.size) for key in variants}
    bound_gap = -np.inf

    for _ in range(cfg.trials):
        ys = mean + cfg.noise * rng.normal(size=(t_max, cfg.dim))
        costs = [QuadraticCost(y, cfg.m) for y in ys]
        for key, make in variants.items():
            xs = make().run(costs, x0)
            regret, start_gap = _prefix_regret(xs, ys, cfg.m, x0)
            running_max = np.maximum.accumulate(regret)
            worst[key] += running_max[horizons - 1] / cfg.trials
            final[key] += regret[horizons - 1] / cfg.trials
            if key == "regret":
                bound = cfg.regret_lambda1 * start_gap
                bound_gap = max(bound_gap, float(np.max(regret - bound)))

    metrics: dict[str, float] = {"regret/bound_gap_max": bound_gap}
    exponents = {}
    for key in variants:
        positive = worst[key] > 0
        exponents[key] = (
            float(
                np.polyfit(np.log(horizons[positive]), np.log(worst[key][positive]), 1)[
                    0
                ]
            )
            if positive.sum() >= 2
            else float("nan")
        )
        metrics[f"exponent/{key}"] = exponents[key]
        for T, w, f in zip(horizons, worst[key], final[key], strict=True):
            metrics[f"regret_max_prefix/{key}/T={T}"] = float(w)
            metrics[f"regret/{key}/T={T}"] = float(f)
    robd = variants["competitive"]()
    metrics["lambda1/competitive"] = robd.lambda1
    metrics["lambda1/regret"] = cfg.regret_lambda1

    checks = [
        Check("regret_exponent/robd_regret_weights", exponents["regret"], 1.0, "<"),
        Check("regret_minus_bound_max/robd_regret_weights", bound_gap, 1e-8, "<="),
    ]
    labels = {
        "regret": f"R-OBD, lambda1 = {cfg.regret_lambda1:g} (regret weights)",
        "competitive": f"R-OBD, lambda1 = {robd.lambda1:.3g} (competitive weights)",
    }
    series = {"T": horizons.tolist()}
    for key in variants:
        series[f"regret_max_prefix/{key}"] = worst[key].tolist()
        series[f"regret/{key}"] = final[key].tolist()
    figures = {"regret_vs_T": _regret_figure(horizons, worst, final, labels)}
    return Result(metrics=metrics, checks=checks, figures=figures, series=series)
