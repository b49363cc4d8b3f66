r"""KV-Lock: training-free, hallucination-aware key/value control for DiT editing.

A video edit with a diffusion transformer runs two trajectories on the same
noise: the *source* trajectory (the source video noised by the forward
process) and the *edit* trajectory. At each step the source pass caches the
keys and values of every self-attention layer; the edit pass replaces the
background tokens' keys and values by a blend of cached and fresh ones,

.. math::

    K_\text{mix} = m \odot K_\text{new}
        + (1 - m) \odot \bigl(\alpha_k K_\text{cache}
        + (1 - \alpha_k) K_\text{new}\bigr),

and the same for :math:`V`. The fusion ratio :math:`\alpha_k` and the
guidance scale :math:`w_k` follow a hallucination detector: the variance of
the masked denoised prediction :math:`\hat x_0` over the last :math:`W`
steps,

.. math::

    \sigma^2_k = \frac{1}{W - 1} \sum_{i=k-W+1}^{k}
        \bigl(\bar x_i - \operatorname{mean}_j \bar x_j\bigr)^2,
    \qquad \bar x_i = \operatorname{Flatten}(\hat x_{0,i} \odot m_\text{lat}),

    \alpha_k = \operatorname{clamp}(\sigma^2_k / \tau, 0, 1), \qquad
    w_k = w_0 \operatorname{clamp}(\sigma^2_k / \tau, 1, b),

with classifier-free guidance in the CFG-Zero* form
:math:`\tilde\epsilon = (1 - w) s^* \epsilon_\varnothing + w \epsilon_y`,
:math:`s^* = \langle \epsilon_y, \epsilon_\varnothing\rangle /
(\|\epsilon_\varnothing\|^2 + e)`.

The attention hook is a diffusers attention processor
(:class:`KVLockAttnProcessor`), installed on a model's self-attention layers
by :func:`install_kv_lock`; it changes no parameter.

References
----------
.. [1] Zeng, Gao, Wang, et al. "When to Lock Attention: Training-Free KV
   Control in Video Diffusion." 2026. arXiv:2603.09657.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lemmata.nn._checks import check_finite, check_int

__all__ = [
    "KVLockAttnProcessor",
    "KVLockController",
    "KVLockEdit",
    "KVLockSchedule",
    "cfg_zero_star",
    "hallucination_variance",
    "install_kv_lock",
    "kv_lock_edit",
    "latent_mask",
    "token_mask",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- masks


def _check_binary(name: str, mask: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(mask).__name__}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must be binary (0/1); binarise it explicitly first")
    return mask.float()


def latent_mask(mask: Tensor, *, temporal_stride: int = 4, spatial_stride: int = 8):
    r"""Max-pool a pixel-space video mask to the latent grid of a video VAE.

    Latent frame 0 takes :math:`\max M_0`; latent frame :math:`t \ge 1` takes
    :math:`\max M[1 + (t-1)s_t : 1 + t s_t]`; space is max-pooled by
    :math:`s_h = s_w`. Max (never mean) pooling makes every latent cell that
    touches the edit foreground.

    Parameters
    ----------
    mask : Tensor of shape (batch, frames, height, width)
        Binary edit mask, 1 on the foreground.
    temporal_stride : int, default=4
        :math:`s_t`; ``frames`` must be ``1 + s_t * k``.
    spatial_stride : int, default=8
        :math:`s_h = s_w`; must divide ``height`` and ``width``.

    Returns
    -------
    Tensor of shape (batch, 1 + k, height / s, width / s)
    """
    mask = _check_binary("mask", mask)
    if mask.ndim != 4:
        raise ValueError(
            "mask must have shape (batch, frames, height, width); "
            f"got {tuple(mask.shape)}"
        )
    s_t = check_int("temporal_stride", temporal_stride, low=1)
    s = check_int("spatial_stride", spatial_stride, low=1)
    b, f, h, w = mask.shape
    if (f - 1) % s_t:
        raise ValueError(
            f"mask frames must be 1 + temporal_stride * k = 1 + {s_t} * k; got {f}"
        )
    if h % s or w % s:
        raise ValueError(
            f"mask height and width must be divisible by spatial_stride={s}; "
            f"got ({h}, {w})"
        )
    first = mask[:, :1]
    rest = mask[:, 1:].reshape(b, (f - 1) // s_t, s_t, h, w).amax(2)
    pooled = torch.cat([first, rest], 1)
    return F.max_pool2d(pooled, s) if s > 1 else pooled


def token_mask(mask_latent: Tensor, patch: Sequence[int] = (1, 2, 2)) -> Tensor:
    r"""Token mask from a latent mask by 3-D max pooling and flattening.

    :math:`m = \operatorname{Flatten}(\operatorname{MaxPool3D}(m_\text{lat}))`.

    Parameters
    ----------
    mask_latent : Tensor of shape (batch, frames, height, width)
        Binary latent mask (from :func:`latent_mask`).
    patch : tuple of 3 int, default=(1, 2, 2)
        The DiT's patch size :math:`(p_t, p_h, p_w)`; kernel and stride of the
        max-pool.

    Returns
    -------
    Tensor of shape (batch, tokens)
        Flattened in the DiT's token order ``(t, h, w)``.
    """
    mask_latent = _check_binary("mask_latent", mask_latent)
    if mask_latent.ndim != 4:
        raise ValueError(
            "mask_latent must have shape (batch, frames, height, width); "
            f"got {tuple(mask_latent.shape)}"
        )
    patch = tuple(patch)
    if len(patch) != 3 or any(
        isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1
        for p in patch
    ):
        raise ValueError(f"patch must be 3 positive integers; got {patch}")
    for size, p, axis in zip(mask_latent.shape[1:], patch, "thw", strict=True):
        if size % p:
            raise ValueError(
                f"mask_latent {axis} size must be divisible by patch {p}; got {size}"
            )
    pooled = F.max_pool3d(mask_latent[:, None], patch, patch)[:, 0]
    return pooled.flatten(1)


def _check_edit_mask(mask_latent: Tensor, latent: Tensor) -> Tensor:
    """The latent mask, checked against the latent video ``(B, C, T, H, W)``."""
    mask_latent = _check_binary("mask_latent", mask_latent)
    expected = (latent.shape[0], *latent.shape[2:])
    if tuple(mask_latent.shape) != expected:
        raise ValueError(
            f"mask_latent must have shape (batch, frames, height, width) = "
            f"{expected} to match the latent video {tuple(latent.shape)}; "
            f"got {tuple(mask_latent.shape)}"
        )
    per_sample = mask_latent.flatten(1).sum(1)
    if bool((per_sample == 0).any()):
        raise ValueError(
            "mask_latent has a sample with no foreground (nothing to edit)"
        )
    if bool((per_sample == mask_latent[0].numel()).any()):
        raise ValueError(
            "mask_latent has a sample with no background (nothing to lock)"
        )
    return mask_latent


# ------------------------------------------------------------------ detector + CFG


def hallucination_variance(
    history: Sequence[Tensor] | Tensor,
    mask: Tensor | None = None,
    *,
    window: int,
    clamp: tuple[float, float] | None = None,
) -> Tensor:
    r"""Windowed variance of the masked denoised prediction, one value per sample.

    .. math::

        \sigma^2 = \frac{1}{|m|}\sum_{j \in m} \frac{1}{W - 1}
            \sum_{i=k-W+1}^{k} \bigl(\hat x_{0,i,j} - \bar{\hat x}_{0,j}\bigr)^2

    Parameters
    ----------
    history : sequence of Tensor of shape (batch, ...), or Tensor (steps, batch, ...)
        Denoised predictions :math:`\hat x_{0,i}`, oldest first; the last
        ``window`` are used (all if fewer).
    mask : Tensor broadcastable to one prediction, optional
        :math:`m_\text{lat}`; ``None`` takes every element (the *global*
        detector).
    window : int
        :math:`W`; must be >= 2 (the divisor is :math:`W - 1`).
    clamp : (float, float), optional
        Data range; predictions are clamped to it first (:math:`\hat x_0`
        explodes at high noise).

    Returns
    -------
    Tensor of shape (batch,)
    """
    window = check_int("window", window, low=2)
    stack = torch.stack(list(history)) if not isinstance(history, Tensor) else history
    if stack.shape[0] < 2:
        raise ValueError(f"history must hold >= 2 predictions; got {stack.shape[0]}")
    stack = stack[-window:].float()
    if clamp is not None:
        stack = stack.clamp(*clamp)
    var = stack.var(0, unbiased=True)
    if mask is None:
        return var.flatten(1).mean(1)
    weight = torch.broadcast_to(mask.float(), var.shape)
    return (var * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)


def cfg_zero_star(
    pred_cond: Tensor,
    pred_uncond: Tensor,
    scale: Tensor | float,
    *,
    project: bool = True,
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    r"""Guided prediction :math:`(1 - w) s^* \epsilon_\varnothing + w \epsilon_y`.

    Parameters
    ----------
    pred_cond, pred_uncond : Tensor of shape (batch, ...)
        :math:`\epsilon_y` and :math:`\epsilon_\varnothing` (any prediction
        target: noise or velocity).
    scale : float or Tensor of shape (batch,)
        :math:`w`.
    project : bool, default=True
        Use :math:`s^* = \langle\epsilon_y, \epsilon_\varnothing\rangle /
        (\|\epsilon_\varnothing\|^2 + e)` per sample; ``False`` sets
        :math:`s^* = 1` (plain CFG).
    eps : float, default=1e-8
        :math:`e`.

    Returns
    -------
    guided : Tensor like ``pred_cond``
    s_star : Tensor of shape (batch,)
    """
    b = pred_cond.shape[0]
    if project:
        num = (pred_cond * pred_uncond).flatten(1).sum(1)
        s_star = num / (pred_uncond.pow(2).flatten(1).sum(1) + eps)
    else:
        s_star = pred_cond.new_ones(b)
    w = torch.as_tensor(scale, dtype=pred_cond.dtype, device=pred_cond.device)
    w = w.expand(b) if w.ndim == 0 else w
    shape = (b,) + (1,) * (pred_cond.ndim - 1)
    w, s = w.view(shape), s_star.view(shape)
    return (1 - w) * s * pred_uncond + w * pred_cond, s_star


# ----------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class KVLockSchedule:
    r"""Step schedule of the fusion ratio :math:`\alpha_k` and guidance :math:`w_k`.

    Inside the last ``kappa`` steps, once a full window of predictions exists,
    :math:`\alpha_k = \operatorname{clamp}(\sigma^2/\tau, 0, 1)` and
    :math:`w_k = w_0 \operatorname{clamp}(\sigma^2/\tau, 1, b)`; before that
    :math:`\alpha_k = 1` (full lock) and :math:`w_k = w_0`.

    Parameters
    ----------
    num_steps : int
        Sampling steps.
    kappa : int, default=20
        :math:`\kappa`, the late steps where the detector acts; <= num_steps.
    window : int, default=10
        :math:`W`; 2 <= W <= kappa.
    tau : float, default=0.01
        :math:`\tau` > 0, the variance that counts as full risk.
    w0 : float, default=5.0
        Base guidance :math:`w_0` >= 0.
    b : float, default=2.0
        Largest guidance multiplier :math:`b` >= 1.
    fusion : None, float or sequence of float, default=None
        ``None`` is the dynamic KV-Lock ratio; a float fixes :math:`\alpha` at
        every step (0 = no lock, 1 = full lock); a sequence gives one
        :math:`\alpha` per step. Every value must lie in [0, 1].
    schedule_guidance : bool, default=True
        ``False`` keeps :math:`w_k = w_0` (the ablation "without the w
        schedule"; also used by the fixed-fusion baselines).

    Notes
    -----
    [reconstruction] :math:`\alpha = 1` before the late window (D3) and the
    lower clamp 1 of the guidance multiplier (D4): the summary's literal
    :math:`\operatorname{clamp}(\sigma^2/\tau, 0, b)` would drop to
    unconditional sampling when the variance is low, contradicting the
    abstract's "amplified conditional guidance" on risk.
    """

    num_steps: int
    kappa: int = 20
    window: int = 10
    tau: float = 0.01
    w0: float = 5.0
    b: float = 2.0
    fusion: float | tuple[float, ...] | None = None
    schedule_guidance: bool = True

    def __post_init__(self) -> None:
        n = check_int("num_steps", self.num_steps, low=1)
        kappa = check_int("kappa", self.kappa, low=1)
        if kappa > n:
            raise ValueError(f"kappa must be <= num_steps={n}; got {kappa}")
        window = check_int("window", self.window, low=2)
        if window > kappa:
            raise ValueError(f"window must be <= kappa={kappa}; got {window}")
        check_finite("tau", self.tau, low=0.0)
        if check_finite("w0", self.w0) < 0:
            raise ValueError(f"w0 must be >= 0; got {self.w0!r}")
        if check_finite("b", self.b) < 1:
            raise ValueError(f"b must be >= 1; got {self.b!r}")
        fusion = self.fusion
        if fusion is not None:
            values = [fusion] if isinstance(fusion, numbers.Real) else list(fusion)
            if not isinstance(fusion, numbers.Real) and len(values) != n:
                raise ValueError(
                    f"fusion must have one value per step ({n}); got {len(values)}"
                )
            for v in values:
                v = check_finite("fusion", v)
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"fusion must lie in [0, 1]; got {v!r}")
            if not isinstance(fusion, numbers.Real):
                object.__setattr__(self, "fusion", tuple(float(v) for v in values))

    def is_late(self, step: int, filled: int) -> bool:
        """Whether ``step`` is in the last ``kappa`` steps with a full window."""
        return step >= self.num_steps - self.kappa and filled >= self.window

    def alpha(self, step: int, sigma2: Tensor | None, filled: int) -> Tensor | float:
        r""":math:`\alpha_k` (a float or one value per sample)."""
        if self.fusion is not None:
            return self.fusion if isinstance(self.fusion, float) else self.fusion[step]
        if sigma2 is None or not self.is_late(step, filled):
            return 1.0
        return (sigma2 / self.tau).clamp(0.0, 1.0)

    def guidance(self, step: int, sigma2: Tensor | None, filled: int):
        r""":math:`w_k` (a float or one value per sample)."""
        if not self.schedule_guidance or sigma2 is None:
            return self.w0
        if not self.is_late(step, filled):
            return self.w0
        return self.w0 * (sigma2 / self.tau).clamp(1.0, self.b)


# ----------------------------------------------------------------------- processor


@dataclass
class _LockState:
    mode: str = "off"
    cache: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    token_mask: Tensor | None = None
    alpha: Tensor | None = None


class KVLockAttnProcessor:
    r"""Diffusers attention processor that records or fuses self-attention K/V.

    Computes scaled dot-product attention exactly like diffusers'
    ``AttnProcessor2_0`` on a self-attention ``Attention`` module, except that
    in ``"fuse"`` mode the keys and values are mixed with the cached ones,

    .. math::

        K \leftarrow m \odot K + (1 - m) \odot (\alpha K_\text{cache}
            + (1 - \alpha) K),

    with :math:`m` the token mask (1 = foreground) and :math:`\alpha` the
    fusion ratio held by the shared controller. Keys are cached after the
    module's ``norm_k``.

    Parameters
    ----------
    name : str
        The attention layer's module name (the cache key).
    state : object
        Shared state of a :class:`KVLockController`.

    Notes
    -----
    Rotary position embeddings are not applied by this processor (diffusers'
    classic ``Attention`` path has none); a port to a RoPE model must cache
    keys after RoPE with identical positions.
    """

    def __init__(self, name: str, state: _LockState):
        self.name = name
        self.state = state

    def __call__(
        self,
        attn,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError(
                f"KVLockAttnProcessor on {self.name!r} must serve self-attention; "
                "got encoder_hidden_states"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if hidden_states.ndim != 3:
            raise ValueError(
                f"hidden_states of {self.name!r} must have shape (batch, tokens, dim);"
                f" got {tuple(hidden_states.shape)}"
            )
        batch, tokens, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, tokens)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(
                1, 2
            )

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (
            x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            for x in (query, key, value)
        )
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        key, value = self._lock(key, value)

        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0
        )
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out.to(query.dtype)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _lock(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        state = self.state
        if state.mode == "record":
            state.cache[self.name] = (key.detach(), value.detach())
        elif state.mode == "fuse":
            if self.name not in state.cache:
                raise RuntimeError(
                    f"no cached K/V for attention layer {self.name!r}; run the "
                    "source pass under controller.recording() first"
                )
            key_c, value_c = state.cache[self.name]
            if key_c.shape != key.shape:
                raise ValueError(
                    f"cached K/V of {self.name!r} must match the edit pass shape "
                    f"{tuple(key.shape)}; got {tuple(key_c.shape)}"
                )
            m = state.token_mask
            if m.shape != (key.shape[0], key.shape[2]):
                raise ValueError(
                    f"token_mask must have shape (batch, tokens) = "
                    f"{(key.shape[0], key.shape[2])} for layer {self.name!r}; "
                    f"got {tuple(m.shape)}"
                )
            m = m.to(key.dtype)[:, None, :, None]
            a = state.alpha.to(key.dtype).view(-1, 1, 1, 1)
            key = m * key + (1 - m) * (a * key_c + (1 - a) * key)
            value = m * value + (1 - m) * (a * value_c + (1 - a) * value)
        return key, value


class KVLockController:
    """Handle returned by :func:`install_kv_lock`: switches record/fuse modes.

    Attributes
    ----------
    layers : list of str
        Names of the self-attention modules carrying a KV-Lock processor.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module]):
        self.model = model
        self.state = _LockState()
        self.layers = list(modules)
        self._modules = modules
        self._originals = {name: mod.processor for name, mod in modules.items()}
        for name, mod in modules.items():
            mod.set_processor(KVLockAttnProcessor(name, self.state))

    @contextlib.contextmanager
    def recording(self):
        """Cache every layer's K/V in the enclosed forward pass (replacing the
        previous step's cache)."""
        self.state.cache.clear()
        self.state.mode = "record"
        try:
            yield self
        finally:
            self.state.mode = "off"
        missing = [n for n in self.layers if n not in self.state.cache]
        if missing:
            raise RuntimeError(f"the source pass cached no K/V for layers {missing}")

    @contextlib.contextmanager
    def fusing(self, token_mask: Tensor, alpha: Tensor | float):
        r"""Fuse cached and new K/V in the enclosed forward pass.

        Parameters
        ----------
        token_mask : Tensor of shape (batch, tokens)
            1 on foreground tokens (from :func:`token_mask`).
        alpha : float or Tensor of shape (batch,)
            :math:`\alpha` in [0, 1].
        """
        alpha = torch.as_tensor(alpha, dtype=torch.float32)
        if alpha.ndim == 0:
            alpha = alpha.expand(token_mask.shape[0])
        if alpha.shape != (token_mask.shape[0],):
            raise ValueError(
                f"alpha must be a float or have shape ({token_mask.shape[0]},); "
                f"got {tuple(alpha.shape)}"
            )
        if not bool(((alpha >= 0) & (alpha <= 1)).all()):
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha.tolist()}")
        self.state.mode = "fuse"
        self.state.token_mask = token_mask.to(alpha.device)
        self.state.alpha = alpha.to(token_mask.device)
        try:
            yield self
        finally:
            self.state.mode = "off"

    def remove(self) -> None:
        """Restore the original processors and drop the cache."""
        for name, mod in self._modules.items():
            mod.set_processor(self._originals[name])
        self.state.cache.clear()


