"""Confidence intervals for the metrics that are means over samples, each by a method that keeps its
coverage where the metric lives: near 0 and 1 for hit rates, on few and skewed units for the CLIP loss,
over pairs for the mean cosines. Every function returns an :class:`Interval`, ``(value, low, high)``
with the name of its method (``Interval.method``, stored in the rows' ``params`` as ``ci``):

- ``clopper-pearson`` (:func:`proportion_ci`): hit rates (zero-shot top-k, retrieval recall@k,
  cross-lingual recall, linear-probe accuracy), exact binomial tails;
- ``bootstrap-t`` (:func:`ratio_ci`, :func:`mean_ci`, :func:`batch_mean_ci`): a mean or ratio of means
  over independent units (images with their captions, batches of the CLIP loss), studentized;
- ``jackknife-t`` (:func:`pairwise_mean_cosine_ci`, :func:`cross_pair_mean_cosine_ci`): means over
  pairs of rows (U-statistics), leave-one-row-out in closed form;
- ``bca`` (:func:`correlation_ci`): a Spearman or Pearson correlation over independent pairs (word pairs
  against their human scores, lexicon words against their norms), the bias-corrected and accelerated
  bootstrap.

Why not the percentile bootstrap they replace: a sample of all hits has every resample all hits, so its
interval is [1, 1] (with a true top-5 of 0.998 at n = 300 it covered 40-50% of the time); over 25
batches of a clustered set its CLIP-loss interval covered 90-92% (too narrow by sqrt((K - 1) / K) and
blind to skew); and its B x n x d products for the pairwise means took a minute at 40,000 x 512.
``tests/test_fidelity_ci.py`` measures the coverage of every interval stored, at the edges included.

Resamples (bootstrap-t) are drawn in fixed chunks of ``_RESAMPLES_PER_CHUNK``, chunk c from its own
generator ``SeedSequence(seed).spawn(...)[c]``, and the chunks run on every core (numpy releases the
GIL while drawing and gathering): the result depends on the seed only, not on the thread count, and
memory is O(n) per thread whatever B. 32-bit indices draw and gather 3x faster than numpy's 64-bit ones.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import stats

# Batches below which the CLIP loss gets no interval: with fewer independent units the studentized
# interval's own spread estimate is too noisy to trust (tests/test_fidelity_ci.py checks 25 batches).
MIN_BATCHES = 20
_RESAMPLES_PER_CHUNK = 16  # 16 n int32 indices and 16 n float64 values in flight per thread
_BLOCK_ROWS = 256  # rows upcast to float64 at a time by the pairwise intervals (1 MB at d = 512: in cache)

CLOPPER_PEARSON = "clopper-pearson"
BOOTSTRAP_T = "bootstrap-t"
JACKKNIFE_T = "jackknife-t"
BCA = "bca"
CORRELATIONS = ("spearman", "pearson")


class Interval(tuple):
    """``(value, low, high)``: unpacks and compares as that 3-tuple; ``method`` names how the bounds
    were computed (None with the bounds when there is no interval)."""

    method: str | None

    def __new__(cls, value: float, low: float | None, high: float | None, method: str | None) -> Interval:
        self = super().__new__(cls, (float(value), None if low is None else float(low),
                                     None if high is None else float(high)))
        self.method = method if low is not None else None
        return self

    def __getnewargs__(self) -> tuple:  # pickling (a tuple subclass is rebuilt from __new__'s arguments)
        return (*self, self.method)

    @property
    def value(self) -> float:
        return self[0]

    @property
    def low(self) -> float | None:
        return self[1]

    @property
    def high(self) -> float | None:
        return self[2]


def _check(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    _check_alpha(alpha)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _as_samples(values: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-sample values, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(v)))} non-finite value(s)")
    return v


def _is_binary(v: np.ndarray) -> bool:
    return bool(np.all((v == 0.0) | (v == 1.0)))


# --- hit rates -----------------------------------------------------------------------------------

def proportion_ci(hits: np.ndarray, alpha: float = 0.05) -> Interval:
    """(p_hat, low, high) of a proportion from independent 0/1 outcomes: p_hat = k / n and the
    Clopper-Pearson interval (Clopper & Pearson 1934, Biometrika 26:404), the p whose binomial tails
    reach alpha / 2: low = Beta^{-1}(alpha/2; k, n - k + 1) (0 when k = 0), high =
    Beta^{-1}(1 - alpha/2; k + 1, n - k) (1 when k = n); ``scipy.stats.binomtest(k, n)
    .proportion_ci(method="exact")`` gives the same bounds.

    Its coverage is at least 1 - alpha for every p and n (it inverts two exact one-sided tests), so a
    sample of all hits gets [(alpha/2)^(1/n), 1], never [1, 1]. Wilson's score interval is narrower
    on average but its coverage dips to 0.84-0.86 near p = 0 and 1 for n = 20-300 (Brown, Cai &
    DasGupta 2001, Statist. Sci. 16:101, Fig. 5; ``tests/test_metrics_geometry.py`` computes both
    exactly), where the zero-shot rows of class-disjoint protocols and the recall@10 of good towers
    live. Needs no seed: the bounds are exact quantiles, not resampled."""
    _check_alpha(alpha)
    v = _as_samples(hits, "hits")
    if not _is_binary(v):
        raise ValueError("hits must be 0/1 values for a proportion's interval")
    n, k = v.size, int(v.sum())
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Interval(k / n, low, high, CLOPPER_PEARSON)


# --- means and ratios over independent units: bootstrap-t ---------------------------------------

def _resampled_means(columns: list[np.ndarray], seed: int, n_boot: int) -> list[np.ndarray]:
    """Means of each column over the same B resamples of the row indices (paired resampling)."""
    n = len(columns[0])
    starts = range(0, n_boot, _RESAMPLES_PER_CHUNK)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    columns = [np.ascontiguousarray(col, dtype=np.float64) for col in columns]
    means = np.empty((n_boot, len(columns)))

    def chunk(c: int) -> None:
        start = starts[c]
        stop = min(n_boot, start + _RESAMPLES_PER_CHUNK)
        idx = np.random.default_rng(seeds[c]).integers(0, n, size=(stop - start, n), dtype=np.int32)
        # one contiguous gather and row mean per column: the mean over the middle axis of a single
        # (resamples, n, columns) gather walked memory with a stride and took 3x longer; the values
        # differ only by the summation order (~1e-16 relative)
        for j, col in enumerate(columns):
            means[start:stop, j] = np.take(col, idx).mean(axis=1)

    workers = min(len(starts), os.cpu_count() or 1)
    if workers > 1 and n * n_boot > 1_000_000:  # below that, thread start-up costs more than it saves
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(chunk, range(len(starts))))
    else:
        for c in range(len(starts)):
            chunk(c)
    return list(means.T)


def ratio_ci(num: np.ndarray, den: np.ndarray, seed: int, n_boot: int = 1000, alpha: float = 0.05) -> Interval:
    """(R, low, high) for R = mean(num) / mean(den) over K independent units (num_k, den_k): the
    bootstrap-t interval (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", section 12.5;
    second-order accurate, Hall 1988, Ann. Statist. 16:927).

    The standard error is the ratio estimator's linearization (Cochran 1977, "Sampling Techniques",
    eq. 6.9 with the K / (K - 1) correction): se(R)^2 = sum_k (num_k - R den_k)^2 / (K (K - 1) dbar^2),
    dbar = mean(den). Each of ``n_boot`` resamples of the units (pairs kept together) gives R* and se*
    by the same formulas and t* = (R* - R) / se*; the interval is [R - t*_{1-alpha/2} se,
    R - t*_{alpha/2} se], quantiles by linear interpolation (``numpy.quantile``). Studentizing makes
    the interval as wide as Student's t on few units and lets it lean with the skew of the units (the
    percentile interval does neither: over 25 batches of a clustered set it covered 90%). Resamples
    whose se* is 0 (all drawn units alike) carry no t* and are left out; when every unit has the same
    ratio num_k / den_k the interval is [R, R]. Same seed, same interval; fewer than 2 units: no
    interval (None, None)."""
    _check(n_boot, alpha)
    num, den = _as_samples(num, "num"), _as_samples(den, "den")
    if num.shape != den.shape:
        raise ValueError(f"num and den must be paired: {num.size} vs {den.size} values")
    if den.mean() == 0:
        raise ValueError("ratio of means is undefined: mean(den) is 0")
    k = num.size
    value = float(num.mean() / den.mean())
    if k < 2:
        return Interval(value, None, None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num / den
    if np.ptp(ratios) <= 1e-12 * max(1.0, abs(value)):  # every unit alike: no spread to resample
        return Interval(value, value, value, BOOTSTRAP_T)
    # residuals at the full-sample ratio: R* - R = mean(d*) / mean(den*) and the resample's residuals
    # d*_k - (R* - R) den*_k, so nothing cancels when num is close to R den
    d = num - value * den
    se = float(np.sqrt(np.sum(d * d) / (k * (k - 1)))) / den.mean()
    if np.all(den == den[0]):  # equal units (a plain mean): the resampled means of den are known
        md, mdd = _resampled_means([d, d * d], seed, n_boot)
        mm, mdm, mmm = den[0], den[0] * md, den[0] * den[0]
    else:
        md, mm, mdd, mdm, mmm = _resampled_means([d, den, d * d, d * den, den * den], seed, n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = md / mm
        spread = np.maximum(mdd - 2 * shift * mdm + shift * shift * mmm, 0.0)
        t_star = shift / (np.sqrt(spread / (k - 1)) / mm)
    t_star = t_star[np.isfinite(t_star)]  # a resample of alike units has no spread to studentize by
    if t_star.size == 0:
        return Interval(value, value, value, BOOTSTRAP_T)
    q_lo, q_hi = np.quantile(t_star, [alpha / 2, 1 - alpha / 2])
    return Interval(value, value - q_hi * se, value - q_lo * se, BOOTSTRAP_T)


def mean_ci(values: np.ndarray, seed: int, n_boot: int = 1000, alpha: float = 0.05) -> Interval:
    """(mean, low, high) of (1/n) sum_i v_i over independent samples: 0/1 values (hits) get the
    Clopper-Pearson interval of a proportion (:func:`proportion_ci`; a resampling interval collapses
    to a point on all hits or all misses), other values the bootstrap-t interval of the mean
    (:func:`ratio_ci` with a unit denominator: se = sd / sqrt(n), t* = (mean* - mean) / se*)."""
    _check(n_boot, alpha)
    v = _as_samples(values, "values")
    if _is_binary(v):
        return proportion_ci(v, alpha)
    return ratio_ci(v, np.ones_like(v), seed, n_boot, alpha)


def batch_mean_ci(per_sample: np.ndarray, batch_size: int | None, seed: int, n_boot: int = 1000,
                  alpha: float = 0.05, weighting: str = "samples") -> Interval:
    """(value, ci_low, ci_high) of a mean of per-sample terms that were computed within consecutive
    batches (the CLIP loss: each term depends on every row of its batch, so terms of one batch are not
    independent, while batches of randomly ordered rows are). The *batches* are the units of a
    bootstrap-t interval (:func:`ratio_ci`): with ``weighting="samples"`` the value is the per-sample
    mean sum_k S_k / sum_k m_k (S_k, m_k the sum and size of batch k), the ratio of the batch sums to
    the batch sizes; with ``weighting="batches"`` it is the mean of the batch means (a short last batch
    weighs as much as a full one, as Tyshchuk et al. average), the bootstrap-t interval of the mean of
    K batch means. Below ``MIN_BATCHES`` batches the interval is (None, None)."""
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
        return Interval(value, None, None, None)
    if weighting == "batches":
        _, lo, hi = ratio_ci(means, np.ones_like(means), seed, n_boot, alpha)
    else:
        _, lo, hi = ratio_ci(sums, sizes, seed, n_boot, alpha)
    return Interval(value, lo, hi, BOOTSTRAP_T)


# --- means over pairs of rows: jackknife-t -------------------------------------------------------

def _float64_blocks(*arrays: np.ndarray):
    """(slice, float64 copies of those rows of each array), ``_BLOCK_ROWS`` rows at a time into reused
    buffers: a block stays in cache while it is used, and no float64 copy of the whole array is made
    (a memory-bound machine spends more on that copy than on the whole interval)."""
    n, d = arrays[0].shape
    buffers = [np.empty((min(n, _BLOCK_ROWS), d)) for _ in arrays]
    for s in range(0, n, _BLOCK_ROWS):
        rows = slice(s, min(n, s + _BLOCK_ROWS))
        out = []
        for x, buf in zip(arrays, buffers, strict=True):
            block = buf[:rows.stop - s]
            block[...] = x[rows]
            out.append(block)
        yield rows, out


def _pair_terms(name: str, a: np.ndarray, b: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(total, g) with total = sum_{i != j} <u_i, v_j> and g_i = <u_i, S_v> + <v_i, S_u> - 2 <u_i, v_i>,
    u, v the unit rows of ``a`` and ``b`` (``b`` None: v = u), S their sums: two streamed passes in
    float64, the first for the norms and sums, the second for the dot products with the sums."""
    arrays = (a,) if b is None else (a, b)
    for x in arrays:
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"{name}: a mean over pairs needs an (n >= 2, d) array of rows, got shape {x.shape}")
    n, d = a.shape
    inv = [np.empty(n) for _ in arrays]
    sums = [np.zeros(d) for _ in arrays]
    diag = np.empty(n)
    for rows, blocks in _float64_blocks(*arrays):
        for block, inv_x, sum_x in zip(blocks, inv, sums, strict=True):
            sq = np.einsum("ij,ij->i", block, block)
            bad = ~(np.isfinite(sq) & (sq > 0))
            if bad.any():
                raise ValueError(f"{name}: {int(bad.sum())} zero or non-finite row(s) cannot be normalized")
            inv_x[rows] = 1.0 / np.sqrt(sq)
            sum_x += inv_x[rows] @ block
        if b is None:
            diag[rows] = sq * inv[0][rows] ** 2
        else:
            diag[rows] = np.einsum("ij,ij->i", blocks[0], blocks[1]) * inv[0][rows] * inv[1][rows]
    sum_u, sum_v = sums[0], sums[-1]
    g = np.empty(n)
    for rows, blocks in _float64_blocks(*arrays):
        if b is None:
            g[rows] = 2.0 * (blocks[0] @ sum_u) * inv[0][rows]
        else:
            g[rows] = (blocks[0] @ sum_v) * inv[0][rows] + (blocks[1] @ sum_u) * inv[1][rows]
    g -= 2.0 * diag
    return float(sum_u @ sum_v - diag.sum()), g


