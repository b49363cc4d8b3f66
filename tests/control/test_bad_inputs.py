"""Bad inputs: clear errors naming the parameter, the constraint and the value."""

import control as ct
import numpy as np
import pytest

from lemmata.control import (
    CandidateSet,
    EstimatorSupervisor,
    ObserverController,
    SupervisoryController,
    SwitchedSystem,
    SwitchingStrategy,
    detect_instability,
    estimate_markov,
    hinf_norm,
    random_candidates,
    simulate_closed_loop,
)

A2 = np.array([[0.5, 0.1], [0.0, 0.3]])
B2 = np.array([[1.0], [0.5]])
C2 = np.array([[1.0, 0.0]])
PLANTS = [(A2, B2, C2), (0.9 * A2, B2, C2), (A2, 2 * B2, C2)]


def _plants(k, **change):
    plants = [list(p) for p in PLANTS]
    for name, value in change.items():
        plants[k]["ABC".index(name)] = value
    return [tuple(p) for p in plants]


CANDIDATE_CASES = [
    (
        {"systems": _plants(1, A=np.eye(3))},
        ValueError,
        r"systems\[1\]\.A must have shape \(2, 2\) to match systems\[0\]; got \(3, 3\)",
    ),
    (
        {"systems": _plants(2, B=np.ones((2, 2)))},
        ValueError,
        r"systems\[2\]\.B must have shape \(2, 1\) to match systems\[0\]; got \(2, 2\)",
    ),
    (
        {"systems": _plants(0, C=np.ones((1, 3)))},
        ValueError,
        r"systems\[0\]\.C must have shape \(\d+, 2\) to match systems\[0\]\.A; "
        r"got \(1, 3\)",
    ),
    (
        {"systems": _plants(0, B=np.ones((3, 1)))},
        ValueError,
        r"systems\[0\]\.B must have shape \(2, 1\) to match systems\[0\]\.A; "
        r"got \(3, 1\)",
    ),
    (
        {"systems": _plants(0, A=np.ones((2, 3)))},
        ValueError,
        r"systems\[0\]\.A must be square; got shape \(2, 3\)",
    ),
    (
        {"systems": []},
        ValueError,
        r"systems must hold at least 2 candidate models; got 0",
    ),
    (
        {"systems": PLANTS[:1]},
        ValueError,
        r"systems must hold at least 2 candidate models; got 1",
    ),
    (
        {"systems": [PLANTS[0], PLANTS[1], PLANTS[0]]},
        ValueError,
        r"systems\[2\] duplicates systems\[0\]",
    ),
    (
        {"systems": _plants(1, A=np.array([[np.nan, 0], [0, 0.1]]))},
        ValueError,
        r"systems\[1\]\.A must be finite",
    ),
    (
        {"systems": PLANTS, "w_var": -1.0},
        ValueError,
        r"w_var must be >= 0 and finite; got -1\.0",
    ),
    (
        {"systems": PLANTS, "eta_var": -0.5},
        ValueError,
        r"eta_var must be >= 0 and finite; got -0\.5",
    ),
    (
        {"systems": PLANTS, "eta_var": float("nan")},
        ValueError,
        r"eta_var must be >= 0 and finite; got nan",
    ),
    (
        {"systems": PLANTS, "w_var": "1"},
        TypeError,
        r"w_var must be a real number; got str",
    ),
    (
        {"systems": PLANTS, "Q": np.eye(3)},
        ValueError,
        r"Q must have shape \(2, 2\) to match A; got \(3, 3\)",
    ),
    (
        {"systems": PLANTS, "R": np.eye(2)},
        ValueError,
        r"R must have shape \(1, 1\) to match B; got \(2, 2\)",
    ),
    ({"systems": "abc"}, TypeError, r"systems\[0\] must be a control\.StateSpace"),
    (
        {"systems": ct.ss(A2, B2, C2, 0, dt=1)},
        TypeError,
        r"systems must be a sequence of candidate models; got StateSpace",
    ),
    (
        {"systems": [ct.ss(A2, B2, C2, 0), ct.ss(A2, B2, C2, 0)]},
        ValueError,
        r"systems\[0\] must be discrete-time; got dt=0",
    ),
    (
        {"systems": [ct.ss(A2, B2, C2, 1, dt=1)] * 2},
        ValueError,
        r"systems\[0\] must be strictly proper \(D = 0\)",
    ),
    (
        {"systems": [(np.diag([1.5, 0.5]), np.array([[0.0], [1.0]]), C2), PLANTS[0]]},
        ValueError,
        r"systems\[0\]: the model is not stabilisable/detectable",
    ),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), CANDIDATE_CASES)
