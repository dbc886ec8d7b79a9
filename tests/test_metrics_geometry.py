"""Geometry metrics (bootstrap, IsoScore, spectra, separability, pair cosines, silhouette, multilingual)
against independent oracles: the IsoScore package, scipy, scikit-learn, brute force and hand values."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IsoScore.IsoScore import IsoScore
from scipy import stats
from scipy.spatial.distance import cdist
from scipy.stats import ortho_group
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from conescope.metrics import bootstrap, isotropy, multilingual
from conescope.metrics.bootstrap import mean_ci, ratio_ci
from conescope.metrics.clusters import silhouette
from conescope.metrics.gap import modality_separability, pair_cosines, random_pair_cosines, similarity_gap
from conescope.metrics.isotropy import (
    coordinate_std,
    effective_rank,
    isoscore,
    isoscore_null,
    isoscore_null_simulated,
    isotropy_summary,
    l2_normalize,
    mean_cosine,
    mean_cosine_per_sample,
    singular_values,
)
from conescope.metrics.multilingual import (
    cross_lingual_hits,
    cross_lingual_recall,
    distance_ratio,
    language_separability,
)

PROPERTY = settings(max_examples=25, deadline=None)


def cone(n: int, d: int, seed: int, offset: float = 2.0) -> np.ndarray:
    """Gaussian noise around a shared offset direction: the narrow cone of contrastive embeddings."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + offset * rng.normal(size=d) / math.sqrt(d)


# --- bootstrap -----------------------------------------------------------------------------------

