"""Network building blocks: the CRReLU activation and its entropy toolkit
(arXiv:2405.12954), in-context-learning blocks in :mod:`lemmata.nn.icl`
(arXiv:2501.18187), KV-Lock attention for training-free video editing and the
CoLoGen mixture-of-LoRA-experts pieces.
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
from lemmata.nn._cologen import (
    LoRAExpert,
    PRWSourceKV,
    StagedCurriculum,
    noisy_top1_route,
    veteran_loss,
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
from lemmata.nn._kvlock import (
    KVLockAttnProcessor,
    KVLockController,
    KVLockEdit,
    KVLockSchedule,
    cfg_zero_star,
    hallucination_variance,
    install_kv_lock,
    kv_lock_edit,
    latent_mask,
    token_mask,
)

__all__ = [
    "ACTIVATIONS",
    "CRReLU",
    "KVLockAttnProcessor",
    "KVLockController",
    "KVLockEdit",
    "KVLockSchedule",
    "LoRAExpert",
    "PRWSourceKV",
    "StagedCurriculum",
    "activation_param_groups",
    "cfg_zero_star",
    "crrelu",
    "crrelu_epsilons",
    "crrelu_inverse_correction",
    "eafo_activation",
    "eafo_correction",
    "entropy_gradient",
    "hallucination_variance",
    "histogram_entropy",
    "icl",
    "install_kv_lock",
    "kv_lock_edit",
    "latent_mask",
    "make_activation",
    "noisy_top1_route",
    "output_entropy",
    "swap_activations",
    "token_mask",
    "vasicek_entropy",
    "veteran_loss",
    "wafbc",
]
