r"""Least-squares Markov parameters and the tournament identifier (Algorithm 1).

With the exploratory inputs :math:`\upsilon_t` as regressors,

.. math::

    y_t = G_\star z_t + e_t + \eta_t, \qquad
    z_t = (\upsilon_{t-1}, \dots, \upsilon_{t-h}) \in \mathbb R^{h d_u},

where :math:`G_\star` is the true closed loop's Markov matrix (see
:meth:`CandidateSet.markov_parameters`) and :math:`e_t` collects the state
:math:`h` steps back and the noise, independent of :math:`z_t`.
"""

from __future__ import annotations

import warnings

import numpy as np

from lemmata.control._validate import check_int, check_nonnegative

__all__ = [
    "critical_directions",
    "estimate_markov",
    "identify",
    "regressors",
    "separation",
    "tournament",
]

_COND_WARN = 1e10


def regressors(upsilon: np.ndarray, h: int) -> np.ndarray:
    r"""Stack :math:`z_t = (\upsilon_{t-1}, \dots, \upsilon_{t-h})` for
    :math:`t = h, \dots, T-1`.

    ``upsilon`` has shape ``(..., T, d_u)``; the result has shape
    ``(..., T - h, h d_u)``.
    """
    T = upsilon.shape[-2]
    lags = [upsilon[..., h - k : T - k, :] for k in range(1, h + 1)]
    return np.concatenate(lags, axis=-1)


