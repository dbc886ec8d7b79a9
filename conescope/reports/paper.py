"""The paper-reproduction report: Tables 1-7 of Tyshchuk et al. 2023 filled from the warehouse, for
whatever the profile holds, with the published number beside each comparable row and the difference
(measured - published). Published values come from ``conescope.reports.published``; a row whose
setting (model, dataset kind, transform, fit set) differs from the paper's gets no published value."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from conescope.model_specs import ModelInfo
from conescope.reports.page import esc, fmt, render_page
from conescope.reports.published import GAP_NORM_COCO, PUBLISHED, SOURCE, TABLE_TITLES, Published, matches
from conescope.reports.report_data import RenderedReport


def _ds(name: str | None) -> str:
    return (name or "").split(":")[0]


def _cifar_prompts(prompts: list[str]) -> str | None:
    """raw | clean: the class-name style of CIFAR-100 prompts (class 1 is "aquarium_fish")."""
    text = " ".join(prompts)
    return "raw" if "aquarium_fish" in text else "clean" if "aquarium fish" in text else None


def _rows_of(set_name: str | None) -> str | None:
    """train | test | all | ...: which rows of its dataset a fit or eval set holds (``coco:all`` -> all)."""
    parts = str(set_name or "").split(":")
    return parts[1] if len(parts) > 1 else None


def _definitions(params: str | dict | None) -> dict:
    """The settings of a row that decide whether it is the paper's quantity (docs/fidelity.md): loss
    averaging, batch size, logit scale, split, prompt style, geometry."""
    p = json.loads(params) if isinstance(params, str) else dict(params or {})
    return {"mean_over": p.get("mean_over", "samples"), "batch_size": p.get("batch_size"),
            "logit_scale": float(p["logit_scale"]) if isinstance(p.get("logit_scale"), int | float) else None,
            "split": p.get("split", "manifest"), "geometry": p.get("geometry", "cosine"),
            "cifar_prompts": _cifar_prompts(p.get("prompts") or [])}


def enrich(rows: list[dict], models: dict[str, ModelInfo | None], dataset_kinds: dict[str, str]) -> list[dict]:
    """Rows with the columns that published entries match on: arch, pretrained, zero_bias,
    dataset_kind, fit_kind (kind of the fit set's dataset), fit_rows and eval_rows (train | test | all:
    which rows of their datasets the fit and eval sets hold), classes (known | new | None), and the
    definitional settings of :func:`_definitions` read from the row's params."""
    out = []
    for r in rows:
        info = models.get(r["model"])
        eval_set = str(r.get("eval_set") or "")
        out.append({**r, **_definitions(r.get("params")), "transform": r.get("transform") or "none",
                    "arch": info.arch if info else None, "pretrained": info.pretrained if info else None,
                    "zero_bias": info.zero_bias if info else None,
                    "dataset_kind": dataset_kinds.get(r["dataset"]),
                    "fit_kind": dataset_kinds.get(_ds(r.get("fit_set"))) if r.get("fit_set") else None,
                    "fit_rows": _rows_of(r.get("fit_set")), "eval_rows": _rows_of(r.get("eval_set")),
                    "classes": eval_set.rsplit(":", 1)[1] if eval_set.endswith((":known", ":new")) else None})
    return out


def _fitted(r: dict) -> bool:
    return r["transform"] != "none" and not r["transform"].startswith("gap_shift")


