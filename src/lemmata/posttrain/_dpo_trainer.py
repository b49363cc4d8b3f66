"""TRL integration: DPOTrainer subclasses that train with lemmata's preference losses.

A TRL user swaps ``DPOTrainer(...)`` for
``FDPOTrainer(..., divergence="jensen_shannon")`` or ``MIOTrainer(...)``; data
handling, the reference model (a copy, a PEFT adapter switched off, or
precomputed log-probs), the optimiser and the logged metrics stay TRL's.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import Tensor
from trl import DPOConfig, DPOTrainer

from lemmata.posttrain._preference import (
    _check_alpha,
    mio_loss,
    preference_loss,
    resolve_divergence,
)

__all__ = ["FDPOTrainer", "MIOTrainer", "PreferenceLossTrainer"]

logger = logging.getLogger(__name__)

_NON_MODEL_KEYS = frozenset(
    {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
)

# Metric sums gathered in one tensor (one host sync per step), in this order.
_SUMS = (
    "entropy",
    "tokens",
    "logits_chosen",
    "tokens_chosen",
    "logits_rejected",
    "tokens_rejected",
    "top1_chosen",
    "rewards_chosen",
    "rewards_rejected",
    "accuracies",
    "margins",
    "logps_chosen",
    "logps_rejected",
    "pairs",
    "attention",
    "empty_completions",
)


def _check_args(args: DPOConfig | None, trainer: str) -> None:
    # TRL options that act inside TRL's own loss code and would be silently ignored.
    if args is None:
        return
    if list(args.loss_type) != ["sigmoid"]:
        raise ValueError(
            f"{trainer} replaces TRL's loss, so args.loss_type must stay ['sigmoid']; "
            f"got {args.loss_type}"
        )
    if args.f_divergence_type != "reverse_kl":
        raise ValueError(
            f"{trainer} takes the divergence as its own argument, so "
            "args.f_divergence_type must stay 'reverse_kl'; got "
            f"{args.f_divergence_type!r}"
        )
    if args.ld_alpha is not None:
        raise NotImplementedError(
            f"{trainer} does not implement LD-DPO length weighting; got "
            f"args.ld_alpha={args.ld_alpha!r}, use None"
        )
    if args.use_weighting:
        raise NotImplementedError(
            f"{trainer} does not implement WPO weighting; got args.use_weighting=True"
        )


class PreferenceLossTrainer(DPOTrainer):
    """A :class:`trl.DPOTrainer` whose per-pair loss is :meth:`pair_loss`.

    Subclasses override :meth:`pair_loss`; everything else (tokenisation,
    collation, the reference model or PEFT adapter, precomputed reference
    log-probs, metrics) is TRL's. Sequence log-probabilities are sums over
    completion tokens, as in TRL.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`trl.DPOTrainer`. ``args.loss_type`` must stay
        ``["sigmoid"]`` and ``args.f_divergence_type`` ``"reverse_kl"`` (the loss is
        this class's); ``args.ld_alpha`` and ``args.use_weighting`` are not
        supported. ``args.beta`` is the :math:`\\beta` handed to the loss.

    Notes
    -----
    The metrics TRL logs (``rewards/*``, ``logps/*``, ``logits/*``, ``entropy``,
    ``mean_token_accuracy``, ``num_tokens``) are computed from the same tensors and
    gathered in one reduction instead of one host sync each. A batch with an empty
    chosen or rejected completion raises ``ValueError``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        _check_args(config, type(self).__name__)
        super().__init__(*args, **kwargs)

    def pair_loss(
        self,
        chosen_logps: Tensor,
        rejected_logps: Tensor,
        ref_chosen_logps: Tensor,
        ref_rejected_logps: Tensor,
    ) -> Tensor:
        """Per-pair loss, shape ``(B,)``, from sequence log-probs of shape ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} must define pair_loss")

    def _reference_logps(
        self, model: Any, inputs: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        # TRL's helper picks the adapter-disabled model for PEFT and runs no_grad.
        reference = self.ref_model if self.ref_model is not None else self.model
        return self.compute_ref_log_probs(reference, inputs)

    def _compute_loss(
        self, model: Any, inputs: dict[str, Tensor], return_outputs: bool
    ):
        mode = "train" if self.model.training else "eval"
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)

        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)  # (2B,): chosen, rejected
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        ref_chosen_logps, ref_rejected_logps = self._reference_logps(model, inputs)

        loss = self.pair_loss(
            chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps
        ).mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        self._log_metrics(
            mode, inputs, outputs, logps, ref_chosen_logps, ref_rejected_logps
        )

        if return_outputs:
            warnings.warn(
                "return_outputs=True recomputes the logits with an extra forward pass, "
                "as TRL does; TRL deprecates it for removal in v2.0.0",
                FutureWarning,
                stacklevel=2,
            )
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    @torch.no_grad()
    def _log_metrics(
        self, mode, inputs, outputs, logps, ref_chosen_logps, ref_rejected_logps
    ):
        shift_mask = inputs["completion_mask"][..., 1:]
        seq_len = shift_mask.size(1)
        chosen_mask, rejected_mask = shift_mask.bool().chunk(2, dim=0)
        chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].chunk(
            2, dim=0
        )
        chosen_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
        chosen_logps, rejected_logps = logps.detach().chunk(2, dim=0)
        chosen_rewards = self.beta * (chosen_logps - ref_chosen_logps)
        rejected_rewards = self.beta * (rejected_logps - ref_rejected_logps)

        parts = [
            (outputs.entropy[:, -seq_len:] * shift_mask).sum(),
            shift_mask.sum(),
            chosen_logits[chosen_mask].sum(),
            chosen_mask.sum(),
            rejected_logits[rejected_mask].sum(),
            rejected_mask.sum(),
            (chosen_top1 & chosen_mask).sum(),
            chosen_rewards.sum(),
            rejected_rewards.sum(),
            (chosen_rewards > rejected_rewards).sum(),
            (chosen_rewards - rejected_rewards).sum(),
            chosen_logps.sum(),
            rejected_logps.sum(),
            torch.tensor(chosen_logps.numel(), device=logps.device),
            inputs["attention_mask"].sum(),
            (shift_mask.sum(dim=1) == 0).sum(),
        ]
        sums = torch.stack([p.float() for p in parts])
        values = dict(
            zip(_SUMS, self.accelerator.reduce(sums, "sum").tolist(), strict=True)
        )

        if values["empty_completions"]:
            raise ValueError(
                "every chosen and rejected completion must have at least one token; "
                f"got {int(values['empty_completions'])} empty completion(s) in the "
                "batch"
            )

        def ratio(num: str, den: str) -> float:
            return values[num] / values[den] if values[den] > 0 else 0.0

        metrics = self._metrics[mode]
        metrics["entropy"].append(ratio("entropy", "tokens"))
        if mode == "train":
            self._total_train_tokens += int(values["attention"]) // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        metrics["logits/chosen"].append(ratio("logits_chosen", "tokens_chosen"))
        metrics["logits/rejected"].append(ratio("logits_rejected", "tokens_rejected"))
        metrics["mean_token_accuracy"].append(ratio("top1_chosen", "tokens_chosen"))
        for key in ("rewards_chosen", "rewards_rejected", "accuracies", "margins"):
            metrics["rewards/" + key.removeprefix("rewards_")].append(
                ratio(key, "pairs")
            )
        metrics["logps/chosen"].append(ratio("logps_chosen", "pairs"))
        metrics["logps/rejected"].append(ratio("logps_rejected", "pairs"))


class FDPOTrainer(PreferenceLossTrainer):
    r"""TRL ``DPOTrainer`` with the f-divergence DPO loss of :func:`preference_loss`.

    .. math::

        \ell = -\log\sigma\bigl(\beta\,[g(h_w) - g(h_l)]\bigr),\qquad g(h) = f'(e^h)

    with :math:`\beta` = ``args.beta`` and :math:`f` = ``divergence``.

    Parameters
    ----------
    *args, **kwargs
        As for :class:`trl.DPOTrainer` (see :class:`PreferenceLossTrainer`).
    divergence : str, default="reverse_kl"
        ``"reverse_kl"`` (plain DPO), ``"forward_kl"``, ``"jensen_shannon"`` or
        ``"alpha"``; TRL's names are accepted too.
    alpha : float, default=0.5
        f-DPO's :math:`a \in (0, 1)` for ``divergence="alpha"``. TRL 1.16's
        ``f_alpha_divergence_coef`` is :math:`1 - a`.

    Notes
    -----
    For every divergence TRL implements, the loss equals TRL 1.16's
    ``DPOTrainer`` with ``f_divergence_type`` set (and
    ``f_alpha_divergence_coef = 1 - alpha``); the point of the class is one
    divergence table shared with the diffusion loss and the experiments, and an
    alpha that means the same in every TRL release.

    References
    ----------
    .. [1] Wang, Jiang, Yang, Liu, Chen. arXiv:2309.16240.
    .. [2] Sun, Xia, Chang, Wang. arXiv:2409.09774.
    """

    def __init__(
        self,
        *args: Any,
        divergence: str = "reverse_kl",
        alpha: float = 0.5,
        **kwargs: Any,
    ) -> None:
        self.divergence = resolve_divergence(divergence).name
        self.alpha = _check_alpha(alpha)
        super().__init__(*args, **kwargs)

    def pair_loss(
        self, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps
    ):
        return preference_loss(
            chosen_logps,
            rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            beta=self.beta,
            divergence=self.divergence,
            alpha=self.alpha,
        )


class MIOTrainer(PreferenceLossTrainer):
    r"""TRL ``DPOTrainer`` with the Mutual Information Optimization loss.

    .. math::

        \ell = \tfrac12\bigl(\mathrm{sp}(-\beta h_w)
               + \lambda\,\mathrm{sp}(\beta h_l)\bigr)

    with :math:`\beta` = ``args.beta`` and :math:`\lambda` = ``rejected_weight``;
    see :func:`mio_loss`.

    Parameters
    ----------
    *args, **kwargs
        As for :class:`trl.DPOTrainer` (see :class:`PreferenceLossTrainer`).
    rejected_weight : float, default=1.0
        Weight of the rejected (negative) term, >= 0.

    Notes
    -----
    With ``rejected_weight=1`` the loss is half of TRL 1.16's ``loss_type="bco_pair"``;
    with Adam the factor barely matters, with SGD it halves the step.

    References
    ----------
    .. [1] Lv, Chen, Sun, Bai, Zhang, Liu. arXiv:2506.22578.
    """

    def __init__(self, *args: Any, rejected_weight: float = 1.0, **kwargs: Any) -> None:
        # Validated here, before TRL's (slow) setup, by a dry call of the loss.
        probe = torch.zeros(1)
        mio_loss(probe, probe, probe, probe, beta=1.0, rejected_weight=rejected_weight)
        self.rejected_weight = float(rejected_weight)
        super().__init__(*args, **kwargs)

    def pair_loss(
        self, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps
    ):
        return mio_loss(
            chosen_logps,
            rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            beta=self.beta,
            rejected_weight=self.rejected_weight,
        )
