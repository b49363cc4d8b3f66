"""KV-Lock (arXiv:2603.09657): masks, detector, guidance, the diffusers
attention processor and the sampler, against loop references and diffusers'
own ``AttnProcessor2_0`` on a small ``DiTTransformer2DModel``."""

import hashlib

import numpy as np
import pytest
import torch

from lemmata.nn._kvlock import (
    KVLockSchedule,
    cfg_zero_star,
    hallucination_variance,
    install_kv_lock,
    kv_lock_edit,
    latent_mask,
    token_mask,
)

diffusers = pytest.importorskip("diffusers")


def _dit(seed=0):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    model = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )
    # Non-zero adaLN-zero gates so that attention reaches the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _velocity(model):
    """Video-shaped wrapper: (B, 4, 1, 8, 8) latents, sigma in [0, 1]."""

    def fn(z, sigma, y):
        t = (sigma * 999).long()
        out = model(z[:, :, 0], timestep=t, class_labels=y).sample
        return out[:, :4, None]

    return fn


def _param_hash(model):
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()


def _box_mask(batch, frames=1, size=8):
    m = torch.zeros(batch, frames, size, size)
    m[:, :, 2:5, 3:6] = 1
    return m


# ------------------------------------------------------------------------ masks


def test_latent_mask_matches_loop(rng):
    mask = torch.as_tensor(rng.random((2, 9, 16, 16)) < 0.05, dtype=torch.float32)
    out = latent_mask(mask, temporal_stride=4, spatial_stride=8)
    ref = np.zeros((2, 3, 2, 2))
    m = mask.numpy()
    for b in range(2):
        for t in range(3):
            frames = m[b, :1] if t == 0 else m[b, 1 + (t - 1) * 4 : 1 + t * 4]
            for i in range(2):
                for j in range(2):
                    ref[b, t, i, j] = frames[
                        :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8
                    ].max()
    np.testing.assert_array_equal(out.numpy(), ref)


