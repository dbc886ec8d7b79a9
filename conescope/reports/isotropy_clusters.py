"""The isotropy-against-clusters page: the experiments of ``experiments.*`` (docs/storage.md,
"Experiments") as figures.

- Training (Mickus et al. 2024, Figures 2-3): per model, dataset and language, IsoScore and silhouette
  along the training of the embeddings under a linear head (one line per seed), the scatter of one
  against the other with every recorded step as a point, and the correlations with their intervals.
- Across transforms: the change of IsoScore against the change of silhouette that each fitted transform
  makes from the identity on its in-domain eval rows, per modality, with the correlation over groups.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from conescope.reports import figures, svg
from conescope.reports.page import Items, esc, figure, render_page, table
from conescope.reports.report_data import RenderedReport


def _ci(r: dict) -> str:
    return "" if r.get("ci_low") is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"


def _r_table(rows: list[dict], first: str, key: str) -> str:
    return table([first, "statistic", "r", "95% CI", "n", "interval"],
                 [(r[key] if r[key] is not None else "every seed", r["statistic"], float(r["value"]), _ci(r),
                   int(r["n"]), _method(r)) for r in rows],
                 numeric=[False, False, True, False, True, False])


def _method(r: dict) -> str:
    import json

    return json.loads(r.get("params") or "{}").get("ci", "")


def _training_section(group: tuple, steps: list[dict], summary: list[dict], items: Items, body: list[str]) -> dict:
    model, dataset, lang = group
    anchor = f"train-{model}-{dataset}-{lang}"
    body.append(f"<h2 id='{esc(anchor)}'>{esc(model)}: {esc(dataset)} ({esc(lang)})</h2><div class='figs'>")
    seeds = sorted({r["seed"] for r in steps})
    by_seed = {s: sorted((r for r in steps if r["seed"] == s), key=lambda r: r["step"]) for s in seeds}
    iso = {f"IsoScore, seed {s}": ([r["step"] for r in rs], [r["isoscore"] for r in rs]) for s, rs in by_seed.items()}
    sil = {f"silhouette, seed {s}": ([r["step"] for r in rs], [r["silhouette"] for r in rs])
           for s, rs in by_seed.items()}
    fig = figures.curves(iso, f"{dataset} ({lang}): training under a linear head", "update", "IsoScore",
                         secondary=sil, secondary_label="silhouette (cosine)")
    body.append(figure(figures.to_svg(fig), "IsoScore (solid, left axis) and silhouette against the labels (dashed, "
                                            "right axis) of the trained embeddings, recorded every few updates from "
                                            "the stored embeddings (update 0); one line per seed (Mickus et al. "
                                            "2024, Figure 2)."))
    series = []
    for k, (s, rs) in enumerate(by_seed.items()):
        hover = [items.add(f"seed {s}, update {r['step']}: IsoScore {r['isoscore']:.4f}, silhouette "
                           f"{r['silhouette']:.4f}, accuracy {r['train_accuracy']:.3f}") for r in rs]
        series.append(svg.Series(f"seed {s}", np.array([[r["isoscore"], r["silhouette"]] for r in rs]), hover,
                                 svg.PALETTE[k % 10]))
    body.append(figure(svg.scatter(series, f"{dataset} ({lang}): silhouette against IsoScore", "IsoScore",
                                   "silhouette"),
                       "Every recorded update of every seed (Mickus et al. 2024, Figure 3): training moves the points "
                       "up (more clustered) and left (less isotropic). Hover a point for its update."))
    body.append("</div>")
    body.append(_r_table(summary, "seed", "seed"))
    first = {s: rs[0] for s, rs in by_seed.items()}
    last = {s: rs[-1] for s, rs in by_seed.items()}
    body.append(table(["seed", "updates", "IsoScore start", "IsoScore end", "silhouette start", "silhouette end",
                       "accuracy start", "accuracy end"],
                      [(s, last[s]["step"], first[s]["isoscore"], last[s]["isoscore"], first[s]["silhouette"],
                        last[s]["silhouette"], first[s]["train_accuracy"], last[s]["train_accuracy"]) for s in seeds],
                      numeric=[True] * 8))
    return {f"{model}/{dataset}/{lang}/{r['statistic']}": round(float(r["value"]), 4) for r in summary
            if r["seed"] is None and r["value"] == r["value"]}


def _transform_section(points: list[dict], summary: list[dict], items: Items, body: list[str]) -> dict:
    body.append("<h2 id='transforms'>Across the fitted transforms</h2>")
    moved = [p for p in points if p["d_isoscore"] is not None and p["transform"] != "identity"]
    if not moved:
        body.append("<p class='note'>No transform with both an IsoScore and a silhouette row beside an identity "
                    "transform on the same eval rows: the profile fits no transform (they need a model with an "
                    "image tower and an in-domain dataset with images), or not the identity.</p>")
        return {}
    body.append("<div class='figs'>")
    transforms = sorted({p["transform"] for p in moved})
    for modality in sorted({p["modality"] for p in moved}):
        series = []
        for k, t in enumerate(transforms):
            mine = [p for p in moved if p["modality"] == modality and p["transform"] == t]
            if not mine:
                continue
            hover = [items.add(f"{t}: {p['model']} / {p['lang']} / {p['eval_set']}: IsoScore "
                               f"{p['isoscore']:.4f} ({p['d_isoscore']:+.4f}), silhouette {p['silhouette']:.4f} "
                               f"({p['d_silhouette']:+.4f})") for p in mine]
            series.append(svg.Series(t, np.array([[p["d_isoscore"], p["d_silhouette"]] for p in mine]), hover,
                                     svg.PALETTE[k % 10], "square" if k >= 10 else "circle"))
        body.append(figure(svg.scatter(series, f"{modality}: change from the identity", "IsoScore change",
                                       "silhouette change"),
                           f"Each point is one fitted transform on one model, language and in-domain test split "
                           f"({esc(modality)} rows): how much it moved IsoScore and the silhouette against the labels "
                           f"from the untransformed rows. Points down and to the right: a transform that raises "
                           f"isotropy and lowers cluster structure."))
    body.append("</div>")
    body.append(table(["modality", "statistic", "r", "95% CI", "points", "groups", "interval"],
                      [(r["modality"], r["statistic"], float(r["value"]), _ci(r), int(r["n"]), int(r["groups"]),
                        _method(r)) for r in summary], numeric=[False, False, True, False, True, True, False]))
    body.append(table(["model", "lang", "dataset", "modality", "transform", "eval set", "IsoScore", "silhouette",
                       "IsoScore change", "silhouette change"],
                      [(p["model"], p["lang"], p["dataset"], p["modality"], p["transform"], p["eval_set"],
                        p["isoscore"], p["silhouette"], p["d_isoscore"], p["d_silhouette"]) for p in points],
                      numeric=[False] * 6 + [True] * 4))
    return {f"transforms/{r['modality']}/{r['statistic']}": round(float(r["value"]), 4) for r in summary
            if r["value"] == r["value"]}


def render_isotropy_clusters_report(steps: list[dict], summary: list[dict], points: list[dict],
                                    transform_summary: list[dict], provenance: dict) -> RenderedReport:
    """``steps`` and ``summary``: the rows of experiments.cluster_training and cluster_training_summary;
    ``points`` and ``transform_summary``: those of experiments.transform_clusters and its summary."""
    items = Items()
    body = ["<p>Mickus et al. (2024, \"Isotropy, Clusters, and Classifiers\") show that strict isotropy "
            "forbids clusters: optimising embeddings for a linear classifier makes them more clustered "
            "(silhouette up) and less isotropic (IsoScore down). IsoScore and the cosine silhouette are the "
            "functions of metrics.isotropy and metrics.clusters.</p>"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in steps:
        groups[(r["model"], r["dataset"], r["lang"])].append(r)
    headline: dict[str, float] = {}
    preview = None
    if not groups:
        body.append("<p class='note'>No training trajectories: the profile's <code>cluster_training</code> section "
                    "names no dataset.</p>")
    for group in sorted(groups):
        mine = [r for r in summary if (r["model"], r["dataset"], r["lang"]) == group]
        headline.update(_training_section(group, groups[group], mine, items, body))
        if preview is None:
            rows = groups[group]
            fig = figures.tiny_scatter(np.array([[r["isoscore"], r["silhouette"]] for r in rows if r["step"] == 0]),
                                       np.array([[r["isoscore"], r["silhouette"]] for r in rows if r["step"] > 0]),
                                       f"{group[0]}: {group[1]}", labels=("stored", "trained"))
            preview = figures.to_png_data_uri(fig)
    headline.update(_transform_section(points, transform_summary, items, body))
    nav = [(f"train-{m}-{d}-{lang}", f"{m}: {d} ({lang})") for m, d, lang in sorted(groups)]
    nav.append(("transforms", "across transforms"))
    page = render_page("conescope — isotropy against clusters", "".join(body), items, None, provenance, nav)
    return RenderedReport(page, preview, headline)