def _jackknife_t(n: int, total: float, g: np.ndarray, alpha: float) -> Interval:
    """U = total / (n (n - 1)) and its jackknife-t interval, where leaving row i out gives
    U_(i) = (total - g_i) / ((n - 1)(n - 2))."""
    value = total / (n * (n - 1))
    if n < 3:
        return Interval(value, None, None, None)
    dev = g - g.mean()
    se = float(np.sqrt((n - 1) / n * np.sum(dev * dev))) / ((n - 1) * (n - 2))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
    # a mean of cosines lies in [-1, 1]: bounds outside it cannot cover more than the clipped ones
    return Interval(value, max(-1.0, value - half), min(1.0, value + half), JACKKNIFE_T)


def pairwise_mean_cosine_ci(x: np.ndarray, alpha: float = 0.05) -> Interval:
    """(value, ci_low, ci_high) for the mean cosine over pairs of distinct rows, U = sum_{i != j}
    <u_i, u_j> / (n (n - 1)) = (||S||^2 - sum_i ||u_i||^2) / (n (n - 1)), S = sum_i u_i, u_i the
    L2-normalized rows (self-similarity, Ethayarajh 2019).

    U is a mean over *pairs*: its per-row terms are not independent (bootstrapping them as if they
    were covered the truth 68% of the time, tests/test_fidelity_ci.py). The interval is the
    jackknife-t over rows (Efron & Tibshirani 1993, chapter 11; for U-statistics Arvesen 1969, Ann.
    Math. Statist. 40:2076, who shows it consistent): U_(i), the statistic without row i, is in closed
    form U_(i) = (||S - u_i||^2 - sum_{j != i} ||u_j||^2) / ((n - 1)(n - 2)), so
    se_J^2 = (n - 1) / n sum_i (U_(i) - mean U_(.))^2 costs one n x d pass (no n x n matrix, no
    resampling), and the interval is U +- t_{n-1, 1-alpha/2} se_J, clipped to [-1, 1]. The jackknife
    variance is biased upward (Efron & Stein 1981, Ann. Statist. 9:586), never down; it replaces a
    row-resampling percentile interval (B x n x d products: a minute at 40,000 x 512 with 1,000
    resamples) that also covered less on tight cones. Fewer than 3 rows: no interval."""
    total, g = _pair_terms("mean cosine", np.asarray(x))
    return _jackknife_t(len(x), total, g, alpha)


