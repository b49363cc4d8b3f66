r"""TOFU-style evaluation of unlearning: answer probability, truth ratio, forget
quality, model utility and ROUGE-L recall.

The metric functions are pure (numpy in, numpy or float out); the model-facing
helpers (:func:`answer_nll`, :func:`greedy_answers`, :func:`evaluate_tofu`)
score a transformers causal LM on question/answer items, teacher-forcing the
answer after the prompt ``"Question: {question}\nAnswer:"``.

Semantics follow TOFU (arXiv 2401.06121) as implemented in open-unlearning:

- probability of an answer :math:`P(a\mid q) = \exp(-\bar\ell)`, with
  :math:`\bar\ell` the mean token negative log-likelihood of the answer;
- truth ratio :math:`R = \exp(-\tfrac1m\sum_j \bar\ell_{\text{pert},j}) /
  (\exp(-\bar\ell_{\text{para}}) + 10^{-10})`;
- forget quality: the Kolmogorov-Smirnov two-sample p-value of the truth ratios
  of the unlearned model on the forget set against those of a model never
  trained on it;
- model utility: the harmonic mean of nine numbers, {retain, real authors, world
  facts} x {probability, ROUGE-L recall, truth-ratio score
  :math:`\operatorname{mean}\max(0, 1 - R)`}; on real authors and world facts
  the probability is normalised over the options,
  :math:`P(a)/(P(a) + \sum_j P(a_j^-))`.

References
----------
.. [1] Maini, Feng, Schwarzschild, Lipton, Kolter. "TOFU: A Task of Fictitious
   Unlearning for LLMs." 2024. arXiv:2401.06121.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PROMPT_TEMPLATE",
    "TofuReport",
    "answer_nll",
    "answer_probability",
    "encode_qa",
    "evaluate_tofu",
    "forget_quality",
    "greedy_answers",
    "model_utility",
    "normalized_probability",
    "pad_examples",
    "rouge_l_recall",
    "truth_ratio",
    "truth_ratio_score",
]

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
_EPS = 1e-10


def _as_array(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {arr[~np.isfinite(arr)][:3]}")
    return arr


def answer_probability(mean_nll: Any) -> np.ndarray:
    r"""Probability of each answer, :math:`\exp(-\bar\ell)`.

    Parameters
    ----------
    mean_nll : array_like of shape (n,)
        Mean token negative log-likelihood :math:`\bar\ell` of each answer.
    """
    return np.exp(-_as_array("mean_nll", mean_nll, 1))


def truth_ratio(paraphrased_nll: Any, perturbed_nll: Any) -> np.ndarray:
    r"""TOFU truth ratio per question.

    .. math::

        R_i = \frac{\exp\bigl(-\tfrac1m\sum_j \bar\ell^{\,\text{pert}}_{ij}\bigr)}
                   {\exp(-\bar\ell^{\,\text{para}}_i) + 10^{-10}}

    Parameters
    ----------
    paraphrased_nll : array_like of shape (n,)
        :math:`\bar\ell^{\,\text{para}}_i`, mean token NLL of the paraphrased answer.
    perturbed_nll : array_like of shape (n, m)
        :math:`\bar\ell^{\,\text{pert}}_{ij}`, mean token NLL of the perturbed ones.

    Returns
    -------
    ndarray of shape (n,)
        Small is good for a model that knows the answer; near 1 for one that
        cannot tell right from wrong.
    """
    para = _as_array("paraphrased_nll", paraphrased_nll, 1)
    pert = _as_array("perturbed_nll", perturbed_nll, 2)
    if pert.shape[0] != para.shape[0]:
        raise ValueError(
            f"perturbed_nll must have {para.shape[0]} rows to match paraphrased_nll; "
            f"got {pert.shape[0]}"
        )
    return np.exp(-pert.mean(axis=1)) / (np.exp(-para) + _EPS)


def truth_ratio_score(ratios: Any) -> float:
    r"""Utility form of the truth ratio, :math:`\operatorname{mean}_i\max(0, 1-R_i)`."""
    r = _as_array("ratios", ratios, 1)
    if np.any(r < 0):
        raise ValueError(f"ratios must be >= 0; got min {r.min()!r}")
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def normalized_probability(correct_nll: Any, wrong_nll: Any) -> np.ndarray:
    r"""Probability of the right option among the options, per question.

    .. math:: \frac{e^{-\bar\ell_i}}{e^{-\bar\ell_i} + \sum_j e^{-\bar\ell^-_{ij}}}

    Parameters
    ----------
    correct_nll : array_like of shape (n,)
        Mean token NLL of the right answer.
    wrong_nll : array_like of shape (n, m)
        Mean token NLL of the wrong options.
    """
    right = _as_array("correct_nll", correct_nll, 1)
    wrong = _as_array("wrong_nll", wrong_nll, 2)
    if wrong.shape[0] != right.shape[0]:
        raise ValueError(
            f"wrong_nll must have {right.shape[0]} rows to match correct_nll; "
            f"got {wrong.shape[0]}"
        )
    # Shift by the row minimum so that the exponentials cannot all underflow.
    low = np.minimum(right, wrong.min(axis=1))
    p_right = np.exp(-(right - low))
    return p_right / (p_right + np.exp(-(wrong - low[:, None])).sum(axis=1))


def forget_quality(
    unlearned_ratios: Any, retain_ratios: Any, *, min_size: int = 10
) -> float:
    r"""Forget quality: KS two-sample p-value of two truth-ratio samples.

    Computed with :func:`scipy.stats.ks_2samp` (two-sided, exact or asymptotic
    as scipy chooses).

    Parameters
    ----------
    unlearned_ratios : array_like of shape (n,)
        Truth ratios of the unlearned model on the forget set.
    retain_ratios : array_like of shape (n2,)
        Truth ratios of a model never trained on the forget set (the retain
        model), on the same questions.
    min_size : int, default=10
        Smallest sample accepted on either side; the p-value of tiny samples
        says little.

    Returns
    -------
    float in [0, 1]
        1 when both samples are equal; tiny when they are far apart.
    """
    from scipy.stats import ks_2samp

    if retain_ratios is None:
        raise ValueError(
            "retain_ratios must be the retain model's truth ratios; got None "
            "(forget quality needs a model never trained on the forget set)"
        )
    a = _as_array("unlearned_ratios", unlearned_ratios, 1)
    b = _as_array("retain_ratios", retain_ratios, 1)
    for name, arr in (("unlearned_ratios", a), ("retain_ratios", b)):
        if arr.size < min_size:
            raise ValueError(
                f"{name} must hold at least {min_size} questions; got {arr.size}"
            )
    return float(ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float] | Sequence[float]) -> float:
    r"""Harmonic mean :math:`n / \sum_i v_i^{-1}` of the utility numbers.

    TOFU uses nine: {retain, real authors, world facts} x {probability, ROUGE-L
    recall, truth-ratio score}. Any zero gives 0.

    Parameters
    ----------
    values : mapping of str to float, or sequence of float
        Each must be finite and >= 0.
    """
    seq = list(values.values()) if isinstance(values, Mapping) else list(values)
    if not seq:
        raise ValueError("values must not be empty; got 0 numbers")
    arr = np.asarray(seq, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"values must be finite and >= 0; got {seq}")
    if np.any(arr == 0):
        return 0.0
    return float(arr.size / np.sum(1.0 / arr))


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall of each prediction against its reference.

    Uses Google's ``rouge_score`` package (its default tokenizer: lower-cased
    alphanumeric words, no stemming).

    Parameters
    ----------
    predictions, references : sequence of str
        Equal lengths.

    Returns
    -------
    ndarray of shape (n,)
    """
    from rouge_score import rouge_scorer

    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of str; got str")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions must have {len(references)} entries to match references; "
            f"got {len(predictions)}"
        )
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array(
        [
            scorer.score(ref, pred)["rougeL"].recall
            for pred, ref in zip(predictions, references, strict=True)
        ],
        dtype=float,
    )


