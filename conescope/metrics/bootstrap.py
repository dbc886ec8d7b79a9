"""Percentile bootstrap confidence intervals for metrics that are means over samples (every such
metric gets one: the ``ci_low`` and ``ci_high`` columns of docs/storage.md, "Warehouse").

Efron & Tibshirani 1993, "An Introduction to the Bootstrap", section 13.3 (percentile interval):
draw B resamples of the n indices with replacement, recompute the statistic on each, and report the
alpha/2 and 1 - alpha/2 quantiles of the B replicates.

Resamples are drawn in fixed chunks of ``_RESAMPLES_PER_CHUNK``, chunk c from its own generator
``SeedSequence(seed).spawn(...)[c]``, and the chunks run on every core (numpy releases the GIL while
drawing and gathering): the result depends on the seed only, not on the thread count, and memory is
O(n) per thread whatever B. 32-bit indices draw and gather 3x faster than numpy's default 64-bit ones.

For 0/1 values (hits) the resampled mean is exactly Binomial(n, p_hat) / n, so those replicates are
drawn from the binomial directly: the same distribution as resampling indices, at O(B) cost.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Batches below which the CLIP loss gets no interval: tests/test_fidelity_ci.py checks coverage with 25.
MIN_BATCHES = 20
_RESAMPLES_PER_CHUNK = 16  # 16 n int32 indices and 16 n float64 values in flight per thread


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
    n = len(columns[0])
    starts = range(0, n_boot, _RESAMPLES_PER_CHUNK)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    means = [np.empty(n_boot) for _ in columns]

    def chunk(c: int) -> None:
        start = starts[c]
        stop = min(n_boot, start + _RESAMPLES_PER_CHUNK)
        idx = np.random.default_rng(seeds[c]).integers(0, n, size=(stop - start, n), dtype=np.int32)
        for column, out in zip(columns, means, strict=True):
            out[start:stop] = np.take(column, idx).mean(axis=1)

    workers = min(len(starts), os.cpu_count() or 1)
    if workers > 1 and n * n_boot > 1_000_000:  # below that, thread start-up costs more than it saves
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(chunk, range(len(starts))))
    else:
        for c in range(len(starts)):
            chunk(c)
    return means


def _is_binary(v: np.ndarray) -> bool:
    return bool(np.all((v == 0.0) | (v == 1.0)))


def _percentile_interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, seed: int, n_boot: int = 1000, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high): the sample mean (1/n) sum_i v_i and the percentile bootstrap interval
    [q_{alpha/2}, q_{1-alpha/2}] of the means of ``n_boot`` resamples (Efron & Tibshirani 1993,
    section 13.3), quantiles by linear interpolation (``numpy.quantile``). Same seed, same interval."""
    _check(n_boot, alpha)
    v = _as_samples(values, "values")
    if _is_binary(v):
        replicates = np.random.default_rng(seed).binomial(v.size, v.mean(), size=n_boot) / v.size
    else:
        (replicates,) = _resampled_means([v], seed, n_boot)
    return (float(v.mean()), *_percentile_interval(replicates, alpha))


