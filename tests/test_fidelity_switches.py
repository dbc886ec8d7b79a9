"""Each departure of the authors' code is a switch (docs/fidelity.md): the profile key parses, names
itself in errors, and the conescope function it turns on reproduces the reference computation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from sklearn.decomposition import TruncatedSVD

from conescope import transforms as tf
from conescope.profile import ProfileError, load_profile
from conescope.splits import authors_known_classes, authors_split
from tests.conftest import TINY_PROFILE


def test_authors_split_is_torch_randperm_after_manual_seed():
    torch.manual_seed(0)
    perm = torch.randperm(40_504).numpy()
    train, test = authors_split(40_504, 0)
    assert (len(train), len(test)) == (32_403, 8_101)  # the paper's COCO split
    assert np.array_equal(train, perm[:32_403]) and np.array_equal(test, perm[32_403:])
    # it leaves the global generator alone
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    authors_split(100, 0)
    assert torch.equal(torch.rand(3), expected)


def _their_split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The authors' get_train_test_split, positions only: round(n * 0.8) training rows of a permutation
    drawn from torch's default generator after manual_seed."""
    train_size = round(n * 0.8)
    order = torch.randperm(n, generator=torch.manual_seed(seed)).numpy()
    return order[:train_size], order[train_size:]


@pytest.mark.parametrize("n", [2_002, 2_003, 7, 12, 40_504, 13])
def test_authors_split_size_is_rounded_as_their_code(n):
    train, test = authors_split(n, 0)
    theirs = _their_split(n, 0)
    assert np.array_equal(train, theirs[0]) and np.array_equal(test, theirs[1])
    if n == 2_002:  # int(0.8 n) would keep 1,601 and move every later test row
        assert len(train) == 1_602 and int(0.8 * n) == 1_601


def test_authors_known_classes_are_the_first_half_of_a_class_permutation():
    torch.manual_seed(0)
    expected = np.sort(torch.randperm(100)[:50].numpy())
    assert np.array_equal(authors_known_classes(np.arange(100), 0), expected)
    with pytest.raises(ValueError, match="at least two classes"):
        authors_known_classes(np.array([3]), 0)


def _profile(tmp_path, **transforms):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["transforms"].update(transforms)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(str(path))


def test_fidelity_profile_keys_parse(tmp_path):
    p = _profile(tmp_path, k={"whitening": [2, 4], "pca": [3]}, whitening={"fit_on": ["joint", "image"]},
                 pca={"variants": ["truncated_svd"]}, linear_probe=["whitening_4"],
                 protocols={"in_domain": ["shapes"], "authors_split": ["shapes"], "split_seed": 3,
                            "class_disjoint": {"datasets": ["digits"], "method": "authors"}})
    t = p.transforms
    assert (t.ks("whitening"), t.ks("pca")) == ((2, 4), (3,))
    assert t.whitening_fit_on == ("joint", "image") and t.pca_variants == ("truncated_svd",)
    assert t.authors_split == ("shapes",) and t.split_seed == 3 and t.class_disjoint_method == "authors"
    from conescope.protocols import variants

    assert [v.name for v in variants(t, "whitening")] == ["whitening_2", "whitening_4", "whitening_2_image",
                                                         "whitening_4_image"]
    assert [v.name for v in variants(t, "pca")] == ["pca_3_tsvd"]


@pytest.mark.parametrize(("transforms", "message"), [
    ({"k": {"whitening": [2]}}, "transforms.k.pca: missing"),
    ({"whitening": {"fit_on": ["images"]}}, "transforms.whitening.fit_on[0]"),
    ({"pca": {"variants": ["svd"]}}, "transforms.pca.variants[0]"),
    ({"protocols": {"authors_split": ["coco"]}}, "transforms.protocols.authors_split[0]"),
])
def test_fidelity_profile_key_errors_name_the_key(tmp_path, transforms, message):
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _profile(tmp_path, **transforms)


def test_metric_switches_parse_and_are_checked(tmp_path):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["metrics"] = {"clip_loss_mean": "batches", "amumo_loss": True, "distance_ratio_raw": True}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    m = load_profile(str(tmp_path / "m.yaml")).metrics
    assert (m.clip_loss_mean, m.amumo_loss, m.distance_ratio_raw) == ("batches", True, True)
    raw["metrics"] = {"clip_loss_mean": "batch"}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError, match="metrics.clip_loss_mean"):
        load_profile(str(tmp_path / "m.yaml"))


