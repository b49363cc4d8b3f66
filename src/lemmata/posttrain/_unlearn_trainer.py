"""A transformers ``Trainer`` that unlearns a forget set while keeping a retain set.

Each training example pairs one forget question with one retain question drawn
at random; the loss is the chosen objective's forget term plus its weighted
retain negative log-likelihood (see :mod:`lemmata.posttrain._unlearning`).
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from lemmata.posttrain._unlearning import (
    get_objective,
    retain_nll,
    shift_for_causal_lm,
)
from lemmata.posttrain.tofu import encode_qa, pad_examples

__all__ = ["UnlearningTrainer"]

logger = logging.getLogger(__name__)


def _pair(item: Any) -> tuple[str, str]:
    if isinstance(item, Mapping):
        return str(item["question"]), str(item["answer"])
    return str(item.question), str(item.answer)


class _PairedDataset(Dataset):
    """Forget example ``i`` with a retain example drawn from a seeded generator."""

    def __init__(self, forget: list[dict], retain: list[dict], seed: int) -> None:
        self.forget = forget
        self.retain = retain
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"forget": self.forget[i]}
        if self.retain:
            item["retain"] = self.retain[int(self.rng.integers(len(self.retain)))]
        return item


class _PairCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = {}
        for side in ("forget", "retain"):
            if side in items[0]:
                batch = pad_examples([it[side] for it in items], self.pad_id)
                out.update({f"{side}_{k}": v for k, v in batch.items()})
        return out


class UnlearningTrainer(Trainer):
    r"""Unlearn ``forget_dataset`` from a causal LM, keeping ``retain_dataset``.

    The per-batch loss is

    .. math::

        L = \gamma\,\overline{L_{\text{forget}}(\pi_\theta, \pi_{\mathrm{ref}};
        x_f, y_f)} + \alpha\,\overline{-\log\pi_\theta(y_r\mid x_r)/|y_r|}

    with :math:`L_{\text{forget}}` the objective named by ``objective``,
    :math:`\gamma` = ``forget_weight`` and :math:`\alpha` = ``retain_weight``
    (the objective's published values when omitted). :math:`\pi_{\mathrm{ref}}`
    is the model as it is when the trainer is built.

    Parameters
    ----------
    model : transformers causal LM or peft model
    args : transformers.TrainingArguments, optional
        ``remove_unused_columns`` is forced to False (the batches hold paired
        forget/retain columns).
    forget_dataset, retain_dataset : sequence of QA-like items
        Objects or mappings with ``question`` and ``answer``. The forget set must
        be non-empty and share no (question, answer) pair with the retain set.
        The retain set may be empty only when the retain weight is 0.
    objective : str, default="npo"
        One of :data:`lemmata.posttrain._unlearning.OBJECTIVES`:
        ``"dipo"``, ``"ga"``, ``"graddiff"``, ``"npo"``, ``"simnpo"``.
    processing_class : tokenizer
        Must have a pad token.
    objective_kwargs : mapping, optional
        Overrides of the objective's defaults (``beta``, ``lam``, ``k``, ...).
    forget_weight, retain_weight : float, optional
        :math:`\gamma`, :math:`\alpha`.
    ref_model : causal LM, optional
        Frozen reference. By default a peft model's base (adapters disabled) or,
        for a plain model, a frozen deep copy made at construction.
    **kwargs
        Passed to :class:`transformers.Trainer` (callbacks, optimizers, ...).

    Notes
    -----
    Forget examples are visited once per epoch in the trainer's order; each draws
    its retain partner at random (seeded by ``args.seed``), so the retain set is
    sampled, not swept, as in open-unlearning's paired datasets. Metrics
    ``loss/forget`` and ``loss/retain`` are added to the trainer's logs.
    """

    def __init__(
        self,
        model: Any,
        args: TrainingArguments | None = None,
        *,
        forget_dataset: Sequence[Any],
        retain_dataset: Sequence[Any] = (),
        objective: str = "npo",
        processing_class: Any = None,
        objective_kwargs: Mapping[str, Any] | None = None,
        forget_weight: float | None = None,
        retain_weight: float | None = None,
        ref_model: Any = None,
        **kwargs: Any,
    ) -> None:
        self.objective = get_objective(objective)
        self.objective_kwargs = {**self.objective.defaults, **(objective_kwargs or {})}
        self.forget_weight = (
            self.objective.forget_weight if forget_weight is None else forget_weight
        )
        self.retain_weight = (
            self.objective.retain_weight if retain_weight is None else retain_weight
        )
        pad_id = self._check_inputs(processing_class, forget_dataset, retain_dataset)

        args = args or TrainingArguments(output_dir="unlearning_output", report_to=[])
        args.remove_unused_columns = False
        forget = [encode_qa(processing_class, *_pair(x)) for x in forget_dataset]
        retain = []
        if self.retain_weight > 0:
            retain = [encode_qa(processing_class, *_pair(x)) for x in retain_dataset]
        train = _PairedDataset(forget, retain, args.seed)

        self.ref_model = self._make_reference(model, ref_model)
        self._terms: dict[str, list[float]] = defaultdict(list)
        super().__init__(
            model=model,
            args=args,
            data_collator=_PairCollator(pad_id),
            train_dataset=train,
            processing_class=processing_class,
            **kwargs,
        )
        if isinstance(self.ref_model, torch.nn.Module):
            self.ref_model.to(self.args.device)

    def _check_inputs(self, tokenizer: Any, forget: Any, retain: Any) -> int:
        if tokenizer is None:
            raise ValueError("processing_class must be a tokenizer; got None")
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                "processing_class must have a pad token; got pad_token_id=None "
                "(set tokenizer.pad_token, e.g. to the eos token)"
            )
        if len(forget) == 0:
            raise ValueError("forget_dataset must not be empty; got 0 examples")
        for name, value in (
            ("forget_weight", self.forget_weight),
            ("retain_weight", self.retain_weight),
        ):
            if not float(value) >= 0:
                raise ValueError(f"{name} must be >= 0; got {value!r}")
        if self.retain_weight > 0 and len(retain) == 0:
            raise ValueError(
                f"retain_dataset must not be empty when retain_weight > 0; got 0 "
                f"examples with retain_weight={self.retain_weight}"
            )
        shared = {_pair(x) for x in forget} & {_pair(x) for x in retain}
        if shared:
            example = sorted(shared)[0][0]
            raise ValueError(
                "forget_dataset and retain_dataset must not overlap; got "
                f"{len(shared)} shared question/answer pairs, e.g. {example!r}"
            )
        return int(tokenizer.pad_token_id)

    def _make_reference(self, model: Any, ref_model: Any) -> Any:
        if not self.objective.needs_reference:
            return None
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            return ref_model
        if hasattr(model, "disable_adapter"):
            return "disable_adapter"
        ref = copy.deepcopy(model).eval()
        return ref.requires_grad_(False)

    def _reference_logits(self, model: Any, ids: Any, mask: Any) -> torch.Tensor:
        with torch.no_grad():
            if self.ref_model == "disable_adapter":
                unwrapped = self.accelerator.unwrap_model(model)
                with unwrapped.disable_adapter():
                    return unwrapped(input_ids=ids, attention_mask=mask).logits
            return self.ref_model(input_ids=ids, attention_mask=mask).logits

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        ids, mask = inputs["forget_input_ids"], inputs["forget_attention_mask"]
        out = model(input_ids=ids, attention_mask=mask)
        logits, labels = shift_for_causal_lm(out.logits, inputs["forget_labels"])
        args: tuple[torch.Tensor, ...] = (logits, labels)
        if self.objective.needs_reference:
            ref_logits = self._reference_logits(model, ids, mask)
            args += (shift_for_causal_lm(ref_logits, inputs["forget_labels"])[0],)
        forget = self.objective.forget_loss(*args, **self.objective_kwargs).mean()
        loss = self.forget_weight * forget
        self._terms["loss/forget"].append(float(forget.detach()))

        if self.retain_weight > 0 and "retain_input_ids" in inputs:
            r_out = model(
                input_ids=inputs["retain_input_ids"],
                attention_mask=inputs["retain_attention_mask"],
            )
            r_logits, r_labels = shift_for_causal_lm(
                r_out.logits, inputs["retain_labels"]
            )
            retain = retain_nll(r_logits, r_labels).mean()
            loss = loss + self.retain_weight * retain
            self._terms["loss/retain"].append(float(retain.detach()))
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for key, values in self._terms.items():
            if values:
                logs[key] = float(np.mean(values))
        self._terms.clear()
        super().log(logs, start_time)
