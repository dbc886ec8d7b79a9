"""Static figures drawn with matplotlib: inline SVG for the pages (text kept as text, so a figure is
a few tens of kilobytes) and small PNGs for the Dagster UI preview."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

from conescope.reports.svg import PALETTE


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10,
                         "svg.hashsalt": "conescope"})  # stable ids: the same data gives the same page
    return plt


def to_svg(fig) -> str:
    plt = _plt()
    buf = io.StringIO()
    # Each figure lays itself out (tight_layout) when built: bbox_inches="tight" would draw it twice.
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):].replace("<svg ", '<svg class="cs-fig" ', 1)


def to_png_data_uri(fig, dpi: int = 80) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def spectrum(series: dict[str, np.ndarray], title: str):
    """Singular values relative to the largest, log scale."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for k, (name, values) in enumerate(series.items()):
        ax.semilogy(np.arange(1, len(values) + 1), values / values[0], label=name, color=PALETTE[k % 10])
    ax.set_xlabel("index")
    ax.set_ylabel("singular value / largest")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cosine_histograms(panels: list[tuple[str, np.ndarray, np.ndarray]], title: str, ncols: int = 3):
    """Small multiples: per transform, the histogram of positive-pair cosines against random-pair
    cosines (Tyshchuk et al. Figures 9-11)."""
    plt = _plt()
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.4 * nrows), squeeze=False)
    for ax, (name, pos, rand) in zip(axes.ravel(), panels, strict=False):
        lo = float(min(pos.min(), rand.min())) if len(pos) and len(rand) else -1.0
        hi = float(max(pos.max(), rand.max())) if len(pos) and len(rand) else 1.0
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 31)
        ax.hist(rand, bins=bins, density=True, histtype="stepfilled", alpha=0.55, color="#7f7f7f",
                label=f"random (n={len(rand)})")
        ax.hist(pos, bins=bins, density=True, histtype="stepfilled", alpha=0.65, color=PALETTE[0],
                label=f"positive (n={len(pos)})")
        gap = float(np.mean(pos) - np.mean(rand)) if len(pos) and len(rand) else float("nan")
        ax.set_title(f"{name}: mean gap {gap:+.3f}", fontsize=9)
        ax.set_xlabel("cosine")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
           secondary: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None, secondary_label: str = "",
           markers: bool = True):
    """Line chart of named (x, y) series; ``secondary`` on a right-hand axis (dashed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    k = 0
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if markers else None, ms=3, label=name, color=PALETTE[k % 10])
        k += 1
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if secondary:
        ax2 = ax.twinx()
        for name, (x, y) in secondary.items():
            ax2.plot(x, y, ls="--", marker="s" if markers else None, ms=3, label=name, color=PALETTE[k % 10])
            k += 1
        ax2.set_ylabel(secondary_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=7)
    fig.tight_layout()
    return fig


def grouped_bars(groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str):
    """Bars of each series (e.g. a model) for each group (e.g. a metric or language); missing values
    are left out."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.4))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        vals = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=name, color=PALETTE[k % 10])
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def tiny_scatter(image_xy: np.ndarray, text_xy: np.ndarray, title: str, labels: tuple[str, str] = ("image", "text")):
    """The preview figure of the Dagster UI: a 2-D map of two sets of points (the SVD projection of
    images and texts; in the multilingual report, t-SNE of the reference language and the others),
    small but legible. Left: both clouds on axes fitted to them (at initialisation or with a wide
    modality gap each cloud is a dot and the gap is what shows); right: each cloud around its own
    centre, on axes fitted to the centred points, so the spread inside a cloud is visible however
    far apart the clouds sit."""
    plt = _plt()
    fig, (both, spread) = plt.subplots(1, 2, figsize=(6.0, 2.9))
    gap = float(np.linalg.norm(image_xy.mean(axis=0) - text_xy.mean(axis=0)))
    for ax, (a, b) in ((both, (image_xy, text_xy)),
                       (spread, (image_xy - image_xy.mean(axis=0), text_xy - text_xy.mean(axis=0)))):
        ax.scatter(a[:, 0], a[:, 1], s=9, color=PALETTE[0], label=labels[0], linewidths=0)
        ax.scatter(b[:, 0], b[:, 1], s=9, color=PALETTE[1], label=labels[1], marker="s", linewidths=0)
        ax.margins(0.04)  # axes fitted to the points
        ax.tick_params(labelsize=7)
    both.set_title(f"together (centres {gap:.2f} apart)", fontsize=8)
    spread.set_title("each cloud around its centre", fontsize=8)
    both.legend(fontsize=7, markerscale=1.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
