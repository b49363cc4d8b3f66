r"""Random regression tasks for in-context learning: linear, quadratic, cubic.

Each sampler draws, per prompt, a task :math:`f` and :math:`n + 1` inputs
:math:`x_i \sim \mathcal N(0, I_d)`; the targets are
:math:`y_i = f(x_i) + \sigma \xi_i` with :math:`\xi_i \sim \mathcal N(0, 1)`.
Every family is scaled so that :math:`\operatorname{Var}(y) = 1 + \sigma^2`
at every :math:`d` (risks are comparable across :math:`d` and families).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lemmata.nn._checks import check_finite, check_int
from lemmata.nn.icl._prompts import PromptLayout, build_prompt

__all__ = ["CubicTasks", "LinearTasks", "QuadraticTasks", "TaskBatch", "TaskSampler"]


@dataclass
class TaskBatch:
    """Prompts drawn from a task sampler.

    Attributes
    ----------
    x : Tensor of shape (batch, n + 1, d)
        Inputs; the last row of each prompt is the query.
    y : Tensor of shape (batch, n + 1)
        Noisy targets; ``y[:, -1]`` is the query target the model must predict
        (it is never put into the prompt).
    params : dict of str to Tensor
        The task parameters (``"w"``, ``"B"``, ``"c"``), batched.
    """

    x: torch.Tensor
    y: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Prompt length: the number of context pairs."""
        return self.x.shape[1] - 1

    @property
    def query_target(self) -> torch.Tensor:
        """``y[:, -1]``, shape (batch,)."""
        return self.y[:, -1]

    def prompt(self, layout: PromptLayout) -> torch.Tensor:
        """The prompt matrix of :func:`build_prompt` for ``layout``."""
        return build_prompt(
            self.x[:, :-1], self.y[:, :-1], self.x[:, -1], layout=layout
        )


