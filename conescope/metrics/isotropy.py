"""Isotropy of a point set: I1/I2 (Mu & Viswanath 2018 as used by Tyshchuk et al. 2023, section 3.1),
IsoScore (Rudman et al. 2022) with a finite-sample null, mean pairwise cosine (self-similarity,
Ethayarajh 2019), the norm of the mean vector, the per-coordinate spread, the singular-value spectrum
and the effective rank (Roy & Vetterli 2007).

All functions take raw rows and L2-normalize them first (every metric is defined on L2-normalized
rows unless stated, docs/storage.md). Everything is computed in float64 from d x d matrices and O(n d)
passes, never n x n.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from scipy.special import entr
from threadpoolctl import threadpool_limits

T = TypeVar("T")

# Rows per block when projecting: bounds the n x d projection to a 16 MB slab at any n.
_BLOCK_ELEMENTS = 1 << 21


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm, in float64; a zero row is an error, not a NaN."""
    x = np.array(x, dtype=np.float64)  # always a fresh copy, so the division below can be in place
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) array of rows, got shape {x.shape}")
    # einsum: no n x d temporary of squares (np.linalg.norm forms one; 5-8x slower at 40,000 x 512)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if np.any(norms == 0):
        raise ValueError(f"{int(np.sum(norms == 0))} zero row(s) cannot be normalized")
    x /= norms[:, None]
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


def _directions(total: np.ndarray, vecs: np.ndarray, compat: bool) -> np.ndarray:
    if compat:
        return vecs.T  # rows of the matrix as directions: c_j = vecs[j, :]
    # sum_i <c, x_i> = <c, sum_i x_i>: the orientation needs no pass over the projections
    return vecs * np.where(total @ vecs < 0, -1.0, 1.0)


def _ratios(log_z: np.ndarray) -> tuple[float, float]:
    z = np.exp(log_z - log_z.max())
    return float(z.min() / z.max()), float(z.std() / z.mean())


def _unit_norms(x: np.ndarray) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) array of rows, got shape {x.shape}")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    if np.any(norms == 0):
        raise ValueError(f"{int(np.sum(norms == 0))} zero row(s) cannot be normalized")
    return norms


