"""Interactive figures as hand-written SVG: a scatter plot (with optional lines between paired
points) and a similarity heatmap. Hover is handled by the page's one script (``page.SCRIPT``).

Hand-written rather than plotly: inlining plotly.js (over 3 MB minified) into every page would
outweigh everything else, while a scatter point here costs about 60 bytes, so a demo partition page
with all its figures, thumbnails and tables stays about 0.9 MB and opens offline (README, "Reports").
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np

from conescope.reports.page import Items, esc, json_script

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22"]


@dataclass
class Series:
    name: str
    xy: np.ndarray  # (n, 2)
    items: list[int] = field(default_factory=list)  # page item index of each point (hover), or empty
    color: str = PALETTE[0]
    marker: str = "circle"  # circle | square


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    first = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(first, hi + step * 1e-9, step)]


def _num(v: float) -> str:
    return f"{v:.3g}"


def scatter(series: list[Series], title: str, xlabel: str = "", ylabel: str = "",
            lines: list[tuple[np.ndarray, np.ndarray]] | None = None, width: int = 520, height: int = 440,
            equal: bool = False, radius: float = 3.0) -> str:
    """An SVG scatter plot. ``lines``: pairs of (n, 2) arrays, a segment from each row of the first to
    the same row of the second (image-caption pairs). ``equal``: same scale on both axes."""
    pts = np.vstack([s.xy for s in series if len(s.xy)]) if any(len(s.xy) for s in series) else np.zeros((1, 2))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    left, right, top, bottom = 58, 12, 30, 44
    pw, ph = width - left - right, height - top - bottom
    if equal:
        scale = min(pw / (hi[0] - lo[0]), ph / (hi[1] - lo[1]))
        cx, cy = (lo + hi) / 2
        lo = np.array([cx - pw / scale / 2, cy - ph / scale / 2])
        hi = np.array([cx + pw / scale / 2, cy + ph / scale / 2])

    def px(xy: np.ndarray) -> np.ndarray:
        out = np.empty_like(xy, dtype=np.float64)
        out[:, 0] = left + (xy[:, 0] - lo[0]) / (hi[0] - lo[0]) * pw
        out[:, 1] = top + ph - (xy[:, 1] - lo[1]) / (hi[1] - lo[1]) * ph
        return out

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" class="cs-fig cs-scatter" font-family="sans-serif" font-size="11">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{esc(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for v in _ticks(lo[0], hi[0]):
        x = px(np.array([[v, lo[1]]]))[0, 0]
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#999"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{_num(v)}</text>')
    for v in _ticks(lo[1], hi[1]):
        y = px(np.array([[lo[0], v]]))[0, 1]
        parts.append(f'<line x1="{left - 4}" x2="{left}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(v)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{esc(xlabel)}</text>'
                 f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
                 f'text-anchor="middle">{esc(ylabel)}</text>')
    if lines:
        segs = []
        for a, b in lines:
            pa_, pb = px(a), px(b)
            segs += [f"M{x1:.1f} {y1:.1f}L{x2:.1f} {y2:.1f}" for (x1, y1), (x2, y2) in zip(pa_, pb, strict=True)]
        parts.append(f'<path class="cs-pairs" d="{"".join(segs)}" stroke="#888" stroke-opacity=".35" '
                     f'stroke-width=".7" fill="none"/>')
    for one in series:
        p = px(one.xy) if len(one.xy) else np.zeros((0, 2))
        parts.append(f'<g fill="{one.color}" fill-opacity=".75" class="cs-series">')
        for j, (x, y) in enumerate(p):
            hover = f' data-i="{one.items[j]}"' if one.items else ""
            if one.marker == "square":
                parts.append(f'<rect x="{x - radius:.1f}" y="{y - radius:.1f}" width="{2 * radius:g}" '
                             f'height="{2 * radius:g}"{hover}/>')
            else:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:g}"{hover}/>')
        parts.append("</g>")
    for k, one in enumerate(series):  # legend, top right inside the frame
        y = top + 14 + 15 * k
        shape = (f'<rect x="{left + pw - 130}" y="{y - 8}" width="8" height="8" fill="{one.color}"/>'
                 if one.marker == "square"
                 else f'<circle cx="{left + pw - 126}" cy="{y - 4}" r="4" fill="{one.color}"/>')
        parts.append(f'{shape}<text x="{left + pw - 116}" y="{y}">{esc(one.name)} (n={len(one.xy)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _colors(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    from matplotlib import colormaps

    t = np.clip((values - vmin) / (vmax - vmin if vmax > vmin else 1.0), 0, 1)
    return (colormaps["viridis"](t)[..., :3] * 255).astype(np.uint8)


def heatmap(values: np.ndarray, items: list[int], grid_id: str, title: str, blocks: list[tuple[int, str]],
            groups: list[tuple[int, int, str]] | None = None, size: int = 440,
            reorder_of: tuple[str, np.ndarray] | None = None) -> str:
    """A square heatmap of ``values`` (n x n), drawn as one PNG inside the SVG so that its size does not
    grow with n^2 elements; hovering a cell shows its value and both items (``items`` per row).
    ``blocks``: (start row, name) of the blocks (e.g. image, text) separated by white lines.
    ``groups``: (start, end, label) of clusters, framed on the diagonal and labelled on the right.
    ``reorder_of``: (grid id, order) when ``values`` is another heatmap's matrix with rows and columns
    taken in ``order``: the hover data then refers to that heatmap's instead of repeating it.
    Hover values are stored in thousandths (integers), the tooltip's precision."""
    n = len(values)
    left, top, right = 8, 26, 200
    width, height = left + size + right, top + size + 40
    vmin, vmax = float(np.min(values)), float(np.max(values))
    uri = _png_data_uri(_colors(values, vmin, vmax))
    cell = size / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" class="cs-fig cs-heatmap" font-family="sans-serif" font-size="11">',
             f'<text x="{left + size / 2}" y="16" text-anchor="middle" font-size="13">{esc(title)}</text>',
             f'<image x="{left}" y="{top}" width="{size}" height="{size}" preserveAspectRatio="none" '
             f'style="image-rendering:pixelated" href="{uri}" data-grid="{esc(grid_id)}"/>']
    for start, name in blocks:
        pos = start * cell
        if start:
            parts.append(f'<line x1="{left}" x2="{left + size}" y1="{top + pos:.1f}" y2="{top + pos:.1f}" '
                         f'stroke="#fff" stroke-width="2" pointer-events="none"/>'
                         f'<line y1="{top}" y2="{top + size}" x1="{left + pos:.1f}" x2="{left + pos:.1f}" '
                         f'stroke="#fff" stroke-width="2" pointer-events="none"/>')
        parts.append(f'<text x="{left + pos + 3:.1f}" y="{top + size + 14}">{esc(name)}</text>')
    for start, end, label in groups or []:
        x, w = left + start * cell, (end - start) * cell
        parts.append(f'<rect x="{x:.1f}" y="{top + start * cell:.1f}" width="{w:.1f}" height="{w:.1f}" fill="none" '
                     f'stroke="#fff" stroke-width="1.2" pointer-events="none"/>'
                     f'<text x="{left + size + 6}" y="{top + (start + end) / 2 * cell + 4:.1f}">{esc(label)}</text>')
    parts.append(f'<text x="{left}" y="{top + size + 30}">cosine from {vmin:.2f} (dark) to {vmax:.2f} (yellow)</text>')
    parts.append("</svg>")
    if reorder_of is not None:
        payload = {"ref": reorder_of[0], "order": [int(i) for i in reorder_of[1]]}
    else:
        payload = {"items": items, "v": np.rint(values.astype(np.float64) * 1000).astype(int).ravel().tolist()}
    return "".join(parts) + json_script(grid_id, payload)


def register(items: Items, captions: list[str], keys: list[str | None]) -> list[int]:
    return [items.add(c, k) for c, k in zip(captions, keys, strict=True)]
