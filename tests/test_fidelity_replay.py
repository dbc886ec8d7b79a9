"""Replay tests, one per paper: synthetic embeddings written to the storage contract (manifest and
embedding Parquet files, as the embedding assets write them), the metric and transform assets run with
the profile's compat switches (docs/fidelity.md), and the stored numbers compared with a plain-numpy
(or scikit-learn / torch) transcription of each paper's reference computation, written out here.

Tolerances: 1e-6 relative where the pipeline sums in float64 from float32 rows; I1 through a float32
projection (isotropy._unit_z) agrees to 2e-6; accuracies are exact counts."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from scipy.special import logsumexp
from sklearn.decomposition import TruncatedSVD

from storage.parquet_store import IMAGE_KEY_COLUMNS, TEXT_KEY_COLUMNS, write_embeddings, write_manifest
from storage.paths import DataRoot

N_COCO, N_CIFAR, CLASSES, D = 400, 240, 8, 16
MODEL = "tiny.random"
SCALE = 100.0

PROFILE = {
    "name": "replay",
    "seed": 0,
    "languages": ["en", "fr"],
    "datasets": {
        "coco": {"kind": "manifest", "file": "never-read.csv", "languages": ["en", "fr"]},  # files written below
        "cifar100": {"kind": "cifar100", "class_names": "raw"},
    },
    "models": {MODEL: {"kind": "open_clip", "arch": "conescope-tiny", "pretrained": None, "seed": 0}},
    "embedding": {"batch_size": 8, "device": "cpu"},
    "metrics": {"seed": 0, "bootstrap": 50, "clip_batch_size": 64, "logit_scale": SCALE,
                "clip_loss_mean": "batches", "amumo_loss": True, "distance_ratio_raw": True},
    "transforms": {
        "kinds": ["identity", "centering", "centering_per_modality", "whitening", "pca", "procrustes", "lstsq",
                  "gap_shift"],
        "gap_shift": {"lambdas": [0.0, 1.0], "renormalize": [True], "gap_of": ["fit_set", "eval_set"]},
        "lstsq": {"variants": ["minimum_norm", "torch_gelsy"]},
        "k": {"whitening": [4], "pca": [5]},
        "whitening": {"fit_on": ["joint", "image"]},
        "pca": {"variants": ["centered", "truncated_svd"]},
        "linear_probe": ["whitening_4"],
        "protocols": {"in_domain": ["coco", "cifar100"], "cross_dataset": [{"fit": "coco", "eval": "cifar100"}],
                      "class_disjoint": {"datasets": ["cifar100"], "seed": 0, "method": "authors"},
                      "authors_split": ["coco"], "split_seed": 0, "all_rows": ["coco"],
                      "cross_dataset_fit_rows": "all"},
    },
}


def _cone(rng, n, shift):
    common = np.zeros(D)
    common[shift] = 2.0
    return (rng.standard_normal((n, D)) + common).astype(np.float32)


def _write_layers(root: DataRoot, dataset: str, lang: str, text_ids: list[str], rng) -> np.ndarray:
    """text_layers/<...>/part-00000.parquet: text by text, layers ascending, as the embedding step writes."""
    states = rng.standard_normal((len(text_ids), 3, 10)).astype(np.float32) + np.array([0.0, 1.0, 3.0])[None, :, None]
    directory = root.text_layers(dataset, MODEL, lang)
    directory.mkdir(parents=True)
    flat = pa.array(states.reshape(-1), type=pa.float32())
    pq.write_table(pa.table({"text_id": [t for t in text_ids for _ in range(3)],
                             "layer": pa.array(list(range(3)) * len(text_ids), pa.int16()),
                             "state": pa.FixedSizeListArray.from_arrays(flat, 10),
                             "norm": np.linalg.norm(states.reshape(-1, 10), axis=1)}), directory / "part-00000.parquet")
    return states


def _write_synthetic(root: DataRoot) -> dict:
    """Manifests and embeddings of a captioned set (coco: en and fr captions) and a classification set
    (cifar100: one prompt per class), raw (unnormalized) rows in CLIP-like cones."""
    rng = np.random.default_rng(0)
    prov = {"model": MODEL, "logit_scale": SCALE, "logit_bias": None}
    arrays = {}
    # coco: images, en captions (image + noise), fr captions (en + noise)
    img = _cone(rng, N_COCO, 0) * rng.uniform(0.5, 2.0, size=(N_COCO, 1)).astype(np.float32)
    en = (img + 0.7 * rng.standard_normal(img.shape) + _cone(rng, N_COCO, 1)).astype(np.float32)
    fr = (en + 0.5 * rng.standard_normal(en.shape)).astype(np.float32)
    ids = [f"c{i:04d}" for i in range(N_COCO)]
    write_manifest(root.dataset_dir("coco"), root.scratch, {
        "samples": pa.table({"sample_id": ids, "split": ["train"] * N_COCO, "label": pa.array([None] * N_COCO,
                                                                                              pa.int64())}),
        "texts": pa.table({"text_id": [f"{s}-{lang}" for lang in ("en", "fr") for s in ids],
                           "sample_id": ids * 2, "label": pa.array([None] * 2 * N_COCO, pa.int64()),
                           "lang": ["en"] * N_COCO + ["fr"] * N_COCO,
                           "text": [f"caption {s}" for s in ids] * 2})}, {})
    write_embeddings(root.image_embeddings("coco", MODEL), root.scratch, IMAGE_KEY_COLUMNS,
                     [({"sample_id": ids}, img)], prov)
    for lang, emb in (("en", en), ("fr", fr)):
        write_embeddings(root.text_embeddings("coco", MODEL, lang), root.scratch, TEXT_KEY_COLUMNS,
                         [({"text_id": [f"{s}-{lang}" for s in ids], "sample_id": ids, "label": [None] * N_COCO,
                            "text": [f"caption {s}" for s in ids]}, emb)], prov)
    arrays["coco"] = (img, en, fr)
    # pooled hidden states of the captions, 3 layers (the storage contract's text_layers files)
    arrays["layers"] = _write_layers(root, "coco", "en", [f"{s}-en" for s in ids], rng)
    _write_layers(root, "coco", "fr", [f"{s}-fr" for s in ids], rng)
    # cifar100: labelled images (official train/test split), one raw-name prompt per class
    prompts = _cone(rng, CLASSES, 1) * rng.uniform(0.3, 3.0, size=(CLASSES, 1)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=N_CIFAR)
    cimg = (prompts[labels] + 1.5 * rng.standard_normal((N_CIFAR, D)) + _cone(rng, N_CIFAR, 0)).astype(np.float32)
    split = np.where(np.arange(N_CIFAR) < N_CIFAR * 5 // 6, "train", "test")
    cids = [f"k{i:04d}" for i in range(N_CIFAR)]
    texts = [f"low-resolution photo of a class_{c}" for c in range(CLASSES)]
    write_manifest(root.dataset_dir("cifar100"), root.scratch, {
        "samples": pa.table({"sample_id": cids, "split": split.tolist(), "label": labels.tolist()}),
        "texts": pa.table({"text_id": [f"p{c}" for c in range(CLASSES)], "sample_id": pa.array([None] * CLASSES,
                                                                                                 pa.string()),
                           "label": list(range(CLASSES)), "lang": ["en"] * CLASSES, "text": texts})}, {})
    write_embeddings(root.image_embeddings("cifar100", MODEL), root.scratch, IMAGE_KEY_COLUMNS,
                     [({"sample_id": cids}, cimg)], prov)
    write_embeddings(root.text_embeddings("cifar100", MODEL, "en"), root.scratch, TEXT_KEY_COLUMNS,
                     [({"text_id": [f"p{c}" for c in range(CLASSES)], "sample_id": [None] * CLASSES,
                        "label": list(range(CLASSES)), "text": texts}, prompts)], prov)
    arrays["cifar100"] = (cimg, prompts, labels, split)
    _write_layers(root, "cifar100", "en", [f"p{c}" for c in range(CLASSES)], rng)
    return arrays


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    import dagster as dg

    from assets import keys
    from conescope.profile import load_profile
    from pipelines.definitions import build_definitions

    tmp = tmp_path_factory.mktemp("replay")
    (tmp / "replay.yaml").write_text(yaml.safe_dump(PROFILE))
    profile = load_profile(str(tmp / "replay.yaml"))
    root = DataRoot(tmp / "data")
    arrays = _write_synthetic(root)
    defs = build_definitions(profile, str(tmp / "data"))
    instance = dg.DagsterInstance.ephemeral()
    selections = {"model_lang_job": [keys.metric("isotropy"), keys.metric("layers")],
                  "paired_job": [keys.metric("clip_loss"), keys.metric("modality_gap"),
                                 *(keys.transform(k) for k in profile.transforms.kinds), keys.TRANSFORM_METRICS]}
    for lang in ("en", "fr"):
        for job_name, selection in selections.items():
            result = defs.resolve_job_def(job_name).execute_in_process(
                instance=instance, partition_key=f"{lang}|{MODEL}", asset_selection=selection, raise_on_error=True)
            assert result.success
    for key in (keys.metric("image_isotropy"), keys.metric("multilingual")):
        result = defs.resolve_job_def("image_job" if key == keys.metric("image_isotropy") else "model_summary_job"
                                      ).execute_in_process(instance=instance, partition_key=MODEL,
                                                           asset_selection=[key], raise_on_error=True)
        assert result.success
    return arrays, _warehouse_rows(root)


COLUMNS = ("family", "dataset", "lang", "modality", "transform", "fit_set", "eval_set", "metric", "value", "ci_low",
           "ci_high", "params", "layer")


def _warehouse_rows(root: DataRoot) -> list[dict]:
    con = duckdb.connect(str(root.warehouse), read_only=True)
    rows = con.execute(f"SELECT {', '.join(c if c != 'layer' else 'NULL AS layer' for c in COLUMNS)} "
                       "FROM metrics.all").fetchall()
    rows += con.execute(f"SELECT 'layers', {', '.join(COLUMNS[1:])} FROM metrics.layers").fetchall()
    con.close()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows if not (r[0] == "layers" and r[-1] is None)]


def _value(rows, **match) -> float:
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, len(hits))
    return float(hits[0]["value"])


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _authors_split(n, seed=0):
    train_size = round(n * 0.8)
    perm = torch.randperm(n, generator=torch.manual_seed(seed)).numpy()
    return perm[:train_size], perm[train_size:]


# --- Tyshchuk et al. 2023 ------------------------------------------------------------------------

def _batch_averaged_clip_loss(img, txt, batch=64, scale=SCALE):
    """The paper's loss: consecutive batches of 64 in the order given, the symmetric cross-entropy of
    each batch, then the plain mean over batches (a short last batch counts as a whole batch)."""
    losses = []
    for s in range(0, len(img), batch):
        logits = scale * _unit(img[s:s + batch]) @ _unit(txt[s:s + batch]).T
        diag = np.diag(logits)
        i2t = logsumexp(logits, axis=1) - diag
        t2i = logsumexp(logits, axis=0) - diag
        losses.append((i2t.mean() + t2i.mean()) / 2)
    return float(np.mean(losses))


def test_tyshchuk_split_and_clip_loss_replay(replay):
    arrays, rows = replay
    img, en, _ = arrays["coco"]
    train, test = _authors_split(N_COCO)
    assert (len(train), len(test)) == (320, 80)  # two batches of the test set: 64 and a short 16
    measured = _value(rows, family="clip_loss", dataset="coco", lang="en", transform="identity", metric="loss",
                      eval_set="coco:test")
    assert measured == pytest.approx(_batch_averaged_clip_loss(img[test], en[test]), rel=1e-6)
    # the switch matters here: sorted test rows, or a per-sample mean, give other numbers
    assert abs(measured - _batch_averaged_clip_loss(img[np.sort(test)], en[np.sort(test)])) > 1e-4
    first, short = _batch_averaged_clip_loss(img[test[:64]], en[test[:64]]), _batch_averaged_clip_loss(
        img[test[64:]], en[test[64:]])
    assert abs(measured - (64 * first + 16 * short) / 80) > 1e-4
    # the raw row: every pair in file order, the same batch-averaged loss
    raw = _value(rows, family="clip_loss", dataset="coco", lang="en", transform="none", metric="loss")
    assert raw == pytest.approx(_batch_averaged_clip_loss(img, en), rel=1e-6)
    # centering fitted on the authors' train rows, evaluated on their test rows
    mu = np.vstack([_unit(img[train]), _unit(en[train])]).mean(axis=0)
    centred = _value(rows, family="clip_loss", dataset="coco", lang="en", transform="centering", metric="loss",
                     eval_set="coco:test")
    assert centred == pytest.approx(_batch_averaged_clip_loss(_unit(img[test]) - mu, _unit(en[test]) - mu), rel=1e-6)


def test_tyshchuk_i1_compat_and_per_modality_centering_replay(replay):
    arrays, rows = replay
    img, en, _ = arrays["coco"]

    def i1_rows_of_eigenvector_matrix(x):  # the published code: directions are the rows of eigh's matrix
        u = _unit(x)
        _, v = np.linalg.eigh(u.T @ u)
        z = np.array([np.exp(u @ v[j, :]).sum() for j in range(v.shape[0])])
        return z.min() / z.max()

    def i1_columns(x):  # the definition: eigenvectors (columns), oriented into the data
        u = _unit(x)
        _, v = np.linalg.eigh(u.T @ u)
        v = v * np.where(u.sum(axis=0) @ v < 0, -1.0, 1.0)
        z = np.exp(u @ v).sum(axis=0)
        return z.min() / z.max()

    assert _value(rows, family="isotropy", dataset="coco", modality="image", transform="none",
                  metric="i1_compat") == pytest.approx(i1_rows_of_eigenvector_matrix(img), rel=2e-6)
    assert _value(rows, family="isotropy", dataset="coco", modality="text", lang="en", transform="none",
                  metric="i1_compat") == pytest.approx(i1_rows_of_eigenvector_matrix(en), rel=2e-6)
    # Table 5: each modality centred on its own (train) mean, renormalized, I1 on the test rows
    train, test = _authors_split(N_COCO)
    for modality, x in (("image", img), ("text", en)):
        centred = _unit(x[test]) - _unit(x[train]).mean(axis=0)
        assert _value(rows, family="isotropy", dataset="coco", lang="en", modality=modality,
                      transform="centering_per_modality", metric="i1", eval_set="coco:test") == pytest.approx(
            i1_columns(centred), rel=2e-6)


def _top1(images, labels, prompts, geometry="cosine"):
    scores = _unit(images) @ _unit(prompts).T if geometry == "cosine" else images @ prompts.T
    return float(np.mean(scores.argmax(axis=1) == labels))


def test_tyshchuk_pca_truncated_svd_and_image_whitening_replay(replay):
    arrays, rows = replay
    cimg, prompts, labels, split = arrays["cifar100"]
    train, test = split == "train", split == "test"
    fit_img, fit_txt = _unit(cimg[train]), _unit(prompts[labels[train]])
    # PCA-5 as the paper's code: TruncatedSVD of cat([train images] + [the prompts]) (each prompt once),
    # uncentred, the projections scored by dot product
    svd = TruncatedSVD(n_components=5, algorithm="arpack", random_state=0).fit(np.vstack([fit_img, _unit(prompts)]))
    expected = _top1(svd.transform(_unit(cimg[test])), labels[test], svd.transform(_unit(prompts)), "dot")
    assert _value(rows, family="zero_shot", dataset="cifar100", transform="pca_5_tsvd", metric="top1",
                  fit_set="cifar100:train", eval_set="cifar100:test") == expected
    # the pairs' prompts (each repeated per image) span another subspace: the switch matters here
    repeated = TruncatedSVD(n_components=5, algorithm="arpack", random_state=0).fit(np.vstack([fit_img, fit_txt]))
    assert not np.allclose(np.abs(repeated.components_), np.abs(svd.components_), atol=1e-3)
    # PCA-425 fitted on COCO: TruncatedSVD of all images and captions (81,008 rows there), applied to CIFAR
    img, en, _ = arrays["coco"]
    coco_svd = TruncatedSVD(n_components=5, algorithm="arpack", random_state=0).fit(np.vstack([_unit(img), _unit(en)]))
    expected = _top1(coco_svd.transform(_unit(cimg[test])), labels[test], coco_svd.transform(_unit(prompts)), "dot")
    assert _value(rows, family="zero_shot", dataset="cifar100", transform="pca_5_tsvd", metric="top1",
                  fit_set="coco:all", eval_set="cifar100:test") == expected
    # whitening-4 fitted on the CIFAR train images only (the authors' Whitener: torch.cov, SVD)
    x = torch.from_numpy(fit_img)
    mu = x.mean(dim=0)
    u, s, _ = torch.linalg.svd(torch.cov(x.T))
    w = (u / torch.sqrt(s))[:, :4].numpy()
    white = (_unit(cimg[test]) - mu.numpy()) @ w
    white_prompts = (_unit(prompts) - mu.numpy()) @ w
    assert _value(rows, family="zero_shot", dataset="cifar100", transform="whitening_4_image", metric="top1",
                  fit_set="cifar100:train", eval_set="cifar100:test") == _top1(white, labels[test], white_prompts)


def _their_isotropy_1_rows(x):
    """The authors' get_isotropy_1: Z over the rows of the eigenvector matrix of X^T X (their torch.eig,
    whose order and signs are the solver's; numpy's eigh here, as conescope's i1_compat)."""
    _, v = np.linalg.eigh(x.T @ x)
    z = np.array([np.exp(x @ v[j, :]).sum() for j in range(v.shape[0])])
    return z.min() / z.max()


