"""Time the per model x lang report of one partition with an empty cache and again with the cache
warm, and print the peak memory.

Two sources:

- ``--pairs N``: a generated partition of N image-caption pairs at 512 dimensions (two cones a gap
  apart, as a random-init CLIP tower gives; an 80/20 split; a PNG thumbnail source per sample, as a
  manifest holds), so the report is timed at the scale of COCO without a data root;
- otherwise a materialized data root (``CONESCOPE_HOME``) and one of its partitions.

    python -m bench.reports --pairs 40000
    CONESCOPE_HOME=<data root> python -m bench.reports [--model M] [--lang L] [--profile demo]

Figures are printed, never asserted (budgets: 30 s cold and 3 s warm for 40,000 pairs on a 2-core
machine). CPU time is printed beside wall time because the wall time of a shared machine depends on
its other load. Besides the text it prints ``RESULT <name> <value>`` lines for scripts.
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from conescope.profile import ReportSettings
from conescope.reports.cache import ArrayCache
from conescope.reports.partition import render_partition_report
from conescope.reports.report_data import DatasetData
from conescope.reports.thumbs import LazyThumbnails
from conescope.sets import ImageSet, TextSet

WORDS = ("red", "green", "blue", "circle", "square", "star", "left", "right", "top", "bottom")


def _pngs(count: int, rng: np.random.Generator) -> list[bytes]:
    """Flat-coloured 64x64 images with one rectangle, like the demo's shapes (noise would make every
    thumbnail several times larger than a real one)."""
    from PIL import Image, ImageDraw

    out = []
    for _ in range(count):
        img = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(180, 256, 3)))
        x, y = (int(v) for v in rng.integers(4, 36, 2))
        ImageDraw.Draw(img).rectangle([x, y, x + 24, y + 24], fill=tuple(int(v) for v in rng.integers(0, 200, 3)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def synthetic_partition(pairs: int, dim: int = 512, seed: int = 0, name: str = "synthetic"
                        ) -> DatasetData:
    """``pairs`` image-caption pairs: each modality a cone around its own direction (mean cosine
    about 0.8), captions correlated with their image, 4 labels, a seeded 80/20 split; thumbnails
    from 64 distinct PNGs (shared bytes), decoded lazily like a manifest's."""
    rng = np.random.default_rng(seed)
    axis_i, axis_t = rng.normal(size=dim), rng.normal(size=dim)
    content = rng.normal(size=(pairs, dim)).astype(np.float32)
    image = (3 * axis_i / np.linalg.norm(axis_i) * np.sqrt(dim) / 8 + content
             + 0.5 * rng.normal(size=(pairs, dim))).astype(np.float32)
    text = (3 * axis_t / np.linalg.norm(axis_t) * np.sqrt(dim) / 8 + content
            + 0.5 * rng.normal(size=(pairs, dim))).astype(np.float32)
    ids = np.asarray([f"{name}-{i:06d}" for i in range(pairs)], dtype=object)
    labels = rng.integers(0, 4, pairs)
    splits = np.where(rng.permutation(pairs) < round(0.2 * pairs), "test", "train")
    captions = [" ".join(rng.choice(WORDS, 4)) for _ in range(pairs)]
    pngs = _pngs(64, rng)
    thumbs = LazyThumbnails(list(ids), [pngs[i % len(pngs)] for i in range(pairs)], name)
    return DatasetData(
        ImageSet(name, ids, labels, splits, image),
        TextSet(name, "en", np.asarray([f"{s}-en" for s in ids], dtype=object), ids,
                np.full(pairs, -1), captions, text),
        {str(s): f"class {lab}" for s, lab in zip(ids, labels, strict=True)}, thumbs, [])


def _materialized(args) -> tuple[str, str, list[DatasetData], ReportSettings]:
    from assets.reports import manifest_view, report_settings
    from conescope.profile import load_profile
    from pipelines.resources import ConescopeHome
    from storage.embedding_sets import load_image_set, load_text_set
    from storage.metric_rows import partition_rows
    from storage.paths import DataRoot

    profile = load_profile(args.profile)
    root = DataRoot.from_env()
    model = args.model or next(iter(profile.models))
    lang = args.lang or profile.reference_lang
    home = ConescopeHome(home=str(root.root))
    rows = partition_rows(home.warehouse, model, lang)
    sections = []
    for ds in profile.datasets:
        names, thumbs = manifest_view(home, ds)
        sections.append(DatasetData(load_image_set(root, ds, model), load_text_set(root, ds, model, lang), names,
                                    thumbs, [r for r in rows if r["dataset"] == ds]))
    return model, lang, sections, report_settings(profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="a generated partition of this many pairs")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--lang", default=None)
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.pairs:
        model, lang = "synthetic", "en"
        sections, settings = [synthetic_partition(args.pairs)], ReportSettings()
        source = f"{args.pairs} generated pairs"
    else:
        model, lang, sections, settings = _materialized(args)
        source = "materialized data root"
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        timings = []
        for label in ("cold", "warm"):
            cache = ArrayCache(Path(tmp))
            t0, c0 = time.perf_counter(), time.process_time()
            report = render_partition_report(model, lang, sections, {}, settings, cache)
            timings.append((label, time.perf_counter() - t0, time.process_time() - c0, cache.hits, cache.misses,
                            len(report.html)))
    decoded = sum(getattr(d.thumbs, "decoded", 0) for d in sections)
    samples = sum(len(d.thumbs) for d in sections)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"partition {model} / {lang} ({source}): load {load_s:.2f} s; thumbnails decoded {decoded} of {samples}; "
          f"peak RSS {peak_mb:.0f} MB")
    for label, seconds, cpu, hits, misses, size in timings:
        print(f"  render, {label} cache: {seconds:.2f} s wall, {cpu:.2f} s CPU (cache {hits} hits, {misses} computed), "
              f"page {size / 1024:.0f} KiB")
    if not args.pairs:
        from storage.paths import DataRoot

        root = DataRoot.from_env().root
        for page in sorted((root / "reports").rglob("index.html")):
            print(f"  {page.relative_to(root)}: {page.stat().st_size / 1024:.0f} KiB")
    for label, seconds, cpu, *_ in timings:
        print(f"RESULT render_{label}_s {seconds:.3f}")
        print(f"RESULT render_{label}_cpu_s {cpu:.3f}")
    print(f"RESULT peak_rss_mb {peak_mb:.1f}")
    print(f"RESULT thumbnails_decoded {decoded}")


if __name__ == "__main__":
    main()
