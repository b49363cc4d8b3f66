"""Smoothed online convex optimisation: OBD, Greedy OBD and Regularized OBD.

A learner sees a hitting cost ``f_t``, picks ``x_t`` and pays
``f_t(x_t) + c(x_t, x_{t-1})``. See Goel, Lin, Sun, Wierman, "Beyond Online
Balanced Descent: An Optimal Algorithm for Smoothed Online Optimization"
(arXiv:1905.12776). cvxpy is imported only when a step or program needs it.
"""

from lemmata.online._costs import (
    ConvexCost,
    CvxpyCost,
    CvxpyForm,
    HittingCost,
    QuadraticCost,
)
from lemmata.online._movement import (
    BregmanDivergence,
    MovementCost,
    NegativeEntropy,
    PNormPotential,
    Potential,
    SquaredEuclidean,
)
from lemmata.online._obd import (
    OBD,
    FollowTheMinimizer,
    GreedyOBD,
    OnlineAlgorithm,
    RegularizedOBD,
    StayPut,
    competitive_lower_bound,
    robd_competitive_bound,
    robd_default_parameters,
)
from lemmata.online._offline import (
    OfflineSolution,
    best_fixed_point,
    competitive_ratio,
    offline_optimum,
    static_regret,
    total_cost,
    trajectory_cost,
)

__all__ = [
    "OBD",
    "BregmanDivergence",
    "ConvexCost",
    "CvxpyCost",
    "CvxpyForm",
    "FollowTheMinimizer",
    "GreedyOBD",
    "HittingCost",
    "MovementCost",
    "NegativeEntropy",
    "OfflineSolution",
    "OnlineAlgorithm",
    "PNormPotential",
    "Potential",
    "QuadraticCost",
    "RegularizedOBD",
    "SquaredEuclidean",
    "StayPut",
    "best_fixed_point",
    "competitive_lower_bound",
    "competitive_ratio",
    "offline_optimum",
    "robd_competitive_bound",
    "robd_default_parameters",
    "static_regret",
    "total_cost",
    "trajectory_cost",
]
