"""Quality metrics (logits, CLIP loss, zero-shot, retrieval, linear probe) against independent oracles:
scikit-learn's pairwise kernels, torch's cross_entropy, top_k_accuracy_score, balanced_accuracy_score,
LogisticRegression, a brute-force argsort retrieval, and hand values."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score
from sklearn.metrics.pairwise import cosine_similarity, euclidean_distances
from sklearn.preprocessing import StandardScaler

import conescope.metrics.clip_loss as clip_loss_module
from conescope.metrics.clip_loss import clip_loss, clip_loss_per_sample
from conescope.metrics.linear_probe import fit_linear_probe, linear_probe_accuracy, linear_probe_hits
from conescope.metrics.logits import GEOMETRIES, logits
from conescope.metrics.retrieval import retrieval_hits, retrieval_ranks, retrieval_recall
from conescope.metrics.zero_shot import class_embeddings, zero_shot, zero_shot_hits
from conescope.models import native_bf16


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The problems here are tiny: on a small VM, waking a second torch thread costs milliseconds per
    operation, more than the operation itself (a 3000 x 64 probe fit takes 2 s instead of 0.07 s).
    bench/metrics_quality.py measures the threaded case."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def paired(n: int, d: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Image and text rows sharing a latent signal, plus noise and a common offset (a cone)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, d))
    offset = rng.normal(size=d) * 2
    return latent + noise * rng.normal(size=(n, d)) + offset, latent + noise * rng.normal(size=(n, d)) + offset


def random_rotation(d: int, seed: int) -> np.ndarray:
    return ortho_group.rvs(d, random_state=seed)


KERNELS = {"cosine": cosine_similarity, "dot": lambda a, b: a @ b.T,
           "neg_sq_euclidean": lambda a, b: -euclidean_distances(a, b, squared=True)}


# ---------------------------------------------------------------- logits


def test_logits_match_scikit_learn_pairwise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)) + 1, rng.normal(size=(4, 5))
    np.testing.assert_allclose(logits(a, b, "cosine", scale=3.0, bias=-1.0), 3.0 * cosine_similarity(a, b) - 1.0)
    np.testing.assert_allclose(logits(a, b, "dot", scale=2.0), 2.0 * a @ b.T)
    np.testing.assert_allclose(logits(a, b, "neg_sq_euclidean"), -euclidean_distances(a, b, squared=True),
                               atol=1e-12)


def test_neg_sq_euclidean_of_unit_rows_is_an_affine_cosine():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(logits(a, b, "neg_sq_euclidean"), 2 * logits(a, b) - 2, atol=1e-12)


def test_unknown_geometry_is_named():
    with pytest.raises(ValueError, match="'manhattan'"):
        logits(np.ones((2, 2)), np.ones((2, 2)), geometry="manhattan")


# ---------------------------------------------------------------- CLIP loss


def torch_clip_loss(image: np.ndarray, text: np.ndarray, scale: float, batch: int, geometry: str) -> tuple:
    """Oracle: logits from scikit-learn kernels, torch cross_entropy summed per batch, averaged per sample."""
    kernel = KERNELS[geometry]
    n = len(image)
    i2t = t2i = 0.0
    for start in range(0, n, batch):
        lg = torch.from_numpy(scale * kernel(image[start:start + batch], text[start:start + batch]))
        target = torch.arange(lg.shape[0])
        i2t += float(F.cross_entropy(lg, target, reduction="sum"))
        t2i += float(F.cross_entropy(lg.T, target, reduction="sum"))
    return i2t / n, t2i / n


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("batch_size", [7, 30, None])
def test_clip_loss_matches_torch_cross_entropy(geometry, batch_size):
    image, text = paired(30, 6, seed=2)
    scale = 10.0 if geometry == "cosine" else 0.05
    got = clip_loss(image, text, logit_scale=scale, batch_size=batch_size, geometry=geometry)
    i2t, t2i = torch_clip_loss(image, text, scale, batch_size or 30, geometry)
    assert got["loss_i2t"] == pytest.approx(i2t, rel=1e-10)
    assert got["loss_t2i"] == pytest.approx(t2i, rel=1e-10)
    assert got["loss"] == pytest.approx((i2t + t2i) / 2, rel=1e-10)


def test_aligned_pairs_at_large_scale_have_zero_loss():
    eye = np.eye(8)
    out = clip_loss(eye, eye * 3.0, logit_scale=100.0, batch_size=None)
    assert out["loss"] == pytest.approx(0.0, abs=1e-30)
    assert out["loss"] >= 0.0


def test_identical_rows_give_log_of_the_batch_size():
    image, text = np.ones((12, 3)), np.tile([1.0, 2.0, 0.5], (12, 1))
    assert clip_loss(image, text, 100.0, batch_size=4)["loss"] == pytest.approx(math.log(4))
    assert clip_loss(image, text, 100.0, batch_size=None)["loss_t2i"] == pytest.approx(math.log(12))
    # 10 rows in batches of 4: two batches of 4 and a last one of 2, weighted by size
    expected = (8 * math.log(4) + 2 * math.log(2)) / 10
    assert clip_loss(image[:10], text[:10], 100.0, batch_size=4)["loss"] == pytest.approx(expected)


def test_batch_at_least_n_is_the_full_matrix_and_the_bias_cancels():
    image, text = paired(20, 5, seed=3)
    full = clip_loss(image, text, 50.0, batch_size=None)
    assert clip_loss(image, text, 50.0, batch_size=20) == pytest.approx(full, rel=1e-12)
    assert clip_loss(image, text, 50.0, batch_size=64) == pytest.approx(full, rel=1e-12)
    assert clip_loss(image, text, 50.0, logit_bias=-10.0, batch_size=None) == pytest.approx(full, rel=1e-10)


def test_per_sample_losses_average_to_the_loss():
    image, text = paired(25, 4, seed=4)
    i2t, t2i = clip_loss_per_sample(image, text, 20.0, batch_size=8)
    assert i2t.shape == t2i.shape == (25,)
    out = clip_loss(image, text, 20.0, batch_size=8)
    assert out["loss_i2t"] == pytest.approx(i2t.mean()) and out["loss_t2i"] == pytest.approx(t2i.mean())


@pytest.mark.parametrize("batch_size", [3, 8, None])
def test_streamed_blocks_give_the_same_losses(monkeypatch, batch_size):
    image, text = paired(23, 4, seed=5)
    expected = clip_loss_per_sample(image, text, 30.0, batch_size=batch_size)
    monkeypatch.setattr(clip_loss_module, "_BLOCK_ELEMENTS", 20)  # forces row blocks and many groups
    got = clip_loss_per_sample(image, text, 30.0, batch_size=batch_size)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12)


def test_clip_loss_rejects_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        clip_loss(np.ones((3, 2)), np.ones((4, 2)), 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        clip_loss(np.ones((3, 2)), np.ones((3, 2)), 1.0, batch_size=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 20), d=st.integers(2, 8), batch=st.integers(1, 25))
def test_cosine_clip_loss_is_invariant_to_joint_rotation_and_row_scale(seed, n, d, batch):
    image, text = paired(n, d, seed)
    rng = np.random.default_rng(seed)
    q = random_rotation(d, seed)
    scaled_image = image * rng.uniform(0.1, 10, size=(n, 1))
    base = clip_loss(image, text, 10.0, batch_size=batch)
    other = clip_loss(scaled_image @ q, text @ q, 10.0, batch_size=batch)
    assert other == pytest.approx(base, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- zero-shot


def zero_shot_data(seed: int, n: int = 200, n_classes: int = 12, d: int = 16):
    rng = np.random.default_rng(seed)
    class_text = rng.normal(size=(n_classes, d)) + 1.0
    class_ids = rng.permutation(np.arange(100, 100 + 3 * n_classes, 3))  # arbitrary, unsorted ids
    which = rng.integers(0, n_classes, size=n)
    image = class_text[which] + 1.5 * rng.normal(size=(n, d))
    return image, class_ids[which], class_text, class_ids


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_zero_shot_matches_scikit_learn(geometry):
    image, labels, class_text, class_ids = zero_shot_data(6)
    order = np.argsort(class_ids)  # sklearn wants its score columns in sorted label order
    scores = KERNELS[geometry](image, class_text)[:, order]
    out = zero_shot(image, labels, class_text, class_ids, ks=(1, 3, 5), geometry=geometry)
    for k in (1, 3, 5):
        assert out[f"top{k}"] == pytest.approx(top_k_accuracy_score(labels, scores, k=k, labels=class_ids[order]))
    predicted = class_ids[order][np.argmax(scores, axis=1)]
    assert out["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert 0.0 < out["top1"] < out["top5"] < 1.0


def test_prompt_ensembling_averages_normalized_templates():
    rng = np.random.default_rng(8)
    templates = rng.normal(size=(4, 3, 5))
    unit = templates / np.linalg.norm(templates, axis=2, keepdims=True)
    mean = unit.mean(axis=1)
    np.testing.assert_allclose(class_embeddings(templates), mean / np.linalg.norm(mean, axis=1, keepdims=True))
    image = rng.normal(size=(30, 5))
    labels = rng.integers(0, 4, size=30)
    assert zero_shot(image, labels, templates, ks=(1, 2)) == zero_shot(image, labels, mean, ks=(1, 2))


def test_k_beyond_the_classes_is_skipped_and_hits_reject_it():
    image, labels, class_text, class_ids = zero_shot_data(9, n_classes=3)
    out = zero_shot(image, labels, class_text, class_ids, ks=(1, 3, 5))
    assert set(out) == {"top1", "top3", "mean_per_class_recall"}
    assert out["top3"] == 1.0
    with pytest.raises(ValueError, match="k=5.*3"):
        zero_shot_hits(image, labels, class_text, 5, class_ids)


def test_zero_shot_hits_and_errors():
    image, labels, class_text, class_ids = zero_shot_data(10)
    hits = zero_shot_hits(image, labels, class_text, 1, class_ids)
    assert hits.dtype == bool and hits.shape == (len(image),)
    assert hits.mean() == pytest.approx(zero_shot(image, labels, class_text, class_ids)["top1"])
    with pytest.raises(ValueError, match="not among class_ids"):
        zero_shot(image, np.append(labels[:-1], 999), class_text, class_ids)
    with pytest.raises(ValueError, match="distinct"):
        zero_shot(image, labels, class_text, np.zeros(len(class_ids), dtype=int))


def test_ties_count_against_the_model():
    image = np.array([[1.0, 0.0], [0.0, 1.0]])
    class_text = np.array([[1.0, 1.0], [2.0, 2.0]])  # the same direction: every score ties
    out = zero_shot(image, np.array([0, 1]), class_text, ks=(1, 2))
    assert out == {"top1": 0.0, "top2": 1.0, "mean_per_class_recall": 0.0}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 10))
def test_zero_shot_is_invariant_to_joint_rotation_and_row_scale(seed, d):
    image, labels, class_text, class_ids = zero_shot_data(seed, n=40, n_classes=6, d=d)
    rng = np.random.default_rng(seed)
    q = random_rotation(d, seed)
    base = zero_shot(image, labels, class_text, class_ids)
    moved = zero_shot((image * rng.uniform(0.1, 10, size=(40, 1))) @ q, labels,
                      (class_text * rng.uniform(0.1, 10, size=(6, 1))) @ q, class_ids)
    assert moved == pytest.approx(base)


# ---------------------------------------------------------------- retrieval


def brute_force_recall(image, text, owners, ks, kernel=cosine_similarity):
    """Oracle: full similarity matrix, argsort of every row, position of the first true item."""
    sims = kernel(image, text)
    out = {}
    i2t_pos = []
    for i in range(len(image)):
        true = np.flatnonzero(owners == i)
        if len(true):
            order = np.argsort(-sims[i], kind="stable")
            i2t_pos.append(np.flatnonzero(np.isin(order, true))[0])
    t2i_pos = [np.flatnonzero(np.argsort(-sims[:, j], kind="stable") == owners[j])[0] for j in range(len(text))]
    for k in ks:
        out[f"i2t_r{k}"] = float(np.mean(np.array(i2t_pos) < k))
    for k in ks:
        out[f"t2i_r{k}"] = float(np.mean(np.array(t2i_pos) < k))
    return out


def captioned_set(seed: int, n_image: int = 40, d: int = 8, noise: float = 1.2):
    """Images with 0-4 captions each (at least one caption overall), caption = image latent + noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_image, d))
    counts = rng.integers(0, 5, size=n_image)
    counts[0] = max(counts[0], 1)
    owners = np.repeat(np.arange(n_image), counts)
    rng.shuffle(owners)
    offset = rng.normal(size=d)
    image = latent + noise * rng.normal(size=(n_image, d)) + offset
    text = latent[owners] + noise * rng.normal(size=(len(owners), d)) + offset
    return image, text, owners


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("block", [1, 7, 4096])
def test_retrieval_matches_brute_force_argsort(block, geometry):
    image, text, owners = captioned_set(11)
    got = retrieval_recall(image, text, owners, block=block, geometry=geometry)
    expected = brute_force_recall(image, text, owners, (1, 5, 10), KERNELS[geometry])
    assert got == pytest.approx(expected)
    assert 0 < got["i2t_r1"] < got["i2t_r10"] < 1 and 0 < got["t2i_r1"] < got["t2i_r10"] < 1


