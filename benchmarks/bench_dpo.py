"""FDPOTrainer (lemmata's loss inside TRL) against TRL's own DPOTrainer.

One training step (``Trainer.training_step``: forward of policy and reference,
loss, metrics, backward) on the same tiny Llama (hidden 128, 2 layers), the
same batch of 16 pairs and the same reference model, float32, one CPU thread.
Pairs compared:

1. FDPOTrainer(divergence="reverse_kl") over DPOTrainer() (plain DPO); target <= 1.05;
2. FDPOTrainer(divergence="jensen_shannon") over
   DPOTrainer(f_divergence_type="js_divergence"); reported;
3. MIOTrainer over DPOTrainer(loss_type="bco_pair"); reported.

Times are CPU seconds of the calling thread; the two sides alternate in blocks
and the median of the per-block ratios is reported, which is robust to other
load on the machine. Run with ``python benchmarks/run.py bench_dpo``.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging
from trl import DPOConfig, DPOTrainer

from lemmata.posttrain._dpo_trainer import FDPOTrainer, MIOTrainer
from lemmata.posttrain._models import tiny_causal_lm

PAIRS = 16
BLOCKS = 7
STEPS_PER_BLOCK = 5
_WORDS = ["<pad>", "<eos>", *[f"w{i}" for i in range(62)]]


def _tokenizer():
    vocab = {w: i for i, w in enumerate(_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>"
    )


def _dataset():
    g = torch.Generator().manual_seed(0)

    def words(n):
        return " ".join(f"w{int(i)}" for i in torch.randint(62, (n,), generator=g))

    rows = [
        {"prompt": words(24), "chosen": " " + words(16), "rejected": " " + words(20)}
        for _ in range(PAIRS)
    ]
    return datasets.Dataset.from_list(rows)


def _trainer(cls, out, model, ref, ds, tok, cfg_kw=None, **kw):
    args = DPOConfig(
        output_dir=out,
        use_cpu=True,
        report_to=[],
        per_device_train_batch_size=PAIRS,
        save_strategy="no",
        learning_rate=1e-5,
        dataset_num_proc=None,
        **(cfg_kw or {}),
    )
    trainer = cls(
        model=copy.deepcopy(model),
        ref_model=copy.deepcopy(ref),
        args=args,
        train_dataset=ds,
        processing_class=tok,
        **kw,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
    trainer.current_gradient_accumulation_steps = 1  # set by train() otherwise
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(PAIRS)])
    return trainer, batch


def _time_steps(trainer, batch) -> float:
    start = time.thread_time()
    for _ in range(STEPS_PER_BLOCK):
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    return (time.thread_time() - start) / STEPS_PER_BLOCK


def _compare(ours, theirs) -> tuple[float, float, float]:
    for side in (ours, theirs):  # warm-up
        _time_steps(*side)
    ratios, t_ours, t_theirs = [], [], []
    for _ in range(BLOCKS):
        a = _time_steps(*ours)
        b = _time_steps(*theirs)
        ratios.append(a / b)
        t_ours.append(a)
        t_theirs.append(b)
    return (
        statistics.median(ratios),
        statistics.median(t_ours),
        statistics.median(t_theirs),
    )


def main() -> None:
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    tok, ds = _tokenizer(), _dataset()
    special = {"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0}
    model = tiny_causal_lm(
        len(_WORDS), hidden_size=128, num_layers=2, special_tokens=special
    )
    ref = tiny_causal_lm(
        len(_WORDS), hidden_size=128, num_layers=2, special_tokens=special
    )
    cases = [
        (
            "reverse_kl (DPO)",
            (FDPOTrainer, {}, {"divergence": "reverse_kl"}),
            (DPOTrainer, {}, {}),
            1.05,
        ),
        (
            "jensen_shannon",
            (FDPOTrainer, {}, {"divergence": "jensen_shannon"}),
            (DPOTrainer, {"f_divergence_type": "js_divergence"}, {}),
            None,
        ),
        (
            "MIO / bco_pair",
            (MIOTrainer, {}, {}),
            (DPOTrainer, {"loss_type": ["bco_pair"]}, {}),
            None,
        ),
    ]
    print(f"training step, tiny Llama (hidden 128, 2 layers), {PAIRS} pairs, 1 thread")
    with tempfile.TemporaryDirectory() as out:
        for label, (cls_a, cfg_a, kw_a), (cls_b, cfg_b, kw_b), target in cases:
            ours = _trainer(cls_a, out, model, ref, ds, tok, cfg_a, **kw_a)
            theirs = _trainer(cls_b, out, model, ref, ds, tok, cfg_b, **kw_b)
            ratio, t_a, t_b = _compare(ours, theirs)
            verdict = (
                ""
                if target is None
                else (f"  target <= {target}: {'PASS' if ratio <= target else 'FAIL'}")
            )
            print(
                f"  {label:18s} lemmata {1e3 * t_a:7.1f} ms  TRL {1e3 * t_b:7.1f} ms  "
                f"ratio {ratio:.3f}{verdict}"
            )


if __name__ == "__main__":
    main()