def test_candidate_set_rejects(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        CandidateSet(**kwargs)


def test_matched_controller_must_stabilise():
    unstable = np.diag([1.5, 0.5])
    controllers = [
        ObserverController(
            A=unstable, B=B2, C=C2, K=np.zeros((1, 2)), L=np.zeros((2, 1))
        ),
        ObserverController(A=A2, B=B2, C=C2, K=np.zeros((1, 2)), L=np.zeros((2, 1))),
    ]
    with pytest.raises(
        ValueError,
        match=r"controller 0 must stabilise its own model "
        r"0; got closed-loop spectral radius 1\.5",
    ):
        CandidateSet([(unstable, B2, C2), PLANTS[0]], controllers=controllers)


@pytest.fixture
def cs():
    return CandidateSet(PLANTS)


SIMULATOR_CASES = [
    (
        {"true_index": 3},
        ValueError,
        r"true_index must be in \[0, 2\] for a set of 3 candidates; got 3",
    ),
    (
        {"true_index": -1},
        ValueError,
        r"true_index must be in \[0, 2\] for a set of 3 candidates; got -1",
    ),
    ({"true_index": 1.0}, TypeError, r"true_index must be an int; got float"),
    ({"true_index": True}, TypeError, r"true_index must be an int; got bool"),
    (
        {"true_index": 0, "u_var": -1.0},
        ValueError,
        r"u_var must be >= 0 and finite; got -1\.0",
    ),
    (
        {"true_index": 0, "rng": 3},
        TypeError,
        r"rng must be a numpy\.random\.Generator; got int",
    ),
    ({"true_index": 0, "rng": None}, ValueError, r"rng must be given"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), SIMULATOR_CASES)
def test_simulator_rejects(cs, kwargs, exc, pattern):
    kwargs = {"rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(exc, match=pattern):
        SwitchedSystem(cs, **kwargs)


def test_simulator_step_rejects_unknown_controller(cs):
    sim = SwitchedSystem(cs, 0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"controller must be in \[0, 2\]"):
        sim.step(5)


ALGORITHM_CASES = [
    (
        SupervisoryController,
        {"delta": 1.5},
        ValueError,
        r"delta must be in \(0, 1\); got 1\.5",
    ),
    (
        SupervisoryController,
        {"delta": 0.0},
        ValueError,
        r"delta must be in \(0, 1\); got 0\.0",
    ),
    (
        SupervisoryController,
        {"variant": "ucb"},
        ValueError,
        r"variant must be one of \['elimination', 'optimistic'\]; got 'ucb'",
    ),
    (SupervisoryController, {"window": 1}, ValueError, r"window must be >= 2; got 1"),
    (SwitchingStrategy, {"h": 0}, ValueError, r"h must be >= 1; got 0"),
    (
        SwitchingStrategy,
        {"eps_a": -0.1},
        ValueError,
        r"eps_a must be > 0 and finite; got -0\.1",
    ),
    (
        SwitchingStrategy,
        {"order": [0, 0, 1]},
        ValueError,
        r"order must list distinct controller indices in \[0, 2\]",
    ),
    (
        EstimatorSupervisor,
        {"forgetting": 1.0},
        ValueError,
        r"forgetting must be in \(0, 1\); got 1\.0",
    ),
    (EstimatorSupervisor, {"dwell": 0}, ValueError, r"dwell must be >= 1; got 0"),
]


@pytest.mark.parametrize(("cls", "kwargs", "exc", "pattern"), ALGORITHM_CASES)
def test_algorithms_reject(cs, cls, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(cs, **kwargs)


def test_algorithms_reject_other_inputs(cs):
    with pytest.raises(TypeError, match="candidates must be a CandidateSet; got list"):
        SupervisoryController(PLANTS)
    other = CandidateSet(PLANTS)
    sim = SwitchedSystem(other, 0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="system must simulate the same CandidateSet"):
        SupervisoryController(cs).run(sim, 10)
    sim = SwitchedSystem(cs, 0, u_var=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"system\.u_var must be > 0"):
        SwitchingStrategy(cs).run(sim, 10)
    with pytest.raises(ValueError, match=r"n_steps must be >= 1; got 0"):
        SupervisoryController(cs).run(sim, 0)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\); got 2"):
        detect_instability(sim, 0, 10, delta=2)


REGRESSION_CASES = [
    (
        {"y": np.zeros((20, 2)), "upsilon": np.zeros((19, 1)), "h": 2},
        ValueError,
        r"upsilon must have shape \(20, 1\) to match y \(20, 2\); got \(19, 1\)",
    ),
    (
        {"y": np.zeros((20, 2)), "upsilon": np.zeros((20, 1)), "h": 0},
        ValueError,
        r"h must be >= 1; got 0",
    ),
    (
        {"y": np.zeros((5, 2)), "upsilon": np.zeros((5, 1)), "h": 5},
        ValueError,
        r"y must have more than h=5 steps; got 5",
    ),
    (
        {"y": np.full((20, 2), np.inf), "upsilon": np.zeros((20, 1)), "h": 2},
        ValueError,
        r"y and upsilon must be finite",
    ),
    (
        {
            "y": np.zeros((20, 2)),
            "upsilon": np.ones((20, 1)),
            "h": 2,
            "lengths": [2, 30],
        },
        ValueError,
        r"lengths must be integers in \(2, 20\]",
    ),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), REGRESSION_CASES)
def test_estimate_markov_rejects(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        estimate_markov(**kwargs)


def test_other_functions_reject(cs):
    with pytest.raises(ValueError, match=r"A must be Schur stable"):
        hinf_norm(np.eye(2) * 1.01, np.ones((2, 1)), np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"B must have shape \(2, 1\) to match A"):
        hinf_norm(A2, np.ones((3, 1)), C2)
    with pytest.raises(ValueError, match=r"n_trials must be >= 1; got 0"):
        simulate_closed_loop(cs, 0, 0, 10, rng=np.random.default_rng(0), n_trials=0)
    with pytest.raises(ValueError, match=r"j must be in \[0, 2\]"):
        cs.closed_loop(0, 7)
    with pytest.raises(ValueError, match=r"n_candidates must be >= 2; got 1"):
        random_candidates(1, 2, 1, 1, rng=np.random.default_rng(0))