def test_retrieval_hand_case():
    image = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, 3.0], [1.0, 1.0]])
    owners = np.array([0, 0, 1, 2])
    # cosines, image rows x text columns:
    #   [0, .894, .316, .707]
    #   [1, .447, .949, .707]
    #   [.707, .949, .894, 1]
    ranks = retrieval_ranks(image, text, owners)
    # image 0: its best caption (text 1, .894) beats every other caption; image 1: text 0 (1.0) beats
    # its caption text 2 (.949); image 2: its caption is the best
    np.testing.assert_array_equal(ranks["i2t"], [0, 1, 0])
    np.testing.assert_array_equal(ranks["t2i"], [2, 1, 0, 0])
    out = retrieval_recall(image, text, owners, ks=(1, 2))
    assert out == pytest.approx({"i2t_r1": 2 / 3, "i2t_r2": 1.0, "t2i_r1": 0.5, "t2i_r2": 0.75})


def test_retrieval_ties_count_against_the_model():
    image = np.array([[1.0, 0.0], [2.0, 0.0]])  # the same direction: a tie for every caption
    text = np.array([[1.0, 0.0], [1.0, 0.0]])
    ranks = retrieval_ranks(image, text, np.array([0, 1]))
    np.testing.assert_array_equal(ranks["t2i"], [1, 1])
    np.testing.assert_array_equal(ranks["i2t"], [1, 1])