# Which warehouse rows fill each table, and the columns that tell its rows apart.
TABLES: dict[int, tuple[Callable[[dict, str], bool], list[str]]] = {
    1: (lambda r, ref: r["family"] == "isotropy" and r["transform"] == "none"
        and r["metric"] in ("i1", "i2", "i1_compat", "i2_compat")
        and r["modality"] in ("image", "text") and r["lang"] in (ref, None), ["modality", "metric"]),
    2: (lambda r, ref: r["family"] == "clip_loss" and r["metric"] == "loss" and _fitted(r) and r["lang"] == ref
        and str(r.get("eval_set") or "").endswith(":test") and _ds(r.get("fit_set")) == r["dataset"],
        ["transform", "fit_set", "eval_set"]),
    3: (lambda r, ref: r["family"] == "zero_shot" and r["metric"] == "top1" and _fitted(r) and r["lang"] == ref
        and str(r.get("eval_set") or "").endswith(":test") and not str(r.get("fit_set") or "").endswith(":known"),
        ["transform", "fit_set", "eval_set"]),
    4: (lambda r, ref: r["family"] == "zero_shot" and r["metric"] == "top1" and _fitted(r) and r["lang"] == ref
        and r["classes"] is not None, ["transform", "fit_set", "classes"]),
    5: (lambda r, ref: r["family"] == "isotropy" and r["metric"] in ("i1", "i1_compat") and _fitted(r)
        and r["lang"] == ref and r["modality"] in ("image", "text"), ["transform", "fit_set", "eval_set", "modality",
                                                                         "metric"]),
    6: (lambda r, ref: r["family"] == "isotropy" and r["transform"] == "none" and r["pretrained"] is None
        and r["arch"] is not None and r["metric"] in ("i1", "mean_cosine") and r["lang"] in (ref, None),
        ["zero_bias", "modality", "metric"]),
    7: (lambda r, ref: r["family"] == "multilingual" and r["metric"] in ("distance_ratio", "distance_ratio_sq",
                                                                         "distance_ratio_cos", "distance_ratio_sq_raw",
                                                                         "xling_r1"),
        ["lang", "metric"]),
}


@dataclass
class Line:
    cells: list[object]
    measured: float | None
    published: Published | None

    @property
    def difference(self) -> float | None:
        if self.measured is None or self.published is None:
            return None
        return self.published.difference(self.measured)


def table_lines(number: int, rows: list[dict], reference: str) -> tuple[list[str], list[Line]]:
    """(column names, lines) of one table: every measured row it selects, with the published entry it
    matches; then the published entries of that table that no measured row matched."""
    select, keys = TABLES[number]
    entries = [p for p in PUBLISHED if p.table == number]
    lines, used = [], set()
    for r in sorted((r for r in rows if select(r, reference)),
                    key=lambda r: (r["model"], r["dataset"], *[str(r.get(k)) for k in keys])):
        hit = next((p for p in entries if matches(p, r)), None)
        if hit is not None:
            used.add(id(hit))
        lines.append(Line([r["model"], r["dataset"], *[r.get(k) for k in keys]], float(r["value"]), hit))
    for p in entries:
        if id(p) not in used:
            lines.append(Line(["(not in this profile)", p.match.get("dataset_kind", ""), p.label,
                               *[""] * (len(keys) - 1)], None, p))
    return ["model", "dataset", *keys], lines


def _render_table(number: int, columns: list[str], lines: list[Line]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in [*columns, "measured", "published", "difference"])
    body = []
    for line in lines:
        cells = "".join(f"<td>{fmt(c)}</td>" for c in line.cells)
        pub = line.published.shown() if line.published else ""
        title = f" title='{esc(line.published.label)}'" if line.published else ""
        body.append(f"<tr>{cells}<td class='num'>{fmt(line.measured)}</td><td class='num'{title}>{esc(pub)}</td>"
                    f"<td class='num'>{fmt(line.difference)}</td></tr>")
    if not lines:
        body.append(f"<tr><td colspan='{len(columns) + 3}' class='note'>No rows in the warehouse for this table "
                    f"(the profile does not run this experiment).</td></tr>")
    return (f"<h2 id='table-{number}'>Table {number}. {esc(TABLE_TITLES[number])}</h2>"
            f"<table class='paper' data-table='{number}'><tr>{head}</tr>{''.join(body)}</table>")