def _map_unit_blocks(x: np.ndarray, norms: np.ndarray, fn: Callable[[np.ndarray], T],
                     parallel: bool = False) -> Iterator[tuple[int, T]]:
    """(start, fn(float64 unit rows of the block)) over row blocks of ``x``, in block order: the whole
    float64 copy is never made.

    ``parallel``: the blocks run on every core, each with one BLAS thread. On a busy machine a
    multi-threaded BLAS call waits for a descheduled sibling thread at every block (the Gram pass of
    40,000 x 512 rows took 0.4-1.1 s on a shared 2-core machine, its projections 0.6-1.1 s), and
    OpenBLAS's float64 products (``u.T @ u``, row sums) are the same bit for bit on one thread as on
    several; callers sum the results in block order, as the sequential loop does
    (tests/test_metrics_fast_paths.py). Float32 products are not: one thread and two round a few rows
    differently (~1e-9 on I1), so the float32 projections stay on the sequential path."""
    block = max(1, _BLOCK_ELEMENTS // max(1, x.shape[1]))
    starts = range(0, len(x), block)

    def one(start: int) -> tuple[int, T]:
        rows = np.array(x[start:start + block], dtype=np.float64)
        rows /= norms[start:start + block, None]
        return start, fn(rows)

    workers = min(len(starts), os.cpu_count() or 1) if parallel else 1
    if workers <= 1:
        yield from map(one, starts)
        return
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        yield from pool.map(one, starts)


def _unit_z(x: np.ndarray, norms: np.ndarray, directions: np.ndarray,
            total: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Z(c) = sum_i exp(<c, u_i>) for the unit rows and unit columns c of ``directions``, and with
    ``total`` = sum_j u_j also <u_i, total> per row. Every <c, u_i> lies in [-1, 1], so exp cannot
    overflow and no running maximum is needed; the projection is taken in float32 (absolute error below
    1e-6, so Z has a relative error below 1e-6; sums stay in float64), twice as fast as float64."""
    zs, dots = _unit_zs(x, norms, [directions], total)
    return zs[0], dots


def _unit_zs(x: np.ndarray, norms: np.ndarray, direction_sets: list[np.ndarray],
             total: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """:func:`_unit_z` for several sets of directions in one pass: each row block is normalized and cast
    to float32 once for all of them (the products and sums are those of separate passes, bit for bit)."""
    c32s = [directions.astype(np.float32) for directions in direction_sets]
    zs = [np.zeros(directions.shape[1]) for directions in direction_sets]
    dots = None if total is None else np.empty(len(x))

    def block_sums(u: np.ndarray) -> tuple[np.ndarray | None, list[np.ndarray]]:
        u32 = u.astype(np.float32)
        sums = []
        for c32 in c32s:
            proj = u32 @ c32
            np.exp(proj, out=proj)
            sums.append(proj.sum(axis=0, dtype=np.float64))
        return (None if total is None else u @ total), sums

    for start, (block_dots, sums) in _map_unit_blocks(x, norms, block_sums):
        if dots is not None:
            dots[start:start + len(block_dots)] = block_dots
        for z, block_z in zip(zs, sums, strict=True):
            z += block_z
    return zs, dots


def unit_row_mean(x: np.ndarray) -> np.ndarray:
    """(1/n) sum_i x_i / ||x_i|| in float64, streamed over row blocks: the same mean as
    ``l2_normalize(x).mean(axis=0)`` up to the summation order (~1e-16 relative), without the float64
    copy of the whole set (at 40,000 x 512 its page faults cost more than the sum)."""
    x = np.asarray(x)
    norms = _unit_norms(x)
    if len(x) == 0:
        raise ValueError("the mean of no rows is undefined")
    total = np.zeros(x.shape[1])
    for _, block_total in _map_unit_blocks(x, norms, lambda u: u.sum(axis=0), parallel=True):
        total += block_total
    return total / len(x)


def _unit_gram(x: np.ndarray, norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U^T U, sum_i u_i) of the unit rows u_i = x_i / norms_i, in float64, streamed over row blocks."""
    d = x.shape[1]
    gram, total = np.zeros((d, d)), np.zeros(d)
    for _, (block_gram, block_total) in _map_unit_blocks(x, norms, lambda u: (u.T @ u, u.sum(axis=0)),
                                                         parallel=True):
        gram += block_gram
        total += block_total
    return gram, total


def i1_i2(x: np.ndarray, normalize: bool = True, compat: bool = False) -> tuple[float, float]:
    """I1 = min_c Z(c) / max_c Z(c) and I2 = std_c Z(c) / mean_c Z(c), with Z(c) = sum_i exp(<c, x_i>)
    and c over the eigenvectors of X^T X.

    Eigenvectors are the columns of ``numpy.linalg.eigh`` in float64. Sign convention: each
    eigenvector is oriented so that sum_i <c, x_i> >= 0 (it points into the data's half-space),
    which makes the result independent of the LAPACK build. Z is handled in log space
    (log Z(c) = logsumexp_i <c, x_i>), so unnormalized or whitened inputs cannot overflow; both
    ratios are invariant to the common factor exp(-max log Z). For L2-normalized rows (the default)
    every projection lies in [-1, 1] and Z is summed directly from a float32 projection (relative
    error below 1e-6); ``normalize=False`` takes the float64 log-sum-exp path.

    ``compat=True`` follows the published code of Tyshchuk et al., which iterated over the *rows* of the
    eigenvector matrix (and took them as returned, without the sign convention): the "I1 image 0.83,
    text 0.84" of their Table 1 is this quantity. It cannot be reproduced exactly. A row of V mixes
    every eigenvector with the sign the eigensolver happened to give it, and those signs are arbitrary
    (they differ between LAPACK builds, numpy and torch, float32 and float64); flipping the sign of
    column k changes coordinate k of every row direction, hence Z and I1. Here the signs are numpy's
    ``eigh`` as returned (float64). The spread over sign patterns is wide: on a synthetic cone (2,000
    rows, d = 64: a common unit direction of weight 0.5 plus Gaussian noise of per-coordinate scale
    0.3-1.5 / sqrt(d), seed 0; tests/test_metrics.py) 64 random sign patterns
    (``i1_compat_sign_spread``) give compat I1 from 0.72 to 0.80 (numpy's own signs: 0.75) while the
    correct I1 is 0.63. The row directions depend on the *order* of the eigenvectors too: coordinate k of
    a row is eigenvector k's entry, so permuting the columns permutes every row's coordinates. numpy's
    ``eigh`` returns them by ascending eigenvalue; the authors' ``torch.eig`` (a general eigensolver)
    returned them in no sorted order. On the same cone, numpy's order gives 0.75, the descending order
    0.77, and 64 random orders 0.72-0.81 (tests/test_metrics.py). A published compat value is therefore
    only comparable to within the spread over signs and orders; only the correct value (``compat=False``)
    is a property of the data. I1 is 1 (and I2 is 0) exactly when Z is the same in every eigendirection.
    """
    x = np.asarray(x)
    if not normalize:
        x = np.asarray(x, dtype=np.float64)
        _, vecs = np.linalg.eigh(x.T @ x)
        return _ratios(_column_log_sum_exp(x, _directions(x.sum(axis=0), vecs, compat)))
    # unit rows: two streamed passes (Gram, then Z), never a float64 copy of the whole set
    norms = _unit_norms(x)
    gram, total = _unit_gram(x, norms)
    z, _ = _unit_z(x, norms, _directions(total, np.linalg.eigh(gram)[1], compat))
    return _ratios(np.log(z))


def i1_compat_sign_spread(x: np.ndarray, patterns: int = 64, seed: int = 0) -> tuple[float, float]:
    """(min, max) of the compat I1 (rows of the eigenvector matrix, see :func:`i1_i2`) over ``patterns``
    random sign patterns of the eigenvector columns, all equally valid outputs of an eigensolver: how far
    the published, row-iterating value can move for the same data. Unit rows, float64."""
    u = l2_normalize(x)
    _, vecs = np.linalg.eigh(u.T @ u)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(patterns):
        signs = rng.choice([-1.0, 1.0], size=vecs.shape[1])
        values.append(_ratios(_column_log_sum_exp(u, (vecs * signs).T))[0])
    return float(min(values)), float(max(values))


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


def _isoscore_from_trace_ratio(r: float, d: int) -> float:
    """IsoScore as a function of r = tr(C) / ||C||_F alone: with lambda_hat = sqrt(d) lambda / ||lambda||,
    ||lambda_hat - 1||^2 = 2 d - 2 sqrt(d) r, so delta^2 = (2 d - 2 sqrt(d) r) / (2 (d - sqrt(d))) and the
    rest of Algorithm 1 follows."""
    root = np.sqrt(d)
    defect_sq = (2.0 * d - 2.0 * root * r) / (2.0 * (d - root))
    return float(((d - defect_sq * (d - root)) ** 2 - d) / (d * (d - 1)))


def isoscore_null(n: int, d: int) -> float:
    """The IsoScore that an isotropic Gaussian cloud of n rows in d dimensions gets after L2
    normalization (rows uniform on the sphere S^(d-1), as ``isoscore`` normalizes by default): the
    baseline to read an observed score against. The sample covariance of n points spreads its spectrum
    when n is not much larger than d, so IsoScore (Rudman et al. 2022) falls below 1 even for
    isotropic data.

    IsoScore depends on the covariance C only through r = tr(C) / ||C||_F (see
    :func:`_isoscore_from_trace_ratio`), and both moments have exact expectations for n unit rows u_i
    drawn uniformly (E <u_i, u_j>^2 = 1/d for i != j, odd moments 0), with S = (n - 1) C the scatter
    matrix about the sample mean:

        E tr(S) = n - 1,   E ||S||_F^2 = (n - 1) + (n - 1)(n - 2) / d + 2 (n - 1) / (n d).

    The null is the IsoScore at r = E tr(S) / sqrt(E ||S||_F^2): closed form, free of Monte Carlo
    noise and O(1) at any n. It agrees with the mean of simulated clouds (``isoscore_null_simulated``)
    to within their standard error, about 1e-5 at 40,000 x 512 and 1e-3 at n = 20
    (tests/test_metrics_geometry.py).
    """
    if n < 2 or d < 2:
        raise ValueError(f"isoscore_null needs n >= 2 and d >= 2, got n={n}, d={d}")
    frobenius_sq = (n - 1) + (n - 1) * (n - 2) / d + 2.0 * (n - 1) / (n * d)
    return _isoscore_from_trace_ratio((n - 1) / np.sqrt(frobenius_sq), d)


def isoscore_null_simulated(n: int, d: int, seed: int, repeats: int = 5) -> float:
    """Mean IsoScore of ``repeats`` simulated isotropic Gaussian clouds of n rows in d dimensions,
    L2-normalized: the Monte Carlo counterpart of :func:`isoscore_null`, which it checks. Cost
    O(repeats n d^2); memory O(block d + d^2)."""
    if n < 2 or d < 2 or repeats < 1:
        raise ValueError(f"isoscore_null_simulated needs n >= 2, d >= 2 and repeats >= 1, got n={n}, d={d}, "
                         f"repeats={repeats}")
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
    dimension (the per-coordinate spread of an isotropy analysis; a few dominant coordinates
    are the "rogue dimensions" of Timkey & van Schijndel 2021)."""
    return np.std(_rows(x, normalize), axis=0)


def isotropy_profile(x: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """(summary, per-sample mean cosines): the isotropy metrics stored per modality in
    ``metrics.isotropy`` (i1, i2, i1_compat, i2_compat (the published code's row iteration, see
    :func:`i1_i2`), mean_cosine, mean_vector_norm, isoscore, effective_rank of the L2-normalized rows)
    and ``mean_cosine_per_sample(x)`` (the stored interval leaves rows out instead:
    ``bootstrap.pairwise_mean_cosine_ci``).

    One Gram matrix G = U^T U serves them all: its eigenvectors give I1/I2, its eigenvalues the
    singular values for the effective rank, and the covariance for IsoScore is (G - n m m^T) / (n - 1)
    with m the mean row. Two streamed passes over row blocks, normalized as they are read: the first
    accumulates G and sum_i u_i, the second Z(c) over both sets of directions and <u_i, sum_j u_j>.
    Memory is O(block d + d^2) beyond the input; no float64 copy of the whole set is made (at
    80,000 x 512 the copy alone cost 0.35 s of page faults).
    """
    x = np.asarray(x)
    norms = _unit_norms(x)
    n, d = x.shape
    if n < 2:
        raise ValueError("isotropy metrics need at least two rows")
    gram, total = _unit_gram(x, norms)
    eig, vecs = np.linalg.eigh(gram)
    # one pass for both: the eigenvector columns and the published code's row directions
    (z, z_compat), dots = _unit_zs(x, norms, [_directions(total, vecs, compat=False),
                                              _directions(total, vecs, compat=True)], total)
    per_sample = (dots - 1.0) / (n - 1)
    mean = total / n
    covariance = (gram - n * np.outer(mean, mean)) / (n - 1)
    i1, i2 = _ratios(np.log(z))
    i1_compat, i2_compat = _ratios(np.log(z_compat))
    summary = {
        "i1": i1,
        "i2": i2,
        "i1_compat": i1_compat,
        "i2_compat": i2_compat,
        "mean_cosine": float((total @ total - n) / (n * (n - 1))),
        "mean_vector_norm": float(np.linalg.norm(mean)),
        "isoscore": _isoscore_from_covariance_eigenvalues(np.linalg.eigvalsh(covariance)),
        "effective_rank": _effective_rank_from_singular_values(_singular_values_from_gram_eigenvalues(eig, n, d)),
    }
    return summary, per_sample


def isotropy_summary(x: np.ndarray) -> dict[str, float]:
    """The summary of :func:`isotropy_profile` alone."""
    return isotropy_profile(x)[0]