def test_retrieval_hits_shapes_and_images_without_captions():
    image, text, owners = captioned_set(12)
    hits = retrieval_hits(image, text, owners)
    n_captioned = len(np.unique(owners))
    assert n_captioned < len(image)  # the generated set has images without captions
    assert hits["i2t_r5"].shape == (n_captioned,) and hits["t2i_r5"].shape == (len(text),)
    assert hits["i2t_r5"].dtype == bool
    recall = retrieval_recall(image, text, owners)
    assert all(hits[key].mean() == pytest.approx(value) for key, value in recall.items())


def test_retrieval_rejects_bad_owners():
    with pytest.raises(ValueError, match="text_image"):
        retrieval_recall(np.ones((2, 2)), np.ones((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="one integer"):
        retrieval_recall(np.ones((2, 2)), np.ones((3, 2)), np.array([0, 1]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 8), block=st.integers(1, 50))
def test_retrieval_is_invariant_to_image_order_rotation_and_scale(seed, d, block):
    image, text, owners = captioned_set(seed, n_image=25, d=d)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(image))  # new image p is old image perm[p]
    new_index = np.argsort(perm)
    q = random_rotation(d, seed)
    base = retrieval_recall(image, text, owners)
    permuted = retrieval_recall(image[perm], text, new_index[owners], block=block)
    moved = retrieval_recall((image * rng.uniform(0.1, 10, size=(25, 1))) @ q, text @ q, owners, block=block)
    assert permuted == pytest.approx(base)
    assert moved == pytest.approx(base)


# ---------------------------------------------------------------- linear probe


@pytest.fixture(scope="module")
def probe_problem():
    x, y = make_classification(n_samples=4000, n_features=64, n_informative=24, n_redundant=8, n_classes=10,
                               n_clusters_per_class=1, class_sep=1.0, random_state=0)
    x = x + 5.0  # an offset, as in an embedding cone; standardization removes it
    return x[:3000], y[:3000], x[3000:], y[3000:]


def test_linear_probe_matches_scikit_learn(probe_problem):
    x_train, y_train, x_test, y_test = probe_problem
    l2 = 1e-3
    probe = fit_linear_probe(x_train, y_train, l2=l2, tol=1e-7, max_iter=1000)
    scaler = StandardScaler().fit(x_train)
    reference = LogisticRegression(C=1 / (l2 * len(x_train)), tol=1e-8, max_iter=5000)
    reference.fit(scaler.transform(x_train), y_train)
    sk_accuracy = reference.score(scaler.transform(x_test), y_test)
    assert probe.accuracy(x_test, y_test) == pytest.approx(sk_accuracy, abs=0.005)
    assert 0.5 < sk_accuracy < 0.99  # learnable, not trivial
    # float32 arithmetic resolves the optimum to ~3e-4 relative (see linear_probe._DTYPE)
    assert np.linalg.norm(probe.coef - reference.coef_) <= 2e-3 * np.linalg.norm(reference.coef_)
    np.testing.assert_allclose(probe.intercept, reference.intercept_, atol=1e-3 * np.abs(reference.intercept_).max())
    agree = np.mean(probe.predict(x_test) == reference.predict(scaler.transform(x_test)))
    assert agree >= 0.995


def test_linear_probe_maps_arbitrary_labels(probe_problem):
    x_train, y_train, x_test, y_test = probe_problem
    names = np.array([-7, 3, 11, 12, 40, 41, 99, 100, 512, 1000])
    base = fit_linear_probe(x_train, y_train, l2=1e-3)
    renamed = fit_linear_probe(x_train, names[y_train], l2=1e-3)
    np.testing.assert_array_equal(renamed.classes, names)
    np.testing.assert_array_equal(renamed.predict(x_test), names[base.predict(x_test)])
    assert renamed.accuracy(x_test, names[y_test]) == base.accuracy(x_test, y_test)


def test_unseen_test_labels_are_misses_and_one_class_is_an_error(probe_problem):
    x_train, y_train, x_test, y_test = probe_problem
    keep = y_train < 8  # classes 8 and 9 never seen in training
    hits = linear_probe_hits(x_train[keep], y_train[keep], x_test, y_test, l2=1e-3)
    assert hits.shape == (len(x_test),)
    assert not hits[y_test >= 8].any()
    assert linear_probe_accuracy(x_train[keep], y_train[keep], x_test, y_test, l2=1e-3) == pytest.approx(hits.mean())
    with pytest.raises(ValueError, match="two classes"):
        fit_linear_probe(x_train, np.zeros(len(x_train), dtype=int))


def test_constant_features_do_not_break_the_probe(probe_problem):
    x_train, y_train, x_test, y_test = probe_problem
    pad = lambda x: np.hstack([x, np.full((len(x), 3), 2.5)])  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by a zero std
        padded = fit_linear_probe(pad(x_train), y_train, l2=1e-3)
    plain = fit_linear_probe(x_train, y_train, l2=1e-3)
    assert np.all(np.isfinite(padded.coef))
    assert padded.accuracy(pad(x_test), y_test) == pytest.approx(plain.accuracy(x_test, y_test), abs=0.005)


def test_probe_is_invariant_to_per_feature_affine_maps(probe_problem):
    x_train, y_train, x_test, _ = probe_problem
    rng = np.random.default_rng(13)
    scales, shifts = rng.uniform(0.01, 100, size=x_train.shape[1]), rng.normal(size=x_train.shape[1]) * 50
    base = fit_linear_probe(x_train[:1000], y_train[:1000], l2=1e-2)
    moved = fit_linear_probe(x_train[:1000] * scales + shifts, y_train[:1000], l2=1e-2)
    agree = np.mean(moved.predict(x_test * scales + shifts) == base.predict(x_test))
    assert agree >= 0.995  # standardization undoes the map, up to float32 rounding


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_mixed_precision_reaches_the_float32_minimizer(probe_problem, tol):
    """The bfloat16 phase only shortens the path: the float32 phase enforces the same stopping rule, so
    both fits land within the tolerance's distance of the tightly converged float32 minimizer."""
    x_train, y_train, x_test, _ = probe_problem
    exact = fit_linear_probe(x_train, y_train, l2=1e-3, tol=1e-7, max_iter=1000, precision="float32")
    for precision in ("float32", "mixed"):
        probe = fit_linear_probe(x_train, y_train, l2=1e-3, tol=tol, precision=precision)
        assert probe.precision == precision
        assert (probe.n_iter_bf16 > 0) == (precision == "mixed")
        distance = np.linalg.norm(probe.coef - exact.coef) / np.linalg.norm(exact.coef)
        assert distance <= (1e-2 if tol == 1e-4 else 2e-3)
        assert np.mean(probe.predict(x_test) == exact.predict(x_test)) >= 0.99


def test_probe_precision_is_validated_and_auto_follows_the_hardware(probe_problem):
    x_train, y_train, _, _ = probe_problem
    with pytest.raises(ValueError, match="precision must be one of"):
        fit_linear_probe(x_train, y_train, precision="float16")
    auto = fit_linear_probe(x_train[:500], y_train[:500], l2=1e-2)
    assert auto.precision == ("mixed" if native_bf16("cpu") else "float32")


def test_zero_shot_geometry_scores_the_raw_prompts():
    """metrics.geometry reaches zero-shot on unnormalized rows (Chou & Alam 2024's EuCLIP): dot and
    negative squared Euclidean distance rank classes differently from cosine when norms differ."""
    from conescope.families import zero_shot_rows
    from conescope.profile import MetricSettings
    from conescope.sets import ImageSet, TextSet

    rng = np.random.default_rng(0)
    d, classes, n = 8, 6, 300
    directions = rng.standard_normal((classes, d))
    prompts = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(0.3, 3.0, size=(classes, 1))
    labels = rng.integers(0, classes, size=n)
    images = (directions[labels] + 1.2 * rng.standard_normal((n, d))) * rng.uniform(0.5, 2.0, size=(n, 1))
    image_set = ImageSet("toy", np.arange(n).astype(str), labels, np.array(["test"] * n), images)
    text_set = TextSet("toy", "en", np.arange(classes).astype(str), np.array([None] * classes, dtype=object),
                       np.arange(classes), [f"a photo of class {c}" for c in range(classes)], prompts)
    oracle = {
        "cosine": (images / np.linalg.norm(images, axis=1, keepdims=True))
        @ (prompts / np.linalg.norm(prompts, axis=1, keepdims=True)).T,
        "dot": images @ prompts.T,
        "neg_sq_euclidean": -((images[:, None, :] - prompts[None, :, :]) ** 2).sum(-1),
    }
    accuracy = {}
    for geometry, scores in oracle.items():
        rows = zero_shot_rows(image_set, text_set, MetricSettings(geometry=geometry, bootstrap=10))
        top1 = next(r["value"] for r in rows if r["metric"] == "top1")
        assert top1 == pytest.approx(np.mean(scores.argmax(axis=1) == labels), abs=1e-12), geometry
        accuracy[geometry] = top1
    assert len(set(accuracy.values())) == 3, accuracy
