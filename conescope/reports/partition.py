"""The per model x lang report: where the cone and the gap of one partition are seen.

Per dataset: SVD projections raw, centered and whitened (Tyshchuk et al. 2023, Figures 2-4); the
singular-value spectrum; positive vs random pair cosines before and after each transform (Figures
9-11); the Amumo similarity heatmap of a seeded sample of pairs, as sampled and reordered by
clustering with cluster labels from the captions (Humer et al.); a joint t-SNE map with lines between
pairs and the out-of-sample map that closes the gap visually; the gap-shift landscape (Liang et al.
2022, from the warehouse rows of the gap-shift sweep); per-layer self-similarity (Wolfe & Caliskan
2022); the metric tables of the partition.

Transforms shown in the figures are fitted here on the partition's train-split pairs with
``conescope.transforms`` (the same classes the transform assets fit and store); the numbers in the
tables are the warehouse's.
"""

from __future__ import annotations

import json
import re
from collections import ChainMap
from dataclasses import asdict

import numpy as np

from conescope.metrics import gap
from conescope.metrics.isotropy import l2_normalize, singular_values
from conescope.profile import ReportSettings
from conescope.reports import figures, svg
from conescope.reports.cache import ArrayCache, data_key
from conescope.reports.page import Items, esc, figure, metric_table, render_page, table
from conescope.reports.projections import (
    cluster_labels,
    cluster_order,
    contiguous_groups,
    similarity_blocks,
    subsample,
    svd_projection,
    tsne_maps,
)
from conescope.reports.report_data import DatasetData, RenderedReport, image_items, pairs, text_items
from conescope.reports.thumbs import thumbs_digest
from conescope.transforms import Centering, GapShift, LeastSquares, Procrustes, Whitening

# --- transforms ------------------------------------------------------------------------------------

def _rank(image: np.ndarray, text: np.ndarray) -> int:
    """Directions of the joint covariance with variance above 1e-6 of the largest: whitening a
    direction below that would blow rounding noise up (stricter than ``Whitening``'s own check)."""
    joint = np.vstack([image, text]).astype(np.float64)
    joint -= joint.mean(axis=0)
    # The covariance's non-zero eigenvalues are those of the smaller Gram matrix (divided by n).
    vals = np.linalg.eigvalsh(joint @ joint.T if len(joint) < joint.shape[1] else joint.T @ joint)
    return max(1, int(np.sum(vals > 1e-6 * max(vals[-1], 0.0))))


def fitted_transforms(image: np.ndarray, text: np.ndarray, fit_set: str) -> list:
    """Centering, whitening (k = the fit set's numerical rank, at most the width), Procrustes, least
    squares and the gap shift that closes the gap (lambda = 1, renormalized), fitted on L2-normalized
    pairs."""
    image, text = l2_normalize(image), l2_normalize(text)
    k = min(image.shape[1], _rank(image, text))
    out = [Centering(), Whitening(k), Procrustes(), LeastSquares(), GapShift(1.0, renormalize=True)]
    return [t.fit(image, text, fit_set=fit_set) for t in out]