def test_tyshchuk_table_5_all_rows_replay(replay):
    """Table 5's 0.99-1.00: get_isotropy_1(normed(centered(x))) on every row of a modality."""
    arrays, rows = replay
    img, en, _ = arrays["coco"]
    for modality, x in (("image", img), ("text", en)):
        u = _unit(x)
        expected = _their_isotropy_1_rows(_unit(u - u.mean(axis=0)))
        assert _value(rows, family="isotropy", dataset="coco", lang="en", modality=modality,
                      transform="centering_per_modality", metric="i1_compat", fit_set="coco:all",
                      eval_set="coco:all") == pytest.approx(expected, rel=2e-6)


def test_tyshchuk_lstsq_gelsy_replay(replay):
    """Their least squares: torch.linalg.lstsq(text, image).solution on float32 rows normed in float32 (CPU
    default driver gelsy), text rows mapped by it; on COCO the loss, on CIFAR-100 zero-shot."""
    arrays, rows = replay

    def normed32(x):
        t = torch.from_numpy(np.asarray(x, dtype=np.float32))
        return t / t.norm(dim=-1, keepdim=True)

    img, en, _ = arrays["coco"]
    train, test = _authors_split(N_COCO)
    w = torch.linalg.lstsq(normed32(en[train]), normed32(img[train])).solution.numpy()
    expected = _batch_averaged_clip_loss(_unit(img[test]), _unit(en[test]) @ w)
    assert _value(rows, family="clip_loss", dataset="coco", lang="en", transform="lstsq_gelsy", metric="loss",
                  fit_set="coco:train", eval_set="coco:test") == pytest.approx(expected, rel=1e-5)
    cimg, prompts, labels, split = arrays["cifar100"]
    tr, te = split == "train", split == "test"
    w = torch.linalg.lstsq(normed32(prompts[labels[tr]]), normed32(cimg[tr])).solution.numpy()
    assert _value(rows, family="zero_shot", dataset="cifar100", transform="lstsq_gelsy", metric="top1",
                  fit_set="cifar100:train", eval_set="cifar100:test") == _top1(cimg[te], labels[te], _unit(prompts) @ w)


