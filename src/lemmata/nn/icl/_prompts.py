r"""Prompt matrices for in-context regression.

A prompt of :math:`n` pairs and a query is the token sequence

.. math::

    Z = \begin{bmatrix} z_1 & \cdots & z_n & z_q \end{bmatrix}^\top,
    \qquad z_i = [x_i;\ 1;\ 0_{p};\ y_i],
    \qquad z_q = [x_q;\ 1;\ 0_{p};\ 0],

stored row-wise as a tensor of shape (batch, n + 1, d + 1 + p + 1). The
:math:`p` zero coordinates are room for the features a feed-forward layer
writes; the query's last coordinate (its *y-slot*) is 0 and is where a model
writes its prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lemmata.nn._checks import check_int, check_shape

__all__ = ["PromptLayout", "build_prompt"]


@dataclass(frozen=True)
class PromptLayout:
    """Where each quantity sits in a token.

    Parameters
    ----------
    d : int
        Input dimension, >= 1.
    pad : int, default=0
        Zero coordinates reserved for features, >= 0.
    constant : bool, default=True
        Whether tokens carry a constant 1 after ``x`` (lets a linear readout
        have an intercept).

    Notes
    -----
    [reconstruction] The constant coordinate is our addition to the
    :math:`[x; y]` tokens of the LSA literature. Without it a linear
    attention layer has no intercept and the "no better than linear" barrier
    would hold for a trivial reason; with it, the layer can reach the best
    linear predictor's intercept :math:`\\operatorname{E}[y]`.
    """

    d: int
    pad: int = 0
    constant: bool = True

    def __post_init__(self) -> None:
        check_int("d", self.d, low=1)
        check_int("pad", self.pad, low=0)
        if not isinstance(self.constant, bool):
            raise TypeError(
                f"constant must be a bool; got {type(self.constant).__name__}"
            )

    @property
    def embed_dim(self) -> int:
        """Token width: d + constant + pad + 1."""
        return self.d + int(self.constant) + self.pad + 1

    @property
    def x_slice(self) -> slice:
        return slice(0, self.d)

    @property
    def pad_slice(self) -> slice:
        start = self.d + int(self.constant)
        return slice(start, start + self.pad)

    @property
    def y_index(self) -> int:
        return self.embed_dim - 1


def build_prompt(
    x_context: torch.Tensor,
    y_context: torch.Tensor,
    x_query: torch.Tensor,
    *,
    layout: PromptLayout | None = None,
) -> torch.Tensor:
    """Stack context pairs and a query into prompt tokens.

    Parameters
    ----------
    x_context : Tensor of shape (batch, n, d)
        Context inputs; n >= 1.
    y_context : Tensor of shape (batch, n)
        Context targets.
    x_query : Tensor of shape (batch, d)
        Query inputs.
    layout : PromptLayout, optional
        Token layout; default ``PromptLayout(d)`` (constant, no padding).

    Returns
    -------
    Tensor of shape (batch, n + 1, layout.embed_dim)
        Rows :math:`z_1, \\ldots, z_n, z_q`; the query's y-slot is 0.
    """
    for name, value in (
        ("x_context", x_context),
        ("y_context", y_context),
        ("x_query", x_query),
    ):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor; got {type(value).__name__}"
            )
    if x_context.ndim != 3:
        raise ValueError(
            f"x_context must have shape (batch, n, d); got {tuple(x_context.shape)}"
        )
    batch, n, d = x_context.shape
    if n < 1:
        raise ValueError(f"prompt length n must be >= 1; got {n}")
    layout = PromptLayout(d) if layout is None else layout
    if layout.d != d:
        raise ValueError(f"x_context must have d={layout.d} features; got {d}")
    check_shape("y_context", y_context.shape, (batch, n))
    check_shape("x_query", x_query.shape, (batch, d))

    tokens = x_context.new_zeros(batch, n + 1, layout.embed_dim)
    tokens[:, :n, layout.x_slice] = x_context
    tokens[:, n, layout.x_slice] = x_query
    if layout.constant:
        tokens[:, :, d] = 1.0
    tokens[:, :n, layout.y_index] = y_context
    return tokens
