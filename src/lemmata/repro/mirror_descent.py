"""Reproductions of arXiv 2205.12808 (p-GD) and arXiv 2306.13853.

``pgd-margin``: on separable data with the exponential loss, p-GD converges in
direction to the l_p maximum-margin classifier of its own p.
``pgd-regression``: on under-determined least squares, p-GD from w0 reaches
the interpolator closest to w0 in the Bregman divergence of its potential.
``md-homogeneous`` (arXiv 2306.13853): the same two claims for p-GD and for
the non-separable potential sum_b (1/2)||w_b||_p^2 (``PNormSquared`` per
parameter tensor), each against its own references and the other's.

They run the user-facing :class:`lemmata.optim.PGD` and
:class:`lemmata.optim.MirrorDescent` optimizers (float64, one parameter group
per run) and compare them with the cvxpy references of :mod:`lemmata.optim`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = [
    "HomogeneousConfig",
    "MarginConfig",
    "RegressionConfig",
    "md_homogeneous",
    "pgd_margin",
    "pgd_regression",
]

_PAPER = "2205.12808"


def _check_lengths(ps: tuple[float, ...], **per_p: tuple[float, ...]) -> None:
    for name, values in per_p.items():
        if len(values) != len(ps):
            raise ValueError(
                f"{name} must have one entry per p ({len(ps)}); got {len(values)}"
            )


def _log_grid(steps: int, points: int) -> np.ndarray:
    """Iterations at which curves are recorded, log-spaced, ending at steps."""
    grid = np.unique(np.geomspace(1, steps, points).astype(int))
    return grid[grid <= steps]


@dataclass(frozen=True)
class MarginConfig:
    """Separable classification with the exponential loss.

    Attributes
    ----------
    n, d : int
        Samples and features; X ~ N(0, I), labels uniform in {-1, +1}. d > n
        makes the data separable.
    ps : tuple of float
        Potentials (1/p)||w||_p^p to run, all from w0 = 0.
    lr_normalized : tuple of float
        Step size per p for normalised steps, eta_t = eta / L(w_t).
    lr_fixed : tuple of float
        Step size per p for fixed steps.
    steps : int
        Iterations of each run.
    compare_ps : tuple of float
        Max-margin directions among which the nearest one is sought.
    gap_threshold : float
        Margin gap 1 - gamma_p(w_T)/gamma_p* that counts as converged.
    speedup_threshold : float
        Normalised gap / fixed gap at the last step below which normalised
        steps count as faster (arXiv 2306.13853's claim).
    """

    n: int = 20
    d: int = 50
    ps: tuple[float, ...] = (1.5, 2.0, 3.0)
    lr_normalized: tuple[float, ...] = (0.1, 0.1, 0.1)
    lr_fixed: tuple[float, ...] = (0.1, 0.1, 0.1)
    steps: int = 20_000
    compare_ps: tuple[float, ...] = (1.5, 2.0, 3.0)
    gap_threshold: float = 0.01
    speedup_threshold: float = 0.1


_MARGIN_FULL = MarginConfig(
    ps=(1.1, 1.5, 2.0, 3.0, 6.0, 10.0),
    lr_normalized=(0.01, 0.1, 0.1, 0.1, 0.1, 0.1),
    lr_fixed=(0.01, 0.1, 0.1, 0.1, 1e-3, 1e-3),
    steps=100_000,
    compare_ps=(1.1, 1.5, 2.0, 3.0, 6.0, 10.0),
)


def _separable_data(rng: np.random.Generator, n: int, d: int):
    X = rng.standard_normal((n, d))
    y = rng.choice([-1.0, 1.0], size=n)
    y[:2] = (-1.0, 1.0)  # both classes present
    return X, y


def _train_margin(Z, ps, lrs, steps, normalized, grid):
    """p-GD on the exponential loss, all p at once (one param group each).

    Returns final weights (len(ps), d) and the weights at the ``grid`` steps.
    """
    import torch

    from lemmata.optim import PGD

    Zt = torch.as_tensor(Z)
    ws = [torch.zeros(Z.shape[1], dtype=torch.float64) for _ in ps]
    opt = PGD(
        [
            {"params": [w], "p": p, "lr": lr}
            for w, p, lr in zip(ws, ps, lrs, strict=True)
        ],
        lr=lrs[0],
        p=ps[0],
    )
    history = []
    at = set(grid.tolist())
    for t in range(1, steps + 1):
        W = torch.stack(ws, dim=1)  # (d, k)
        margins = Zt @ W  # (n, k)
        if normalized:
            # grad L / L for L = mean exp(-z^T w): -Z^T softmax(-Zw), stable for
            # any margin size (L itself underflows long before it matters).
            weights = torch.softmax(-margins, dim=0)
        else:
            weights = torch.exp(-margins) / Z.shape[0]
        grads = -(Zt.T @ weights)  # (d, k)
        for j, w in enumerate(ws):
            w.grad = grads[:, j].contiguous()
        opt.step()
        if t in at:
            history.append(torch.stack(ws).numpy().copy())
    return torch.stack(ws).numpy(), np.stack(history)


def _margin_gap(Z, W, p, gamma_star):
    """1 - gamma_p(w)/gamma_p* for each row w of W (nan for w = 0)."""
    norms = np.linalg.norm(W, ord=p, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = (W @ Z.T).min(axis=-1) / norms
    return 1.0 - gamma / gamma_star


@experiment(
    name="pgd-margin",
    paper=_PAPER,
    claim=(
        "On linearly separable data, p-GD with an exponential-tailed loss converges "
        "in direction to the l_p maximum-margin classifier."
    ),
    config=MarginConfig,
    quick=MarginConfig(),
    full=_MARGIN_FULL,
    seeds={"quick": 2, "full": 5},
    requires=("torch", "cvxpy"),
)
def pgd_margin(cfg: MarginConfig, ctx: RunContext) -> Result:
    from matplotlib.figure import Figure

    from lemmata.optim import max_margin_direction

    _check_lengths(cfg.ps, lr_normalized=cfg.lr_normalized, lr_fixed=cfg.lr_fixed)
    X, y = _separable_data(ctx.rng, cfg.n, cfg.d)
    Z = y[:, None] * X
    targets = sorted(set(cfg.ps) | set(cfg.compare_ps))
    w_star = {q: max_margin_direction(X, y, q) for q in targets}
    gamma_star = {q: float((Z @ w_star[q]).min()) for q in targets}

    grid = _log_grid(cfg.steps, 60)
    runs = {}
    for mode, lrs in (("normalized", cfg.lr_normalized), ("fixed", cfg.lr_fixed)):
        runs[mode] = _train_margin(
            Z, cfg.ps, lrs, cfg.steps, mode == "normalized", grid
        )

    result = Result()
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for j, p in enumerate(cfg.ps):
        gaps = {}
        for mode, (_, history) in runs.items():
            curve = _margin_gap(Z, history[:, j], p, gamma_star[p])
            gaps[mode] = float(curve[-1])
            result.metrics[f"gap/{mode}/p={p:g}"] = gaps[mode]
            result.series[f"gap/{mode}/p={p:g}"] = curve.tolist()
            style = "-" if mode == "normalized" else "--"
            ax.plot(
                grid,
                np.maximum(curve, 1e-12),
                style,
                color=f"C{j}",
                label=f"p={p:g}, {mode}",
            )
        result.checks.append(
            Check(
                f"margin gap, normalised steps, p={p:g}",
                gaps["normalized"],
                cfg.gap_threshold,
                "<",
            )
        )
        result.checks.append(
            Check(
                f"normalised/fixed gap ratio, p={p:g}",
                gaps["normalized"] / gaps["fixed"],
                cfg.speedup_threshold,
                "<",
            )
        )

        w_final = runs["normalized"][0][j]
        direction = w_final / np.linalg.norm(w_final, ord=p)
        dist = {
            q: float(np.linalg.norm(direction - w_star[q], ord=p))
            for q in cfg.compare_ps
        }
        for q, value in dist.items():
            result.metrics[f"distance/p={p:g}/to_q={q:g}"] = value
        if p in cfg.compare_ps and len(cfg.compare_ps) > 1:
            nearest_other = min(v for q, v in dist.items() if q != p)
            result.checks.append(
                Check(
                    f"own / nearest other max-margin distance, p={p:g}",
                    dist[p] / nearest_other,
                    1.0,
                    "<",
                )
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="iteration",
        ylabel=r"margin gap $1-\gamma_p(w_t)/\gamma_p^*$",
        title="p-GD: margin gap (solid: normalised steps, dashed: fixed)",
    )
    ax.axhline(cfg.gap_threshold, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=7, ncol=2)
    result.figures["margin_gap"] = fig
    result.series["iteration"] = grid.tolist()
    return result


@dataclass(frozen=True)
class RegressionConfig:
    """Under-determined least squares, L(w) = ||Xw - y||^2 / (2n).

    Attributes
    ----------
    n, d : int
        Samples and features, n < d; X, y ~ N(0, 1).
    ps : tuple of float
        Potentials to run.
    lrs : tuple of float
        Fixed step size per p: the largest of {0.1, 0.05, 0.02, 0.01, 0.005}
        that converged on all 12 seeds of a pilot run (n=10, d=30). For p > 2
        the step must be small: the effective step lr*|w_j|^(2-p)/(p-1) is
        large on the solution's small entries, and with lr=0.05 at p=3 the
        iterates oscillate around the interpolator on most seeds.
    steps : int
        Iterations of each run.
    w0_scale : float
        Standard deviation of the random initialisation w0.
    error_threshold : float
        Relative l2 error to the Bregman-closest interpolator that counts
        as reached.
    """

    n: int = 10
    d: int = 30
    ps: tuple[float, ...] = (1.5, 2.0, 3.0)
    lrs: tuple[float, ...] = (0.02, 0.1, 0.005)
    steps: int = 10_000
    w0_scale: float = 0.5
    error_threshold: float = 1e-4


def _train_regression(X, y, W0, ps, lrs, steps, grid):
    """Full-batch p-GD on least squares from each column of W0, all p at once."""
    import torch

    from lemmata.optim import PGD

    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)[:, None]
    ws = [torch.as_tensor(W0).clone() for _ in ps]  # each (d, n_inits)
    opt = PGD(
        [
            {"params": [w], "p": p, "lr": lr}
            for w, p, lr in zip(ws, ps, lrs, strict=True)
        ],
        lr=lrs[0],
        p=ps[0],
    )
    at = set(grid.tolist())
    history = []
    n = X.shape[0]
    for t in range(1, steps + 1):
        for w in ws:
            w.grad = Xt.T @ (Xt @ w - yt) / n
        opt.step()
        if t in at:
            history.append(torch.stack(ws).numpy().copy())
    return torch.stack(ws).numpy(), np.stack(history)  # (k, d, inits), (T, k, d, i)


@experiment(
    name="pgd-regression",
    paper=_PAPER,
    claim=(
        "On under-determined least squares, mirror descent from w0 converges to the "
        "interpolating solution closest to w0 in the Bregman divergence of its "
        "potential (the minimum l_p-norm interpolator from w0 = 0)."
    ),
    config=RegressionConfig,
    quick=RegressionConfig(),
    full=RegressionConfig(n=20, d=60, steps=50_000),
    seeds={"quick": 2, "full": 5},
    requires=("torch", "cvxpy"),
)
def pgd_regression(cfg: RegressionConfig, ctx: RunContext) -> Result:
    from matplotlib.figure import Figure

    from lemmata.optim import min_norm_interpolator

    _check_lengths(cfg.ps, lrs=cfg.lrs)
    if cfg.n >= cfg.d:
        raise ValueError(f"n must be < d for an under-determined problem; got {cfg}")
    X = ctx.rng.standard_normal((cfg.n, cfg.d))
    y = ctx.rng.standard_normal(cfg.n)
    w0_random = cfg.w0_scale * ctx.rng.standard_normal(cfg.d)
    inits = {"w0=0": np.zeros(cfg.d), "w0=random": w0_random}
    W0 = np.stack(list(inits.values()), axis=1)

    grid = _log_grid(cfg.steps, 60)
    final, history = _train_regression(X, y, W0, cfg.ps, cfg.lrs, cfg.steps, grid)

    result = Result()
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for j, p in enumerate(cfg.ps):
        for i, (label, w0) in enumerate(inits.items()):
            ref = min_norm_interpolator(X, y, p, w0=None if i == 0 else w0)
            errors = np.linalg.norm(history[:, j, :, i] - ref, axis=-1)
            errors /= np.linalg.norm(ref)
            key = f"p={p:g}/{label}"
            result.metrics[f"relative_error/{key}"] = float(errors[-1])
            result.metrics[f"residual/{key}"] = float(
                np.linalg.norm(X @ final[j, :, i] - y)
            )
            result.series[f"relative_error/{key}"] = errors.tolist()
            result.checks.append(
                Check(
                    f"relative error to Bregman-closest interpolator, {key}",
                    float(errors[-1]),
                    cfg.error_threshold,
                    "<",
                )
            )
            ax.plot(
                grid,
                np.maximum(errors, 1e-17),
                "-" if i == 0 else "--",
                color=f"C{j}",
                label=key,
            )
        # The random start must not land on the min-norm solution: the limit
        # depends on w0, which is the claim's content.
        ref0 = min_norm_interpolator(X, y, p)
        result.metrics[f"distance_random_start_to_min_norm/p={p:g}"] = float(
            np.linalg.norm(final[j, :, 1] - ref0) / np.linalg.norm(ref0)
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="iteration",
        ylabel="relative error to the Bregman-closest interpolator",
        title="p-GD on under-determined least squares",
    )
    ax.axhline(cfg.error_threshold, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=7, ncol=2)
    result.figures["interpolator_error"] = fig
    result.series["iteration"] = grid.tolist()
    return result


@dataclass(frozen=True)
class HomogeneousConfig:
    """Two homogeneous potentials on the same linear problems.

    Each weight vector is split into consecutive blocks, one parameter tensor
    each. ``power`` is p-GD, psi = (1/p) sum_j |w_j|^p (separable, so the
    blocks do not matter); ``squared`` is MirrorDescent with PNormSquared(p)
    on each tensor, psi = sum_b (1/2) ||w_b||_p^2, whose margin norm is the
    block norm N(w) = (sum_b ||w_b||_p^2)^(1/2).

    Attributes
    ----------
    n_margin, d_margin : int
        Separable classification data, X ~ N(0, I), labels uniform in
        {-1, +1}, exponential loss, w0 = 0.
    blocks_margin : tuple of int
        Tensor sizes of the classifier, summing to d_margin.
    lr_margin : float
        Normalised step size eta (eta_t = eta / L(w_t)), every run.
    steps_margin : int
        Iterations of each classification run.
    n_reg, d_reg : int
        Under-determined least squares L(w) = ||Xw - y||^2 / (2 n_reg).
    blocks_reg : tuple of int
        Tensor sizes of the regression weights, summing to d_reg.
    w0_scale : float
        Standard deviation of the random start w0 of the regression runs.
    lr_reg : tuple of float
        Fixed step size per p, shared by both potentials: the largest of
        {0.1, 0.05, 0.02, 0.01, 0.005} that converged for both on the 2
        quick seeds of a pilot (see pgd-regression for why p > 2 needs a
        small step).
    steps_reg : int
        Iterations of each regression run.
    ps : tuple of float
        Exponents; each is run with both potentials.
    gap_threshold : float
        Margin gap, in the run's own norm, that counts as converged.
    error_threshold : float
        Relative l2 error to the run's own Bregman-closest interpolator that
        counts as reached.
    """

    n_margin: int = 20
    d_margin: int = 50
    blocks_margin: tuple[int, ...] = (20, 30)
    lr_margin: float = 0.1
    steps_margin: int = 20_000
    n_reg: int = 10
    d_reg: int = 30
    blocks_reg: tuple[int, ...] = (10, 20)
    w0_scale: float = 0.5
    lr_reg: tuple[float, ...] = (0.02, 0.005)
    steps_reg: int = 10_000
    ps: tuple[float, ...] = (1.5, 3.0)
    gap_threshold: float = 0.01
    error_threshold: float = 1e-4


_POTENTIAL_NAMES = ("power", "squared")


def _homogeneous_optimizer(params, runs, lrs):
    """One MirrorDescent with a parameter group per (potential, p) run."""
    from lemmata.optim import MirrorDescent, PNormPower, PNormSquared

    classes = {"power": PNormPower, "squared": PNormSquared}
    groups = [
        {"params": tensors, "potential": classes[name](p), "lr": lr}
        for tensors, (name, p), lr in zip(params, runs, lrs, strict=True)
    ]
    return MirrorDescent(groups, lr=lrs[0], potential=groups[0]["potential"])


def _blocks_of(w0, blocks):
    """Tensors (float64) holding the consecutive blocks of the vector w0."""
    import torch

    return [
        torch.tensor(part) for part in np.split(np.asarray(w0), np.cumsum(blocks)[:-1])
    ]


def _train_homogeneous_margin(Z, blocks, runs, lr, steps):
    import torch

    Zt = torch.as_tensor(Z)
    params = [_blocks_of(np.zeros(Z.shape[1]), blocks) for _ in runs]
    optimizer = _homogeneous_optimizer(params, runs, [lr] * len(runs))
    edges = np.cumsum([0, *blocks])
    for _ in range(steps):
        W = torch.stack([torch.cat(tensors) for tensors in params], dim=1)
        # grad L / L for L = mean exp(-Zw), as in pgd-margin (normalised steps).
        grads = -(Zt.T @ torch.softmax(-(Zt @ W), dim=0))
        for j, tensors in enumerate(params):
            for b, w in enumerate(tensors):
                w.grad = grads[edges[b] : edges[b + 1], j].contiguous()
        optimizer.step()
    return np.stack([torch.cat(tensors).numpy() for tensors in params])


def _train_homogeneous_regression(X, y, w0, blocks, runs, lrs, steps):
    import torch

    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    params = [_blocks_of(w0, blocks) for _ in runs]
    optimizer = _homogeneous_optimizer(params, runs, lrs)
    edges = np.cumsum([0, *blocks])
    n = X.shape[0]
    for _ in range(steps):
        W = torch.stack([torch.cat(tensors) for tensors in params], dim=1)
        grads = Xt.T @ (Xt @ W - yt[:, None]) / n
        for j, tensors in enumerate(params):
            for b, w in enumerate(tensors):
                w.grad = grads[edges[b] : edges[b + 1], j].contiguous()
        optimizer.step()
    return np.stack([torch.cat(tensors).numpy() for tensors in params])


def _norm(w, p, name, blocks):
    from lemmata.optim._reference import _block_norm, _check_blocks

    if name == "power":
        return float(np.linalg.norm(w, ord=p))
    return _block_norm(w, p, _check_blocks(blocks, w.size))


@experiment(
    name="md-homogeneous",
    paper="2306.13853",
    claim=(
        "Mirror descent with a homogeneous potential converges in direction to "
        "the generalised maximum-margin classifier of that potential, and in "
        "regression to the interpolator closest to its start in that potential's "
        "Bregman divergence, so changing the potential changes the solution."
    ),
    config=HomogeneousConfig,
    quick=HomogeneousConfig(),
    full=HomogeneousConfig(
        ps=(1.5, 2.0, 3.0), lr_reg=(0.02, 0.1, 0.005), steps_margin=100_000
    ),
    seeds={"quick": 2, "full": 5},
    requires=("torch", "cvxpy"),
)
def md_homogeneous(cfg: HomogeneousConfig, ctx: RunContext) -> Result:
    from lemmata.optim import max_margin_direction, min_norm_interpolator

    _check_lengths(cfg.ps, lr_reg=cfg.lr_reg)
    for name, blocks, d in (
        ("blocks_margin", cfg.blocks_margin, cfg.d_margin),
        ("blocks_reg", cfg.blocks_reg, cfg.d_reg),
    ):
        if sum(blocks) != d:
            raise ValueError(f"{name} must sum to {d}; got {blocks}")
    runs = [(name, p) for p in cfg.ps for name in _POTENTIAL_NAMES]
    result = Result()

    X, y = _separable_data(ctx.rng, cfg.n_margin, cfg.d_margin)
    Z = y[:, None] * X
    final = _train_homogeneous_margin(
        Z, cfg.blocks_margin, runs, cfg.lr_margin, cfg.steps_margin
    )
    stars = {
        run: max_margin_direction(
            X, y, run[1], potential=run[0], blocks=cfg.blocks_margin
        )
        for run in runs
    }
    _homogeneous_checks(
        result, "margin", runs, final, stars, cfg.blocks_margin, cfg, Z=Z
    )

    Xr = ctx.rng.standard_normal((cfg.n_reg, cfg.d_reg))
    yr = ctx.rng.standard_normal(cfg.n_reg)
    w0 = cfg.w0_scale * ctx.rng.standard_normal(cfg.d_reg)
    lrs = [lr for lr in cfg.lr_reg for _ in _POTENTIAL_NAMES]
    final = _train_homogeneous_regression(
        Xr, yr, w0, cfg.blocks_reg, runs, lrs, cfg.steps_reg
    )
    refs = {
        run: min_norm_interpolator(
            Xr, yr, run[1], w0, potential=run[0], blocks=cfg.blocks_reg
        )
        for run in runs
    }
    _homogeneous_checks(result, "regression", runs, final, refs, cfg.blocks_reg, cfg)
    return result


def _homogeneous_checks(result, task, runs, final, refs, blocks, cfg, Z=None):
    """Own-reference error, and own / other-potential distance, for each run."""
    for (name, p), w in zip(runs, final, strict=True):
        other = ("squared" if name == "power" else "power", p)
        key = f"{name}/p={p:g}"
        if task == "margin":
            direction = w / _norm(w, p, name, blocks)
            gap = 1.0 - float((Z @ direction).min()) / float((Z @ refs[name, p]).min())
            result.metrics[f"margin_gap/{key}"] = gap
            result.checks.append(
                Check(f"margin gap (own norm), {key}", gap, cfg.gap_threshold, "<")
            )
            own = _norm(direction - refs[name, p], p, name, blocks)
            other_ref = refs[other] / _norm(refs[other], p, name, blocks)
            to_other = _norm(direction - other_ref, p, name, blocks)
        else:
            own = float(
                np.linalg.norm(w - refs[name, p]) / np.linalg.norm(refs[name, p])
            )
            to_other = float(
                np.linalg.norm(w - refs[other]) / np.linalg.norm(refs[other])
            )
            result.checks.append(
                Check(
                    f"relative error to own Bregman-closest interpolator, {key}",
                    own,
                    cfg.error_threshold,
                    "<",
                )
            )
        result.metrics[f"{task}/distance_own/{key}"] = own
        result.metrics[f"{task}/distance_other_potential/{key}"] = to_other
        result.checks.append(
            Check(
                f"{task}: own / other potential's solution distance, {key}",
                own / to_other,
                1.0,
                "<",
            )
        )