def test_token_mask_order_is_t_h_w(rng):
    m = torch.as_tensor(rng.random((1, 3, 4, 6)) < 0.2, dtype=torch.float32)
    tok = token_mask(m, (1, 2, 2))
    ref = [
        m[0, t, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max().item()
        for t in range(3)
        for i in range(2)
        for j in range(3)
    ]
    np.testing.assert_array_equal(tok[0].numpy(), ref)


# --------------------------------------------------------------- detector + CFG


def test_hallucination_variance_matches_loop(rng):
    hist = [
        torch.as_tensor(rng.normal(size=(2, 3, 4)), dtype=torch.float64)
        for _ in range(7)
    ]
    mask = torch.as_tensor(rng.random((2, 3, 4)) < 0.5, dtype=torch.float64)
    mask[:, 0, 0] = 1
    out = hallucination_variance(hist, mask, window=4)
    arr = np.stack([h.numpy() for h in hist[-4:]])
    for b in range(2):
        sel = mask[b].numpy().astype(bool)
        vals = arr[:, b][:, sel]
        ref = np.mean(np.var(vals, axis=0, ddof=1))
        np.testing.assert_allclose(out[b].item(), ref, rtol=1e-6)


def test_cfg_zero_star_without_projection_is_plain_cfg(rng):
    eu = torch.as_tensor(rng.normal(size=(3, 5)))
    ec = torch.as_tensor(rng.normal(size=(3, 5)))
    out, s = cfg_zero_star(ec, eu, 4.0, project=False)
    torch.testing.assert_close(out, eu + 4.0 * (ec - eu), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s, torch.ones(3, dtype=s.dtype))


def test_cfg_zero_star_recovers_scale(rng):
    eu = torch.as_tensor(rng.normal(size=(3, 5)), dtype=torch.float64)
    c = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    _, s = cfg_zero_star(c[:, None] * eu, eu, 2.0, eps=0.0)
    torch.testing.assert_close(s, c, rtol=1e-6, atol=1e-6)


def test_schedule_values():
    sch = KVLockSchedule(num_steps=10, kappa=4, window=3, tau=0.1, w0=2.0, b=2.0)
    s2 = torch.tensor([0.0, 0.05, 0.5])
    assert sch.alpha(5, s2, 3) == 1.0  # before the late window: full lock
    assert sch.alpha(7, s2, 2) == 1.0  # window not yet full
    torch.testing.assert_close(sch.alpha(7, s2, 3), torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(sch.guidance(7, s2, 3), torch.tensor([2.0, 2.0, 4.0]))
    assert KVLockSchedule(num_steps=3, kappa=2, window=2, fusion=(0, 0.5, 1)).alpha(
        1, s2, 2
    ) == pytest.approx(0.5)


# ------------------------------------------------------------------- processor


def test_processor_off_equals_diffusers_default(rng):
    model = _dit()
    x = torch.as_tensor(rng.normal(size=(2, 4, 8, 8)), dtype=torch.float32)
    t, y = torch.tensor([10, 500]), torch.tensor([1, 2])
    with torch.no_grad():
        ref = model(x, timestep=t, class_labels=y).sample
        ctrl = install_kv_lock(model)
        off = model(x, timestep=t, class_labels=y).sample
        with ctrl.recording():
            model(x, timestep=t, class_labels=y)
        # Cache taken on the same input: fusion at any alpha changes nothing.
        with ctrl.fusing(torch.ones(2, 16) * 0 + (torch.arange(16) < 5), 0.7):
            same = model(x, timestep=t, class_labels=y).sample
        ctrl.remove()
        back = model(x, timestep=t, class_labels=y).sample
    torch.testing.assert_close(off, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(same, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back, ref)
    assert len(ctrl.layers) == 2


def test_processor_fusion_matches_manual_attention(rng):
    from diffusers.models.attention_processor import Attention

    attn = Attention(8, heads=2, dim_head=4, bias=True).eval()
    src = torch.as_tensor(rng.normal(size=(1, 6, 8)), dtype=torch.float32)
    new = torch.as_tensor(rng.normal(size=(1, 6, 8)), dtype=torch.float32)
    m = torch.tensor([[1.0, 1, 0, 0, 0, 1]])
    alpha = 0.3

    wrapper = torch.nn.Sequential(attn)
    ctrl = install_kv_lock(wrapper)
    with torch.no_grad():
        with ctrl.recording():
            wrapper(src)
        with ctrl.fusing(m, alpha):
            out = wrapper(new)

        def heads(x):
            return x.view(1, 6, 2, 4).transpose(1, 2)

        q, k, v = heads(attn.to_q(new)), heads(attn.to_k(new)), heads(attn.to_v(new))
        kc, vc = heads(attn.to_k(src)), heads(attn.to_v(src))
        mm = m[:, None, :, None]
        k = mm * k + (1 - mm) * (alpha * kc + (1 - alpha) * k)
        v = mm * v + (1 - mm) * (alpha * vc + (1 - alpha) * v)
        w = (q @ k.transpose(-1, -2) / 2.0).softmax(-1)
        ref = attn.to_out[0]((w @ v).transpose(1, 2).reshape(1, 6, 8))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- sampler


def _edit_inputs(rng, batch=2):
    src = torch.as_tensor(rng.uniform(-1, 1, (batch, 4, 1, 8, 8)), dtype=torch.float32)
    noise = torch.as_tensor(rng.normal(size=src.shape), dtype=torch.float32)
    m_lat = _box_mask(batch)
    return src, noise, m_lat, token_mask(m_lat)


def test_no_lock_plain_cfg_equals_reference_sampler(rng):
    model = _dit()
    vel = _velocity(model)
    src, noise, m_lat, m_tok = _edit_inputs(rng)
    y, ys, null = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([1000, 1000])
    sch = KVLockSchedule(
        num_steps=4, kappa=3, window=2, w0=3.0, fusion=0.0, schedule_guidance=False
    )
    ctrl = install_kv_lock(model)
    out = kv_lock_edit(
        vel,
        ctrl,
        src,
        m_lat,
        m_tok,
        cond=y,
        source_cond=ys,
        null_cond=null,
        schedule=sch,
        noise=noise,
        project=False,
    )
    ctrl.remove()

    # Independent plain-CFG Euler sampler on the untouched model.
    z, sig = noise.clone(), torch.linspace(1, 0, 5)
    with torch.no_grad():
        for k in range(4):
            s = sig[k].expand(2)
            vc, vu = vel(z, s, y), vel(z, s, null)
            z = z + (sig[k + 1] - sig[k]) * (vu + 3.0 * (vc - vu))
    torch.testing.assert_close(out.latent, z, rtol=1e-5, atol=1e-5)


def test_edit_changes_no_parameter(rng):
    model = _dit()
    before = _param_hash(model)
    src, noise, m_lat, m_tok = _edit_inputs(rng)
    ctrl = install_kv_lock(model)
    sch = KVLockSchedule(num_steps=5, kappa=4, window=2, tau=1e-3, w0=2.0)
    out = kv_lock_edit(
        _velocity(model),
        ctrl,
        src,
        m_lat,
        m_tok,
        cond=torch.tensor([1, 2]),
        source_cond=torch.tensor([0, 0]),
        null_cond=torch.tensor([1000, 1000]),
        schedule=sch,
        noise=noise,
    )
    ctrl.remove()
    assert _param_hash(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert len(out.sigma2) == 4 and torch.isfinite(out.latent).all()
    # The dynamic ratio only leaves 1 once the late window is full.
    assert torch.all(out.alpha[0] == 1.0)


# ------------------------------------------------------------------ bad inputs


BAD_SCHEDULES = [
    ({"fusion": 1.5}, ValueError, r"fusion must lie in \[0, 1\]; got 1\.5"),
    ({"fusion": -0.1}, ValueError, r"fusion must lie in \[0, 1\]; got -0\.1"),
    ({"fusion": (0.2, 2.0, 0.1, 0.1)}, ValueError, r"fusion must lie in \[0, 1\]"),
    ({"fusion": (0.2, 0.5)}, ValueError, r"fusion must have one value per step \(4\)"),
    ({"tau": 0.0}, ValueError, r"tau must be > 0\.0; got 0\.0"),
    ({"kappa": 5}, ValueError, r"kappa must be <= num_steps=4; got 5"),
    ({"window": 1}, ValueError, r"window must be >= 2; got 1"),
    ({"window": 4, "kappa": 3}, ValueError, r"window must be <= kappa=3; got 4"),
    ({"b": 0.5}, ValueError, r"b must be >= 1; got 0\.5"),
    ({"w0": -1.0}, ValueError, r"w0 must be >= 0; got -1\.0"),
    ({"tau": "x"}, TypeError, r"tau must be a real number; got str"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), BAD_SCHEDULES)
def test_schedule_rejects(kwargs, exc, pattern):
    base = {"num_steps": 4, "kappa": 3, "window": 2}
    with pytest.raises(exc, match=pattern):
        KVLockSchedule(**{**base, **kwargs})


BAD_MASKS = [
    (dict(mask=torch.zeros(1, 4, 8, 8)), r"mask frames must be 1 \+ temporal_stride"),
    (dict(mask=torch.full((1, 5, 8, 8), 0.5)), r"mask must be binary"),
    (dict(mask=torch.zeros(5, 8, 8)), r"mask must have shape \(batch, frames"),
    (dict(mask=torch.zeros(1, 5, 8, 7)), r"divisible by spatial_stride=2"),
]


@pytest.mark.parametrize(("kwargs", "pattern"), BAD_MASKS)
def test_latent_mask_rejects(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        latent_mask(**kwargs, temporal_stride=2, spatial_stride=2)


def _bad_edit(rng, **change):
    model = _dit()
    src, noise, m_lat, m_tok = _edit_inputs(rng)
    args = dict(mask_latent=m_lat, token_mask_=m_tok, noise=noise)
    args.update(change)
    ctrl = install_kv_lock(model)
    kv_lock_edit(
        _velocity(model),
        ctrl,
        src,
        args["mask_latent"],
        args["token_mask_"],
        cond=torch.tensor([1, 2]),
        source_cond=torch.tensor([0, 0]),
        null_cond=torch.tensor([1000, 1000]),
        schedule=KVLockSchedule(num_steps=2, kappa=2, window=2),
        noise=args["noise"],
    )


BAD_EDITS = [
    (
        {"mask_latent": torch.ones(2, 1, 4, 4)},
        r"mask_latent must have shape \(batch, frames, height, width\) "
        r"= \(2, 1, 8, 8\)",
    ),
    ({"mask_latent": torch.zeros(2, 1, 8, 8)}, r"no foreground \(nothing to edit\)"),
    ({"mask_latent": torch.ones(2, 1, 8, 8)}, r"no background \(nothing to lock\)"),
    ({"mask_latent": _box_mask(2) * 0.5}, r"mask_latent must be binary"),
    ({"noise": torch.zeros(2, 4, 1, 8, 4)}, r"noise must have shape \(2, 4, 1, 8, 8\)"),
    (
        {"token_mask_": torch.ones(2, 15)},
        r"token_mask must have shape \(batch, tokens\)",
    ),
]


@pytest.mark.parametrize(("change", "pattern"), BAD_EDITS)
def test_edit_rejects(rng, change, pattern):
    with pytest.raises(ValueError, match=pattern):
        _bad_edit(rng, **change)


def test_install_rejects_model_without_attention():
    with pytest.raises(ValueError, match=r"must contain diffusers Attention .* Linear"):
        install_kv_lock(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module; got str"):
        install_kv_lock("dit")


def test_fusion_without_cache_is_an_error(rng):
    model = _dit()
    ctrl = install_kv_lock(model)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(RuntimeError, match=r"no cached K/V for attention layer"):
        with ctrl.fusing(torch.zeros(1, 16), 1.0), torch.no_grad():
            model(x, timestep=torch.tensor([1]), class_labels=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        with ctrl.fusing(torch.zeros(1, 16), 1.2):
            pass
