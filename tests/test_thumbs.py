"""Report thumbnails are decoded only for the samples a page shows."""

import json
import re

from bench.reports import synthetic_partition
from conescope.reports.cache import ArrayCache
from conescope.reports.partition import ReportSettings, render_partition_report
from conescope.reports.thumbs import LazyThumbnails, thumbnail_uri, thumbs_digest


def test_lazy_thumbnails_decode_on_access_only():
    good = synthetic_partition(2).thumbs["synthetic/synthetic-000000"]  # a data URI
    assert good.startswith("data:image/png;base64,")
    source = synthetic_partition(3).thumbs._sources["synthetic/synthetic-000001"]
    thumbs = LazyThumbnails(["a", "b", "c"], [source, b"not an image", None], "ds")
    assert "ds/a" in thumbs and "ds/b" in thumbs and "ds/c" not in thumbs and len(thumbs) == 2
    assert thumbs.decoded == 0  # membership, length and the digest decode nothing
    digest = thumbs.digest
    assert thumbs.decoded == 0
    assert thumbs["ds/a"] == thumbnail_uri(source) and thumbs["ds/b"] is None and thumbs.decoded == 2
    assert LazyThumbnails(["a"], [source], "ds").digest != digest
    assert thumbs_digest(thumbs) == digest and thumbs_digest({"k": "v"}) != thumbs_digest({"k": "w"})


def test_the_partition_report_decodes_only_the_thumbnails_it_shows(tmp_path):
    section = synthetic_partition(400, dim=32, seed=1)
    settings = ReportSettings(max_points=40, heatmap_pairs=12, clusters=3)
    report = render_partition_report("m", "en", [section], {}, settings, ArrayCache(tmp_path))
    shown = json.loads(re.search(r'id="cs-thumbs"[^>]*>(.*?)</script>', report.html, re.S).group(1))
    assert shown, "the page shows thumbnails"
    assert section.thumbs.decoded == len(shown) < len(section.thumbs)
    for key, uri in shown.items():
        assert uri == thumbnail_uri(section.thumbs._sources[key])