def test_tyshchuk_procrustes_fitted_on_all_coco_pairs_replay(replay):
    """Table 3's "Procrustes fitted on COCO": orthogonal_procrustes(all text rows, all image rows), the CIFAR
    prompts rotated by it, zero-shot by cosine."""
    from scipy.linalg import orthogonal_procrustes

    arrays, rows = replay
    img, en, _ = arrays["coco"]
    r, _ = orthogonal_procrustes(_unit(en), _unit(img))
    cimg, prompts, labels, split = arrays["cifar100"]
    te = split == "test"
    assert _value(rows, family="zero_shot", dataset="cifar100", transform="procrustes", metric="top1",
                  fit_set="coco:all", eval_set="cifar100:test") == _top1(cimg[te], labels[te], _unit(prompts) @ r)


def test_tyshchuk_known_classes_and_probe_rows(replay):
    _, rows = replay
    torch.manual_seed(0)
    known = sorted(torch.randperm(CLASSES)[: CLASSES // 2].tolist())
    disjoint = [r for r in rows if json.loads(r["params"] or "{}").get("protocol") == "class_disjoint"]
    assert disjoint and all(json.loads(r["params"])["known_classes"] == known for r in disjoint)
    probe = [r for r in rows if r["family"] == "linear_probe" and r["transform"] == "whitening_4"]
    assert {r["fit_set"] for r in probe} == {"coco:all", "cifar100:train"}  # the authors' COCO fit: every pair


def test_tyshchuk_distance_ratio_on_raw_rows_over_all_pairs(replay):
    arrays, rows = replay
    _, en, fr = arrays["coco"]
    a, b = fr.astype(np.float64), en.astype(np.float64)
    all_pairs = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    expected = np.diag(all_pairs).mean() / all_pairs.mean()
    assert _value(rows, family="multilingual", dataset="coco", lang="fr",
                  metric="distance_ratio_sq_raw") == pytest.approx(expected, rel=1e-6)


# --- Amumo (Humer et al.) and Liang et al. 2022 --------------------------------------------------

def test_amumo_loss_replay(replay):
    """Amumo's loss table: image -> text only, batches of 50, the remainder dropped."""
    arrays, rows = replay
    img, en, _ = arrays["coco"]
    losses = []
    for s in range(0, len(img) // 50 * 50, 50):
        logits = SCALE * _unit(img[s:s + 50]) @ _unit(en[s:s + 50]).T
        losses.append((logsumexp(logits, axis=1) - np.diag(logits)).mean())
    assert _value(rows, family="clip_loss", dataset="coco", lang="en", transform="none",
                  metric="loss_i2t_amumo") == pytest.approx(float(np.mean(losses)), rel=1e-6)


def test_amumo_closed_gap_of_the_evaluated_set_replay(replay):
    """Amumo's closed-gap columns: get_closed_modality_gap on the evaluated pairs themselves (their gap, half
    to each side, renormalized), then calculate_val_loss and the distance of the means."""
    arrays, rows = replay
    img, en, _ = arrays["coco"]
    _, test = _authors_split(N_COCO)
    a, b = _unit(img[test]), _unit(en[test])
    gap = a.mean(axis=0) - b.mean(axis=0)
    a, b = _unit(a - 0.5 * gap), _unit(b + 0.5 * gap)
    losses = []
    for s in range(0, len(a) // 50 * 50, 50):
        logits = SCALE * a[s:s + 50] @ b[s:s + 50].T
        losses.append((logsumexp(logits, axis=1) - np.diag(logits)).mean())
    where = {"dataset": "coco", "lang": "en", "transform": "gap_shift_1_eval", "fit_set": "coco:test",
             "eval_set": "coco:test"}
    assert _value(rows, family="clip_loss", metric="loss_i2t_amumo", **where) == pytest.approx(
        float(np.mean(losses)), rel=1e-5)
    assert _value(rows, family="modality_gap", metric="gap_norm", **where) == pytest.approx(
        np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)), rel=1e-4, abs=1e-7)
    # the default shift closes the train split's gap instead: another number
    assert abs(_value(rows, family="clip_loss", metric="loss_i2t_amumo", dataset="coco", lang="en",
                      transform="gap_shift_1", eval_set="coco:test") - float(np.mean(losses))) > 1e-4


# --- Liang et al. 2022 ----------------------------------------------------------------------------

def test_liang_gap_norm_and_shift_replay(replay):
    arrays, rows = replay
    img, en, _ = arrays["coco"]
    gap = _unit(img).mean(axis=0) - _unit(en).mean(axis=0)
    assert _value(rows, family="modality_gap", dataset="coco", lang="en", transform="none",
                  metric="gap_norm") == pytest.approx(np.linalg.norm(gap), rel=1e-6)
    # lambda = 1: the train gap closed on the test rows (each side moved by half of it, renormalized)
    train, test = _authors_split(N_COCO)
    delta = _unit(img[train]).mean(axis=0) - _unit(en[train]).mean(axis=0)
    shifted_img, shifted_txt = _unit(_unit(img[test]) - delta / 2), _unit(_unit(en[test]) + delta / 2)
    expected = np.linalg.norm(shifted_img.mean(axis=0) - shifted_txt.mean(axis=0))
    assert _value(rows, family="modality_gap", dataset="coco", lang="en", transform="gap_shift_1",
                  metric="gap_norm", eval_set="coco:test") == pytest.approx(expected, rel=1e-5)


# --- Mickus et al. (IsoScore, Rudman et al. 2022) ----------------------------------------------------

def test_mickus_isoscore_replay(replay):
    """IsoScore, Algorithm 1 of Rudman et al. as the IsoScore package computes it: PCA-reoriented
    variances, normalized to the norm of the all-ones vector, the isotropy defect, the fraction of
    dimensions used."""
    arrays, rows = replay
    img, _, _ = arrays["coco"]
    x = _unit(img)
    x = x - x.mean(axis=0)
    variances = np.abs(np.linalg.svd(np.cov(x.T), compute_uv=False))
    d = len(variances)
    normalized = variances * np.sqrt(d) / np.linalg.norm(variances)
    defect = np.linalg.norm(normalized - 1) / np.sqrt(2 * (d - np.sqrt(d)))
    k = (d - defect ** 2 * (d - np.sqrt(d))) ** 2 / d
    expected = (k - 1) / (d - 1)
    assert _value(rows, family="isotropy", dataset="coco", modality="image", transform="none",
                  metric="isoscore") == pytest.approx(expected, rel=1e-6)


# --- Wolfe & Caliskan 2022 ------------------------------------------------------------------------

def test_wolfe_caliskan_layer_self_similarity_replay(replay):
    arrays, rows = replay
    states = arrays["layers"]
    for layer in range(3):
        u = _unit(states[:, layer])
        cos = u @ u.T
        expected = cos[~np.eye(len(u), dtype=bool)].mean()
        hit = [r for r in rows if r["family"] == "layers" and r["metric"] == "self_similarity" and r["layer"] == layer
               and r["dataset"] == "coco" and r["lang"] == "en"]
        assert len(hit) == 1
        assert hit[0]["value"] == pytest.approx(expected, rel=1e-6)
        assert hit[0]["ci_low"] <= hit[0]["value"] <= hit[0]["ci_high"]  # rows resampled (docs/fidelity.md)


# --- Chou & Alam 2024 -----------------------------------------------------------------------------

@pytest.mark.parametrize("geometry", ["dot", "neg_sq_euclidean"])
def test_chou_alam_geometry_replay(replay, tmp_path, geometry):
    """Zero-shot and CLIP loss with the raw-embedding logits of EuCLIP: the same stored embeddings, the
    metric assets re-run with ``metrics.geometry``."""
    import dagster as dg

    from assets import keys
    from conescope.profile import load_profile
    from pipelines.definitions import build_definitions

    arrays, _ = replay
    raw = {**PROFILE, "metrics": {**PROFILE["metrics"], "geometry": geometry}}
    raw.pop("transforms")
    (tmp_path / "geo.yaml").write_text(yaml.safe_dump(raw))
    profile = load_profile(str(tmp_path / "geo.yaml"))
    root = DataRoot(tmp_path / "data")
    _write_synthetic(root)
    defs = build_definitions(profile, str(tmp_path / "data"))
    defs.resolve_job_def("paired_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=f"en|{MODEL}",
        asset_selection=[keys.metric("zero_shot"), keys.metric("clip_loss")], raise_on_error=True)
    rows = _warehouse_rows(root)

    def score(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if geometry == "dot":
            return a @ b.T
        return -((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    cimg, prompts, labels, _ = arrays["cifar100"]
    expected = np.mean(score(cimg, prompts).argmax(axis=1) == labels)
    assert _value(rows, family="zero_shot", dataset="cifar100", transform="none", metric="top1") == expected
    # scoring the raw prompts matters: with unit prompts (as before) the answer differs
    assert expected != np.mean(score(cimg, _unit(prompts)).argmax(axis=1) == labels)
    img, en, _ = arrays["coco"]
    losses = []
    for s in range(0, N_COCO, 64):
        logits = SCALE * score(img[s:s + 64], en[s:s + 64])
        diag = np.diag(logits)
        losses.append(((logsumexp(logits, axis=1) - diag).mean() + (logsumexp(logits, axis=0) - diag).mean()) / 2)
    assert _value(rows, family="clip_loss", dataset="coco", lang="en", transform="none",
                  metric="loss") == pytest.approx(float(np.mean(losses)), rel=1e-6)
