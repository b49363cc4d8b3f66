"""R-OBD on a d = 1,000, T = 10,000 quadratic instance: three ways to take a step.

1. the closed form x_t = (a y_t + lambda1 x_(t-1)) / (a + lambda1);
2. the generic path: one cvxpy problem with Parameters, compiled once and
   re-solved with new values (``RegularizedOBD(solver="cvxpy")``);
3. the same cvxpy problem rebuilt (and so recompiled) at every step.

Prints the per-step time of each and the ratios (2)/(1) and (3)/(2). The cvxpy
paths run on a prefix of the horizon (their per-step time does not depend on
t); the closed form runs the whole horizon.
"""

from __future__ import annotations

import time

import numpy as np

from lemmata.online import QuadraticCost, RegularizedOBD

DIM = 1_000
HORIZON = 10_000
CVXPY_STEPS = 60
REBUILD_STEPS = 8
M = 0.1


def _instance(rng: np.random.Generator) -> list[QuadraticCost]:
    centers = np.cumsum(rng.normal(size=(HORIZON, DIM)), axis=0)
    return [QuadraticCost(y, M) for y in centers]


def _rebuilt_steps(costs, x0, lambda1):
    """R-OBD steps with a fresh cvxpy problem (constants, no Parameters) each."""
    import cvxpy as cp

    xs, x_prev = [], x0
    for cost in costs:
        x = cp.Variable(DIM)
        objective = 0.5 * cost.curvature * cp.sum_squares(x - cost.center)
        objective = objective + lambda1 * 0.5 * cp.sum_squares(x - x_prev)
        problem = cp.Problem(cp.Minimize(objective))
        problem.solve(solver=cp.CLARABEL)
        if problem.status != cp.OPTIMAL:
            raise RuntimeError(f"rebuilt problem ended {problem.status}")
        x_prev = np.asarray(x.value)
        xs.append(x_prev)
    return np.array(xs)


def main() -> None:
    import cvxpy  # noqa: F401  (imported before timing)

    rng = np.random.default_rng(0)
    costs = _instance(rng)
    x0 = np.zeros(DIM)

    closed = RegularizedOBD(M)
    start = time.perf_counter()
    xs_closed = closed.run(costs, x0)
    closed_step = (time.perf_counter() - start) / HORIZON

    generic = RegularizedOBD(M, solver="cvxpy").reset(x0)
    start = time.perf_counter()
    generic.step(costs[0])
    first_step = time.perf_counter() - start
    start = time.perf_counter()
    xs_generic = [generic.step(cost) for cost in costs[1:CVXPY_STEPS]]
    generic_step = (time.perf_counter() - start) / (CVXPY_STEPS - 1)

    start = time.perf_counter()
    xs_rebuilt = _rebuilt_steps(costs[:REBUILD_STEPS], x0, closed.lambda1)
    rebuilt_step = (time.perf_counter() - start) / REBUILD_STEPS

    gap = max(
        np.max(np.abs(np.array(xs_generic) - xs_closed[1:CVXPY_STEPS])),
        np.max(np.abs(xs_rebuilt - xs_closed[:REBUILD_STEPS])),
    )
    print(
        f"instance: d = {DIM}, T = {HORIZON}, m = {M}, R-OBD lambda1 = "
        f"{closed.lambda1:.4f}"
    )
    print(
        f"closed form:              {closed_step * 1e6:9.1f} us/step ({HORIZON} steps)"
    )
    print(
        f"cvxpy, Parameters:        {generic_step * 1e3:9.2f} ms/step "
        f"({CVXPY_STEPS - 1} steps; first step with compilation "
        f"{first_step * 1e3:.0f} ms)"
    )
    print(
        f"cvxpy, rebuilt each step: {rebuilt_step * 1e3:9.2f} ms/step "
        f"({REBUILD_STEPS} steps)"
    )
    print(f"max |x_cvxpy - x_closed| over the prefixes: {gap:.2e}")
    print(f"ratio generic cvxpy / closed form:      {generic_step / closed_step:8.1f}x")
    print(
        f"ratio rebuilt each step / Parameters:   {rebuilt_step / generic_step:8.1f}x"
    )


if __name__ == "__main__":
    main()