def _train_pairs(data: DatasetData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fit image rows, fit text rows, eval image rows, eval text rows): pairs of the train split and
    of the test split."""
    img_rows, txt_rows, _ = pairs(data)
    train = data.image.splits[img_rows] == "train"
    return img_rows[train], txt_rows[train], img_rows[~train], txt_rows[~train]


# --- sections --------------------------------------------------------------------------------------

def _svd_figures(data: DatasetData, items: Items, transforms: list, settings: ReportSettings
                 ) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
    img_idx = subsample(len(data.image.emb), settings.max_points, settings.seed)
    txt_idx = subsample(len(data.text.emb), settings.max_points, settings.seed + 1)
    img, txt = l2_normalize(data.image.emb[img_idx]), l2_normalize(data.text.emb[txt_idx])
    img_items, txt_items = image_items(data, items, img_idx), text_items(data, items, txt_idx)
    views = [("raw", img, txt, "L2-normalized, uncentered (Tyshchuk et al. Figure 2)")]
    for t in transforms:
        if t.kind in ("centering", "whitening"):
            views.append((t.name, t.transform(img, "image"), t.transform(txt, "text"),
                          f"after {t.name}, fitted on {t.provenance['fit_set']} "
                          f"({'Figure 3' if t.kind == 'centering' else 'Figure 4'}), not renormalized"))
    out, raw = [], None
    for name, a, b, note in views:
        a2, b2, share = svd_projection(a, b, normalize=False)
        raw = raw or (a2, b2)
        body = svg.scatter([svg.Series("image", a2, img_items, svg.PALETTE[0]),
                            svg.Series("text", b2, txt_items, svg.PALETTE[1], marker="square")],
                           f"{data.name}: SVD projection, {name}", f"SV1 ({share[0]:.0%} of energy)",
                           f"SV2 ({share[1]:.0%} of energy)", equal=True)
        out.append(figure(body, f"{esc(note)}. Rows on the top two right singular vectors of the stacked image "
                                f"and text rows. Hover a point for its caption and image."))
    return "".join(out), raw


def _spectrum_figure(data: DatasetData) -> str:
    spectrum = {"text": singular_values(data.text.emb)}
    if data.image is not None:
        spectrum = {"image": singular_values(data.image.emb), **spectrum,
                    "joint": singular_values(np.vstack([data.image.emb, data.text.emb]))}
    return figure(figures.to_svg(figures.spectrum(spectrum, f"{data.name}: singular values")),
                  "Singular values of the L2-normalized embeddings relative to the largest: a cone shows as one "
                  "dominant value.")


def _histogram_figure(data: DatasetData, transforms: list, fit: tuple, settings: ReportSettings) -> str:
    _, _, ev_img, ev_txt = fit
    held_out = len(ev_img) >= 2
    if not held_out:  # no test pairs (tiny sets): describe every pair, and say so
        ev_img, ev_txt, _ = pairs(data)
    if len(ev_img) < 2:
        return "<p class='note'>Fewer than two image-text pairs: no cosine histograms.</p>"
    img, txt = l2_normalize(data.image.emb[ev_img]), l2_normalize(data.text.emb[ev_txt])
    index = np.arange(len(img))
    n_rand = max(len(img), 1000)
    panels = []
    for t in [None, *transforms]:
        a = img if t is None else t.transform(img, "image")
        b = txt if t is None else t.transform(txt, "text")
        pos = gap.pair_cosines(a, b, index)
        rand = gap.random_pair_cosines(a, b, n_rand, seed=settings.seed, image_index=index)
        panels.append(("raw" if t is None else t.name, pos, rand))
    fig = figures.cosine_histograms(panels, f"{data.name}: positive vs random pair cosines")
    where = ("the test-split pairs (transforms fitted on the train-split pairs)" if held_out
             else "every pair (the test split holds fewer than two pairs)")
    what = "caption" if pairs(data)[2] == "caption" else "class prompt"
    return figure(figures.to_svg(fig), f"Cosine of each image with its own {what} "
                                       f"(positive) and with random non-matching texts, on {where}, before and "
                                       f"after each transform (Tyshchuk et al. Figures 9-11).", wide=True)


def _heatmap_figures(data: DatasetData, items: Items, settings: ReportSettings) -> str:
    img_rows, txt_rows, kind = pairs(data)
    if len(img_rows) < 3:
        return "<p class='note'>Fewer than three pairs: no similarity heatmap.</p>"
    pick = subsample(len(img_rows), settings.heatmap_pairs, settings.seed + 2)
    img_rows, txt_rows = img_rows[pick], txt_rows[pick]
    img, txt = data.image.emb[img_rows], data.text.emb[txt_rows]
    n = len(pick)
    img_items, txt_items = image_items(data, items, img_rows), text_items(data, items, txt_rows)
    sim = similarity_blocks(img, txt)
    blocks = [(0, "image"), (n, "text")]
    base = f"hm-{re.sub(r'[^a-z0-9]+', '-', data.name.lower())}"
    plain = svg.heatmap(sim, img_items + txt_items, f"{base}-sampled",
                        f"{data.name}: similarity of {n} sampled pairs", blocks)
    order, ids = cluster_order(img, txt, min(settings.clusters, max(1, n // 3)))
    captions = [data.text.texts[t] for t in txt_rows[order]]
    labels = cluster_labels(captions, ids)
    full = np.concatenate([order, order + n])
    groups = [(a + off, b + off, labels[c] if off == 0 else "") for off in (0, n)
              for a, b, c in contiguous_groups(ids)]
    clustered = svg.heatmap(sim[np.ix_(full, full)], [(img_items + txt_items)[i] for i in full], f"{base}-clustered",
                            f"{data.name}: reordered by clustering", blocks, groups,
                            reorder_of=(f"{base}-sampled", full))
    what = "caption" if kind == "caption" else "class prompt"
    return (figure(plain, f"Cosine similarity of {n} seeded sample pairs (image and its {what}): image-image "
                          f"(top left), text-text (bottom right) and the two cross-modal blocks (Amumo, Humer et al.). "
                          f"The cross-modal blocks are darker than the within-modality blocks: the modality gap. "
                          f"Hover a cell for both items.")
            + figure(clustered, "The same pairs reordered by average-linkage clustering (scipy, cosine distance on the "
                                "concatenated image and text rows); each cluster is framed and labelled with its "
                                "most distinctive caption words (class-based TF-IDF)."))


def _tsne_figures(data: DatasetData, items: Items, settings: ReportSettings, cache: ArrayCache) -> str:
    img_idx = subsample(len(data.image.emb), settings.max_points, settings.seed)
    txt_idx = subsample(len(data.text.emb), settings.max_points, settings.seed + 1)
    if len(img_idx) < 4:
        return "<p class='note'>Fewer than four images: no t-SNE map.</p>"
    maps = tsne_maps(data.image.emb[img_idx], data.text.emb[txt_idx], settings.seed, cache)
    img_items, txt_items = image_items(data, items, img_idx), text_items(data, items, txt_idx)
    pos_img = {int(r): k for k, r in enumerate(img_idx)}
    pos_txt = {int(r): k for k, r in enumerate(txt_idx)}
    p_img, p_txt, _ = pairs(data)
    linked = [(pos_img[int(i)], pos_txt[int(t)]) for i, t in zip(p_img, p_txt, strict=True)
              if int(i) in pos_img and int(t) in pos_txt]
    li = np.asarray([a for a, _ in linked], dtype=np.int64)
    lt = np.asarray([b for _, b in linked], dtype=np.int64)
    out = []
    for prefix, title, note in (
            ("joint", "joint t-SNE", "One t-SNE map (openTSNE, cosine) fitted on image and text rows together, lines "
                                     "between each image and its caption: the gap shows as two separate clouds."),
            ("oos", "t-SNE fitted on images, texts placed", "Out-of-sample map: t-SNE fitted on the image rows only; "
                                                            "each text row is moved by the whole gap vector (mean "
                                                            "image − mean text, renormalized) and then placed into "
                                                            "that map among its nearest images (openTSNE transform): "
                                                            "the view of the Amumo article that closes the gap "
                                                            "visually.")):
        a, b = maps[f"{prefix}_image"], maps[f"{prefix}_text"]
        body = svg.scatter([svg.Series("image", a, img_items, svg.PALETTE[0]),
                            svg.Series("text", b, txt_items, svg.PALETTE[1], marker="square")],
                           f"{data.name}: {title}", "t-SNE 1", "t-SNE 2",
                           lines=[(a[li], b[lt])] if len(li) else None)
        out.append(figure(body, note + " Hover a point for its caption and image."))
    return "".join(out)


_LAMBDA = re.compile(r"^gap_shift_(?P<lam>-?[0-9.eE+-]+?)(?P<raw>_raw)?(?P<own>_eval)?$")


def gap_shift_points(rows: list[dict]) -> dict[tuple[str, str, bool, bool], list[tuple[float, float]]]:
    """(family/metric, eval set, renormalized, own gap) -> sorted (lambda, value) from the rows of the
    gap-shift sweep (transform names ``gap_shift_<lambda>[_raw][_eval]``). ``own gap``: the ``_eval``
    rows, shifted by the evaluated set's own gap (transductive, Amumo / Liang et al.) rather than the fit
    set's; they are a series of their own, never merged with the inductive one of the same eval set."""
    out: dict[tuple[str, str, bool, bool], list[tuple[float, float]]] = {}
    for r in rows:
        m = _LAMBDA.match(str(r.get("transform") or ""))
        if not m:
            continue
        key = (f"{r['family']}/{r['metric']}", str(r.get("eval_set")), m.group("raw") is None,
               m.group("own") is not None)
        out.setdefault(key, []).append((float(m.group("lam")), float(r["value"])))
    return {k: sorted(v) for k, v in out.items()}


