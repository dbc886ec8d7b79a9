"""The model comparison report: every model of the profile side by side, on the reference language.

Per dataset: the raw SVD projection of each model (small multiples, same axes meaning as the
partition report), bars of the headline metrics per model, and one table of every raw metric with a
column per model and language. Links lead to each partition report.
"""

from __future__ import annotations

from conescope.reports import figures, svg
from conescope.reports.page import Items, esc, figure, render_page, table
from conescope.reports.projections import subsample, svd_projection
from conescope.reports.report_data import DatasetData, RenderedReport, image_items, text_items

BAR_METRICS = [("isotropy", "image", "i1"), ("isotropy", "text", "i1"), ("isotropy", "joint", "mean_cosine"),
               ("modality_gap", "joint", "gap_norm"), ("modality_gap", "pair", "similarity_gap"),
               ("clip_loss", "pair", "loss"), ("zero_shot", "pair", "top1"), ("retrieval", "pair", "i2t_r1"),
               ("linear_probe", "image", "accuracy")]


def render_comparison_report(models: list[str], languages: list[str], reference: str, rows: list[dict],
                             embeddings: dict[tuple[str, str], DatasetData],
                             report_links: dict[tuple[str, str], str], provenance: dict, max_points: int,
                             seed: int) -> RenderedReport:
    """``rows``: raw metric rows of every model; ``embeddings``: (dataset, model) -> the image and
    reference-language text sets with the dataset's thumbnails; ``report_links``: (model, lang) ->
    relative link to the partition report."""
    items = Items()
    thumbs: dict[str, str] = {}
    datasets = sorted({ds for ds, _ in embeddings} | {r["dataset"] for r in rows})
    links = "".join(f"<li><b>{esc(m)}</b>: " + " ".join(
        f"<a href='{esc(report_links[(m, lang)])}'>{esc(lang)}</a>" for lang in languages if (m, lang) in report_links)
        + "</li>" for m in models)
    body = [f"<p>{len(models)} models, reference language <b>{esc(reference)}</b> for the figures.</p>"
            f"<h2 id='links'>Partition reports</h2><ul>{links}</ul>"]
    preview, headline = None, {}
    for ds in datasets:
        body.append(f"<h2 id='ds-{esc(ds)}'>{esc(ds)}</h2><div class='figs'>")
        for model in models:
            if (ds, model) not in embeddings:
                continue
            data = embeddings[(ds, model)]
            thumbs.update(data.thumbs)
            image, text = data.image.emb, data.text.emb
            ii, ti = subsample(len(image), max_points, seed), subsample(len(text), max_points, seed + 1)
            a, b, share = svd_projection(image[ii], text[ti])
            hover_i, hover_t = image_items(data, items, ii), text_items(data, items, ti)
            body.append(figure(svg.scatter([svg.Series("image", a, hover_i, svg.PALETTE[0]),
                                            svg.Series("text", b, hover_t, svg.PALETTE[1], "square")],
                                           f"{model}", f"SV1 ({share[0]:.0%})", f"SV2 ({share[1]:.0%})",
                                           width=360, height=320, equal=True, radius=2.2),
                               f"{esc(ds)}, {esc(model)}: raw SVD projection ({esc(reference)} texts)."))
            if preview is None:
                preview = figures.to_png_data_uri(figures.tiny_scatter(a, b, f"{ds}: {model}"))
        mine = [r for r in rows if r["dataset"] == ds and r["lang"] in (reference, None)]
        value = {(r["family"], r["modality"], r["metric"], r["model"]): float(r["value"]) for r in mine
                 if r.get("layer") is None}
        groups = [f"{m}/{mod}" for fam, mod, m in BAR_METRICS
                  if any((fam, mod, m, model) in value for model in models)]
        if groups:
            series = {model: [value.get((fam, mod, m, model)) for fam, mod, m in BAR_METRICS
                              if f"{m}/{mod}" in groups] for model in models}
            body.append(figure(figures.to_svg(figures.grouped_bars(groups, series, f"{ds}: headline metrics", "value")),
                               "Headline metrics per model (raw embeddings, reference language; image-only rows "
                               "have no language).", wide=True))
            for model in models:
                for fam, mod, m in BAR_METRICS[:4]:
                    if (fam, mod, m, model) in value:
                        headline[f"{ds}/{model}/{mod}/{m}"] = round(value[(fam, mod, m, model)], 4)
        body.append("</div>")
        columns = [(model, lang) for model in models for lang in languages]
        full = {(r["family"], r["modality"], r["metric"], r.get("layer"), r["model"], r["lang"]): float(r["value"])
                for r in rows if r["dataset"] == ds}
        keys = sorted({k[:4] for k in full}, key=lambda k: (k[0], k[1], k[2], -1 if k[3] is None else k[3]))
        table_rows = []
        for fam, mod, m, layer in keys:
            name = m + (f" (layer {layer})" if layer is not None else "")
            table_rows.append([fam, mod, name, *[full.get((fam, mod, m, layer, model, lang),
                                                          full.get((fam, mod, m, layer, model, None)))
                                                 for model, lang in columns]])
        body.append("<details><summary>Every raw metric, per model and language</summary>"
                    + table(["family", "modality", "metric", *[f"{m} / {lang}" for m, lang in columns]], table_rows,
                            numeric=[False] * 3 + [True] * len(columns)) + "</details>")
    nav = [("links", "partition reports")] + [(f"ds-{ds}", ds) for ds in datasets]
    page = render_page("conescope — model comparison", "".join(body), items, thumbs, provenance, nav)
    return RenderedReport(page, preview, headline)
