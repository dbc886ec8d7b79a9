"""The per model x lang report: a self-contained HTML page with inline SVG figures.

Figures follow Tyshchuk et al.: the 2-D SVD projection of L2-normalized image and text embeddings
(uncentered, so the cone shows as an offset cloud; Figures 2-7) and the singular-value spectrum.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field

import numpy as np

from conescope.metrics.isotropy import l2_normalize


def svd_projection(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project normalized image and text rows onto the top two right singular vectors of their
    union; returns (image_2d, text_2d, share of the squared singular values in each component)."""
    joint = np.vstack([l2_normalize(image), l2_normalize(text)])
    _, s, vt = np.linalg.svd(joint, full_matrices=False)
    coords = joint @ vt[:2].T
    return coords[: len(image)], coords[len(image):], (s[:2] ** 2) / np.sum(s**2)


def singular_values(x: np.ndarray) -> np.ndarray:
    return np.linalg.svd(l2_normalize(x), compute_uv=False)


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` rows, drawn without replacement with ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def projection_svg(image: np.ndarray, text: np.ndarray, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img2, txt2, share = svd_projection(image, text)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(img2[:, 0], img2[:, 1], s=6, alpha=0.6, label=f"image (n={len(img2)})", color="#1f77b4")
    ax.scatter(txt2[:, 0], txt2[:, 1], s=6, alpha=0.6, label=f"text (n={len(txt2)})", color="#d62728")
    ax.set_xlabel(f"SV1 ({share[0]:.0%} of energy)")
    ax.set_ylabel(f"SV2 ({share[1]:.0%} of energy)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    return _svg(fig)


def spectrum_svg(series: dict[str, np.ndarray], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in series.items():
        ax.semilogy(np.arange(1, len(values) + 1), values / values[0], label=name)
    ax.set_xlabel("index")
    ax.set_ylabel("singular value / largest")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _svg(fig)


@dataclass
class DatasetSection:
    dataset: str
    image: np.ndarray
    text: np.ndarray
    metrics: list[dict] = field(default_factory=list)


def _metric_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>No metric rows for this partition yet.</p>"
    def ci(r: dict) -> str:
        return "" if r.get("ci_low") is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"

    def name(r: dict) -> str:
        return str(r["metric"]) + (f" (layer {r['layer']})" if r.get("layer") is not None else "")

    head = "<tr><th>family</th><th>modality</th><th>metric</th><th>value</th><th>95% CI</th><th>n</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(str(r['family']))}</td><td>{html.escape(str(r['modality']))}</td>"
        f"<td>{html.escape(name(r))}</td><td>{r['value']:.4f}</td><td>{ci(r)}</td><td>{r['n']}</td></tr>"
        for r in rows)
    return f"<table>{head}{body}</table>"


def render_partition_report(model: str, lang: str, sections: list[DatasetSection], provenance: dict,
                            max_points: int, seed: int) -> str:
    """The HTML page of one model x lang partition (no external resources, opens offline)."""
    parts = []
    for sec in sections:
        img = sec.image[subsample(len(sec.image), max_points, seed)]
        txt = sec.text[subsample(len(sec.text), max_points, seed + 1)]
        # a text-only model (or a text-only dataset) has no image rows: its series are left out
        spectrum = {name: singular_values(x) for name, x in (("image", sec.image), ("text", sec.text),
                                                             ("joint", np.vstack([sec.image, sec.text]))) if len(x)}
        parts.append(
            f"<section><h2>{html.escape(sec.dataset)}</h2><div class='figs'>"
            f"<figure>{projection_svg(img, txt, f'{sec.dataset}: 2-D SVD projection')}"
            "<figcaption>Normalized embeddings projected on the top two right singular vectors of "
            "their union (uncentered).</figcaption></figure>"
            f"<figure>{spectrum_svg(spectrum, f'{sec.dataset}: singular values')}"
            "<figcaption>Singular values of the normalized embeddings, relative to the largest."
            "</figcaption></figure></div>"
            f"{_metric_table(sec.metrics)}</section>")
    prov = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in sorted(provenance.items()))
    title = f"conescope — {html.escape(model)} / {html.escape(lang)}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; max-width: 520px; }} figure svg {{ width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; }}
</style></head><body>
<h1>{title}</h1>
{''.join(parts)}
<h2>Provenance</h2><ul>{prov}</ul>
</body></html>
"""
