"""The declaration of the metric families (conescope.metric_families): the rows each asset owns, the
tables derived from it, and the storage contract's table in the documentation agreeing with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conescope import metric_families as mf
from storage.metric_rows import family_rows, where_clause
from storage.warehouse import METRIC_COLUMNS, Warehouse, metric_rows

REPO = Path(__file__).resolve().parent.parent
# Words the contract's table names in its metrics column that are not metric names: the split names of
# the linear probe, the values of the CLIP loss's params.mean_over and the reference language.
NOT_METRICS = {"train", "test", "samples", "batches", "en"}


def _asset(name: str) -> mf.MetricAsset:
    return next(a for _, a in mf.assets() if a.name == name)


def test_owned_rows_follow_the_partitioning():
    assert _asset("image_isotropy").owned_rows("m", None) == mf.RowFilter(
        {"model": "m", "modality": "image", "transform": "none"}, ("lang",))
    assert _asset("isotropy").owned_rows("m", "fr") == mf.RowFilter({"model": "m", "lang": "fr", "transform": "none"})
    assert _asset("multilingual").owned_rows("m", None) == mf.RowFilter({"model": "m", "transform": "none"})
    assert where_clause(mf.transform_rows("m", "fr")) == ("model = ? AND lang = ? AND transform <> ?",
                                                          ["m", "fr", "none"])


def test_every_asset_name_is_unique_and_every_table_is_written():
    names = [a.name for _, a in mf.assets()]
    assert len(names) == len(set(names))
    assert {f.table for f, _ in mf.assets()} == set(mf.METRIC_TABLES)
    assert set(mf.TRANSFORM_TABLES) <= set(mf.TRANSFORM_WRITTEN_TABLES) <= set(mf.METRIC_TABLES)
    with pytest.raises(ValueError, match="not optional"):
        mf.metrics("a", optional="b", a="metrics.x")


def _row(model: str, lang: str | None, modality: str, metric: str, transform: str = "none") -> dict:
    return {"dataset": "d", "model": model, "lang": lang, "modality": modality, "metric": metric, "value": 0.5,
            "n": 3, "transform": transform}


def test_each_asset_reads_and_replaces_only_the_rows_it_owns(tmp_path):
    """Image rows [model] and text rows [model x lang] share metrics.isotropy: each asset's filter selects its
    own rows, and replacing them leaves the other's (and the fitted transforms') in place."""
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    rows = [_row("m", None, "image", "i1"), _row("m", "en", "text", "i1"), _row("m", "fr", "text", "i1"),
            _row("m", "en", "joint", "i1", transform="centering"), _row("other", None, "image", "i1")]
    warehouse.replace_rows("metrics.isotropy", metric_rows(rows, "metrics.isotropy"), {"dataset": "d"})
    image, text = _asset("image_isotropy"), _asset("isotropy")
    assert [(r["lang"], r["modality"]) for r in family_rows(warehouse, "isotropy", image.owned_rows("m", None))] == [
        (None, "image")]
    assert [(r["lang"], r["modality"]) for r in family_rows(warehouse, "isotropy", text.owned_rows("m", "en"))] == [
        ("en", "text")]
    owned = image.owned_rows("m", None)
    replaced = warehouse.replace_rows("metrics.isotropy", metric_rows([_row("m", None, "image", "i2")],
                                                                     "metrics.isotropy"),
                                      owned.equal, owned.not_equal, owned.null)
    assert replaced == 1
    with warehouse.connect(read_only=True) as con:
        left = sorted(con.execute("SELECT model, coalesce(lang, '-'), modality, metric, transform "
                                  "FROM metrics.isotropy").fetchall())
    assert left == [("m", "-", "image", "i2", "none"), ("m", "en", "joint", "i1", "centering"),
                    ("m", "en", "text", "i1", "none"), ("m", "fr", "text", "i1", "none"),
                    ("other", "-", "image", "i1", "none")]
    with pytest.raises(ValueError, match="outside the partition"):  # a row with a language is not an image row
        warehouse.replace_rows("metrics.isotropy", metric_rows([_row("m", "en", "image", "i1")], "metrics.isotropy"),
                               owned.equal, owned.not_equal, owned.null)


def _contract_tables() -> dict[str, list[str]]:
    """table -> cells of its row in the storage contract's table (``| `metrics.<table>` | metrics | assets |``),
    wherever the documentation holds it (README.md or a page under docs/)."""
    found: dict[str, list[str]] = {}
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]:
        if not page.is_file():
            continue
        for line in page.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\|\s*`metrics\.(\w+)`\s*\|(.*)\|\s*$", line)
            if match and match.group(1) != "all":
                found[match.group(1)] = [c.strip() for c in match.group(2).split("|")]
    return found


def test_the_documented_contract_lists_the_declared_metrics_and_assets():
    documented = _contract_tables()
    assert sorted(documented) == sorted(mf.METRIC_TABLES), "one row per family table"
    columns = {name for name, _ in METRIC_COLUMNS} | {"layer"}
    for family in mf.FAMILIES:
        metrics_cell, assets_cell = documented[family.table][:2]
        words = {w for w in re.findall(r"`([^`]+)`", metrics_cell) if re.fullmatch(r"\w+", w)}
        modalities = set(family.metrics)
        assert words - modalities - columns - NOT_METRICS == family.all_metrics(), family.table
        writers = set(re.findall(r"`metrics/(\w+)`", assets_cell))
        expected = {a.name for a in family.assets} | ({"transforms"} if family.after_transforms else set())
        assert writers == expected, family.table