def test_paper_profile_has_the_papers_grid():
    p = load_profile("paper")
    t = p.transforms
    assert t.ks("whitening") == tuple(2 ** i for i in range(10)) and t.ks("pca") == (425,)
    assert {"procrustes", "lstsq", "centering_per_modality"} <= set(t.kinds)
    assert t.in_domain == ("coco", "cifar100") and t.cross_dataset == (("coco", "cifar100"),)
    assert t.class_disjoint == ("cifar100",) and t.class_disjoint_method == "authors"
    assert t.authors_split == ("coco",) and "image" in t.whitening_fit_on and "truncated_svd" in t.pca_variants
    assert t.linear_probe == ("whitening_128",)
    assert "torch_gelsy" in t.lstsq_variants and "eval_set" in t.gap_shift_gap_of
    assert t.cross_dataset_fit_rows == "all" and t.all_rows == ("coco",)
    assert p.datasets["coco"].image_order == "id"
    assert p.datasets["cifar100"].class_names == "raw"
    assert (p.metrics.clip_batch_size, p.metrics.logit_scale, p.metrics.clip_loss_mean) == (64, 100.0, "batches")


def _pairs(seed=0, n=300, d=12):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, d)) + 2.0
    text = image + rng.normal(size=(n, d)) - 1.0
    return image, text


def test_per_modality_centering_subtracts_each_modalitys_own_mean():
    image, text = _pairs()
    t = tf.PerModalityCentering().fit(image, text)
    assert np.allclose(t.transform(image, "image").mean(axis=0), 0.0, atol=1e-12)
    assert np.allclose(t.transform(text, "text").mean(axis=0), 0.0, atol=1e-12)
    joint = tf.Centering().fit(image, text)
    assert not np.allclose(joint.transform(image, "image").mean(axis=0), 0.0, atol=1e-3)  # the gap stays


def test_whitening_fitted_on_one_modality_whitens_that_modality():
    image, text = _pairs()
    for fit_on, rows in (("image", image), ("text", text)):
        t = tf.Whitening(12, fit_on=fit_on).fit(image, text)
        assert t.name == f"whitening_12_{fit_on}"
        out = t.transform(rows, fit_on)
        assert np.allclose(np.cov(out.T, bias=True), np.eye(12), atol=1e-9)
        # the authors' Whitener: torch.cov (n - 1) and SVD; the same map up to sign and the factor sqrt(n / (n - 1))
        x = torch.from_numpy(rows)
        u, s, _ = torch.linalg.svd(torch.cov(x.T))
        ref = ((x - x.mean(dim=0)) @ (u / torch.sqrt(s))).numpy()
        scale = np.sqrt((len(rows) - 1) / len(rows))
        assert np.allclose(np.abs(out), np.abs(ref) / scale, atol=1e-8)


def test_pca_truncated_svd_is_uncentred_and_scored_by_dot_product():
    image, text = _pairs()
    t = tf.PCA(4, variant="truncated_svd").fit(image, text)
    assert t.name == "pca_4_tsvd" and t.scoring == "dot" and tf.PCA(4).scoring is None
    svd = TruncatedSVD(4, algorithm="arpack", random_state=0).fit(np.vstack([image, text]))
    ours = t.transform(image, "image") @ t.transform(text, "text").T
    ref = svd.transform(image) @ svd.transform(text).T
    assert np.allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_new_variants_round_trip_and_old_files_load_with_defaults():
    image, text = _pairs()
    for t in (tf.PerModalityCentering(), tf.Whitening(3, fit_on="image"), tf.PCA(3, variant="truncated_svd")):
        t.fit(image, text)
        back = tf.transform_from_dict({k: np.asarray(v) if not isinstance(v, str) else v
                                       for k, v in t.to_dict().items()})
        assert back.name == t.name
        assert np.array_equal(back.transform(image, "image"), t.transform(image, "image"))
    old = tf.PCA(3).fit(image, text).to_dict()
    del old["variant"]  # a file written before the variant key existed
    assert tf.transform_from_dict(old).name == "pca_3"


