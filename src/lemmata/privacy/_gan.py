"""A small DP-GAN for tabular data: the discriminator is trained with DP-SGD."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from lemmata.privacy._accounting import DEFAULT_ORDERS, Spend, rdp_to_epsilon
from lemmata.privacy._base import BaseSynthesizer
from lemmata.privacy._checks import check_int, check_positive
from lemmata.privacy._domain import Domain

__all__ = ["DPGANSynthesizer", "calibrate_noise", "subsampled_gaussian_rdp"]

logger = logging.getLogger(__name__)


def subsampled_gaussian_rdp(q: float, noise_multiplier: float, steps: int):
    """RDP curve on :data:`DEFAULT_ORDERS` of ``steps`` Poisson-subsampled
    Gaussian steps with rate ``q`` (computed by opacus' RDP analysis)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    return np.asarray(
        compute_rdp(
            q=q, noise_multiplier=noise_multiplier, steps=steps, orders=DEFAULT_ORDERS
        ),
        dtype=float,
    )


def calibrate_noise(
    epsilon: float,
    delta: float,
    q: float,
    steps: int,
    *,
    low: float = 0.7,
    high: float = 1e3,
) -> float:
    r"""The smallest noise multiplier in ``[low, high]`` whose ``steps``
    subsampled Gaussian steps meet :math:`(\varepsilon, \delta)`, by bisection
    to relative 1e-3.

    Returns ``low`` when it already meets the budget (the run then spends less
    than allowed) and ``inf`` when even ``high`` does not.
    """

    def eps_of(sigma: float) -> float:
        return rdp_to_epsilon(
            DEFAULT_ORDERS, subsampled_gaussian_rdp(q, sigma, steps), delta
        )[0]

    if eps_of(high) > epsilon:
        return math.inf
    if eps_of(low) <= epsilon:
        return low
    while high / low > 1 + 1e-3:
        mid = math.sqrt(low * high)
        if eps_of(mid) <= epsilon:
            high = mid
        else:
            low = mid
    return high