def _naive_bootstrap_means(columns: list[np.ndarray], seed: int, n_boot: int, per_chunk: int) -> list[np.ndarray]:
    """One resample at a time, chunk c of ``per_chunk`` resamples drawn from SeedSequence(seed) child c."""
    n = len(columns[0])
    draws = []
    for child in np.random.SeedSequence(seed).spawn(-(-n_boot // per_chunk)):
        rng = np.random.default_rng(child)
        block = rng.integers(0, n, size=(min(per_chunk, n_boot - len(draws)), n), dtype=np.int32)
        draws.extend(block)
    return [np.array([c[idx].mean() for idx in draws]) for c in columns]


def _naive_bootstrap_t(num: np.ndarray, den: np.ndarray, seed: int, n_boot: int, per_chunk: int,
                       alpha: float = 0.05) -> tuple[float, float, float]:
    """The bootstrap-t interval of mean(num) / mean(den) spelled out: the ratio's linearized standard
    error on the sample and on every resample, t* = (R* - R) / se*, [R - t*_hi se, R - t*_lo se]."""
    def ratio_se(x, y):
        r = x.mean() / y.mean()
        return r, np.sqrt(np.sum((x - r * y) ** 2) / (len(x) * (len(x) - 1))) / y.mean()

    value, se = ratio_se(num, den)
    draws = []
    for child in np.random.SeedSequence(seed).spawn(-(-n_boot // per_chunk)):
        rng = np.random.default_rng(child)
        draws.extend(rng.integers(0, len(num), size=(min(per_chunk, n_boot - len(draws)), len(num)), dtype=np.int32))
    t_star = []
    for idx in draws:
        r, s = ratio_se(num[idx], den[idx])
        t_star.append((r - value) / s)
    q_lo, q_hi = np.quantile(t_star, [alpha / 2, 1 - alpha / 2])
    return value, value - q_hi * se, value - q_lo * se


@pytest.mark.parametrize("cpus", [1, 2, 3])
def test_mean_ci_is_the_bootstrap_t_whatever_the_thread_count(monkeypatch, cpus):
    values = np.random.default_rng(0).exponential(size=2001)
    monkeypatch.setattr(bootstrap, "_RESAMPLES_PER_CHUNK", 7)  # 1000 = 142 chunks of 7 and one of 6
    monkeypatch.setattr(bootstrap.os, "cpu_count", lambda: cpus)
    expected = _naive_bootstrap_t(values, np.ones_like(values), seed=3, n_boot=1000, per_chunk=7, alpha=0.1)
    ci = mean_ci(values, seed=3, n_boot=1000, alpha=0.1)
    assert ci == pytest.approx(expected, rel=1e-9)
    assert ci.method == "bootstrap-t"


@pytest.mark.parametrize("k, n", [(0, 300), (300, 300), (299, 300), (1, 300), (150, 300), (0, 1), (7, 20), (19, 20)])
def test_proportion_interval_is_clopper_pearson_as_scipy_computes_it(k, n):
    hits = np.r_[np.ones(k), np.zeros(n - k)]
    ci = mean_ci(np.random.default_rng(k).permutation(hits), seed=0)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert ci.method == "clopper-pearson" and ci.value == k / n
    # scipy finds the exact bounds by root finding on the binomial tails, ours are beta quantiles
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high), rel=1e-7, abs=1e-12)
    assert ci.low < ci.high  # all hits or all misses: never a point
    ref90 = stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
    assert bootstrap.proportion_ci(hits, alpha=0.1)[1:] == pytest.approx((ref90.low, ref90.high), rel=1e-7,
                                                                          abs=1e-12)


def _exact_coverage(interval, n: int, ps: np.ndarray) -> np.ndarray:
    """P(p in interval(K, n)) for K ~ Binomial(n, p), summed over every K: exact, no simulation."""
    bounds = np.array([interval(k, n) for k in range(n + 1)])
    pmf = stats.binom.pmf(np.arange(n + 1)[None, :], n, ps[:, None])
    inside = (bounds[None, :, 0] <= ps[:, None]) & (ps[:, None] <= bounds[None, :, 1])
    return (pmf * inside).sum(axis=1)


def test_clopper_pearson_covers_every_proportion_where_wilson_does_not():
    """The choice of proportion_ci's docstring, computed exactly: near p = 0 and 1 Wilson's score
    interval (scipy's ``method="wilson"``) falls to ~0.85, Clopper-Pearson never below 0.95."""
    ps = np.r_[np.linspace(0.0005, 0.02, 40), np.linspace(0.02, 0.98, 49), np.linspace(0.98, 0.9995, 40), 0.998]

    def clopper_pearson(k, n):
        return bootstrap.proportion_ci(np.r_[np.ones(k), np.zeros(n - k)])[1:]

    def wilson(k, n):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        return ci.low, ci.high

    for n in (20, 60, 300):
        cp, wi = _exact_coverage(clopper_pearson, n, ps), _exact_coverage(wilson, n, ps)
        assert cp.min() >= 0.95 - 1e-9, (n, ps[cp.argmin()])
        assert wi.min() < 0.90, n
    # the case: true top-5 0.998 at n = 300 (the percentile bootstrap covered it 40% of the time)
    assert _exact_coverage(clopper_pearson, 300, np.array([0.998]))[0] >= 0.95


def test_mean_ci_is_seeded_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=100), rng.normal(size=10_000)
    assert mean_ci(small, seed=5) == mean_ci(small, seed=5)
    assert mean_ci(small, seed=5) != mean_ci(small, seed=6)
    widths = []
    for values in (small, large):
        mean, lo, hi = mean_ci(values, seed=0)
        assert lo < mean < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 5  # the width scales as 1 / sqrt(n): ~10x here


def test_mean_ci_agrees_with_the_t_interval_on_symmetric_values_and_leans_with_skew():
    values = np.random.default_rng(2).normal(size=400)
    mean, lo, hi = mean_ci(values, seed=0, n_boot=5000)
    ref = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (lo, hi) == pytest.approx(ref, abs=0.05 * (hi - lo))
    skewed = np.random.default_rng(3).lognormal(sigma=1.0, size=60)
    mean, lo, hi = mean_ci(skewed, seed=0, n_boot=5000)
    t_lo, t_hi = stats.t.interval(0.95, 59, loc=mean, scale=stats.sem(skewed))
    assert hi - mean > mean - lo  # a right-skewed mean's interval reaches further up
    assert hi > t_hi


def test_mean_ci_memory_is_not_n_boot_times_n():
    values = np.random.default_rng(3).normal(size=50_000)
    tracemalloc.start()
    try:
        mean_ci(values, seed=0, n_boot=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20  # all resamples at once would be 1000 x 50,000 x 8 B = 400 MB


def test_ratio_ci_resamples_pairs_jointly():
    rng = np.random.default_rng(4)
    den = rng.uniform(1, 2, size=60)
    num = 3 * den + rng.normal(scale=0.1, size=60)
    expected = _naive_bootstrap_t(num, den, seed=7, n_boot=300, per_chunk=bootstrap._RESAMPLES_PER_CHUNK)
    ci = ratio_ci(num, den, seed=7, n_boot=300)
    assert ci == pytest.approx(expected, rel=1e-9)
    assert ci.high - ci.low < 0.05  # paired resampling keeps the tight num/den coupling


def test_ratio_ci_with_unit_denominator_is_mean_ci():
    values = np.random.default_rng(5).normal(size=77)
    assert ratio_ci(values, np.ones(77), seed=2) == mean_ci(values, seed=2)
    # a constant denominator takes the two-column path: the same interval as a varying one would give
    assert ratio_ci(values, np.full(77, 2.0), seed=2) == pytest.approx(
        _naive_bootstrap_t(values, np.full(77, 2.0), seed=2, n_boot=1000, per_chunk=bootstrap._RESAMPLES_PER_CHUNK),
        rel=1e-9)


def test_ratio_ci_of_alike_units_is_a_point_and_never_nan():
    """Units of one ratio (a tower that maps every pair alike): no resample has a spread, and the
    interval is the value itself, not the NaN of infinite t* (the pipeline's check rejects NaN)."""
    values = np.full(100, np.float32(0.138811), dtype=np.float64)
    assert ratio_ci(values, np.ones(100), seed=0) == (values.mean(),) * 3
    assert ratio_ci(2 * values, np.full(100, 2.0), seed=0) == pytest.approx((values.mean(),) * 3)
    value, lo, hi = ratio_ci(values + np.r_[np.zeros(99), 1e-6], np.ones(100), seed=0)
    assert np.isfinite([lo, hi]).all() and lo <= value <= hi


@pytest.mark.parametrize("kwargs, message", [({"values": np.array([])}, "non-empty"),
                                             ({"values": np.array([1.0, np.nan])}, "non-finite"),
                                             ({"values": np.ones(3), "alpha": 1.5}, "alpha")])
def test_mean_ci_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mean_ci(seed=0, **kwargs)


def test_proportion_ci_rejects_values_that_are_not_hits():
    with pytest.raises(ValueError, match="0/1"):
        bootstrap.proportion_ci(np.array([0.0, 0.5, 1.0]))


# --- isotropy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, d, offset, seed", [(50, 4, 2.0, 0), (300, 16, 0.5, 1), (1000, 64, 8.0, 2),
                                                (20, 40, 1.0, 3)])
