"""Reproduction of arXiv 2510.04773 (DiPO, distribution preference unlearning).

``dipo-unlearning``: a causal LM is fine-tuned on a generated TOFU-like benchmark
of fictitious authors (:func:`lemmata.posttrain._fictitious.make_fictitious_benchmark`),
then the authors of a forget split are unlearned with DiPO and the baselines
(gradient ascent, GradDiff, NPO, SimNPO), each with the same step budget and a
small learning-rate sweep. Every unlearned model is scored with the TOFU metrics
of :mod:`lemmata.posttrain.tofu`: forget quality against a "retain" model
fine-tuned without the forget authors, and model utility. Splits of 2.5%, 5% and
10% of the authors are unlearned in one request; the 10% split is also
unlearned as a sequence of single-author requests.

Quick scale trains a small Llama model from scratch on a word-level tokenizer
built from the benchmark; full scale fine-tunes SmolLM2-135M-Instruct with LoRA
adapters (the fine-tuned adapter is merged, and each unlearning run trains a
fresh adapter on top of it, with the adapter switched off as the reference).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["DiPOConfig", "dipo_unlearning"]

logger = logging.getLogger(__name__)

_PAPER = "2510.04773"


@dataclass(frozen=True)
class DiPOConfig:
    """Benchmark, models, unlearning sweep and check thresholds.

    Attributes
    ----------
    model : str
        ``"tiny"`` (a Llama model trained from scratch with a word tokenizer) or
        ``"smollm2"`` (SmolLM2-135M-Instruct with LoRA adapters).
    n_authors, n_attributes, n_real_authors, n_world_facts : int
        Benchmark size (see ``make_fictitious_benchmark``).
    hidden_size, num_layers, num_heads : int
        Size of the tiny model.
    lora_rank : int
        LoRA rank (smollm2 only), on all linear layers.
    finetune_epochs : int
        Epochs of fine-tuning for the fine-tuned and the retain models.
    finetune_lr : float
        AdamW learning rate of fine-tuning.
    batch_size : int
        Fine-tuning batch size.
    forget_percents : tuple of float
        Forget splits, in percent of the authors; the last is the main split of
        checks C0-C2 and of the sequential requests.
    methods : tuple of str
        Objectives compared on the main (last) split; must contain ``"dipo"``
        and ``"npo"``.
    size_methods : tuple of str
        Objectives also run on the smaller splits (check C3 needs DiPO and NPO).
    lrs : tuple of float
        Learning-rate sweep, the same for every method: from too weak to too
        strong for every method at quick scale.
    unlearn_steps : int
        Optimiser steps per unlearning run (equal for all methods). Sequential
        requests get ``unlearn_steps // n`` steps each for ``n`` requests, so
        their total budget equals the one-shot run.
    unlearn_batch : int
        Forget (and retain) examples per unlearning step.
    sequential_methods : tuple of str
        Methods also run as sequential single-author requests.
    eval_retain : int
        Retain questions scored for utility (a fixed random subset).
    max_new_tokens : int
        Greedy decoding length for ROUGE.
    utility_keep : float
        C1/C2 keep runs whose utility is >= this fraction of the fine-tuned one.
    fq_finetuned_max : float
        C0: forget quality of the fine-tuned model must be < this.
    """

    model: str = "tiny"
    n_authors: int = 40
    n_attributes: int = 6
    n_real_authors: int = 20
    n_world_facts: int = 30
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    lora_rank: int = 16
    finetune_epochs: int = 30
    finetune_lr: float = 3e-3
    batch_size: int = 32
    forget_percents: tuple[float, ...] = (2.5, 5.0, 10.0)
    methods: tuple[str, ...] = ("ga", "graddiff", "npo", "simnpo", "dipo")
    size_methods: tuple[str, ...] = ("npo", "dipo")
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    unlearn_steps: int = 30
    unlearn_batch: int = 16
    sequential_methods: tuple[str, ...] = ("npo", "dipo")
    eval_retain: int = 40
    max_new_tokens: int = 16
    utility_keep: float = 0.85
    fq_finetuned_max: float = 0.05


_QUICK = DiPOConfig()
_FULL = DiPOConfig(
    model="smollm2",
    n_attributes=8,
    finetune_epochs=8,
    finetune_lr=1e-3,
    batch_size=16,
    lrs=(1e-5, 3e-5, 1e-4),
    unlearn_steps=40,
    eval_retain=80,
    max_new_tokens=32,
)


def _word_tokenizer(bench: Any) -> Any:
    """A word-level PreTrainedTokenizerFast over every word of the benchmark."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lemmata.posttrain.tofu import PROMPT_TEMPLATE

    texts = [PROMPT_TEMPLATE.format(question="")]
    for q in bench.author_qa + bench.real_authors + bench.world_facts:
        texts += [q.question, q.answer, q.paraphrased_answer, *q.perturbed_answers]
    words = sorted({w for t in texts for w in t.split()})
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate(words)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


