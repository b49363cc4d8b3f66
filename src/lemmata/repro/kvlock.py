"""Reproduction of arXiv 2603.09657 (KV-Lock) at toy scale.

``kv-lock``: a tiny video DiT (diffusers ``Attention`` self-attention,
adaLN class conditioning, rectified flow) is trained in code on synthetic
sprite videos, once per run, and reused by every variant. The edit replaces
the source sprite's class inside a dilated trajectory mask. Variants: no lock
(alpha = 0), full lock (alpha = 1), fixed alpha = 0.5, KV-Lock, and the
ablations global detector / without s* / without the guidance schedule. A
guidance sweep with full lock measures how the hallucination variance moves
with the guidance scale, and a small CNN trained on clean frames scores the
foreground.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["KVLockConfig", "kv_lock"]

logger = logging.getLogger(__name__)

_PAPER = "2603.09657"
_VARIANTS = (
    "no_lock",
    "full_lock",
    "fixed_0.5",
    "kv_lock",
    "kv_lock_global",
    "kv_lock_no_sstar",
    "kv_lock_no_wsched",
)


@dataclass(frozen=True)
class KVLockConfig:
    """Toy video DiT, sprite-replacement edits and the KV-Lock variants.

    Attributes
    ----------
    frames, size : int
        Video length (``1 + 2k``) and side in pixels (RGB in [-1, 1]).
    spatial_stride : int
        Spatial average-pool of the fake VAE (its temporal stride is 2: frame
        0 alone, then pairs averaged; decoding repeats nearest).
    dim, depth, heads : int
        DiT width, blocks and attention heads; patch is (1, 2, 2).
    train_steps, batch_size : int
        Rectified-flow training of the DiT: once per run, shared by every
        variant, and kept in ``<results>/.cache/kv-lock/`` so that a run with the
        same training fields and seed (say, other edit settings) loads it.
    lr : float
        AdamW step size of the DiT.
    label_dropout : float
        Share of training labels replaced by the null class (for CFG).
    classifier_steps : int
        Training steps of the foreground CNN (clean frames, masked).
    edits : int
        Sprite-replacement edits per variant.
    steps, kappa, window : int
        Sampling steps N, late window kappa and detector window W.
    w0, b : float
        Base guidance and the largest guidance multiplier.
    tau_quantile : float
        tau is set to this quantile of late-step sigma2 on separate
        calibration edits (full lock), so about 1 - quantile of late steps
        exceed it (the spec asks for 20-40%).
    calibration_edits : int
        Edits used only to calibrate tau.
    sweep_w0 : tuple of float
        Guidance scales of the sweep (full lock, fixed guidance).
    sweep_edits, sweep_noises : int
        Source videos and noise draws per guidance scale in the sweep.
    psnr_gap, success_gap : float
        Check thresholds: KV-Lock background PSNR at most ``psnr_gap`` dB
        below full lock; foreground success at most ``success_gap`` below no
        lock (5 points = 0.05).
    spearman_max, auc_min : float
        Spearman of mean late sigma2 against w0 must be <= ``spearman_max``;
        AUC of the final sigma2 for hallucinated vs successful edits must be
        >= ``auc_min``.
    """

    frames: int = 5
    size: int = 16
    spatial_stride: int = 2
    dim: int = 64
    depth: int = 3
    heads: int = 4
    train_steps: int = 900
    batch_size: int = 32
    lr: float = 2e-3
    label_dropout: float = 0.1
    classifier_steps: int = 250
    edits: int = 48
    steps: int = 20
    kappa: int = 10
    window: int = 5
    w0: float = 4.0
    b: float = 2.0
    tau_quantile: float = 0.7
    calibration_edits: int = 16
    sweep_w0: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    sweep_edits: int = 16
    sweep_noises: int = 3
    psnr_gap: float = 1.0
    success_gap: float = 0.05
    spearman_max: float = -0.9
    auc_min: float = 0.65


_FULL = KVLockConfig(
    spatial_stride=1,
    dim=96,
    depth=4,
    train_steps=3000,
    classifier_steps=600,
    edits=100,
    calibration_edits=32,
    sweep_edits=32,
    sweep_noises=4,
)


# ----------------------------------------------------------------------- data


def _sprites(rng: np.random.Generator, n: int, cfg: KVLockConfig, classes=None):
    """Videos (n, F, 3, S, S), per-frame sprite masks (n, F, S, S), classes."""
    f, s = cfg.frames, cfg.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    videos = np.zeros((n, f, 3, s, s))
    masks = np.zeros((n, f, s, s), dtype=bool)
    if classes is None:
        classes = rng.integers(0, 3, n)
    for i in range(n):
        videos[i] = _background(rng, f, s, yy, xx)
        start = rng.uniform(4, s - 4, 2)
        vel = rng.uniform(-1.0, 1.0, 2)
        for t in range(f):
            cy, cx = np.clip(start + vel * t, 3, s - 4)
            masks[i, t] = _shape(classes[i], yy - cy, xx - cx)
    videos, sprite_masks = videos, masks
    return videos, sprite_masks, np.asarray(classes)


_COLOURS = np.array([[0.9, -0.8, -0.8], [-0.8, 0.9, -0.8], [-0.8, -0.8, 0.9]])


def _background(rng, f, s, yy, xx):
    img = np.zeros((3, s, s))
    for c in range(3):
        fy, fx = rng.uniform(0.2, 0.6, 2)
        phase = rng.uniform(0, 2 * math.pi)
        img[c] = 0.25 * np.sin(fy * yy + fx * xx + phase) + rng.uniform(-0.2, 0.2)
    return np.repeat(img[None], f, 0)


def _shape(cls, dy, dx):
    if cls == 0:
        return dy**2 + dx**2 <= 6.5
    if cls == 1:
        return (np.abs(dy) <= 2) & (np.abs(dx) <= 2)
    return (dy >= -2) & (dy <= 2) & (np.abs(dx) <= (dy + 2) / 2 + 0.3)


def _paint(videos, masks, classes):
    out = videos.copy()
    for i in range(len(videos)):
        m = masks[i][:, None]
        out[i] = np.where(m, _COLOURS[classes[i]][None, :, None, None], out[i])
    return out


def _dilate(masks):
    """Dilate each frame's mask by 1 pixel (3x3 max)."""
    pad = np.pad(masks, ((0, 0), (0, 0), (1, 1), (1, 1)))
    s = masks.shape[-1]
    out = np.zeros_like(masks)
    for dy in range(3):
        for dx in range(3):
            out |= pad[:, :, dy : dy + s, dx : dx + s]
    return out