def _check_trajectory(y, upsilon, h):
    y = np.asarray(y, dtype=float)
    upsilon = np.asarray(upsilon, dtype=float)
    h = check_int("h", h, 1)
    if y.ndim < 2 or upsilon.ndim < 2:
        raise ValueError(
            f"y and upsilon must have shape (..., T, dim); got {y.shape} and "
            f"{upsilon.shape}"
        )
    if y.shape[:-1] != upsilon.shape[:-1]:
        raise ValueError(
            f"upsilon must have shape {(*y.shape[:-1], upsilon.shape[-1])} to match "
            f"y {y.shape}; got {upsilon.shape}"
        )
    if y.shape[-2] <= h:
        raise ValueError(f"y must have more than h={h} steps; got {y.shape[-2]}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(upsilon))):
        raise ValueError("y and upsilon must be finite")
    return y, upsilon, h


def estimate_markov(
    y: np.ndarray,
    upsilon: np.ndarray,
    h: int,
    *,
    lengths: np.ndarray | None = None,
    ridge: float = 1e-10,
) -> np.ndarray:
    r"""Ordinary least-squares estimate of the Markov matrix.

    .. math::

        \hat G = \Big(\sum_{t} y_t z_t^\top\Big) \Lambda_\tau^{-1}, \qquad
        \Lambda_\tau = \sum_{t} z_t z_t^\top,

    summing over :math:`t = h, \dots, \tau - 1` (the first :math:`h` outputs have
    no full regressor).

    Parameters
    ----------
    y : ndarray of shape (..., T, d_y)
        Outputs :math:`y_t`; leading axes are independent trajectories.
    upsilon : ndarray of shape (..., T, d_u)
        Exploratory inputs :math:`\upsilon_t`.
    h : int
        Horizon :math:`h \ge 1`.
    lengths : array of int, optional
        Prefix lengths :math:`\tau` at which to return the estimate; default
        ``[T]``.
    ridge : float, default=1e-10
        Relative ridge :math:`\epsilon`: :math:`\Lambda_\tau + \epsilon
        \operatorname{tr}(\Lambda_\tau)/(h d_u) I` is Cholesky-factorised (never
        inverted explicitly).

    Returns
    -------
    G_hat : ndarray of shape (..., d_y, h d_u), or (len(lengths), ..., d_y, h d_u)
        when ``lengths`` is given.

    Warns
    -----
    RuntimeWarning
        If :math:`\Lambda_\tau` has condition number above 1e10.
    """
    y, upsilon, h = _check_trajectory(y, upsilon, h)
    ridge = check_nonnegative("ridge", ridge)
    T = y.shape[-2]
    given = lengths is not None
    lengths = np.atleast_1d(np.asarray([T] if lengths is None else lengths))
    if lengths.dtype.kind not in "iu" or np.any(lengths <= h) or np.any(lengths > T):
        raise ValueError(
            f"lengths must be integers in ({h}, {T}]; got {lengths.tolist()}"
        )
    Z = regressors(upsilon, h)
    Yt = y[..., h:, :]
    p = Z.shape[-1]
    Lam = np.zeros((*Z.shape[:-2], p, p))
    S = np.zeros((*Z.shape[:-2], y.shape[-1], p))
    out, done = {}, h
    for length in np.sort(np.unique(lengths)):
        seg = slice(done - h, length - h)
        Lam += np.einsum("...ta,...tb->...ab", Z[..., seg, :], Z[..., seg, :])
        S += np.einsum("...ta,...tb->...ab", Yt[..., seg, :], Z[..., seg, :])
        done = length
        out[int(length)] = _solve_gram(S, Lam, ridge)
    G = np.stack([out[int(k)] for k in lengths])
    return G if given else G[0]


def _solve_gram(S: np.ndarray, Lam: np.ndarray, ridge: float) -> np.ndarray:
    """S Lam^{-1} via a Cholesky factor of Lam plus a relative ridge."""
    p = Lam.shape[-1]
    scale = np.trace(Lam, axis1=-2, axis2=-1)[..., None, None] / p
    reg = Lam + ridge * scale * np.eye(p)
    eig = np.linalg.eigvalsh(reg)
    cond = float(np.max(eig[..., -1] / np.maximum(eig[..., 0], 1e-300)))
    if cond > _COND_WARN:
        warnings.warn(
            f"the regressor Gram matrix is ill-conditioned (condition number "
            f"{cond:.3g}); use a longer trajectory or a larger u_var",
            RuntimeWarning,
            stacklevel=3,
        )
    chol = np.linalg.cholesky(reg)
    # G = S reg^{-1}: solve reg G^T = S^T with the two triangular factors.
    tmp = np.linalg.solve(chol, np.swapaxes(S, -1, -2))
    return np.swapaxes(np.linalg.solve(np.swapaxes(chol, -1, -2), tmp), -1, -2)


def critical_directions(G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Top singular pairs of every difference :math:`G_i - G_j`.

    :math:`(u_{ij}, v_{ij})` attain :math:`u_{ij}^\top (G_i - G_j) v_{ij} =
    \|G_i - G_j\|_{op}`, so :math:`|u_{ij}^\top (G_i - G_j) v_{ij}| \ge 2\gamma`
    under Assumption 1 of [1].

    Parameters
    ----------
    G : ndarray of shape (N, d_y, p)
        Candidate Markov matrices.

    Returns
    -------
    U : ndarray of shape (N, N, d_y)
    V : ndarray of shape (N, N, p)
    gaps : ndarray of shape (N, N)
        :math:`\|G_i - G_j\|_{op}` (zero on the diagonal).

    Raises
    ------
    ValueError
        If two candidates have the same Markov matrix (:math:`\gamma = 0`).

    References
    ----------
    .. [1] Sun, Jadbabaie. arXiv:2404.08120.
    """
    G = np.asarray(G, dtype=float)
    if G.ndim != 3 or G.shape[0] < 2:
        raise ValueError(f"G must have shape (N >= 2, d_y, p); got {G.shape}")
    N = G.shape[0]
    diff = G[:, None] - G[None, :]
    u, s, vt = np.linalg.svd(diff)
    gaps = s[..., 0]
    off = ~np.eye(N, dtype=bool)
    scale = max(float(np.max(np.linalg.norm(G, ord=2, axis=(1, 2)))), 1e-300)
    bad = np.argwhere(off & (gaps <= 1e-12 * scale))
    if bad.size:
        i, j = bad[0]
        raise ValueError(
            f"candidates {i} and {j} have the same Markov parameters (gamma = 0); "
            "they cannot be told apart"
        )
    return u[..., :, 0], vt[..., 0, :], gaps


def separation(G: np.ndarray) -> float:
    r""":math:`\gamma = \min_{i \ne j} \|G_i - G_j\|_{op} / 2` (Assumption 1 of [1])."""
    G = np.asarray(G, dtype=float)
    N = G.shape[0]
    gaps = np.linalg.norm(G[:, None] - G[None, :], ord=2, axis=(2, 3))
    return float(gaps[~np.eye(N, dtype=bool)].min() / 2)


def tournament(
    G_hat: np.ndarray,
    G: np.ndarray,
    directions: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray | int:
    r"""Algorithm 1 of [1]: pairwise comparisons along critical directions.

    Start from :math:`i = 0`; for :math:`j = 1, \dots, N-1`, switch
    :math:`i \leftarrow j` when model :math:`j` is strictly closer to the
    estimate along the critical direction of the pair:

    .. math::

        |u_{ij}^\top (G_j - \hat G) v_{ij}| < |u_{ij}^\top (G_i - \hat G) v_{ij}| .

    Parameters
    ----------
    G_hat : ndarray of shape (..., d_y, p)
        Estimates; leading axes are independent trials.
    G : ndarray of shape (N, d_y, p)
        Candidate Markov matrices.
    directions : (U, V), optional
        From :func:`critical_directions`; computed when omitted.

    Returns
    -------
    int or ndarray of int
        The index kept at the end, per trial.

    Notes
    -----
    The extracted inequality of [1] reads "<=" with its sides in an order that
    looks garbled; this implementation switches only when :math:`j` is strictly
    closer, as the surrounding text ("j-th model is closer") says. With
    :math:`\|\hat G - G_\star\|` below :math:`\gamma` along every critical
    direction, the true index wins every comparison it takes part in.

    References
    ----------
    .. [1] Sun, Jadbabaie. "A least-square method for non-asymptotic
       identification in linear switching control." arXiv:2404.08120.
    """
    G = np.asarray(G, dtype=float)
    G_hat = np.asarray(G_hat, dtype=float)
    if G_hat.shape[-2:] != G.shape[-2:]:
        raise ValueError(
            f"G_hat must have trailing shape {G.shape[-2:]} to match G; "
            f"got {G_hat.shape}"
        )
    U, V = critical_directions(G)[:2] if directions is None else directions
    # proj[..., i, j] = u_ij^T (G_m - G_hat) v_ij is needed for m in {i, j}.
    model = np.einsum("ija,iab,ijb->ij", U, G, V)  # u_ij^T G_i v_ij
    model_j = np.einsum("ija,jab,ijb->ij", U, G, V)  # u_ij^T G_j v_ij
    est = np.einsum("ija,...ab,ijb->...ij", U, G_hat, V)
    batch = G_hat.shape[:-2]
    flat = est.reshape(-1, *est.shape[-2:])
    rows = np.arange(flat.shape[0])
    best = np.zeros(flat.shape[0], dtype=int)
    for j in range(1, G.shape[0]):
        e = flat[rows, best, j]
        closer = np.abs(model_j[best, j] - e) < np.abs(model[best, j] - e)
        best = np.where(closer, j, best)
    return int(best[0]) if not batch else best.reshape(batch)


def identify(
    y: np.ndarray,
    upsilon: np.ndarray,
    G: np.ndarray,
    *,
    directions: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray | int:
    r"""OLS estimate of the Markov matrix followed by :func:`tournament`.

    ``G`` has shape ``(N, d_y, h d_u)``, which fixes the horizon :math:`h`.
    """
    G = np.asarray(G, dtype=float)
    d_u = np.asarray(upsilon).shape[-1]
    if G.ndim != 3 or G.shape[-1] % d_u:
        raise ValueError(
            f"G must have shape (N, d_y, h * d_u) with d_u={d_u}; got {G.shape}"
        )
    G_hat = estimate_markov(y, upsilon, G.shape[-1] // d_u)
    return tournament(G_hat, G, directions)
