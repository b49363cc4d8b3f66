r"""Preference losses over log-probabilities: f-divergence DPO, its Diffusion-DPO
form, and Mutual Information Optimization (MIO).

Every loss is a pure function of per-sequence (or per-sample) quantities and
returns one loss per example; the caller reduces. The f-divergences live in a
small table, :data:`DIVERGENCES`, which the trainer adapter and the CLI read.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DIVERGENCES",
    "Divergence",
    "ddpm_elbo_scale",
    "diffusion_preference_loss",
    "divergence_score",
    "divergence_weight",
    "mio_loss",
    "preference_loss",
    "resolve_divergence",
]

logger = logging.getLogger(__name__)

_LOG2 = math.log(2.0)


def _exp_clamp(dtype: torch.dtype) -> float:
    # Largest exponent kept before exp(): TRL 1.16 uses 11 for float16 and 80 for
    # float32/bfloat16; float64 gets the float32 value so that results do not
    # depend on the dtype the caller happened to pick.
    return 11.0 if dtype == torch.float16 else 80.0


def _clamped_exp(t: Tensor, what: str) -> Tensor:
    limit = _exp_clamp(t.dtype)
    if logger.isEnabledFor(logging.DEBUG):
        fired = int((t > limit).sum())
        if fired:
            logger.debug(
                "%s: exponent clamped at %s for %d entries", what, limit, fired
            )
    # float16 is computed in float32 and cast back, as TRL does.
    work = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    return torch.exp(torch.clamp(work, max=limit)).to(t.dtype)


def _score_reverse_kl(h: Tensor, alpha: float) -> Tensor:
    return h


def _score_forward_kl(h: Tensor, alpha: float) -> Tensor:
    return 1.0 - _clamped_exp(-h, "forward_kl")


def _score_jensen_shannon(h: Tensor, alpha: float) -> Tensor:
    # log(2u / (1 + u)) with u = e^h, written with logsigmoid to stay finite.
    return _LOG2 + F.logsigmoid(h)


def _score_alpha(h: Tensor, alpha: float) -> Tensor:
    return (1.0 - _clamped_exp(-alpha * h, "alpha")) / alpha


def _weight_reverse_kl(h: Tensor, alpha: float) -> Tensor:
    return torch.ones_like(h)


def _weight_forward_kl(h: Tensor, alpha: float) -> Tensor:
    return torch.exp(-h)


def _weight_jensen_shannon(h: Tensor, alpha: float) -> Tensor:
    return torch.sigmoid(-h)


def _weight_alpha(h: Tensor, alpha: float) -> Tensor:
    return torch.exp(-alpha * h)


@dataclass(frozen=True)
class Divergence:
    r"""One f-divergence as the preference losses use it.

    Attributes
    ----------
    name : str
        Registry key.
    f : str
        :math:`f(u)`, for the documentation.
    score : callable
        :math:`g(h) = f'(e^h)` (with the constants TRL 1.16 keeps), called as
        ``score(h, alpha)``.
    weight : callable
        :math:`g'(h)`, the per-sample gradient weight, called as ``weight(h, alpha)``.
    trl_name : str
        The value of TRL's ``f_divergence_type`` for the same divergence.
    uses_alpha : bool
        Whether ``alpha`` enters the score.
    """

    name: str
    f: str
    score: Callable[[Tensor, float], Tensor]
    weight: Callable[[Tensor, float], Tensor]
    trl_name: str
    uses_alpha: bool = False


#: The registered f-divergences, by name. Aliases are in :data:`_ALIASES`.
DIVERGENCES: dict[str, Divergence] = {
    d.name: d
    for d in (
        Divergence(
            "reverse_kl", "u log u", _score_reverse_kl, _weight_reverse_kl, "reverse_kl"
        ),
        Divergence(
            "forward_kl", "-log u", _score_forward_kl, _weight_forward_kl, "forward_kl"
        ),
        Divergence(
            "jensen_shannon",
            "u log u - (1 + u) log((1 + u) / 2)",
            _score_jensen_shannon,
            _weight_jensen_shannon,
            "js_divergence",
        ),
        Divergence(
            "alpha",
            "(u^(1-a) - (1-a) u - a) / (a (a - 1))",
            _score_alpha,
            _weight_alpha,
            "alpha_divergence",
            uses_alpha=True,
        ),
    )
}

# TRL's names are accepted too, so a TRL config value can be passed through.
_ALIASES = {
    "dpo": "reverse_kl",
    "js": "jensen_shannon",
    "js_divergence": "jensen_shannon",
    "alpha_divergence": "alpha",
}


def resolve_divergence(divergence: Any) -> Divergence:
    """Look up a divergence by name (or TRL alias); ValueError lists the valid ones."""
    if not isinstance(divergence, str):
        raise TypeError(f"divergence must be a str; got {type(divergence).__name__}")
    key = _ALIASES.get(divergence, divergence)
    if key not in DIVERGENCES:
        valid = sorted(DIVERGENCES) + sorted(_ALIASES)
        raise ValueError(f"divergence must be one of {valid}; got {divergence!r}")
    return DIVERGENCES[key]


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):  # also rejects NaN
        raise ValueError(f"{name} must be > 0 and finite; got {value!r}")
    return float(value)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number; got {type(alpha).__name__}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    return float(alpha)


_LOGP_NAMES = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "ref_chosen_logps",
    "ref_rejected_logps",
)


def _check_tensors(names: tuple[str, ...], tensors: tuple[Any, ...]) -> None:
    for name, t in zip(names, tensors, strict=True):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got {t.dtype}")
    shape = tensors[0].shape
    for name, t in zip(names[1:], tensors[1:], strict=True):
        if t.shape != shape:
            raise ValueError(
                f"{name} must have the shape of {names[0]} {tuple(shape)}; "
                f"got {tuple(t.shape)}"
            )
    if tensors[0].numel() == 0:
        raise ValueError(
            f"{names[0]} must hold at least one example; got shape {tuple(shape)}"
        )


def _check_finite(name: str, t: Tensor) -> None:
    with torch.no_grad():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite; got a non-finite entry")


def divergence_score(
    logratios: Tensor, divergence: str = "reverse_kl", alpha: float = 0.5
) -> Tensor:
    r"""Score :math:`g(h) = f'(e^h)` of a log-ratio under an f-divergence.

    Parameters
    ----------
    logratios : Tensor
        :math:`h = \log\pi_\theta(y\mid x) - \log\pi_{\mathrm{ref}}(y\mid x)`.
    divergence : str, default="reverse_kl"
        A key of :data:`DIVERGENCES` or a TRL alias.
    alpha : float, default=0.5
        f-DPO's :math:`a \in (0, 1)`, used by ``"alpha"`` only.

    Returns
    -------
    Tensor
        :math:`g(h)`, same shape as ``logratios``.
    """
    div = resolve_divergence(divergence)
    a = _check_alpha(alpha) if div.uses_alpha else 0.0
    return div.score(logratios, a)


def divergence_weight(
    logratios: Tensor, divergence: str = "reverse_kl", alpha: float = 0.5
) -> Tensor:
    r"""Gradient weight :math:`g'(h)` of the score, the divergence's gradient field.

    Parameters are those of :func:`divergence_score`. Forward KL and alpha give
    :math:`e^{-h}` and :math:`e^{-a h}` (large where the policy fell below the
    reference), Jensen-Shannon gives :math:`\sigma(-h) \in (0, 1)`.
    """
    div = resolve_divergence(divergence)
    a = _check_alpha(alpha) if div.uses_alpha else 0.0
    return div.weight(logratios, a)


def _fdpo_from_logratios(
    chosen_logratios: Tensor,
    rejected_logratios: Tensor,
    beta: float,
    div: Divergence,
    alpha: float,
) -> Tensor:
    delta = div.score(chosen_logratios, alpha) - div.score(rejected_logratios, alpha)

    # -log sigmoid(z) through logsigmoid, which stays finite for large |z|.
    return -F.logsigmoid(beta * delta)


def preference_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    divergence: str = "reverse_kl",
    alpha: float = 0.5,
) -> Tensor:
    r"""f-divergence DPO loss per preference pair (f-DPO).

    .. math::

        \ell = -\log\sigma\bigl(\beta\,[g(h_w) - g(h_l)]\bigr),\qquad
        h = \log\pi_\theta(y\mid x) - \log\pi_{\mathrm{ref}}(y\mid x),\qquad
        g(h) = f'(e^h)

    :math:`\log\pi_\theta(y_w\mid x)` is ``policy_chosen_logps``,
    :math:`\log\pi_\theta(y_l\mid x)` is ``policy_rejected_logps``, the reference
    terms are ``ref_chosen_logps`` and ``ref_rejected_logps``, :math:`\beta` is
    ``beta`` and :math:`f` is chosen by ``divergence``:

    ================  ==========================  =============================
    divergence        :math:`f'(u)`               :math:`g(h)`
    ================  ==========================  =============================
    reverse_kl (DPO)  :math:`\log u + 1`          :math:`h`
    forward_kl        :math:`-1/u`                :math:`1 - e^{-h}`
    jensen_shannon    :math:`\log(2u/(1+u))`      :math:`\log 2 + \log\sigma(h)`
    alpha             :math:`(1 - u^{-a})/a`      :math:`(1 - e^{-a h})/a`
    ================  ==========================  =============================

    Parameters
    ----------
    policy_chosen_logps, policy_rejected_logps : Tensor of shape (B,)
        Sequence log-probabilities of the chosen and rejected completions under the
        policy (summed over completion tokens).
    ref_chosen_logps, ref_rejected_logps : Tensor of shape (B,)
        The same under the frozen reference model; must be finite.
    beta : float
        Inverse temperature :math:`\beta`; must be > 0.
    divergence : str, default="reverse_kl"
        One of ``"reverse_kl"``, ``"forward_kl"``, ``"jensen_shannon"``, ``"alpha"``
        (TRL's ``"js_divergence"`` and ``"alpha_divergence"`` are accepted).
    alpha : float, default=0.5
        f-DPO's :math:`a \in (0, 1)` of the alpha-divergence; ignored otherwise.

    Returns
    -------
    Tensor of shape (B,)
        One loss per pair; reduce with ``.mean()``.

    Notes
    -----
    - The constants of :math:`f'` are kept as TRL 1.16 keeps them
      (:math:`1 - e^{-h}`, :math:`\log 2 + \log\sigma(h)`); they cancel in the
      difference, so the loss equals TRL's ``loss_type="sigmoid"`` loss.
    - ``alpha`` is f-DPO's parametrisation [2]. TRL 1.16's
      ``f_alpha_divergence_coef`` is :math:`a' = 1 - a`; the two agree at 0.5 only.
      :attr:`Divergence.trl_name` and :func:`lemmata.posttrain.FDPOTrainer` do the
      conversion.
    - The exponents of forward KL and alpha are clamped at 80 (11 in float16)
      before :func:`torch.exp`, as TRL does for alpha; the gradient is zero
      beyond the clamp. Set this module's logger to DEBUG to log how often it fires.
    - Unpaired data (different numbers of chosen and rejected completions) is not
      supported by this loss; mismatched shapes raise ``ValueError``.

    References
    ----------
    .. [1] Sun, Xia, Chang, Wang. "Generalizing Alignment Paradigm of Text-to-Image
       Generation with Preferences through f-divergence Minimization." AAAI 2025.
       arXiv:2409.09774.
    .. [2] Wang, Jiang, Yang, Liu, Chen. "Beyond Reverse KL: Generalizing Direct
       Preference Optimization with Diverse Divergence Constraints."
       arXiv:2309.16240.
    """
    _check_tensors(
        _LOGP_NAMES,
        (
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
        ),
    )
    beta = _check_positive("beta", beta)
    div = resolve_divergence(divergence)
    a = _check_alpha(alpha) if div.uses_alpha else 0.0
    _check_finite("ref_chosen_logps", ref_chosen_logps)
    _check_finite("ref_rejected_logps", ref_rejected_logps)

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    return _fdpo_from_logratios(chosen_logratios, rejected_logratios, beta, div, a)


def ddpm_elbo_scale(timesteps: Tensor, betas: Tensor) -> Tensor:
    r"""ELBO weight :math:`s_t` that turns a denoising-error gap into a log-ratio.

    .. math::

        s_t = \frac{T\,\beta_t}{2\,\alpha_t\,(1 - \bar\alpha_t)},\qquad
        \alpha_t = 1 - \beta_t,\quad \bar\alpha_t = \prod_{s \le t} \alpha_s

    for a DDPM with :math:`T` = ``len(betas)`` steps, reverse variance
    :math:`\sigma_t^2 = \beta_t` and the squared error summed over data dims.

    Parameters
    ----------
    timesteps : Tensor of int
        :math:`t \in \{1, \dots, T\}` (1-based, as in the DDPM paper).
    betas : Tensor of shape (T,)
        The noise schedule :math:`\beta_1, \dots, \beta_T`, each in (0, 1).

    Returns
    -------
    Tensor
        :math:`s_t`, shape of ``timesteps``, dtype of ``betas``.

    Notes
    -----
    [reconstruction] This choice of :math:`s_t` is ours (see the spec, D1): the
    paper [1] states the objective but not the scale of the surrogate log-ratio,
    which only reverse KL can leave implicit.
    """
    if not isinstance(betas, Tensor) or betas.ndim != 1 or betas.numel() == 0:
        raise ValueError("betas must be a non-empty 1-D tensor")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("betas must lie in (0, 1)")
    if not isinstance(timesteps, Tensor) or timesteps.is_floating_point():
        raise TypeError("timesteps must be an integer tensor")
    n_steps = betas.numel()
    if timesteps.numel() and not bool(
        ((timesteps >= 1) & (timesteps <= n_steps)).all()
    ):
        raise ValueError(
            f"timesteps must lie in [1, {n_steps}]; got values in "
            f"[{int(timesteps.min())}, {int(timesteps.max())}]"
        )
    alphas = 1.0 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)
    idx = timesteps.long() - 1
    return n_steps * betas[idx] / (2.0 * alphas[idx] * (1.0 - alpha_bars[idx]))


def diffusion_preference_loss(
    policy_chosen_err: Tensor,
    policy_rejected_err: Tensor,
    ref_chosen_err: Tensor,
    ref_rejected_err: Tensor,
    *,
    beta: float,
    divergence: str = "reverse_kl",
    alpha: float = 0.5,
    scale: float | Tensor = 1.0,
) -> Tensor:
    r"""f-divergence Diffusion-DPO loss per preference pair.

    The log-likelihood ratio of a sample is estimated from denoising errors at a
    timestep :math:`t` and noise :math:`\epsilon` shared by policy, reference,
    winner and loser, averaged over :math:`K` such draws:

    .. math::

        \hat h(x_0) = \frac1K \sum_{k=1}^K s_{t_k}\bigl(
            \|\epsilon_k - \epsilon_{\mathrm{ref}}(x_{t_k}, t_k)\|^2
            - \|\epsilon_k - \epsilon_\theta(x_{t_k}, t_k)\|^2\bigr),\qquad
        \ell = -\log\sigma\bigl(\beta\,[g(\hat h_w) - g(\hat h_l)]\bigr)

    :math:`\|\epsilon - \epsilon_\theta\|^2` on the winner is
    ``policy_chosen_err`` (loser: ``policy_rejected_err``), the reference errors
    are ``ref_chosen_err`` and ``ref_rejected_err``, :math:`s_t` is ``scale``,
    :math:`\beta` is ``beta`` and :math:`g` is the score of ``divergence`` (see
    :func:`preference_loss`).

    Parameters
    ----------
    policy_chosen_err, policy_rejected_err : Tensor of shape (B,) or (B, K)
        Squared denoising errors of the policy on the chosen and the rejected
        sample; a second axis holds K draws of :math:`(t, \epsilon)`, averaged
        before :math:`g` is applied.
    ref_chosen_err, ref_rejected_err : Tensor, same shape
        The same errors for the frozen reference model; must be finite.
    beta : float
        Inverse temperature; must be > 0.
    divergence : str, default="reverse_kl"
        See :func:`preference_loss`.
    alpha : float, default=0.5
        f-DPO's alpha in (0, 1); ignored unless ``divergence="alpha"``.
    scale : float or Tensor, default=1.0
        :math:`s_t` > 0, a scalar or a tensor broadcastable to the errors (for
        example :func:`ddpm_elbo_scale` of the sampled timesteps).

    Returns
    -------
    Tensor of shape (B,)

    Notes
    -----
    - With ``divergence="reverse_kl"``, K = 1 and ``beta * scale`` equal to
      diffusers' ``beta_dpo``, the loss equals the Diffusion-DPO loss of [2]
      (diffusers' ``train_diffusion_dpo.py``) on the same :math:`(t, \epsilon)`.
    - [reconstruction] For any other divergence the absolute size of
      :math:`\hat h` matters, so ``scale`` must make :math:`\hat h` a log-ratio in
      nats; :func:`ddpm_elbo_scale` is our choice, not the paper's (which gives no
      code). Averaging the K draws before :math:`g` is also ours: :math:`g` is
      nonlinear, so a one-draw :math:`\hat h` gives a biased :math:`g(\hat h)`.

    References
    ----------
    .. [1] Sun, Xia, Chang, Wang. arXiv:2409.09774.
    .. [2] Wallace et al. "Diffusion Model Alignment Using Direct Preference
       Optimization." arXiv:2311.12908.
    """
    names = (
        "policy_chosen_err",
        "policy_rejected_err",
        "ref_chosen_err",
        "ref_rejected_err",
    )
    tensors = (policy_chosen_err, policy_rejected_err, ref_chosen_err, ref_rejected_err)
    _check_tensors(names, tensors)
    if policy_chosen_err.ndim not in (1, 2):
        raise ValueError(
            "policy_chosen_err must have shape (B,) or (B, K); got "
            f"{tuple(policy_chosen_err.shape)}"
        )
    beta = _check_positive("beta", beta)
    div = resolve_divergence(divergence)
    a = _check_alpha(alpha) if div.uses_alpha else 0.0
    if isinstance(scale, Tensor):
        if not bool((scale > 0).all()):
            raise ValueError("scale must be > 0 everywhere; got a non-positive entry")
    else:
        scale = _check_positive("scale", scale)
    _check_finite("ref_chosen_err", ref_chosen_err)
    _check_finite("ref_rejected_err", ref_rejected_err)

    chosen_logratios = scale * (ref_chosen_err - policy_chosen_err)
    rejected_logratios = scale * (ref_rejected_err - policy_rejected_err)
    if chosen_logratios.ndim == 2:
        chosen_logratios = chosen_logratios.mean(dim=1)
        rejected_logratios = rejected_logratios.mean(dim=1)

    return _fdpo_from_logratios(chosen_logratios, rejected_logratios, beta, div, a)


def mio_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    rejected_weight: float = 1.0,
) -> Tensor:
    r"""Mutual Information Optimization loss per pair (Jensen-Shannon MI estimator).

    With the critic :math:`T = \beta h`,
    :math:`h = \log\pi_\theta - \log\pi_{\mathrm{ref}}`, MIO maximises the
    Jensen-Shannon lower bound
    :math:`I_{JS} = \mathbb E_{+}[-\mathrm{sp}(-T)] - \mathbb E_{-}[\mathrm{sp}(T)]`
    over chosen (positive) and rejected (negative) completions:

    .. math::

        \ell &= \tfrac12\bigl(\mathrm{sp}(-\beta h_w)
                + \lambda\,\mathrm{sp}(\beta h_l)\bigr) \\
             &= -\tfrac12\bigl(\log\sigma(\beta h_w)
                + \lambda\log\sigma(-\beta h_l)\bigr)

    :math:`h_w` comes from ``policy_chosen_logps`` and ``ref_chosen_logps``,
    :math:`h_l` from ``policy_rejected_logps`` and ``ref_rejected_logps``,
    :math:`\beta` is ``beta`` and :math:`\lambda` is ``rejected_weight``;
    :math:`\mathrm{sp}` is softplus.

    Parameters
    ----------
    policy_chosen_logps, policy_rejected_logps : Tensor of shape (B,)
        As in :func:`preference_loss`.
    ref_chosen_logps, ref_rejected_logps : Tensor of shape (B,)
        As in :func:`preference_loss`.
    beta : float
        Critic scale; must be > 0.
    rejected_weight : float, default=1.0
        :math:`\lambda \ge 0`, the weight of the negative term.

    Returns
    -------
    Tensor of shape (B,)

    Notes
    -----
    - [reconstruction] The paper's code was not available; the loss is the JS
      estimator with a log-ratio critic and one positive and one negative per
      prompt, with the overall factor 1/2 (the "half mix"). ``rejected_weight``
      is our only added knob (default 1, the plain estimator).
    - Twice this loss equals TRL 1.16's ``loss_type="bco_pair"`` (which in 1.16
      has no running-mean shift).
    - The chosen and rejected terms are decoupled: the chosen gradient
      :math:`-\tfrac12\beta\sigma(-\beta h_w)` keeps raising :math:`h_w` whatever
      :math:`h_l` does, unlike DPO's margin-only loss.

    References
    ----------
    .. [1] Lv, Chen, Sun, Bai, Zhang, Liu. "The Hidden Link Between RLHF and
       Contrastive Learning." arXiv:2506.22578.
    .. [2] Hjelm et al. "Learning deep representations by mutual information
       estimation and maximization." arXiv:1808.06670.
    """
    _check_tensors(
        _LOGP_NAMES,
        (
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
        ),
    )
    beta = _check_positive("beta", beta)
    if isinstance(rejected_weight, bool) or not isinstance(
        rejected_weight, numbers.Real
    ):
        raise TypeError(
            "rejected_weight must be a real number; got "
            f"{type(rejected_weight).__name__}"
        )
    if not (rejected_weight >= 0 and math.isfinite(rejected_weight)):
        raise ValueError(
            f"rejected_weight must be >= 0 and finite; got {rejected_weight!r}"
        )
    _check_finite("ref_chosen_logps", ref_chosen_logps)
    _check_finite("ref_rejected_logps", ref_rejected_logps)

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    positive = -F.logsigmoid(beta * chosen_logratios)
    negative = -F.logsigmoid(-beta * rejected_logratios)
    return 0.5 * (positive + rejected_weight * negative)