def install_kv_lock(model: nn.Module) -> KVLockController:
    """Install :class:`KVLockAttnProcessor` on every self-attention layer of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        A DiT built from diffusers ``Attention`` modules (for example
        ``DiTTransformer2DModel`` or any model whose video self-attention is a
        diffusers ``Attention``). Cross-attention layers are left untouched.

    Returns
    -------
    KVLockController

    Raises
    ------
    ValueError
        If ``model`` has no diffusers self-attention ``Attention`` layer.
    """
    from diffusers.models.attention_processor import Attention

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    modules = {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, Attention) and not mod.is_cross_attention
    }
    if not modules:
        raise ValueError(
            "model must contain diffusers Attention self-attention layers; "
            f"found none in {type(model).__name__}"
        )
    logger.info("KV-Lock installed on %d attention layers", len(modules))
    return KVLockController(model, modules)


# ------------------------------------------------------------------------ sampler


@dataclass
class KVLockEdit:
    """Output of :func:`kv_lock_edit`.

    Attributes
    ----------
    latent : Tensor
        The edited latent video.
    sigma2 : list of Tensor of shape (batch,)
        Detector value after each step (from the second step on).
    alpha, guidance : list of Tensor of shape (batch,)
        :math:`\\alpha_k` and :math:`w_k` used at each step.
    s_star : list of Tensor of shape (batch,)
        :math:`s^*` at each step.
    """

    latent: Tensor
    sigma2: list[Tensor]
    alpha: list[Tensor]
    guidance: list[Tensor]
    s_star: list[Tensor]


