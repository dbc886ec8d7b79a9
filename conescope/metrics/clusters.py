"""Cluster structure of embeddings against known labels: the silhouette score (Rousseeuw 1987), as
used by Mickus et al. to ask whether embeddings group by class.

s(i) = (b(i) - a(i)) / max(a(i), b(i)), a(i) the mean distance from i to the other members of its
class, b(i) the smallest mean distance from i to the members of another class; the score is the mean
of s(i) over samples (``sklearn.metrics.silhouette_score``; s(i) = 0 for a singleton class).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import silhouette_score


def _check_labels(x: np.ndarray, labels: np.ndarray) -> None:
    if len(x) != len(labels):
        raise ValueError(f"silhouette needs one label per row: {len(x)} rows, {len(labels)} labels")
    n_labels = len(np.unique(labels))
    if n_labels < 2:
        raise ValueError(f"silhouette needs at least 2 distinct labels, got {n_labels}")
    if n_labels >= len(x):
        raise ValueError(f"silhouette needs fewer distinct labels ({n_labels}) than rows ({len(x)})")


def _sampled_cosine_silhouette(x: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    """The cosine silhouette of the subsample ``rows`` (the same value as
    ``silhouette_score(x[rows], labels[rows], metric="cosine")``, to ~1e-7): distances 1 - <u_i, u_j>
    from one float32 m x m product of the unit rows, clipped to [0, 2] with a zero diagonal as
    scikit-learn's ``cosine_distances``, then per-class distance sums by ``np.add.reduceat`` over the
    rows sorted by label. A float32 product is 2x faster than scikit-learn's float64 path, and its
    rounding (~1e-7 per distance) is far below the sampling error the interval reports."""
    order = rows[np.argsort(labels[rows], kind="stable")]
    y = labels[order]
    u = np.asarray(x[order], dtype=np.float64)
    u = (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float32)
    dist = 1.0 - (u @ u.T).astype(np.float64)
    np.clip(dist, 0.0, 2.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    counts = np.diff(np.r_[starts, len(y)])
    own = np.repeat(np.arange(len(starts)), counts)
    sums = np.add.reduceat(dist, starts, axis=1)  # (m, classes in the sample)
    within = sums[np.arange(len(y)), own] / np.maximum(counts[own] - 1, 1)
    means = sums / counts
    means[np.arange(len(y)), own] = np.inf
    nearest = means.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (nearest - within) / np.maximum(within, nearest)
    score[(counts[own] == 1) | ~np.isfinite(score)] = 0.0  # a singleton's s(i) is 0 by definition
    return float(score.mean())


def silhouette(x: np.ndarray, labels: np.ndarray, seed: int = 0, exact_max: int = 5000, sample_size: int = 2000,
               n_samples: int = 10, metric: str = "cosine") -> tuple[float, float | None, float | None]:
    """(score, ci_low, ci_high) of the silhouette of ``x`` against ``labels`` under ``metric``.

    Up to ``exact_max`` rows: the exact score over all rows (``sklearn.metrics.silhouette_score``), and
    no interval (None, None). Above: the mean of ``n_samples`` scores, each on a seeded uniform
    subsample of ``sample_size`` rows without replacement, drawn as scikit-learn's ``sample_size``
    option draws them (``RandomState(seed).permutation(n)[:sample_size]`` in turn), with a 95% Student-t
    interval mean +- t_{0.975, m-1} sd / sqrt(m) over the m subsample scores. The cost is
    m * sample_size^2 distances; no n x n matrix exists on either path. Cosine subsamples are scored by
    :func:`_sampled_cosine_silhouette`, other metrics by scikit-learn.
    """
    # only the sampled rows are cast to float64 (the same values as casting all of them first): a
    # float64 copy of 40,000 x 512 rows took longer than the ten subsample scores
    x, labels = np.asarray(x), np.asarray(labels)
    _check_labels(x, labels)
    if len(x) <= exact_max or sample_size >= len(x):
        return float(silhouette_score(np.asarray(x, dtype=np.float64), labels, metric=metric)), None, None
    if n_samples < 2:
        raise ValueError(f"a sampled silhouette needs n_samples >= 2 for its interval, got {n_samples}")
    random_state = np.random.RandomState(seed)
    scores = []
    for _ in range(n_samples):
        rows = random_state.permutation(len(x))[:sample_size]
        if len(np.unique(labels[rows])) < 2:
            raise ValueError(f"a subsample of {sample_size} rows holds a single label: raise sample_size")
        if metric == "cosine":
            scores.append(_sampled_cosine_silhouette(x, labels, rows))
        else:
            scores.append(float(silhouette_score(np.asarray(x[rows], dtype=np.float64), labels[rows], metric=metric)))
    scores = np.asarray(scores)
    mean = float(scores.mean())
    half = float(stats.t.ppf(0.975, n_samples - 1) * scores.std(ddof=1) / np.sqrt(n_samples))
    return mean, mean - half, mean + half