def _landscape_figure(data: DatasetData) -> str:
    points = gap_shift_points(data.rows)
    if not points:
        return ("<p class='note'>No gap-shift rows in the warehouse for this partition (the profile's transforms "
                "section has no gap-shift sweep, or the transform assets have not run).</p>")
    quality = {k: v for k, v in points.items() if k[0] in ("clip_loss/loss", "zero_shot/top1")}
    distance = {k: v for k, v in points.items() if k[0] == "modality_gap/gap_norm"}

    def label(k):
        return (f"{k[0].split('/')[1]} on {k[1]}" + ("" if k[2] else " (not renormalized)")
                + (" (its own gap)" if k[3] else ""))

    fig = figures.curves({label(k): ([x for x, _ in v], [y for _, y in v]) for k, v in quality.items()},
                         f"{data.name}: shifting along the gap", "lambda (0: raw, 1: gap closed)",
                         "CLIP loss / zero-shot top-1",
                         secondary={label(k): ([x for x, _ in v], [y for _, y in v]) for k, v in distance.items()},
                         secondary_label="gap norm")
    rows = []
    for k, v in quality.items():
        dist = dict(distance.get(("modality_gap/gap_norm", *k[1:]), []))
        vals = dict(v)
        if 0.0 in vals and 1.0 in vals:
            rows.append((label(k), dist.get(0.0), vals[0.0], dist.get(1.0), vals[1.0]))
    amumo = table(["metric", "original distance", "original value", "closed distance", "closed value"], rows,
                  numeric=[False, True, True, True, True]) if rows else ""
    return figure(figures.to_svg(fig), "Loss landscape of the gap shift (Liang et al. 2022, Section 4.2): both "
                                       "modalities moved towards each other along the gap vector by lambda/2 each, "
                                       "evaluated on the held-out split, by the gap of the fit set (the train split); "
                                       "series marked 'its own gap' shift the evaluated rows by their own gap "
                                       "(transductive, as Amumo and Liang et al.: gap_of eval_set). Dashed: the "
                                       "remaining gap norm. The table gives the Amumo summary (lambda 0 vs 1).") + amumo


