"""Continued fraction regression: evaluator throughput and fit time vs gplearn.

1. Evaluations per second of the vectorised population evaluator
   (:func:`lemmata.symbolic.evaluate_continued_fraction`), against the same
   candidates evaluated one at a time and against a per-row Python loop.
2. Fit time of :class:`lemmata.symbolic.ContinuedFractionRegressor` against
   gplearn's ``SymbolicRegressor`` given the same number of model evaluations
   (gplearn: population size x generations). Skipped when gplearn is missing.

All numbers come from one process with one BLAS thread; ratios > 1 favour
lemmata.
"""

from __future__ import annotations

import importlib.util
import math
import time

import numpy as np

from lemmata.symbolic import ContinuedFractionRegressor, evaluate_continued_fraction

DEPTH, N_FEATURES, N_ROWS, POPULATION = 4, 10, 500, 65


def _best_time(fn, repeat: int = 5) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _row_loop(beta, alpha, X):
    """One candidate, one row at a time: the reference the evaluator replaces."""
    out = np.empty(len(X))
    K = len(beta)
    for i, x in enumerate(X):
        t = beta[K - 1] + alpha[K - 1] @ x
        for k in range(K - 2, 0, -2):
            num = beta[k] + alpha[k] @ x
            t = beta[k - 1] + alpha[k - 1] @ x + num / t if k > 1 else num / t
        out[i] = beta[0] + alpha[0] @ x + t
    return out


def bench_evaluator(rng: np.random.Generator) -> None:
    K = 2 * DEPTH + 1
    beta = rng.uniform(2, 3, size=(POPULATION, K))
    alpha = rng.uniform(-0.3, 0.3, size=(POPULATION, K, N_FEATURES))
    X = rng.uniform(-1, 1, size=(N_ROWS, N_FEATURES))

    batched = _best_time(lambda: evaluate_continued_fraction(beta, alpha, X))
    one_by_one = _best_time(
        lambda: [
            evaluate_continued_fraction(b, a, X)
            for b, a in zip(beta, alpha, strict=True)
        ]
    )
    loop = _best_time(lambda: _row_loop(beta[0], alpha[0], X), repeat=2)
    np.testing.assert_allclose(
        _row_loop(beta[0], alpha[0], X),
        evaluate_continued_fraction(beta, alpha, X)[0][0],
    )

    rate = POPULATION / batched
    print(
        f"evaluator, depth {DEPTH}, {N_FEATURES} features, {N_ROWS} rows, "
        f"population {POPULATION}:"
    )
    print(f"  batched population      {rate:12,.0f} candidate evaluations/s")
    print(f"  one candidate at a time {POPULATION / one_by_one:12,.0f} /s")
    print(f"  per-row python loop     {1 / loop:12,.0f} /s")
    print(f"  ratio batched / one at a time: {one_by_one / batched:6.1f}x")
    print(f"  ratio batched / row loop:      {loop * POPULATION / batched:6.0f}x")


def bench_fit_vs_gplearn(rng: np.random.Generator) -> None:
    from sklearn.datasets import make_friedman1
    from sklearn.model_selection import train_test_split

    X, y = make_friedman1(400, noise=1.0, random_state=0)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=0)

    cfr = ContinuedFractionRegressor(n_generations=10, random_state=0)
    start = time.perf_counter()
    cfr.fit(X_tr, y_tr)
    cfr_time = time.perf_counter() - start
    evals = cfr.n_evaluations_
    print(
        f"fit on friedman1 ({len(y_tr)} rows): CFR depth {cfr.depth}, "
        f"{cfr.n_generations} generations: {cfr_time:.2f} s, {evals:,} evaluations, "
        f"test R2 {cfr.score(X_te, y_te):.3f}"
    )
    if importlib.util.find_spec("gplearn") is None:
        print("  gplearn not installed: fit-time comparison skipped")
        return

    from gplearn.genetic import SymbolicRegressor

    population = 1000
    generations = max(1, round(evals / population))
    gp = SymbolicRegressor(
        population_size=population,
        generations=generations,
        function_set=("add", "sub", "mul", "div"),
        random_state=0,
    )
    start = time.perf_counter()
    gp.fit(X_tr, y_tr)
    gp_time = time.perf_counter() - start
    gp_evals = population * generations
    print(
        f"  gplearn {population} x {generations} = {gp_evals:,} evaluations: "
        f"{gp_time:.2f} s, test R2 {gp.score(X_te, y_te):.3f}"
    )
    print(f"  ratio fit time gplearn / CFR: {gp_time / cfr_time:6.2f}x")
    per_eval = (gp_time / gp_evals) / (cfr_time / evals)
    print(f"  ratio time per evaluation gplearn / CFR: {per_eval:6.2f}x")


def main() -> None:
    rng = np.random.default_rng(0)
    bench_evaluator(rng)
    bench_fit_vs_gplearn(rng)


if __name__ == "__main__":
    main()
