"""Coverage of every confidence interval the warehouse stores: over >= 200 simulated data sets whose true
value is known (a closed form or a large Monte Carlo), the nominal 95% interval must contain the truth at
least 90% of the time (docs/fidelity.md: intervals of pairwise statistics resample rows; the CLIP loss
resamples batches). Small n and vectorized draws keep the whole file to a few seconds."""

from __future__ import annotations

import numpy as np
import pytest

from conescope.metrics import bootstrap, clip_loss, clusters, gap, multilingual, retrieval, zero_shot

SETS = 200
N_BOOT = 400
MIN_COVERAGE = 0.90


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cone(rng: np.random.Generator, n: int, d: int = 6, weight: float = 0.6) -> np.ndarray:
    """Unit rows around a fixed common direction (the cone of CLIP-like embeddings)."""
    common = np.zeros(d)
    common[0] = 1.0
    return _unit(weight * common + rng.standard_normal((n, d)) / np.sqrt(d))


def _pairs(rng: np.random.Generator, n: int, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(image, text) unit rows: text = its image plus noise, both in shifted cones (a modality gap)."""
    base = rng.standard_normal((n, d))
    shift_i, shift_t = np.zeros(d), np.zeros(d)
    shift_i[0], shift_t[1] = 1.0, 1.0
    return _unit(base + shift_i), _unit(base + 0.8 * rng.standard_normal((n, d)) + shift_t)


def _coverage(intervals: list[tuple[float, float | None, float | None]], truth: float) -> float:
    assert len(intervals) >= SETS and all(lo is not None for _, lo, _ in intervals)
    return float(np.mean([lo <= truth <= hi for _, lo, hi in intervals]))


def test_mean_cosine_interval_resamples_rows_and_covers_the_population_value():
    # truth: E <u, v> over independent rows = ||E u||^2, from a large sample of the same cone
    big = _cone(np.random.default_rng(10_000), 2_000_000)
    truth = float(np.sum(big.mean(axis=0) ** 2))
    rng = np.random.default_rng(0)
    sets = [_cone(rng, 40) for _ in range(SETS)]
    rows = [bootstrap.pairwise_mean_cosine_ci(x, seed=i, n_boot=N_BOOT) for i, x in enumerate(sets)]
    # the per-row scheme it replaces: each row's mean cosine with the others, bootstrapped as independent
    naive = []
    for i, x in enumerate(sets):
        per_row = (x @ x.sum(axis=0) - 1.0) / (len(x) - 1)
        naive.append(bootstrap.mean_ci(per_row, seed=i, n_boot=N_BOOT))
    cover, cover_naive = _coverage(rows, truth), _coverage(naive, truth)
    print(f"mean_cosine coverage: rows resampled {cover:.3f}, per-row terms as independent {cover_naive:.3f}")
    assert cover >= MIN_COVERAGE
    assert cover_naive < 0.85  # the old scheme under-covers (about 68% in the simulation)


def test_pairwise_interval_replicate_is_the_statistic_of_the_resampled_distinct_rows():
    rng = np.random.default_rng(1)
    x = _cone(rng, 12)
    value, lo, hi = bootstrap.pairwise_mean_cosine_ci(x, seed=3, n_boot=64)
    cos = x @ x.T
    assert value == pytest.approx(cos[~np.eye(12, dtype=bool)].mean(), rel=1e-12)
    # one replicate by hand: rows drawn with replacement, pairs of distinct original rows only
    (_, w), *_ = list(bootstrap._resample_weights(12, 3, 64))
    weights = w[0]
    pair_w = np.outer(weights, weights)
    np.fill_diagonal(pair_w, 0.0)
    by_hand = (pair_w * cos).sum() / pair_w.sum()
    u = x
    sw = weights @ u
    assert (sw @ sw - weights @ weights) / (144 - weights @ weights) == pytest.approx(by_hand, rel=1e-12)
    assert lo <= value <= hi


def test_pair_cosine_means_cover_the_population_values():
    rng_big = np.random.default_rng(10_001)
    img_big, txt_big = _pairs(rng_big, 1_000_000)
    pos_truth = float(np.einsum("ij,ij->i", img_big, txt_big).mean())
    rand_truth = float(img_big.mean(axis=0) @ txt_big.mean(axis=0))  # independent image and text
    rng = np.random.default_rng(2)
    pos_ci, rand_ci = [], []
    for i in range(SETS):
        img, txt = _pairs(rng, 40)
        pos_ci.append(bootstrap.mean_ci(gap.pair_cosines(img, txt, np.arange(40)), seed=i, n_boot=N_BOOT))
        rand_ci.append(bootstrap.cross_pair_mean_cosine_ci(img, txt, seed=i, n_boot=N_BOOT))
    print(f"pos_cosine_mean coverage {_coverage(pos_ci, pos_truth):.3f}, "
          f"rand_cosine_mean {_coverage(rand_ci, rand_truth):.3f}")
    assert _coverage(pos_ci, pos_truth) >= MIN_COVERAGE
    assert _coverage(rand_ci, rand_truth) >= MIN_COVERAGE


@pytest.fixture(scope="module")
def clip_sets():
    """Per-sample loss terms of SETS simulated sets (24 full batches of 16 and a short one of 8 each),
    computed in two calls (set boundaries fall on batch boundaries), and the true expected losses."""
    batch, full = 16, 24
    img_big, txt_big = _pairs(np.random.default_rng(10_002), batch * 10_000)
    # the expected loss of a full batch and of the short one; the estimand weighs them as the mean does
    truth = {}
    for size in (batch, batch // 2):
        i2t, t2i = clip_loss.clip_loss_per_sample(img_big, txt_big, logit_scale=10.0, batch_size=size)
        truth[size] = {"loss": ((i2t + t2i) / 2).mean(), "loss_i2t": i2t.mean(), "loss_t2i": t2i.mean()}
    weights = {"samples": (full * batch, batch // 2), "batches": (full, 1)}
    truth = {over: {k: (w[0] * truth[batch][k] + w[1] * truth[batch // 2][k]) / sum(w) for k in truth[batch]}
             for over, w in weights.items()}
    rng = np.random.default_rng(3)
    img, txt = _pairs(rng, SETS * batch * full)
    long_a, long_b = (t.reshape(SETS, -1) for t in clip_loss.clip_loss_per_sample(img, txt, 10.0, batch_size=batch))
    img, txt = _pairs(rng, SETS * batch // 2)
    short_a, short_b = (t.reshape(SETS, -1) for t in clip_loss.clip_loss_per_sample(img, txt, 10.0,
                                                                                       batch_size=batch // 2))
    terms = [(np.r_[long_a[i], short_a[i]], np.r_[long_b[i], short_b[i]]) for i in range(SETS)]
    return batch, truth, terms


@pytest.mark.parametrize("mean_over", ["samples", "batches"])
def test_clip_loss_interval_resamples_batches(clip_sets, mean_over):
    batch, truths, terms = clip_sets
    truth = truths[mean_over]
    intervals: dict[str, list] = {k: [] for k in truth}
    for i, (a, b) in enumerate(terms):
        for key, t in (("loss", (a + b) / 2), ("loss_i2t", a), ("loss_t2i", b)):
            intervals[key].append(bootstrap.batch_mean_ci(t, batch, seed=i, n_boot=N_BOOT, weighting=mean_over))
    for key, t in truth.items():
        cover = _coverage(intervals[key], t)
        print(f"{key} ({mean_over}) coverage {cover:.3f}")
        assert cover >= MIN_COVERAGE, key


def test_amumo_loss_interval_covers_the_expected_loss():
    batch, full = 50, 25
    img_big, txt_big = _pairs(np.random.default_rng(10_003), batch * 2_000)
    truth = clip_loss.amumo_loss_per_sample(img_big, txt_big, 10.0, batch).mean()
    img, txt = _pairs(np.random.default_rng(4), SETS * batch * full)
    terms = clip_loss.amumo_loss_per_sample(img, txt, 10.0, batch).reshape(SETS, -1)
    intervals = [bootstrap.batch_mean_ci(t, batch, seed=i, n_boot=N_BOOT) for i, t in enumerate(terms)]
    cover = _coverage(intervals, truth)
    print(f"loss_i2t_amumo coverage {cover:.3f}")
    assert cover >= MIN_COVERAGE


def test_zero_shot_interval_covers_the_classifier_accuracy():
    d, classes = 6, 5
    prompts = _unit(np.random.default_rng(5).standard_normal((classes, d)))

    def draw(rng, n):
        labels = rng.integers(0, classes, size=n)
        return _unit(prompts[labels] + 0.9 * rng.standard_normal((n, d))), labels

    img_big, lab_big = draw(np.random.default_rng(10_004), 1_000_000)
    truth = {k: zero_shot.zero_shot_hits(img_big, lab_big, prompts, k).mean() for k in (1, 2)}
    rng = np.random.default_rng(6)
    for k, t in truth.items():
        intervals = []
        for i in range(SETS):
            img, lab = draw(rng, 60)
            intervals.append(bootstrap.mean_ci(zero_shot.zero_shot_hits(img, lab, prompts, k), seed=i, n_boot=N_BOOT))
        cover = _coverage(intervals, t)
        print(f"top{k} coverage {cover:.3f}")
        assert cover >= MIN_COVERAGE


def test_retrieval_and_cross_lingual_intervals_cover_recall_at_the_gallery_size():
    n = 40
    # truth: the expected recall@k of a gallery of n independent pairs, over 5,000 galleries
    big_rng = np.random.default_rng(10_005)
    truths: dict[str, list] = {}
    for _ in range(5_000):
        img, txt = _pairs(big_rng, n)
        for key, h in retrieval.retrieval_hits(img, txt, np.arange(n), ks=(1, 5)).items():
            truths.setdefault(key, []).append(h.mean())
        truths.setdefault("xling_r1", []).append(multilingual.cross_lingual_hits(txt, img, 1).mean())
    truth = {k: float(np.mean(v)) for k, v in truths.items()}
    rng = np.random.default_rng(7)
    intervals: dict[str, list] = {k: [] for k in truth}
    for i in range(SETS):
        img, txt = _pairs(rng, n)
        hits = retrieval.retrieval_hits(img, txt, np.arange(n), ks=(1, 5))
        hits["xling_r1"] = multilingual.cross_lingual_hits(txt, img, 1)
        for key, h in hits.items():
            intervals[key].append(bootstrap.mean_ci(h, seed=i, n_boot=N_BOOT))
    for key, t in truth.items():
        cover = _coverage(intervals[key], t)
        print(f"{key} coverage {cover:.3f}")
        assert cover >= MIN_COVERAGE, key


def test_sampled_silhouette_interval_covers_the_exact_score():
    rng = np.random.default_rng(8)
    intervals, truths = [], []
    for i in range(SETS):
        labels = rng.integers(0, 3, size=400)
        centres = np.eye(6)[:3] * 1.5
        x = _unit(centres[labels] + rng.standard_normal((400, 6)))
        intervals.append(clusters.silhouette(x, labels, seed=i, exact_max=100, sample_size=60, n_samples=10))
        truths.append(clusters.silhouette(x, labels, exact_max=10_000)[0])
    cover = float(np.mean([lo <= t <= hi for (_, lo, hi), t in zip(intervals, truths, strict=True)]))
    print(f"silhouette (sampled) coverage {cover:.3f}")
    assert cover >= MIN_COVERAGE


def test_loss_interval_needs_enough_batches():
    terms = np.random.default_rng(9).random(64 * (bootstrap.MIN_BATCHES - 1))
    assert bootstrap.batch_mean_ci(terms, 64, seed=0, n_boot=50)[1:] == (None, None)
    value, lo, hi = bootstrap.batch_mean_ci(np.r_[terms, terms[:64]], 64, seed=0, n_boot=50)
    assert lo <= value <= hi
    # batch means: a short last batch weighs as a whole one
    two = np.r_[np.zeros(64), np.ones(16)]
    assert bootstrap.batch_mean_ci(two, 64, seed=0, n_boot=10, weighting="batches")[0] == 0.5
    assert bootstrap.batch_mean_ci(two, 64, seed=0, n_boot=10)[0] == pytest.approx(16 / 80)


def test_pairwise_interval_is_float64_exact_on_a_tight_cone():
    """The float32 products run on deviations from the mean: a cone of mean cosine ~1 keeps replicates
    exact (a float64 recomputation of every replicate gives the same interval)."""
    x = (np.ones((12, 64)) + 1e-3 * np.random.default_rng(0).standard_normal((12, 64))).astype(np.float32)
    value, lo, hi = bootstrap.pairwise_mean_cosine_ci(x, seed=0, n_boot=200)
    assert lo <= value <= hi
    u = _unit(x.astype(np.float64))
    reps = []
    for _, w in bootstrap._resample_weights(12, 0, 200):
        pair_w = w[:, :, None] * w[:, None, :]
        pair_w[:, np.arange(12), np.arange(12)] = 0.0
        reps.extend((pair_w * (u @ u.T)).sum(axis=(1, 2)) / pair_w.sum(axis=(1, 2)))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-10)  # spread: 2e-7
