"""Percentile bootstrap confidence intervals for metrics that are means over samples (DESIGN.md:
"Bootstrap confidence intervals for every metric that is a mean over samples").

Efron & Tibshirani 1993, "An Introduction to the Bootstrap", section 13.3 (percentile interval):
draw B resamples of the n indices with replacement, recompute the statistic on each, and report the
alpha/2 and 1 - alpha/2 quantiles of the B replicates. Resamples are drawn in chunks of rows of a
B x n index matrix, so memory stays O(n) whatever B; the generator's stream is consumed exactly as
by B successive ``rng.integers(0, n, size=n)`` calls, so the chunking does not change the result.
"""

from __future__ import annotations

import numpy as np

# Indices (int64) per chunk of resamples: 32 MB, plus as much for the gathered values.
_CHUNK_ELEMENTS = 1 << 22


def _check(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _as_samples(values: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-sample values, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(v)))} non-finite value(s)")
    return v


def _resampled_means(columns: list[np.ndarray], seed: int, n_boot: int) -> list[np.ndarray]:
    """Means of each column over the same B resamples of the row indices (paired resampling)."""
    rng = np.random.default_rng(seed)
    n = len(columns[0])
    per_chunk = max(1, _CHUNK_ELEMENTS // n)
    means = [np.empty(n_boot) for _ in columns]
    for start in range(0, n_boot, per_chunk):
        stop = min(n_boot, start + per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        for column, out in zip(columns, means, strict=True):
            out[start:stop] = column[idx].mean(axis=1)
    return means


def _percentile_interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, seed: int, n_boot: int = 1000, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high): the sample mean (1/n) sum_i v_i and the percentile bootstrap interval
    [q_{alpha/2}, q_{1-alpha/2}] of the means of ``n_boot`` resamples (Efron & Tibshirani 1993,
    section 13.3), quantiles by linear interpolation (``numpy.quantile``). Same seed, same interval."""
    _check(n_boot, alpha)
    v = _as_samples(values, "values")
    (replicates,) = _resampled_means([v], seed, n_boot)
    return (float(v.mean()), *_percentile_interval(replicates, alpha))


def ratio_ci(num: np.ndarray, den: np.ndarray, seed: int, n_boot: int = 1000,
             alpha: float = 0.05) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) for R = mean(num) / mean(den) over paired per-sample values: each
    resample draws sample indices once and takes both means on them (the pairs stay together), and the
    interval is the percentile interval of the resampled ratios (Efron & Tibshirani 1993, section
    13.3). With ``den`` all ones it is exactly ``mean_ci(num)`` for the same seed."""
    _check(n_boot, alpha)
    num, den = _as_samples(num, "num"), _as_samples(den, "den")
    if num.shape != den.shape:
        raise ValueError(f"num and den must be paired: {num.size} vs {den.size} values")
    if den.mean() == 0:
        raise ValueError("ratio of means is undefined: mean(den) is 0")
    num_means, den_means = _resampled_means([num, den], seed, n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        replicates = num_means / den_means
    return (float(num.mean() / den.mean()), *_percentile_interval(replicates, alpha))