@torch.no_grad()
def kv_lock_edit(
    velocity: Callable[[Tensor, Tensor, Tensor], Tensor],
    controller: KVLockController,
    source: Tensor,
    mask_latent: Tensor,
    token_mask_: Tensor,
    *,
    cond: Tensor,
    source_cond: Tensor,
    null_cond: Tensor,
    schedule: KVLockSchedule,
    noise: Tensor,
    global_detector: bool = False,
    project: bool = True,
    clamp: tuple[float, float] | None = (-1.0, 1.0),
) -> KVLockEdit:
    r"""Edit a latent video with KV-Lock on a rectified-flow DiT (Euler sampler).

    With :math:`\sigma_k = 1 - k/N`, the source path is
    :math:`z^\text{src}_k = (1 - \sigma_k) z_0 + \sigma_k \epsilon_0` with the
    same :math:`\epsilon_0` as the edit path's start. At each step: cache K/V
    on :math:`z^\text{src}_k` with ``source_cond``; run the conditional and
    unconditional edit passes with fused K/V; guide with :func:`cfg_zero_star`;
    :math:`\hat x_0 = z - \sigma_k v`; update the detector; Euler step
    :math:`z \leftarrow z + (\sigma_{k+1} - \sigma_k) v`.

    Parameters
    ----------
    velocity : callable ``(z, sigma, cond) -> v``
        The model's velocity :math:`v = \epsilon - z_0`; ``sigma`` has shape
        (batch,). It must run the model that ``controller`` is installed on.
    controller : KVLockController
    source : Tensor of shape (batch, channels, frames, height, width)
        Source latent :math:`z_0`.
    mask_latent : Tensor of shape (batch, frames, height, width)
        Binary :math:`m_\text{lat}` (1 = edit region); must match ``source``.
    token_mask_ : Tensor of shape (batch, tokens)
        Binary token mask :math:`m`.
    cond, source_cond, null_cond : Tensor
        Target, source and null conditions (class labels or embeddings).
    schedule : KVLockSchedule
    noise : Tensor like ``source``
        :math:`\epsilon_0`.
    global_detector : bool, default=False
        Take the variance over the whole latent (the ablation).
    project : bool, default=True
        Use :math:`s^*`; ``False`` is plain CFG.
    clamp : (float, float) or None, default=(-1, 1)
        Data range for :math:`\hat x_0` in the detector.

    Returns
    -------
    KVLockEdit

    Notes
    -----
    [reconstruction] One detector sample per edit (:math:`B = 1`, D2); the
    forward process is the model's rectified flow, not the DDPM form of the
    summary (D6); one source cache serves both edit passes (D9). The range of
    :math:`s^*` is logged at DEBUG level.
    """
    if source.ndim != 5:
        raise ValueError(
            "source must have shape (batch, channels, frames, height, width); "
            f"got {tuple(source.shape)}"
        )
    if noise.shape != source.shape:
        raise ValueError(
            f"noise must have shape {tuple(source.shape)}; got {tuple(noise.shape)}"
        )
    mask_latent = _check_edit_mask(mask_latent, source)
    token_mask_ = _check_binary("token_mask", token_mask_)
    if token_mask_.ndim != 2 or token_mask_.shape[0] != source.shape[0]:
        raise ValueError(
            f"token_mask must have shape ({source.shape[0]}, tokens); "
            f"got {tuple(token_mask_.shape)}"
        )

    n, batch = schedule.num_steps, source.shape[0]
    sigmas = torch.linspace(1.0, 0.0, n + 1)
    det_mask = None if global_detector else mask_latent[:, None]
    z, history = noise.clone(), []
    out = KVLockEdit(z, [], [], [], [])
    sigma2 = None
    for k in range(n):
        sig = sigmas[k].expand(batch)
        z_src = (1 - sigmas[k]) * source + sigmas[k] * noise
        with controller.recording():
            velocity(z_src, sig, source_cond)

        alpha = schedule.alpha(k, sigma2, len(history))
        w = schedule.guidance(k, sigma2, len(history))
        alpha = torch.as_tensor(alpha, dtype=torch.float32).expand(batch)
        with controller.fusing(token_mask_, alpha):
            v_cond = velocity(z, sig, cond)
            v_null = velocity(z, sig, null_cond)
        v, s_star = cfg_zero_star(v_cond, v_null, w, project=project)

        history.append(z - sigmas[k] * v)
        history = history[-schedule.window :]
        if len(history) >= 2:
            sigma2 = hallucination_variance(
                history, det_mask, window=schedule.window, clamp=clamp
            )
            out.sigma2.append(sigma2)
        out.alpha.append(alpha.clone())
        out.guidance.append(torch.as_tensor(w, dtype=torch.float32).expand(batch))
        out.s_star.append(s_star)
        z = z + (sigmas[k + 1] - sigmas[k]) * v

    s_all = torch.stack(out.s_star)
    logger.debug("s* range [%.3g, %.3g]", float(s_all.min()), float(s_all.max()))
    if not math.isfinite(float(s_all.abs().max())):
        logger.warning("s* is not finite; check the unconditional prediction")
    out.latent = z
    return out
