"""Reproduction of arXiv 2501.18187 (feed-forward layers in nonlinear ICL).

``icl-nonlinear``: linear self-attention (LSA) alone and LSA blocks with a
bilinear GLU feed-forward layer are trained on random regression prompts and
compared, on the same test prompts, with closed-form predictors: the best
linear predictor of each task, one preconditioned gradient step on linear and
on polynomial-kernel least squares (fitted over many tasks), least squares
and kernel ridge regression on each prompt. Four claims are measured: LSA
alone is no better than linear predictors; one GLU+LSA block comes close to
one kernel gradient step; one block's error falls with its width until the
quadratic features fit; stacking blocks helps on cubic tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["ICLConfig", "icl_nonlinear"]

_PAPER = "2501.18187"


@dataclass(frozen=True)
class ICLConfig:
    """Training and evaluation of in-context regression models.

    Attributes
    ----------
    d : int
        Input dimension; x ~ N(0, I_d).
    n : int
        Prompt length (context pairs) used for training and for the checks.
    noise : float
        Target noise standard deviation.
    steps, batch : int
        Adam steps per model and prompts per step (fresh tasks every step).
    lr : float
        Peak step size of a cosine schedule with 5% linear warm-up.
    grad_clip : float
        Maximum gradient norm.
    restarts : int
        Random initialisations per GLU model; the one with the lowest risk on
        the validation prompts is kept (the loss has plateaus in which only
        some quadratic features are learned).
    widths : tuple of int
        GLU widths m of the one-block sweep on quadratic tasks; the feature
        padding equals m. The largest is the model of the kernel checks.
    depth_width : int
        GLU width per block of the depth sweep on cubic tasks.
    depths : tuple of int
        Numbers of blocks of the depth sweep; must include 1, 2 and 3.
    eval_lengths : tuple of int
        Prompt lengths of the error-against-length figure.
    test_prompts, val_prompts, fit_tasks : int
        Test prompts (shared by all models and baselines), validation prompts
        (restart and ridge selection) and tasks for fitting the
        preconditioners of the gradient-step baselines.
    krr_alphas : tuple of float
        Ridge values for kernel ridge regression, chosen on validation prompts.
    barrier_ratio : float
        LSA risk / baseline risk must be >= this (LSA no better than linear).
    linear_match : float
        On linear tasks, LSA risk / one linear gradient step risk must be <=.
    kernel_ratio : float
        GLU+LSA risk / one kernel gradient step risk must be <= this.
    lsa_ratio : float
        GLU+LSA risk / LSA risk must be <= this ("beats it clearly").
    width_fall : float
        Risk at m = d(d+1)/2 over risk at m = 1 must be <= this.
    plateau : float
        Relative risk change from m = d(d+1)/2 to the widest m must be < this.
    depth_ratio : float
        On cubic tasks, 3-block risk / 1-block risk must be <= this.
    """

    d: int = 2
    n: int = 20
    noise: float = 0.1
    steps: int = 1500
    batch: int = 256
    lr: float = 3e-3
    grad_clip: float = 1.0
    restarts: int = 3
    widths: tuple[int, ...] = (1, 3, 5)
    depth_width: int = 3
    depths: tuple[int, ...] = (1, 2, 3)
    eval_lengths: tuple[int, ...] = (5, 10, 20, 40, 80)
    test_prompts: int = 10_000
    val_prompts: int = 2_000
    fit_tasks: int = 40_000
    krr_alphas: tuple[float, ...] = (0.01, 0.1, 1.0)
    barrier_ratio: float = 0.95
    linear_match: float = 1.05
    kernel_ratio: float = 1.1
    lsa_ratio: float = 0.8
    width_fall: float = 0.8
    plateau: float = 0.05
    depth_ratio: float = 0.8


_FULL = ICLConfig(
    steps=5000,
    restarts=4,
    widths=(1, 2, 3, 4, 5),
    eval_lengths=(5, 10, 20, 40, 80, 160),
    test_prompts=20_000,
    fit_tasks=100_000,
)


def _train(model, sampler, cfg: ICLConfig, steps: int, generator) -> bool:
    """Adam on fresh prompts; False if the loss became non-finite."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda t: (
            min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * t / steps))
        ),
    )
    for _ in range(steps):
        batch = sampler.sample(cfg.batch, cfg.n, generator=generator)
        loss = (model(batch.prompt(model.layout)) - batch.query_target).pow(2).mean()
        if not torch.isfinite(loss):
            return False
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
    return True