class DPGANSynthesizer(BaseSynthesizer):
    r"""A GAN on one-hot rows whose discriminator is trained with DP-SGD.

    The generator :math:`G` maps :math:`z \sim \mathcal N(0, I)` through an MLP
    to one softmax block per column. The discriminator :math:`D` is an MLP
    trained on real rows (Poisson-sampled with rate :math:`q = B/n`) and as many
    generated rows, with the binary cross-entropy loss, by DP-SGD: per-example
    gradients clipped to norm :math:`C`, then Gaussian noise of standard
    deviation :math:`\sigma C` added to their sum (opacus ``DPOptimizer``).
    :math:`G` is trained to make :math:`D` call its rows real; it only sees
    :math:`D`, so it is private by post-processing.

    The noise multiplier :math:`\sigma` is the smallest for which
    ``compositions`` runs of ``steps`` steps compose, through the RDP accountant,
    to ``(epsilon, delta)``.

    Parameters
    ----------
    domain : Domain
        The public domain of every column (the target included).
    steps : int, default=300
        DP-SGD steps :math:`T` on the discriminator (one generator step each).
    batch_size : int, default=256
        Expected real batch :math:`B`.
    hidden : int, default=128
        Width of the two hidden layers of both networks.
    latent_dim : int, default=32
        Dimension of :math:`z`.
    max_grad_norm : float, default=1.0
        The clipping norm :math:`C`.
    lr : float, default=1e-3
        Adam step size of both networks.
    tau : float, default=0.2
        Temperature of the Gumbel-softmax that relaxes generated one-hot rows.
    max_noise_multiplier : float, default=50.0
        Refuse budgets that need more noise than this (the discriminator would
        learn nothing).
    rng : numpy.random.Generator, optional
        The source of all randomness (torch generators are seeded from it).

    Notes
    -----
    [reconstruction] The paper's GAN mechanisms are not specified here; this is
    a small DP-GAN in the style of Xie et al. (arXiv:1802.06739). Numeric
    columns are binned by the domain and one-hot encoded like categorical ones,
    instead of min-max scaled. Only the real half of each discriminator step is
    clipped per row and noised; the generated half depends on the data only
    through earlier noisy steps (post-processing), so its gradient is added
    exactly. Generated
    rows are relaxed with the Gumbel-softmax (as in CTGAN) so that the
    discriminator cannot tell them from one-hot rows by their softness; sampled
    rows take the argmax of each Gumbel-perturbed block, an exact draw from the
    block's softmax. The noise multiplier is floored at 0.7 (opacus' RDP series
    is slow to evaluate below it); a budget that needs less noise is then
    under-spent, which the ledger shows.

    References
    ----------
    .. [1] Sun, Azizan, Srivastava, Wang. "Private Synthetic Data Meets Ensemble
       Learning." arXiv:2310.09729.
    .. [2] Abadi et al. "Deep Learning with Differential Privacy."
       arXiv:1607.00133.
    """

    def __init__(
        self,
        domain: Domain,
        steps: int = 300,
        batch_size: int = 256,
        hidden: int = 128,
        latent_dim: int = 32,
        max_grad_norm: float = 1.0,
        lr: float = 1e-3,
        tau: float = 0.2,
        max_noise_multiplier: float = 50.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(domain, rng)
        self.steps = check_int("steps", steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.hidden = check_int("hidden", hidden, 1)
        self.latent_dim = check_int("latent_dim", latent_dim, 1)
        self.max_grad_norm = check_positive("max_grad_norm", max_grad_norm)
        self.lr = check_positive("lr", lr)
        self.tau = check_positive("tau", tau)
        self.max_noise_multiplier = check_positive(
            "max_noise_multiplier", max_noise_multiplier
        )

    def _rate(self, n_rows: int) -> float:
        return min(self.batch_size / n_rows, 1.0)

    def max_compositions(self, epsilon: float, delta: float, n_rows: int) -> int:
        """The largest K whose K runs meet the budget with noise at most
        ``max_noise_multiplier``."""
        q = self._rate(n_rows)
        # K runs of T steps have K times the RDP curve of one run.
        one_run = subsampled_gaussian_rdp(q, self.max_noise_multiplier, self.steps)

        def fits(k: int) -> bool:
            return rdp_to_epsilon(DEFAULT_ORDERS, k * one_run, delta)[0] <= epsilon

        if not fits(1):
            return 0
        low, high = 1, 2
        while fits(high) and high < 1 << 40:
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low

    def _fit(self, codes, epsilon, delta, compositions) -> None:
        import torch

        rng = self._generator()
        n = len(codes)
        q = self._rate(n)
        sigma = calibrate_noise(
            epsilon, delta, q, self.steps * compositions, high=self.max_noise_multiplier
        )
        self.noise_multiplier_ = sigma
        rdp = subsampled_gaussian_rdp(q, sigma, self.steps)
        eps_run = rdp_to_epsilon(DEFAULT_ORDERS, rdp, delta)[0]
        self.ledger_.record(
            Spend(
                "DP-SGD discriminator",
                eps_run,
                delta,
                orders=tuple(DEFAULT_ORDERS),
                rdp=tuple(rdp),
            )
        )
        logger.info(
            "DP-GAN: q=%.4g, noise multiplier %.4g, steps %d", q, sigma, self.steps
        )

        seed = int(rng.integers(2**62))
        self._torch_gen = torch.Generator().manual_seed(seed)
        real = torch.as_tensor(self._one_hot(codes), dtype=torch.float32)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.generator_ = self._make_generator()
            disc = self._make_discriminator()
        self._train(real, disc, sigma, q, rng)

    def _one_hot(self, codes: np.ndarray) -> np.ndarray:
        sizes = self.domain.sizes
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        out = np.zeros((len(codes), int(sum(sizes))), dtype=np.float32)
        for j in range(len(sizes)):
            out[np.arange(len(codes)), offsets[j] + codes[:, j]] = 1.0
        return out

    def _make_generator(self):
        import torch.nn as nn

        h = self.hidden
        return nn.Sequential(
            nn.Linear(self.latent_dim, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, int(sum(self.domain.sizes))),
        )

    def _make_discriminator(self):
        import torch.nn as nn

        h = self.hidden
        return nn.Sequential(
            nn.Linear(int(sum(self.domain.sizes)), h),
            nn.LeakyReLU(0.2),
            nn.Linear(h, h),
            nn.LeakyReLU(0.2),
            nn.Linear(h, 1),
        )

    def _generate(self, m: int):
        """Relaxed one-hot rows, shape (m, sum of sizes): per column block a
        Gumbel-softmax with temperature ``tau`` of the generator's logits."""
        import torch

        z = torch.randn(m, self.latent_dim, generator=self._torch_gen)
        logits = self.generator_(z)
        u = torch.rand(logits.shape, generator=self._torch_gen)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        blocks = torch.split((logits + gumbel) / self.tau, self.domain.sizes, dim=1)
        return torch.cat([torch.softmax(b, dim=1) for b in blocks], dim=1)

    def _train(self, real, disc, sigma, q, rng) -> None:
        import torch
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        # Per-example gradients of the summed loss are the per-example gradients
        # themselves; the optimizer then divides their noisy sum by the batch.
        gsm = GradSampleModule(disc, loss_reduction="sum")
        opt_d = DPOptimizer(
            torch.optim.Adam(gsm.parameters(), lr=self.lr, betas=(0.5, 0.999)),
            noise_multiplier=sigma,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.batch_size,
            generator=self._torch_gen,
        )
        opt_g = torch.optim.Adam(
            self.generator_.parameters(), lr=self.lr, betas=(0.5, 0.999)
        )
        with warnings.catch_warnings():
            # opacus' hooks fire on module outputs because inputs need no grad.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self._loop(real, gsm, opt_d, opt_g, q, rng)
        self.generator_.eval()

    def _loop(self, real, gsm, opt_d, opt_g, q, rng) -> None:
        import torch
        import torch.nn.functional as F

        n = real.shape[0]
        params = [p for p in gsm.parameters() if p.requires_grad]
        for _ in range(self.steps):
            # Discriminator, real half: per-example gradients of the summed loss,
            # clipped, noised and divided by the expected batch (opacus pre_step).
            take = torch.as_tensor(np.nonzero(rng.random(n) < q)[0], dtype=torch.long)
            opt_d.zero_grad(set_to_none=True)
            gsm.enable_hooks()
            loss_real = F.binary_cross_entropy_with_logits(
                gsm(real[take]), torch.ones(len(take), 1), reduction="sum"
            )
            loss_real.backward()
            opt_d.pre_step()
            gsm.disable_hooks()

            # Discriminator, generated half: it depends on the data only through
            # earlier noisy steps, so its gradient is exact (post-processing).
            with torch.no_grad():
                fake = self._generate(self.batch_size)
            loss_fake = F.binary_cross_entropy_with_logits(
                gsm(fake), torch.zeros(len(fake), 1)
            )
            for p, g in zip(
                params, torch.autograd.grad(loss_fake, params), strict=True
            ):
                p.grad = p.grad + g
            opt_d.original_optimizer.step()

            # Generator: the non-saturating loss through the frozen discriminator.
            opt_g.zero_grad(set_to_none=True)
            fake = self._generate(self.batch_size)
            loss_g = F.binary_cross_entropy_with_logits(
                gsm(fake), torch.ones(len(fake), 1)
            )
            loss_g.backward()
            opt_g.step()
        gsm.enable_hooks()

    def _sample(self, n: int) -> np.ndarray:
        import torch

        with torch.no_grad():
            relaxed = self._generate(n)
        blocks = torch.split(relaxed, self.domain.sizes, dim=1)
        return torch.stack([b.argmax(dim=1) for b in blocks], dim=1).numpy()
