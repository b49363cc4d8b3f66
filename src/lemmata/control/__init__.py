"""Identification and supervisory switching control of linear systems.

A partially observed linear plant is one of N known candidates, each with a
matched controller that may destabilise the others. This package builds the
candidate set and its N x N closed loops (:class:`CandidateSet`), simulates the
plant under a switched controller (:class:`SwitchedSystem`), identifies the
plant by least squares and a tournament (:func:`estimate_markov`,
:func:`tournament`; arXiv 2404.08120), detects destabilising controllers from
output energy (:func:`detect_instability`, :class:`EnergyBound`), and runs
the switching strategy of
arXiv 2404.08120 (:class:`SwitchingStrategy`) and the bandit-style supervisors of
arXiv 2603.14762 (:class:`SupervisoryController`), with the classical
estimator-based supervisor as a baseline (:class:`EstimatorSupervisor`).
"""

from lemmata.control._candidates import (
    CandidateSet,
    ClosedLoop,
    ObserverController,
    lqg_controller,
)
from lemmata.control._detect import InstabilityVerdict, detect_instability
from lemmata.control._energy import (
    EnergyBound,
    gaussian_chaos_bound,
    hinf_norm,
    hinf_norm_batch,
    initial_state_bound,
    lyapunov_observability,
)
from lemmata.control._generate import random_candidates, random_plant_matrices
from lemmata.control._identify import (
    critical_directions,
    estimate_markov,
    identify,
    regressors,
    separation,
    tournament,
)
from lemmata.control._result import SwitchingResult
from lemmata.control._simulate import Noise, SwitchedSystem, simulate_closed_loop
from lemmata.control._supervisor import EstimatorSupervisor, SupervisoryController
from lemmata.control._switching import SwitchingStrategy
from lemmata.control._windows import LoopBounds, ProjectedResidual

__all__ = [
    "CandidateSet",
    "ClosedLoop",
    "EnergyBound",
    "EstimatorSupervisor",
    "InstabilityVerdict",
    "LoopBounds",
    "Noise",
    "ObserverController",
    "ProjectedResidual",
    "SupervisoryController",
    "SwitchedSystem",
    "SwitchingResult",
    "SwitchingStrategy",
    "critical_directions",
    "detect_instability",
    "estimate_markov",
    "gaussian_chaos_bound",
    "hinf_norm",
    "hinf_norm_batch",
    "identify",
    "initial_state_bound",
    "lqg_controller",
    "lyapunov_observability",
    "random_candidates",
    "random_plant_matrices",
    "regressors",
    "separation",
    "simulate_closed_loop",
    "tournament",
]
