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


def silhouette(x: np.ndarray, labels: np.ndarray, seed: int = 0, exact_max: int = 5000, sample_size: int = 2000,
               n_samples: int = 10, metric: str = "cosine") -> tuple[float, float | None, float | None]:
    """(score, ci_low, ci_high) of the silhouette of ``x`` against ``labels`` under ``metric``.

    Up to ``exact_max`` rows: the exact score over all rows, and no interval (None, None). Above:
    the mean of ``n_samples`` scores, each on a seeded uniform subsample of ``sample_size`` rows
    without replacement (scikit-learn's ``sample_size`` option, drawn from one RandomState), with a
    95% Student-t interval mean +- t_{0.975, m-1} sd / sqrt(m) over the m subsample scores. The cost is
    m * sample_size^2 distances; scikit-learn computes them in bounded chunks, so no n x n matrix
    exists on either path.
    """
    x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels)
    _check_labels(x, labels)
    if len(x) <= exact_max or sample_size >= len(x):
        return float(silhouette_score(x, labels, metric=metric)), None, None
    if n_samples < 2:
        raise ValueError(f"a sampled silhouette needs n_samples >= 2 for its interval, got {n_samples}")
    random_state = np.random.RandomState(seed)
    scores = np.array([silhouette_score(x, labels, metric=metric, sample_size=sample_size, random_state=random_state)
                       for _ in range(n_samples)])
    mean = float(scores.mean())
    half = float(stats.t.ppf(0.975, n_samples - 1) * scores.std(ddof=1) / np.sqrt(n_samples))
    return mean, mean - half, mean + half