def ratio_ci(num: np.ndarray, den: np.ndarray, seed: int, n_boot: int = 1000,
             alpha: float = 0.05) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) for R = mean(num) / mean(den) over paired per-sample values: each
    resample draws sample indices once and takes both means on them (the pairs stay together), and the
    interval is the percentile interval of the resampled ratios (Efron & Tibshirani 1993, section
    13.3). With ``den`` all ones it is exactly ``mean_ci(num)`` for the same seed (for values that are
    not all 0/1, which ``mean_ci`` draws from the binomial)."""
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


def _resample_weights(n: int, seed: int, n_boot: int):
    """(start, W) over chunks of the B resamples: W[b, i] counts how often row i is drawn in resample b."""
    starts = range(0, n_boot, _RESAMPLES_PER_CHUNK)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    for c, start in enumerate(starts):
        rows = min(n_boot, start + _RESAMPLES_PER_CHUNK) - start
        idx = np.random.default_rng(seeds[c]).integers(0, n, size=(rows, n), dtype=np.int32)
        flat = (idx + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
        yield start, np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    u = np.asarray(x, dtype=np.float64)
    if u.ndim != 2 or len(u) < 2:
        raise ValueError(f"{name}: a mean over pairs needs an (n >= 2, d) array of rows, got shape {u.shape}")
    norms = np.linalg.norm(u, axis=1)
    bad = (norms == 0) | ~np.isfinite(norms)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} zero or non-finite row(s) cannot be normalized")
    return u / norms[:, None]


def _pair_mean_ci(a: np.ndarray, b: np.ndarray, seed: int, n_boot: int, alpha: float) -> tuple[float, float, float]:
    """Mean of <a_i, b_j> over i != j, and its row-resampling percentile interval (see
    :func:`pairwise_mean_cosine_ci`): replicate = (<sum w a, sum w b> - sum w_i^2 <a_i, b_i>) / (n^2 - sum w_i^2)."""
    _check(n_boot, alpha)
    n = len(a)
    diag = np.einsum("ij,ij->i", a, b)
    value = float((a.sum(axis=0) @ b.sum(axis=0) - diag.sum()) / (n * (n - 1)))
    replicates = np.empty(n_boot)
    # The B x n x d products dominate (1000 x 40,000 x 512 at COCO scale): they run in float32 on the
    # deviations e_i = a_i - mean(a) (the counts are exact in float32), so the rounding scales with the
    # spread of the rows, not with their common direction: sum_i w_i a_i = n mean(a) + sum_i w_i e_i
    # (sum_i w_i = n), and the products of the means are added back in float64. A tight cone (mean
    # cosine 0.98) keeps its replicates exact to ~1e-11 instead of ~1e-7.
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    ea32 = (a - ma).astype(np.float32)
    eb32 = ea32 if b is a else (b - mb).astype(np.float32)
    for start, w in _resample_weights(n, seed, n_boot):
        w32 = w.astype(np.float32)
        ea = (w32 @ ea32).astype(np.float64)
        eb = ea if b is a else (w32 @ eb32).astype(np.float64)
        cross = n * n * (ma @ mb) + n * (ea @ mb + eb @ ma) + np.einsum("bd,bd->b", ea, eb)
        self_w = np.einsum("bi,bi->b", w, w)
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates[start:start + len(w)] = (cross - (w * w) @ diag) / (n * n - self_w)
    replicates = replicates[np.isfinite(replicates)]  # a resample of one distinct row has no pair
    if replicates.size == 0:
        return value, value, value
    return (value, *_percentile_interval(replicates, alpha))


def pairwise_mean_cosine_ci(x: np.ndarray, seed: int, n_boot: int = 1000,
                            alpha: float = 0.05) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) for the mean cosine over pairs of distinct rows, U = sum_{i != j}
    <u_i, u_j> / (n (n - 1)) with u_i the L2-normalized rows (self-similarity, Ethayarajh 2019).

    U is a mean over *pairs*, so its per-row terms are not independent: bootstrapping them as if they
    were halves the spread of a degree-2 U-statistic (its variance is about 4 Var(h_1) / n, not
    Var(h_1) / n) and a nominal 95% interval covers the truth about 68% of the time
    (tests/test_fidelity_ci.py measures both). Here the *rows* are resampled and the statistic
    recomputed on each resample (Efron & Tibshirani 1993, section 13.3; for U-statistics Arcones &
    Giné 1992): with w_i the number of times row i is drawn, the replicate is the mean over pairs of
    distinct original rows, U* = (||sum_i w_i u_i||^2 - sum_i w_i^2) / (n^2 - sum_i w_i^2), in closed
    form (an n x d product per resample, never n x n). Percentile interval; same seed, same interval.
    """
    u = _unit_rows(x, "mean cosine")
    return _pair_mean_ci(u, u, seed, n_boot, alpha)


def cross_pair_mean_cosine_ci(a: np.ndarray, b: np.ndarray, seed: int, n_boot: int = 1000,
                              alpha: float = 0.05) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) for the mean cosine of non-matching pairs, sum_{i != j} cos(a_i, b_j) /
    (n (n - 1)), a_i and b_i one sample's two rows (an image and its caption): the exact mean that
    sampling random pairs estimates. Pair i is resampled as a unit (rows of both sets together) and
    the statistic recomputed, as for :func:`pairwise_mean_cosine_ci`."""
    ua, ub = _unit_rows(a, "random-pair cosine"), _unit_rows(b, "random-pair cosine")
    if ua.shape != ub.shape:
        raise ValueError(f"random-pair cosine: a and b must be paired rows, got {ua.shape} and {ub.shape}")
    return _pair_mean_ci(ua, ub, seed, n_boot, alpha)


def batch_mean_ci(per_sample: np.ndarray, batch_size: int | None, seed: int, n_boot: int = 1000,
                  alpha: float = 0.05, weighting: str = "samples") -> tuple[float, float | None, float | None]:
    """(value, ci_low, ci_high) of a mean of per-sample terms that were computed within consecutive
    batches (the CLIP loss: each term depends on every row of its batch, so terms of one batch are not
    independent, while batches of randomly ordered rows are). The *batches* are resampled: with
    ``weighting="samples"`` the value is the per-sample mean sum_k S_k / sum_k m_k (S_k, m_k the sum and
    size of batch k) and each replicate the same ratio over resampled batches (``ratio_ci``); with
    ``weighting="batches"`` the value is the mean of the batch means (a short last batch weighs as much
    as a full one, as Tyshchuk et al. average) and the replicates are means of resampled batch means.
    Below ``MIN_BATCHES`` batches there are too few independent units for a percentile interval to
    hold its level (with a single batch there is nothing to resample): the interval is (None, None)."""
    _check(n_boot, alpha)
    v = _as_samples(per_sample, "per_sample")
    size = v.size if batch_size is None else min(int(batch_size), v.size)
    starts = np.arange(0, v.size, size)
    sums, sizes = np.add.reduceat(v, starts), np.diff(np.append(starts, v.size)).astype(np.float64)
    if weighting not in ("samples", "batches"):
        raise ValueError(f"weighting must be 'samples' or 'batches', got {weighting!r}")
    means = sums / sizes
    value = float(v.mean()) if weighting == "samples" else float(means.mean())
    if len(starts) < MIN_BATCHES:
        return value, None, None
    if weighting == "batches":
        _, lo, hi = mean_ci(means, seed, n_boot, alpha)
    else:
        _, lo, hi = ratio_ci(sums, sizes, seed, n_boot, alpha)
    return value, lo, hi
