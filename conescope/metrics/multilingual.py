"""Multilingual geometry on parallel texts: a (language L) and b (the reference language) are aligned,
row i of a translating row i of b; rows are L2-normalized first.

- Distance ratio (docs/storage.md, ``metrics.multilingual``): the mean distance between translations over the mean
  distance between non-translations, mean_i D(a_i, b_i) / mean_{i != j} D(a_i, b_j); below 1 when
  translations sit closer than random cross-lingual pairs, 0 when they coincide.
- Cross-lingual retrieval recall@k: how often b_i is among the k nearest (cosine) rows of b to a_i.
- Language separability: how well a linear classifier tells the languages apart.
"""

from __future__ import annotations

import numpy as np

from conescope.metrics.gap import linear_separability
from conescope.metrics.isotropy import l2_normalize

DISTANCE_FORMS = ("sq", "plain", "cos")

# Entries of an a-block x n similarity slab: 64 MB of float64 at any n.
_BLOCK_ELEMENTS = 1 << 23


def _aligned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be aligned 2-D arrays of the same shape, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("multilingual metrics need at least two aligned rows")
    return l2_normalize(a), l2_normalize(b)


def _blocks(n: int):
    step = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _mean_cross_euclidean(ua: np.ndarray, ub: np.ndarray) -> float:
    """mean_{i != j} ||a_i - b_j|| over row blocks of a: ||a - b||^2 = |a|^2 + |b|^2 - 2 <a, b> by one
    matrix product per block, clipped at 0 before the square root (rounding can make it -eps)."""
    n = len(ua)
    sq_a, sq_b = np.einsum("ij,ij->i", ua, ua), np.einsum("ij,ij->i", ub, ub)
    total = 0.0
    for start, stop in _blocks(n):
        dist = ua[start:stop] @ ub.T
        dist *= -2.0
        dist += sq_a[start:stop, None]
        dist += sq_b[None, :]
        np.maximum(dist, 0.0, out=dist)
        np.sqrt(dist, out=dist)
        dist[np.arange(stop - start), np.arange(start, stop)] = 0.0  # translations are not cross pairs
        total += float(dist.sum())
    return total / (n * (n - 1))


def distance_ratio(a: np.ndarray, b: np.ndarray, form: str) -> float:
    """mean_i D(a_i, b_i) / mean_{i != j} D(a_i, b_j) on L2-normalized rows, with D the squared
    Euclidean distance ("sq"), the Euclidean distance ("plain") or the cosine distance 1 - cos ("cos").

    The cross mean of "sq" and "cos" comes in closed form from the row sums S_a, S_b (no n x n matrix):
    sum_{i != j} <a_i, b_j> = <S_a, S_b> - sum_i <a_i, b_i>. "plain" has no closed form and is summed
    over row blocks (O(n^2 d) time, O(n) memory per block row). For unit rows ||a - b||^2 = 2 (1 - cos),
    so the "sq" and "cos" ratios coincide up to rounding; both are kept because papers report each.
    """
    if form not in DISTANCE_FORMS:
        raise ValueError(f"unknown distance form {form!r}: expected one of {DISTANCE_FORMS}")
    ua, ub = _aligned(a, b)
    n = len(ua)
    paired_dot = np.einsum("ij,ij->i", ua, ub)
    cross_dot = (ua.sum(axis=0) @ ub.sum(axis=0) - paired_dot.sum()) / (n * (n - 1))
    if form == "cos":
        return float(np.mean(1.0 - paired_dot) / (1.0 - cross_dot))
    paired_sq = np.einsum("ij,ij->i", ua - ub, ua - ub)
    if form == "plain":
        return float(np.mean(np.sqrt(paired_sq)) / _mean_cross_euclidean(ua, ub))
    sq_a, sq_b = np.einsum("ij,ij->i", ua, ua), np.einsum("ij,ij->i", ub, ub)
    # sum_{i != j} |a_i|^2 + |b_j|^2 = (n - 1) (sum_i |a_i|^2 + sum_j |b_j|^2)
    cross_sq = (sq_a.sum() + sq_b.sum()) / n - 2.0 * cross_dot
    return float(np.mean(paired_sq) / cross_sq)


def distance_ratio_raw_all_pairs(a: np.ndarray, b: np.ndarray) -> float:
    """Tyshchuk et al.'s Table 6 form: mean_i ||a_i - b_i||^2 / mean_{i, j} ||a_i - b_j||^2 on the *raw*
    (unnormalized) rows, the denominator over all n^2 pairs (translations included). Closed form from the
    row sums: sum_{i,j} ||a_i - b_j||^2 = n sum_i |a_i|^2 + n sum_j |b_j|^2 - 2 <S_a, S_b>."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"a and b must be aligned (n >= 2, d) arrays, got {a.shape} and {b.shape}")
    n = len(a)
    paired = np.einsum("ij,ij->i", a - b, a - b).mean()
    cross = (n * np.einsum("ij,ij->", a, a) + n * np.einsum("ij,ij->", b, b)
             - 2.0 * a.sum(axis=0) @ b.sum(axis=0)) / (n * n)
    return float(paired / cross)


def _translation_ranks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each i, the number of rows b_j with cos(a_i, b_j) > cos(a_i, b_i), over row blocks of a.
    The comparison value is the block's own diagonal entry, so b_i never outranks itself by rounding;
    ties count in favour of the translation."""
    ua, ub = _aligned(a, b)
    ranks = np.empty(len(ua), dtype=np.int64)
    for start, stop in _blocks(len(ub)):
        sims = ua[start:stop] @ ub.T
        own = sims[np.arange(stop - start), np.arange(start, stop)]
        ranks[start:stop] = np.sum(sims > own[:, None], axis=1)
    return ranks


def cross_lingual_hits(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """hit_i = [b_i is among the k rows of b with the highest cosine to a_i] (ties in favour of b_i),
    one boolean per row of a: the per-sample form of recall@k, for bootstrap intervals."""
    if not 1 <= k <= len(b):
        raise ValueError(f"k must lie in [1, {len(b)}], got {k}")
    return _translation_ranks(a, b) < k


def cross_lingual_recall(a: np.ndarray, b: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Cross-lingual retrieval recall@k = mean_i hit_i (see ``cross_lingual_hits``) for every k in
    ``ks``, keyed "xling_r{k}"; one blockwise pass serves every k."""
    bad = [k for k in ks if not 1 <= k <= len(b)]
    if bad:
        raise ValueError(f"every k must lie in [1, {len(b)}], got {bad}")
    ranks = _translation_ranks(a, b)
    return {f"xling_r{k}": float(np.mean(ranks < k)) for k in ks}


def language_separability(embeddings_by_lang: dict[str, np.ndarray], seed: int = 0, folds: int = 5,
                          max_per_lang: int = 5000) -> float:
    """Cross-validated accuracy of multinomial logistic regression predicting the language of each
    L2-normalized text embedding (languages in sorted order; stratified, seeded-shuffled folds; each
    language subsampled to ``max_per_lang`` rows): ~1 when languages occupy separable regions, ~1/L
    for L balanced languages sharing one distribution. Protocol of ``gap.linear_separability``."""
    if len(embeddings_by_lang) < 2:
        raise ValueError(f"language separability needs at least two languages, got {sorted(embeddings_by_lang)}")
    groups = [embeddings_by_lang[lang] for lang in sorted(embeddings_by_lang)]
    return linear_separability(groups, method="logreg", folds=folds, seed=seed, max_per_group=max_per_lang)