def render_paper_report(rows: list[dict], models: dict[str, ModelInfo | None], dataset_kinds: dict[str, str],
                        reference: str, provenance: dict) -> RenderedReport:
    rows = enrich(rows, models, dataset_kinds)
    parts = [f"<p>Tables of <i>{esc(SOURCE)}</i>, filled from this profile's warehouse. The published column holds "
             "a number only where the measured row has the paper's setting (CLIP ViT-B/32 from OpenAI; COCO captions, "
             "first caption per image; CIFAR-100 prompts) <i>and</i> is computed the paper's way (the "
             "project's docs/fidelity.md): I1 as the authors' row iteration (<code>i1_compat</code>), the cosine CLIP "
             "loss averaged over batches of 64 at scale 100 on the authors' split, raw CIFAR class names, LSTSQ as "
             "torch's float32 <code>gelsy</code> (<code>lstsq_gelsy</code>), the COCO fits of Table 3 on every "
             "COCO pair (<code>coco:all</code>), and Table 5 as each modality centred on all its rows with the "
             "authors' I1 of those rows (protocol <code>all_rows</code>). Other cells stay empty rather than "
             "guessed; a published number that no project value can match is shown with the reason. Difference = "
             "measured − published (for a published range, the distance to it). Table numbering and titles "
             "follow the experiments; accuracies are fractions.</p>"]
    headline, compared = {}, 0
    for number in sorted(TABLES):
        columns, lines = table_lines(number, rows, reference)
        parts.append(_render_table(number, columns, lines))
        headline[f"table{number}_rows"] = sum(1 for ln in lines if ln.measured is not None)
        compared += sum(1 for ln in lines if ln.difference is not None)
    gap_rows = [r for r in rows if r["family"] == "modality_gap" and r["metric"] == "gap_norm"
                and r["transform"] == "none" and r["lang"] == reference]
    gap_lines = [Line([r["model"], r["dataset"]], float(r["value"]),
                      GAP_NORM_COCO if matches(GAP_NORM_COCO, r) else None) for r in gap_rows]
    parts.append("<h2 id='gap'>Further reference: gap norm (Liang et al. 2022)</h2>"
                 + _render_table_plain(["model", "dataset"], gap_lines, GAP_NORM_COCO))
    headline["compared_with_published"] = compared
    nav = [(f"table-{n}", f"Table {n}") for n in sorted(TABLES)] + [("gap", "gap norm")]
    return RenderedReport(render_page("conescope — paper reproduction (Tyshchuk et al. 2023)", "".join(parts),
                                      provenance=provenance, nav=nav), _preview(rows, reference), headline)


def _preview(rows: list[dict], reference: str) -> str | None:
    """The Dagster UI preview: I1 of the raw embeddings (Table 1) per model, dataset and modality."""
    select, _ = TABLES[1]
    i1 = [r for r in rows if select(r, reference) and r["metric"] == "i1"]
    if not i1:
        return None
    from conescope.reports import figures

    groups = sorted({f"{r['dataset']}/{r['modality']}" for r in i1})
    models = sorted({r["model"] for r in i1})
    value = {(r["model"], f"{r['dataset']}/{r['modality']}"): float(r["value"]) for r in i1}
    fig = figures.grouped_bars(groups, {m: [value.get((m, g)) for g in groups] for m in models}, "Table 1: I1",
                               "I1")
    return figures.to_png_data_uri(fig)


def _render_table_plain(columns: list[str], lines: list[Line], reference: Published) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in [*columns, "measured", "published", "difference"])
    body = "".join(f"<tr>{''.join(f'<td>{fmt(c)}</td>' for c in ln.cells)}<td class='num'>{fmt(ln.measured)}</td>"
                   f"<td class='num'>{esc(ln.published.shown() if ln.published else '')}</td>"
                   f"<td class='num'>{fmt(ln.difference)}</td></tr>" for ln in lines)
    return (f"<table class='paper'><tr>{head}</tr>{body}</table><p class='note'>Published: {esc(reference.shown())} "
            f"({esc(reference.label)}).</p>")
