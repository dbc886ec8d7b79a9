"""Timings of the geometry metrics (conescope.metrics: isotropy, bootstrap, gap, clusters, multilingual)
against the straightforward library call each one replaces: prints figures, asserts nothing.

    .venv/bin/python bench/metrics_geometry.py [--n 40000] [--d 512] [--seed 0]

Data: a synthetic cone (Gaussian noise plus a shared offset direction per modality), float32 like
stored embeddings. ``seconds`` is the metric at full n unless the note says otherwise; ``ratio`` is the
speed-up baseline_seconds / seconds. Where the baseline cannot run at full n (an n x n matrix, O(n^2 d)
work) it runs on the first m rows, our function is timed again on those same rows, and the ratio
compares the two like for like (the note gives both sizes); the sampled silhouette, which exists to
avoid the exact O(n^2) score, is compared with the exact time extrapolated to n. Peak memory is
measured by the caller.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conescope.metrics import bootstrap, clusters, gap, isotropy, multilingual  # noqa: E402

SUBSAMPLE_PAIRWISE = 5000  # rows for n x n baselines: a 5000 x 5000 float64 matrix is 200 MB
SUBSAMPLE_CDIST = 2000  # rows for scipy cdist (no BLAS: O(m^2 d) scalar loops)
SUBSAMPLE_QUADRATIC = 10_000  # rows for our own O(n^2 d) metrics


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls (time.perf_counter)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(metric: str, seconds: float, baseline: str | None = None, baseline_seconds: float | None = None,
        note: str = "", ours_at_baseline_size: float | None = None) -> dict:
    """One table row; the ratio is like for like (our time at the baseline's size when they differ)."""
    reference = seconds if ours_at_baseline_size is None else ours_at_baseline_size
    ratio = None if baseline_seconds is None else baseline_seconds / reference
    return {"metric": metric, "seconds": seconds, "baseline": baseline, "baseline_seconds": baseline_seconds,
            "ratio": ratio, "note": note}


def synthetic_cone(n: int, d: int, seed: int) -> dict[str, np.ndarray]:
    """Image and text rows around two offset directions (a modality gap), aligned translations of the
    text, and 100 class labels carried by a shared class signal."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(100, size=n)
    latent = rng.normal(size=(100, d))[labels] + rng.normal(size=(n, d))
    image = latent + 4.0 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))
    text = latent + 4.0 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))
    other_lang = text + 0.3 * rng.normal(size=d) + 0.7 * rng.normal(size=(n, d))
    return {"image": image.astype(np.float32), "text": text.astype(np.float32),
            "other_lang": other_lang.astype(np.float32), "labels": labels}


def _isotropy_rows(x: np.ndarray, seed: int) -> list[dict]:
    from IsoScore.IsoScore import IsoScore
    from scipy.special import logsumexp
    from scipy.stats import entropy
    from sklearn.metrics.pairwise import cosine_similarity
    from sklearn.preprocessing import normalize

    n, d = x.shape
    u = isotropy.l2_normalize(x)

    def i1_i2_direct() -> None:
        _, vecs = np.linalg.eigh(u.T @ u)
        logsumexp(u @ vecs, axis=0)

    def null_package() -> None:
        rng = np.random.default_rng(seed)
        for _ in range(5):
            IsoScore(normalize(rng.standard_normal((n, d))))

    def summary_separately() -> None:
        isotropy.i1_i2(x), isotropy.isoscore(x), isotropy.effective_rank(x)
        isotropy.mean_cosine(x), isotropy.mean_vector_norm(x)

    m = min(n, SUBSAMPLE_PAIRWISE)
    sub = x[:m]
    pairwise_note = f"baseline on {m} rows (n x n at n={n} would be {n * n * 8 / 2**30:.1f} GB); ratio at {m} rows"
    return [
        row("i1_i2", best_of(lambda: isotropy.i1_i2(x)), "eigh(X^T X) + logsumexp(X @ V) full n x d",
            best_of(i1_i2_direct), "published route: whole n x d projection and exp in memory"),
        row("isoscore", best_of(lambda: isotropy.isoscore(x)), "IsoScore package (torch, float64)",
            best_of(lambda: IsoScore(u)), "package given the same normalized rows"),
        row("isoscore_null", best_of(lambda: isotropy.isoscore_null(n, d)),
            "IsoScore package on 5 normalized Gaussian clouds", best_of(null_package, 1),
            f"ours: closed form from the expected moments, {isotropy.isoscore_null(n, d):.6f}; simulated (5 clouds) "
            f"{isotropy.isoscore_null_simulated(n, d, seed):.6f}"),
        row("singular_values", best_of(lambda: isotropy.singular_values(x)), "np.linalg.svd(compute_uv=False)",
            best_of(lambda: np.linalg.svd(u, compute_uv=False), 1), "Gram eigenvalues vs a full SVD"),
        row("effective_rank", best_of(lambda: isotropy.effective_rank(x)), "np.linalg.svd + scipy.stats.entropy",
            best_of(lambda: np.exp(entropy(np.linalg.svd(u, compute_uv=False))), 1)),
        row("coordinate_std", best_of(lambda: isotropy.coordinate_std(x)), "sklearn normalize + np.std",
            best_of(lambda: np.std(normalize(x.astype(np.float64)), axis=0))),
        row("isotropy_summary", best_of(lambda: isotropy.isotropy_summary(x)),
            "i1_i2, isoscore, effective_rank, mean_cosine, mean_vector_norm separately", best_of(summary_separately),
            "one shared Gram matrix"),
        row("mean_cosine", best_of(lambda: isotropy.mean_cosine(x)), "sklearn cosine_similarity(x).mean()",
            best_of(lambda: cosine_similarity(sub).mean(), 1), pairwise_note,
            best_of(lambda: isotropy.mean_cosine(sub))),
        row("mean_cosine_per_sample", best_of(lambda: isotropy.mean_cosine_per_sample(x)),
            "sklearn cosine_similarity(x).mean(axis=1)", best_of(lambda: cosine_similarity(sub).mean(axis=1), 1),
            pairwise_note, best_of(lambda: isotropy.mean_cosine_per_sample(sub))),
    ]


def _bootstrap_rows(values: np.ndarray, den: np.ndarray, seed: int) -> list[dict]:
    from scipy import stats

    def scipy_mean() -> None:
        stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile", batch=100,
                        rng=np.random.default_rng(seed))

    def scipy_ratio() -> None:
        stats.bootstrap((values, den), lambda a, b, axis=-1: np.mean(a, axis=axis) / np.mean(b, axis=axis),
                        paired=True, n_resamples=1000, method="percentile", batch=100, rng=np.random.default_rng(seed))

    note = f"{len(values)} values, 1000 resamples (ours: bootstrap-t); scipy in batches of 100 to bound its memory"
    hits = (values > np.median(values)).astype(np.float64)
    k, n = int(hits.sum()), len(hits)
    return [
        row("mean_ci", best_of(lambda: bootstrap.mean_ci(values, seed)), "scipy.stats.bootstrap percentile",
            best_of(scipy_mean, 1), note),
        row("ratio_ci", best_of(lambda: bootstrap.ratio_ci(values + 2.0, den, seed)),
            "scipy.stats.bootstrap paired percentile", best_of(scipy_ratio, 1), note),
        row("proportion_ci", best_of(lambda: bootstrap.proportion_ci(hits)), "scipy binomtest exact proportion_ci",
            best_of(lambda: stats.binomtest(k, n).proportion_ci(method="exact")), f"{n} hits, Clopper-Pearson"),
    ]


def _row_resampling_percentile(a: np.ndarray, b: np.ndarray, seed: int, n_boot: int) -> tuple[float, float]:
    """The interval the jackknife replaced: B resamples of the rows as count vectors w (B x n), the mean
    over pairs of distinct original rows of each, (<sum w u, sum w v> - sum w_i^2 <u_i, v_i>) /
    (n^2 - sum w_i^2), from float32 B x n x d products, and its percentile interval."""
    u, v = isotropy.l2_normalize(a), isotropy.l2_normalize(b)
    n = len(u)
    diag = np.einsum("ij,ij->i", u, v)
    u32, v32 = u.astype(np.float32), v.astype(np.float32)
    reps = []
    for child in np.random.SeedSequence(seed).spawn(-(-n_boot // 16)):
        idx = np.random.default_rng(child).integers(0, n, size=(16, n), dtype=np.int32)
        w = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(np.float32)
        su, sv = (w @ u32).astype(np.float64), (w @ v32).astype(np.float64)
        self_w = np.einsum("bi,bi->b", w, w)
        reps.extend((np.einsum("bd,bd->b", su, sv) - (w * w) @ diag) / (n * n - self_w))
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return float(lo), float(hi)


def _pairwise_ci_rows(image: np.ndarray, text: np.ndarray, seed: int) -> list[dict]:
    """The intervals of the means over pairs (mean_cosine, self_similarity, rand_cosine_mean) against
    the row-resampling percentile bootstrap they replaced, run with 100 resamples and scaled to the
    pipeline's 1,000 (its cost is linear in B)."""
    n, boot = len(image), 100
    rows = []
    for metric, call, a, b in (
            ("pairwise_mean_cosine_ci", lambda: bootstrap.pairwise_mean_cosine_ci(image), image, image),
            ("cross_pair_mean_cosine_ci", lambda: bootstrap.cross_pair_mean_cosine_ci(image, text), image, text)):
        old = best_of(lambda a=a, b=b: _row_resampling_percentile(a, b, seed, boot), 1) * (1000 / boot)
        rows.append(row(metric, best_of(call), "row-resampling percentile, 1000 resamples", old,
                        f"jackknife-t in closed form at n={n}; the bootstrap timed with {boot} resamples, x10"))
    return rows


def _gap_rows(image: np.ndarray, text: np.ndarray, seed: int) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics.pairwise import paired_cosine_distances
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import LinearSVC

    n = len(image)
    m = min(n, 5000)
    x = np.vstack([isotropy.l2_normalize(image[:m]), isotropy.l2_normalize(text[:m])])
    y = np.r_[np.zeros(m), np.ones(m)]
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    sep_note = f"both on 2 x {m} rows (ours subsamples each modality to {m}, instead of fitting 2 x {n} rows)"
    index = np.arange(n)
    rand_rows, rand_cols = np.random.default_rng(seed).integers(0, n, size=(2, n))
    return [
        row("modality_separability logreg", best_of(lambda: gap.modality_separability(image, text, seed=seed), 1),
            "cross_val_score(LogisticRegression)", best_of(lambda: cross_val_score(
                LogisticRegression(max_iter=1000), x, y, cv=cv), 1), sep_note),
        row("modality_separability svm", best_of(lambda: gap.modality_separability(
            image, text, method="svm", seed=seed), 1), "cross_val_score(LinearSVC)", best_of(lambda: cross_val_score(
                LinearSVC(random_state=seed), x, y, cv=cv), 1), sep_note),
        row("pair_cosines", best_of(lambda: gap.pair_cosines(image, text, index)),
            "1 - sklearn paired_cosine_distances", best_of(lambda: 1 - paired_cosine_distances(image, text)),
            f"{n} pairs"),
        row("random_pair_cosines", best_of(lambda: gap.random_pair_cosines(image, text, n, seed, image_index=index)),
            "1 - paired_cosine_distances on random rows",
            best_of(lambda: 1 - paired_cosine_distances(image[rand_rows], text[rand_cols])),
            f"{n} pairs; ours also rejects the true pairs"),
        row("similarity_gap", best_of(lambda: gap.similarity_gap(np.ones(n), np.zeros(n))), note="two means"),
    ]


def _silhouette_row(x: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from sklearn.metrics import silhouette_score

    n = len(x)
    m = min(n, SUBSAMPLE_PAIRWISE)  # sklearn's exact path holds up to 1 GB of distances per chunk
    exact_m = best_of(lambda: silhouette_score(x[:m], labels[:m], metric="cosine"), 1)
    exact_n = exact_m * (n / m) ** 2  # O(n^2 d): the exact score at n, extrapolated
    ours = best_of(lambda: clusters.silhouette(x, labels, seed=seed), 1)
    result = row("silhouette sampled", ours, "sklearn silhouette_score exact (cosine)", exact_m,
                 f"sampled (10 x 2000 rows, t interval) at n={n}; exact timed on {m} rows, ratio against it "
                 f"extrapolated to n by (n/m)^2: {exact_n:.0f} s")
    result["ratio"] = exact_n / ours
    return result


def _multilingual_rows(a: np.ndarray, b: np.ndarray, seed: int) -> list[dict]:
    from scipy.spatial.distance import cdist
    from sklearn.metrics.pairwise import cosine_similarity

    n = len(a)
    m, q = min(n, SUBSAMPLE_CDIST), min(n, SUBSAMPLE_QUADRATIC)
    ua, ub = isotropy.l2_normalize(a[:m]), isotropy.l2_normalize(b[:m])

    def cdist_ratio(metric: str) -> float:
        dist = cdist(ua, ub, metric=metric)
        return np.mean(np.diag(dist)) / ((dist.sum() - np.trace(dist)) / (m * (m - 1)))

    def brute_recall() -> None:
        order = np.argsort(-cosine_similarity(a[:m], b[:m]), axis=1)[:, :5]
        [np.mean(np.any(order[:, :k] == np.arange(m)[:, None], axis=1)) for k in (1, 5)]

    rows = []
    for form, metric in (("sq", "sqeuclidean"), ("cos", "cosine")):
        rows.append(row(f"distance_ratio {form}", best_of(lambda f=form: multilingual.distance_ratio(a, b, f)),
                        f"scipy cdist({metric}) all pairs", best_of(lambda mt=metric: cdist_ratio(mt), 1),
                        f"closed form at n={n}; cdist on {m} rows; ratio at {m} rows",
                        best_of(lambda f=form: multilingual.distance_ratio(a[:m], b[:m], f))))
    rows.append(row("distance_ratio plain", best_of(lambda: multilingual.distance_ratio(a[:q], b[:q], "plain"), 1),
                    "scipy cdist(euclidean) all pairs", best_of(lambda: cdist_ratio("euclidean"), 1),
                    f"O(n^2 d) row blocks, timed on {q} rows (~{(n / q) ** 2:.0f}x at n={n}); cdist on {m} rows; "
                    f"ratio at {m} rows", best_of(lambda: multilingual.distance_ratio(a[:m], b[:m], "plain"))))
    rows.append(row("cross_lingual_recall", best_of(lambda: multilingual.cross_lingual_recall(a[:q], b[:q]), 1),
                    "sklearn cosine_similarity + np.argsort", best_of(brute_recall, 1),
                    f"O(n^2 d) row blocks, timed on {q} rows (~{(n / q) ** 2:.0f}x at n={n}); brute force on {m} "
                    f"rows; ratio at {m} rows", best_of(lambda: multilingual.cross_lingual_recall(a[:m], b[:m]))))
    langs = {"en": b, "xx": a, "yy": b + 0.5}
    rows.append(row("language_separability", best_of(lambda: multilingual.language_separability(langs, seed), 1),
                    note=f"3 languages subsampled to 5000 rows each (of {n})"))
    return rows


def run(n: int = 40_000, d: int = 512, seed: int = 0) -> list[dict]:
    """Time every geometry metric and its baseline on a synthetic cone of n rows in d dimensions."""
    data = synthetic_cone(n, d, seed)
    image, text = data["image"], data["text"]
    per_sample = isotropy.mean_cosine_per_sample(image)
    den = np.random.default_rng(seed).uniform(0.5, 1.5, size=n)
    return (_isotropy_rows(image, seed) + _bootstrap_rows(per_sample, den, seed)
            + _pairwise_ci_rows(image, text, seed) + _gap_rows(image, text, seed)
            + [_silhouette_row(image, data["labels"], seed)] + _multilingual_rows(data["other_lang"], text, seed))


def format_table(rows: list[dict]) -> str:
    lines = [f"{'metric':<30} {'seconds':>8}  {'baseline':<48} {'seconds':>8} {'speed-up':>9}  note"]
    for r in rows:
        base_s, ratio = r["baseline_seconds"], r["ratio"]
        lines.append(f"{r['metric']:<30} {r['seconds']:>8.3f}  {r['baseline'] or '':<48} "
                     f"{'' if base_s is None else f'{base_s:.3f}':>8} {'' if ratio is None else f'{ratio:.1f}x':>9}  "
                     f"{r['note']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    rows = run(args.n, args.d, args.seed)
    print(f"geometry metrics on a synthetic cone, n = {args.n}, d = {args.d}, {os.cpu_count()} CPU cores\n")
    print(format_table(rows))
    # a busy machine slows multi-threaded BLAS several-fold: the load average says how busy it was
    print(f"\nbench total {time.perf_counter() - start:.0f} s; 1-minute load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