@pytest.mark.parametrize("normalize", [True, False])
def test_isoscore_matches_the_isoscore_package(n, d, offset, seed, normalize):
    x = cone(n, d, seed, offset) * np.random.default_rng(seed).uniform(0.5, 3.0, size=(n, 1))
    points = l2_normalize(x) if normalize else x
    # the package takes sqrt(d) in float32 (torch.sqrt of an integer tensor): agreement to ~1e-8
    assert isoscore(x, normalize=normalize) == pytest.approx(float(IsoScore(points)), rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_isoscore_of_variance_spread_evenly_over_k_dimensions(k):
    d = 6
    x = np.zeros((2 * k, d))
    x[:k, :k], x[k:, :k] = np.eye(k), -np.eye(k)  # +-e_1..e_k: equal variance in k coordinates
    assert isoscore(x) == pytest.approx((k - 1) / (d - 1), abs=1e-12)


@PROPERTY
@given(seed=st.integers(0, 10_000), n=st.integers(3, 60), d=st.integers(2, 10), scale=st.floats(1e-3, 1e3))
def test_isoscore_is_rotation_permutation_and_scale_invariant(seed, n, d, scale):
    x = cone(n, d, seed)
    q = ortho_group.rvs(d, random_state=seed)
    perm = np.random.default_rng(seed).permutation(n)
    base = isoscore(x, normalize=False)
    for other in (x @ q, x[perm], scale * x):
        assert isoscore(other, normalize=False) == pytest.approx(base, rel=1e-6, abs=1e-9)


def test_simulated_null_is_the_isoscore_of_the_same_gaussian_draws(monkeypatch):
    monkeypatch.setattr(isotropy, "_BLOCK_ELEMENTS", 10 * 7)  # 10 rows per block: the stream must not care
    draws = np.random.default_rng(11).standard_normal((95, 7))
    assert isoscore_null_simulated(95, 7, seed=11, repeats=1) == pytest.approx(isoscore(draws), rel=1e-9)


@pytest.mark.parametrize(("n", "d", "repeats"), [(20, 8, 400), (120, 64, 100), (500, 3, 400), (3000, 32, 20)])
def test_isoscore_null_matches_simulated_clouds_within_their_standard_error(n, d, repeats):
    scores = [isoscore_null_simulated(n, d, seed=s, repeats=1) for s in range(repeats)]
    standard_error = np.std(scores, ddof=1) / np.sqrt(repeats)
    assert isoscore_null(n, d) == pytest.approx(np.mean(scores), abs=4 * standard_error + 1e-6)


def test_isoscore_null_moments_are_the_expected_scatter_moments():
    # E tr(S) = n - 1 and E ||S||_F^2 from the closed form, checked on simulated unit rows
    n, d, repeats = 30, 5, 4000
    rng = np.random.default_rng(0)
    u = rng.standard_normal((repeats, n, d))
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    centred = u - u.mean(axis=1, keepdims=True)
    scatter = np.einsum("rni,rnj->rij", centred, centred)
    frobenius_sq = np.einsum("rij,rij->r", scatter, scatter)
    expected = (n - 1) + (n - 1) * (n - 2) / d + 2 * (n - 1) / (n * d)
    assert np.trace(scatter, axis1=1, axis2=2).mean() == pytest.approx(n - 1, rel=5e-3)
    assert frobenius_sq.mean() == pytest.approx(expected, rel=4 * frobenius_sq.std() / np.sqrt(repeats) / expected)


def test_isoscore_null_approaches_one_with_n_and_is_biased_near_d():
    d = 16
    near_d, medium, large = (isoscore_null(n, d) for n in (20, 500, 20_000))
    assert near_d < medium < large < 1.0
    assert near_d < 0.8
    assert large > 0.99
    with pytest.raises(ValueError, match="n >= 2"):
        isoscore_null(1, 16)


def test_effective_rank_hand_values_and_entropy_oracle():
    assert effective_rank(np.eye(7) * np.arange(1, 8)[:, None]) == pytest.approx(7.0, rel=1e-12)
    rank_one = np.outer(np.arange(1.0, 11.0), [0.3, -1.0, 2.0, 0.5])
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-12)
    x = cone(200, 12, seed=3)
    s = np.linalg.svd(l2_normalize(x), compute_uv=False)
    assert effective_rank(x) == pytest.approx(math.exp(stats.entropy(s)), rel=1e-9)
    s_raw = np.linalg.svd(x, compute_uv=False)
    assert effective_rank(x, normalize=False) == pytest.approx(math.exp(stats.entropy(s_raw)), rel=1e-9)