def test_coco_image_order_id_is_torchvision_cocodetection_order(tmp_path):
    """The authors embedded COCO through torchvision's CocoDetection, which lists images by sorted image id;
    their permutation indexes that order. ``image_order: id`` writes the manifest in it, so the permutation
    picks the same images; the file's own order picks others."""
    from PIL import Image

    from conescope.ingest.coco import read_coco

    folder = tmp_path / "val2014"
    folder.mkdir()
    file_ids = [503, 17, 9001, 42, 260, 8, 77, 1234, 5, 640]  # the annotation file is not sorted by id
    for i in file_ids:
        Image.new("RGB", (4, 4), (i % 255, 0, 0)).save(folder / f"{i}.jpg")
    doc = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in file_ids],
           "annotations": [{"image_id": i, "id": 10 * i, "caption": f"image {i}"} for i in reversed(file_ids)]}
    (tmp_path / "captions.json").write_text(json.dumps(doc))
    # CocoDetection: self.ids = list(sorted(self.coco.imgs.keys())); dataset[k] is image ids[k]
    their_ids = sorted({img["id"]: img for img in doc["images"]})
    train, test = _their_split(len(their_ids), 0)
    their_test_images = [their_ids[k] for k in test]

    def test_images(order: str) -> list[int]:
        manifest = read_coco("coco", tmp_path / "captions.json", folder, image_order=order).manifest
        ids = [int(s.split("-")[1]) for s in manifest.samples.column("sample_id").to_pylist()]
        return [ids[k] for k in authors_split(len(ids), 0)[1]]

    assert test_images("id") == their_test_images
    assert test_images("file") != their_test_images
    p = load_profile_raw(tmp_path, {"coco": {"kind": "coco", "image_order": "id"}})
    assert p.datasets["coco"].image_order == "id"
    with pytest.raises(ProfileError, match=r"datasets\.coco\.image_order"):
        load_profile_raw(tmp_path, {"coco": {"kind": "coco", "image_order": "sorted"}})


def load_profile_raw(tmp_path, datasets: dict):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["datasets"] = {**raw["datasets"], **datasets}
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(str(path))


def _prompt_fit_set(seed=0, classes=12, per_class=40, d=16):
    """A classification fit set: every image paired with its class prompt (each prompt repeated), the
    prompts nearly dependent, as CIFAR-100's 100 prompts are in 512 dimensions."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(classes - 1, d))
    prompts = np.vstack([basis, basis[:3].sum(axis=0) + 3e-6 * rng.normal(size=d)])  # one nearly in the span
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), per_class)
    images = prompts[labels] + 0.8 * rng.normal(size=(len(labels), d))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    return images.astype(np.float32), prompts.astype(np.float32), labels


def test_lstsq_gelsy_is_the_authors_torch_call_on_float32_rows():
    images, prompts, labels = _prompt_fit_set()
    text = prompts[labels]
    t = tf.LeastSquares(variant="torch_gelsy").fit(images, text)
    # the authors: torch.linalg.lstsq(cifar_text_embeddings_train, cifar_image_embeddings_train).solution
    theirs = torch.linalg.lstsq(torch.from_numpy(text), torch.from_numpy(images)).solution.numpy()
    assert t.name == "lstsq_gelsy" and "gelsy" in t.solver
    assert np.array_equal(t.weights, theirs)
    assert np.array_equal(t.transform(prompts, "text"), prompts @ theirs)
    # the float32 cut-off drops the nearly dependent prompt: rank 11 of 12, where the minimum-norm
    # solution (numpy's cut-off, float64) keeps all 12 and maps the prompts elsewhere
    assert "rank 11" in t.solver
    exact = tf.LeastSquares().fit(images, text)
    assert exact.name == "lstsq" and np.linalg.matrix_rank(text.astype(np.float64), tol=None) == 12
    assert not np.allclose(exact.transform(prompts, "text"), prompts @ theirs, atol=1e-3)
    back = tf.transform_from_dict({k: np.asarray(v) if not isinstance(v, str) else v for k, v in t.to_dict().items()})
    assert back.name == "lstsq_gelsy" and np.array_equal(back.weights, t.weights)
    old = exact.to_dict()
    del old["variant"]  # a file written before the variant existed
    assert tf.transform_from_dict(old).name == "lstsq"


def test_pca_truncated_svd_fits_each_prompt_once_as_the_authors():
    """The authors' PCA-425 on CIFAR: TruncatedSVD of cat([train images] + [the 100 prompts]), each prompt
    once; the pipeline's fit set pairs every image with its prompt."""
    from conescope.protocol_eval import fit_all
    from conescope.protocols import plan
    from conescope.sets import ImageSet, TextSet

    images, prompts, labels = _prompt_fit_set(seed=1, classes=6, per_class=30, d=10)
    n, k = len(images), len(prompts)
    ids = np.asarray([f"i{j}" for j in range(n)], dtype=object)
    splits = np.where(np.arange(n) % 3 == 0, "test", "train").astype(object)
    sets = {"cls": (ImageSet("cls", ids, labels, splits, images),
                    TextSet("cls", "en", np.asarray([f"p{c}" for c in range(k)], dtype=object),
                            np.asarray([None] * k, dtype=object), np.arange(k), [f"class {c}" for c in range(k)],
                            prompts))}
    settings = _profile_settings(pca_variants=("truncated_svd", "centered"), k=(3,), kinds=("pca",),
                                 in_domain=("cls",))
    fitted, _ = fit_all(settings, "pca", plan(settings, sets), sets)
    tsvd = next(t for t in fitted if t.name == "pca_3_tsvd")
    train = splits == "train"
    unit = lambda x: x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)  # noqa: E731
    theirs = TruncatedSVD(3, algorithm="arpack", random_state=0).fit(np.vstack([unit(images[train]), unit(prompts)]))
    assert np.allclose(np.abs(tsvd.components.T), np.abs(theirs.components_), atol=1e-6)
    assert tsvd.provenance["n_text"] == k
    repeated = TruncatedSVD(3, algorithm="arpack", random_state=0).fit(
        np.vstack([unit(images[train]), unit(prompts[labels[train]])]))
    assert not np.allclose(np.abs(repeated.components_), np.abs(theirs.components_), atol=1e-3)
    centered = next(t for t in fitted if t.name == "pca_3")
    assert centered.provenance["n_text"] == int(train.sum())  # the default still fits the pairs