class TaskSampler:
    """Base class: draws task parameters, inputs and targets.

    Parameters
    ----------
    d : int
        Input dimension, >= 1.
    noise : float, default=0.1
        Target noise standard deviation :math:`\\sigma`, >= 0.
    """

    kind = "base"

    def __init__(self, d: int, noise: float = 0.1) -> None:
        self.d = check_int("d", d, low=1)
        self.noise = check_finite("noise", noise)
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0; got {noise!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, noise={self.noise})"

    def draw_params(self, batch: int, generator=None, dtype=torch.float32) -> dict:
        raise NotImplementedError

    def evaluate(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Noiseless :math:`f(x)` for inputs ``x`` of shape (batch, k, d)."""
        raise NotImplementedError

    def best_linear(self, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Intercept (batch,) and slope (batch, d) of the best linear predictor.

        The population least-squares fit :math:`a + b^\\top x` of each task
        under :math:`x \\sim \\mathcal N(0, I_d)`, in closed form: no predictor
        that is linear in the query beats it on that task.
        """
        raise NotImplementedError

    def sample(
        self,
        batch: int,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TaskBatch:
        """``batch`` prompts of ``n`` context pairs plus one query.

        Parameters
        ----------
        batch : int
            Number of prompts (one fresh task each), >= 1.
        n : int
            Prompt length, >= 1.
        generator : torch.Generator, optional
            Source of randomness; default torch's global generator.
        dtype : torch.dtype, default=torch.float32
        """
        batch = check_int("batch", batch, low=1)
        n = check_int("prompt length n", n, low=1)
        params = self.draw_params(batch, generator, dtype)
        x = torch.randn(batch, n + 1, self.d, generator=generator, dtype=dtype)
        noise = torch.randn(batch, n + 1, generator=generator, dtype=dtype)
        y = self.evaluate(x, params) + self.noise * noise
        return TaskBatch(x=x, y=y, params=params)

    def _check_params(self, params: dict, shapes: dict) -> None:
        for key, tail in shapes.items():
            if key not in params:
                raise ValueError(
                    f"params must hold {sorted(shapes)}; got {sorted(params)}"
                )
            value = params[key]
            if tuple(value.shape[1:]) != tail:
                raise ValueError(
                    f"params[{key!r}] must have shape (batch, "
                    f"{', '.join(map(str, tail))}); got {tuple(value.shape)}"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"params[{key!r}] must be finite")


def _normal(shape, std, generator, dtype):
    return std * torch.randn(*shape, generator=generator, dtype=dtype)


class LinearTasks(TaskSampler):
    r"""Linear tasks :math:`f(x) = w^\top x`, :math:`w \sim \mathcal N(0, I/d)`."""

    kind = "linear"

    def draw_params(self, batch, generator=None, dtype=torch.float32):
        return {"w": _normal((batch, self.d), self.d**-0.5, generator, dtype)}

    def evaluate(self, x, params):
        self._check_params(params, {"w": (self.d,)})
        return torch.einsum("bkd,bd->bk", x, params["w"])

    def best_linear(self, params):
        return torch.zeros_like(params["w"][:, 0]), params["w"]


class QuadraticTasks(TaskSampler):
    r"""Quadratic tasks :math:`f(x) = (x^\top B x + w^\top x)/\sqrt{d + 3}`.

    :math:`B = (G + G^\top)/2` with :math:`G_{jk} \sim \mathcal N(0, 1/d)` and
    :math:`w \sim \mathcal N(0, I/d)`. Over tasks and inputs
    :math:`\operatorname{E}[(x^\top B x)^2] = d + 2` and
    :math:`\operatorname{E}[(w^\top x)^2] = 1`, hence the scale.

    Notes
    -----
    [reconstruction] arXiv:2501.18187's task distribution is not available to
    us; this is the natural quadratic extension of random linear tasks. The
    best linear predictor is :math:`(\operatorname{tr} B + w^\top x)/\sqrt{d+3}`
    with risk :math:`(d + 1)/(d + 3) + \sigma^2`.
    """

    kind = "quadratic"

    def draw_params(self, batch, generator=None, dtype=torch.float32):
        g = _normal((batch, self.d, self.d), self.d**-0.5, generator, dtype)
        w = _normal((batch, self.d), self.d**-0.5, generator, dtype)
        return {"B": 0.5 * (g + g.transpose(1, 2)), "w": w}

    def evaluate(self, x, params):
        self._check_params(params, {"B": (self.d, self.d), "w": (self.d,)})
        quad = torch.einsum("bkd,bde,bke->bk", x, params["B"], x)
        lin = torch.einsum("bkd,bd->bk", x, params["w"])
        return (quad + lin) / math.sqrt(self.d + 3)

    def best_linear(self, params):
        scale = math.sqrt(self.d + 3)
        trace = torch.diagonal(params["B"], dim1=1, dim2=2).sum(-1)
        return trace / scale, params["w"] / scale


class CubicTasks(TaskSampler):
    r"""Cubic tasks :math:`f(x) = \sum_{jkl} c_{jkl}\, x_j x_k x_l`.

    :math:`c_{jkl} \sim \mathcal N(0, s^2)` independently, with
    :math:`s^2 = 1/(d(d+2)(d+4))`, since
    :math:`\operatorname{E}_c f(x)^2 = s^2 \|x\|^6` and
    :math:`\operatorname{E}\|x\|^6 = d(d+2)(d+4)`.

    Notes
    -----
    [reconstruction] The paper's cubic distribution is not available to us.
    Under Gaussian inputs a cubic has a linear part,
    :math:`\operatorname{E}[x_m f(x)] = \sum_k (c_{mkk} + c_{kmk} + c_{kkm})`,
    which :meth:`best_linear` returns; its quadratic part is zero.
    """

    kind = "cubic"

    def draw_params(self, batch, generator=None, dtype=torch.float32):
        std = (self.d * (self.d + 2) * (self.d + 4)) ** -0.5
        return {"c": _normal((batch, self.d, self.d, self.d), std, generator, dtype)}

    def evaluate(self, x, params):
        d = self.d
        self._check_params(params, {"c": (d, d, d)})
        return torch.einsum("bkj,bkl,bkm,bjlm->bk", x, x, x, params["c"])

    def best_linear(self, params):
        c = params["c"]
        slope = (
            torch.einsum("bmkk->bm", c)
            + torch.einsum("bkmk->bm", c)
            + torch.einsum("bkkm->bm", c)
        )
        return torch.zeros_like(slope[:, 0]), slope
