"""Post-training of language and diffusion models: preference losses, unlearning
objectives and critic-free reinforcement fine-tuning, as pure functions over
log-probabilities and as drop-in pieces for TRL and transformers trainers.
"""

from lemmata.posttrain._models import load_smollm2, smollm2_path, tiny_causal_lm

__all__ = ["load_smollm2", "smollm2_path", "tiny_causal_lm"]