class _Backend:
    """Builds, fine-tunes and wraps models for one scale."""

    def __init__(self, cfg: DiPOConfig, bench: Any, seed: int) -> None:
        import torch

        self.cfg, self.seed = cfg, seed
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if cfg.model == "tiny":
            self.tokenizer = _word_tokenizer(bench)
            self._base = None
        elif cfg.model == "smollm2":
            from lemmata.posttrain._models import load_smollm2

            self._base, self.tokenizer = load_smollm2()
        else:
            raise ValueError(
                f"model must be one of ['smollm2', 'tiny']; got {cfg.model!r}"
            )

    def fresh(self) -> Any:
        import copy

        from lemmata.posttrain._models import tiny_causal_lm

        if self._base is not None:
            return self._with_lora(copy.deepcopy(self._base)).to(self.device)
        ids = {"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0}
        return tiny_causal_lm(
            len(self.tokenizer),
            hidden_size=self.cfg.hidden_size,
            num_layers=self.cfg.num_layers,
            num_heads=self.cfg.num_heads,
            special_tokens=ids,
            seed=self.seed,
        ).to(self.device)

    def finetune(self, items: Any, rng: np.random.Generator) -> Any:
        """Fine-tune a fresh model on ``items`` (merged to a dense model for LoRA)."""
        import torch

        from lemmata.posttrain._unlearning import retain_nll, shift_for_causal_lm
        from lemmata.posttrain.tofu import encode_qa, pad_examples

        model = self.fresh()
        model.train()
        examples = [encode_qa(self.tokenizer, q.question, q.answer) for q in items]
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.finetune_lr, weight_decay=0.0)
        pad = int(self.tokenizer.pad_token_id)
        for _ in range(self.cfg.finetune_epochs):
            order = rng.permutation(len(examples))
            for start in range(0, len(order), self.cfg.batch_size):
                chunk = [
                    examples[i] for i in order[start : start + self.cfg.batch_size]
                ]
                batch = {
                    k: v.to(self.device) for k, v in pad_examples(chunk, pad).items()
                }
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                loss = retain_nll(*shift_for_causal_lm(logits, batch["labels"])).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        if self._base is not None:
            model = model.merge_and_unload()
        return model.eval()

    def _with_lora(self, model: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=self.cfg.lora_rank,
            lora_alpha=2 * self.cfg.lora_rank,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)

    def for_unlearning(self, finetuned: Any) -> Any:
        import copy

        model = copy.deepcopy(finetuned)
        if self._base is not None:
            model = self._with_lora(model)
        return model


def _unlearn(
    backend: _Backend,
    model: Any,
    forget: Any,
    retain: Any,
    method: str,
    lr: float,
    seed: int,
    steps: int | None = None,
) -> Any:
    """One unlearning request with :class:`UnlearningTrainer` (trains ``model``)."""
    from transformers import PrinterCallback, TrainingArguments

    from lemmata.posttrain._unlearn_trainer import UnlearningTrainer

    cfg = backend.cfg
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=steps or cfg.unlearn_steps,
            per_device_train_batch_size=cfg.unlearn_batch,
            learning_rate=lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=seed % (2**31),
            use_cpu=backend.device == "cpu",
            dataloader_num_workers=0,
        )
        trainer = UnlearningTrainer(
            model,
            args,
            forget_dataset=forget,
            retain_dataset=retain,
            objective=method,
            processing_class=backend.tokenizer,
        )
        # The trainer's console printer would print the run summary; drop it.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return trainer.model


def _score(backend: _Backend, model: Any, forget: Any, sets: dict, ref_tr: Any) -> Any:
    from lemmata.posttrain.tofu import evaluate_tofu

    return evaluate_tofu(
        model,
        backend.tokenizer,
        forget=forget,
        retain=sets["retain"],
        real_authors=sets["real_authors"],
        world_facts=sets["world_facts"],
        retain_truth_ratios=ref_tr,
        max_new_tokens=backend.cfg.max_new_tokens,
    )


