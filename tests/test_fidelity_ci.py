"""Coverage of every confidence interval the warehouse stores: over simulated data sets whose true
value is known (a closed form or a large Monte Carlo), the nominal 95% interval must contain the truth
at least ``MIN_COVERAGE`` = 93% of the time, at the edges included: hit rates near 0 and 1 (the
zero-shot rows of class-disjoint protocols, recall@5 of an easy gallery), tight cones, CLIP losses of
clustered sets over 25 batches (docs/fidelity.md; the methods are in ``conescope.metrics.bootstrap``).

By default each interval in each setting is simulated on ``SETS`` = 400 data sets (the sampled
silhouette on 200; the CLIP loss's ``loss`` only, its one-direction terms take the same method): 24
coverages measured, about a minute on a busy 2-core machine; the standard error of a measured coverage
of 0.95 is 0.011. The heavy versions (``-m heavy``) use ``HEAVY_SETS`` = 2,000 sets (silhouette 1,000)
and every CLIP-loss term. The exact coverage of the proportions' interval (every k of a binomial) is in
``tests/test_metrics_geometry.py``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from conescope.metrics import bootstrap, clip_loss, clusters, gap, multilingual, retrieval, zero_shot

SETS = 400
HEAVY_SETS = 2000
N_BOOT = 400
MIN_COVERAGE = 0.93
SIZES = [SETS, pytest.param(HEAVY_SETS, marks=pytest.mark.heavy)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cone(rng: np.random.Generator, n: int, d: int = 6, weight: float = 0.6) -> np.ndarray:
    """Unit rows around a fixed common direction (the cone of CLIP-like embeddings)."""
    common = np.zeros(d)
    common[0] = 1.0
    return _unit(weight * common + rng.standard_normal((n, d)) / np.sqrt(d))


def _pairs(rng: np.random.Generator, n: int, d: int = 6, noise: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(image, text) unit rows: text = its image plus noise, both in shifted cones (a modality gap)."""
    base = rng.standard_normal((n, d))
    shift_i, shift_t = np.zeros(d), np.zeros(d)
    shift_i[0], shift_t[1] = 1.0, 1.0
    return _unit(base + shift_i), _unit(base + noise * rng.standard_normal((n, d)) + shift_t)


