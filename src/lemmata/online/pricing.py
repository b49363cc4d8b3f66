"""Online learning of equilibrium prices with unknown supplier costs.

Market model, reference equilibrium solvers, the three regret metrics and the
online pricing algorithms of Jalota, Sun and Azizan (arXiv:2303.11522), as
reconstructed in :mod:`lemmata.online._pricing`.
"""

from lemmata.online._pricing import (
    SETTINGS,
    BisectionPricer,
    ContextualPricer,
    DualAscentPricer,
    Market,
    PowerSupplierCost,
    PricingAlgorithm,
    QuadraticSupplierCost,
    RegretMetrics,
    Scenario,
    SupplierCost,
    Trajectory,
    equilibrium_price,
    equilibrium_price_cvxpy,
    make_scenario,
    quadratic_equilibrium_price,
    regret_metrics,
    simulate,
)

__all__ = [
    "SETTINGS",
    "BisectionPricer",
    "ContextualPricer",
    "DualAscentPricer",
    "Market",
    "PowerSupplierCost",
    "PricingAlgorithm",
    "QuadraticSupplierCost",
    "RegretMetrics",
    "Scenario",
    "SupplierCost",
    "Trajectory",
    "equilibrium_price",
    "equilibrium_price_cvxpy",
    "make_scenario",
    "quadratic_equilibrium_price",
    "regret_metrics",
    "simulate",
]
