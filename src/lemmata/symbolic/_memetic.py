r"""The memetic algorithm of continued fraction regression (arXiv 2001.00624).

A candidate solution is a depth-:math:`d` continued fraction (see
:mod:`lemmata.symbolic._fraction`) plus two masks: the *selected variables*
:math:`s \in \{0, 1\}^p` and, per term, the variables that term uses
:math:`T_{k\cdot} \subseteq s`. Its guiding function (fitness, lower is better)
is

.. math::

    F = \mathrm{MSE} \cdot (1 + \delta\, |s|).

Agents sit in a complete tree (the paper's: a root, 3 leaders, 9 supporters);
each keeps a *pocket* (its best) and a *current* solution, with the invariants
pocket(a) <= current(a) and pocket(parent) <= pocket(child). One generation:
mutate some currents, recombine pockets into new currents, locally optimise
every new current, restore the invariants, and reset the root's pocket after
``stagnation`` generations without improvement.

All candidates of one step are evaluated and optimised together as one batch
(``(N, K, q)`` arrays), never one row or one candidate at a time, except in the
optional Nelder-Mead search.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lemmata.symbolic._local_search import levenberg_marquardt, mse, nelder_mead

__all__ = [
    "Batch",
    "MemeticResult",
    "Population",
    "Settings",
    "blend_weights",
    "mutate",
    "mutation_kind",
    "random_batch",
    "recombine",
    "restore_invariants",
    "run_memetic",
]

logger = logging.getLogger(__name__)

_INIT_RANGE = 3.0  # coefficients start in U(-3, 3), as in the paper
_SELECT_PROB = 1.0 / 3.0  # each variable starts selected with probability 1/3
_MIN_ROWS_TO_SUBSAMPLE = 200  # the reference subsamples only above 200 rows
_OPS = ("union", "intersection", "symmetric_difference")


@dataclass(frozen=True)
class Settings:
    """Resolved hyperparameters of one memetic run (see the estimator)."""

    depth: int = 4
    delta: float = 0.1
    n_generations: int = 50
    mutation_rate: float = 0.1
    stagnation: int = 5
    n_children: int = 3
    n_levels: int = 3
    local_search: str = "levenberg-marquardt"
    local_search_iter: int = 20
    local_search_restarts: int = 4
    subsample: float = 0.2
    tol: float = 1e-3
    pole_tol: float = 1e-8
    pole_margin: float = 0.0

    @property
    def n_terms(self) -> int:
        return 2 * self.depth + 1

    @property
    def n_agents(self) -> int:
        return sum(self.n_children**level for level in range(self.n_levels))


@dataclass
class Batch:
    """``N`` candidates: masks ``s (N, p)``, term masks ``T (N, K, p)``,
    coefficients ``W (N, K, p + 1)`` (column 0 the intercepts) and fitness."""

    s: np.ndarray
    T: np.ndarray
    W: np.ndarray
    fitness: np.ndarray

    def take(self, idx) -> Batch:
        return Batch(self.s[idx], self.T[idx], self.W[idx], self.fitness[idx])

    def put(self, idx, other: Batch) -> None:
        self.s[idx] = other.s
        self.T[idx] = other.T
        self.W[idx] = other.W
        self.fitness[idx] = other.fitness

    def copy(self) -> Batch:
        return Batch(self.s.copy(), self.T.copy(), self.W.copy(), self.fitness.copy())

    @property
    def free(self) -> np.ndarray:
        """Coefficients a local search may move: every intercept, every used
        variable."""
        intercepts = np.ones((*self.T.shape[:2], 1), dtype=bool)
        return np.concatenate([intercepts, self.T], axis=2)


@dataclass
class Population:
    """Agents in level order: the children of agent ``i`` are
    ``i * n_children + 1, ..., i * n_children + n_children``."""

    pocket: Batch
    current: Batch
    n_children: int

    def children(self, i: int) -> range:
        first = i * self.n_children + 1
        return range(first, min(first + self.n_children, len(self.pocket.fitness)))

    def swap_pocket_current(self, i: int) -> None:
        p, c = self.pocket.take([i]), self.current.take([i])
        self.pocket.put([i], c)
        self.current.put([i], p)

    def swap_pockets(self, i: int, j: int) -> None:
        a, b = self.pocket.take([i]), self.pocket.take([j])
        self.pocket.put([i], b)
        self.pocket.put([j], a)

    def invariants_hold(self) -> bool:
        if np.any(self.pocket.fitness > self.current.fitness):
            return False
        return all(
            self.pocket.fitness[i] <= self.pocket.fitness[c]
            for i in range(len(self.pocket.fitness))
            for c in self.children(i)
        )


@dataclass
class MemeticResult:
    """The best candidate of a run, its fitness trace and its cost."""

    best: Batch
    history: list[float] = field(default_factory=list)
    n_evaluations: int = 0
    n_resets: int = 0


class _Problem:
    """Data, settings, random stream and evaluation counter of one run."""

    def __init__(self, Xa, y, settings: Settings, rng: np.random.Generator):
        self.Xa, self.y, self.settings, self.rng = Xa, y, settings, rng
        self.n_evaluations = 0

    def fitness(self, batch: Batch) -> np.ndarray:
        self.n_evaluations += batch.W.shape[0]
        st = self.settings
        loss = mse(batch.W, self.Xa, self.y, st.pole_tol, st.pole_margin)
        return loss * (1.0 + self.settings.delta * batch.s.sum(axis=1))


def random_batch(
    n: int, n_features: int, n_terms: int, rng: np.random.Generator
) -> Batch:
    """``n`` random candidates: each variable selected with probability 1/3 and
    used by every term; coefficients and intercepts drawn from U(-3, 3)."""
    s = rng.random((n, n_features)) < _SELECT_PROB
    T = np.repeat(s[:, None, :], n_terms, axis=1)
    W = rng.uniform(-_INIT_RANGE, _INIT_RANGE, size=(n, n_terms, n_features + 1))
    W[..., 1:] *= T
    return Batch(s, T, W, np.full(n, np.inf))


def mutation_kind(current_fitness: float, pocket_fitness: float) -> str:
    """``"major"`` when current < 1.2 pocket or current > 2 pocket, else ``"soft"``."""
    if current_fitness < 1.2 * pocket_fitness or current_fitness > 2 * pocket_fitness:
        return "major"
    return "soft"


def mutate(batch: Batch, i: int, kind: str, rng: np.random.Generator) -> None:
    """Mutate candidate ``i`` of ``batch`` in place.

    Major: toggle one random variable in :math:`s` and in every term (a newly
    used coefficient starts at 0 or U(-3, 3), by a fair coin per term). Soft:
    toggle one selected variable in one random term (a newly used coefficient
    starts in U(-3, 3)); with no variable selected it falls back to major.
    """
    p = batch.s.shape[1]
    if p == 0:
        return
    K = batch.T.shape[1]
    selected = np.flatnonzero(batch.s[i])
    if kind == "soft" and selected.size:
        j, k = rng.choice(selected), rng.integers(K)
        batch.T[i, k, j] = not batch.T[i, k, j]
        batch.W[i, k, 1 + j] = rng.uniform(-_INIT_RANGE, _INIT_RANGE) * batch.T[i, k, j]
        return

    j = rng.integers(p)
    if batch.s[i, j]:
        batch.s[i, j] = False
        batch.T[i, :, j] = False
        batch.W[i, :, 1 + j] = 0.0
    else:
        batch.s[i, j] = True
        batch.T[i, :, j] = True
        fresh = rng.uniform(-_INIT_RANGE, _INIT_RANGE, size=K)
        batch.W[i, :, 1 + j] = np.where(rng.random(K) < 0.5, 0.0, fresh)


def blend_weights(rng: np.random.Generator, shape) -> np.ndarray:
    r""":math:`\lambda = (5U - 1)/3 \in [-1/3, 4/3]` with :math:`U \sim U(0, 1)`."""
    return (5.0 * rng.random(shape) - 1.0) / 3.0


def recombine(a: Batch, b: Batch, rng: np.random.Generator) -> tuple[Batch, np.ndarray]:
    r"""Children of the pairs ``(a[r], b[r])``; returns them and the operators.

    The child's selected variables are the union, intersection or symmetric
    difference of the parents' (each with probability 1/3, index into
    ``("union", "intersection", "symmetric_difference")``). In each term a
    selected variable used by both parents gets the blend
    :math:`c_a + \lambda (c_b - c_a)`, one used by one parent keeps that
    parent's coefficient, and intercepts are always blended.
    """
    n = a.s.shape[0]
    ops = rng.integers(3, size=n)
    op = ops[:, None]
    s = np.where(op == 0, a.s | b.s, np.where(op == 1, a.s & b.s, a.s ^ b.s))  # (n, p)
    both = a.T & b.T & s[:, None, :]
    only_a = a.T & ~b.T & s[:, None, :]
    only_b = b.T & ~a.T & s[:, None, :]

    lam = blend_weights(rng, a.W.shape)
    blended = a.W + lam * (b.W - a.W)
    coef = np.where(
        both, blended[..., 1:], np.where(only_a, a.W[..., 1:], b.W[..., 1:] * only_b)
    )
    W = np.concatenate([blended[..., :1], coef], axis=2)
    child = Batch(s, both | only_a | only_b, W, np.full(n, np.inf))
    return child, ops


def restore_invariants(pop: Population, max_passes: int = 100) -> None:
    """Swap solutions until pocket <= current in every agent and every parent's
    pocket <= its children's pockets.

    Each pass visits agents children-first (reverse level order); passes repeat
    until one changes nothing, since one pass can push a worse pocket below a
    child whose own subtree then needs fixing.
    """
    n_agents = len(pop.pocket.fitness)
    for _ in range(max_passes):
        changed = False
        for i in range(n_agents - 1, -1, -1):
            if pop.current.fitness[i] < pop.pocket.fitness[i]:
                pop.swap_pocket_current(i)
                changed = True
            for c in pop.children(i):
                if pop.pocket.fitness[c] < pop.pocket.fitness[i]:
                    pop.swap_pockets(i, c)
                    changed = True
                    if pop.current.fitness[c] < pop.pocket.fitness[c]:
                        pop.swap_pocket_current(c)
        if not changed:
            return


def _row_subsets(problem: _Problem, n_problems: int) -> tuple[np.ndarray, int]:
    """Rows for each local-search run, and the number of runs per candidate."""
    st = problem.settings
    n = problem.Xa.shape[0]
    if n <= _MIN_ROWS_TO_SUBSAMPLE or st.subsample >= 1.0:
        return np.empty(0, dtype=int), 1
    runs = st.local_search_restarts + 1
    m = max(int(np.ceil(st.subsample * n)), 2)
    keys = problem.rng.random((n_problems * runs, n))
    return np.argpartition(keys, m - 1, axis=1)[:, :m], runs


def local_search(problem: _Problem, batch: Batch) -> Batch:
    """Optimise the free coefficients of every candidate in ``batch``.

    With more than 200 rows each candidate gets ``local_search_restarts + 1``
    runs, each on its own random ``subsample`` of the rows; the run (or the
    unoptimised start) with the best guiding function on all rows is kept.
    """
    st = problem.settings
    N = batch.W.shape[0]
    if N == 0:
        return batch
    start_fitness = problem.fitness(batch)
    rows, runs = _row_subsets(problem, N)
    W0 = np.repeat(batch.W, runs, axis=0)
    free = np.repeat(batch.free, runs, axis=0)
    if rows.size:
        Xa, y = problem.Xa[rows], problem.y[rows]
    else:
        Xa, y = problem.Xa, problem.y
    search = (
        levenberg_marquardt
        if st.local_search == "levenberg-marquardt"
        else (nelder_mead)
    )
    found = search(
        W0, free, Xa, y, max_iter=st.local_search_iter, tol=st.tol, pole_tol=st.pole_tol
    )
    problem.n_evaluations += found.n_evaluations

    candidates = Batch(
        np.repeat(batch.s, runs, axis=0),
        np.repeat(batch.T, runs, axis=0),
        found.W,
        np.empty(N * runs),
    )
    if rows.size or st.pole_margin > 0:
        candidates.fitness = problem.fitness(candidates)
    else:
        candidates.fitness = found.loss * (1.0 + st.delta * candidates.s.sum(axis=1))
    per_run = candidates.fitness.reshape(N, runs)
    pick = np.argmin(per_run, axis=1)
    out = candidates.take(np.arange(N) * runs + pick)
    keep_start = start_fitness <= out.fitness
    out.put(keep_start, batch.take(keep_start))
    out.fitness[keep_start] = start_fitness[keep_start]
    return out


def _mutation_step(problem: _Problem, pop: Population) -> None:
    st, rng = problem.settings, problem.rng
    chosen = np.flatnonzero(rng.random(st.n_agents) < st.mutation_rate)
    if chosen.size == 0:
        return
    for i in chosen:
        kind = mutation_kind(pop.current.fitness[i], pop.pocket.fitness[i])
        mutate(pop.current, i, kind, rng)
    pop.current.put(chosen, local_search(problem, pop.current.take(chosen)))
    for i in chosen:
        if pop.current.fitness[i] < pop.pocket.fitness[i]:
            pop.swap_pocket_current(i)


def _recombination_pairs(pop: Population, level: int) -> list[tuple[int, int]]:
    """``(target, partner)`` pairs of every sub-population led at ``level``.

    For a leader ``l`` with supporters ``s1..sm`` the ring is
    ``(l, s1), (sm, l), (s1, s2), ..., (s(m-1), sm)``; with three supporters
    this is the paper's order ``(l, s1), (s3, l), (s1, s2), (s2, s3)``.
    """
    first = sum(pop.n_children**j for j in range(level))
    pairs = []
    for leader in range(first, first + pop.n_children**level):
        kids = list(pop.children(leader))
        if not kids:
            continue
        pairs += [(leader, kids[0]), (kids[-1], leader)]
        pairs += list(itertools.pairwise(kids))
    return pairs


def _recombination_step(problem: _Problem, pop: Population) -> None:
    for level in range(problem.settings.n_levels - 1):
        pairs = _recombination_pairs(pop, level)
        targets = np.array([t for t, _ in pairs])
        partners = np.array([p for _, p in pairs])
        children, _ = recombine(
            pop.pocket.take(targets), pop.pocket.take(partners), problem.rng
        )
        pop.current.put(targets, local_search(problem, children))
        for i in targets:
            if pop.current.fitness[i] < pop.pocket.fitness[i]:
                pop.swap_pocket_current(i)


def _initial_population(problem: _Problem) -> Population:
    st = problem.settings
    p = problem.Xa.shape[1] - 1
    pocket = random_batch(st.n_agents, p, st.n_terms, problem.rng)
    current = random_batch(st.n_agents, p, st.n_terms, problem.rng)
    pocket.fitness = problem.fitness(pocket)
    current.fitness = problem.fitness(current)
    pop = Population(pocket, current, st.n_children)
    restore_invariants(pop)
    return pop


def _reset_root(problem: _Problem, pop: Population) -> None:
    st = problem.settings
    fresh = random_batch(1, problem.Xa.shape[1] - 1, st.n_terms, problem.rng)
    fresh.fitness = problem.fitness(fresh)
    pop.pocket.put([0], fresh)
    restore_invariants(pop)


def run_memetic(
    Xa: np.ndarray,
    y: np.ndarray,
    settings: Settings,
    rng: np.random.Generator,
    *,
    select: Callable[[Batch], float] | None = None,
    callback: Callable[[int, Population], None] | None = None,
) -> MemeticResult:
    """Run the memetic algorithm on rows ``Xa = [1, X]`` and targets ``y``.

    ``select(candidate) -> score`` (lower is better) chooses which root pocket
    seen during the run is returned; by default its guiding function.
    ``callback(generation, population)`` is called after every generation.
    """
    problem = _Problem(Xa, y, settings, rng)
    pop = _initial_population(problem)
    score = select or (lambda cand: float(cand.fitness[0]))
    best = pop.pocket.take([0])
    best_score = score(best)
    result = MemeticResult(best=best)
    episode_best, episode_gen = pop.pocket.fitness[0], 0
    best_fitness = float(pop.pocket.fitness[0])

    for gen in range(1, settings.n_generations + 1):
        _mutation_step(problem, pop)
        _recombination_step(problem, pop)
        restore_invariants(pop)

        if gen > episode_gen + settings.stagnation:
            _reset_root(problem, pop)
            episode_best = np.inf
            result.n_resets += 1
        if pop.pocket.fitness[0] < episode_best:
            episode_best, episode_gen = pop.pocket.fitness[0], gen

        root = pop.pocket.take([0])
        root_score = score(root)
        if root_score < best_score:
            best, best_score = root, root_score
        best_fitness = min(best_fitness, float(pop.pocket.fitness[0]))
        result.history.append(best_fitness)
        logger.debug("generation %d: root pocket %.6g", gen, pop.pocket.fitness[0])
        if callback is not None:
            callback(gen, pop)

    result.best = best
    result.n_evaluations = problem.n_evaluations
    return result
