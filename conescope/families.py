"""Metric families: the rows each warehouse table receives for one partition.

Each function takes embedding sets and the profile's metric settings and returns metric records
(``dataset``, ``modality``, ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n``, ``eval_set``,
``params``); the asset adds ``model``, ``lang`` and provenance. The formulas live in
``conescope.metrics``; this module decides which records a family gives for one pair of sets (which
rows are paired, which metrics get a bootstrap CI, what goes into ``params``), and
``conescope.partition_metrics`` which sets of a partition each family is computed on.
"""

from __future__ import annotations

import json

import numpy as np

from conescope.metrics import (
    bootstrap,
    clip_loss,
    clusters,
    gap,
    isotropy,
    layers,
    linear_probe,
    multilingual,
    retrieval,
    zero_shot,
)
from conescope.profile import MetricSettings
from conescope.sets import ImageSet, TextSet, caption_pairs, class_prompts, first_caption_pairs, positive_pairs


def _params(**kw) -> str:
    return json.dumps(kw, sort_keys=True, default=str)


def _rec(dataset: str, modality: str, metric: str, value: float, n: int, ci=(None, None), eval_set: str = "all",
         params: str | None = None, **extra) -> dict:
    """One metric record; ``ci`` is (low, high) or a ``bootstrap.Interval``, whose method goes into
    ``params`` as ``ci`` (README "Warehouse")."""
    if isinstance(ci, bootstrap.Interval):
        if ci.method is not None:
            params = json.dumps({**json.loads(params or "{}"), "ci": ci.method}, sort_keys=True, default=str)
        ci = (ci.low, ci.high)
    return {"dataset": dataset, "modality": modality, "metric": metric, "value": float(value),
            "ci_low": None if ci[0] is None else float(ci[0]), "ci_high": None if ci[1] is None else float(ci[1]),
            "n": int(n), "eval_set": eval_set, "params": params, **extra}


def _mean_rec(dataset: str, modality: str, metric: str, values: np.ndarray, settings: MetricSettings, **kw) -> dict:
    ci = bootstrap.mean_ci(np.asarray(values, dtype=np.float64), seed=settings.seed, n_boot=settings.bootstrap)
    return _rec(dataset, modality, metric, ci.value, len(values), ci, **kw)


# --- isotropy ------------------------------------------------------------------------------------

def _compat_params(metric: str) -> str | None:
    if not metric.endswith("_compat"):
        return None
    return _params(eigenvectors="rows of numpy eigh's matrix, signs as returned (the published code)",
                   note="depends on the eigensolver's signs and eigenvalue order (numpy: ascending; the "
                        "authors' torch.eig: unsorted); see conescope.metrics.isotropy.i1_i2")


def _pairwise_rec(dataset: str, modality: str, metric: str, x: np.ndarray, settings: MetricSettings, **kw) -> dict:
    """A mean over pairs of rows with its jackknife CI over rows (``bootstrap.pairwise_mean_cosine_ci``)."""
    ci = bootstrap.pairwise_mean_cosine_ci(x)
    return _rec(dataset, modality, metric, ci.value, len(x), ci, **kw)


def isotropy_rows(dataset: str, modality: str, x: np.ndarray, settings: MetricSettings) -> list[dict]:
    """i1, i2, isoscore, isoscore_null, mean_cosine (with CI), mean_vector_norm, effective_rank."""
    summary, _ = isotropy.isotropy_profile(x)
    rows = [_rec(dataset, modality, m, v, len(x), params=_compat_params(m)) for m, v in summary.items()
            if m != "mean_cosine"]
    rows.append(_pairwise_rec(dataset, modality, "mean_cosine", x, settings))
    rows.append(_rec(dataset, modality, "isoscore_null", isotropy.isoscore_null(len(x), x.shape[1]), len(x),
                     params=_params(null="isotropic gaussian, L2-normalized, expected moments", n=len(x),
                                    d=x.shape[1])))
    return rows


# --- modality gap --------------------------------------------------------------------------------

