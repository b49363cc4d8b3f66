r"""Super-Linear Advantage Shaping inside TRL's ``GRPOTrainer``.

``SLASGRPOTrainer`` is a drop-in replacement for ``trl.GRPOTrainer``: replacing the
class name is the only change a training script needs. It lets TRL compute its
batch-normalised advantages (``scale_rewards="batch"``) and then applies the
super-linear map of :func:`lemmata.posttrain.grpo.shape_advantages`, which is
elementwise, so it commutes with TRL's split of the batch across processes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from trl import GRPOTrainer

from lemmata.posttrain.grpo import _check_real, shape_advantages

__all__ = ["SLASGRPOTrainer"]

logger = logging.getLogger(__name__)


class SLASGRPOTrainer(GRPOTrainer):
    r"""TRL ``GRPOTrainer`` whose advantages are shaped by SLAS.

    .. math::

        \tilde A_{gi} = \operatorname{clip}\big(\operatorname{sign}(z_{gi})
        |z_{gi}|^{1+\gamma}, -c, c\big),\qquad
        z_{gi} = \frac{r_{gi} - \bar r_g}{\operatorname{std}(r) + 10^{-4}}

    :math:`z` is TRL's advantage with ``scale_rewards="batch"`` (group-centred
    reward over the Bessel-corrected standard deviation of all rewards of the
    generation batch, gathered over processes), :math:`\gamma` is ``slas_gamma`` and
    :math:`c` is ``slas_clip``. Everything else (generation, rewards, loss,
    logging) is TRL's.

    Parameters
    ----------
    *args, **kwargs
        Passed to ``trl.GRPOTrainer`` unchanged.
    slas_gamma : float, default=1.0
        Super-linearity :math:`\gamma`; must be >= 0. ``0`` gives TRL's batch
        scaling, clipped at ``slas_clip``.
    slas_clip : float or None, default=5.0
        Clip of the shaped advantages; ``None`` disables it.

    Notes
    -----
    ``args.scale_rewards`` is overridden to ``"batch"`` (logged at INFO level when
    it was something else), because SLAS normalises by the batch, not the group.
    ``multi_objective_aggregation="normalize_then_sum"`` is rejected: its advantages
    are centred on the batch, not on each prompt. Two extra metrics are logged:
    ``slas/clip_frac`` (fraction of shaped advantages at the clip) and
    ``slas/abs_advantage_mean``. The ``advantages`` column of TRL's completion
    table shows the shaped values. See :func:`lemmata.posttrain.grpo.slas_advantages`
    for the [reconstruction] choices.

    References
    ----------
    .. [1] Sun, Wang, Song et al. "Power Reinforcement Post-Training of Text-to-Image
       Models with Super-Linear Advantage Shaping." 2026. arXiv:2605.10937.
    """

    def __init__(
        self,
        *args: Any,
        slas_gamma: float = 1.0,
        slas_clip: float | None = 5.0,
        **kwargs: Any,
    ) -> None:
        self.slas_gamma = _check_real("slas_gamma", slas_gamma, low=0.0, strict=False)
        self.slas_clip = (
            None
            if slas_clip is None
            else _check_real("slas_clip", slas_clip, low=0.0, strict=True)
        )
        super().__init__(*args, **kwargs)
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "SLASGRPOTrainer needs multi_objective_aggregation="
                f"'sum_then_normalize'; got {self.multi_objective_aggregation!r}"
            )
        if self.scale_rewards != "batch":
            logger.info(
                "SLAS normalises by the batch: scale_rewards=%r overridden to 'batch'",
                self.scale_rewards,
            )
            self.scale_rewards = "batch"

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        z = output["advantages"]
        shaped = shape_advantages(z, gamma=self.slas_gamma, clip=self.slas_clip)
        output["advantages"] = shaped

        mode = "train" if self.model.training else "eval"
        with torch.no_grad():
            at_clip = (
                torch.zeros(())
                if self.slas_clip is None
                else (shaped.abs() >= self.slas_clip).float().mean()
            )
            self._metrics[mode]["slas/clip_frac"].append(at_clip.item())
            self._metrics[mode]["slas/abs_advantage_mean"].append(
                shaped.abs().mean().item()
            )
        self._reshape_logged_advantages(shaped.numel())
        return output

    def _reshape_logged_advantages(self, n_local: int) -> None:
        """Apply the shaping to the advantages TRL just appended to its log."""
        logged = self._logs.get("advantages") if hasattr(self, "_logs") else None
        if logged is None:
            return
        n = min(len(logged), n_local * self.accelerator.num_processes)
        tail = [logged.pop() for _ in range(n)][::-1]
        shaped = shape_advantages(
            torch.tensor(tail, dtype=torch.float64),
            gamma=self.slas_gamma,
            clip=self.slas_clip,
        )
        logged.extend(shaped.tolist())
