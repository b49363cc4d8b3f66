"""Reproduction of arXiv 2506.22578 (Mutual Information Optimization) at toy scale.

``mio-vs-dpo``: a small causal LM is fine-tuned (SFT) on two-digit addition until
it is right only part of the time and becomes the reference. Preference pairs
put the correct sum against a wrong sum sampled from the SFT model that shares
the correct sum's leading digit, so chosen and rejected completions overlap.
DPO (:func:`lemmata.posttrain._preference.preference_loss`, reverse KL) and MIO
(:func:`lemmata.posttrain._preference.mio_loss`) are run from the same reference
with the same beta, learning rate, batches and steps. The paper's claim: MIO
avoids DPO's late-training decline of the chosen completion's likelihood while
staying competitive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["MIOConfig", "mio_vs_dpo"]

_PAPER = "2506.22578"
logger = logging.getLogger(__name__)
# Tiny vocabulary: digits, '+', '=', then BOS/EOS and PAD.
_PLUS, _EQ, _EOS, _PAD = 10, 11, 12, 13
_VOCAB = 14
_PROMPT_LEN = 6  # EOS-as-BOS a1 a2 + b1 b2 =  -> 7 tokens, completion starts at 7


@dataclass(frozen=True)
class MIOConfig:
    """DPO against MIO on synthetic addition preferences.

    Attributes
    ----------
    model : str
        ``"tiny-gpt2"`` (a randomly initialised GPT-2 built from a config,
        trained here with SFT first) or ``"smollm2"`` (SmolLM2-135M-Instruct with
        LoRA r=8 on q_proj/v_proj; the reference is the adapter-free base).
    hidden, layers, heads : int
        Size of the tiny GPT-2.
    low, high : int
        Operands are drawn from [low, high]; keep ``2 * high < 100`` so every
        sum has two digits.
    sft_steps, sft_batch, sft_lr : int, int, float
        SFT budget; SFT stops early (checked every 20 steps) once held-out greedy
        accuracy reaches ``sft_target`` (so that wrong answers remain to be rejected).
    sft_target : float
        Held-out accuracy at which SFT stops.
    n_pairs, n_heldout : int
        Training preference pairs, and held-out problems (used for reward
        accuracy on held-out pairs and for greedy accuracy).
    beta : float
        beta of both losses (TRL's default 0.1).
    steps, batch, lr : int, int, float
        Preference training: Adam steps, pairs per step, learning rate; the
        same for DPO and MIO.
    log_every : int
        Steps between evaluations of mean log pi(y_w), log pi(y_l) (on the first
        256 training pairs), held-out reward accuracy and greedy accuracy. The
        decline of the chosen log-likelihood is its peak over these evaluations
        minus its final value.
    lora_rank : int
        LoRA rank for ``model="smollm2"``.
    """

    model: str = "tiny-gpt2"
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    low: int = 10
    high: int = 49
    sft_steps: int = 4000
    sft_batch: int = 64
    sft_lr: float = 3e-3
    sft_target: float = 0.7
    n_pairs: int = 2000
    n_heldout: int = 500
    beta: float = 0.1
    steps: int = 600
    batch: int = 32
    lr: float = 5e-4
    log_every: int = 10
    lora_rank: int = 8


_QUICK = MIOConfig()
_FULL = MIOConfig(
    model="smollm2",
    n_pairs=800,
    n_heldout=200,
    steps=100,
    batch=8,
    lr=5e-4,
    log_every=5,
)


# ----- tiny arithmetic language --------------------------------------------------


def _digits(n):
    return [n // 10, n % 10]


def _encode(a: int, b: int, s: int) -> list[int]:
    return [_EOS, *_digits(a), _PLUS, *_digits(b), _EQ, *_digits(s), _EOS]


def _problems(rng: np.random.Generator, cfg: MIOConfig):
    """All (a, b) with a <= b, split into train and held-out."""
    grid = [
        (a, b)
        for a in range(cfg.low, cfg.high + 1)
        for b in range(cfg.low, cfg.high + 1)
    ]
    order = rng.permutation(len(grid))
    held = [grid[i] for i in order[: cfg.n_heldout]]
    train = [grid[i] for i in order[cfg.n_heldout :]]
    return train, held


def _seq_logps(model, ids, attention, completion):
    """Sum of log pi(token) over completion tokens, shape (B,)."""
    import torch

    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logp = (
        torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    )
    return (logp * completion[:, 1:]).sum(dim=1)


class _TinyTask:
    """Tensors for the tiny-vocabulary model (fixed length, no padding)."""

    def __init__(self, cfg: MIOConfig) -> None:
        self.cfg = cfg

    def batch(self, triples):
        import torch

        ids = torch.tensor([_encode(a, b, s) for a, b, s in triples])
        attention = torch.ones_like(ids)
        completion = torch.zeros_like(ids)
        completion[:, _PROMPT_LEN + 1 :] = 1
        return ids, attention, completion

    def greedy_accuracy(self, model, problems) -> float:
        import torch

        with torch.no_grad():
            ids = torch.tensor(
                [_encode(a, b, 0)[: _PROMPT_LEN + 1] for a, b in problems]
            )
            for _ in range(2):
                nxt = (
                    model(input_ids=ids).logits[:, -1, :10].argmax(dim=1, keepdim=True)
                )
                ids = torch.cat([ids, nxt], dim=1)
        answers = ids[:, -2] * 10 + ids[:, -1]
        truth = torch.tensor([a + b for a, b in problems])
        return float((answers == truth).float().mean())

    def wrong_sums(self, model, problems, gen) -> list[int]:
        """A wrong second digit sampled from the model after the correct first one."""
        import torch

        with torch.no_grad():
            ids = torch.tensor(
                [_encode(a, b, a + b)[: _PROMPT_LEN + 2] for a, b in problems]
            )
            probs = torch.softmax(
                model(input_ids=ids).logits[:, -1, :10].float(), dim=1
            )
        truth = torch.tensor([(a + b) % 10 for a, b in problems])
        probs[torch.arange(len(problems)), truth] = 0.0
        probs = probs + 1e-6  # every wrong digit stays possible
        probs[torch.arange(len(problems)), truth] = 0.0
        second = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        return [
            (a + b) // 10 * 10 + int(d)
            for (a, b), d in zip(problems, second, strict=True)
        ]


def _sft(model, task: _TinyTask, train, held, cfg, gen):
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    acc, step = 0.0, 0
    for step in range(1, cfg.sft_steps + 1):
        idx = torch.randint(len(train), (cfg.sft_batch,), generator=gen).tolist()
        ids, att, comp = task.batch([(*train[i], sum(train[i])) for i in idx])
        loss = -_seq_logps(model, ids, att, comp).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            acc = task.greedy_accuracy(model, held)
            if acc >= cfg.sft_target:
                break
    return acc, step


def _train_preference(
    policy, ref_logps, data, task, held_data, held, cfg, loss_name, gen
):
    import torch

    from lemmata.posttrain._preference import mio_loss, preference_loss

    (c_ids, c_att, c_comp), (r_ids, r_att, r_comp) = data
    ref_c, ref_r = ref_logps
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n = c_ids.shape[0]
    monitor = torch.arange(min(n, 256))
    history = {k: [] for k in ("step", "chosen", "rejected", "accuracy", "reward_acc")}

    def evaluate(step):
        with torch.no_grad():
            lc = _seq_logps(policy, c_ids[monitor], c_att[monitor], c_comp[monitor])
            lr_ = _seq_logps(policy, r_ids[monitor], r_att[monitor], r_comp[monitor])
            (hc_ids, hc_att, hc_comp), (hr_ids, hr_att, hr_comp), (h_ref_c, h_ref_r) = (
                held_data
            )
            hw = _seq_logps(policy, hc_ids, hc_att, hc_comp) - h_ref_c
            hl = _seq_logps(policy, hr_ids, hr_att, hr_comp) - h_ref_r
        history["step"].append(step)
        history["chosen"].append(float(lc.mean()))
        history["rejected"].append(float(lr_.mean()))
        # Ties (h_w = h_l, as at step 0) count as half right.
        history["reward_acc"].append(
            float(((hw > hl).float() + 0.5 * (hw == hl)).mean())
        )
        history["accuracy"].append(
            task.greedy_accuracy(policy, held) if task else float("nan")
        )

    evaluate(0)
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(n, (cfg.batch,), generator=gen)
        ids = torch.cat([c_ids[idx], r_ids[idx]])
        att = torch.cat([c_att[idx], r_att[idx]])
        comp = torch.cat([c_comp[idx], r_comp[idx]])
        chosen, rejected = _seq_logps(policy, ids, att, comp).chunk(2)
        args = (chosen, rejected, ref_c[idx], ref_r[idx])
        if loss_name == "mio":
            loss = mio_loss(*args, beta=cfg.beta).mean()
        else:
            loss = preference_loss(*args, beta=cfg.beta, divergence="reverse_kl").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            evaluate(step)
            logger.info(
                "%s step %d: %s",
                loss_name,
                step,
                {k: v[-1] for k, v in history.items()},
            )
    return history


def _decline(history) -> float:
    """Peak of mean log pi(y_w) over the run minus its final value (>= 0)."""
    chosen = history["chosen"]
    return max(chosen) - chosen[-1]


def _figure(histories):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    colors = {"dpo": "tab:red", "mio": "tab:blue"}
    for name, h in histories.items():
        ax1.plot(
            h["step"], h["chosen"], color=colors[name], label=f"{name.upper()} chosen"
        )
        ax1.plot(
            h["step"],
            h["rejected"],
            color=colors[name],
            ls="--",
            label=f"{name.upper()} rejected",
        )
        ax2.plot(h["step"], h["reward_acc"], color=colors[name], label=name.upper())
    ax1.set_xlabel("step")
    ax1.set_ylabel("mean sequence log-likelihood")
    ax1.set_title("chosen and rejected log-likelihood")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("step")
    ax2.set_ylabel("held-out reward accuracy")
    ax2.legend()
    fig.tight_layout()
    return fig


def _tiny_setup(cfg: MIOConfig, ctx: RunContext, gen):
    import torch

    from lemmata.posttrain._models import tiny_causal_lm

    task = _TinyTask(cfg)
    train, held = _problems(ctx.rng, cfg)
    model = tiny_causal_lm(
        _VOCAB,
        arch="gpt2",
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        num_heads=cfg.heads,
        max_positions=16,
        special_tokens={
            "bos_token_id": _EOS,
            "eos_token_id": _EOS,
            "pad_token_id": _PAD,
        },
        seed=ctx.seed % 2**31,
    )
    model.eval()  # no dropout anywhere: h = 0 at step 0
    sft_acc, sft_steps = _sft(model, task, train, held, cfg, gen)
    for p in model.parameters():
        p.requires_grad_(False)

    pick = torch.randint(len(train), (cfg.n_pairs,), generator=gen).tolist()
    problems = [train[i] for i in pick]
    wrong = task.wrong_sums(model, problems, gen)
    held_wrong = task.wrong_sums(model, held, gen)
    data = (
        task.batch([(a, b, a + b) for a, b in problems]),
        task.batch([(a, b, w) for (a, b), w in zip(problems, wrong, strict=True)]),
    )
    held_c = task.batch([(a, b, a + b) for a, b in held])
    held_r = task.batch([(a, b, w) for (a, b), w in zip(held, held_wrong, strict=True)])
    with torch.no_grad():
        ref = tuple(_seq_logps(model, *d) for d in data)
        held_ref = (_seq_logps(model, *held_c), _seq_logps(model, *held_r))
    info = {"sft/heldout_accuracy": sft_acc, "sft/steps": float(sft_steps)}
    logger.info("SFT: %s", info)
    return model, task, data, ref, (held_c, held_r, held_ref), held, info


def _policy_copy(ref_model):
    import copy

    policy = copy.deepcopy(ref_model)
    for p in policy.parameters():
        p.requires_grad_(True)
    return policy


def _smollm2_setup(cfg: MIOConfig, ctx: RunContext, gen):
    # Full scale: SmolLM2 answers "a+b=" prompts; chosen is the right sum, rejected a
    # wrong sum with the same leading digit (drawn uniformly, not from the model).
    import torch

    from lemmata.posttrain._models import load_smollm2

    model, tok = load_smollm2()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    train, held = _problems(ctx.rng, cfg)
    rng = ctx.rng

    def wrong(s):
        choices = [s // 10 * 10 + d for d in range(10) if d != s % 10]
        return int(rng.choice(choices))

    def encode(triples):
        prompts = [tok(f"{a}+{b}=")["input_ids"] for a, b, _ in triples]
        comps = [tok(f" {s}")["input_ids"] + [tok.eos_token_id] for *_, s in triples]
        length = max(len(p) + len(c) for p, c in zip(prompts, comps, strict=True))
        ids = torch.full((len(triples), length), tok.pad_token_id)
        att = torch.zeros_like(ids)
        comp = torch.zeros_like(ids)
        for i, (p, c) in enumerate(zip(prompts, comps, strict=True)):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            att[i, : len(p) + len(c)] = 1
            comp[i, len(p) : len(p) + len(c)] = 1
        return ids, att, comp

    pick = rng.integers(len(train), size=cfg.n_pairs)
    problems = [train[i] for i in pick]
    data = (
        encode([(a, b, a + b) for a, b in problems]),
        encode([(a, b, wrong(a + b)) for a, b in problems]),
    )
    held_c = encode([(a, b, a + b) for a, b in held])
    held_r = encode([(a, b, wrong(a + b)) for a, b in held])
    with torch.no_grad():
        ref = tuple(
            torch.cat(
                [
                    _seq_logps(model, *(t[i : i + 32] for t in d))
                    for i in range(0, d[0].shape[0], 32)
                ]
            )
            for d in data
        )
        held_ref = (_seq_logps(model, *held_c), _seq_logps(model, *held_r))
    return model, None, data, ref, (held_c, held_r, held_ref), held, {}


def _smollm2_policy(base, cfg):
    import copy

    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=2 * cfg.lora_rank,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.0,
    )
    return get_peft_model(copy.deepcopy(base), lora)


@experiment(
    name="mio-vs-dpo",
    paper=_PAPER,
    claim=(
        "Replacing DPO's Donsker-Varadhan bound by the Jensen-Shannon MI estimator "
        "(MIO) stops the late-training decline of the chosen response's likelihood "
        "while staying competitive."
    ),
    config=MIOConfig,
    quick=_QUICK,
    full=_FULL,
    seeds={"quick": 1, "full": 1},
    requires=("torch", "transformers"),
)
def mio_vs_dpo(cfg: MIOConfig, ctx: RunContext) -> Result:
    """Run DPO and MIO from the same reference and compare their trajectories."""
    import torch

    if cfg.model not in ("tiny-gpt2", "smollm2"):
        raise ValueError(
            f"model must be one of ['smollm2', 'tiny-gpt2']; got {cfg.model!r}"
        )
    if 2 * cfg.high >= 100 or cfg.low < 10:
        raise ValueError(f"operands must lie in [10, 49]; got [{cfg.low}, {cfg.high}]")
    ctx.seed_torch()
    gen = torch.Generator().manual_seed(ctx.seed)
    setup = _tiny_setup if cfg.model == "tiny-gpt2" else _smollm2_setup
    ref_model, task, data, ref, held_data, held, info = setup(cfg, ctx, gen)

    histories = {}
    for loss_name in ("dpo", "mio"):
        if cfg.model == "tiny-gpt2":
            policy = _policy_copy(ref_model)
        else:
            policy = _smollm2_policy(ref_model, cfg)
        # Same batches for both losses.
        loss_gen = torch.Generator().manual_seed(ctx.seed + 1)
        histories[loss_name] = _train_preference(
            policy, ref, data, task, held_data, held, cfg, loss_name, loss_gen
        )

    metrics = dict(info)
    for name, h in histories.items():
        metrics[f"{name}/chosen_decline"] = _decline(h)
        metrics[f"{name}/chosen_initial"] = h["chosen"][0]
        metrics[f"{name}/chosen_peak"] = max(h["chosen"])
        metrics[f"{name}/chosen_final"] = h["chosen"][-1]
        metrics[f"{name}/rejected_final"] = h["rejected"][-1]
        metrics[f"{name}/heldout_reward_accuracy"] = h["reward_acc"][-1]
        metrics[f"{name}/heldout_accuracy"] = h["accuracy"][-1]
    dpo_decline = metrics["dpo/chosen_decline"]
    mio_decline = metrics["mio/chosen_decline"]
    checks = [
        # Precondition: DPO shows the decline at all in this setting.
        Check("dpo/chosen_decline", dpo_decline, 1.0, ">="),
        # The claim: MIO's chosen log-likelihood declines less than DPO's ...
        Check("mio_minus_dpo/chosen_decline", mio_decline - dpo_decline, 0.0, "<"),
        # ... by a wide margin (at most a quarter of DPO's drop).
        Check(
            "mio_over_dpo/chosen_decline",
            mio_decline / dpo_decline if dpo_decline > 0 else float("nan"),
            0.25,
            "<=",
        ),
        # Competitive: held-out reward accuracy within 1 point of DPO's.
        Check(
            "mio_minus_dpo/heldout_reward_accuracy",
            metrics["mio/heldout_reward_accuracy"]
            - metrics["dpo/heldout_reward_accuracy"],
            -0.01,
            ">=",
        ),
    ]
    series = {f"{n}/{k}": v for n, h in histories.items() for k, v in h.items()}
    return Result(
        metrics=metrics,
        checks=checks,
        figures={"loglik_over_training": _figure(histories)},
        series=series,
    )
