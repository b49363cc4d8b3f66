"""Reproduction of arXiv 2602.22150 (CoLoGen) at toy scale.

``cologen-routing``: an MMDiT-lite (joint attention over noisy patches, text
tokens and source-image patches) is pre-trained in code as a text-to-image
generator of a "shapes world", once per run. Five conditional tasks then
follow the paper's curriculum (inpainting, grounding, controllable
generation from edge maps, customisation from an object crop, instruction
editing). CoLoGen (PRW experts on the source K/V, one new expert per stage,
veteran loss) is compared with co-training and sequential fine-tuning of one
LoRA of matched total rank, and with single-task specialists.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["CoLoGenConfig", "cologen_routing"]

logger = logging.getLogger(__name__)

_PAPER = "2602.22150"
TASKS = ("inpaint", "ground", "control", "custom", "edit")
_HIGHER_BETTER = {
    "inpaint": False,
    "ground": True,
    "control": True,
    "custom": True,
    "edit": True,
}
_PALETTE = np.array(
    [[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]
)
# Vocabulary: 0 pad, 1-6 tasks (t2i first), 7-9 shapes, 10-13 colours, 14-17 quadrants.
_TASK_TOKEN = {"t2i": 1, **{t: 2 + i for i, t in enumerate(TASKS)}}
_TEXT_LEN = 7
_VOCAB = 18


@dataclass(frozen=True)
class CoLoGenConfig:
    """Shapes world, MMDiT-lite and the five-stage curriculum.

    Attributes
    ----------
    size : int
        Image side (RGB in [-1, 1]); objects are 3x3 (square, plus, ring).
    dim, depth, heads : int
        Model width, blocks and heads; patch 2.
    base_steps : int
        Text-to-image pre-training steps (trained once per run).
    stage_steps : int
        Steps per curriculum stage; co-training gets ``5 * stage_steps``,
        each specialist ``stage_steps``.
    batch_size : int
    base_lr, lr : float
        AdamW step sizes of pre-training and of the adapters.
    rank : int
        LoRA rank of each CoLoGen expert; the co-training, sequential and
        specialist LoRAs have rank ``5 * rank`` (matched parameters).
    rho, alpha : float
        Target share of the newest expert and the veteran-loss weight
        (stages 1-4).
    sample_steps : int
        Euler steps of the rectified-flow sampler at evaluation.
    eval_size : int
        Evaluation samples per task (fixed inputs and noise for all methods).
    retain_tolerance : float
        Largest relative degradation of inpainting and grounding from their
        post-stage values to after the last stage (0.10 = 10%).
    gap_fraction : float
        Share of the co-training-vs-specialist gap that CoLoGen must close.
    min_conflict_tasks : int
        Tasks on which co-training must trail the specialists by more than
        2 paired standard errors.
    """

    size: int = 8
    dim: int = 64
    depth: int = 3
    heads: int = 4
    base_steps: int = 700
    stage_steps: int = 120
    batch_size: int = 32
    base_lr: float = 2e-3
    lr: float = 3e-3
    rank: int = 4
    rho: float = 0.8
    alpha: float = 0.5
    sample_steps: int = 12
    eval_size: int = 64
    retain_tolerance: float = 0.10
    gap_fraction: float = 0.5
    min_conflict_tasks: int = 2


_FULL = CoLoGenConfig(
    size=16,
    dim=96,
    depth=4,
    base_steps=3000,
    stage_steps=1500,
    rank=8,
    sample_steps=20,
    eval_size=200,
)


# ------------------------------------------------------------------ shapes world


def _shape_mask(shape):
    m = np.ones((3, 3), dtype=bool)
    if shape == 1:  # plus
        m[[0, 0, 2, 2], [0, 2, 0, 2]] = False
    elif shape == 2:  # ring
        m[1, 1] = False
    return m


def _scene(rng, size, n_obj):
    """Plain background + objects; returns image and object records."""
    img = np.tile(rng.uniform(-0.6, -0.1) * np.ones((3, 1, 1)), (1, size, size))
    objs = []
    spots = [(r, c) for r in range(1, size - 3) for c in range(1, size - 3)]
    while len(objs) < n_obj:
        # Only spots that keep 3 cells from every placed object; when the first
        # object leaves none (e.g. the centre of an 8x8 image), start again.
        free = [
            (r, c)
            for r, c in spots
            if all(abs(r - o["r"]) >= 3 or abs(c - o["c"]) >= 3 for o in objs)
        ]
        if not free:
            objs = []
            continue
        r, c = free[int(rng.integers(len(free)))]
        objs.append(
            {
                "r": int(r),
                "c": int(c),
                "shape": int(rng.integers(3)),
                "colour": int(rng.integers(4)),
            }
        )
    for o in objs:
        _draw(img, o)
    return img, objs


def _draw(img, o, colour=None):
    m = _shape_mask(o["shape"])
    col = _PALETTE[o["colour"] if colour is None else colour]
    patch = img[:, o["r"] : o["r"] + 3, o["c"] : o["c"] + 3]
    patch[:, m] = col[:, None]


def _obj_mask(size, o):
    m = np.zeros((size, size), dtype=bool)
    m[o["r"] : o["r"] + 3, o["c"] : o["c"] + 3] = _shape_mask(o["shape"])
    return m


def _quadrant(o, size):
    return 14 + 2 * int(o["r"] + 1 >= size // 2) + int(o["c"] + 1 >= size // 2)


def _obj_tokens(o, size, colour=None):
    return [
        7 + o["shape"],
        10 + (o["colour"] if colour is None else colour),
        _quadrant(o, size),
    ]


def _text(task, *parts):
    toks = [_TASK_TOKEN[task]] + [t for p in parts for t in p]
    return toks + [0] * (_TEXT_LEN - len(toks))


def _edges(img):
    """Binary edge map: max channel difference to a 4-neighbour > 0.5."""
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    c = pad[:, 1:-1, 1:-1]
    diffs = [
        np.abs(c - pad[:, 1:-1, :-2]),
        np.abs(c - pad[:, 1:-1, 2:]),
        np.abs(c - pad[:, :-2, 1:-1]),
        np.abs(c - pad[:, 2:, 1:-1]),
    ]
    return np.max(np.stack(diffs).max(1), 0) > 0.5


def _sample(task, rng, size):
    """One (source, text, target, info) example of ``task``."""
    if task == "t2i":
        img, objs = _scene(rng, size, int(rng.integers(1, 3)))
        return None, _text("t2i", *[_obj_tokens(o, size) for o in objs]), img, {}
    if task == "inpaint":
        img, objs = _scene(rng, size, int(rng.integers(1, 3)))
        r, c = rng.integers(0, size - 3, 2)
        hole = np.zeros((size, size), dtype=bool)
        hole[r : r + 4, c : c + 4] = True
        src = img.copy()
        checker = np.where((np.indices((size, size)).sum(0) % 2) == 0, 1.0, -1.0)
        src[:, hole] = checker[hole]
        text = _text("inpaint", *[_obj_tokens(o, size) for o in objs])
        return src, text, img, {"hole": hole}
    if task == "ground":
        img, objs = _scene(rng, size, 2)
        o = objs[int(rng.integers(2))]
        tgt = img.copy()
        r0, c0, r1, c1 = o["r"] - 1, o["c"] - 1, o["r"] + 3, o["c"] + 3
        box = np.zeros((size, size), dtype=bool)
        box[r0 : r1 + 1, c0 : c1 + 1] = True
        box[r0 + 1 : r1, c0 + 1 : c1] = False
        tgt[:, box] = 1.0
        return (
            img,
            _text("ground", _obj_tokens(o, size)),
            tgt,
            {"box": (r0, c0, r1, c1)},
        )
    if task == "control":
        img, objs = _scene(rng, size, int(rng.integers(1, 3)))
        edge = _edges(img)
        src = np.repeat(np.where(edge, 1.0, -1.0)[None], 3, 0)
        text = _text("control", *[[10 + o["colour"]] for o in objs])
        return src, text, img, {"edges": edge}
    if task == "custom":
        img, objs = _scene(rng, size, 1)
        o = objs[0]
        src = -np.ones((3, size, size))
        centre = {
            "r": size // 2 - 1,
            "c": size // 2 - 1,
            "shape": o["shape"],
            "colour": o["colour"],
        }
        _draw(src, centre)
        return src, _text("custom", [_quadrant(o, size)]), img, {"colour": o["colour"]}
    if task == "edit":
        img, objs = _scene(rng, size, int(rng.integers(1, 3)))
        o = objs[int(rng.integers(len(objs)))]
        new = int((o["colour"] + rng.integers(1, 4)) % 4)
        tgt = img.copy()
        _draw(tgt, o, new)
        info = {"mask": _obj_mask(size, o), "colour": new}
        return img, _text("edit", _obj_tokens(o, size, new)), tgt, info
    raise ValueError(f"task must be one of {('t2i', *TASKS)}; got {task!r}")


def _batch(task, rng, n, size, torch):
    rows = [_sample(task, rng, size) for _ in range(n)]
    src = None if rows[0][0] is None else np.stack([r[0] for r in rows])
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return (
        None if src is None else as_t(src),
        torch.as_tensor([r[1] for r in rows]),
        as_t(np.stack([r[2] for r in rows])),
        [r[3] for r in rows],
    )


# ---------------------------------------------------------------------- metrics


def _nearest_colour(pixels):
    d = ((pixels[:, None, :] - _PALETTE[None]) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


def _score(task, out, src, info):
    """Per-sample score of one output image (3, S, S) in [-1, 1]."""
    if task == "inpaint":
        return float(((out - info["target"]) ** 2)[:, info["hole"]].mean())
    if task == "ground":
        white = (out > 0.5).all(0)
        r0, c0, r1, c1 = info["box"]
        gt = np.zeros_like(white)
        gt[r0 : r1 + 1, c0 : c1 + 1] = True
        if not white.any():
            return 0.0
        rows, cols = np.nonzero(white)
        det = np.zeros_like(white)
        det[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        return float((det & gt).sum() / (det | gt).sum())
    if task == "control":
        pred, ref = _edges(out), info["edges"]
        tp = (pred & ref).sum()
        return float(2 * tp / max(pred.sum() + ref.sum(), 1))
    if task == "custom":
        idx, dist = _nearest_colour(out.reshape(3, -1).T)
        counts = np.bincount(idx[dist < 0.8], minlength=4)
        return float(counts.max() >= 3 and counts.argmax() == info["colour"])
    if task == "edit":
        mean = out[:, info["mask"]].mean(1)
        return float(_nearest_colour(mean[None])[0][0] == info["colour"])
    raise ValueError(task)


# ------------------------------------------------------------------------ model


def _build_model(cfg, torch):
    from torch import nn

    from lemmata.nn._cologen import PRWSourceKV

    d, p, s = cfg.dim, 2, cfg.size
    n_patch = (s // p) ** 2
    heads = cfg.heads

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
            self.mlp = nn.Sequential(
                nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)
            )
            self.ada = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)
            self.prw: PRWSourceKV | None = None

        def forward(self, x, c, n_src, train):
            b, n, _ = x.shape
            s1, b1, g1, s2, b2, g2 = self.ada(c)[:, None].chunk(6, -1)
            q, k, v = self.qkv(self.norm1(x) * (1 + s1) + b1).chunk(3, -1)
            mask = None
            if n_src:
                h = self.norm1(x[:, -n_src:]) * (1 + s1) + b1
                if self.prw is not None:
                    dk, dv = self.prw(h, train=train)
                    k = torch.cat([k[:, :-n_src], k[:, -n_src:] + dk], 1)
                    v = torch.cat([v[:, :-n_src], v[:, -n_src:] + dv], 1)
                # Source queries attend only to source keys (Eq. 5 of the paper).
                mask = torch.ones(n, n, dtype=torch.bool)
                mask[-n_src:, : n - n_src] = False
            q, k, v = (
                t.view(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v)
            )
            a = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask
            )
            x = x + g1 * self.proj(a.transpose(1, 2).reshape(b, n, d))
            return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)

    class MMDiTLite(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Linear(3 * p * p, d)
            self.pos = nn.Parameter(torch.randn(1, n_patch, d) * 0.02)
            self.text = nn.Embedding(_VOCAB, d)
            self.text_pos = nn.Parameter(torch.randn(1, _TEXT_LEN, d) * 0.02)
            self.stream = nn.Parameter(torch.randn(3, d) * 0.02)
            self.t_mlp = nn.Sequential(nn.Linear(32, d), nn.SiLU(), nn.Linear(d, d))
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.depth))
            self.norm = nn.LayerNorm(d, elementwise_affine=False)
            self.ada = nn.Linear(d, 2 * d)
            self.out = nn.Linear(d, 3 * p * p)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def patchify(self, img):
            b = img.shape[0]
            x = img.reshape(b, 3, s // p, p, s // p, p).permute(0, 2, 4, 1, 3, 5)
            return x.reshape(b, n_patch, 3 * p * p)

        def forward(self, z, sigma, text, src=None, train=False):
            b = z.shape[0]
            freqs = torch.exp(-math.log(1000) * torch.arange(16) / 16)
            ang = sigma[:, None] * 1000 * freqs[None]
            c = self.t_mlp(torch.cat([ang.sin(), ang.cos()], 1))
            parts = [
                self.patch(self.patchify(z)) + self.pos + self.stream[0],
                self.text(text) + self.text_pos + self.stream[1],
            ]
            n_src = 0
            if src is not None:
                parts.append(self.patch(self.patchify(src)) + self.pos + self.stream[2])
                n_src = n_patch
            x = torch.cat(parts, 1)
            for blk in self.blocks:
                x = blk(x, c, n_src, train)
            sh, sc = self.ada(c)[:, None].chunk(2, -1)
            out = self.out(self.norm(x[:, :n_patch]) * (1 + sc) + sh)
            out = out.reshape(b, s // p, s // p, 3, p, p).permute(0, 3, 1, 4, 2, 5)
            return out.reshape(b, 3, s, s)

    return MMDiTLite()


def _flow_loss(model, rng, src, text, tgt, torch, train):
    sigma = torch.sigmoid(
        torch.as_tensor(rng.normal(size=len(tgt)), dtype=torch.float32)
    )
    eps = torch.as_tensor(rng.normal(size=tgt.shape), dtype=torch.float32)
    s = sigma.view(-1, 1, 1, 1)
    pred = model((1 - s) * tgt + s * eps, sigma, text, src, train=train)
    return (pred - (eps - tgt)).pow(2).mean()


def _pretrain(cfg, rng, torch):
    model = _build_model(cfg, torch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.base_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.base_lr, total_steps=cfg.base_steps, pct_start=0.05
    )
    losses = []
    for _ in range(cfg.base_steps):
        _, text, tgt, _ = _batch("t2i", rng, cfg.batch_size, cfg.size, torch)
        loss = _flow_loss(model, rng, None, text, tgt, torch, False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, losses


def _attach(base, cfg, rank, torch):
    """A copy of the frozen base with a fresh PRW (no expert yet) per block."""
    import copy

    from lemmata.nn._cologen import PRWSourceKV

    model = copy.deepcopy(base)
    for blk in model.blocks:
        blk.prw = PRWSourceKV(cfg.dim, cfg.dim, rank=rank)
    return model


@dataclass
class _EvalSet:
    src: object
    text: object
    tgt: object
    info: list
    noise: object


def _eval_sets(cfg, rng, torch):
    sets = {}
    for task in TASKS:
        src, text, tgt, info = _batch(task, rng, cfg.eval_size, cfg.size, torch)
        for i, row in enumerate(info):
            row["target"] = tgt[i].numpy()
        noise = torch.as_tensor(rng.normal(size=tgt.shape), dtype=torch.float32)
        sets[task] = _EvalSet(src, text, tgt, info, noise)
    return sets


def _evaluate(model, cfg, es, task, torch):
    """Per-sample scores of ``task`` with a deterministic Euler sampler."""
    z, sig = es.noise.clone(), torch.linspace(1.0, 0.0, cfg.sample_steps + 1)
    with torch.no_grad():
        for k in range(cfg.sample_steps):
            v = model(z, sig[k].expand(len(z)), es.text, es.src, train=False)
            z = z + (sig[k + 1] - sig[k]) * v
    out = z.clamp(-1, 1).numpy()
    return np.array([_score(task, out[i], None, es.info[i]) for i in range(len(out))])


def _param_digest(params):
    h = hashlib.sha256()
    for prm in params:
        h.update(prm.detach().numpy().tobytes())
    return h.hexdigest()


def _train_adapter(model, params, cfg, rng, torch, tasks, steps, curriculum=None):
    opt = None
    if curriculum is None:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    logs = []
    for i in range(steps):
        task = tasks[i % len(tasks)]
        src, text, tgt, _ = _batch(task, rng, cfg.batch_size, cfg.size, torch)
        loss = _flow_loss(model, rng, src, text, tgt, torch, True)
        if curriculum is not None:
            logs.append(curriculum.step(loss))
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            logs.append({"loss/task": loss.item()})
    return logs


def _run_cologen(base, cfg, rng, evals, torch, alpha):
    from lemmata.nn._cologen import StagedCurriculum

    model = _attach(base, cfg, cfg.rank, torch)
    prws = [blk.prw for blk in model.blocks]
    cur = StagedCurriculum(prws, lr=cfg.lr)
    post, usage, frozen_changed = {}, [], 0
    digests = {}
    for t, task in enumerate(TASKS):
        cur.start_stage(t, rho=cfg.rho if t else None, alpha=alpha if t else 0.0)
        logs = _train_adapter(
            model, None, cfg, rng, torch, [task], cfg.stage_steps, cur
        )
        usage.append(
            float(np.mean([g["usage/hard"] for g in logs[-max(1, len(logs) // 4) :]]))
        )
        post[task] = _evaluate(model, cfg, evals[task], task, torch)
        for k in range(t + 1):
            digests.setdefault(
                k, _param_digest([q for m in prws for q in m.expert_parameters(k)])
            )
    base_digest = _param_digest(base.parameters())
    for k, dig in digests.items():
        now = _param_digest([q for m in prws for q in m.expert_parameters(k)])
        frozen_changed += int(now != dig)
    final = {task: _evaluate(model, cfg, evals[task], task, torch) for task in TASKS}
    return post, final, usage, frozen_changed, base_digest


def _run_sequential(base, cfg, rng, evals, torch):
    model = _attach(base, cfg, 5 * cfg.rank, torch)
    for blk in model.blocks:
        blk.prw.add_expert()
    params = [q for blk in model.blocks for q in blk.prw.expert_parameters(0)]
    post = {}
    for task in TASKS:
        _train_adapter(model, params, cfg, rng, torch, [task], cfg.stage_steps)
        post[task] = _evaluate(model, cfg, evals[task], task, torch)
    final = {task: _evaluate(model, cfg, evals[task], task, torch) for task in TASKS}
    return post, final


def _run_single(base, cfg, rng, evals, torch, tasks, steps):
    model = _attach(base, cfg, 5 * cfg.rank, torch)
    for blk in model.blocks:
        blk.prw.add_expert()
    params = [q for blk in model.blocks for q in blk.prw.expert_parameters(0)]
    _train_adapter(model, params, cfg, rng, torch, list(tasks), steps)
    return {task: _evaluate(model, cfg, evals[task], task, torch) for task in tasks}


# ------------------------------------------------------------------- experiment


def _better(task, a, b):
    """How much mean score ``a`` beats ``b`` (positive = better)."""
    return (a - b) if _HIGHER_BETTER[task] else (b - a)


def _degradation(task, post, final):
    """Relative loss from the post-stage value to the final value."""
    return _better(task, post, final) / max(abs(post), 1e-8)


@experiment(
    name="cologen-routing",
    paper=_PAPER,
    claim=(
        "Routing the source-image keys/values to per-stage low-rank experts, "
        "with earlier experts frozen, avoids the concept-localization conflict "
        "of one shared adapter and keeps earlier skills through a staged "
        "curriculum."
    ),
    config=CoLoGenConfig,
    quick=CoLoGenConfig(),
    full=_FULL,
    seeds={"quick": 1, "full": 3},
    requires=("torch",),
)
def cologen_routing(cfg: CoLoGenConfig, ctx: RunContext) -> Result:
    """Pre-train once; run CoLoGen, co-training, sequential and specialists."""
    import torch

    ctx.seed_torch()
    rng = ctx.rng
    base, base_losses = _pretrain(cfg, rng, torch)
    base_digest = _param_digest(base.parameters())
    evals = _eval_sets(cfg, rng, torch)

    post, final, usage, frozen_changed, _ = _run_cologen(
        base, cfg, rng, evals, torch, cfg.alpha
    )
    seq_post, seq_final = _run_sequential(base, cfg, rng, evals, torch)
    cotrain = _run_single(base, cfg, rng, evals, torch, TASKS, 5 * cfg.stage_steps)
    special = {}
    for task in TASKS:
        special.update(
            _run_single(base, cfg, rng, evals, torch, (task,), cfg.stage_steps)
        )
    base_changed = int(_param_digest(base.parameters()) != base_digest)
    return _result(
        cfg,
        post,
        final,
        usage,
        seq_post,
        seq_final,
        cotrain,
        special,
        frozen_changed + base_changed,
        base_losses,
    )


def _result(
    cfg, post, final, usage, seq_post, seq_final, cotrain, special, changed, base_losses
) -> Result:
    res = Result()
    mean = lambda a: float(np.mean(a))  # noqa: E731
    for task in TASKS:
        res.metrics[f"cologen/{task}"] = mean(final[task])
        res.metrics[f"cologen_post_stage/{task}"] = mean(post[task])
        res.metrics[f"sequential/{task}"] = mean(seq_final[task])
        res.metrics[f"sequential_post_stage/{task}"] = mean(seq_post[task])
        res.metrics[f"cotrain/{task}"] = mean(cotrain[task])
        res.metrics[f"specialist/{task}"] = mean(special[task])
    for t, u in enumerate(usage):
        res.metrics[f"usage_newest/stage{t}"] = u
    res.metrics["pretrain/final_loss"] = float(np.mean(base_losses[-50:]))

    # Conflict: co-training trails the specialist by > 2 paired standard errors.
    trailing, closed = [], []
    for task in TASKS:
        diff = special[task] - cotrain[task]
        diff = diff if _HIGHER_BETTER[task] else -diff
        se = diff.std(ddof=1) / math.sqrt(len(diff))
        gap = diff.mean()
        res.metrics[f"gap_cotrain/{task}"] = float(gap)
        if gap > 2 * se and gap > 0:
            trailing.append(task)
            closed.append(_better(task, mean(final[task]), mean(cotrain[task])) / gap)
    res.metrics["conflict_tasks"] = float(len(trailing))
    frac = float(np.mean(closed)) if closed else float("nan")

    retain = ("inpaint", "ground")
    deg = max(_degradation(t, mean(post[t]), mean(final[t])) for t in retain)
    seq_deg = max(
        _degradation(t, mean(seq_post[t]), mean(seq_final[t])) for t in retain
    )
    res.metrics["degradation/cologen"] = deg
    res.metrics["degradation/sequential"] = seq_deg
    res.metrics["gap_closed_fraction"] = frac

    m = res.metrics
    res.checks = [
        Check(
            "CoLoGen minus co-training, editing",
            m["cologen/edit"] - m["cotrain/edit"],
            0.0,
            ">=",
        ),
        Check(
            "CoLoGen minus co-training, customisation",
            m["cologen/custom"] - m["cotrain/custom"],
            0.0,
            ">=",
        ),
        Check(
            "tasks where co-training trails specialists (> 2 SE)",
            len(trailing),
            cfg.min_conflict_tasks,
            ">=",
        ),
        Check(
            "share of the co-training gap closed by CoLoGen",
            frac,
            cfg.gap_fraction,
            ">=",
        ),
        Check(
            "CoLoGen worst relative drop of inpainting/grounding",
            deg,
            cfg.retain_tolerance,
            "<=",
        ),
        Check("sequential minus CoLoGen relative drop", seq_deg - deg, 0.0, ">"),
        Check("frozen experts / base tensors changed", changed, 0.0, "<="),
    ]
    res.series["usage_newest"] = list(usage)
    res.figures["methods"] = _figure(cfg, m)
    return res


def _figure(cfg, m):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, len(TASKS))
    methods = ("specialist", "cotrain", "sequential", "cologen")
    for ax, task in zip(axes, TASKS, strict=True):
        vals = [m[f"{meth}/{task}"] for meth in methods]
        ax.bar(range(len(methods)), vals, color=["0.6", "C1", "C2", "C0"])
        ax.set_xticks(range(len(methods)), ["spec", "co", "seq", "CoLo"], fontsize=7)
        unit = "MSE (lower)" if task == "inpaint" else "score"
        ax.set_title(f"{task}\n{unit}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("After the last stage (specialists: one task each)", fontsize=9)
    fig.tight_layout()
    return fig
