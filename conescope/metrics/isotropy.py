"""Isotropy of a point set: I1/I2 (Mu & Viswanath 2018 as used by Tyshchuk et al. 2023, section 3.1),
IsoScore (Rudman et al. 2022) with a finite-sample null, mean pairwise cosine (self-similarity,
Ethayarajh 2019), the norm of the mean vector, the per-coordinate spread, the singular-value spectrum
and the effective rank (Roy & Vetterli 2007).

All functions take raw rows and L2-normalize them first (DESIGN.md: "on L2-normalized rows unless
stated"). Everything is computed in float64 from d x d matrices and O(n d) passes, never n x n.
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr

# Rows per block when projecting: bounds the n x d projection to a 16 MB slab at any n.
_BLOCK_ELEMENTS = 1 << 21


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm, in float64; a zero row is an error, not a NaN."""
    x = np.array(x, dtype=np.float64)  # always a fresh copy, so the division below can be in place
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{int(np.sum(norms == 0))} zero row(s) cannot be normalized")
    x /= norms
    return x


def _rows(x: np.ndarray, normalize: bool) -> np.ndarray:
    return l2_normalize(x) if normalize else np.asarray(x, dtype=np.float64)


def _column_log_sum_exp(x: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """log sum_i exp(<c, x_i>) for every column c of ``directions``, streamed over row blocks with a
    running log-sum-exp, so that neither the n x d projection nor its exponential is ever held."""
    block = max(1, _BLOCK_ELEMENTS // max(1, directions.shape[1]))
    log_z = np.full(directions.shape[1], -np.inf)
    for start in range(0, len(x), block):
        proj = x[start:start + block] @ directions
        peak = proj.max(axis=0)
        proj -= peak
        np.exp(proj, out=proj)
        log_z = np.logaddexp(log_z, peak + np.log(proj.sum(axis=0)))
    return log_z


def _i1_i2_from_eigenvectors(x: np.ndarray, vecs: np.ndarray, compat: bool) -> tuple[float, float]:
    if compat:
        directions = vecs.T  # rows of the matrix as directions: c_j = vecs[j, :]
    else:
        # sum_i <c, x_i> = <c, sum_i x_i>: the orientation needs no pass over the projections
        signs = np.where(x.sum(axis=0) @ vecs < 0, -1.0, 1.0)
        directions = vecs * signs
    log_z = _column_log_sum_exp(x, directions)
    z = np.exp(log_z - log_z.max())
    return float(z.min() / z.max()), float(z.std() / z.mean())


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
    x = _rows(x, normalize)
    _, vecs = np.linalg.eigh(x.T @ x)
    return _i1_i2_from_eigenvectors(x, vecs, compat)


def mean_cosine(x: np.ndarray) -> float:
    """Mean cosine over all pairs i != j, without forming the n x n matrix:
    sum_{i != j} <u_i, u_j> = ||sum_i u_i||^2 - n for unit rows u_i, divided by n (n - 1)."""
    u = l2_normalize(x)
    n = u.shape[0]
    if n < 2:
        raise ValueError("mean pairwise cosine needs at least two rows")
    s = u.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


def mean_cosine_per_sample(x: np.ndarray) -> np.ndarray:
    """For each row i, the mean cosine with every other row: (<u_i, sum_j u_j> - 1) / (n - 1) for unit
    rows u (Ethayarajh 2019's self-similarity, split per sample for bootstrap intervals). The mean of
    these values is ``mean_cosine(x)``; memory is O(n d)."""
    u = l2_normalize(x)
    n = u.shape[0]
    if n < 2:
        raise ValueError("mean pairwise cosine needs at least two rows")
    return (u @ u.sum(axis=0) - 1.0) / (n - 1)


def mean_vector_norm(x: np.ndarray) -> float:
    """|| (1/n) sum_i u_i || for unit rows u_i: 0 for a balanced set, 1 when all rows coincide."""
    return float(np.linalg.norm(l2_normalize(x).mean(axis=0)))


def _isoscore_from_covariance_eigenvalues(eigenvalues: np.ndarray) -> float:
    """IsoScore from the spectrum of the covariance matrix (Rudman et al. 2022, Algorithm 1, steps 3-6).

    Singular values of the symmetric covariance are |eigenvalues| (rounding can leave the zero ones
    slightly negative; the reference package takes ``svdvals``, i.e. the absolute values).
    """
    pcs = np.abs(np.asarray(eigenvalues, dtype=np.float64))
    d = pcs.size
    if d < 2:
        raise ValueError(f"IsoScore needs at least 2 dimensions, got {d}")
    scale = np.linalg.norm(pcs)
    if scale == 0:
        raise ValueError("IsoScore is undefined for a point set with zero covariance")
    root = np.sqrt(d)
    defect = np.linalg.norm(pcs * root / scale - 1.0) / np.sqrt(2.0 * (d - root))
    return float(((d - defect**2 * (d - root)) ** 2 - d) / (d * (d - 1)))


def isoscore(x: np.ndarray, normalize: bool = True) -> float:
    """IsoScore (Rudman et al. 2022, "IsoScore: Measuring the Uniformity of Embedding Space
    Utilization", Algorithm 1), equal to ``IsoScore.IsoScore.IsoScore`` of the package up to ~1e-8
    (the package takes sqrt(d) in float32; this is float64 throughout).

    With lambda the eigenvalues of the sample covariance (the variances of the PCA-reoriented
    points), lambda_hat = sqrt(d) lambda / ||lambda||, the isotropy defect
    delta = ||lambda_hat - 1|| / sqrt(2 (d - sqrt(d))), phi = (d - delta^2 (d - sqrt(d)))^2 / d^2, and
    IsoScore = (d phi - 1) / (d - 1). It lies in [0, 1]; variance spread evenly over k of the d
    dimensions gives (k - 1) / (d - 1). The covariance is the d x d matrix of the centred rows, so the
    cost is one n d^2 product.
    """
    x = l2_normalize(x) if normalize else np.array(x, dtype=np.float64)  # a private copy, centred in place
    n = x.shape[0]
    if n < 2:
        raise ValueError("IsoScore needs at least two rows")
    x -= x.mean(axis=0)
    return _isoscore_from_covariance_eigenvalues(np.linalg.eigvalsh(x.T @ x / (n - 1)))


def _gaussian_sphere_covariance(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Sample covariance of n isotropic Gaussian rows, L2-normalized, accumulated over row blocks so
    that the null costs O(block d + d^2) memory at any n. The generator's stream is consumed as by a
    single ``standard_normal((n, d))`` draw. Centring through the sums is exact enough here because
    the mean of such a cloud is ~0 (no cancellation)."""
    block = max(1, _BLOCK_ELEMENTS // d)
    total, gram = np.zeros(d), np.zeros((d, d))
    for start in range(0, n, block):
        g = rng.standard_normal((min(block, n - start), d))
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        total += g.sum(axis=0)
        gram += g.T @ g
    mean = total / n
    return (gram - n * np.outer(mean, mean)) / (n - 1)


def isoscore_null(n: int, d: int, seed: int, repeats: int = 5) -> float:
    """Mean IsoScore of ``repeats`` isotropic Gaussian clouds of n rows in d dimensions, L2-normalized as
    ``isoscore`` does by default: the score a perfectly isotropic distribution gets at this sample
    size. The sample covariance of n points spreads its spectrum when n is not much larger than d, so
    IsoScore (Rudman et al. 2022) falls below 1 even for isotropic data; the observed score is read
    against this baseline."""
    if n < 2 or d < 2 or repeats < 1:
        raise ValueError(f"isoscore_null needs n >= 2, d >= 2 and repeats >= 1, got n={n}, d={d}, repeats={repeats}")
    rng = np.random.default_rng(seed)
    scores = [_isoscore_from_covariance_eigenvalues(np.linalg.eigvalsh(_gaussian_sphere_covariance(n, d, rng)))
              for _ in range(repeats)]
    return float(np.mean(scores))


def _singular_values_from_gram_eigenvalues(eigenvalues: np.ndarray, n: int, d: int) -> np.ndarray:
    """sqrt of the Gram eigenvalues, descending. Rounding leaves the zero eigenvalues at about
    +-eps * lambda_max, so values under max(n, d) * eps * lambda_max (numpy's matrix_rank tolerance)
    are set to 0: singular values below ~sqrt(max(n, d) eps) * s_max are not resolved by this route."""
    eig = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1][: min(n, d)]
    tol = max(n, d) * np.finfo(np.float64).eps * max(float(eig[0]), 0.0) if eig.size else 0.0
    return np.sqrt(np.where(eig > tol, eig, 0.0))


def singular_values(x: np.ndarray, normalize: bool = True) -> np.ndarray:
    """The min(n, d) singular values of X (rows L2-normalized unless ``normalize=False``), descending,
    as sqrt of the eigenvalues of the smaller Gram matrix (X^T X when n >= d): one n d^2 product and a
    d x d eigendecomposition instead of an n x d SVD. Same values as ``numpy.linalg.svd`` except that
    values below ~sqrt(max(n, d) eps) s_max come back as 0."""
    x = _rows(x, normalize)
    n, d = x.shape
    gram = x.T @ x if n >= d else x @ x.T
    return _singular_values_from_gram_eigenvalues(np.linalg.eigvalsh(gram), n, d)


def _effective_rank_from_singular_values(s: np.ndarray) -> float:
    total = s.sum()
    if total <= 0:
        raise ValueError("effective rank is undefined for a zero matrix")
    return float(np.exp(entr(s / total).sum()))


def effective_rank(x: np.ndarray, normalize: bool = True) -> float:
    """Effective rank (Roy & Vetterli 2007, "The effective rank: a measure of effective
    dimensionality", definition 2): exp(H(p)) with p_k = s_k / sum_j s_j over the singular values s_k
    of X and H the Shannon entropy in nats (0 log 0 = 0). It is 1 for a rank-1 matrix and d for d
    orthogonal directions of equal norm; rows are L2-normalized first and not centred."""
    return _effective_rank_from_singular_values(singular_values(x, normalize))


def coordinate_std(x: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Per-coordinate population standard deviation sqrt(mean_i (x_ik - mean_i x_ik)^2), one value per
    dimension (the per-coordinate spread of DESIGN.md's isotropy metrics; a few dominant coordinates
    are the "rogue dimensions" of Timkey & van Schijndel 2021)."""
    return np.std(_rows(x, normalize), axis=0)


def isotropy_summary(x: np.ndarray) -> dict[str, float]:
    """The isotropy metrics stored per modality in ``metrics.isotropy``: i1, i2, mean_cosine,
    mean_vector_norm, isoscore and effective_rank of the L2-normalized rows.

    One Gram matrix G = U^T U serves them all: its eigenvectors give I1/I2, its eigenvalues the
    singular values for the effective rank, and the covariance for IsoScore is (G - n m m^T) / (n - 1)
    with m the mean row (no second pass over the data).
    """
    u = l2_normalize(x)
    n, d = u.shape
    if n < 2:
        raise ValueError("isotropy metrics need at least two rows")
    gram = u.T @ u
    eig, vecs = np.linalg.eigh(gram)
    i1, i2 = _i1_i2_from_eigenvectors(u, vecs, compat=False)
    total = u.sum(axis=0)
    mean = total / n
    covariance = (gram - n * np.outer(mean, mean)) / (n - 1)
    return {
        "i1": i1,
        "i2": i2,
        "mean_cosine": float((total @ total - n) / (n * (n - 1))),
        "mean_vector_norm": float(np.linalg.norm(mean)),
        "isoscore": _isoscore_from_covariance_eigenvalues(np.linalg.eigvalsh(covariance)),
        "effective_rank": _effective_rank_from_singular_values(_singular_values_from_gram_eigenvalues(eig, n, d)),
    }
