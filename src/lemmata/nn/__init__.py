"""Network building blocks: the CRReLU activation and its entropy toolkit
(arXiv:2405.12954), and in-context-learning blocks in :mod:`lemmata.nn.icl`
(arXiv:2501.18187).
"""

from lemmata.nn import icl
from lemmata.nn._activations import (
    ACTIVATIONS,
    CRReLU,
    activation_param_groups,
    crrelu,
    crrelu_epsilons,
    make_activation,
    swap_activations,
)
from lemmata.nn._eafo import (
    crrelu_inverse_correction,
    eafo_activation,
    eafo_correction,
    entropy_gradient,
    histogram_entropy,
    output_entropy,
    vasicek_entropy,
    wafbc,
)

__all__ = [
    "ACTIVATIONS",
    "CRReLU",
    "activation_param_groups",
    "crrelu",
    "crrelu_epsilons",
    "crrelu_inverse_correction",
    "eafo_activation",
    "eafo_correction",
    "entropy_gradient",
    "histogram_entropy",
    "icl",
    "make_activation",
    "output_entropy",
    "swap_activations",
    "vasicek_entropy",
    "wafbc",
]
