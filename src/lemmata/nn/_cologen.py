r"""CoLoGen's Progressive Representation Weaving (PRW) and staged curriculum.

PRW adapts only the *source-image* (condition) stream of a multimodal DiT
block. From the block's source tokens :math:`h \in \mathbb{R}^{L \times d}` a
noisy router picks one of :math:`N` experts,

.. math::

    w = g W_r + \epsilon \odot \operatorname{softplus}(g W_n), \quad
    \epsilon \sim \mathcal{N}(0, I), \qquad
    S = \operatorname{TopK}(\operatorname{softmax}(w), 1),

    (\hat K_h, \hat V_h) = \operatorname{KV}_\text{base}(h)
        + \sum_{k \in S} \operatorname{softmax}(w)_k\, E_k(h),

where each expert :math:`E_k` is a low-rank adapter of the key and value
projections, :math:`E_k(h) = (h A_k^\top B_k^\top)\,\alpha_\text{lora} / r`.
Training is staged: stage :math:`t` has :math:`N = t + 1` experts, only the
newest one (and the router) is trained, and the Veteran Gate Routing
Supervision pulls the newest expert's usage toward a target share,

.. math::

    L = L_\text{task} + \alpha\,\lvert U_t - \rho\rvert .

References
----------
.. [1] Song, Lu, Sun, et al. "CoLoGen: Progressive Learning of
   Concept-Localization Duality for Unified Image Generation." 2026.
   arXiv:2602.22150.
.. [2] Shazeer, Mirhoseini, Maziarz, et al. "Outrageously Large Neural
   Networks: The Sparsely-Gated Mixture-of-Experts Layer." 2017.
   arXiv:1701.06538.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lemmata.nn._checks import check_finite, check_int

__all__ = [
    "LoRAExpert",
    "PRWSourceKV",
    "StagedCurriculum",
    "noisy_top1_route",
    "veteran_loss",
]

logger = logging.getLogger(__name__)


class LoRAExpert(nn.Module):
    r"""Low-rank adapter :math:`\Delta(h) = (\alpha_\text{lora}/r)\, B A h`.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths of the adapted projection.
    rank : int
        :math:`r` >= 1.
    lora_alpha : float, optional
        :math:`\alpha_\text{lora}`; default ``2 * rank`` (the paper's choice).

    Notes
    -----
    Initialised like peft's default: :math:`A` Kaiming-uniform
    (:math:`a = \sqrt 5`), :math:`B = 0`, so a new expert starts as a no-op.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, lora_alpha=None):
        super().__init__()
        in_features = check_int("in_features", in_features, low=1)
        out_features = check_int("out_features", out_features, low=1)
        rank = check_int("rank", rank, low=1)
        lora_alpha = 2.0 * rank if lora_alpha is None else lora_alpha
        self.scaling = check_finite("lora_alpha", lora_alpha, low=0.0) / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, h: Tensor) -> Tensor:
        return (h @ self.lora_A.T @ self.lora_B.T) * self.scaling


