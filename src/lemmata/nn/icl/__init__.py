"""In-context regression with linear self-attention and GLU feed-forward layers.

Layers (:class:`LinearSelfAttention`, :class:`GLUFeedForward`, :class:`ICLBlock`,
:class:`ICLTransformer`), prompt construction (:func:`build_prompt`,
:class:`PromptLayout`), task samplers (:class:`LinearTasks`,
:class:`QuadraticTasks`, :class:`CubicTasks`) and closed-form baselines, after
arXiv:2501.18187.
"""

from lemmata.nn.icl._baselines import (
    fit_preconditioner,
    kernel_ridge_predict,
    least_squares_predict,
    polynomial_features,
    preconditioned_gd_predict,
)
from lemmata.nn.icl._layers import (
    GLUFeedForward,
    ICLBlock,
    ICLTransformer,
    LinearSelfAttention,
)
from lemmata.nn.icl._prompts import PromptLayout, build_prompt
from lemmata.nn.icl._tasks import (
    CubicTasks,
    LinearTasks,
    QuadraticTasks,
    TaskBatch,
    TaskSampler,
)

__all__ = [
    "CubicTasks",
    "GLUFeedForward",
    "ICLBlock",
    "ICLTransformer",
    "LinearSelfAttention",
    "LinearTasks",
    "PromptLayout",
    "QuadraticTasks",
    "TaskBatch",
    "TaskSampler",
    "build_prompt",
    "fit_preconditioner",
    "kernel_ridge_predict",
    "least_squares_predict",
    "polynomial_features",
    "preconditioned_gd_predict",
]