def _best(points: list[tuple[float, float]], floor: float) -> tuple[float, float]:
    """Highest forget quality among points with utility >= floor (else best utility)."""
    kept = [p for p in points if p[1] >= floor]
    if kept:
        return max(kept, key=lambda p: (p[0], p[1]))
    return max(points, key=lambda p: (p[1], p[0]))


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def _figure(points: dict, ft: Any, rt: Any, by_size: dict, percents: Any) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax, bx = fig.subplots(1, 2)
    for method, pts in points.items():
        fq = [max(p[0], 1e-300) for p in pts]
        ax.scatter(fq, [p[1] for p in pts], label=method, s=30)
    ax.scatter(
        [max(ft[0], 1e-300)], [ft[1]], marker="*", s=120, c="k", label="finetuned"
    )
    ax.scatter([rt[0]], [rt[1]], marker="X", s=80, c="grey", label="retain model")
    ax.set_xscale("log")
    ax.set_xlabel("forget quality (KS p-value, log scale)")
    ax.set_ylabel("model utility")
    ax.set_title(f"forget {percents[-1]}%: every learning rate")
    ax.legend(fontsize=7)
    for method, values in by_size.items():
        bx.plot(range(len(values)), values, marker="o", label=method)
    labels = [f"{p}%" for p in percents] + ["sequential"]
    bx.set_xticks(range(len(labels)), labels)
    bx.set_ylabel("model utility (mean over learning rates)")
    bx.set_title("utility by forget size")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