def _layers_figure(sections: list[DatasetData]) -> str:
    series = {}
    for d in sections:
        pts = sorted((int(r["layer"]), float(r["value"])) for r in d.rows
                     if r["family"] == "layers" and r["metric"] == "self_similarity" and r.get("layer") is not None
                     and (r.get("transform") or "none") == "none")
        if pts:
            series[d.name] = ([p[0] for p in pts], [p[1] for p in pts])
    if not series:
        return "<p class='note'>No per-layer rows in the warehouse for this partition.</p>"
    fig = figures.curves(series, "text tower: self-similarity per layer", "hidden layer (0: embeddings)",
                         "mean pairwise cosine")
    return figure(figures.to_svg(fig), "Mean cosine between the pooled hidden states of different texts, layer by "
                                       "layer (Wolfe & Caliskan 2022, metrics.layers).")


def _tables(data: DatasetData) -> str:
    raw = [r for r in data.rows if (r.get("transform") or "none") == "none"]
    fitted = [r for r in data.rows if (r.get("transform") or "none") != "none"]
    out = "<h3>Metrics (raw embeddings)</h3>" + metric_table(raw)
    if fitted:
        out += (f"<details><summary>Metrics after fitted transforms ({len(fitted)} rows)</summary>"
                f"{metric_table(fitted)}</details>")
    return out


def headline(sections: list[DatasetData]) -> dict[str, float]:
    keep = {"i1", "gap_norm", "loss", "top1", "i2t_r1"}
    return {f"{d.name}/{r['modality']}/{r['metric']}": round(float(r["value"]), 4) for d in sections for r in d.rows
            if r["metric"] in keep and (r.get("transform") or "none") == "none"}