def _take_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows], as a view when ``rows`` is 0, 1, ..., k - 1 (every image with its one caption): a copy of
    40,000 x 512 rows costs more in page faults than the interval that reads it."""
    if len(rows) <= len(x) and np.array_equal(rows, np.arange(len(rows))):
        return x[:len(rows)]
    return x[rows]


def gap_rows(image: ImageSet, text: TextSet, settings: MetricSettings, separability: bool = True) -> list[dict]:
    """gap_norm, the separability probes (cross-validated: the costly part, ``separability=False``
    leaves them out) and the positive vs random pair cosines."""
    ds, n = image.dataset, len(image.emb) + len(text.emb)
    rows = [_rec(ds, "joint", "gap_norm", gap.gap_norm(image.emb, text.emb), n)]
    for method in ("logreg", "svm") if separability else ():
        acc = gap.modality_separability(image.emb, text.emb, method=method, folds=settings.folds, seed=settings.seed)
        rows.append(_rec(ds, "joint", f"separability_{method}", acc, n, params=_params(folds=settings.folds)))
    img_rows, txt_rows, kind = positive_pairs(image, text)
    if len(img_rows) == 0:
        return rows
    pos = gap.indexed_pair_cosines(image.emb, text.emb, img_rows, txt_rows)
    params = _params(positive=kind, random="every non-matching pair (i != j) of one pair per image")
    # captions of one image share it: the interval resamples images, each with all its captions
    _, image_of_pair = np.unique(img_rows, return_inverse=True)
    sums, counts = np.bincount(image_of_pair, weights=pos), np.bincount(image_of_pair).astype(np.float64)
    pos_ci = bootstrap.ratio_ci(sums, counts, seed=settings.seed, n_boot=settings.bootstrap)
    pos_mean = pos_ci.value
    rows.append(_rec(ds, "pair", "pos_cosine_mean", pos_mean, len(pos), pos_ci, params=params))
    # random pairs: the exact mean over non-matching pairs of one (image, text) pair per image, a mean
    # over pairs whose interval leaves one pair out at a time (bootstrap.cross_pair_mean_cosine_ci)
    _, first = np.unique(img_rows, return_index=True)
    if len(first) >= 2:
        rand = bootstrap.cross_pair_mean_cosine_ci(_take_rows(image.emb, img_rows[first]),
                                                   _take_rows(text.emb, txt_rows[first]))
        rows += [_rec(ds, "pair", "rand_cosine_mean", rand.value, len(first), rand, params=params),
                 _rec(ds, "pair", "similarity_gap", pos_mean - rand.value, len(pos), params=params)]
    return rows


# --- quality -------------------------------------------------------------------------------------

def clip_loss_rows(image: ImageSet, text: TextSet, model_scale: float, model_bias: float | None,
                   settings: MetricSettings) -> list[dict]:
    img_rows, txt_rows = first_caption_pairs(image, text)
    if len(img_rows) < 2:
        return []
    scale = settings.logit_scale if settings.logit_scale is not None else model_scale
    i2t, t2i = clip_loss.clip_loss_per_sample(image.emb[img_rows], text.emb[txt_rows], logit_scale=scale,
                                              logit_bias=model_bias, batch_size=settings.clip_batch_size,
                                              geometry=settings.geometry)
    params = _params(batch_size=settings.clip_batch_size or "full", logit_scale=scale, logit_bias=model_bias,
                     geometry=settings.geometry, pairs="first caption per image", mean_over=settings.clip_loss_mean)
    ds = image.dataset

    def rec(metric: str, terms: np.ndarray) -> dict:
        # the terms of one batch share its softmax: the CI resamples whole batches
        ci = bootstrap.batch_mean_ci(terms, settings.clip_batch_size, seed=settings.seed,
                                     n_boot=settings.bootstrap, weighting=settings.clip_loss_mean)
        return _rec(ds, "pair", metric, ci.value, len(terms), ci, params=params)

    rows = [rec("loss", (i2t + t2i) / 2), rec("loss_i2t", i2t), rec("loss_t2i", t2i)]
    if settings.amumo_loss and len(img_rows) >= AMUMO_BATCH:
        terms = clip_loss.amumo_loss_per_sample(image.emb[img_rows], text.emb[txt_rows], scale, AMUMO_BATCH,
                                                settings.geometry)
        ci = bootstrap.batch_mean_ci(terms, AMUMO_BATCH, seed=settings.seed, n_boot=settings.bootstrap)
        rows.append(_rec(ds, "pair", "loss_i2t_amumo", ci.value, len(terms), ci,
                         params=_params(batch_size=AMUMO_BATCH, remainder="dropped", direction="image->text",
                                        logit_scale=scale, geometry=settings.geometry,
                                        pairs="first caption per image")))
    return rows


AMUMO_BATCH = 50  # the Amumo article's batch size


def zero_shot_rows(image: ImageSet, text: TextSet, settings: MetricSettings,
                   eval_split: str | None = None) -> list[dict]:
    # dot and neg_sq_euclidean score the raw rows (Chou & Alam 2024): normalized prompts would rank like cosine
    classes, class_emb = class_prompts(text, normalize=settings.geometry == "cosine")
    keep = image.labels >= 0 if eval_split is None else (image.labels >= 0) & (image.splits == eval_split)
    if len(classes) < 2 or not keep.any():
        return []
    x, y = image.emb[keep], image.labels[keep]
    templates = sorted({text.texts[r] for r in text.prompt_rows})
    params = _params(geometry=settings.geometry, prompts=templates)
    ds, rows = image.dataset, []
    # one scoring of the images serves every k and the per-class recall (zero_shot.zero_shot_hits per k)
    ranks = zero_shot.true_class_ranks(x, y, class_emb, class_ids=classes, geometry=settings.geometry)
    for k in (1, 5):
        if k > len(classes):
            continue
        rows.append(_mean_rec(ds, "pair", f"top{k}", ranks < k, settings, eval_set=eval_split or "all",
                              params=params))
    scores = zero_shot.zero_shot_from_ranks(ranks, y, len(classes), ks=(1,))
    rows.append(_rec(ds, "pair", "mean_per_class_recall", scores["mean_per_class_recall"], len(y),
                     eval_set=eval_split or "all", params=params))
    return rows


def retrieval_rows(image: ImageSet, text: TextSet, settings: MetricSettings) -> list[dict]:
    """Recall@k both ways over the images of ``settings.retrieval_eval_set`` (the test split, or all rows when
    the dataset has no test rows) and their captions: gallery and queries come from the same rows."""
    text_rows, image_rows = caption_pairs(image, text)
    eval_set = "all"
    if settings.retrieval_eval_set == "test":
        in_test = image.splits[image_rows] == "test"
        if np.unique(image_rows[in_test]).size >= 2:
            text_rows, image_rows, eval_set = text_rows[in_test], image_rows[in_test], "test"
    if len(text_rows) < 2:
        return []
    used, remap = np.unique(image_rows, return_inverse=True)
    hits = retrieval.retrieval_hits(image.emb[used], text.emb[text_rows], remap)
    params = _params(captions_per_image=round(len(text_rows) / len(used), 3), similarity="cosine",
                     gallery_images=len(used), gallery_texts=len(text_rows))
    return [_mean_rec(image.dataset, "pair", name, h, settings, eval_set=eval_set, params=params)
            for name, h in sorted(hits.items())]


def linear_probe_rows(image: ImageSet, settings: MetricSettings) -> list[dict]:
    train = (image.splits == "train") & (image.labels >= 0)
    test = (image.splits == "test") & (image.labels >= 0)
    if train.sum() < 2 or test.sum() < 1 or len(np.unique(image.labels[train])) < 2:
        return []
    probe = linear_probe.fit_linear_probe(image.emb[train], image.labels[train], l2=settings.probe_l2,
                                          seed=settings.seed)
    hits = probe.hits(image.emb[test], image.labels[test])
    params = _params(l2=settings.probe_l2, solver="torch lbfgs", precision=probe.precision, n_iter=probe.n_iter,
                     n_iter_bf16=probe.n_iter_bf16, fit_set="train")
    return [_mean_rec(image.dataset, "image", "accuracy", hits, settings, eval_set="test", params=params,
                      fit_set="train")]


def silhouette_rows(dataset: str, modality: str, x: np.ndarray, labels: np.ndarray,
                    settings: MetricSettings) -> list[dict]:
    keep = labels >= 0
    if len(np.unique(labels[keep])) < 2 or keep.sum() <= len(np.unique(labels[keep])):
        return []
    value, lo, hi = clusters.silhouette(x[keep], labels[keep], seed=settings.seed,
                                        exact_max=settings.silhouette_exact_max)
    return [_rec(dataset, modality, "silhouette", value, int(keep.sum()), (lo, hi),
                 params=_params(metric="cosine", exact=lo is None, **({} if lo is None else {"ci": "t-subsamples"})))]


# --- multilingual --------------------------------------------------------------------------------

def multilingual_rows(texts: dict[str, TextSet], reference: str, settings: MetricSettings) -> list[dict]:
    """Distance ratios and cross-lingual recall of each language against ``reference`` on parallel
    captions (rows aligned by the image they describe); language separability over all languages.
    Rows carry the compared language in ``lang``."""
    ref = texts[reference]
    dataset = ref.dataset
    rows: list[dict] = []
    ref_pos = {sid: i for i, sid in enumerate(ref.sample_ids) if sid is not None}
    for lang, other in texts.items():
        if lang == reference:
            continue
        pairs = [(j, ref_pos[sid]) for j, sid in enumerate(other.sample_ids) if sid in ref_pos]
        if len(pairs) < 2:
            continue
        a = other.emb[[p[0] for p in pairs]]
        b = ref.emb[[p[1] for p in pairs]]
        params = _params(reference=reference, pairs=len(pairs))
        for form, name in (("sq", "distance_ratio_sq"), ("plain", "distance_ratio"), ("cos", "distance_ratio_cos")):
            rows.append(_rec(dataset, "text", name, multilingual.distance_ratio(a, b, form), len(pairs),
                             params=params, lang=lang))
        if settings.distance_ratio_raw:
            rows.append(_rec(dataset, "text", "distance_ratio_sq_raw", multilingual.distance_ratio_raw_all_pairs(a, b),
                             len(pairs), params=_params(reference=reference, pairs=len(pairs), rows="raw",
                                                        denominator="all n^2 pairs"), lang=lang))
        for k in (1, 5):
            if k <= len(pairs):
                hits = multilingual.cross_lingual_hits(a, b, k)
                rows.append(_mean_rec(dataset, "text", f"xling_r{k}", hits, settings, params=params, lang=lang))
    if len(texts) >= 2:
        acc = multilingual.language_separability({lang: t.emb for lang, t in texts.items()}, seed=settings.seed,
                                                 folds=settings.folds)
        rows.append(_rec(dataset, "text", "lang_separability", acc, sum(len(t.emb) for t in texts.values()),
                         params=_params(languages=sorted(texts), folds=settings.folds), lang=None))
    return rows


# --- layers --------------------------------------------------------------------------------------

def layer_rows(dataset: str, states: list[np.ndarray], settings: MetricSettings | None = None) -> list[dict]:
    """Self-similarity per layer, with the jackknife CI over rows of a mean over pairs when ``settings`` is given."""
    if settings is None:
        return [_rec(dataset, "text", "self_similarity", value, len(states[0]), layer=i)
                for i, value in enumerate(layers.layer_self_similarity(states))]
    return [_pairwise_rec(dataset, "text", "self_similarity", x, settings, layer=i) for i, x in enumerate(states)]


def _scored_pairs(text_ids: np.ndarray, pairs: dict[str, list]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row positions of both sides and the human score of each scored pair whose two texts are stored
    (None when fewer than 3 are)."""
    position = {tid: i for i, tid in enumerate(text_ids)}
    keep = [k for k, (a, b) in enumerate(zip(pairs["text_id_a"], pairs["text_id_b"], strict=True))
            if a in position and b in position]
    if len(keep) < 3:
        return None
    a = np.asarray([position[pairs["text_id_a"][k]] for k in keep])
    b = np.asarray([position[pairs["text_id_b"][k]] for k in keep])
    return a, b, np.asarray([pairs["score"][k] for k in keep], dtype=np.float64)