@experiment(
    name="dipo-unlearning",
    paper=_PAPER,
    claim=(
        "Preferring a forgetting-promoting over a memory-promoting next-token "
        "distribution unlearns with higher forget quality than NPO and other "
        "baselines while keeping at least as much model utility."
    ),
    config=DiPOConfig,
    quick=_QUICK,
    full=_FULL,
    seeds={"quick": 1, "full": 3},
    requires=("torch", "transformers", "tokenizers", "rouge_score", "scipy"),
)
def dipo_unlearning(cfg: DiPOConfig, ctx: RunContext) -> Result:
    """Fine-tune, unlearn with every method and learning rate, score with TOFU."""
    from lemmata.posttrain._fictitious import make_fictitious_benchmark
    from lemmata.posttrain.tofu import forget_quality

    for needed in ("dipo", "npo"):
        if needed not in cfg.methods:
            raise ValueError(f"methods must contain {needed!r}; got {cfg.methods}")
    ctx.seed_torch()
    rng = ctx.rng
    bench = make_fictitious_benchmark(
        rng,
        n_authors=cfg.n_authors,
        n_attributes=cfg.n_attributes,
        n_real_authors=cfg.n_real_authors,
        n_world_facts=cfg.n_world_facts,
    )
    backend = _Backend(cfg, bench, ctx.seed % (2**31))
    finetuned = backend.finetune(bench.training_set(), rng)

    metrics: dict[str, float] = {}
    splits, refs = {}, {}
    for pct in cfg.forget_percents:
        forget, retain = bench.split(pct)
        n = bench.n_forget_authors(pct)
        subset = rng.choice(
            len(retain), size=min(cfg.eval_retain, len(retain)), replace=False
        )
        sets = {
            "retain": [retain[i] for i in sorted(subset)],
            "real_authors": bench.real_authors,
            "world_facts": bench.world_facts,
        }
        retain_model = backend.finetune(bench.training_set(bench.authors[:n]), rng)
        ref = _score(backend, retain_model, forget, sets, None)
        refs[pct] = ref
        splits[pct] = (forget, retain, sets, n)
        self_fq = forget_quality(ref.forget_truth_ratios, ref.forget_truth_ratios)
        ft = _score(backend, finetuned, forget, sets, ref.forget_truth_ratios)
        metrics.update(
            {
                f"retain_model/{pct}/mu": ref.model_utility,
                f"retain_model/{pct}/fq_self": self_fq,
                f"finetuned/{pct}/mu": ft.model_utility,
                f"finetuned/{pct}/fq": ft.forget_quality,
                f"finetuned/{pct}/forget_rouge": ft.forget_rouge,
            }
        )
        logger.info(
            "split %s%%: finetuned FQ %.3g MU %.3f",
            pct,
            ft.forget_quality,
            ft.model_utility,
        )

    results: dict[tuple[str, float, float], tuple[float, float]] = {}
    for pct in cfg.forget_percents:
        forget, retain, sets, _ = splits[pct]
        methods = cfg.methods if pct == cfg.forget_percents[-1] else cfg.size_methods
        for method in methods:
            for lr in cfg.lrs:
                model = backend.for_unlearning(finetuned)
                model = _unlearn(backend, model, forget, retain, method, lr, ctx.seed)
                rep = _score(
                    backend, model, forget, sets, refs[pct].forget_truth_ratios
                )
                results[(method, pct, lr)] = (rep.forget_quality, rep.model_utility)
                metrics[f"fq/{method}/{pct}/lr={lr:g}"] = rep.forget_quality
                metrics[f"mu/{method}/{pct}/lr={lr:g}"] = rep.model_utility
                metrics[f"forget_rouge/{method}/{pct}/lr={lr:g}"] = rep.forget_rouge

    main = cfg.forget_percents[-1]
    forget, retain, sets, n_main = splits[main]
    sequential: dict[tuple[str, float], tuple[float, float]] = {}
    steps = max(1, cfg.unlearn_steps // n_main)
    for method in cfg.sequential_methods:
        for lr in cfg.lrs:
            model = backend.for_unlearning(finetuned)
            for author in bench.authors[:n_main]:
                request = bench.by_authors([author])
                model = _unlearn(
                    backend, model, request, retain, method, lr, ctx.seed, steps
                )
                if hasattr(model, "merge_and_unload"):
                    model = backend.for_unlearning(model.merge_and_unload())
            rep = _score(backend, model, forget, sets, refs[main].forget_truth_ratios)
            sequential[(method, lr)] = (rep.forget_quality, rep.model_utility)
            metrics[f"fq/{method}/sequential/lr={lr:g}"] = rep.forget_quality
            metrics[f"mu/{method}/sequential/lr={lr:g}"] = rep.model_utility

    return _assemble(cfg, metrics, results, sequential, main)


def _assemble(
    cfg: DiPOConfig, metrics: dict, results: dict, sequential: dict, main: float
) -> Result:
    """Checks, summary metrics and the figure from the measured points."""
    ft_mu = metrics[f"finetuned/{main}/mu"]
    floor = cfg.utility_keep * ft_mu
    points = {m: [results[(m, main, lr)] for lr in cfg.lrs] for m in cfg.methods}

    medians = {}
    for method, pts in points.items():
        kept = [fq for fq, mu in pts if mu >= floor]
        medians[method] = float(np.median(kept)) if kept else math.nan
        metrics[f"median_fq_kept/{method}"] = medians[method]
        metrics[f"median_fq_all/{method}"] = float(np.median([p[0] for p in pts]))
    rivals = [v for m, v in medians.items() if m != "dipo" and not math.isnan(v)]
    c1 = math.log10(max(medians["dipo"], 1e-300)) - math.log10(
        max(max(rivals, default=0), 1e-300)
    )
    if math.isnan(medians["dipo"]):
        c1 = math.nan

    best = {m: _best(p, floor) for m, p in points.items()}
    dominating = sum(
        _dominates(best[m], best["dipo"]) for m in cfg.methods if m != "dipo"
    )

    by_size = {}
    for method in cfg.sequential_methods:
        row = [
            float(np.mean([results[(method, pct, lr)][1] for lr in cfg.lrs]))
            for pct in cfg.forget_percents
        ]
        row.append(float(np.mean([sequential[(method, lr)][1] for lr in cfg.lrs])))
        by_size[method] = row
    c3 = min(a - b for a, b in zip(by_size["dipo"], by_size["npo"], strict=True))

    checks = [
        Check(
            "C0 retain model vs itself: forget quality",
            metrics[f"retain_model/{main}/fq_self"],
            0.999,
            ">=",
        ),
        Check(
            "C0 finetuned model: forget quality",
            metrics[f"finetuned/{main}/fq"],
            cfg.fq_finetuned_max,
            "<",
        ),
        Check(
            "C1 log10 median FQ(DiPO) - best baseline, MU >= 85% of finetuned",
            c1,
            0.0,
            ">=",
        ),
        Check(
            "C2 baselines whose best point dominates DiPO's best", dominating, 0.5, "<"
        ),
        Check("C3 min over sizes and sequential of MU(DiPO) - MU(NPO)", c3, 0.0, ">="),
    ]
    ft = (metrics[f"finetuned/{main}/fq"], ft_mu)
    rt = (1.0, metrics[f"retain_model/{main}/mu"])
    fig = _figure(points, ft, rt, by_size, cfg.forget_percents)
    series = {f"points/{m}": [v for p in pts for v in p] for m, pts in points.items()}
    series.update({f"mu_by_size/{m}": v for m, v in by_size.items()})
    return Result(
        metrics=metrics, checks=checks, figures={"fq_vs_utility": fig}, series=series
    )