def _errors(model, batch) -> np.ndarray:
    """Squared errors of the model on a batch of prompts."""
    import torch

    with torch.no_grad():
        pred = model(batch.prompt(model.layout))
    return (pred - batch.query_target).pow(2).double().numpy()


def _best_of(make, sampler, cfg, generator, val, restarts) -> tuple:
    """Train ``restarts`` fresh models; keep the best on the validation prompts."""
    best, best_risk, risks = None, math.inf, []
    for _ in range(restarts):
        model = make()
        finite = _train(model, sampler, cfg, cfg.steps, generator)
        risk = float(_errors(model, val).mean()) if finite else math.inf
        risks.append(risk if math.isfinite(risk) else math.inf)
        if risk < best_risk:
            best, best_risk = model, risk
    return best, risks


def _numpy_batch(batch):
    x, y = batch.x.double().numpy(), batch.y.double().numpy()
    return x[:, :-1], y[:, :-1], x[:, -1], y[:, -1]


def _baseline_errors(sampler, fit, test, val, degrees, krr_alphas) -> dict:
    """Squared errors of the closed-form predictors on the test prompts."""
    from lemmata.nn.icl import (
        fit_preconditioner,
        kernel_ridge_predict,
        least_squares_predict,
        polynomial_features,
        preconditioned_gd_predict,
    )

    xc, yc, xq, yq = _numpy_batch(test)
    out = {"zero": yq**2}
    intercept, slope = sampler.best_linear(test.params)
    best_linear = intercept.double().numpy() + np.einsum("bd,bd->b", xq, slope.double())
    out["oracle_linear"] = (best_linear - yq) ** 2

    fxc, fyc, fxq, fyq = _numpy_batch(fit)
    for degree in degrees:
        phi_fit = polynomial_features(np.concatenate([fxc, fxq[:, None]], 1), degree)
        gamma = fit_preconditioner(phi_fit[:, :-1], fyc, phi_fit[:, -1], fyq)
        phi = polynomial_features(np.concatenate([xc, xq[:, None]], 1), degree)
        pred = preconditioned_gd_predict(phi[:, :-1], yc, phi[:, -1], gamma)
        out[f"gd_step_deg{degree}"] = (pred - yq) ** 2

    if xc.shape[1] > xc.shape[2] + 1:
        out["least_squares"] = (least_squares_predict(xc, yc, xq) - yq) ** 2
    vxc, vyc, vxq, vyq = _numpy_batch(val)
    krr_degree = max(degrees)
    val_risk = {
        a: np.mean(
            (kernel_ridge_predict(vxc, vyc, vxq, alpha=a, degree=krr_degree) - vyq) ** 2
        )
        for a in krr_alphas
    }
    alpha = min(val_risk, key=val_risk.get)
    krr = kernel_ridge_predict(xc, yc, xq, alpha=alpha, degree=krr_degree)
    out[f"kernel_ridge_deg{krr_degree}"] = (krr - yq) ** 2
    return out


def _risk(errors: np.ndarray) -> tuple[float, float]:
    return float(errors.mean()), float(errors.std(ddof=1) / math.sqrt(len(errors)))


