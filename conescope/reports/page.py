"""The page template shared by every report: stylesheet, hover script, metric tables.

A page is one HTML file without external resources. Interactive figures (``svg``) mark each point
with ``data-i``, an index into the page's list of (caption, thumbnail key) items; the page carries
each thumbnail once, as a JSON object of data URIs, and one script shows caption and thumbnail in a
tooltip on hover. A point costs about 60 bytes, so a page of a few thousand points stays small.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1500px; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; }
.figs { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
figure { margin: 0; max-width: 560px; } figure.wide { max-width: 1100px; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: .85em; color: #555; margin-top: .3em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.note { color: #666; font-size: .9em; }
nav a { margin-right: 1em; }
#cs-tip { position: fixed; pointer-events: none; display: none; background: #fff; border: 1px solid #888;
          padding: 4px 6px; font-size: 12px; max-width: 320px; box-shadow: 0 2px 6px rgba(0,0,0,.2); z-index: 9; }
#cs-tip img { display: block; width: 64px; height: 64px; image-rendering: pixelated; margin-bottom: 3px; }
[data-c] { cursor: crosshair; }
"""

# One handler for the whole page. Points carry data-i, an index into the page's item list
# ([caption, thumbnail key] pairs, each thumbnail stored once); heatmaps carry data-grid, the id of
# a JSON object {items: [item index per row], v: [cosine x 1000, row-major]} or, for a reordered
# copy, {ref: id of the original, order: [original row per row]}; the hovered cell is computed from
# the pointer position.
SCRIPT = """
(function () {
  var thumbs = JSON.parse(document.getElementById('cs-thumbs').textContent);
  var items = JSON.parse(document.getElementById('cs-items').textContent);
  var grids = {};
  function grid(id) { return grids[id] || (grids[id] = JSON.parse(document.getElementById(id).textContent)); }
  var tip = document.getElementById('cs-tip');
  function item(i) {
    var it = items[i], k = it[1];
    var img = k && thumbs[k] ? '<img alt="" src="' + thumbs[k] + '">' : '';
    var d = document.createElement('div'); d.textContent = it[0]; return img + d.innerHTML;
  }
  function show(e, body) {
    tip.innerHTML = body; tip.style.display = 'block';
    tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 14) + 'px';
  }
  document.addEventListener('mousemove', function (e) {
    var t = e.target, ds = t.dataset || {};
    if (ds.i !== undefined) { show(e, item(+ds.i)); return; }
    if (ds.grid) {
      var g = grid(ds.grid), base = g.ref ? grid(g.ref) : g, n = base.items.length;
      var r = t.getBoundingClientRect();
      var i = Math.floor((e.clientY - r.top) / r.height * n), j = Math.floor((e.clientX - r.left) / r.width * n);
      if (i >= 0 && j >= 0 && i < n && j < n) {
        if (g.ref) { i = g.order[i]; j = g.order[j]; }
        show(e, '<b>cos = ' + (base.v[i * n + j] / 1000).toFixed(3) + '</b><br>row: ' + item(base.items[i]) +
                'column: ' + item(base.items[j]));
        return;
      }
    }
    tip.style.display = 'none';
  });
})();
"""


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def json_script(element_id: str, value: object) -> str:
    """A JSON payload in a non-executed script element (``</`` escaped so it cannot close it)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def figure(body: str, caption: str, wide: bool = False, fig_id: str | None = None) -> str:
    attrs = (' class="wide"' if wide else "") + (f' id="{esc(fig_id)}"' if fig_id else "")
    return f"<figure{attrs}>{body}<figcaption>{caption}</figcaption></figure>"


def fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[bool] | None = None) -> str:
    """A plain HTML table; floats shown with 4 decimals, ``None`` as an empty cell."""
    rows = list(rows)
    if not rows:
        return "<p class='note'>No rows.</p>"
    numeric = numeric or [isinstance(v, float | int) and not isinstance(v, bool) for v in rows[0]]
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{fmt(v)}</td>" if num else f"<td>{fmt(v)}</td>"
                         for v, num in zip(row, numeric, strict=True)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metric_table(rows: list[dict]) -> str:
    """Metric rows of the warehouse (``family, modality, transform, fit_set, eval_set, metric, layer,
    value, ci_low, ci_high, n``) as a table."""
    if not rows:
        return "<p class='note'>No metric rows for this partition yet.</p>"

    def ci(r: dict) -> str:
        return "" if r.get("ci_low") is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"

    def name(r: dict) -> str:
        return str(r["metric"]) + (f" (layer {r['layer']})" if r.get("layer") is not None else "")

    return table(["family", "modality", "transform", "fit set", "eval set", "metric", "value", "95% CI", "n"],
                 [(r["family"], r["modality"], r.get("transform") or "none", r.get("fit_set"), r.get("eval_set"),
                   name(r), float(r["value"]), ci(r), int(r["n"])) for r in rows],
                 numeric=[False] * 6 + [True, False, True])


class Items:
    """The hover items of one page: (caption, thumbnail key) pairs, numbered once each."""

    def __init__(self) -> None:
        self._index: dict[tuple[str, str | None], int] = {}

    def add(self, caption: str, key: str | None = None) -> int:
        return self._index.setdefault((caption, key), len(self._index))

    def to_json(self) -> list:
        return [[c, k] for c, k in self._index]

    def thumb_keys(self) -> set[str]:
        return {k for _, k in self._index if k is not None}


def _shown_thumbnails(items: Items | None, thumbs: Mapping[str, str | None]) -> dict[str, str]:
    """The thumbnails the page's items name: only those are read (and decoded, when ``thumbs`` is lazy)."""
    keys = sorted(items.thumb_keys()) if items is not None else []
    return {k: uri for k in keys if k in thumbs and (uri := thumbs[k])}


def render_page(title: str, body: str, items: Items | None = None, thumbs: dict[str, str] | None = None,
                provenance: dict | None = None, nav: Sequence[tuple[str, str]] = ()) -> str:
    """The whole page: ``body`` (HTML) with the stylesheet, the thumbnails and the hover script."""
    prov = ""
    if provenance:
        entries = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in sorted(provenance.items()))
        prov = f"<h2>Provenance</h2><ul>{entries}</ul>"
    links = ("<nav>" + "".join(f"<a href='#{esc(a)}'>{esc(t)}</a>" for a, t in nav) + "</nav>") if nav else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style></head><body>
<h1>{esc(title)}</h1>
{links}
{body}
{prov}
<div id="cs-tip"></div>
{json_script("cs-items", items.to_json() if items is not None else [])}
{json_script("cs-thumbs", _shown_thumbnails(items, thumbs or {}))}
<script>{SCRIPT}</script>
</body></html>
"""
