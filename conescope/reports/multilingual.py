"""The multilingual report of one model: parallel captions of every language in one t-SNE map, and the
distance ratios, cross-lingual recall and language separability of ``metrics.multilingual``
(Tyshchuk et al. 2023, Section 6: translations of a caption lie close together when the ratio of
paired to unpaired distances is small)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from conescope.metrics.isotropy import l2_normalize
from conescope.reports import figures, svg
from conescope.reports.cache import ArrayCache, data_key
from conescope.reports.page import Items, esc, figure, render_page, table
from conescope.reports.projections import TSNE_VERSION, _tsne, subsample
from conescope.reports.report_data import RenderedReport
from conescope.sets import TextSet

RATIO_METRICS = ("distance_ratio_sq", "distance_ratio", "distance_ratio_cos", "xling_r1", "xling_r5")


def parallel_rows(texts: dict[str, TextSet], reference: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """(sample ids, row per language) of the captions present in every language, in the reference's order."""
    per_lang = {lang: {sid: j for j, sid in enumerate(t.sample_ids) if sid is not None} for lang, t in texts.items()}
    common = [sid for sid in texts[reference].sample_ids
              if sid is not None and all(sid in rows for rows in per_lang.values())]
    return common, {lang: np.asarray([per_lang[lang][sid] for sid in common], dtype=np.int64) for lang in texts}


def language_map(texts: dict[str, TextSet], reference: str, max_points: int, seed: int, cache: ArrayCache
                 ) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """One t-SNE map of the parallel captions of every language (rows from ``cache`` when unchanged);
    returns (sample ids, rows per language, 2-D points per language) or None below 4 captions."""
    sids, rows = parallel_rows(texts, reference)
    if len(sids) < 4:
        return None
    pick = subsample(len(sids), max(2, max_points // max(1, len(texts))), seed)
    sids = [sids[i] for i in pick]
    rows = {lang: r[pick] for lang, r in rows.items()}
    langs = list(texts)
    stacked = np.vstack([l2_normalize(texts[lang].emb[rows[lang]]) for lang in langs]).astype(np.float32)

    def compute() -> dict[str, np.ndarray]:
        return {"xy": np.asarray(_tsne(stacked, seed))}

    xy = cache.get_or_compute("tsne-lang", data_key(stacked, seed=seed, langs=langs, version=TSNE_VERSION),
                              compute)["xy"]
    n = len(sids)
    return sids, rows, {lang: xy[k * n:(k + 1) * n] for k, lang in enumerate(langs)}


def render_multilingual_report(model: str, dataset_texts: dict[str, dict[str, TextSet]], reference: str,
                               rows: list[dict], thumbs: Mapping[str, str | None], provenance: dict, max_points: int,
                               seed: int, cache: ArrayCache) -> RenderedReport:
    """``dataset_texts``: dataset -> lang -> text set; ``rows``: the model's ``metrics.multilingual`` rows."""
    items = Items()
    body = [f"<p>Every language compared with the reference language <b>{esc(reference)}</b>.</p>"]
    preview, headline = None, {}
    for ds, texts in dataset_texts.items():
        body.append(f"<h2 id='ds-{esc(ds)}'>{esc(ds)}</h2><div class='figs'>")
        mapped = language_map(texts, reference, max_points, seed, cache)
        if mapped is None:
            body.append("<p class='note'>No captions parallel across every language (class prompts only): no map."
                        "</p>")
        else:
            sids, lang_rows, xy = mapped
            series, langs = [], list(texts)
            for k, lang in enumerate(langs):
                hover = [items.add(f"{lang}: {texts[lang].texts[j]}",
                                   f"{ds}/{sid}" if f"{ds}/{sid}" in thumbs else None)
                         for j, sid in zip(lang_rows[lang], sids, strict=True)]
                series.append(svg.Series(lang, xy[lang], hover, svg.PALETTE[k % 10],
                                         "square" if lang == reference else "circle"))
            lines = [(xy[reference], xy[lang]) for lang in langs if lang != reference]
            body.append(figure(svg.scatter(series, f"{ds}: parallel captions, joint t-SNE", "t-SNE 1", "t-SNE 2",
                                           lines=lines or None),
                               f"{len(sids)} captions in each of {len(langs)} languages mapped together (openTSNE, "
                               f"cosine); lines join each caption to its {esc(reference)} original. Languages that "
                               f"mix (short lines) are aligned; separate clouds mean a language gap. Hover a point "
                               f"for the caption and its image."))
            if preview is None:
                fig = figures.tiny_scatter(xy[reference], np.vstack([xy[lang] for lang in langs if lang != reference])
                                           if len(langs) > 1 else xy[reference], f"{model}: {ds}",
                                           labels=(reference, "other languages"))
                preview = figures.to_png_data_uri(fig)
        mine = [r for r in rows if r["dataset"] == ds]
        others = sorted({r["lang"] for r in mine if r["lang"] is not None})
        if others:
            vals = {(r["lang"], r["metric"]): float(r["value"]) for r in mine if r["lang"] is not None}
            fig = figures.grouped_bars(list(RATIO_METRICS),
                                       {lang: [vals.get((lang, m)) for m in RATIO_METRICS] for lang in others},
                                       f"{ds}: against {reference}", "value")
            body.append(figure(figures.to_svg(fig), "Distance ratios (mean paired distance over mean distance of all "
                                                    "cross pairs: below 1 means translations are closer than "
                                                    "unrelated captions) and cross-lingual recall@k."))
            headline.update({f"{ds}/{lang}/distance_ratio": round(vals[(lang, "distance_ratio")], 4)
                             for lang in others if (lang, "distance_ratio") in vals})
        body.append("</div>")
        body.append(table(["language", "metric", "value", "95% CI", "n"],
                          [(r["lang"] or "all", r["metric"], float(r["value"]),
                            "" if r["ci_low"] is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]", int(r["n"]))
                           for r in mine], numeric=[False, False, True, False, True]))
    nav = [(f"ds-{ds}", ds) for ds in dataset_texts]
    page = render_page(f"conescope — {model}: languages", "".join(body), items, thumbs, provenance, nav)
    return RenderedReport(page, preview, headline)