def _correlation_rec(dataset: str, metric: str, x: np.ndarray, y: np.ndarray, kind: str, settings: MetricSettings,
                     layer: int | None, params: str) -> dict:
    ci = bootstrap.correlation_ci(x, y, kind, seed=settings.seed, n_boot=settings.bootstrap)
    return _rec(dataset, "text", metric, ci.value, len(x), ci, params=params, layer=layer)


def pair_similarity_rows(metric: str, dataset: str, text_ids: np.ndarray, emb: np.ndarray,
                         states: list[np.ndarray] | None, pairs: dict[str, list],
                         settings: MetricSettings) -> list[dict]:
    """``metric`` (``sts_spearman`` for the sentence pairs of an STS-B-style dataset, ``word_spearman`` for
    the word pairs of a word-similarity benchmark; Wolfe & Caliskan 2022, sections 3.2 and 4.2): Spearman's
    rho between each scored pair's cosine and its human score, for the output embedding (``layer`` null)
    and every hidden layer, with the BCa bootstrap interval over pairs."""
    scored = _scored_pairs(text_ids, pairs)
    if scored is None:
        return []
    a, b, scores = scored
    params = _params(pairs=len(scores), similarity="cosine", correlation="spearman")
    return [_correlation_rec(dataset, metric, layers.pair_cosines(x[a], x[b]), scores, "spearman",
                             settings, layer, params)
            for layer, x in ((None, emb), *enumerate(states or []))]


