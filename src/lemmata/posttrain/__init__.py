"""Post-training of language and diffusion models: preference losses, unlearning
objectives and critic-free reinforcement fine-tuning, as pure functions over
log-probabilities and as drop-in pieces for TRL and transformers trainers.

The pure functions import only torch. The trainers (:class:`FDPOTrainer`,
:class:`MIOTrainer`, :class:`PreferenceLossTrainer`, :class:`UnlearningTrainer`,
:class:`SLASGRPOTrainer`) subclass TRL or transformers trainers and are imported
on first use, so ``import lemmata.posttrain`` stays fast.
"""

import importlib

from lemmata.posttrain import grpo, tofu
from lemmata.posttrain._fictitious import (
    QA,
    FictitiousBenchmark,
    make_fictitious_benchmark,
)
from lemmata.posttrain._flow_grpo import (
    ConditionalVelocityMLP,
    FlowGRPOTrainer,
    flow_matching_loss,
    sample_with_logprobs,
)
from lemmata.posttrain._mask_grpo import (
    MaskGITTransformer,
    MaskGRPO,
    MaskGRPOConfig,
    maskgit_loss,
    transition_logps,
    unmask_rollout,
)
from lemmata.posttrain._models import load_smollm2, smollm2_path, tiny_causal_lm
from lemmata.posttrain._preference import (
    DIVERGENCES,
    Divergence,
    diffusion_preference_loss,
    mio_loss,
    preference_loss,
)
from lemmata.posttrain._pretext import (
    apply_transform,
    pretext_accuracy_reward,
    pretext_prompt,
    viss_prompt,
    viss_reward,
)
from lemmata.posttrain._unlearning import (
    OBJECTIVES,
    dipo_loss,
    get_objective,
    graddiff_loss,
    gradient_ascent_loss,
    npo_loss,
    simnpo_loss,
)
from lemmata.posttrain.grpo import group_advantages, policy_loss, slas_advantages

_LAZY = {
    "FDPOTrainer": "lemmata.posttrain._dpo_trainer",
    "MIOTrainer": "lemmata.posttrain._dpo_trainer",
    "PreferenceLossTrainer": "lemmata.posttrain._dpo_trainer",
    "SLASGRPOTrainer": "lemmata.posttrain._trl_grpo",
    "UnlearningTrainer": "lemmata.posttrain._unlearn_trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lemmata.posttrain' has no attribute {name!r}")


__all__ = [
    "DIVERGENCES",
    "OBJECTIVES",
    "QA",
    "ConditionalVelocityMLP",
    "Divergence",
    "FDPOTrainer",
    "FictitiousBenchmark",
    "FlowGRPOTrainer",
    "MIOTrainer",
    "MaskGITTransformer",
    "MaskGRPO",
    "MaskGRPOConfig",
    "PreferenceLossTrainer",
    "SLASGRPOTrainer",
    "UnlearningTrainer",
    "apply_transform",
    "diffusion_preference_loss",
    "dipo_loss",
    "flow_matching_loss",
    "get_objective",
    "graddiff_loss",
    "gradient_ascent_loss",
    "group_advantages",
    "grpo",
    "load_smollm2",
    "make_fictitious_benchmark",
    "maskgit_loss",
    "mio_loss",
    "npo_loss",
    "policy_loss",
    "preference_loss",
    "pretext_accuracy_reward",
    "pretext_prompt",
    "sample_with_logprobs",
    "simnpo_loss",
    "slas_advantages",
    "smollm2_path",
    "tiny_causal_lm",
    "tofu",
    "transition_logps",
    "unmask_rollout",
    "viss_prompt",
    "viss_reward",
]