@pytest.mark.parametrize("n, d", [(300, 20), (15, 40)])
@pytest.mark.parametrize("normalize", [True, False])
def test_singular_values_match_numpy_svd(n, d, normalize):
    x = cone(n, d, seed=n + d)
    expected = np.linalg.svd(l2_normalize(x) if normalize else x, compute_uv=False)
    got = singular_values(x, normalize=normalize)
    assert got.shape == expected.shape
    assert np.all(np.diff(got) <= 0)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-6 * expected[0])


def test_coordinate_std_matches_numpy():
    x = cone(80, 6, seed=4) * 5
    np.testing.assert_allclose(coordinate_std(x), np.std(l2_normalize(x), axis=0), rtol=1e-12)
    np.testing.assert_allclose(coordinate_std(x, normalize=False), np.std(x, axis=0), rtol=1e-12)


def test_mean_cosine_per_sample_matches_scikit_learn():
    x = cone(90, 10, seed=5)
    sims = cosine_similarity(x)
    expected = (sims.sum(axis=1) - np.diag(sims)) / (len(x) - 1)
    per_sample = mean_cosine_per_sample(x)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-10, atol=1e-12)
    assert per_sample.mean() == pytest.approx(mean_cosine(x), rel=1e-10)


def test_isotropy_summary_adds_isoscore_and_effective_rank():
    x = cone(400, 24, seed=6, offset=6.0)
    summary = isotropy_summary(x)
    assert {"i1", "i2", "mean_cosine", "mean_vector_norm", "isoscore", "effective_rank"} <= set(summary)
    assert summary["isoscore"] == pytest.approx(isoscore(x), rel=1e-9)
    assert summary["effective_rank"] == pytest.approx(effective_rank(x), rel=1e-9)
    assert summary["i1"] == pytest.approx(isotropy.i1_i2(x)[0], rel=1e-12)