def _clustered_pairs(rng: np.random.Generator, n: int, d: int = 8, classes: int = 4,
                     spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """(image, text) unit rows of a few tight classes: a batch that draws many rows of one class has a
    much higher CLIP loss, so the batch losses are few, skewed units."""
    centres = _unit(np.random.default_rng(99).standard_normal((classes, d)))
    base = centres[rng.integers(0, classes, n)] + spread * rng.standard_normal((n, d))
    return _unit(base), _unit(base + 0.3 * rng.standard_normal((n, d)))


def _coverage(intervals: list, truth: float, sets: int) -> float:
    assert len(intervals) >= sets and all(ci[1] is not None for ci in intervals)
    return float(np.mean([lo <= truth <= hi for _, lo, hi in intervals]))


@pytest.mark.parametrize("sets", SIZES)
@pytest.mark.parametrize("weight, n", [(0.6, 40), (3.0, 60)])  # mean cosine 0.26; a tight cone, 0.91
def test_mean_cosine_interval_over_rows_covers_the_population_value(sets, weight, n):
    # truth: E <u, v> over independent rows = ||E u||^2, from a large sample of the same cone
    big = _cone(np.random.default_rng(10_000), 1_000_000, weight=weight)
    truth = float(np.sum(big.mean(axis=0) ** 2))
    rng = np.random.default_rng(0)
    data = [_cone(rng, n, weight=weight) for _ in range(sets)]
    rows = [bootstrap.pairwise_mean_cosine_ci(x) for x in data]
    # the per-row scheme replaced before: each row's mean cosine with the others, as if independent
    naive = []
    for x in data:
        per_row = (x @ x.sum(axis=0) - 1.0) / (n - 1)
        naive.append((0.0, *stats.t.interval(0.95, n - 1, loc=per_row.mean(), scale=stats.sem(per_row))))
    cover, cover_naive = _coverage(rows, truth, sets), _coverage(naive, truth, sets)
    print(f"mean_cosine ({weight}, n={n}) coverage: jackknife over rows {cover:.3f}, per-row terms {cover_naive:.3f}")
    assert cover >= MIN_COVERAGE
    assert cover_naive < 0.85


def _u_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """The slow definition: the mean of cos(x_i, y_j) over every ordered pair i != j, one at a time."""
    n = len(x)
    total = sum(float(_unit(x[i]) @ _unit(y[j])) for i in range(n) for j in range(n) if i != j)
    return total / (n * (n - 1))


@pytest.mark.parametrize("cross", [False, True])
def test_jackknife_interval_is_the_slow_leave_one_out_definition(cross):
    rng = np.random.default_rng(1)
    x = (3.0 * rng.standard_normal((14, 5)) + 1.0).astype(np.float32)
    y = (x + rng.standard_normal((14, 5))).astype(np.float32) if cross else x
    ci = bootstrap.cross_pair_mean_cosine_ci(x, y, alpha=0.1) if cross else bootstrap.pairwise_mean_cosine_ci(x, 0.1)
    xs, ys = x.astype(np.float64), y.astype(np.float64)
    value = _u_statistic(xs, ys)
    loo = np.array([_u_statistic(np.delete(xs, i, 0), np.delete(ys, i, 0)) for i in range(14)])
    se = np.sqrt(13 / 14 * np.sum((loo - loo.mean()) ** 2))  # Efron & Tibshirani 1993, eq. 11.5
    half = stats.t.ppf(0.95, 13) * se
    assert ci == pytest.approx((value, value - half, value + half), rel=1e-10, abs=1e-13)
    assert ci.method == "jackknife-t"


def test_jackknife_interval_is_float64_exact_on_a_tight_cone():
    """Rows of mean cosine ~1 (float32 like stored embeddings): the closed form keeps the spread of the
    leave-one-out values, 1e-7 of the value, exact (a float64 recomputation gives the same interval)."""
    x = (np.ones((12, 64)) + 1e-3 * np.random.default_rng(0).standard_normal((12, 64))).astype(np.float32)
    value, lo, hi = bootstrap.pairwise_mean_cosine_ci(x)
    u = _unit(x.astype(np.float64))
    cos = u @ u.T
    loo = []
    for i in range(12):
        keep = np.delete(np.arange(12), i)
        sub = cos[np.ix_(keep, keep)]
        loo.append(sub[~np.eye(11, dtype=bool)].mean())
    se = np.sqrt(11 / 12 * np.sum((np.array(loo) - np.mean(loo)) ** 2))
    assert hi - lo > 0
    assert (lo, hi) == pytest.approx((value - stats.t.ppf(0.975, 11) * se, value + stats.t.ppf(0.975, 11) * se),
                                     abs=1e-12)


def test_pairwise_interval_needs_three_rows_and_stays_within_cosine_bounds():
    assert bootstrap.pairwise_mean_cosine_ci(np.eye(2))[1:] == (None, None)
    same = bootstrap.pairwise_mean_cosine_ci(np.ones((5, 3)))
    assert tuple(same) == pytest.approx((1.0, 1.0, 1.0))
    lo_hi = bootstrap.pairwise_mean_cosine_ci(np.r_[np.ones((3, 2)), np.array([[1.0, -1.0]])])
    assert -1.0 <= lo_hi.low <= lo_hi.value <= lo_hi.high <= 1.0


@pytest.mark.parametrize("sets", SIZES)
def test_pair_cosine_means_cover_the_population_values(sets):
    rng_big = np.random.default_rng(10_001)
    img_big, txt_big = _pairs(rng_big, 1_000_000)
    pos_truth = float(np.einsum("ij,ij->i", img_big, txt_big).mean())
    rand_truth = float(img_big.mean(axis=0) @ txt_big.mean(axis=0))  # independent image and text
    rng = np.random.default_rng(2)
    pos_ci, rand_ci = [], []
    for i in range(sets):
        img, txt = _pairs(rng, 40)
        pos = gap.pair_cosines(img, txt, np.arange(40))
        pos_ci.append(bootstrap.ratio_ci(pos, np.ones(40), seed=i, n_boot=N_BOOT))
        rand_ci.append(bootstrap.cross_pair_mean_cosine_ci(img, txt))
    print(f"pos_cosine_mean coverage {_coverage(pos_ci, pos_truth, sets):.3f}, "
          f"rand_cosine_mean {_coverage(rand_ci, rand_truth, sets):.3f}")
    assert _coverage(pos_ci, pos_truth, sets) >= MIN_COVERAGE
    assert _coverage(rand_ci, rand_truth, sets) >= MIN_COVERAGE


def _clip_sets(draw, sets: int):
    """Per-sample loss terms of ``sets`` simulated sets (24 full batches of 16 and a short one of 8
    each), computed in two calls (set boundaries fall on batch boundaries), and the true expected
    losses (mean over samples and over batches)."""
    batch, full = 16, 24
    img_big, txt_big = draw(np.random.default_rng(10_002), batch * 10_000)
    truth = {}
    for size in (batch, batch // 2):
        i2t, t2i = clip_loss.clip_loss_per_sample(img_big, txt_big, logit_scale=20.0, batch_size=size)
        truth[size] = {"loss": ((i2t + t2i) / 2).mean(), "loss_i2t": i2t.mean(), "loss_t2i": t2i.mean()}
    weights = {"samples": (full * batch, batch // 2), "batches": (full, 1)}
    truth = {over: {k: (w[0] * truth[batch][k] + w[1] * truth[batch // 2][k]) / sum(w) for k in truth[batch]}
             for over, w in weights.items()}
    rng = np.random.default_rng(3)
    img, txt = draw(rng, sets * batch * full)
    long_a, long_b = (t.reshape(sets, -1) for t in clip_loss.clip_loss_per_sample(img, txt, 20.0, batch_size=batch))
    img, txt = draw(rng, sets * batch // 2)
    short_a, short_b = (t.reshape(sets, -1) for t in clip_loss.clip_loss_per_sample(img, txt, 20.0,
                                                                                       batch_size=batch // 2))
    terms = [(np.r_[long_a[i], short_a[i]], np.r_[long_b[i], short_b[i]]) for i in range(sets)]
    return batch, truth, terms


@pytest.mark.parametrize("sets", SIZES)
@pytest.mark.parametrize("data", ["pairs", "clustered"])
@pytest.mark.parametrize("mean_over", ["samples", "batches"])
def test_clip_loss_interval_resamples_batches(sets, data, mean_over):
    batch, truths, terms = _clip_sets(_pairs if data == "pairs" else _clustered_pairs, sets)
    truth = truths[mean_over]
    intervals: dict[str, list] = {k: [] for k in truth}
    percentile = []  # the replaced interval: percentile of the resampled batch means
    keys = ("loss",) if sets == SETS else ("loss", "loss_i2t", "loss_t2i")  # one method: the heavy run does all
    intervals = {k: intervals[k] for k in keys}
    for i, (a, b) in enumerate(terms):
        for key, t in (("loss", (a + b) / 2), ("loss_i2t", a), ("loss_t2i", b))[:len(keys)]:
            intervals[key].append(bootstrap.batch_mean_ci(t, batch, seed=i, n_boot=N_BOOT, weighting=mean_over))
        if mean_over == "batches":
            means = np.add.reduceat((a + b) / 2, np.arange(0, len(a), batch)) / np.r_[np.full(24, batch), batch // 2]
            boot = means[np.random.default_rng(i).integers(0, 25, size=(N_BOOT, 25))].mean(axis=1)
            percentile.append((0.0, *np.quantile(boot, [0.025, 0.975])))
    for key in keys:
        t = truth[key]
        cover = _coverage(intervals[key], t, sets)
        print(f"{key} ({data}, {mean_over}) coverage {cover:.3f}")
        assert cover >= MIN_COVERAGE, key
    if percentile:
        print(f"loss ({data}) percentile interval coverage {_coverage(percentile, truth['loss'], sets):.3f}")


@pytest.mark.parametrize("sets", SIZES)
def test_amumo_loss_interval_covers_the_expected_loss(sets):
    batch, full = 50, 25
    img_big, txt_big = _pairs(np.random.default_rng(10_003), batch * 2_000)
    truth = clip_loss.amumo_loss_per_sample(img_big, txt_big, 10.0, batch).mean()
    img, txt = _pairs(np.random.default_rng(4), sets * batch * full)
    terms = clip_loss.amumo_loss_per_sample(img, txt, 10.0, batch).reshape(sets, -1)
    intervals = [bootstrap.batch_mean_ci(t, batch, seed=i, n_boot=N_BOOT) for i, t in enumerate(terms)]
    cover = _coverage(intervals, truth, sets)
    print(f"loss_i2t_amumo coverage {cover:.3f}")
    assert cover >= MIN_COVERAGE


@pytest.mark.parametrize("sets", SIZES)
@pytest.mark.parametrize("noise, n, ks", [(0.9, 60, (1, 2)),  # middling accuracies
                                          (0.25, 300, (5,)),  # top-5 0.9975: the edge
                                          (0.25, 300, (1,))])  # images at another class's prompt: 0.005
def test_zero_shot_interval_covers_the_classifier_accuracy_at_the_edges(sets, noise, n, ks):
    d, classes = 6, {(1, 2): 5, (5,): 20, (1,): 40}[ks]
    prompts = _unit(np.random.default_rng(5).standard_normal((classes, d)))
    wrong = np.roll(prompts, 1, axis=0) if ks == (1,) else prompts  # images sit at another class's prompt

    def draw(rng, size):
        labels = rng.integers(0, classes, size=size)
        return _unit(wrong[labels] + noise * rng.standard_normal((size, d))), labels

    img_big, lab_big = draw(np.random.default_rng(10_004), 1_000_000)
    truth = {k: zero_shot.zero_shot_hits(img_big, lab_big, prompts, k).mean() for k in ks}
    rng = np.random.default_rng(6)
    for k, t in truth.items():
        intervals, binomial_percentile = [], []
        for i in range(sets):
            img, lab = draw(rng, n)
            hits = zero_shot.zero_shot_hits(img, lab, prompts, k)
            intervals.append(bootstrap.mean_ci(hits, seed=i, n_boot=N_BOOT))
            reps = np.random.default_rng(i).binomial(n, hits.mean(), size=N_BOOT) / n  # the replaced interval
            binomial_percentile.append((0.0, *np.quantile(reps, [0.025, 0.975])))
        cover = _coverage(intervals, t, sets)
        print(f"top{k} (truth {t:.4f}, n={n}) coverage {cover:.3f}, "
              f"percentile bootstrap {_coverage(binomial_percentile, t, sets):.3f}")
        assert cover >= MIN_COVERAGE
        if t > 0.995 or t < 0.005:  # the [1, 1] and [0, 0] rows of the issue
            assert _coverage(binomial_percentile, t, sets) < 0.8


@pytest.mark.parametrize("sets", SIZES)
@pytest.mark.parametrize("noise", [0.8, 0.15])  # middling recall; an easy gallery, recall@5 near 1
def test_retrieval_and_cross_lingual_intervals_cover_recall_at_the_gallery_size(sets, noise):
    n = 40
    # truth: the expected recall@k of a gallery of n independent pairs, over 2,000 galleries at once
    big_rng = np.random.default_rng(10_005)
    truths: dict[str, list] = {}
    for _ in range(2_000):
        img, txt = _pairs(big_rng, n, noise=noise)
        for key, h in retrieval.retrieval_hits(img, txt, np.arange(n), ks=(1, 5)).items():
            truths.setdefault(key, []).append(h.mean())
        truths.setdefault("xling_r1", []).append(multilingual.cross_lingual_hits(txt, img, 1).mean())
    truth = {k: float(np.mean(v)) for k, v in truths.items()}
    rng = np.random.default_rng(7)
    intervals: dict[str, list] = {k: [] for k in truth}
    for i in range(sets):
        img, txt = _pairs(rng, n, noise=noise)
        hits = retrieval.retrieval_hits(img, txt, np.arange(n), ks=(1, 5))
        hits["xling_r1"] = multilingual.cross_lingual_hits(txt, img, 1)
        for key, h in hits.items():
            intervals[key].append(bootstrap.mean_ci(h, seed=i, n_boot=N_BOOT))
    for key, t in truth.items():
        cover = _coverage(intervals[key], t, sets)
        print(f"{key} (noise {noise}, truth {t:.4f}) coverage {cover:.3f}")
        assert cover >= MIN_COVERAGE, key


@pytest.mark.parametrize("sets", SIZES)
def test_sampled_silhouette_interval_covers_the_exact_score(sets):
    """The pipeline samples 10 x 2,000 rows only above 5,000 rows (``metrics.silhouette_exact_max``):
    subsamples of at most 40% of the rows, as here (200 of 500; half as many sets as the other
    intervals, each scores 11 silhouettes). A subsample's score is biased by O(1/m): subsamples far
    smaller than the pipeline's (60 of 400) cover less (~0.92)."""
    rng = np.random.default_rng(8)
    intervals, truths = [], []
    centres = np.eye(6)[:3] * 1.5
    for i in range(sets // 2):
        labels = rng.integers(0, 3, size=500)
        x = _unit(centres[labels] + rng.standard_normal((500, 6)))
        intervals.append(clusters.silhouette(x, labels, seed=i, exact_max=100, sample_size=200, n_samples=10))
        truths.append(clusters._sampled_cosine_silhouette(x, labels, np.arange(500)))  # every row: exact
    cover = float(np.mean([lo <= t <= hi for (_, lo, hi), t in zip(intervals, truths, strict=True)]))
    print(f"silhouette (sampled) coverage {cover:.3f} over {len(truths)} sets")
    assert cover >= MIN_COVERAGE


@pytest.mark.parametrize("sets", SIZES)
@pytest.mark.parametrize("kind, rho, n", [("spearman", 0.8, 65), ("spearman", 0.3, 200), ("pearson", 0.8, 399)])
def test_correlation_interval_covers_the_population_correlation(sets, kind, rho, n):
    """BCa over pairs (word_spearman, valnorm) on bivariate normal pairs: RG65's size at a high rho, a
    weak one over more pairs, Pearson's r at ValNorm's size and strength (at n = 100 it covered 0.935 of
    2,000 sets: a little short on fewer pairs). Spearman's population rho of a bivariate normal is
    (6 / pi) arcsin(rho / 2) (Pearson 1907; Kruskal 1958)."""
    truth = 6 / np.pi * np.arcsin(rho / 2) if kind == "spearman" else rho
    rng = np.random.default_rng(0)
    cov = [[1.0, rho], [rho, 1.0]]
    intervals = []
    for s in range(sets):
        x, y = rng.multivariate_normal([0.0, 0.0], cov, size=n).T
        intervals.append(bootstrap.correlation_ci(x, y, kind, seed=s, n_boot=N_BOOT))
    cover = _coverage(intervals, truth, sets)
    print(f"{kind} rho={rho} n={n} coverage: BCa {cover:.3f}")
    assert cover >= MIN_COVERAGE


def test_loss_interval_needs_enough_batches():
    terms = np.random.default_rng(9).random(64 * (bootstrap.MIN_BATCHES - 1))
    assert bootstrap.batch_mean_ci(terms, 64, seed=0, n_boot=50)[1:] == (None, None)
    assert bootstrap.batch_mean_ci(terms, 64, seed=0, n_boot=50).method is None
    value, lo, hi = ci = bootstrap.batch_mean_ci(np.r_[terms, terms[:64]], 64, seed=0, n_boot=50)
    assert lo <= value <= hi and ci.method == "bootstrap-t"
    # batch means: a short last batch weighs as a whole one
    two = np.r_[np.zeros(64), np.ones(16)]
    assert bootstrap.batch_mean_ci(two, 64, seed=0, n_boot=10, weighting="batches")[0] == 0.5
    assert bootstrap.batch_mean_ci(two, 64, seed=0, n_boot=10)[0] == pytest.approx(16 / 80)


def test_rows_record_their_interval_method_in_params():
    import json

    from conescope import families
    from conescope.profile import MetricSettings

    settings = MetricSettings()
    hits = families._mean_rec("d", "pair", "top5", np.ones(300), settings, params=families._params(k=5))
    assert json.loads(hits["params"]) == {"ci": "clopper-pearson", "k": 5}
    assert hits["ci_low"] < hits["value"] == hits["ci_high"] == 1.0  # all hits: not [1, 1]
    rows = families.isotropy_rows("d", "image", _cone(np.random.default_rng(0), 50), settings)
    (cosine,) = [r for r in rows if r["metric"] == "mean_cosine"]
    assert json.loads(cosine["params"]) == {"ci": "jackknife-t"}
    assert all(r["params"] is None or "ci" not in r["params"] for r in rows if r["ci_low"] is None)
    few = families._rec("d", "pair", "loss", 1.0, 10, bootstrap.batch_mean_ci(np.ones(10), 1, seed=0))
    assert few["ci_low"] is None and few["params"] is None  # no interval, no method


def test_interval_unpacks_compares_and_pickles_as_its_tuple():
    import pickle

    ci = bootstrap.mean_ci(np.r_[np.ones(30), 0.0], seed=0)
    value, low, high = ci
    assert (value, low, high) == ci == tuple(ci) and ci.method == "clopper-pearson"
    again = pickle.loads(pickle.dumps(ci))
    assert again == ci and again.method == ci.method
