"""``conescope.open(home)``: the warehouse as polars DataFrames, embeddings with their ids, report paths;
the README's Python example runs against the tiny pipeline."""

import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import conescope


def test_importing_conescope_loads_no_duckdb_and_no_storage():
    code = "import sys, conescope; print(sorted(m for m in ('duckdb', 'storage', 'dagster') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_metric_tables_are_the_warehouse_rows(materialized):
    _, root, _, _ = materialized
    home = conescope.open(root.root)
    got = home.metrics("isotropy", model="tiny.random", lang=None, transform="none")
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        expected = con.sql("SELECT dataset, modality, metric, value FROM metrics.isotropy WHERE model = "
                           "'tiny.random' AND lang IS NULL AND transform = 'none' ORDER BY ALL").fetchall()
    assert got.height == len(expected) > 0 and isinstance(got, pl.DataFrame)
    assert got.select("dataset", "modality", "metric", "value").sort(pl.all()).rows() == expected
    families = set(home.metrics()["family"].unique())
    assert {"isotropy", "clip_loss", "zero_shot"} <= families
    with pytest.raises(ValueError, match="no metric family 'isotropi'"):
        home.metrics("isotropi")


def test_embeddings_come_with_their_ids(materialized):
    _, root, _, _ = materialized
    home = conescope.open(root.root)
    text = home.embeddings("shapes", "tiny.random", lang="fr")
    files = sorted(root.text_embeddings("shapes", "tiny.random", "fr").glob("part-*.parquet"))
    table = pq.read_table(files[0])
    n = table.num_rows
    assert list(text.ids[:n]) == table.column("text_id").to_pylist()
    np.testing.assert_array_equal(text.vectors[:n], np.array(table.column("embedding").to_pylist(), np.float32))
    assert text.keys["text"].to_list()[:n] == table.column("text").to_pylist()
    image = home.embeddings("shapes", "tiny.random")
    assert len(image.ids) == image.vectors.shape[0] and set(image.ids) <= set(home.manifest("shapes")["sample_id"])


def test_reports_are_listed_by_page(materialized):
    profile, root, _, _ = materialized
    pages = conescope.open(root.root).reports()
    for model in profile.models:
        for lang in profile.languages:
            assert pages[f"{model}/{lang}"] == root.report_dir(model, lang) / "index.html"
    assert all(p.is_file() for p in pages.values())


def test_readme_python_example_runs(materialized, monkeypatch, capsys):
    _, root, _, _ = materialized
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("### From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("CONESCOPE_HOME", str(root.root))
    namespace: dict = {}
    exec(block.replace("vit-b-32.random", "tiny.random"), namespace)  # the demo's model, named as in tiny
    assert namespace["raw"].height > 0 and namespace["image"].vectors.dtype == np.float32
    assert namespace["pages"]["tiny.random/en"].is_file() and namespace["gap"].height > 0
    assert namespace["captions"].height > 0 and "i1" not in capsys.readouterr().err