# --- modality gap --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["logreg", "svm"])
def test_modality_separability_of_separated_and_identical_clouds(method):
    rng = np.random.default_rng(7)
    image = rng.normal(size=(150, 16)) + 4.0 * np.eye(16)[0]
    text = rng.normal(size=(150, 16)) - 4.0 * np.eye(16)[0]
    assert modality_separability(image, text, method=method) >= 0.99
    same = modality_separability(rng.normal(size=(200, 16)), rng.normal(size=(200, 16)), method=method)
    assert same == pytest.approx(0.5, abs=0.12)


@pytest.mark.parametrize("method, classifier", [("logreg", LogisticRegression(max_iter=1000)),
                                                ("svm", LinearSVC(random_state=3))])
def test_modality_separability_is_cross_val_score(method, classifier):
    image, text = cone(60, 8, seed=8), cone(50, 8, seed=9)
    x = np.vstack([l2_normalize(image), l2_normalize(text)])
    y = np.r_[np.zeros(60), np.ones(50)]
    cv = StratifiedKFold(n_splits=4, shuffle=True, random_state=3)
    expected = cross_val_score(classifier, x, y, cv=cv).mean()
    assert modality_separability(image, text, method=method, folds=4, seed=3) == pytest.approx(expected, rel=1e-12)


def test_modality_separability_subsamples_each_modality_with_the_seed():
    image, text = cone(90, 8, seed=10), cone(70, 8, seed=11)
    rng = np.random.default_rng(5)
    img_rows = np.sort(rng.choice(90, 40, replace=False))
    txt_rows = np.sort(rng.choice(70, 40, replace=False))
    expected = modality_separability(image[img_rows], text[txt_rows], seed=5, max_per_modality=None)
    assert modality_separability(image, text, seed=5, max_per_modality=40) == pytest.approx(expected, rel=1e-12)


def test_modality_separability_lowers_folds_to_the_smallest_modality():
    image, text = cone(3, 4, seed=21), cone(8, 4, seed=22)
    x = np.vstack([l2_normalize(image), l2_normalize(text)])
    y = np.r_[np.zeros(3), np.ones(8)]
    expected = cross_val_score(LogisticRegression(max_iter=1000), x, y,
                               cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0)).mean()
    assert modality_separability(image, text, folds=5) == pytest.approx(expected, rel=1e-12)


def test_modality_separability_rejects_unknown_methods():
    with pytest.raises(ValueError, match="'forest'"):
        modality_separability(cone(10, 3, 0), cone(10, 3, 1), method="forest")


def test_pair_cosines_hand_values_and_scikit_learn():
    image = np.array([[1.0, 0.0], [0.0, 2.0]])
    text = np.array([[0.0, 3.0], [1.0, 1.0], [5.0, 0.0]])
    np.testing.assert_allclose(pair_cosines(image, text, np.array([1, 0, 0])), [1.0, math.sqrt(0.5), 1.0])
    image, text = cone(30, 5, seed=12), cone(45, 5, seed=13)
    index = np.random.default_rng(0).integers(0, 30, size=45)
    np.testing.assert_allclose(pair_cosines(image, text, index), cosine_similarity(image, text)[index, np.arange(45)])


def test_random_pair_cosines_are_seeded_entries_that_avoid_true_pairs():
    rng = np.random.default_rng(14)
    image = rng.normal(size=(4, 6))
    text = np.vstack([image, image[:2] + 0.01])  # text j < 4 duplicates image j: cosine 1 exactly
    index = np.array([0, 1, 2, 3, -1, 1])
    sims = cosine_similarity(image, text)
    allowed = sims[np.arange(4)[:, None] != index[None, :]]
    got = random_pair_cosines(image, text, n=500, seed=1, image_index=index)
    assert got.shape == (500,)
    assert np.all(np.min(np.abs(got[:, None] - allowed[None, :]), axis=1) < 1e-12)
    assert np.all(got < 1 - 1e-9)
    np.testing.assert_array_equal(got, random_pair_cosines(image, text, n=500, seed=1, image_index=index))
    without = random_pair_cosines(image, text, n=500, seed=1)
    assert np.any(without > 1 - 1e-12)  # unrestricted draws do hit the true pairs