def _profile_settings(**kw):
    from conescope.profile import TransformSettings

    return TransformSettings(**kw)


def test_gap_shift_of_the_eval_set_closes_that_sets_own_gap():
    """Amumo's get_closed_modality_gap: the gap of the arrays it is given, each side moved by half of it,
    renormalized; the default shift moves held-out rows by the fit set's gap instead."""
    image, text = _pairs()
    image, text = image / np.linalg.norm(image, axis=1, keepdims=True), text / np.linalg.norm(text, axis=1,
                                                                                               keepdims=True)
    fit_img, fit_txt, ev_img, ev_txt = image[:200], text[:200], image[200:] + 0.3, text[200:]
    ev_img = ev_img / np.linalg.norm(ev_img, axis=1, keepdims=True)
    t = tf.GapShift(1.0, gap_of="eval_set").fit(fit_img, fit_txt)
    assert t.name == "gap_shift_1_eval" and t.transductive and not tf.GapShift(1.0).transductive
    on_eval = t.for_eval(ev_img, ev_txt)
    gap = ev_img.mean(axis=0) - ev_txt.mean(axis=0)
    theirs_img = (ev_img - 0.5 * gap) / np.linalg.norm(ev_img - 0.5 * gap, axis=1, keepdims=True)
    theirs_txt = (ev_txt + 0.5 * gap) / np.linalg.norm(ev_txt + 0.5 * gap, axis=1, keepdims=True)
    assert np.allclose(on_eval.transform(ev_img, "image"), theirs_img, atol=1e-12)
    assert np.allclose(on_eval.transform(ev_txt, "text"), theirs_txt, atol=1e-12)
    inductive = tf.GapShift(1.0).fit(fit_img, fit_txt)
    assert inductive.for_eval(ev_img, ev_txt) is inductive
    assert not np.allclose(inductive.transform(ev_img, "image"), theirs_img, atol=1e-3)
    raw = tf.GapShift(1.0, renormalize=False, gap_of="eval_set").fit(fit_img, fit_txt).for_eval(ev_img, ev_txt)
    assert raw.name == "gap_shift_1_raw_eval"
    closed = raw.transform(ev_img, "image").mean(axis=0) - raw.transform(ev_txt, "text").mean(axis=0)
    assert np.allclose(closed, 0.0, atol=1e-12)


def test_lstsq_and_gap_shift_switches_parse(tmp_path):
    p = _profile(tmp_path, lstsq={"variants": ["minimum_norm", "torch_gelsy"]},
                 gap_shift={"lambdas": [0.0, 1.0], "gap_of": ["fit_set", "eval_set"]})
    from conescope.protocols import variants

    assert [v.name for v in variants(p.transforms, "lstsq")] == ["lstsq", "lstsq_gelsy"]
    assert [v.name for v in variants(p.transforms, "gap_shift")] == ["gap_shift_0", "gap_shift_1", "gap_shift_0_eval",
                                                                     "gap_shift_1_eval"]
    for transforms, where in (({"lstsq": {"variants": ["gelsy"]}}, r"transforms\.lstsq\.variants\[0\]"),
                              ({"gap_shift": {"gap_of": ["test"]}}, r"transforms\.gap_shift\.gap_of\[0\]")):
        with pytest.raises(ProfileError, match=where):
            _profile(tmp_path, **transforms)