def _line_figure(x, curves: dict, xlabel: str, title: str, *, logx=False, marks=None):
    """Model curves against x, constant baselines as horizontal lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    colors = iter(f"C{i}" for i in range(10))
    for label, (values, style) in curves.items():
        color = next(colors)
        if np.ndim(values) == 0:
            ax.axhline(float(values), ls=style, lw=1.2, label=label, color=color)
        else:
            ax.plot(x, values, style, label=label, color=color)
    for xv, yv in marks or []:
        ax.plot(xv, yv, "k.", ms=3, alpha=0.5)
    ax.set(xlabel=xlabel, ylabel="test MSE", title=title)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(list(x))
    ax.legend(fontsize=7)
    return fig


@experiment(
    name="icl-nonlinear",
    paper=_PAPER,
    claim=(
        "Linear self-attention alone cannot beat linear predictors on nonlinear "
        "tasks; a block of LSA and a GLU feed-forward layer implements one gradient "
        "step on polynomial-kernel regression, its expressivity is limited by its "
        "width, and stacking blocks reaches richer kernels."
    ),
    config=ICLConfig,
    quick=ICLConfig(),
    full=_FULL,
    seeds={"quick": 1, "full": 2},
    requires=("torch",),
)
def icl_nonlinear(cfg: ICLConfig, ctx: RunContext) -> Result:
    import torch

    ctx.seed_torch()
    m_star = cfg.d * (cfg.d + 1) // 2
    if not {1, 2, 3} <= set(cfg.depths):
        raise ValueError(f"depths must include 1, 2 and 3; got {cfg.depths}")
    if m_star not in cfg.widths or min(cfg.widths) != 1:
        raise ValueError(
            f"widths must include 1 and d(d+1)/2={m_star}; got {cfg.widths}"
        )
    train_gen = torch.Generator().manual_seed(ctx.seed)
    eval_gen = torch.Generator().manual_seed(ctx.seed + 1)

    result = Result()
    quad = _quadratic_part(cfg, train_gen, eval_gen, result)
    linear = _linear_part(cfg, train_gen, eval_gen, result)
    cubic = _cubic_part(cfg, train_gen, eval_gen, result)
    result.checks.extend(_checks(cfg, m_star, quad, linear, cubic))
    result.figures.update(_figures(cfg, quad, cubic, eval_gen, result))
    return result


def _quadratic_part(cfg, train_gen, eval_gen, result) -> dict:
    """Baselines, LSA alone and the one-block width sweep on quadratic tasks."""
    from lemmata.nn.icl import ICLTransformer, QuadraticTasks

    sampler = QuadraticTasks(cfg.d, cfg.noise)
    test = sampler.sample(cfg.test_prompts, cfg.n, generator=eval_gen)
    val = sampler.sample(cfg.val_prompts, cfg.n, generator=eval_gen)
    fit = sampler.sample(cfg.fit_tasks, cfg.n, generator=eval_gen)
    base = _baseline_errors(sampler, fit, test, val, (1, 2), cfg.krr_alphas)
    base = {name: float(errors.mean()) for name, errors in base.items()}

    lsa = ICLTransformer(cfg.d)
    _train(lsa, sampler, cfg, cfg.steps, train_gen)
    risk_lsa, se_lsa = _risk(_errors(lsa, test))

    models, width_risk, width_restarts = {}, {}, {}
    for m in cfg.widths:
        models[m], width_restarts[m] = _best_of(
            lambda m=m: ICLTransformer(cfg.d, ff_width=m),
            sampler,
            cfg,
            train_gen,
            val,
            cfg.restarts,
        )
        width_risk[m] = float(_errors(models[m], test).mean())
    glu = models[max(cfg.widths)]
    risk_glu, se_glu = _risk(_errors(glu, test))

    for name, value in base.items():
        result.metrics[f"quadratic/risk/{name}"] = value
    for m in cfg.widths:
        result.metrics[f"width/risk/m={m}"] = width_risk[m]
        result.series[f"width/validation_risks/m={m}"] = width_restarts[m]
    result.metrics.update(
        {
            "quadratic/risk/lsa": risk_lsa,
            "quadratic/se/lsa": se_lsa,
            "quadratic/risk/glu_lsa": risk_glu,
            "quadratic/se/glu_lsa": se_glu,
            "ratio/lsa_to_oracle_linear": risk_lsa / base["oracle_linear"],
            "ratio/lsa_to_gd_step_deg1": risk_lsa / base["gd_step_deg1"],
            "ratio/glu_lsa_to_gd_step_deg2": risk_glu / base["gd_step_deg2"],
            "ratio/glu_lsa_to_lsa": risk_glu / risk_lsa,
        }
    )
    if "least_squares" in base:
        result.metrics["ratio/lsa_to_least_squares"] = risk_lsa / base["least_squares"]
    return {
        "sampler": sampler,
        "base": base,
        "lsa": lsa,
        "glu": glu,
        "risk_lsa": risk_lsa,
        "risk_glu": risk_glu,
        "width_risk": width_risk,
        "width_restarts": width_restarts,
    }


def _linear_part(cfg, train_gen, eval_gen, result) -> dict:
    """LSA on linear tasks against one preconditioned GD step (regression test)."""
    from lemmata.nn.icl import ICLTransformer, LinearTasks

    sampler = LinearTasks(cfg.d, cfg.noise)
    test = sampler.sample(cfg.test_prompts, cfg.n, generator=eval_gen)
    val = sampler.sample(cfg.val_prompts, cfg.n, generator=eval_gen)
    fit = sampler.sample(cfg.fit_tasks, cfg.n, generator=eval_gen)
    gd1 = float(
        _baseline_errors(sampler, fit, test, val, (1,), (1.0,))["gd_step_deg1"].mean()
    )
    lsa = ICLTransformer(cfg.d)
    _train(lsa, sampler, cfg, cfg.steps, train_gen)
    risk = float(_errors(lsa, test).mean())
    result.metrics["linear/risk/lsa"] = risk
    result.metrics["linear/risk/gd_step_deg1"] = gd1
    return {"risk_lsa": risk, "gd1": gd1}


def _cubic_part(cfg, train_gen, eval_gen, result) -> dict:
    """Depth sweep at a fixed per-block width on cubic tasks."""
    from lemmata.nn.icl import CubicTasks, ICLTransformer

    sampler = CubicTasks(cfg.d, cfg.noise)
    test = sampler.sample(cfg.test_prompts, cfg.n, generator=eval_gen)
    val = sampler.sample(cfg.val_prompts, cfg.n, generator=eval_gen)
    fit = sampler.sample(cfg.fit_tasks, cfg.n, generator=eval_gen)
    base = _baseline_errors(sampler, fit, test, val, (1, 2, 3), cfg.krr_alphas)
    base = {name: float(errors.mean()) for name, errors in base.items()}
    for name, value in base.items():
        result.metrics[f"cubic/risk/{name}"] = value

    depth_risk = {}
    for depth in cfg.depths:
        model, risks = _best_of(
            lambda depth=depth: ICLTransformer(
                cfg.d, n_blocks=depth, ff_width=cfg.depth_width
            ),
            sampler,
            cfg,
            train_gen,
            val,
            cfg.restarts,
        )
        depth_risk[depth] = float(_errors(model, test).mean())
        result.metrics[f"depth/risk/L={depth}"] = depth_risk[depth]
        result.series[f"depth/validation_risks/L={depth}"] = risks
    return {"base": base, "depth_risk": depth_risk}


def _checks(cfg, m_star, quad, linear, cubic) -> list[Check]:
    base, width, depth = quad["base"], quad["width_risk"], cubic["depth_risk"]
    m_max = max(cfg.widths)
    rows = [
        (
            "LSA risk / best linear predictor risk (oracle)",
            quad["risk_lsa"] / base["oracle_linear"],
            cfg.barrier_ratio,
            ">=",
        ),
        (
            "LSA risk / one linear GD step risk",
            quad["risk_lsa"] / base["gd_step_deg1"],
            cfg.barrier_ratio,
            ">=",
        ),
        (
            "linear tasks: LSA risk / one linear GD step risk",
            linear["risk_lsa"] / linear["gd1"],
            cfg.linear_match,
            "<=",
        ),
        (
            f"GLU+LSA (m={m_max}) risk / one kernel GD step risk",
            quad["risk_glu"] / base["gd_step_deg2"],
            cfg.kernel_ratio,
            "<=",
        ),
        (
            "GLU+LSA risk / LSA risk",
            quad["risk_glu"] / quad["risk_lsa"],
            cfg.lsa_ratio,
            "<=",
        ),
        (
            f"width: risk(m={m_star}) / risk(m=1)",
            width[m_star] / width[1],
            cfg.width_fall,
            "<=",
        ),
        (
            f"width: |risk(m={m_max}) - risk(m={m_star})| / risk(m={m_star})",
            abs(width[m_max] - width[m_star]) / width[m_star],
            cfg.plateau,
            "<",
        ),
        (
            "cubic: risk(3 blocks) / risk(1 block)",
            depth[3] / depth[1],
            cfg.depth_ratio,
            "<=",
        ),
        ("cubic: risk(2 blocks) / risk(1 block)", depth[2] / depth[1], 1.0, "<"),
        ("cubic: risk(3 blocks) / risk(2 blocks)", depth[3] / depth[2], 1.0, "<="),
        (
            "baselines: kernel GD step / linear GD step",
            base["gd_step_deg2"] / base["gd_step_deg1"],
            1.0,
            "<=",
        ),
        (
            "baselines: largest risk / zero-predictor risk",
            max(v for k, v in base.items() if k != "zero") / base["zero"],
            1.0,
            "<=",
        ),
    ]
    return [Check(*row) for row in rows]


def _figures(cfg, quad, cubic, eval_gen, result) -> dict:
    base, cub = quad["base"], cubic["base"]
    widths, depths = sorted(cfg.widths), sorted(cfg.depths)
    restarts = quad["width_restarts"]
    return {
        "error_vs_prompt_length": _length_figure(
            cfg, quad["sampler"], quad["lsa"], quad["glu"], eval_gen, result
        ),
        "error_vs_width": _line_figure(
            widths,
            {
                "GLU+LSA, best of restarts": (
                    [quad["width_risk"][m] for m in widths],
                    "o-",
                ),
                "LSA alone": (quad["risk_lsa"], "--"),
                "one linear GD step": (base["gd_step_deg1"], ":"),
                "one kernel GD step (degree 2)": (base["gd_step_deg2"], "-."),
            },
            "GLU width m (= feature padding)",
            f"One block, quadratic tasks, d={cfg.d}, n={cfg.n} "
            "(dots: restarts, validation)",
            marks=[(m, r) for m in widths for r in restarts[m] if math.isfinite(r)],
        ),
        "error_vs_depth": _line_figure(
            depths,
            {
                f"GLU+LSA blocks, width {cfg.depth_width}": (
                    [cubic["depth_risk"][k] for k in depths],
                    "o-",
                ),
                "one GD step, degree 1": (cub["gd_step_deg1"], ":"),
                "one GD step, degree 2": (cub["gd_step_deg2"], "--"),
                "one GD step, degree 3": (cub["gd_step_deg3"], "-."),
            },
            "number of blocks",
            f"Cubic tasks, d={cfg.d}, n={cfg.n}",
        ),
    }


def _length_figure(cfg, sampler, lsa, glu, eval_gen, result):
    """Risk against prompt length; models trained at n, baselines refitted."""
    lengths = sorted(cfg.eval_lengths)
    curves: dict[str, list[float]] = {}
    for n in lengths:
        test = sampler.sample(cfg.test_prompts, n, generator=eval_gen)
        val = sampler.sample(cfg.val_prompts, n, generator=eval_gen)
        fit = sampler.sample(cfg.fit_tasks // 2, n, generator=eval_gen)
        risks = {"lsa": _errors(lsa, test).mean(), "glu_lsa": _errors(glu, test).mean()}
        for name, errors in _baseline_errors(
            sampler, fit, test, val, (1, 2), cfg.krr_alphas
        ).items():
            if name != "zero":
                risks[name] = errors.mean()
        for name, value in risks.items():
            curves.setdefault(name, []).append(float(value))
    for name, values in curves.items():
        result.series[f"length/{name}"] = values
    result.series["length/n"] = [float(n) for n in lengths]
    styles = {"lsa": "s-", "glu_lsa": "o-"}
    return _line_figure(
        lengths,
        {
            name: (values, styles.get(name, "--"))
            for name, values in curves.items()
            if len(values) == len(lengths)
        },
        f"prompt length n (models trained at n = {cfg.n})",
        f"Quadratic tasks, d={cfg.d}",
        logx=True,
    )