def test_random_pair_cosines_refuses_when_every_pair_is_true():
    with pytest.raises(ValueError, match="true pair"):
        random_pair_cosines(np.ones((1, 2)), np.ones((3, 2)), n=5, seed=0, image_index=np.zeros(3, dtype=int))


def test_pair_cosines_refuse_zero_rows():
    with pytest.raises(ValueError, match="zero row"):
        pair_cosines(np.array([[0.0, 0.0], [1.0, 0.0]]), np.ones((2, 2)), np.array([0, 1]))


def test_similarity_gap_hand_value():
    assert similarity_gap(np.array([0.3, 0.5]), np.array([0.1, 0.2, 0.0])) == pytest.approx(0.3)


# --- clusters ------------------------------------------------------------------------------------

def _clustered(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    return rng.normal(size=(classes, d))[labels] * 1.5 + rng.normal(size=(n, d)), labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_silhouette_exact_path_is_scikit_learn(metric):
    x, labels = _clustered(300, 6, 4, seed=15)
    assert silhouette(x, labels, metric=metric) == (pytest.approx(silhouette_score(x, labels, metric=metric),
                                                                  rel=1e-12), None, None)


def test_silhouette_sampled_interval_covers_the_exact_score():
    x, labels = _clustered(6000, 8, 5, seed=16)
    exact = silhouette_score(x, labels, metric="cosine")
    results = [silhouette(x, labels, seed=seed, exact_max=1000, sample_size=1500) for seed in range(5)]
    assert sum(lo < exact < hi for _, lo, hi in results) >= 4  # a 95% interval: 5 of 5 expected, 4 tolerated
    assert all(value == pytest.approx(exact, abs=0.02) for value, _, _ in results)
    assert silhouette(x, labels, seed=0, exact_max=1000, sample_size=1500) == results[0]


@pytest.mark.parametrize("classes", [3, 40])
def test_sampled_silhouette_is_scikit_learns_on_the_same_subsamples(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, size=3000)
    x = cone(3000, 24, seed=classes) + 0.5 * rng.normal(size=(classes, 24))[labels]
    x[0], labels[0] = x[0] * 3, 99  # a singleton class: s(i) = 0 wherever it is drawn
    value, lo, hi = silhouette(x, labels, seed=4, exact_max=1000, sample_size=700, n_samples=4)
    random_state = np.random.RandomState(4)
    reference = [silhouette_score(x, labels, metric="cosine", sample_size=700, random_state=random_state)
                 for _ in range(4)]
    assert value == pytest.approx(np.mean(reference), abs=1e-6)
    assert lo < value < hi


def test_silhouette_needs_two_labels():
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        silhouette(np.random.default_rng(0).normal(size=(10, 3)), np.zeros(10))


@PROPERTY
@given(seed=st.integers(0, 10_000))
def test_silhouette_is_permutation_invariant(seed):
    x, labels = _clustered(40, 4, 3, seed=seed)
    if len(np.unique(labels)) < 2:
        return
    perm = np.random.default_rng(seed).permutation(40)
    assert silhouette(x[perm], labels[perm])[0] == pytest.approx(silhouette(x, labels)[0], rel=1e-9, abs=1e-12)


# --- multilingual --------------------------------------------------------------------------------

def _parallel(n: int, d: int, seed: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    b = cone(n, d, seed)
    return b + noise * np.random.default_rng(seed + 1).normal(size=(n, d)) + 0.3, b


@pytest.mark.parametrize("form, cdist_metric", [("sq", "sqeuclidean"), ("plain", "euclidean"), ("cos", "cosine")])
def test_distance_ratio_matches_cdist(monkeypatch, form, cdist_metric):
    monkeypatch.setattr(multilingual, "_BLOCK_ELEMENTS", 3 * 25)  # 3 rows per block
    a, b = _parallel(25, 7, seed=17)
    dist = cdist(l2_normalize(a), l2_normalize(b), metric=cdist_metric)
    n = len(a)
    expected = np.mean(np.diag(dist)) / ((dist.sum() - np.trace(dist)) / (n * (n - 1)))
    assert distance_ratio(a, b, form) == pytest.approx(expected, rel=1e-9)


def test_distance_ratio_of_identical_sets_is_zero_and_forms_are_checked():
    a, _ = _parallel(20, 5, seed=18)
    for form in ("sq", "plain", "cos"):
        assert distance_ratio(a, 3.0 * a, form) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="'manhattan'"):
        distance_ratio(a, a, "manhattan")


@PROPERTY
@given(seed=st.integers(0, 10_000), n=st.integers(3, 30), d=st.integers(2, 8))
def test_distance_ratio_is_rotation_and_permutation_invariant(seed, n, d):
    a, b = _parallel(n, d, seed)
    q = ortho_group.rvs(d, random_state=seed)
    perm = np.random.default_rng(seed).permutation(n)
    for form in ("sq", "plain", "cos"):
        base = distance_ratio(a, b, form)
        assert distance_ratio(a @ q, b @ q, form) == pytest.approx(base, rel=1e-7)
        assert distance_ratio(a[perm], b[perm], form) == pytest.approx(base, rel=1e-7)
    assert distance_ratio(a, b, "sq") == pytest.approx(distance_ratio(a, b, "cos"), rel=1e-9)


def test_cross_lingual_recall_matches_brute_force(monkeypatch):
    monkeypatch.setattr(multilingual, "_BLOCK_ELEMENTS", 4 * 60)  # 4 rows per block
    a, b = _parallel(60, 6, seed=19, noise=1.5)
    order = np.argsort(-cosine_similarity(a, b), axis=1)
    position = np.argmax(order == np.arange(60)[:, None], axis=1)
    for k in (1, 5, 60):
        np.testing.assert_array_equal(cross_lingual_hits(a, b, k), position < k)
    recall = cross_lingual_recall(a, b)
    assert recall == {f"xling_r{k}": pytest.approx(np.mean(position < k)) for k in (1, 5)}
    assert 0 < recall["xling_r1"] < recall["xling_r5"] < 1


def test_language_separability_of_separated_and_shared_distributions():
    rng = np.random.default_rng(20)
    centres = 4.0 * np.eye(12)[:3]
    separated = {lang: rng.normal(size=(120, 12)) + c for lang, c in zip(("de", "en", "fr"), centres, strict=True)}
    assert language_separability(separated) >= 0.99
    shared = {lang: rng.normal(size=(150, 12)) for lang in ("de", "en", "fr")}
    assert language_separability(shared) == pytest.approx(1 / 3, abs=0.1)
    with pytest.raises(ValueError, match="two languages"):
        language_separability({"en": shared["en"]})


def test_isotropy_profile_streams_blocks_to_the_same_values_as_the_separate_functions(monkeypatch):
    x = cone(300, 16, seed=8)
    monkeypatch.setattr(isotropy, "_BLOCK_ELEMENTS", 7 * 16)  # 7 rows per block, a short last block
    summary, per_sample = isotropy.isotropy_profile(x)
    np.testing.assert_allclose(per_sample, isotropy.mean_cosine_per_sample(x), rtol=1e-12)
    assert summary["mean_cosine"] == pytest.approx(per_sample.mean(), rel=1e-12)
    assert (summary["i1"], summary["i2"]) == pytest.approx(isotropy.i1_i2(x), rel=1e-6)
    assert summary["isoscore"] == pytest.approx(isotropy.isoscore(x), rel=1e-9)
    assert summary["effective_rank"] == pytest.approx(isotropy.effective_rank(x), rel=1e-9)
    assert summary["mean_vector_norm"] == pytest.approx(isotropy.mean_vector_norm(x), rel=1e-12)
    with pytest.raises(ValueError, match="zero row"):
        isotropy.isotropy_profile(np.vstack([x, np.zeros((1, 16))]))


def test_i1_i2_unit_path_agrees_with_the_float64_log_sum_exp_path():
    u = l2_normalize(cone(2000, 32, seed=9))
    assert isotropy.i1_i2(u) == pytest.approx(isotropy.i1_i2(u, normalize=False), rel=1e-6)
