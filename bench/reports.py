"""Time the per model x lang report of one partition on a materialized data root, with an empty
t-SNE cache and again with the cache warm, and print the page sizes of every report kind.

    CONESCOPE_HOME=<data root> python -m bench.reports [--model M] [--lang L] [--profile demo]

Figures are printed, never asserted (the budget is 30 s for one demo partition). CPU time is
printed beside wall time because the wall time of a shared machine depends on its other load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from conescope.profile import load_profile
from conescope.reports.cache import ArrayCache
from conescope.reports.partition import render_partition_report
from conescope.reports.report_data import DatasetData
from storage.embedding_sets import load_image_set, load_text_set
from storage.paths import DataRoot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--lang", default=None)
    args = parser.parse_args()
    profile = load_profile(args.profile)
    root = DataRoot.from_env()
    model = args.model or next(iter(profile.models))
    lang = args.lang or profile.reference_lang

    from assets.reports import _PARTITION_SQL, manifest_view, query_rows, report_settings
    from pipelines.resources import ConescopeHome

    home = ConescopeHome(home=str(root.root))
    t0 = time.perf_counter()
    rows = query_rows(home, _PARTITION_SQL, [model, lang])
    sections = []
    for ds in profile.datasets:
        names, thumbs = manifest_view(home, ds)
        sections.append(DatasetData(load_image_set(root, ds, model), load_text_set(root, ds, model, lang), names,
                                    thumbs, [r for r in rows if r["dataset"] == ds]))
    load_s = time.perf_counter() - t0
    settings = report_settings(profile)
    with tempfile.TemporaryDirectory() as tmp:
        timings = []
        for label in ("cold cache", "warm cache"):
            cache = ArrayCache(Path(tmp))
            t0, c0 = time.perf_counter(), time.process_time()
            report = render_partition_report(model, lang, sections, {}, settings, cache)
            timings.append((label, time.perf_counter() - t0, time.process_time() - c0, cache.hits, cache.misses,
                            len(report.html)))
    print(f"partition {model} / {lang} ({profile.name}): load {load_s:.2f} s")
    for label, seconds, cpu, hits, misses, size in timings:
        print(f"  render, {label}: {seconds:.2f} s wall, {cpu:.2f} s CPU (cache {hits} hits, {misses} computed), "
              f"page {size / 1024:.0f} KiB")
    for page in sorted((root.root / "reports").rglob("index.html")):
        print(f"  {page.relative_to(root.root)}: {page.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