def valnorm_rows(dataset: str, text_ids: np.ndarray, emb: np.ndarray, states: list[np.ndarray] | None,
                 lexicon: dict[str, list], settings: MetricSettings) -> list[dict]:
    """``valnorm`` of the output embedding (``layer`` null) and of every hidden layer: Pearson's r between
    each lexicon word's SC-WEAT effect size (pleasant vs unpleasant attribute words) and its human
    valence (Toney-Wails & Caliskan 2021; Wolfe & Caliskan 2022, section 4.2), with the BCa bootstrap
    interval over lexicon words (the attribute words held fixed)."""
    position = {tid: i for i, tid in enumerate(text_ids)}
    rows_of = {role: [k for k, (tid, r) in enumerate(zip(lexicon["text_id"], lexicon["role"], strict=True))
                      if r == role and tid in position] for role in ("lexicon", "pleasant", "unpleasant")}
    if len(rows_of["lexicon"]) < 3 or len(rows_of["pleasant"]) < 1 or len(rows_of["unpleasant"]) < 1 \
            or len(rows_of["pleasant"]) + len(rows_of["unpleasant"]) < 2:
        return []
    idx = {role: np.asarray([position[lexicon["text_id"][k]] for k in ks]) for role, ks in rows_of.items()}
    valence = np.asarray([lexicon["score"][k] for k in rows_of["lexicon"]], dtype=np.float64)
    params = _params(words=len(valence), pleasant=len(idx["pleasant"]), unpleasant=len(idx["unpleasant"]),
                     effect_size="sc-weat, std ddof 0", correlation="pearson")
    return [_correlation_rec(dataset, "valnorm",
                             layers.sc_weat(x[idx["lexicon"]], x[idx["pleasant"]], x[idx["unpleasant"]]), valence,
                             "pearson", settings, layer, params)
            for layer, x in ((None, emb), *enumerate(states or []))]
