"""The faster computations of issue 26's metric-suite timing against the computations they replaced,
transcribed here as they were: the same values to 1e-12 relative (only the summation order differs) or
bit for bit where the arithmetic is unchanged. The metrics' own oracles (scikit-learn, the IsoScore
package, hand values) stay in tests/test_metrics*.py."""

from __future__ import annotations

import numpy as np
import pytest

from conescope import families
from conescope.metrics import bootstrap, clusters, gap, isotropy, zero_shot
from conescope.profile import MetricSettings
from conescope.sets import ImageSet, TextSet


def _cone(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, d))
    image = (latent + 3.0 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    text = (latent + 3.0 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    return image, text


def _previous_resampled_means(columns: list[np.ndarray], seed: int, n_boot: int) -> list[np.ndarray]:
    """bootstrap._resampled_means before: one gather of the stacked rows, then a mean over its middle axis."""
    n, per_chunk = len(columns[0]), bootstrap._RESAMPLES_PER_CHUNK
    starts = range(0, n_boot, per_chunk)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    stacked = np.stack(columns, axis=1)
    means = np.empty((n_boot, len(columns)))
    for c, start in enumerate(starts):
        stop = min(n_boot, start + per_chunk)
        idx = np.random.default_rng(seeds[c]).integers(0, n, size=(stop - start, n), dtype=np.int32)
        means[start:stop] = np.take(stacked, idx, axis=0).mean(axis=1)
    return list(means.T)


@pytest.mark.parametrize("cpus", [1, 2])
def test_resampled_means_equal_the_previous_gather(monkeypatch, cpus):
    monkeypatch.setattr(bootstrap.os, "cpu_count", lambda: cpus)
    rng = np.random.default_rng(0)
    d = rng.normal(size=20_011) * 0.1
    den = rng.uniform(1, 3, size=d.size)
    columns = [d, den, d * d, d * den, den * den]
    for got, want in zip(bootstrap._resampled_means(columns, 4, 300), _previous_resampled_means(columns, 4, 300),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def _previous_unit_blocks(x: np.ndarray, norms: np.ndarray):
    block = max(1, isotropy._BLOCK_ELEMENTS // x.shape[1])
    for start in range(0, len(x), block):
        rows = np.array(x[start:start + block], dtype=np.float64)
        rows /= norms[start:start + block, None]
        yield start, rows


def _previous_isotropy_profile(x: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """isotropy.isotropy_profile before: sequential row blocks (the BLAS threads as configured), one
    streamed pass per set of directions."""
    norms = isotropy._unit_norms(x)
    n, d = x.shape
    gram, total = np.zeros((d, d)), np.zeros(d)
    for _, u in _previous_unit_blocks(x, norms):
        gram += u.T @ u
        total += u.sum(axis=0)
    eig, vecs = np.linalg.eigh(gram)
    c32 = isotropy._directions(total, vecs, compat=False).astype(np.float32)
    c32_compat = isotropy._directions(total, vecs, compat=True).astype(np.float32)
    z, z_compat, dots = np.zeros(d), np.zeros(d), np.empty(n)
    for start, u in _previous_unit_blocks(x, norms):
        dots[start:start + len(u)] = u @ total
        proj = u.astype(np.float32) @ c32
        np.exp(proj, out=proj)
        z += proj.sum(axis=0, dtype=np.float64)
    for _, u in _previous_unit_blocks(x, norms):
        proj = u.astype(np.float32) @ c32_compat
        np.exp(proj, out=proj)
        z_compat += proj.sum(axis=0, dtype=np.float64)
    mean = total / n
    i1, i2 = isotropy._ratios(np.log(z))
    i1_compat, i2_compat = isotropy._ratios(np.log(z_compat))
    return {"i1": i1, "i2": i2, "i1_compat": i1_compat, "i2_compat": i2_compat,
            "mean_cosine": float((total @ total - n) / (n * (n - 1))), "mean_vector_norm": float(np.linalg.norm(mean)),
            "isoscore": isotropy._isoscore_from_covariance_eigenvalues(
                np.linalg.eigvalsh((gram - n * np.outer(mean, mean)) / (n - 1))),
            "effective_rank": isotropy._effective_rank_from_singular_values(
                isotropy._singular_values_from_gram_eigenvalues(eig, n, d))}, (dots - 1.0) / (n - 1)


@pytest.mark.parametrize("cpus", [1, 2, 3])
@pytest.mark.parametrize("n, d, rows_per_block", [(1000, 48, 64), (3000, 256, 512)])
def test_isotropy_profile_on_every_core_in_one_projection_pass_is_the_sequential_value(monkeypatch, cpus, n, d,
                                                                                      rows_per_block):
    """Blocks on parallel threads with one BLAS thread each, one pass for both direction sets: the same
    products summed in the same order as the sequential two-pass loop, so the same bits."""
    monkeypatch.setattr(isotropy, "_BLOCK_ELEMENTS", rows_per_block * d)
    x, _ = _cone(n, d, 1)
    want_summary, want_per_sample = _previous_isotropy_profile(x)
    monkeypatch.setattr(isotropy.os, "cpu_count", lambda: cpus)
    summary, per_sample = isotropy.isotropy_profile(x)
    assert summary == want_summary
    np.testing.assert_array_equal(per_sample, want_per_sample)
    assert isotropy.i1_i2(x) == (want_summary["i1"], want_summary["i2"])


def test_gap_vector_streamed_equals_the_mean_of_normalized_copies(monkeypatch):
    monkeypatch.setattr(isotropy, "_BLOCK_ELEMENTS", 100 * 32)
    image, text = _cone(1234, 32, 2)
    previous = isotropy.l2_normalize(image).mean(axis=0) - isotropy.l2_normalize(text).mean(axis=0)
    np.testing.assert_allclose(gap.gap_vector(image, text), previous, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(isotropy.unit_row_mean(image), isotropy.l2_normalize(image).mean(axis=0), rtol=1e-12)


def test_indexed_pair_cosines_equal_the_cosines_of_gathered_copies(monkeypatch):
    monkeypatch.setattr(gap, "_PAIR_BLOCK", 7)
    image, text = _cone(300, 16, 3)
    rng = np.random.default_rng(3)
    image_rows, text_rows = rng.integers(0, 300, size=500), rng.integers(0, 300, size=500)
    previous = gap._paired_cosines(image[image_rows], text[text_rows])
    np.testing.assert_array_equal(gap.indexed_pair_cosines(image, text, image_rows, text_rows), previous)
    index = rng.integers(0, 300, size=300)
    np.testing.assert_array_equal(gap.pair_cosines(image, text, index), gap._paired_cosines(image[index], text))


def test_take_rows_is_a_view_only_for_the_leading_rows():
    x = np.arange(20.0).reshape(10, 2)
    view = families._take_rows(x, np.arange(6))
    assert np.shares_memory(view, x) and np.array_equal(view, x[np.arange(6)])
    rows = np.array([0, 2, 1])
    assert not np.shares_memory(families._take_rows(x, rows), x)
    np.testing.assert_array_equal(families._take_rows(x, rows), x[rows])


def _sets(n: int, d: int, classes: int, seed: int) -> tuple[ImageSet, TextSet]:
    image, text = _cone(n, d, seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    prompts = (image[:classes] + rng.normal(size=(classes, d))).astype(np.float32)
    ids = np.asarray([f"s{i}" for i in range(n)], dtype=object)
    img = ImageSet("t", ids, labels, np.where(rng.random(n) < 0.8, "train", "test").astype(object), image)
    txt = TextSet("t", "en", np.asarray([f"t{i}" for i in range(n + classes)], dtype=object),
                  np.concatenate([ids, np.full(classes, None, dtype=object)]),
                  np.concatenate([np.full(n, -1), np.arange(classes)]),
                  [f"caption {i}" for i in range(n)] + [f"class {c}" for c in range(classes)],
                  np.vstack([text, prompts]))
    return img, txt


def test_zero_shot_rows_from_one_ranking_equal_the_separate_calls():
    img, txt = _sets(400, 24, 7, 4)
    settings = MetricSettings()
    rows = {r["metric"]: r for r in families.zero_shot_rows(img, txt, settings)}
    classes, class_emb = families.class_prompts(txt)
    for k in (1, 5):
        hits = zero_shot.zero_shot_hits(img.emb, img.labels, class_emb, k=k, class_ids=classes)
        assert (rows[f"top{k}"]["value"], rows[f"top{k}"]["ci_low"], rows[f"top{k}"]["ci_high"]) == \
            tuple(bootstrap.mean_ci(hits.astype(np.float64), seed=settings.seed, n_boot=settings.bootstrap))
    previous = zero_shot.zero_shot(img.emb, img.labels, class_emb, class_ids=classes, ks=(1,))
    assert rows["mean_per_class_recall"]["value"] == previous["mean_per_class_recall"]


def test_gap_rows_equal_the_rows_of_gathered_copies():
    img, txt = _sets(500, 24, 5, 5)
    settings = MetricSettings()
    rows = {r["metric"]: r for r in families.gap_rows(img, txt, settings, separability=False)}
    n = len(img.emb)
    image_rows, text_rows = np.arange(n), np.arange(n)  # one caption per image, the captions first
    pos = gap._paired_cosines(img.emb[image_rows], txt.emb[text_rows])
    pos_ci = bootstrap.ratio_ci(pos, np.ones(n), seed=settings.seed, n_boot=settings.bootstrap)
    rand = bootstrap.cross_pair_mean_cosine_ci(img.emb[image_rows], txt.emb[text_rows])
    gap_norm = float(np.linalg.norm(isotropy.l2_normalize(img.emb).mean(axis=0)
                                    - isotropy.l2_normalize(txt.emb).mean(axis=0)))
    assert rows["gap_norm"]["value"] == pytest.approx(gap_norm, rel=1e-12)
    got = [(rows[m]["value"], rows[m]["ci_low"], rows[m]["ci_high"]) for m in ("pos_cosine_mean", "rand_cosine_mean")]
    assert got[0] == pytest.approx(tuple(pos_ci), rel=1e-12)
    assert got[1] == tuple(rand)


def test_sampled_silhouette_casts_only_the_sampled_rows():
    x, _ = _cone(3000, 16, 6)
    labels = np.random.default_rng(6).integers(5, size=3000)
    previous = []
    random_state = np.random.RandomState(0)
    x64 = np.asarray(x, dtype=np.float64)
    for _ in range(4):
        rows = random_state.permutation(len(x))[:500]
        previous.append(clusters._sampled_cosine_silhouette(x64, labels, rows))
    got = clusters.silhouette(x, labels, seed=0, exact_max=1000, sample_size=500, n_samples=4)
    assert got[0] == float(np.asarray(previous).mean())
