r"""Linear self-attention, the bilinear GLU feed-forward layer, and their blocks.

Tokens are rows: a prompt is a tensor of shape (batch, n + 1, D) whose last
row is the query (see :mod:`lemmata.nn.icl._prompts`).
"""

from __future__ import annotations

import torch
from torch import nn

from lemmata.nn._checks import check_finite, check_int, check_shape
from lemmata.nn.icl._prompts import PromptLayout

__all__ = ["GLUFeedForward", "ICLBlock", "ICLTransformer", "LinearSelfAttention"]


def _to_features(z: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, D) -> feature-major (D, batch, tokens), contiguous."""
    return z.permute(2, 0, 1).contiguous()


def _to_rows(zf: torch.Tensor) -> torch.Tensor:
    """Feature-major (D, batch, tokens) -> (batch, tokens, D)."""
    return zf.permute(1, 2, 0)


def _check_tokens(z: torch.Tensor, embed_dim: int) -> int:
    """Validate a (batch, tokens, embed_dim) input; return n = tokens - 1."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor; got {type(z).__name__}")
    check_shape("z", z.shape, ("batch", "tokens", embed_dim))
    n = z.shape[1] - 1
    if n < 1:
        raise ValueError(f"prompt length n (tokens - 1) must be >= 1; got {n}")
    return n