def _code_digest() -> str:
    """SHA-256 of the source of the code a partition page depends on: a cached page is reused only
    while this code is unchanged. Taken once, when this module is imported, so that it describes the
    code that runs even if the files change on disk meanwhile."""
    import hashlib
    from pathlib import Path

    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted([*here.glob("*.py"), here.parent / "transforms.py", here.parent / "metrics" / "gap.py"]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


CODE_DIGEST = _code_digest()


def page_key(model: str, lang: str, sections: list[DatasetData], provenance: dict, settings: ReportSettings) -> str:
    """The data version of a partition page: a hash of every input (embeddings, warehouse rows, label
    names, thumbnails, settings, provenance) and of the report code."""
    arrays = [a for d in sections for a in ((d.text.emb,) if d.image is None else (d.image.emb, d.text.emb))]
    described = [(d.name, d.rows, d.label_names, thumbs_digest(d.thumbs),
                  None if d.image is None else d.image.sample_ids.tolist(),
                  None if d.image is None else d.image.splits.tolist(), d.text.texts, d.text.sample_ids.tolist())
                 for d in sections]
    return data_key(*arrays, model=model, lang=lang, sections=described, provenance=provenance,
                    settings=asdict(settings), code=CODE_DIGEST)


def render_partition_report(model: str, lang: str, sections: list[DatasetData], provenance: dict,
                            settings: ReportSettings, cache: ArrayCache) -> RenderedReport:
    """The HTML page of one model x lang partition, its preview figure and headline numbers; from
    ``cache`` when neither the inputs nor the report code changed (then nothing is recomputed), and
    the t-SNE maps from ``cache`` when only the warehouse rows changed."""

    def utf8(text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def compute() -> dict[str, np.ndarray]:
        from threadpoolctl import threadpool_limits

        # Report matrices are small (at most a few thousand x d): BLAS threads buy little there and,
        # on a busy machine, spin against other processes (measured: 2-3x the CPU time).
        with threadpool_limits(limits=1, user_api="blas"):
            report = _render(model, lang, sections, provenance, settings, cache)
        return {"html": utf8(report.html), "preview": utf8(report.preview_png or ""),
                "headline": utf8(json.dumps(report.headline))}

    out = {k: v.tobytes().decode("utf-8") for k, v in
           cache.get_or_compute("page", page_key(model, lang, sections, provenance, settings), compute).items()}
    return RenderedReport(out["html"], out["preview"] or None, json.loads(out["headline"]))


def _render(model: str, lang: str, sections: list[DatasetData], provenance: dict, settings: ReportSettings,
            cache: ArrayCache) -> RenderedReport:
    items = Items()
    thumbs = ChainMap(*[d.thumbs for d in sections])  # read for the plotted samples only, by render_page
    body, preview = [], None
    for d in sections:
        anchor = f"ds-{d.name}"
        if d.image is None:
            body.append(f"<h2 id='{esc(anchor)}'>{esc(d.name)}</h2><p>No image embeddings in this partition (a "
                        f"text-only model or a dataset without images): only the text figures apply.</p>"
                        f"<div class='figs'>{_spectrum_figure(d)}</div>{_tables(d)}")
            continue
        fit = _train_pairs(d)
        transforms = []
        if len(fit[0]) >= 2:
            transforms = fitted_transforms(d.image.emb[fit[0]], d.text.emb[fit[1]], f"{d.name}:train")
        svd_html, raw = _svd_figures(d, items, transforms, settings)
        if preview is None and raw is not None:
            preview = figures.to_png_data_uri(figures.tiny_scatter(*raw, f"{model} / {lang}: {d.name}"))
        body.append(
            f"<h2 id='{esc(anchor)}'>{esc(d.name)}</h2>"
            f"<h3>The cone: SVD projections and spectrum</h3><div class='figs'>{svd_html}{_spectrum_figure(d)}</div>"
            f"<h3>Positive vs random pairs, before and after each transform</h3>"
            f"<div class='figs'>{_histogram_figure(d, transforms, fit, settings)}</div>"
            f"<h3>Similarity heatmap</h3><div class='figs'>{_heatmap_figures(d, items, settings)}</div>"
            f"<h3>t-SNE maps with pair lines</h3><div class='figs'>{_tsne_figures(d, items, settings, cache)}</div>"
            f"<h3>Gap-shift landscape</h3><div class='figs'>{_landscape_figure(d)}</div>"
            f"{_tables(d)}")
    body.append(f"<h2 id='layers'>Text tower layers</h2><div class='figs'>{_layers_figure(sections)}</div>")
    nav = [(f"ds-{d.name}", d.name) for d in sections] + [("layers", "layers")]
    page = render_page(f"conescope — {model} / {lang}", "".join(body), items, thumbs, provenance, nav)
    return RenderedReport(page, preview, headline(sections))
