"""Transforms against their oracles: scipy, numpy, scikit-learn and hand-derived values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from sklearn.decomposition import PCA as SkPCA

from conescope import transforms as tf
from conescope.metrics.gap import gap_norm
from storage.transform_store import read_transform_file, write_transform_file


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cone(n: int, d: int, seed: int, offset: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.2, 2.0, d)
    x[:, 0] += offset
    return _unit(x).astype(np.float32)


@pytest.fixture(scope="module")
def pairs():
    image = _cone(400, 24, 0)
    text = _unit(image + 0.4 * _cone(400, 24, 1, offset=-2.0)).astype(np.float32)
    return image, text


def test_centering_makes_the_joint_mean_zero(pairs):
    image, text = pairs
    t = tf.Centering().fit(image, text)
    joint = np.vstack([t.transform(image, "image").astype(np.float64), t.transform(text, "text")])
    assert np.abs(joint.mean(axis=0)).max() < 1e-6
    assert np.allclose(t.mean, np.vstack([image, text]).astype(np.float64).mean(axis=0))


@pytest.mark.parametrize("k", [1, 5, 24])
def test_whitening_makes_the_fit_set_covariance_the_identity(pairs, k):
    image, text = pairs
    t = tf.Whitening(k).fit(image.astype(np.float64), text.astype(np.float64))
    joint = np.vstack([t.transform(image.astype(np.float64), "image"), t.transform(text.astype(np.float64), "text")])
    assert joint.shape == (800, k)
    assert np.allclose(np.cov(joint, rowvar=False, bias=True), np.eye(k), atol=1e-9)
    assert np.allclose(joint.mean(axis=0), 0, atol=1e-9)
    # The kept directions are those of largest variance: the first whitened axis is PCA's first axis.
    p = tf.PCA(k).fit(image.astype(np.float64), text.astype(np.float64))
    assert np.allclose(np.abs(t.components), np.abs(p.components))
    # float32 rows: the covariance is formed in float32, the identity holds to float32 accuracy
    t32 = tf.Whitening(k).fit(image, text)
    joint32 = np.vstack([t32.transform(image, "image"), t32.transform(text, "text")]).astype(np.float64)
    assert t32.transform(image, "image").dtype == np.float32
    assert np.allclose(np.cov(joint32, rowvar=False, bias=True), np.eye(k), atol=1e-3)


def test_whitening_refuses_more_components_than_the_fit_set_spans():
    image, text = _cone(5, 24, 0), _cone(5, 24, 1)
    with pytest.raises(ValueError, match=r"whitening_12: .*choose k <= 9"):
        tf.Whitening(12).fit(image, text)
    with pytest.raises(ValueError, match=r"whitening_12: .*choose k <= 9"):
        tf.Whitening(12).fit(image.astype(np.float64), text.astype(np.float64))
    assert tf.Whitening(9).fit(image, text).scale.shape == (9,)
    with pytest.raises(ValueError, match="k=30 must lie"):
        tf.Whitening(30).fit(image, text)


@pytest.mark.parametrize("k", [3, 10])
def test_pca_matches_scikit_learn_up_to_sign(pairs, k):
    image, text = pairs
    joint = np.vstack([image, text]).astype(np.float64)
    ref = SkPCA(n_components=k, svd_solver="full").fit(joint)
    image, text = image.astype(np.float64), text.astype(np.float64)
    t = tf.PCA(k).fit(image, text)
    ours = np.vstack([t.transform(image, "image"), t.transform(text, "text")])
    theirs = ref.transform(joint)
    signs = np.sign((ours * theirs).sum(axis=0))
    assert np.all(signs != 0)
    assert np.allclose(ours * signs, theirs, atol=1e-9)
    assert np.allclose(t.explained_variance, ref.explained_variance_, rtol=1e-9)
    assert np.allclose(t.mean, ref.mean_)
    t32 = tf.PCA(k).fit(image.astype(np.float32), text.astype(np.float32))
    assert np.allclose(np.abs(t32.components), np.abs(t.components), atol=1e-4)


def test_procrustes_equals_scipy_and_is_orthogonal(pairs):
    image, text = pairs
    t = tf.Procrustes().fit(image.astype(np.float64), text.astype(np.float64))
    r, _ = scipy.linalg.orthogonal_procrustes(text.astype(np.float64), image.astype(np.float64))
    assert np.allclose(t.rotation, r, atol=1e-10)
    r32, _ = scipy.linalg.orthogonal_procrustes(text, image)  # float32 rows: scipy's float32 product
    assert np.allclose(tf.Procrustes().fit(image, text).rotation, r32, atol=1e-4)
    assert np.allclose(t.rotation.T @ t.rotation, np.eye(24), atol=1e-12)
    assert t.transform(image, "image") is image  # images are the target space
    # A planted rotation is recovered exactly: images = texts @ q.
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((24, 24)))
    planted = tf.Procrustes().fit(text.astype(np.float64) @ q, text.astype(np.float64))
    assert np.allclose(planted.rotation, q, atol=1e-10)


@pytest.mark.parametrize("n", [400, 10])  # over- and under-determined (minimum-norm solution)
def test_least_squares_equals_numpy_lstsq(pairs, n):
    image, text = (a[:n].astype(np.float64) for a in pairs)
    t = tf.LeastSquares().fit(image, text)
    ref = np.linalg.lstsq(text, image, rcond=None)[0]
    assert t.solver == "cholesky"
    assert np.allclose(t.weights, ref, atol=1e-8)
    assert np.allclose(t.transform(text, "text"), text @ ref, atol=1e-8)


def test_least_squares_falls_back_to_svd_on_a_singular_design(pairs):
    image, text = (a.astype(np.float64) for a in pairs)
    text = text.copy()
    text[:, 5] = text[:, 4]  # rank-deficient: the normal equations have no unique solution
    t = tf.LeastSquares().fit(image, text)
    assert t.solver == "svd"
    assert np.allclose(t.weights, np.linalg.lstsq(text, image, rcond=None)[0], atol=1e-8)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 1.7])
def test_gap_shift_without_renormalization_scales_the_gap_by_one_minus_lambda(pairs, lam):
    image, text = (a.astype(np.float64) for a in pairs)
    t = tf.GapShift(lam, renormalize=False).fit(image, text)
    before = image.mean(axis=0) - text.mean(axis=0)
    after = t.transform(image, "image").mean(axis=0) - t.transform(text, "text").mean(axis=0)
    assert np.allclose(after, (1 - lam) * before, atol=1e-12)


def test_gap_shift_with_renormalization_hand_values():
    # image rows all e1, text rows all e2: Delta = e1 - e2, |Delta| = sqrt(2).
    # lambda = 1/2: image -> (3 e1 + e2)/4, text -> (e1 + 3 e2)/4, renormalized by sqrt(10)/4, so the
    # gap becomes 2 (e1 - e2)/sqrt(10), of norm 2 sqrt(2)/sqrt(10) = 0.8944; lambda = 1 closes it.
    image, text = np.tile([1.0, 0, 0], (4, 1)), np.tile([0, 1.0, 0], (4, 1))
    assert gap_norm(image, text) == pytest.approx(np.sqrt(2))
    half = tf.GapShift(0.5).fit(image, text)
    assert np.allclose(half.transform(image, "image")[0], np.array([3, 1, 0]) / np.sqrt(10))
    assert gap_norm(half.transform(image, "image"), half.transform(text, "text")) == pytest.approx(
        2 * np.sqrt(2) / np.sqrt(10))
    full = tf.GapShift(1.0).fit(image, text)
    assert gap_norm(full.transform(image, "image"), full.transform(text, "text")) == pytest.approx(0, abs=1e-12)
    assert np.allclose(np.linalg.norm(full.transform(text, "text"), axis=1), 1)


ALL = [tf.Identity(), tf.Centering(), tf.Whitening(4), tf.PCA(6), tf.Procrustes(), tf.LeastSquares(),
       tf.GapShift(0.5), tf.GapShift(0.25, renormalize=False)]


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_serialization_round_trips_exactly(pairs, t, tmp_path):
    image, text = pairs
    t.fit(image, text, fit_set="shapes:train")
    d = t.to_dict()
    assert all(isinstance(v, np.ndarray | str | int | float | bool) for v in d.values())
    path = tmp_path / f"{t.name}.npz"
    write_transform_file(path, d)
    for back in (tf.transform_from_dict(d), tf.transform_from_dict(read_transform_file(path))):
        assert type(back) is type(t) and back.name == t.name and back.params() == t.params()
        assert back.provenance == t.provenance and back.provenance["fit_set"] == "shapes:train"
        for a in t._arrays:
            assert np.array_equal(getattr(back, a), getattr(t, a)) and getattr(back, a).dtype == getattr(t, a).dtype
        for modality, x in (("image", image), ("text", text)):
            assert np.array_equal(back.transform(x, modality), t.transform(x, modality))
    assert t.provenance["data_sha256"] == tf.data_sha256(image, text)
    assert t.provenance["n_image"] == 400 and t.provenance["git_commit"]
    assert t.provenance["name"] == t.name and t.provenance["params"] == t.params()  # k, lambda, solver


def test_provenance_hash_follows_the_data(pairs):
    image, text = pairs
    a = tf.Centering().fit(image, text).provenance["data_sha256"]
    b = tf.Centering().fit(image[:-1], text).provenance["data_sha256"]
    assert a != b and a == tf.Centering().fit(image.copy(), text.copy()).provenance["data_sha256"]


def test_bad_input_is_named(pairs):
    image, text = pairs
    with pytest.raises(ValueError, match="paired rows"):
        tf.Procrustes().fit(image, text[:10])
    bad = text.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="text rows hold non-finite"):
        tf.Centering().fit(image, bad)
    with pytest.raises(RuntimeError, match="before fit"):
        tf.Centering().transform(image, "image")
    with pytest.raises(ValueError, match="modality"):
        tf.Identity().fit(image, text).transform(image, "audio")
    with pytest.raises(ValueError, match="unknown transform kind"):
        tf.transform_from_dict({"kind": "rotation"})
    with pytest.raises(ValueError, match="lacks rotation"):
        tf.transform_from_dict({"kind": "procrustes"})


def _classification_fit_set(n_classes: int = 100, per_class: int = 8, d: int = 512, seed: int = 0):
    """A CIFAR-like fit set: each image paired with its class prompt, so the text rows repeat 100
    distinct prompts (rank 100 < d); images lie near their class prompt, in a cone."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d)
    prompts = rng.standard_normal((n_classes, d)) + 3.0 * common
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_classes), per_class)
    images = prompts[labels] @ np.linalg.qr(rng.standard_normal((d, d)))[0] * 0.3 + rng.standard_normal(
        (len(labels), d)) / np.sqrt(d) + 2.0 * common / np.linalg.norm(common)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    return images.astype(np.float32), prompts[labels].astype(np.float32), prompts.astype(np.float32), labels