def _get(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def encode_qa(
    tokenizer: Any,
    question: str,
    answer: str,
    *,
    template: str = PROMPT_TEMPLATE,
) -> dict[str, list[int]]:
    """Token ids of prompt + answer, with labels only on the answer.

    The prompt and ``" " + answer`` are tokenized separately and joined; the end
    of sequence token is appended to the answer when the tokenizer has one.

    Returns
    -------
    dict with ``input_ids`` and ``labels`` (``-100`` on the prompt).
    """
    prompt = tokenizer(template.format(question=question), add_special_tokens=False)
    reply = tokenizer(" " + answer, add_special_tokens=False)
    prompt_ids, answer_ids = list(prompt["input_ids"]), list(reply["input_ids"])
    if tokenizer.eos_token_id is not None:
        answer_ids.append(int(tokenizer.eos_token_id))
    return {
        "input_ids": prompt_ids + answer_ids,
        "labels": [-100] * len(prompt_ids) + answer_ids,
    }


def pad_examples(
    examples: Sequence[Mapping[str, Sequence[int]]], pad_id: int, *, left: bool = False
) -> dict[str, Any]:
    """Pad ``input_ids`` (with ``pad_id``) and ``labels`` (with ``-100``) to a batch.

    Returns tensors ``input_ids``, ``attention_mask`` and, when every example
    has them, ``labels``.
    """
    import torch

    length = max(len(e["input_ids"]) for e in examples)
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
    with_labels = all("labels" in e for e in examples)
    if with_labels:
        out["labels"] = []
    for e in examples:
        ids = list(e["input_ids"])
        gap = length - len(ids)

        def pad(seq: list[int], value: int, gap: int = gap) -> list[int]:
            return [value] * gap + seq if left else seq + [value] * gap

        out["input_ids"].append(pad(ids, pad_id))
        out["attention_mask"].append(pad([1] * len(ids), 0))
        if with_labels:
            out["labels"].append(pad(list(e["labels"]), -100))
    return {key: torch.tensor(value, dtype=torch.long) for key, value in out.items()}


def _check_tokenizer(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError(
            "tokenizer must have a pad token; got pad_token_id=None "
            "(set tokenizer.pad_token, e.g. to the eos token)"
        )
    return int(pad)


def answer_nll(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """Mean token negative log-likelihood of each answer given its question.

    Returns
    -------
    ndarray of shape (n,)
    """
    import torch

    from lemmata.posttrain._unlearning import retain_nll, shift_for_causal_lm

    if len(questions) != len(answers):
        raise ValueError(
            f"answers must have {len(questions)} entries to match questions; "
            f"got {len(answers)}"
        )
    pad = _check_tokenizer(tokenizer)
    examples = [
        encode_qa(tokenizer, q, a) for q, a in zip(questions, answers, strict=True)
    ]
    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = pad_examples(examples[start : start + batch_size], pad)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            out.append(retain_nll(*shift_for_causal_lm(logits, batch["labels"])).cpu())
    model.train(was_training)
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def greedy_answers(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 32,
) -> list[str]:
    """Greedy completions of the prompts of ``questions`` (answer text only)."""
    import torch

    pad = _check_tokenizer(tokenizer)
    prompts = [
        {"input_ids": encode_qa(tokenizer, q, "")["input_ids"][:-1]}
        if tokenizer.eos_token_id is not None
        else {"input_ids": encode_qa(tokenizer, q, "")["input_ids"]}
        for q in questions
    ]
    device = next(model.parameters()).device
    texts: list[str] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = pad_examples(prompts[start : start + batch_size], pad, left=True)
            batch = {k: v.to(device) for k, v in batch.items()}
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = generated[:, batch["input_ids"].shape[1] :]
            texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    model.train(was_training)
    return [t.strip() for t in texts]


@dataclass
class TofuReport:
    """What :func:`evaluate_tofu` measured.

    Attributes
    ----------
    forget_truth_ratios : ndarray
        Truth ratio of each forget question (feed it to :func:`forget_quality`, or
        keep the retain model's as the reference of later runs).
    forget_probability, forget_rouge : float
        Mean answer probability and ROUGE-L recall on the forget set.
    forget_quality : float or None
        KS p-value against the reference truth ratios, when they were given.
    utility : dict of str to float
        The nine utility numbers, keyed ``"<set>/<metric>"``.
    model_utility : float
        Their harmonic mean.
    """

    forget_truth_ratios: np.ndarray
    forget_probability: float
    forget_rouge: float
    forget_quality: float | None
    utility: dict[str, float] = field(default_factory=dict)
    model_utility: float = math.nan


def _check_perturbed(items: Sequence[Any]) -> int:
    lengths = {len(_get(x, "perturbed_answers")) for x in items}
    if 0 in lengths or len(lengths) != 1:
        raise ValueError(
            "perturbed_answers must be non-empty and of equal length for every item; "
            f"got lengths {sorted(lengths)}"
        )
    return lengths.pop()


def _truth_ratios(model: Any, tokenizer: Any, items: Sequence[Any], bs: int) -> Any:
    questions = [_get(x, "question") for x in items]
    perturbed = [list(_get(x, "perturbed_answers")) for x in items]
    m = _check_perturbed(items)
    para = answer_nll(
        model,
        tokenizer,
        questions,
        [_get(x, "paraphrased_answer") for x in items],
        batch_size=bs,
    )
    flat_q = [q for q in questions for _ in range(m)]
    flat_a = [a for p in perturbed for a in p]
    pert = answer_nll(model, tokenizer, flat_q, flat_a, batch_size=bs).reshape(-1, m)
    return para, pert


def _set_scores(
    model: Any,
    tokenizer: Any,
    items: Sequence[Any],
    normalized: bool,
    bs: int,
    gen: int,
) -> tuple[dict[str, float], np.ndarray, float]:
    questions = [_get(x, "question") for x in items]
    answers = [_get(x, "answer") for x in items]
    correct = answer_nll(model, tokenizer, questions, answers, batch_size=bs)
    para, pert = _truth_ratios(model, tokenizer, items, bs)
    ratios = truth_ratio(para, pert)
    if normalized:
        prob = float(normalized_probability(correct, pert).mean())
    else:
        prob = float(answer_probability(correct).mean())
    replies = greedy_answers(
        model, tokenizer, questions, max_new_tokens=gen, batch_size=bs
    )
    rouge = float(rouge_l_recall(replies, answers).mean())
    scores = {"prob": prob, "rouge": rouge, "truth_ratio": truth_ratio_score(ratios)}
    return scores, ratios, float(answer_probability(correct).mean())


def evaluate_tofu(
    model: Any,
    tokenizer: Any,
    *,
    forget: Sequence[Any],
    retain: Sequence[Any],
    real_authors: Sequence[Any],
    world_facts: Sequence[Any],
    retain_truth_ratios: Any = None,
    batch_size: int = 32,
    max_new_tokens: int = 24,
) -> TofuReport:
    """Score a model on the four TOFU sets.

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : transformers tokenizer
        Must have a pad token.
    forget, retain, real_authors, world_facts : sequence of QA-like items
        Objects or mappings with ``question``, ``answer``, ``paraphrased_answer``
        and ``perturbed_answers`` (equal count per item). On real authors and
        world facts the perturbed answers are the wrong options.
    retain_truth_ratios : array_like, optional
        Truth ratios of the retain model on ``forget``; forget quality is left
        ``None`` without them.
    batch_size, max_new_tokens : int
        Scoring batch size and greedy decoding length.

    Returns
    -------
    TofuReport
    """
    for name, items in (
        ("forget", forget),
        ("retain", retain),
        ("real_authors", real_authors),
        ("world_facts", world_facts),
    ):
        if len(items) == 0:
            raise ValueError(f"{name} must not be empty; got 0 items")
        _check_perturbed(items)
    _check_tokenizer(tokenizer)

    utility: dict[str, float] = {}
    for name, items, normalized in (
        ("retain", retain, False),
        ("real_authors", real_authors, True),
        ("world_facts", world_facts, True),
    ):
        scores, _, _ = _set_scores(
            model, tokenizer, items, normalized, batch_size, max_new_tokens
        )
        utility.update({f"{name}/{key}": value for key, value in scores.items()})

    f_scores, ratios, f_prob = _set_scores(
        model, tokenizer, forget, False, batch_size, max_new_tokens
    )
    quality = None
    if retain_truth_ratios is not None:
        quality = forget_quality(ratios, retain_truth_ratios)
    report = TofuReport(
        forget_truth_ratios=ratios,
        forget_probability=f_prob,
        forget_rouge=f_scores["rouge"],
        forget_quality=quality,
        utility=utility,
        model_utility=model_utility(utility),
    )
    logger.debug("tofu evaluation: %s", report)
    return report
