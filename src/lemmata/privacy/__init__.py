"""Differentially private synthetic data and ensembles of downstream models.

Generators share ``fit(df, epsilon, delta)`` and ``sample(n)``: an MST-style
marginal mechanism, an MWEM-style workload mechanism (both accounted in zCDP)
and a DP-GAN whose discriminator is trained by DP-SGD through opacus. torch
and opacus are imported only when the DP-GAN is fitted.
"""

from lemmata.privacy._accounting import (
    DEFAULT_ORDERS,
    PrivacyLedger,
    Spend,
    exponential_mechanism_rho,
    gaussian_rho,
    laplace_rho,
    rdp_to_epsilon,
    rho_from_epsilon,
    rho_to_epsilon,
)
from lemmata.privacy._base import BaseSynthesizer, project_simplex
from lemmata.privacy._domain import Domain
from lemmata.privacy._ensemble import MODES, SyntheticDataEnsemble, member_spend
from lemmata.privacy._gan import (
    DPGANSynthesizer,
    calibrate_noise,
    subsampled_gaussian_rdp,
)
from lemmata.privacy._metrics import (
    accuracy,
    brier_score,
    expected_calibration_error,
    marginal_tv_distance,
    roc_auc,
)
from lemmata.privacy._mst import MSTSynthesizer, marginal_counts
from lemmata.privacy._mwem import MWEMSynthesizer

__all__ = [
    "DEFAULT_ORDERS",
    "MODES",
    "BaseSynthesizer",
    "DPGANSynthesizer",
    "Domain",
    "MSTSynthesizer",
    "MWEMSynthesizer",
    "PrivacyLedger",
    "Spend",
    "SyntheticDataEnsemble",
    "accuracy",
    "brier_score",
    "calibrate_noise",
    "expected_calibration_error",
    "exponential_mechanism_rho",
    "gaussian_rho",
    "laplace_rho",
    "marginal_counts",
    "marginal_tv_distance",
    "member_spend",
    "project_simplex",
    "rdp_to_epsilon",
    "rho_from_epsilon",
    "rho_to_epsilon",
    "roc_auc",
    "subsampled_gaussian_rdp",
]