def noisy_top1_route(
    g: Tensor, w_r: Tensor, w_n: Tensor, *, train: bool, noise: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""Noisy top-1 gating (Eq. 2-3 of [1], after [2]).

    .. math::

        w = g W_r + \epsilon \odot \operatorname{softplus}(g W_n), \qquad
        p = \operatorname{softmax}(w), \qquad k = \arg\max_j p_j

    Parameters
    ----------
    g : Tensor of shape (batch, d)
        Pooled source features.
    w_r, w_n : Tensor of shape (d, n_experts)
        :math:`W_r` and :math:`W_n`.
    train : bool
        Add the noise (training) or not (inference); an explicit flag, never
        ``module.training``.
    noise : Tensor of shape (batch, n_experts), optional
        :math:`\epsilon`; drawn from N(0, I) when ``None`` and ``train``.

    Returns
    -------
    probs : Tensor of shape (batch, n_experts)
    choice : LongTensor of shape (batch,)
    """
    logits = g @ w_r
    if train:
        eps = torch.randn_like(logits) if noise is None else noise
        logits = logits + eps * F.softplus(g @ w_n)
    probs = logits.softmax(-1)
    return probs, probs.argmax(-1)


def veteran_loss(usage: Tensor, rho: float, alpha: float) -> Tensor:
    r"""Veteran gate routing supervision :math:`\alpha\,|U - \rho|` (Eq. 9).

    Parameters
    ----------
    usage : Tensor
        :math:`U`, the newest expert's usage share (soft, so that it has a
        gradient; see :class:`StagedCurriculum`).
    rho : float
        Target share :math:`\rho`; must lie in (0, 1).
    alpha : float
        Weight :math:`\alpha` >= 0.
    """
    rho = check_finite("rho", rho)
    if not 0.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (0, 1); got {rho!r}")
    alpha = check_finite("alpha", alpha)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0; got {alpha!r}")
    return alpha * (usage - rho).abs()


class PRWSourceKV(nn.Module):
    r"""Routed low-rank experts on the K/V projections of a condition stream.

    Computes the routed part of Eq. 4 of [1] for one block,

    .. math::

        \Delta K, \Delta V = p_k E_k(h), \qquad
        k = \arg\max \operatorname{softmax}(w), \quad
        g = \tfrac{1}{L}\textstyle\sum_l h_l,

    which the host block adds to its base projections
    :math:`\operatorname{KV}_\text{base}(h)`.

    Parameters
    ----------
    dim : int
        Width :math:`d` of the source tokens.
    kv_dim : int
        Width of the key (and of the value) projection.
    rank : int, default=8
        LoRA rank :math:`r` of every expert.
    lora_alpha : float, optional
        Default ``2 * rank``.
    top_k : int, default=1
        Only 1 is supported.

    Attributes
    ----------
    experts_k, experts_v : ModuleList of LoRAExpert
        :math:`E_k` split into its key and value adapters.
    last_route : dict
        After each forward: ``"probs"`` (batch, N), ``"choice"`` (batch,).

    Notes
    -----
    [reconstruction] One routing decision per sample and block from the
    mean-pooled tokens (D1); the router grows by one zero-initialised column
    of :math:`W_r` and :math:`W_n` per expert (D4): the new expert's logit
    starts at 0, so routing starts uniform only while the earlier columns are
    still zero (stage 1 with an untrained router); later, the new expert starts
    from whatever share a zero logit gets against the trained ones.
    """

    def __init__(
        self, dim: int, kv_dim: int, *, rank: int = 8, lora_alpha=None, top_k=1
    ):
        super().__init__()
        self.dim = check_int("dim", dim, low=1)
        self.kv_dim = check_int("kv_dim", kv_dim, low=1)
        self.rank = check_int("rank", rank, low=1)
        if check_int("top_k", top_k, low=1) != 1:
            raise ValueError(
                f"top_k must be 1 (only top-1 routing is supported); got {top_k}"
            )
        self.lora_alpha = lora_alpha
        self.experts_k = nn.ModuleList()
        self.experts_v = nn.ModuleList()
        self.router_r = nn.ParameterList()
        self.router_n = nn.ParameterList()
        self.last_route: dict[str, Tensor] = {}

    @property
    def num_experts(self) -> int:
        return len(self.experts_k)

    def add_expert(self) -> None:
        """Append an expert (a no-op at start) and a zero router column."""
        ref = self.router_r[0] if self.num_experts else None
        kw = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.experts_k.append(
            LoRAExpert(self.dim, self.kv_dim, self.rank, self.lora_alpha)
        )
        self.experts_v.append(
            LoRAExpert(self.dim, self.kv_dim, self.rank, self.lora_alpha)
        )
        if kw:
            self.experts_k[-1].to(**kw)
            self.experts_v[-1].to(**kw)
        self.router_r.append(nn.Parameter(torch.zeros(self.dim, **kw)))
        self.router_n.append(nn.Parameter(torch.zeros(self.dim, **kw)))

    def forward(self, h: Tensor, *, train: bool, noise: Tensor | None = None):
        """Routed K/V deltas for source tokens ``h`` of shape (batch, L, dim).

        Returns
        -------
        delta_k, delta_v : Tensor of shape (batch, L, kv_dim)
        """
        if self.num_experts == 0:
            raise RuntimeError("PRWSourceKV has no expert; call add_expert() first")
        if h.ndim != 3 or h.shape[-1] != self.dim:
            raise ValueError(
                f"h must have shape (batch, tokens, {self.dim}); got {tuple(h.shape)}"
            )
        w_r = torch.stack(list(self.router_r), 1)
        w_n = torch.stack(list(self.router_n), 1)
        probs, choice = noisy_top1_route(h.mean(1), w_r, w_n, train=train, noise=noise)
        gate = probs.gather(1, choice[:, None])[:, :, None]  # (B, 1, 1)
        delta_k = h.new_zeros(*h.shape[:2], self.kv_dim)
        delta_v = h.new_zeros(*h.shape[:2], self.kv_dim)
        for k in range(self.num_experts):
            rows = (choice == k).nonzero().flatten()
            if rows.numel() == 0:
                continue
            hk = h[rows]
            delta_k = delta_k.index_add(0, rows, gate[rows] * self.experts_k[k](hk))
            delta_v = delta_v.index_add(0, rows, gate[rows] * self.experts_v[k](hk))
        self.last_route = {"probs": probs, "choice": choice}
        return delta_k, delta_v

    def expert_parameters(self, index: int) -> list[nn.Parameter]:
        """Parameters of expert ``index`` (its K and V adapters)."""
        return [
            *self.experts_k[index].parameters(),
            *self.experts_v[index].parameters(),
        ]

    def router_parameters(self) -> list[nn.Parameter]:
        return [*self.router_r, *self.router_n]

    def entropy(self) -> float:
        """Entropy (nats) of the batch's hard expert usage in the last forward."""
        choice = self.last_route["choice"]
        counts = torch.bincount(choice, minlength=self.num_experts).float()
        p = counts / counts.sum()
        return float(-(p[p > 0] * p[p > 0].log()).sum())


@dataclass
class _Stage:
    rho: float | None
    alpha: float