def test_least_squares_on_a_100_prompt_fit_set_is_the_minimum_norm_solution():
    import torch

    from conescope.metrics.zero_shot import zero_shot

    images, texts, prompts, labels = _classification_fit_set()
    t = tf.LeastSquares().fit(images, texts)
    ref = np.linalg.lstsq(texts.astype(np.float64), images.astype(np.float64), rcond=None)[0]
    ref_torch = torch.linalg.lstsq(torch.from_numpy(texts.astype(np.float64)),
                                   torch.from_numpy(images.astype(np.float64)), driver="gelsd").solution.numpy()
    assert t.solver == "svd"
    scale = np.abs(ref).max()
    assert np.abs(t.weights - ref).max() <= 1e-8 * scale
    assert np.abs(t.weights - ref_torch).max() <= 1e-8 * scale
    assert np.linalg.norm(t.weights) == pytest.approx(np.linalg.norm(ref), rel=1e-9)
    # LAPACK's own cut-off (eps * s_max) keeps the rounding-noise directions: the norm explodes
    blown = scipy.linalg.lstsq(texts.astype(np.float64), images.astype(np.float64), lapack_driver="gelsd")[0]
    assert np.linalg.norm(blown) > 1e6 * np.linalg.norm(ref)
    # zero-shot with the mapped prompts, as the pipeline hands them in (renormalized in float32: a
    # perturbation at float32 rounding, 1e-7 relative): the minimum-norm map keeps the classifier, the
    # blown one multiplies that rounding by 1e13
    noisy = prompts + 1e-7 * np.random.default_rng(1).standard_normal(prompts.shape).astype(np.float32)
    acc = zero_shot(images, labels, t.transform(noisy, "text"), ks=(1,))["top1"]
    acc_blown = zero_shot(images, labels, noisy.astype(np.float64) @ blown, ks=(1,))["top1"]
    print(f"zero-shot after LSTSQ: minimum norm {acc:.3f}, LAPACK default cut-off {acc_blown:.3f}")
    assert acc > acc_blown + 0.3