class LinearSelfAttention(nn.Module):
    r"""Linear self-attention over the context tokens, with a residual.

    .. math::

        \operatorname{LSA}(Z) = Z + \frac{1}{n}\, W^{PV} Z M Z^\top W^{KQ} Z,
        \qquad M = \operatorname{diag}(I_n, 0)

    in the column convention of [2]; here tokens are rows, so for every token
    :math:`z_j` (context and query)

    .. math::

        z_j \leftarrow z_j + \frac{1}{n} W^{PV} S\, W^{KQ} z_j,
        \qquad S = \sum_{i=1}^{n} z_i z_i^\top .

    :math:`W^{PV}` is ``w_pv`` and :math:`W^{KQ}` is ``w_kq`` (both
    D x D), :math:`n` is the number of tokens minus one (the last token is
    the query, which is not attended to).

    Parameters
    ----------
    embed_dim : int
        Token width D, >= 2.
    init_std : float, default=0.02
        Standard deviation of the Gaussian initialisation, > 0.

    Notes
    -----
    No softmax and no scaling besides :math:`1/n`. Both matrices are full, as
    in the general LSA class; the parameterisation that only keeps the blocks
    used by the gradient-descent construction is not provided. At zero
    initialisation both gradients vanish (the layer is bilinear in its
    weights), hence the small random start.

    References
    ----------
    .. [1] Sun, Jadbabaie, Azizan. "On the Role of Transformer Feed-Forward
       Layers in Nonlinear In-Context Learning." arXiv:2501.18187.
    .. [2] von Oswald et al. "Transformers learn in-context by gradient
       descent." arXiv:2212.07677.
    .. [3] Ahn et al. "Transformers learn to implement preconditioned gradient
       descent for in-context learning." arXiv:2306.00297.
    """

    def __init__(self, embed_dim: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        self.embed_dim = check_int("embed_dim", embed_dim, low=2)
        std = check_finite("init_std", init_std, low=0.0)
        self.w_kq = nn.Parameter(std * torch.randn(embed_dim, embed_dim))
        self.w_pv = nn.Parameter(std * torch.randn(embed_dim, embed_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_tokens(z, self.embed_dim)
        return _to_rows(self.forward_features(_to_features(z)))

    def forward_features(self, zf: torch.Tensor) -> torch.Tensor:
        """The same map on a feature-major tensor of shape (D, batch, tokens)."""
        dim, batch, tokens = zf.shape
        context = zf[:, :, :-1]  # (D, B, n)
        s = torch.einsum("dbi,ebi->bde", context, context)  # (B, D, D)
        q = (self.w_kq @ zf.reshape(dim, -1)).reshape(dim, batch, tokens)
        sq = torch.einsum("bde,ebj->dbj", s, q)
        update = self.w_pv @ sq.reshape(dim, -1)
        return zf + update.reshape(dim, batch, tokens) / (tokens - 1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}"


def _coordinate_range(name: str, value, embed_dim: int) -> tuple[int, int]:
    """``value`` as a (start, stop) range of token coordinates; None is all."""
    if value is None:
        return 0, embed_dim
    try:
        start, stop = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a (start, stop) pair of ints; got {value!r}"
        ) from None
    if not 0 <= start < stop <= embed_dim:
        raise ValueError(
            f"{name} must satisfy 0 <= start < stop <= embed_dim ({embed_dim}); "
            f"got {(start, stop)}"
        )
    return start, stop


class GLUFeedForward(nn.Module):
    r"""Bilinear gated feed-forward layer, per token, with a residual.

    .. math::

        z_{W} \leftarrow z_{W} + W_3\bigl((W_1 z_R) \odot (W_2 z_R)\bigr)

    :math:`z_R` are the token coordinates in ``read`` and :math:`z_W` those
    in ``write`` (all D by default); :math:`W_1, W_2` (m x |R|) are ``w1``
    and ``w2``, :math:`W_3` (|W| x m) is ``w3`` and :math:`m` is
    ``hidden_dim``. With a constant 1 among the read coordinates, each hidden
    unit is a product of two affine functions of the token: the layer can
    write up to :math:`m` quadratic features (e.g. :math:`x_j x_k`).

    Parameters
    ----------
    embed_dim : int
        Token width D, >= 1.
    hidden_dim : int
        Width m, >= 1.
    read, write : (int, int), optional
        Ranges ``[start, stop)`` of the coordinates the gates read and the
        output writes; default all.
    init_std : float, optional
        Standard deviation of the Gaussian initialisation, > 0. Default
        :math:`1/\sqrt{\text{fan-in}}` per matrix (:math:`1/\sqrt{|R|}` for
        :math:`W_1, W_2`, :math:`1/\sqrt{m}` for :math:`W_3`).

    Notes
    -----
    [reconstruction] A GLU with the identity as its gate activation and no
    biases (the "bilinear" variant of the paper's analysis, as we read its
    summary). ``read`` and ``write`` are our addition; :class:`ICLTransformer`
    uses them to keep the label out of the gates and the output in the
    feature coordinates (see its Notes).

    References
    ----------
    .. [1] Sun, Jadbabaie, Azizan. "On the Role of Transformer Feed-Forward
       Layers in Nonlinear In-Context Learning." arXiv:2501.18187.
    """

    def __init__(
        self,
        embed_dim: int,
        hidden_dim: int,
        *,
        read: tuple[int, int] | None = None,
        write: tuple[int, int] | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = check_int("embed_dim", embed_dim, low=1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, low=1)
        self.read = _coordinate_range("read", read, embed_dim)
        self.write = _coordinate_range("write", write, embed_dim)
        if init_std is not None:
            init_std = check_finite("init_std", init_std, low=0.0)
        n_read = self.read[1] - self.read[0]
        n_write = self.write[1] - self.write[0]
        gate_std = init_std or n_read**-0.5
        out_std = init_std or hidden_dim**-0.5
        self.w1 = nn.Parameter(gate_std * torch.randn(hidden_dim, n_read))
        self.w2 = nn.Parameter(gate_std * torch.randn(hidden_dim, n_read))
        self.w3 = nn.Parameter(out_std * torch.randn(n_write, hidden_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor; got {type(z).__name__}")
        if z.ndim < 1 or z.shape[-1] != self.embed_dim:
            raise ValueError(
                f"z must have shape (..., {self.embed_dim}); got {tuple(z.shape)}"
            )
        flat = z.reshape(-1, self.embed_dim).T
        return self._glu(flat).T.reshape(z.shape)

    def forward_features(self, zf: torch.Tensor) -> torch.Tensor:
        """The same map on a feature-major tensor of shape (D, batch, tokens)."""
        return self._glu(zf.reshape(self.embed_dim, -1)).reshape(zf.shape)

    def _glu(self, flat: torch.Tensor) -> torch.Tensor:
        # Feature-major (D, tokens) products: MKL is several times faster on
        # W @ Z with a long last axis than on Z @ W.T with D ~ 10.
        gates = flat[self.read[0] : self.read[1]]
        update = self.w3 @ ((self.w1 @ gates) * (self.w2 @ gates))
        start, stop = self.write
        return torch.cat([flat[:start], flat[start:stop] + update, flat[stop:]])

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, hidden_dim={self.hidden_dim}, "
            f"read={self.read}, write={self.write}"
        )


class ICLBlock(nn.Module):
    r"""One block: GLU feed-forward, then linear self-attention.

    .. math::

        Z \leftarrow \operatorname{LSA}\bigl(\operatorname{FF}(Z)\bigr)

    Parameters
    ----------
    embed_dim : int
        Token width D.
    ff_width : int or None, default=None
        Hidden width m of the GLU layer; ``None`` gives an attention-only
        block.
    ff_read, ff_write : (int, int), optional
        Coordinate ranges the GLU reads and writes (see
        :class:`GLUFeedForward`); default all.
    init_std : float, default=0.02
        Initial standard deviation of the attention weights.
    ff_init_std : float, optional
        Initial standard deviation of the GLU weights; default fan-in scaled.

    Notes
    -----
    The feed-forward layer comes first so that the features exist before
    the attention's gradient-descent step reads them (the order in the
    paper's construction, as we reconstruct it). No layer norm.

    References
    ----------
    .. [1] Sun, Jadbabaie, Azizan. "On the Role of Transformer Feed-Forward
       Layers in Nonlinear In-Context Learning." arXiv:2501.18187.
    """

    def __init__(
        self,
        embed_dim: int,
        ff_width: int | None = None,
        *,
        ff_read: tuple[int, int] | None = None,
        ff_write: tuple[int, int] | None = None,
        init_std: float = 0.02,
        ff_init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.ff = None
        if ff_width is not None:
            self.ff = GLUFeedForward(
                embed_dim,
                ff_width,
                read=ff_read,
                write=ff_write,
                init_std=ff_init_std,
            )
        self.attn = LinearSelfAttention(embed_dim, init_std=init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_tokens(z, self.attn.embed_dim)
        return _to_rows(self.forward_features(_to_features(z)))

    def forward_features(self, zf: torch.Tensor) -> torch.Tensor:
        """The same map on a feature-major tensor of shape (D, batch, tokens)."""
        if self.ff is not None:
            zf = self.ff.forward_features(zf)
        return self.attn.forward_features(zf)


class ICLTransformer(nn.Module):
    r"""A stack of blocks that reads its prediction from the query's y-slot.

    .. math::

        \hat y_q = -\bigl[\operatorname{Block}_L \circ \cdots \circ
        \operatorname{Block}_1(Z)\bigr]_{n+1,\,D}

    Parameters
    ----------
    d : int
        Input dimension, >= 1.
    n_blocks : int, default=1
        Number of blocks L, >= 1.
    ff_width : int or None, default=None
        GLU width m of every block; ``None`` for attention only.
    pad : int or None, default=None
        Feature coordinates in each token; default ``ff_width`` (0 without a
        feed-forward layer). Must be >= ``ff_width``.
    constant : bool, default=True
        Whether tokens carry a constant 1 (see :class:`PromptLayout`).
    ff_coordinates : {"features", "all"}, default="features"
        ``"features"``: the GLU reads every coordinate but the y-slot and
        writes only the ``pad`` feature coordinates. ``"all"``: it reads and
        writes the whole token (the unconstrained layer).
    init_std : float, default=0.02
        Initial standard deviation of the attention weights.
    ff_init_std : float, optional
        Initial standard deviation of the GLU weights; default fan-in scaled.
    check_query : bool, default=True
        Raise when a prompt's query y-slot is not 0 (target leakage).

    Attributes
    ----------
    layout : PromptLayout
        Use it to build prompts: ``batch.prompt(model.layout)``.

    Notes
    -----
    The prediction is the query's y-slot with its sign flipped, the
    convention of [2]: a block that implements a gradient step writes
    :math:`-\hat y` into every token's y-slot, so the context slots hold the
    residuals :math:`y_i - \hat y(x_i)` that the next block's step fits
    (block-coordinate descent). With one block the sign is immaterial.

    [reconstruction] By default (``ff_coordinates="features"``) the GLU
    reads :math:`[x; 1; \text{features}]` and writes into the feature
    coordinates only, the roles it has in the kernel construction: features
    depend on the input alone (the context tokens and the query, whose
    y-slot is 0, get the same feature map) and leave :math:`x`, the constant
    and :math:`y` in place. Both restrictions are within the unconstrained
    class (``"all"``), which can express the same maps. In our CPU-scale
    training (Adam, d = 2, n = 20, quadratic tasks, 3k steps) the
    unconstrained layer stalled between the linear and the kernel risk (0.50
    to 0.68, against 0.41 for one kernel gradient step and 0.75 for the best
    linear step, on the same test prompts), while the default reached 0.41.
    Widths, padding and depth are our choices; the paper's are not available
    to us.

    References
    ----------
    .. [1] Sun, Jadbabaie, Azizan. "On the Role of Transformer Feed-Forward
       Layers in Nonlinear In-Context Learning." arXiv:2501.18187.
    .. [2] von Oswald et al. "Transformers learn in-context by gradient
       descent." arXiv:2212.07677.
    .. [3] Ahn et al. "Transformers learn to implement preconditioned gradient
       descent for in-context learning." arXiv:2306.00297.
    """

    def __init__(
        self,
        d: int,
        *,
        n_blocks: int = 1,
        ff_width: int | None = None,
        pad: int | None = None,
        constant: bool = True,
        ff_coordinates: str = "features",
        init_std: float = 0.02,
        ff_init_std: float | None = None,
        check_query: bool = True,
    ) -> None:
        super().__init__()
        n_blocks = check_int("n_blocks", n_blocks, low=1)
        if ff_width is not None:
            ff_width = check_int("ff_width", ff_width, low=1)
        needed = ff_width or 0
        pad = needed if pad is None else check_int("pad", pad, low=0)
        if pad < needed:
            raise ValueError(
                f"pad must be >= ff_width ({needed}) to hold the features the "
                f"feed-forward layer writes; got {pad}"
            )
        if ff_coordinates not in ("features", "all"):
            raise ValueError(
                "ff_coordinates must be one of ['features', 'all']; "
                f"got {ff_coordinates!r}"
            )
        self.layout = PromptLayout(d, pad=pad, constant=constant)
        self.check_query = bool(check_query)
        embed_dim = self.layout.embed_dim
        read = write = None
        if ff_coordinates == "features" and ff_width is not None:
            pad_slice = self.layout.pad_slice
            read, write = (0, embed_dim - 1), (pad_slice.start, pad_slice.stop)
        self.blocks = nn.ModuleList(
            ICLBlock(
                embed_dim,
                ff_width,
                ff_read=read,
                ff_write=write,
                init_std=init_std,
                ff_init_std=ff_init_std,
            )
            for _ in range(n_blocks)
        )

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        """Predictions for the queries, shape (batch,)."""
        _check_tokens(prompt, self.layout.embed_dim)
        if self.check_query:
            leak = prompt[:, -1, -1].abs().max()
            if leak != 0:
                raise ValueError(
                    "prompt's query y-slot must be 0 (the target would leak into "
                    f"the prediction); got max |value| {float(leak):.3g}"
                )
        zf = _to_features(prompt)
        for block in self.blocks:
            zf = block.forward_features(zf)
        return -zf[-1, :, -1]
