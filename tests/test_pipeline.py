"""The whole graph materialized in process into a temporary data root, with the tiny profile."""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conescope.metrics.isotropy import isotropy_summary
from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.refresh import PARTITION_JOB, PlannedRun, execute_plan, full_plan
from storage.parquet_store import read_embeddings, read_provenance
from storage.paths import DataRoot
from tests.conftest import TINY_PROFILE

METRIC_COLUMNS = ["dataset", "model", "lang", "modality", "transform", "fit_set", "eval_set", "metric", "value",
                  "ci_low", "ci_high", "n", "computed_at", "code_version"]


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    # One materialization for the module: the tests below only read, except the last, which
    # re-materializes one partition and checks exactly that.
    tmp = tmp_path_factory.mktemp("pipeline")
    profile_path = tmp / "tiny.yaml"
    profile_path.write_text(yaml.safe_dump(TINY_PROFILE))
    profile = load_profile(str(profile_path))
    data_root = tmp / "data"
    defs = build_definitions(profile, str(data_root))
    instance = dg.DagsterInstance.ephemeral()
    assert execute_plan(defs, full_plan(profile, "test"), instance, log=lambda _: None)
    return profile, DataRoot(data_root), defs, instance


def _query(root: DataRoot, sql: str, params=None):
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_parquet_layout_and_schemas(materialized):
    profile, root, _, _ = materialized
    for ds in profile.datasets:
        samples = pq.read_table(root.dataset_dir(ds) / "samples.parquet")
        assert samples.schema.names == ["sample_id", "split", "image", "label", "label_name"]
        for model in profile.models:
            image_file = root.image_embeddings(ds, model) / "part-00000.parquet"
            schema = pq.read_schema(image_file)
            assert schema.names == ["sample_id", "embedding", "norm"]
            assert schema.field("embedding").type == pa.list_(pa.float32(), 32)
            prov = read_provenance(image_file)
            assert prov["model"] == model and prov["arch"] == "conescope-tiny" and prov["dataset"] == ds
            assert prov["zero_bias"] == str(profile.models[model].zero_bias).lower()
            keys, emb = read_embeddings(root.image_embeddings(ds, model))
            assert keys.column("sample_id").to_pylist() == samples.column("sample_id").to_pylist()
            assert emb.shape == (samples.num_rows, 32) and emb.dtype == np.float32
            table = pq.read_table(image_file)
            assert np.allclose(table.column("norm").to_numpy(), np.linalg.norm(emb, axis=1), rtol=1e-5)
            for lang in profile.languages:
                text_file = root.text_embeddings(ds, model, lang) / "part-00000.parquet"
                assert pq.read_schema(text_file).names == ["text_id", "sample_id", "label", "text", "embedding",
                                                           "norm"]
                texts = pq.read_table(text_file)
                assert texts.num_rows == (12 if ds == "shapes" else 10)
    assert not list(root.scratch.iterdir()), "no staging directory may be left behind"


def test_zero_bias_variant_differs_from_the_biased_model(materialized):
    profile, root, _, _ = materialized
    _, with_bias = read_embeddings(root.image_embeddings("shapes", "tiny.random"))
    _, no_bias = read_embeddings(root.image_embeddings("shapes", "tiny.random-nobias"))
    assert not np.allclose(with_bias, no_bias)


def test_warehouse_rows_for_every_partition(materialized):
    profile, root, _, _ = materialized
    cols = [r[0] for r in _query(root, "SELECT column_name FROM information_schema.columns WHERE "
                                       "table_schema='metrics' AND table_name='isotropy' ORDER BY ordinal_position")]
    assert cols == METRIC_COLUMNS
    per_partition = dict(((m, lang), c) for m, lang, c in _query(
        root, "SELECT model, lang, count(*) FROM metrics.isotropy WHERE lang IS NOT NULL GROUP BY ALL"))
    # 2 datasets x (text, joint) x 4 metrics
    assert per_partition == {(m, lang): 16 for m in profile.models for lang in profile.languages}
    image_rows = _query(root, "SELECT model, count(*) FROM metrics.isotropy WHERE modality='image' GROUP BY ALL")
    assert dict(image_rows) == {m: 8 for m in profile.models}
    gaps = _query(root, "SELECT model, lang, dataset, value FROM metrics.modality_gap WHERE metric='gap_norm'")
    assert len(gaps) == len(profile.models) * len(profile.languages) * 2
    assert all(0 < v <= 2 for *_, v in gaps)
    assert _query(root, "SELECT count(*) FROM metrics.all")[0][0] == 2 * 16 * 2 + 16 + len(gaps)


def test_stored_values_match_a_recomputation(materialized):
    _, root, _, _ = materialized
    _, text = read_embeddings(root.text_embeddings("shapes", "tiny.random", "fr"))
    stored = dict(_query(root, "SELECT metric, value FROM metrics.isotropy WHERE model='tiny.random' AND lang='fr' "
                               "AND dataset='shapes' AND modality='text'"))
    assert stored == pytest.approx(isotropy_summary(text))


def test_views_reach_the_parquet_files(materialized):
    profile, root, _, _ = materialized
    n = _query(root, "SELECT count(*) FROM embeddings.shapes_text WHERE model='tiny.random' AND lang='en'")[0][0]
    assert n == 12
    assert _query(root, "SELECT count(DISTINCT model) FROM embeddings.digits_image")[0][0] == 2
    assert _query(root, "SELECT count(*) FROM datasets.digits_samples")[0][0] == 15


def test_reports_are_written_and_linked(materialized):
    profile, root, _, instance = materialized
    for model in profile.models:
        for lang in profile.languages:
            page = (root.report_dir(model, lang) / "index.html").read_text()
            assert page.count("<svg") >= 4 and "i1" in page and "gap_norm" in page
    event = instance.get_latest_materialization_event(dg.AssetKey(["reports", "partition_report"]))
    assert event.asset_materialization.metadata["report"].value.startswith("file://")


def test_rematerializing_a_partition_replaces_only_its_rows(materialized):
    profile, root, defs, instance = materialized
    snapshot = _query(root, "SELECT model, lang, dataset, modality, metric, value, computed_at FROM metrics.all "
                            "ORDER BY ALL")
    key = str(dg.MultiPartitionKey({"model": "tiny.random", "lang": "fr"}))
    assert execute_plan(defs, [PlannedRun(PARTITION_JOB, key)], instance, log=lambda _: None)
    after = _query(root, "SELECT model, lang, dataset, modality, metric, value, computed_at FROM metrics.all "
                         "ORDER BY ALL")
    assert len(after) == len(snapshot), "re-materialization must not duplicate rows"
    before_other = [r for r in snapshot if (r[0], r[1]) != ("tiny.random", "fr")]
    after_other = [r for r in after if (r[0], r[1]) != ("tiny.random", "fr")]
    assert before_other == after_other, "other partitions' rows must be untouched (even computed_at)"
    before_mine = [r[:6] for r in snapshot if (r[0], r[1]) == ("tiny.random", "fr")]
    after_mine = [r[:6] for r in after if (r[0], r[1]) == ("tiny.random", "fr")]
    assert [r[:5] for r in after_mine] == [r[:5] for r in before_mine]
    assert np.allclose([r[5] for r in after_mine], [r[5] for r in before_mine], rtol=1e-6)
    assert max(r[6] for r in after if (r[0], r[1]) == ("tiny.random", "fr")) > max(r[6] for r in snapshot)
