"""Isotropy of a point set: I1/I2 (Mu & Viswanath 2018 as used by Tyshchuk et al. 2023, section 3.1),
mean pairwise cosine (self-similarity, Ethayarajh 2019) and the norm of the mean vector.

All functions take raw rows and L2-normalize them first (DESIGN.md: "on L2-normalized rows unless
stated").
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm, in float64; a zero row is an error, not a NaN."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{int(np.sum(norms == 0))} zero row(s) cannot be normalized")
    return x / norms


def i1_i2(x: np.ndarray, normalize: bool = True, compat: bool = False) -> tuple[float, float]:
    """I1 = min_c Z(c) / max_c Z(c) and I2 = std_c Z(c) / mean_c Z(c), with Z(c) = sum_i exp(<c, x_i>)
    and c over the eigenvectors of X^T X.

    Eigenvectors are the columns of ``numpy.linalg.eigh`` in float64. Sign convention: each
    eigenvector is oriented so that sum_i <c, x_i> >= 0 (it points into the data's half-space),
    which makes the result independent of the LAPACK build. Z is handled in log space
    (log Z(c) = logsumexp_i <c, x_i>), so unnormalized or whitened inputs cannot overflow; both
    ratios are invariant to the common factor exp(-max log Z).

    ``compat=True`` reproduces the published code, which iterated over the *rows* of the eigenvector
    matrix (and took them as returned, without the sign convention), for comparison with the papers.
    I1 is 1 (and I2 is 0) exactly when Z is the same in every eigendirection.
    """
    x = l2_normalize(x) if normalize else np.asarray(x, dtype=np.float64)
    _, vecs = np.linalg.eigh(x.T @ x)
    if compat:
        directions = vecs  # rows of the matrix as directions: c_j = vecs[j, :]
        proj = x @ directions.T
    else:
        proj = x @ vecs
        signs = np.where(proj.sum(axis=0) < 0, -1.0, 1.0)
        proj = proj * signs
    log_z = logsumexp(proj, axis=0)
    z = np.exp(log_z - log_z.max())
    return float(z.min() / z.max()), float(z.std() / z.mean())


def mean_cosine(x: np.ndarray) -> float:
    """Mean cosine over all pairs i != j, without forming the n x n matrix:
    sum_{i != j} <u_i, u_j> = ||sum_i u_i||^2 - n for unit rows u_i, divided by n (n - 1)."""
    u = l2_normalize(x)
    n = u.shape[0]
    if n < 2:
        raise ValueError("mean pairwise cosine needs at least two rows")
    s = u.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


def mean_vector_norm(x: np.ndarray) -> float:
    """|| (1/n) sum_i u_i || for unit rows u_i: 0 for a balanced set, 1 when all rows coincide."""
    return float(np.linalg.norm(l2_normalize(x).mean(axis=0)))


def isotropy_summary(x: np.ndarray) -> dict[str, float]:
    """The isotropy metrics stored per modality in ``metrics.isotropy``."""
    i1, i2 = i1_i2(x)
    return {"i1": i1, "i2": i2, "mean_cosine": mean_cosine(x), "mean_vector_norm": mean_vector_norm(x)}
