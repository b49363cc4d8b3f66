"""Reproduction of arXiv 2511.13054 (Pretext-GRPO and ViSS-R1) on sprite videos.

``pretext-grpo``: synthetic videos of 8 frames of a 4x4 token grid show one
sprite (3 shapes) moving one cell per frame (up, down, left or right, wrapping
around) over static two-colour noise, with a ground row at the bottom (the cue
that gives images an orientation) and a trail left where the sprite has been
(the cue that gives time a direction). The prompt holds a task token, a text
hint token and the 128 frame tokens; the hint names the direction of motion and
agrees with it 90% of the time during training and evaluation, and at random on
the shortcut probe. A small decoder-only transformer is first taught the output
format only (targets with random letters), then trained with GRPO under three
pipelines with the same number of updates: P0 = GRPO on the direction query;
P1 = Pretext-GRPO (which transformation was applied: rotation, time reversal or
a swap of two frame groups) for half the updates, then the direction query;
P2 = the joint ViSS-R1 reward on transformed videos (identify the
transformation, answer about the original video). Rewards come from
:mod:`lemmata.posttrain._pretext`, the functions one would hand to TRL.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["PretextGRPOConfig", "make_video", "pretext_grpo_repro"]

_PAPER = "2511.13054"
_FRAMES, _SIDE = 8, 4
_FAMILIES = ("rotate", "reverse", "shuffle")
_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right = A-D

# Vocabulary: grid values, hint, task tokens, then the completion tokens.
_BG0, _BG1, _GROUND, _TRAIL, _SPRITE = 0, 1, 2, 3, 4  # sprite shapes 4, 5, 6
_HINT = 7  # 7..10: hint "up", "down", "left", "right"
_TASK = {"query": 11, "rotate": 12, "reverse": 13, "shuffle": 14,
         "joint/rotate": 15, "joint/reverse": 16, "joint/shuffle": 17}  # fmt: skip
_OUT = ("<transform>", "</transform>", "<answer>", "</answer>", *"ABCDEF", "<eos>")
_OUT0 = 18
_VOCAB = _OUT0 + len(_OUT)
_EOS = _VOCAB - 1
_PROMPT_LEN = 2 + _FRAMES * _SIDE * _SIDE
_MAX_COMPLETION = 7


@dataclass(frozen=True)
class PretextGRPOConfig:
    """Settings of the ``pretext-grpo`` experiment.

    Attributes
    ----------
    d_model, num_layers, num_heads : int
        Size of the decoder-only policy.
    hint_agreement : float
        Probability that the hint token names the true direction (training and
        in-distribution evaluation); the shortcut probe draws it at random.
    sft_steps, sft_batch, sft_lr : int, int, float
        Format-only supervised warm-up (random letters in the targets).
    updates : int
        GRPO updates per pipeline (P1 splits them in half).
    prompts_per_update, group_size : int
        Prompts per update and completions per prompt G.
    lr, beta : float
        Adam step size and k3 KL coefficient against the warm-up model.
    eval_videos : int
        Held-out videos per evaluation.
    seeds : int
        Training seeds per pipeline inside one run.
    """

    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    hint_agreement: float = 0.9
    sft_steps: int = 150
    sft_batch: int = 32
    sft_lr: float = 1e-3
    updates: int = 120
    prompts_per_update: int = 16
    group_size: int = 8
    lr: float = 1e-3
    beta: float = 0.04
    eval_videos: int = 256
    seeds: int = 1


_QUICK = PretextGRPOConfig()
_FULL = PretextGRPOConfig(updates=400, seeds=3, eval_videos=512)


def make_video(rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """One sprite video: frames (8, 4, 4) of ints, direction index, shape index.

    The bottom row is ground; the sprite moves on the 3x4 torus above it and
    leaves a trail on the cells it has left.
    """
    grid = rng.integers(_BG0, _BG1 + 1, size=(_SIDE, _SIDE))
    grid[-1] = _GROUND
    direction, shape = int(rng.integers(4)), int(rng.integers(3))
    dr, dc = _DIRECTIONS[direction]
    r, c = int(rng.integers(_SIDE - 1)), int(rng.integers(_SIDE))
    frames, trail = [], []
    for _ in range(_FRAMES):
        frame = grid.copy()
        for tr, tc in trail:
            frame[tr, tc] = _TRAIL
        frame[r, c] = _SPRITE + shape
        frames.append(frame)
        trail.append((r, c))
        r, c = (r + dr) % (_SIDE - 1), (c + dc) % _SIDE
    return np.stack(frames), direction, shape


def _hint(direction: int, agreement: float, rng) -> int:
    if rng.random() < agreement:
        return _HINT + direction
    return _HINT + int(rng.integers(4))


def _example(task: str, rng, agreement: float):
    """(prompt ids, transform letter or None, direction letter)."""
    from lemmata.posttrain._pretext import sample_transform

    video, direction, _ = make_video(rng)
    letter = None
    family = task.split("/")[-1]
    if family in _FAMILIES:
        video, letter = sample_transform(video, family, rng, kind="video")
    prompt = [_TASK[task], _hint(direction, agreement, rng), *video.reshape(-1)]
    return prompt, letter, "ABCD"[direction]


def _target(task: str, letter: str | None, answer: str) -> list[int]:
    ids = {tok: _OUT0 + i for i, tok in enumerate(_OUT)}
    if task.startswith("joint/"):
        toks = ["<transform>", letter, "</transform>", "<answer>", answer, "</answer>"]
    elif task == "query":
        toks = ["<answer>", answer, "</answer>"]
    else:
        toks = ["<answer>", letter, "</answer>"]
    return [ids[t] for t in toks] + [_EOS]


def _decode(ids) -> str:
    words = []
    for i in ids:
        if i == _EOS:
            break
        words.append(_OUT[i - _OUT0] if i >= _OUT0 else "?")
    return " ".join(words)


class _Decoder:
    """Namespace for the torch model class (built lazily: torch is optional)."""

    cls = None


def _decoder_class():
    if _Decoder.cls is not None:
        return _Decoder.cls
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.h = h
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(
                nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)
            )

        def forward(self, x, past):
            b, n, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.h, d // self.h).unbind(2)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, h, n, hs)
            if past is not None:
                k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
            total = k.shape[2]
            mask = torch.ones(n, total, dtype=torch.bool).tril(total - n)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + self.proj(att.transpose(1, 2).reshape(b, n, d))
            return x + self.mlp(self.ln2(x)), (k, v)

    class TinyDecoder(nn.Module):
        """Causal transformer with a key/value cache shared across a group."""

        def __init__(self, vocab, max_len, d, layers, heads):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(max_len, d) * 0.02)
            self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

        def forward(self, ids, past=None):
            start = 0 if past is None else past[0][0].shape[2]
            x = self.embed(ids) + self.pos[start : start + ids.shape[1]]
            new = []
            for i, block in enumerate(self.blocks):
                x, kv = block(x, None if past is None else past[i])
                new.append(kv)
            return self.head(self.norm(x)), new

    _Decoder.cls = TinyDecoder
    return TinyDecoder


def _expand(past, g):
    return [(k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)) for k, v in past]


def _allowed_mask():
    import torch

    # Completions may only use completion tokens.
    allowed = torch.full((_VOCAB,), -math.inf)
    allowed[_OUT0:] = 0.0
    return allowed


def _generate(model, prompts, g, gen, greedy=False):
    """Sample g completions per prompt; returns (P*g, L) ids and (P*g, L) mask."""
    import torch

    allowed = _allowed_mask()
    with torch.no_grad():
        logits, past = model(prompts)
        past = _expand(past, g)
        last = logits[:, -1].repeat_interleave(g, 0)
        out, done = [], torch.zeros(last.shape[0], dtype=torch.bool)
        mask = []
        for _ in range(_MAX_COMPLETION):
            scores = last + allowed
            if greedy:
                tok = scores.argmax(-1)
            else:
                tok = torch.multinomial(scores.softmax(-1), 1, generator=gen).squeeze(1)
            tok = torch.where(done, torch.full_like(tok, _EOS), tok)
            mask.append(~done)
            out.append(tok)
            done = done | (tok == _EOS)
            if done.all():
                break
            logits, past = model(tok[:, None], past)
            last = logits[:, -1]
    return torch.stack(out, 1), torch.stack(mask, 1).float()


def _completion_logps(model, prompts, completions, g):
    """Per-token log-probs (P*g, L) of the completions under ``model``."""
    import torch

    allowed = _allowed_mask()
    logits, past = model(prompts)
    first = logits[:, -1:].repeat_interleave(g, 0)
    rest, _ = model(completions[:, :-1], _expand(past, g))
    scores = torch.cat([first, rest], 1) + allowed
    logp = torch.log_softmax(scores, -1)
    return logp.gather(-1, completions.unsqueeze(-1)).squeeze(-1)


def _batch(task_sampler, n, rng, agreement):
    import torch

    rows = [_example(task_sampler(), rng, agreement) for _ in range(n)]
    prompts = torch.tensor(np.array([r[0] for r in rows]), dtype=torch.long)
    return prompts, rows


def _task_of(prompt_row) -> str:
    inv = {v: k for k, v in _TASK.items()}
    return inv[int(prompt_row[0])]


def _rewards(task, completions_text, rows, g):
    from lemmata.posttrain._pretext import (
        answer_accuracy_reward,
        format_reward,
        pretext_accuracy_reward,
        viss_reward,
    )

    labels = [r[1] for r in rows for _ in range(g)]
    answers = [r[2] for r in rows for _ in range(g)]
    kw = {"prompts": None, "completions": completions_text}
    if task.startswith("joint"):
        return viss_reward(**kw, transform_label=labels, solution=answers)
    fmt = format_reward(**kw)
    if task == "query":
        acc = answer_accuracy_reward(**kw, solution=answers)
    else:
        acc = pretext_accuracy_reward(**kw, transform_label=labels)
    return [a + b for a, b in zip(fmt, acc, strict=True)]


def _grpo_update(model, ref, opt, cfg, task_sampler, rng, gen):
    import torch

    from lemmata.posttrain.grpo import group_advantages, policy_loss

    g = cfg.group_size
    prompts, rows = _batch(
        task_sampler, cfg.prompts_per_update, rng, cfg.hint_agreement
    )
    model.eval()
    comp, mask = _generate(model, prompts, g, gen)
    text = [_decode(c.tolist()) for c in comp]
    task = "joint" if _task_of(prompts[0]).startswith("joint") else _task_of(prompts[0])
    rewards = torch.tensor(_rewards(task, text, rows, g))
    adv = group_advantages(rewards, g)

    model.train()
    logps = _completion_logps(model, prompts, comp, g)
    with torch.no_grad():
        ref_logps = _completion_logps(ref, prompts, comp, g)
    loss, _ = policy_loss(
        logps, logps.detach(), adv, mask, loss_type="grpo", ref_logps=ref_logps,
        beta=cfg.beta, kl_bias_correction=False,
    )  # fmt: skip
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(rewards.mean())


def _sft(model, cfg, rng):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=cfg.sft_lr)
    tasks = list(_TASK)
    for _ in range(cfg.sft_steps):
        prompts, rows = _batch(lambda: tasks[rng.integers(len(tasks))], cfg.sft_batch,
                               rng, cfg.hint_agreement)  # fmt: skip
        targets = []
        for p, (_, letter, _) in zip(prompts, rows, strict=True):
            task = _task_of(p)
            n_opts = {"rotate": 4, "reverse": 2, "shuffle": 6}.get(
                task.split("/")[-1], 4
            )
            rand = lambda n: "ABCDEF"[rng.integers(n)]  # noqa: E731
            targets.append(_target(task, rand(n_opts) if letter else None, rand(4)))
        width = max(len(t) for t in targets)
        comp = torch.full((len(targets), width), _EOS)
        mask = torch.zeros(len(targets), width)
        for i, t in enumerate(targets):
            comp[i, : len(t)], mask[i, : len(t)] = torch.tensor(t), 1.0
        logps = _completion_logps(model, prompts, comp, 1)
        loss = -(logps * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _evaluate(model, task, cfg, seed, agreement):
    """Greedy accuracies: (answer accuracy, transform accuracy or nan, per-row)."""

    from lemmata.posttrain._pretext import parse_completion

    rng = np.random.default_rng(seed)
    prompts, rows = _batch(lambda: task, cfg.eval_videos, rng, agreement)
    model.eval()
    comp, _ = _generate(model, prompts, 1, None, greedy=True)
    joint = task.startswith("joint")
    ans, trans = [], []
    for c, (_, letter, answer) in zip(comp, rows, strict=True):
        tags = parse_completion(_decode(c.tolist()), joint=joint) or {}
        if task in _FAMILIES:
            ans.append(tags.get("answer") == letter)
        else:
            ans.append(tags.get("answer") == answer)
        if joint:
            trans.append(tags.get("transform") == letter)
    return (
        float(np.mean(ans)),
        float(np.mean(trans)) if trans else math.nan,
        (
            np.array(ans),
            np.array(trans),
        ),
    )


def _cycle(tasks, rng):
    return lambda: tasks[rng.integers(len(tasks))]


def _train_pipelines(base, cfg, seed):
    import torch

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    half = cfg.updates // 2
    plans = {
        "P0": [("query", cfg.updates)],
        "P1": [("pretext", half), ("query", cfg.updates - half)],
        "P2": [("joint", cfg.updates)],
    }
    samplers = {
        "query": lambda: "query",
        "pretext": _cycle(list(_FAMILIES), rng),
        "joint": _cycle([f"joint/{f}" for f in _FAMILIES], rng),
    }
    for name, plan in plans.items():
        torch.manual_seed(seed)
        model = copy.deepcopy(base).requires_grad_(True)  # base is frozen
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        curve, extra = [], {}
        for stage, n in plan:
            for _ in range(n):
                # Each update draws one task; pretext and joint updates pick the
                # family per update so a group shares one question.
                task = samplers[stage]()
                curve.append(
                    _grpo_update(model, base, opt, cfg, lambda t=task: t, rng, gen)
                )
            if stage == "pretext":
                extra["pretext"] = {
                    f: _evaluate(model, f, cfg, seed + 1 + i, cfg.hint_agreement)[0]
                    for i, f in enumerate(_FAMILIES)
                }
        out[name] = {"model": model, "curve": curve, **extra}
    return out


def _query_scores(name, model, cfg, seed):
    """(in-distribution accuracy, shortcut-probe accuracy, transform stats)."""
    if name != "P2":
        a = _evaluate(model, "query", cfg, seed, cfg.hint_agreement)[0]
        b = _evaluate(model, "query", cfg, seed, 0.0)[0]
        return a, b, {}
    accs, probes, stats = [], [], {}
    for i, f in enumerate(_FAMILIES):
        a, t, (ans, trans) = _evaluate(
            model, f"joint/{f}", cfg, seed + i, cfg.hint_agreement
        )
        accs.append(a)
        probes.append(_evaluate(model, f"joint/{f}", cfg, seed + i, 0.0)[0])
        stats[f"transform_acc/{f}"] = t
        stats[f"answer_given_right_transform/{f}"] = (
            float(ans[trans].mean()) if trans.any() else math.nan
        )
        stats[f"answer_given_wrong_transform/{f}"] = (
            float(ans[~trans].mean()) if (~trans).any() else math.nan
        )
    return float(np.mean(accs)), float(np.mean(probes)), stats


@experiment(
    name="pretext-grpo",
    paper=_PAPER,
    claim=(
        "Rewarding a policy for identifying the transformation applied to its "
        "visual input (Pretext-GRPO), alone or jointly with the user's question "
        "(ViSS-R1), makes it use the visual stream: pretext accuracy rises well "
        "above chance, the downstream answer improves, and text shortcuts hurt less."
    ),
    config=PretextGRPOConfig,
    quick=_QUICK,
    full=_FULL,
    seeds={"quick": 1, "full": 1},
    requires=("torch",),
)
def pretext_grpo_repro(cfg: PretextGRPOConfig, ctx: RunContext) -> Result:

    ctx.seed_torch()
    rng = ctx.rng
    base = _decoder_class()(
        _VOCAB,
        _PROMPT_LEN + _MAX_COMPLETION,
        cfg.d_model,
        cfg.num_layers,
        cfg.num_heads,
    )
    _sft(base, cfg, rng)
    for p in base.parameters():
        p.requires_grad_(False)
    eval_seed = int(rng.integers(2**31))
    base_query = _evaluate(base, "query", cfg, eval_seed, cfg.hint_agreement)[0]
    base_pretext = {f: _evaluate(base, f, cfg, eval_seed, 1.0)[0] for f in _FAMILIES}

    per_seed = []
    for seed in rng.integers(2**31, size=cfg.seeds):
        runs = _train_pipelines(base, cfg, int(seed))
        scores = {
            n: _query_scores(n, r["model"], cfg, eval_seed) for n, r in runs.items()
        }
        per_seed.append((runs, scores))
    return _summarise(cfg, per_seed, base_query, base_pretext)


def _summarise(cfg, per_seed, base_query, base_pretext) -> Result:
    result = Result()
    m = result.metrics
    m["query_acc/base"] = base_query
    for f in _FAMILIES:
        m[f"pretext_acc/base/{f}"] = base_pretext[f]
        m[f"pretext_acc/P1/{f}"] = float(
            np.median([runs["P1"]["pretext"][f] for runs, _ in per_seed])
        )
    for name in ("P0", "P1", "P2"):
        acc = [scores[name][0] for _, scores in per_seed]
        probe = [scores[name][1] for _, scores in per_seed]
        m[f"query_acc/{name}"] = float(np.median(acc))
        m[f"shortcut_probe_acc/{name}"] = float(np.median(probe))
        m[f"shortcut_drop/{name}"] = float(np.median(np.subtract(acc, probe)))
        result.series[f"train_reward/{name}"] = [
            float(x) for x in np.mean([runs[name]["curve"] for runs, _ in per_seed], 0)
        ]
    for key in per_seed[0][1]["P2"][2]:
        # NaN where no seed had the condition (e.g. no transform identified).
        vals = np.array([s["P2"][2][key] for _, s in per_seed], dtype=float)
        vals = vals[~np.isnan(vals)]
        m[f"P2/{key}"] = float(np.median(vals)) if vals.size else math.nan
    result.checks = [
        Check("P1 rotation accuracy after Pretext-GRPO", m["pretext_acc/P1/rotate"],
              0.9, ">="),
        Check("P1 time-reversal accuracy after Pretext-GRPO",
              m["pretext_acc/P1/reverse"], 0.9, ">="),
        Check("P1 frame-group-swap accuracy after Pretext-GRPO",
              m["pretext_acc/P1/shuffle"], 0.7, ">="),
        Check("query accuracy P1 - P0 (held-out)",
              m["query_acc/P1"] - m["query_acc/P0"], 0.05, ">="),
        Check("largest shortcut drop of P1, P2 minus P0's drop",
              max(m["shortcut_drop/P1"], m["shortcut_drop/P2"])
              - m["shortcut_drop/P0"], 0.0, "<"),
    ]  # fmt: skip
    result.figures = _figures(result, base_pretext)
    return result


def _figures(result, base_pretext) -> dict:
    from matplotlib.figure import Figure

    m = result.metrics
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for name in ("P0", "P1", "P2"):
        curve = np.array(result.series[f"train_reward/{name}"])
        k = max(1, len(curve) // 20)
        smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
        ax.plot(smooth, label=name)
    ax.set_xlabel("GRPO update")
    ax.set_ylabel("mean training reward (moving average)")
    ax.set_title("P0 query GRPO, P1 pretext then query, P2 joint ViSS-R1")
    ax.legend()
    ax.grid(alpha=0.3)

    bars = Figure(figsize=(8, 4.2))
    bx, cx = bars.subplots(1, 2)
    chance = {"rotate": 1 / 4, "reverse": 0.55, "shuffle": 1 / 6}
    xs = np.arange(len(_FAMILIES))
    bx.bar(xs - 0.2, [base_pretext[f] for f in _FAMILIES], 0.4, label="warm-up")
    bx.bar(xs + 0.2, [m[f"pretext_acc/P1/{f}"] for f in _FAMILIES], 0.4, label="P1")
    bx.scatter(xs, [chance[f] for f in _FAMILIES], color="k", marker="_", s=400,
               label="chance (majority)")  # fmt: skip
    bx.set_xticks(xs, _FAMILIES)
    bx.set_ylabel("held-out transformation accuracy")
    bx.legend(fontsize=8)
    names = ["P0", "P1", "P2"]
    xs = np.arange(3)
    cx.bar(xs - 0.2, [m[f"query_acc/{n}"] for n in names], 0.4, label="hint 90% right")
    cx.bar(xs + 0.2, [m[f"shortcut_probe_acc/{n}"] for n in names], 0.4,
           label="hint random")  # fmt: skip
    cx.set_xticks(xs, names)
    cx.set_ylabel("held-out direction accuracy")
    cx.legend(fontsize=8)
    return {"train_reward": fig, "accuracies": bars}