def test_all_rows_and_cross_dataset_fit_rows_parse(tmp_path):
    p = _profile(tmp_path, protocols={"in_domain": ["shapes"], "all_rows": ["shapes"],
                                      "cross_dataset": [{"fit": "shapes", "eval": "digits"}],
                                      "cross_dataset_fit_rows": "all"})
    assert p.transforms.all_rows == ("shapes",) and p.transforms.cross_dataset_fit_rows == "all"
    with pytest.raises(ProfileError, match=r"transforms\.protocols\.all_rows\[0\]"):
        _profile(tmp_path, protocols={"all_rows": ["coco"]})
    with pytest.raises(ProfileError, match=r"transforms\.protocols\.cross_dataset_fit_rows"):
        _profile(tmp_path, protocols={"cross_dataset_fit_rows": "test"})


def test_class_disjoint_procrustes_is_free_on_the_new_prompts_and_moves_known_class_accuracy():
    """Table 4's Procrustes rows are not well defined, for known classes too: T^T I of known-class pairs has
    rank <= the known prompts, every rotation of their orthogonal complement is equally optimal, and the
    new-class prompts (distractors when known-class images are classified among all prompts) lie there."""
    rng = np.random.default_rng(0)
    d, classes, known = 16, 10, 5
    prompts = rng.normal(size=(classes, d))
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), 30)
    images = prompts[labels] @ np.linalg.qr(rng.normal(size=(d, d)))[0] * 0.3 + 0.5 * rng.normal(size=(len(labels),
                                                                                                      d))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    is_known = labels < known
    fit = tf.Procrustes().fit(images[is_known], prompts[labels[is_known]])
    # a basis of the known prompts' span S and of its complement
    u, _, _ = np.linalg.svd(prompts[:known].T)
    span, complement = u[:, :known], u[:, known:]
    objective = lambda w: np.linalg.norm(prompts[labels[is_known]] @ w - images[is_known])  # noqa: E731
    accuracies = []
    for seed in range(8):
        q = np.linalg.qr(np.random.default_rng(seed).normal(size=(d - known, d - known)))[0]
        other = (span @ span.T + complement @ q @ complement.T) @ fit.rotation  # equal on S, rotated on its complement
        assert np.allclose(other @ other.T, np.eye(d), atol=1e-10)
        assert objective(other) == pytest.approx(objective(fit.rotation), rel=1e-12)
        scores = images[is_known] @ (prompts @ other).T  # known-class images among every prompt
        accuracies.append(np.mean(scores.argmax(axis=1) == labels[is_known]))
    assert max(accuracies) - min(accuracies) > 0.02


@pytest.mark.parametrize("transforms", [
    {"lstsq": {"variants": ["torch_gelsy"]}},
    {"gap_shift": {"lambdas": [0.0, 1.0], "gap_of": ["eval_set"]}},
    {"protocols": {"in_domain": ["shapes"], "all_rows": ["shapes"]}},
    {"protocols": {"in_domain": ["shapes"], "cross_dataset": [{"fit": "shapes", "eval": "digits"}],
                   "cross_dataset_fit_rows": "all"}},
])
def test_new_switches_change_the_transform_assets_code_versions(tmp_path, transforms):
    from conescope import code_versions

    base_protocols = {k: v for k, v in transforms.get("protocols", {}).items()
                      if k not in ("all_rows", "cross_dataset_fit_rows")}
    base = _profile(tmp_path, protocols=base_protocols or {"in_domain": ["shapes"]})
    switched = _profile(tmp_path, **transforms)
    assert code_versions.fit_transforms(switched) != code_versions.fit_transforms(base)
    assert code_versions.transform_metrics(switched, ()) != code_versions.transform_metrics(base, ())


def test_coco_image_order_changes_the_dataset_code_version(tmp_path):
    from conescope import code_versions

    a = load_profile_raw(tmp_path, {"coco": {"kind": "coco"}})
    b = load_profile_raw(tmp_path, {"coco": {"kind": "coco", "image_order": "id"}})
    assert code_versions.dataset(a, "coco") != code_versions.dataset(b, "coco")
    assert code_versions.dataset(a, "shapes") == code_versions.dataset(b, "shapes")
