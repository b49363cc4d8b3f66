"""Privacy accounting in zero-concentrated and Rényi DP, and the run ledger."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from lemmata.privacy._checks import check_delta, check_epsilon, check_positive

__all__ = [
    "DEFAULT_ORDERS",
    "PrivacyLedger",
    "Spend",
    "exponential_mechanism_rho",
    "gaussian_rho",
    "laplace_rho",
    "rdp_to_epsilon",
    "rho_from_epsilon",
    "rho_to_epsilon",
]

logger = logging.getLogger(__name__)

#: Rényi orders on which RDP curves are stored: two fractional orders and the
#: integers 2-64, then a few large ones. opacus' default grid has 99 fractional
#: orders, whose series are slow to evaluate; the best order for the budgets
#: used here (epsilon of 0.5-10 at delta 1e-5) is an integer above 2.
DEFAULT_ORDERS = np.array([1.5, 1.75, *range(2, 65), 80.0, 128.0, 256.0], dtype=float)


def gaussian_rho(sensitivity: float, sigma: float) -> float:
    r"""zCDP cost of the Gaussian mechanism, :math:`\rho = \Delta_2^2 / (2\sigma^2)`.

    ``sensitivity`` is the L2 sensitivity :math:`\Delta_2` and ``sigma`` the noise
    standard deviation :math:`\sigma` (Bun and Steinke 2016, Prop. 1.6).
    """
    check_positive("sensitivity", sensitivity)
    check_positive("sigma", sigma)
    return float(sensitivity) ** 2 / (2.0 * float(sigma) ** 2)


def laplace_rho(epsilon: float) -> float:
    r"""zCDP cost of an :math:`\varepsilon`-DP mechanism, :math:`\varepsilon^2/2`.

    Used for the Laplace mechanism with scale :math:`\Delta_1/\varepsilon`
    (Bun and Steinke 2016, Prop. 1.4).
    """
    return check_epsilon(epsilon) ** 2 / 2.0


def exponential_mechanism_rho(epsilon: float) -> float:
    r"""zCDP cost of the exponential mechanism, :math:`\varepsilon^2/8`.

    The mechanism samples with probability proportional to
    :math:`\exp(\varepsilon\, s / (2\Delta))` (Cesar and Rogers 2021).
    """
    return check_epsilon(epsilon) ** 2 / 8.0


def rho_to_epsilon(rho: float, delta: float) -> float:
    r"""Convert :math:`\rho`-zCDP to :math:`(\varepsilon, \delta)`-DP.

    .. math:: \varepsilon = \rho + 2\sqrt{\rho \log(1/\delta)}

    (Bun and Steinke 2016, Prop. 1.3). ``rho`` is :math:`\rho \ge 0` and
    ``delta`` is :math:`\delta \in (0, 1)`.
    """
    if not rho >= 0:
        raise ValueError(f"rho must be >= 0; got {rho!r}")
    log_inv = math.log(1.0 / check_delta(delta))
    return float(rho + 2.0 * math.sqrt(rho * log_inv))


def rho_from_epsilon(epsilon: float, delta: float) -> float:
    r"""The largest :math:`\rho` whose conversion meets :math:`(\varepsilon,\delta)`.

    The inverse of :func:`rho_to_epsilon`:
    :math:`\rho = (\sqrt{\varepsilon + L} - \sqrt{L})^2` with
    :math:`L = \log(1/\delta)`.
    """
    eps = check_epsilon(epsilon)
    log_inv = math.log(1.0 / check_delta(delta))
    return float((math.sqrt(eps + log_inv) - math.sqrt(log_inv)) ** 2)


def rdp_to_epsilon(orders, rdp, delta: float) -> tuple[float, float]:
    r"""Convert an RDP curve to :math:`(\varepsilon, \delta)`-DP.

    .. math::

        \varepsilon = \min_\alpha\; \mathrm{RDP}(\alpha)
        + \log\frac{\alpha - 1}{\alpha} - \frac{\log\delta + \log\alpha}{\alpha - 1}

    (Balle et al. 2020, Thm. 21). ``orders`` are the orders :math:`\alpha > 1`,
    ``rdp`` the matching values. Returns ``(epsilon, best_order)``.
    """
    delta = check_delta(delta)
    orders = np.asarray(orders, dtype=float)
    rdp = np.asarray(rdp, dtype=float)
    if orders.shape != rdp.shape or orders.ndim != 1:
        raise ValueError(
            f"orders and rdp must be 1-d of equal length; got {orders.shape} "
            f"and {rdp.shape}"
        )
    eps = (
        rdp
        + np.log1p(-1.0 / orders)
        - (math.log(delta) + np.log(orders)) / (orders - 1.0)
    )
    eps = np.where(np.isnan(eps), np.inf, eps)
    i = int(np.argmin(eps))
    return max(float(eps[i]), 0.0), float(orders[i])


@dataclass(frozen=True)
class Spend:
    """One mechanism's privacy spend.

    At most one of ``rho`` (zCDP) and ``rdp`` (an RDP curve on ``orders``) is set;
    ``epsilon`` and ``delta`` always hold its :math:`(\\varepsilon, \\delta)` view.
    """

    name: str
    epsilon: float
    delta: float
    rho: float | None = None
    orders: tuple[float, ...] | None = None
    rdp: tuple[float, ...] | None = None


@dataclass
class PrivacyLedger:
    r"""Every mechanism's spend in a run, composed and checked against a budget.

    The total is computed in the tightest calculus all entries share:

    - all entries in zCDP: :math:`\rho = \sum_i \rho_i`, then
      :func:`rho_to_epsilon` at the ledger's ``delta``;
    - all in zCDP or RDP: the RDP curves add (a :math:`\rho`-zCDP entry is
      :math:`\rho\alpha` at order :math:`\alpha`), then :func:`rdp_to_epsilon`;
    - otherwise basic composition, :math:`(\sum_i \varepsilon_i, \sum_i \delta_i)`.

    With ``disjoint=True`` the entries touch disjoint shards of the data, and the
    total is the largest single spend (parallel composition).

    Parameters
    ----------
    epsilon, delta : float
        The target budget; ``epsilon > 0``, ``delta`` in (0, 1).
    disjoint : bool, default=False
        Whether entries act on disjoint subsets of the rows.
    """

    epsilon: float
    delta: float
    disjoint: bool = False
    entries: list[Spend] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.epsilon = check_epsilon(self.epsilon)
        self.delta = check_delta(self.delta)

    def record(self, spend: Spend) -> None:
        """Append one spend and log it."""
        self.entries.append(spend)
        logger.debug("privacy spend %s: epsilon=%.6g", spend.name, spend.epsilon)

    def extend(self, other: PrivacyLedger, prefix: str = "") -> None:
        """Append every entry of ``other``, with names prefixed by ``prefix``."""
        for s in other.entries:
            self.record(
                Spend(prefix + s.name, s.epsilon, s.delta, s.rho, s.orders, s.rdp)
            )

    def total(self) -> tuple[float, float]:
        """The composed ``(epsilon, delta)`` of all entries."""
        if not self.entries:
            return 0.0, 0.0
        if self.disjoint:
            return (
                max(s.epsilon for s in self.entries),
                max(s.delta for s in self.entries),
            )
        if all(s.rho is not None for s in self.entries):
            rho = sum(s.rho for s in self.entries)
            return rho_to_epsilon(rho, self.delta), self.delta
        if all(s.rho is not None or s.rdp is not None for s in self.entries):
            return self._rdp_total(), self.delta
        return (
            sum(s.epsilon for s in self.entries),
            sum(s.delta for s in self.entries),
        )

    def _rdp_total(self) -> float:
        orders = next(
            (np.asarray(s.orders) for s in self.entries if s.orders is not None),
            DEFAULT_ORDERS,
        )
        curve = np.zeros_like(orders, dtype=float)
        for s in self.entries:
            if s.rdp is not None:
                if not np.array_equal(np.asarray(s.orders), orders):
                    raise ValueError(
                        f"RDP entry {s.name!r} uses different orders than the rest"
                    )
                curve += np.asarray(s.rdp)
            else:
                curve += s.rho * orders
        return rdp_to_epsilon(orders, curve, self.delta)[0]

    def within_budget(self, tol: float = 1e-6) -> bool:
        """Whether the total is within the target ``(epsilon + tol, delta)``."""
        eps, delta = self.total()
        return eps <= self.epsilon + tol and delta <= self.delta * (1 + 1e-9)