def cross_pair_mean_cosine_ci(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> Interval:
    """(value, ci_low, ci_high) for the mean cosine of non-matching pairs, sum_{i != j} cos(a_i, b_j) /
    (n (n - 1)), a_i and b_i one sample's two rows (an image and its caption): the exact mean that
    sampling random pairs estimates, (<S_a, S_b> - D) / (n (n - 1)) with S the sums of unit rows and
    D = sum_i <u_i, v_i>. Pair i is left out as a unit (both its rows): U_(i) = (<S_a - u_i, S_b - v_i>
    - (D - <u_i, v_i>)) / ((n - 1)(n - 2)), and the interval is the jackknife-t of
    :func:`pairwise_mean_cosine_ci`."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"random-pair cosine: a and b must be paired rows, got {np.shape(a)} and {np.shape(b)}")
    total, g = _pair_terms("random-pair cosine", np.asarray(a), np.asarray(b))
    return _jackknife_t(len(a), total, g, alpha)


# --- correlations over independent pairs: BCa --------------------------------------------------------

def _correlation(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r of x and y along ``axis`` (vectorized over the other axes)."""
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(x * y, axis=axis) / np.sqrt(np.sum(x * x, axis=axis) * np.sum(y * y, axis=axis))


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho: Pearson's r of the ranks (ties at their mean rank), as ``scipy.stats.spearmanr``."""
    return _correlation(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


def _loo_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r with each pair left out in turn, from the full sums less the pair's terms (O(n))."""
    n = x.size
    x, y = x - x.mean(), y - y.mean()  # centred first: the sums of squares then lose nothing to cancellation
    sx, sy, sxx, syy, sxy = x.sum(), y.sum(), np.sum(x * x), np.sum(y * y), np.sum(x * y)
    m = n - 1
    lx, ly = sx - x, sy - y
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((sxy - x * y) - lx * ly / m) / np.sqrt(((sxx - x * x) - lx * lx / m) * ((syy - y * y) - ly * ly / m))


def _loo_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho with each pair left out in turn, without ranking n samples of n - 1 values: leaving
    pair i out lowers the mean rank of pair j by C_ij = [v_i < v_j] + [v_i = v_j] / 2 (ties keep their mean
    rank), and the left-out ranks of 1..n - 1 have mean n / 2, so each rho_(i) is a Pearson's r of
    r_j - C_ij over j != i, from sums over blocks of rows i of C (O(n^2) time, O(n x block) memory)."""
    n = x.size
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    out = np.empty(n)
    block = max(1, 2_000_000 // n)
    mean_sq = (n - 1) * (n / 2.0) ** 2
    for s in range(0, n, block):
        rows = slice(s, min(n, s + block))
        cx = (x[rows, None] < x[None, :]) + 0.5 * (x[rows, None] == x[None, :])
        cy = (y[rows, None] < y[None, :]) + 0.5 * (y[rows, None] == y[None, :])
        ax, ay = rx[None, :] - cx, ry[None, :] - cy  # every j, j = i included (its C_ii is 1/2): taken off below
        own_x, own_y = rx[rows] - 0.5, ry[rows] - 0.5
        sxy = np.einsum("ij,ij->i", ax, ay) - own_x * own_y - mean_sq
        sxx = np.einsum("ij,ij->i", ax, ax) - own_x * own_x - mean_sq
        syy = np.einsum("ij,ij->i", ay, ay) - own_y * own_y - mean_sq
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rows] = sxy / np.sqrt(sxx * syy)
    return out


def correlation_ci(x: np.ndarray, y: np.ndarray, kind: str, seed: int, n_boot: int = 1000,
                   alpha: float = 0.05) -> Interval:
    """(r, low, high) of Spearman's rho or Pearson's r between paired values (x_i, y_i) over n
    independent units i: the bias-corrected and accelerated (BCa) bootstrap interval over the pairs
    (Efron 1987, JASA 82:171; Efron & Tibshirani 1993, chapter 14, whose worked example is a
    correlation): over ``n_boot`` resamples of the pairs drawn from ``numpy.random.default_rng(seed)``,
    the resampled correlations r* at the levels Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q))), q = alpha/2
    and 1 - alpha/2, where z0 = Phi^-1(share of r* below r, ties half) corrects the bias and
    a = sum_i d_i^3 / (6 (sum_i d_i^2)^1.5), d_i = mean(r_(.)) - r_(i), the acceleration, from the
    jackknife values r_(i) (pair i left out; in closed form, ``_loo_spearman`` / ``_loo_pearson``, where
    ``scipy.stats.bootstrap(method="BCa")`` ranks n samples of n - 1 values: 5 s at the 3,500 pairs of
    SimVerb against 0.1 s; the same formulas, ``tests/test_fidelity_ci.py`` compares the two). A
    correlation lives in [-1, 1] and its sampling distribution is skewed near the ends, where BCa follows
    it and a symmetric interval does not (``tests/test_fidelity_ci.py`` measures the coverage). Fewer than
    4 pairs, or constant values (no correlation defined): no interval (None, None)."""
    _check(n_boot, alpha)
    if kind not in CORRELATIONS:
        raise ValueError(f"kind must be one of {', '.join(CORRELATIONS)}, got {kind!r}")
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must be paired: {x.size} vs {y.size} values")
    statistic, leave_one_out = (_spearman, _loo_spearman) if kind == "spearman" else (_correlation, _loo_pearson)
    value = float(statistic(x, y))
    n = x.size
    if n < 4 or not np.isfinite(value) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Interval(value, None, None, None)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // n)
    resampled = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        resampled.append(statistic(x[idx], y[idx]))
    theta = np.concatenate(resampled)
    theta = theta[np.isfinite(theta)]  # a resample of one repeated pair has no correlation
    jack = leave_one_out(x, y)
    if theta.size == 0 or not np.all(np.isfinite(jack)):
        return Interval(value, None, None, None)
    # bias correction: the share of resamples below the estimate (ties counted half), on the normal scale
    z0 = stats.norm.ppf((np.sum(theta < value) + 0.5 * np.sum(theta == value)) / theta.size)
    dev = jack.mean() - jack
    spread = np.sum(dev * dev)
    accel = float(np.sum(dev ** 3) / (6.0 * spread ** 1.5)) if spread > 0 else 0.0
    z = stats.norm.ppf([alpha / 2, 1 - alpha / 2])
    levels = stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    if not np.all(np.isfinite(levels)):  # every resample on one side of the estimate: no spread to use
        return Interval(value, None, None, None)
    low, high = np.quantile(theta, levels)
    return Interval(value, max(-1.0, float(low)), min(1.0, float(high)), BCA)