class StagedCurriculum:
    r"""Stage-by-stage trainer of PRW layers: one new expert per stage.

    :meth:`start_stage` appends an expert to every layer, freezes the earlier
    experts (``requires_grad=False``, and out of the optimizer) and builds a
    fresh optimizer over the newest expert and the routers. :meth:`step`
    adds the veteran loss to the task loss of the latest forward pass,

    .. math::

        L = L_\text{task} + \alpha\,\lvert \tilde U_t - \rho \rvert, \qquad
        \tilde U_t = \frac{1}{L_n B}\sum_{i,b} \operatorname{softmax}(w_{i,b})_{N-1},

    and logs the hard usage :math:`U_t = \frac{1}{L_n B}\sum_{i,b}
    \mathbb{1}[k_{i,b} = N-1]` (Eq. 8).

    Parameters
    ----------
    layers : sequence of PRWSourceKV
        The PRW modules of all :math:`L_n` blocks.
    optimizer : callable, default=``torch.optim.AdamW`` with ``lr``
        ``optimizer(params) -> torch.optim.Optimizer``.
    lr : float, default=1e-4
        Step size for the default optimizer.
    train_router : bool, default=True
        Train :math:`W_r, W_n` in every stage (D3).

    Notes
    -----
    [reconstruction] The veteran loss uses the *soft* usage
    :math:`\tilde U_t` (D2): the paper's hard indicator has zero gradient.
    Stage 0 (one expert) has no veteran loss (the paper's
    :math:`\rho = 1, \alpha = 0`). No replay of earlier tasks (D7).
    """

    def __init__(
        self,
        layers: Sequence[PRWSourceKV],
        *,
        optimizer: Callable | None = None,
        lr: float = 1e-4,
        train_router: bool = True,
    ):
        layers = list(layers)
        if not layers or not all(isinstance(m, PRWSourceKV) for m in layers):
            raise TypeError("layers must be a non-empty sequence of PRWSourceKV")
        counts = {m.num_experts for m in layers}
        if counts != {0}:
            raise ValueError(
                f"layers must start with 0 experts; got counts {sorted(counts)}"
            )
        self.layers = layers
        self.lr = check_finite("lr", lr, low=0.0)
        self.make_optimizer = optimizer or (
            lambda params: torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        )
        self.train_router = train_router
        self.stage = -1
        self.optimizer = None
        self._cfg = _Stage(None, 0.0)

    def start_stage(self, index: int, *, rho: float | None = None, alpha: float = 0.0):
        """Begin stage ``index`` (must be the next one: 0, 1, 2, ...)."""
        index = check_int("index", index, low=0)
        if index != self.stage + 1:
            raise ValueError(
                f"index must be the next stage {self.stage + 1} (no skips or repeats);"
                f" got {index}"
            )
        if check_finite("alpha", alpha) < 0:
            raise ValueError(f"alpha must be >= 0; got {alpha!r}")
        if rho is None and index > 0 and alpha > 0:
            raise ValueError("rho must lie in (0, 1) when alpha > 0; got None")
        if rho is not None:
            veteran_loss(torch.zeros(()), rho, alpha)  # validates rho and alpha
        for layer in self.layers:
            for k in range(layer.num_experts):
                for p in layer.expert_parameters(k):
                    p.requires_grad_(False)
            layer.add_expert()
            if layer.num_experts != index + 1:
                raise ValueError(
                    f"expert count must be stage + 1 = {index + 1}; "
                    f"got {layer.num_experts}"
                )
            for p in layer.router_parameters():
                p.requires_grad_(self.train_router)
        self.stage = index
        self._cfg = _Stage(rho, float(alpha) if index > 0 else 0.0)
        self.optimizer = self.make_optimizer(self.trainable_parameters())
        logger.info(
            "stage %d: %d trainable tensors", index, len(self.trainable_parameters())
        )
        return self.optimizer

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = []
        for layer in self.layers:
            params += layer.expert_parameters(layer.num_experts - 1)
            if self.train_router:
                params += layer.router_parameters()
        return params

    def usage(self) -> tuple[Tensor, float]:
        """Soft usage :math:`\\tilde U_t` (tensor) and hard usage :math:`U_t`."""
        newest = self.layers[0].num_experts - 1
        probs = torch.stack([m.last_route["probs"][:, newest] for m in self.layers])
        choice = torch.stack([m.last_route["choice"] for m in self.layers])
        return probs.mean(), float((choice == newest).float().mean())

    def step(self, task_loss: Tensor) -> dict[str, float]:
        """Backward of task + veteran loss and one optimizer step."""
        if self.optimizer is None:
            raise RuntimeError("call start_stage(0) before step()")
        soft, hard = self.usage()
        loss = task_loss
        vet = torch.zeros(())
        if self._cfg.alpha > 0:
            vet = veteran_loss(soft, self._cfg.rho, self._cfg.alpha)
            loss = loss + vet
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {
            "loss/task": float(task_loss.detach()),
            "loss/veteran": float(vet.detach()),
            "usage/soft": float(soft.detach()),
            "usage/hard": hard,
        }
