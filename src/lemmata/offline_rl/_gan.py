"""State GAN and the discriminator-based weights of simulated transitions."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StateGAN", "discriminator_weights", "fit_discriminator"]

_LOG = logging.getLogger(__name__)


def _mlp(n_in: int, n_out: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.LeakyReLU(0.2)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def discriminator_weights(
    logits: np.ndarray,
    w_max: float = 10.0,
    w_min: float = math.exp(-5.0),
    normalize: bool = True,
) -> np.ndarray:
    r"""Transition weights from discriminator logits.

    .. math::

        \tilde w_i = \exp\bigl(\operatorname{clip}(\ell_i, \log w_{min},
        \log w_{max})\bigr), \qquad
        w_i = \tilde w_i \Big/ \tfrac{1}{n}\textstyle\sum_j \tilde w_j

    :math:`\ell_i` is ``logits[i]`` (the discriminator's logit, so
    :math:`e^{\ell} = D/(1-D)`, the density ratio
    :math:`d_{offline}/d_{G}` for an optimal discriminator),
    :math:`w_{min}, w_{max}` are ``w_min``, ``w_max``; the normalisation to
    mean 1 is skipped when ``normalize`` is False.

    Notes
    -----
    [reconstruction] ORIS reweights simulated data "using the discriminator"
    without a published formula; this density-ratio reading is ours. The ratio
    is computed from the logit, never as D/(1-D), so a saturated
    discriminator gives the clip bounds, not 0 or inf.
    """
    if not (0 < w_min < w_max and math.isfinite(w_max)):
        raise ValueError(
            "the clip range [w_min, w_max] must satisfy 0 < w_min < w_max < inf; "
            f"got [{w_min}, {w_max}]"
        )
    ell = np.asarray(logits, dtype=np.float64).reshape(-1)
    if ell.size == 0 or not np.all(np.isfinite(ell)):
        raise ValueError("logits must be a non-empty array of finite values")
    w = np.exp(np.clip(ell, math.log(w_min), math.log(w_max)))
    if not np.any(w > 0):  # unreachable with w_min > 0; kept as a guard
        raise ValueError("all weights are zero after clipping")
    return w / w.mean() if normalize else w


class StateGAN:
    r"""A GAN on standardised states: generator restarts, discriminator weights.

    .. math::

        \min_G \max_D\;
        \mathbb{E}_{s\sim d_{offline}}[\log D(s)]
        + \mathbb{E}_{z\sim N(0,I)}[\log(1 - D(G(z)))]

    with the non-saturating generator loss
    :math:`-\mathbb{E}_z[\log D(G(z))]`. States are standardised with the
    training set's mean and standard deviation; :meth:`sample` returns raw
    states.

    Parameters
    ----------
    obs_dim : int
        State size.
    latent_dim : int, default=8
        Size of :math:`z`.
    hidden : tuple of int, default=(64, 64)
        Hidden widths of both networks (LeakyReLU 0.2).
    lr : float, default=1e-3
        Adam step size (betas 0.5, 0.999) of both networks.

    Notes
    -----
    [reconstruction] The paper gives no architecture; these are common small
    GAN defaults. On Pendulum's 4,000 states, 2x64 networks with step 1e-3
    put 96% of the samples within 0.1 of the unit circle after 2,000 steps,
    against 77% for 2x128 with step 2e-4 (the project's first guess). The
    discriminator is frozen after pre-training, as in the
    abstract ("pre-train a GAN").
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 8,
        hidden: tuple[int, ...] = (64, 64),
        lr: float = 1e-3,
    ) -> None:
        if obs_dim < 1 or latent_dim < 1:
            raise ValueError(
                f"obs_dim and latent_dim must be >= 1; got {obs_dim}, {latent_dim}"
            )
        self.obs_dim, self.latent_dim = obs_dim, latent_dim
        self.generator = _mlp(latent_dim, obs_dim, hidden)
        self.discriminator = _mlp(obs_dim, 1, hidden)
        self._g_opt = torch.optim.Adam(
            self.generator.parameters(), lr=lr, betas=(0.5, 0.999)
        )
        self._d_opt = torch.optim.Adam(
            self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)
        )
        self.mean = np.zeros(obs_dim)
        self.std = np.ones(obs_dim)

    def fit(
        self,
        states: np.ndarray,
        steps: int,
        rng: np.random.Generator,
        batch_size: int = 256,
    ) -> StateGAN:
        """Alternate one discriminator and one generator step ``steps`` times."""
        x = np.asarray(states, dtype=np.float64).reshape(-1, self.obs_dim)
        if len(x) == 0 or not np.all(np.isfinite(x)):
            raise ValueError("states must be a non-empty array of finite values")
        self.mean, self.std = x.mean(0), np.maximum(x.std(0), 1e-6)
        real_all = torch.as_tensor((x - self.mean) / self.std, dtype=torch.float32)
        for _ in range(steps):
            real = real_all[torch.from_numpy(rng.integers(len(x), size=batch_size))]
            fake = self.generator(self._latent(batch_size, rng))
            d_real = self.discriminator(real)
            d_fake = self.discriminator(fake.detach())
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            self._d_opt.zero_grad()
            loss_d.backward()
            self._d_opt.step()
            loss_g = F.softplus(-self.discriminator(fake)).mean()
            self._g_opt.zero_grad()
            loss_g.backward()
            self._g_opt.step()
        _LOG.debug("GAN fitted: loss_d %.3f loss_g %.3f", loss_d.item(), loss_g.item())
        return self

    def _latent(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.as_tensor(
            rng.standard_normal((n, self.latent_dim)), dtype=torch.float32
        )

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` generated states in raw (unstandardised) units."""
        with torch.no_grad():
            z = self.generator(self._latent(n, rng)).numpy().astype(np.float64)
        return z * self.std + self.mean

    def logits(self, states: np.ndarray) -> np.ndarray:
        """Discriminator logits of raw states (large means offline-like)."""
        x = np.asarray(states, dtype=np.float64).reshape(-1, self.obs_dim) - self.mean
        x = torch.as_tensor(x / self.std, dtype=torch.float32)
        with torch.no_grad():
            return self.discriminator(x).squeeze(1).numpy().astype(np.float64)

    def weights(
        self,
        states: np.ndarray,
        w_max: float = 10.0,
        w_min: float = math.exp(-5.0),
        normalize: bool = True,
    ) -> np.ndarray:
        """:func:`discriminator_weights` of ``states``' logits."""
        return discriminator_weights(
            self.logits(states), w_max=w_max, w_min=w_min, normalize=normalize
        )


def fit_discriminator(
    real: np.ndarray,
    fake: np.ndarray,
    steps: int,
    rng: np.random.Generator,
    hidden: tuple[int, ...] = (64, 64),
    lr: float = 1e-3,
    batch_size: int = 256,
) -> nn.Module:
    r"""Train a logistic classifier :math:`D = \sigma(\ell(x))`, real = 1, fake = 0.

    With balanced classes the optimal logit is :math:`\log d_{real}/d_{fake}`,
    which :func:`discriminator_weights` turns into a density ratio. Returns
    the logit network (input and output float32 tensors).
    """
    r = torch.as_tensor(np.asarray(real, dtype=np.float64), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(fake, dtype=np.float64), dtype=torch.float32)
    r, f = r.reshape(len(r), -1), f.reshape(len(f), -1)
    net = _mlp(r.shape[1], 1, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        rb = r[torch.from_numpy(rng.integers(len(r), size=batch_size))]
        fb = f[torch.from_numpy(rng.integers(len(f), size=batch_size))]
        loss = F.softplus(-net(rb)).mean() + F.softplus(net(fb)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net