def _make_videos(rng, n, cfg, classes=None):
    bg_videos, masks, classes = _sprites(rng, n, cfg, classes)
    return _paint(bg_videos, masks, classes), bg_videos, masks, classes


# ------------------------------------------------------------------- fake VAE


def _encode(video, stride):
    """(B, F, C, H, W) -> (B, C, T, H/s, W/s): frame 0, then pairs averaged."""
    import torch.nn.functional as F

    first = video[:, :1]
    rest = video[:, 1:].reshape(video.shape[0], -1, 2, *video.shape[2:]).mean(2)
    lat = torch_cat([first, rest], 1)  # (B, T, C, H, W)
    b, t, c, h, w = lat.shape
    if stride > 1:
        lat = F.avg_pool2d(lat.reshape(b * t, c, h, w), stride)
        lat = lat.reshape(b, t, c, h // stride, w // stride)
    return lat.permute(0, 2, 1, 3, 4).contiguous()


def _decode(latent, stride, frames):
    """(B, C, T, h, w) -> (B, F, C, H, W) by nearest repetition."""
    lat = latent.permute(0, 2, 1, 3, 4)
    if stride > 1:
        lat = lat.repeat_interleave(stride, -1).repeat_interleave(stride, -2)
    first, rest = lat[:, :1], lat[:, 1:].repeat_interleave(2, 1)
    return torch_cat([first, rest], 1)[:, :frames]


def torch_cat(parts, dim):
    import torch

    return torch.cat(parts, dim)


# ---------------------------------------------------------------------- model


def _build_dit(cfg, tokens_shape):
    """A tiny video DiT whose self-attention is a diffusers ``Attention``."""
    import torch
    from diffusers.models.attention_processor import Attention
    from torch import nn

    d, (t, h, w) = cfg.dim, tokens_shape
    n_tokens = t * (h // 2) * (w // 2)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
            self.attn = Attention(
                d, heads=cfg.heads, dim_head=d // cfg.heads, bias=True
            )
            self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
            self.mlp = nn.Sequential(
                nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)
            )
            self.ada = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

        def forward(self, x, c):
            s1, b1, g1, s2, b2, g2 = self.ada(c)[:, None].chunk(6, -1)
            x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1)
            return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)

    class TinyVideoDiT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Linear(3 * 4, d)
            self.pos = nn.Parameter(torch.randn(1, n_tokens, d) * 0.02)
            self.t_mlp = nn.Sequential(nn.Linear(32, d), nn.SiLU(), nn.Linear(d, d))
            self.label = nn.Embedding(4, d)  # class 3 = null
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.depth))
            self.norm = nn.LayerNorm(d, elementwise_affine=False)
            self.ada = nn.Linear(d, 2 * d)
            self.out = nn.Linear(d, 3 * 4)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, z, sigma, y):
            b = z.shape[0]
            x = z.reshape(b, 3, t, h // 2, 2, w // 2, 2)
            x = x.permute(0, 2, 3, 5, 1, 4, 6).reshape(b, n_tokens, 12)
            freqs = torch.exp(-math.log(1000) * torch.arange(16) / 16)
            ang = sigma[:, None] * 1000 * freqs[None]
            c = self.t_mlp(torch.cat([ang.sin(), ang.cos()], 1)) + self.label(y)
            x = self.patch(x) + self.pos
            for blk in self.blocks:
                x = blk(x, c)
            sh, sc = self.ada(c)[:, None].chunk(2, -1)
            x = self.out(self.norm(x) * (1 + sc) + sh)
            x = x.reshape(b, t, h // 2, w // 2, 3, 2, 2).permute(0, 4, 1, 2, 5, 3, 6)
            return x.reshape(b, 3, t, h, w)

    return TinyVideoDiT()


def _new_dit(cfg):
    lat_hw = cfg.size // cfg.spatial_stride
    return _build_dit(cfg, (1 + (cfg.frames - 1) // 2, lat_hw, lat_hw))


def _train_dit(cfg, rng, torch):
    stride = cfg.spatial_stride
    model = _new_dit(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.train_steps, pct_start=0.05
    )
    losses = []
    for _ in range(cfg.train_steps):
        vids, _, _, cls = _make_videos(rng, cfg.batch_size, cfg)
        x0 = _encode(torch.as_tensor(vids, dtype=torch.float32), stride)
        y = torch.as_tensor(cls)
        drop = torch.as_tensor(rng.random(len(cls)) < cfg.label_dropout)
        y = torch.where(drop, torch.full_like(y, 3), y)
        sigma = torch.sigmoid(
            torch.as_tensor(rng.normal(size=len(cls)), dtype=torch.float32)
        )
        eps = torch.as_tensor(rng.normal(size=x0.shape), dtype=torch.float32)
        s = sigma.view(-1, 1, 1, 1, 1)
        zt = (1 - s) * x0 + s * eps
        loss = (model(zt, sigma, y) - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, losses


# What the trained DiT depends on: these config fields, the run's seed and the
# code of these functions (and the versions of torch and lemmata).
_DIT_FIELDS = ("frames", "size", "spatial_stride", "dim", "depth", "heads",
               "train_steps", "batch_size", "lr", "label_dropout")  # fmt: skip


def _dit_code() -> str:
    import inspect

    funcs = (_sprites, _background, _shape, _paint, _dilate, _make_videos,
             _encode, torch_cat, _build_dit, _new_dit, _train_dit)  # fmt: skip
    text = "".join(inspect.getsource(f) for f in funcs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _trained_dit(cfg, ctx, torch):
    """The toy DiT, trained once and kept in the results folder's cache.

    Training draws from its own streams (numpy and torch), seeded from the root
    seed, the seed index and the training fields only, so the same DiT serves
    every edit setting, and loading it leaves every later draw of the run
    exactly as training would: the numbers do not depend on the cache.
    """
    import lemmata

    fields = {f: getattr(cfg, f) for f in _DIT_FIELDS}
    seed = ctx.derived_seed("dit", fields)  # the same DiT for any edit setting
    key = {
        "fields": fields,
        "seed": seed,
        "code": _dit_code(),
        "torch": torch.__version__,
        "lemmata": lemmata.__version__,
    }
    path = ctx.cache_file("dit", key)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if path is not None and path.exists():
            model = _new_dit(cfg)
            state = torch.load(path, weights_only=True)
            model.load_state_dict(state["model"])
            model.eval().requires_grad_(False)
            losses = [float(x) for x in state["losses"]]
            logger.info("kv-lock: DiT loaded from %s", path)
        else:
            rng = np.random.default_rng(seed)
            model, losses = _train_dit(cfg, rng, torch)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
                torch.save({"model": model.state_dict(), "losses": losses}, tmp)
                os.replace(tmp, path)  # atomic: never a half-written model
    return model, losses


def _train_classifier(cfg, rng, torch):
    """CNN on masked, VAE-round-tripped frames: which sprite class is inside."""
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(cfg.classifier_steps):
        vids, _, masks, cls = _make_videos(rng, 16, cfg)
        frames, fmask = _roundtrip_frames(cfg, vids, masks, torch)
        logits = net(frames * fmask)
        target = torch.as_tensor(cls).repeat_interleave(cfg.frames)
        loss = nn.functional.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    return net


def _roundtrip_frames(cfg, vids, masks, torch):
    v = torch.as_tensor(vids, dtype=torch.float32)
    rec = _decode(_encode(v, cfg.spatial_stride), cfg.spatial_stride, cfg.frames)
    m = torch.as_tensor(_dilate(masks), dtype=torch.float32)
    return rec.flatten(0, 1), m.flatten(0, 1)[:, None]


# ----------------------------------------------------------------------- edits


def _edit_batch(cfg, rng, n, torch):
    """Source videos, masks and target classes for ``n`` edits."""
    from lemmata.nn._kvlock import latent_mask, token_mask

    vids, _, masks, src_cls = _make_videos(rng, n, cfg)
    tgt_cls = (src_cls + rng.integers(1, 3, n)) % 3
    pix = torch.as_tensor(_dilate(masks), dtype=torch.float32)
    m_lat = latent_mask(pix, temporal_stride=2, spatial_stride=cfg.spatial_stride)
    src = _encode(torch.as_tensor(vids, dtype=torch.float32), cfg.spatial_stride)
    return {
        "src": src,
        "pix_mask": pix,
        "m_lat": m_lat,
        "m_tok": token_mask(m_lat),
        "src_cls": torch.as_tensor(src_cls),
        "tgt_cls": torch.as_tensor(tgt_cls),
    }


def _run_edit(model, ctrl, batch, schedule, noise, torch, **kw):
    from lemmata.nn._kvlock import kv_lock_edit

    n = batch["src"].shape[0]
    null = torch.full((n,), 3)
    return kv_lock_edit(
        model,
        ctrl,
        batch["src"],
        batch["m_lat"],
        batch["m_tok"],
        cond=batch["tgt_cls"],
        source_cond=batch["src_cls"],
        null_cond=null,
        schedule=schedule,
        noise=noise,
        **kw,
    )


def _score(cfg, batch, edit, classifier, torch):
    """Per-edit background PSNR, success, p(target) and final sigma2."""
    s = cfg.spatial_stride
    out = _decode(edit.latent.clamp(-1, 1), s, cfg.frames)
    ref = _decode(batch["src"], s, cfg.frames)
    bg = (1 - batch["pix_mask"])[:, :, None]
    mse = ((out - ref) ** 2 * bg).flatten(1).sum(1) / (bg.flatten(1).sum(1) * 3)
    psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-10))
    with torch.no_grad():
        frames = out.flatten(0, 1) * batch["pix_mask"].flatten(0, 1)[:, None]
        prob = classifier(frames).softmax(-1).reshape(out.shape[0], cfg.frames, 3)
    prob = prob.mean(1)
    p_tgt = prob.gather(1, batch["tgt_cls"][:, None])[:, 0]
    success = (prob.argmax(1) == batch["tgt_cls"]).float()
    sigma2 = edit.sigma2[-1]
    return {
        "psnr": psnr.numpy(),
        "success": success.numpy(),
        "p_target": p_tgt.numpy(),
        "sigma2": sigma2.numpy(),
    }


def _late_sigma2(cfg, edit):
    late = edit.sigma2[-cfg.kappa + 1 :] if cfg.kappa > 1 else edit.sigma2[-1:]
    return np.stack([x.numpy() for x in late], 0)  # (late steps, batch)


def _auc(scores, labels):
    """P(score of a positive > score of a negative), ties count one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _spearman(x, y):
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def _param_hash(model):
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ experiment


@experiment(
    name="kv-lock",
    paper=_PAPER,
    claim=(
        "Fusing cached background keys/values with new ones at a ratio set by "
        "the variance of the denoised prediction keeps the background near a "
        "full lock while the foreground edit succeeds about as often as with "
        "no lock, without training."
    ),
    config=KVLockConfig,
    quick=KVLockConfig(),
    full=_FULL,
    seeds={"quick": 1, "full": 3},
    requires=("torch", "diffusers"),
)
def kv_lock(cfg: KVLockConfig, ctx: RunContext) -> Result:
    """Train the toy DiT once (or load it from the cache), run every variant on
    the same edits, check."""
    import torch

    from lemmata.nn._kvlock import KVLockSchedule, install_kv_lock

    ctx.seed_torch()
    rng = ctx.rng
    model, losses = _trained_dit(cfg, ctx, torch)
    classifier = _train_classifier(cfg, rng, torch)
    hash_before = _param_hash(model)
    ctrl = install_kv_lock(model)

    def schedule(**kw):
        base = dict(num_steps=cfg.steps, kappa=cfg.kappa, window=cfg.window)
        base.update(w0=cfg.w0, b=cfg.b)
        base.update(kw)
        return KVLockSchedule(**base)

    # tau: a quantile of late-step sigma2 on separate calibration edits.
    calib = _edit_batch(cfg, rng, cfg.calibration_edits, torch)
    noise = torch.as_tensor(rng.normal(size=calib["src"].shape), dtype=torch.float32)
    edit = _run_edit(model, ctrl, calib, schedule(fusion=1.0), noise, torch)
    tau = float(np.quantile(_late_sigma2(cfg, edit), cfg.tau_quantile))
    tau = max(tau, 1e-8)

    batch = _edit_batch(cfg, rng, cfg.edits, torch)
    noise = torch.as_tensor(rng.normal(size=batch["src"].shape), dtype=torch.float32)
    specs = {
        "no_lock": (dict(fusion=0.0, schedule_guidance=False), {}),
        "full_lock": (dict(fusion=1.0, schedule_guidance=False), {}),
        "fixed_0.5": (dict(fusion=0.5, schedule_guidance=False), {}),
        "kv_lock": ({}, {}),
        "kv_lock_global": ({}, {"global_detector": True}),
        "kv_lock_no_sstar": ({}, {"project": False}),
        "kv_lock_no_wsched": (dict(schedule_guidance=False), {}),
    }
    scores, late_rate = {}, {}
    for name, (skw, ekw) in specs.items():
        edit = _run_edit(
            model, ctrl, batch, schedule(tau=tau, **skw), noise, torch, **ekw
        )
        scores[name] = _score(cfg, batch, edit, classifier, torch)
        late_rate[name] = float((_late_sigma2(cfg, edit) > tau).mean())

    sweep = _guidance_sweep(cfg, rng, model, ctrl, classifier, schedule, tau, torch)
    ctrl.remove()
    hash_after = _param_hash(model)
    return _result(
        cfg, scores, late_rate, sweep, losses, tau, hash_before != hash_after
    )


def _guidance_sweep(cfg, rng, model, ctrl, classifier, schedule, tau, torch):
    """Full lock, fixed guidance w0 in cfg.sweep_w0, several noises per source."""
    batch = _edit_batch(cfg, rng, cfg.sweep_edits, torch)
    rep = {k: v.repeat_interleave(cfg.sweep_noises, 0) for k, v in batch.items()}
    noise = torch.as_tensor(rng.normal(size=rep["src"].shape), dtype=torch.float32)
    out = {"late_sigma2": [], "seed_var": [], "final_sigma2": [], "halluc": []}
    for w0 in cfg.sweep_w0:
        sch = schedule(tau=tau, w0=w0, fusion=1.0, schedule_guidance=False)
        edit = _run_edit(model, ctrl, rep, sch, noise, torch)
        sc = _score(cfg, rep, edit, classifier, torch)
        out["late_sigma2"].append(float(_late_sigma2(cfg, edit).mean()))
        out["final_sigma2"].append(sc["sigma2"])
        out["halluc"].append((sc["p_target"] < 0.5).astype(int))
        lat = edit.latent.reshape(
            cfg.sweep_edits, cfg.sweep_noises, *edit.latent.shape[1:]
        )
        m = batch["m_lat"][:, None, None]
        var = lat.var(1, unbiased=True)
        out["seed_var"].append(float(((var * m).sum() / (m.sum() * 3)).item()))
    return out


def _result(cfg, scores, late_rate, sweep, losses, tau, changed) -> Result:
    res = Result()
    for name, sc in scores.items():
        res.metrics[f"psnr_bg/{name}"] = float(sc["psnr"].mean())
        res.metrics[f"success/{name}"] = float(sc["success"].mean())
        res.metrics[f"late_steps_over_tau/{name}"] = late_rate[name]
    res.metrics["tau"] = tau
    res.metrics["train/final_loss"] = float(np.mean(losses[-50:]))

    final_s2 = np.concatenate(sweep["final_sigma2"])
    halluc = np.concatenate(sweep["halluc"])
    kv = scores["kv_lock"]
    auc = _auc(final_s2, halluc)
    res.metrics["auc/sweep"] = auc
    res.metrics["auc/kv_lock"] = _auc(kv["sigma2"], (kv["p_target"] < 0.5).astype(int))
    res.metrics["hallucination_rate/sweep"] = float(halluc.mean())
    rho_s2 = _spearman(np.array(cfg.sweep_w0), np.array(sweep["late_sigma2"]))
    rho_var = _spearman(np.array(cfg.sweep_w0), np.array(sweep["seed_var"]))
    res.metrics["spearman/late_sigma2_vs_w0"] = rho_s2
    res.metrics["spearman/seed_var_vs_w0"] = rho_var
    for w0, s2, sv in zip(
        cfg.sweep_w0, sweep["late_sigma2"], sweep["seed_var"], strict=True
    ):
        res.metrics[f"sweep/late_sigma2/w0={w0:g}"] = s2
        res.metrics[f"sweep/seed_var/w0={w0:g}"] = sv
    res.series["train/loss"] = [float(x) for x in losses[:: max(1, len(losses) // 200)]]
    res.series["sweep/late_sigma2"] = sweep["late_sigma2"]

    m = res.metrics
    res.checks = [
        Check(
            "full-lock PSNR minus KV-Lock PSNR (dB)",
            m["psnr_bg/full_lock"] - m["psnr_bg/kv_lock"],
            cfg.psnr_gap,
            "<=",
        ),
        Check(
            "no-lock success minus KV-Lock success",
            m["success/no_lock"] - m["success/kv_lock"],
            cfg.success_gap,
            "<=",
        ),
        Check("Spearman(w0, late sigma2)", rho_s2, cfg.spearman_max, "<="),
        Check("AUC of final sigma2 for hallucinated edits", auc, cfg.auc_min, ">="),
        Check(
            "KV-Lock minus fixed-0.5 background PSNR (dB)",
            m["psnr_bg/kv_lock"] - m["psnr_bg/fixed_0.5"],
            0.0,
            ">",
        ),
        Check(
            "KV-Lock minus fixed-0.5 foreground success",
            m["success/kv_lock"] - m["success/fixed_0.5"],
            0.0,
            ">",
        ),
        Check("parameters changed by the edits", float(changed), 0.0, "<="),
    ]
    res.figures["tradeoff"] = _figure_tradeoff(scores)
    res.figures["guidance_sweep"] = _figure_sweep(cfg, sweep)
    return res


def _figure_tradeoff(scores):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for name, sc in scores.items():
        ax.scatter(sc["psnr"].mean(), sc["success"].mean(), s=40)
        ax.annotate(name, (sc["psnr"].mean(), sc["success"].mean()), fontsize=8)
    ax.set_xlabel("background PSNR (dB)")
    ax.set_ylabel("foreground success")
    ax.set_title("KV-Lock variants: background fidelity vs edit success")
    ax.grid(alpha=0.3)
    return fig


def _figure_sweep(cfg, sweep):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(cfg.sweep_w0, sweep["late_sigma2"], "o-", label="mean late-step sigma2")
    ax.plot(cfg.sweep_w0, sweep["seed_var"], "s--", label="across-noise variance")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("guidance scale w0 (full lock)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig
