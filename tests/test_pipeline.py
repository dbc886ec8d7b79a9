"""The whole graph materialized in process into a temporary data root, with the tiny profile."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conescope.metric_families import METRIC_TABLES, TRANSFORM_TABLES
from conescope.metric_families import family as metric_family
from conescope.metrics.isotropy import isotropy_summary
from pipelines.jobs import MODEL_LANG_JOB, PAIRED_JOB, PARTITION_REPORT_JOB
from pipelines.partitions import model_lang_key
from pipelines.refresh import PlannedRun, execute_plan
from storage.parquet_store import read_embeddings, read_provenance
from storage.paths import DataRoot
from storage.report_links import report_url
from storage.warehouse import Warehouse

METRIC_COLUMNS = ["dataset", "model", "lang", "modality", "transform", "fit_set", "eval_set", "metric", "value",
                  "ci_low", "ci_high", "n", "computed_at", "code_version", "params"]


def _query(root: DataRoot, sql: str, params=None):
    with Warehouse(root.warehouse).connect(read_only=True) as con:  # views resolve in the data root
        return con.execute(sql, params or []).fetchall()


def test_parquet_layout_and_schemas(materialized):
    profile, root, _, _ = materialized
    for ds in profile.datasets:
        samples = pq.read_table(root.dataset_dir(ds) / "samples.parquet")
        assert samples.schema.names == ["sample_id", "split", "image", "image_path", "label", "label_name"]
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


def _switch_on(profile, condition: str) -> bool:
    """Whether ``profile`` sets what writes an optional metric (``Metrics.written_with``): a dataset kind
    (``kind: sts``) or a profile switch (``metrics.amumo_loss``)."""
    if condition.startswith("kind:"):
        return any(d.kind == condition.partition(":")[2].strip() for d in profile.datasets.values())
    section, key = condition.split(".")
    return bool(getattr(getattr(profile, section), key))


def _written(profile, table: str, modality: str, lang: str | None = "en") -> set[str]:
    """The metrics a group of raw rows holds under ``profile``, from the declaration: the required ones and
    the optional ones whose switch the profile sets (or that need none)."""
    declared = metric_family(table).metrics_of(modality, lang)
    return set(declared.required_of(raw=True)) | {m for m in declared.optional if m not in declared.written_with
                                                   or _switch_on(profile, declared.written_with[m])}


# (family, dataset, modality) that every model x lang partition, and every model (image rows), must hold
PER_PARTITION = [("isotropy", ds, m) for ds in ("shapes", "digits") for m in ("text", "joint")] + \
    [("modality_gap", ds, m) for ds in ("shapes", "digits") for m in ("joint", "pair")] + \
    [("clip_loss", "shapes", "pair"), ("zero_shot", "digits", "pair"), ("retrieval", "shapes", "pair"),
     ("clusters", "shapes", "text"), ("layers", "shapes", "text"), ("layers", "digits", "text")]
PER_MODEL = [(family, ds, "image") for family in ("isotropy", "clusters", "linear_probe")
             for ds in ("shapes", "digits")]


def _grouped(rows) -> dict:
    out: dict = {}
    for family, dataset, modality, metric in rows:
        out.setdefault((family, dataset, modality), set()).add(metric)
    return out


def test_warehouse_rows_for_every_partition(materialized):
    profile, root, _, _ = materialized
    for table in METRIC_TABLES:
        cols = [r[0] for r in _query(root, "SELECT column_name FROM information_schema.columns WHERE "
                                           "table_schema='metrics' AND table_name=? ORDER BY ordinal_position",
                                     [table])]
        assert cols == METRIC_COLUMNS + (["layer"] if table == "layers" else []), table
    for model in profile.models:
        for lang in profile.languages:
            got = _grouped(_query(root, "SELECT family, dataset, modality, metric FROM metrics.all "
                                        "WHERE model=? AND lang=? AND family <> 'multilingual' AND transform = 'none'",
                                  [model, lang]))
            assert got == {k: _written(profile, k[0], k[2], lang) for k in PER_PARTITION}, (model, lang)
        got = _grouped(_query(root, "SELECT family, dataset, modality, metric FROM metrics.all "
                                    "WHERE model=? AND lang IS NULL AND family <> 'multilingual' "
                                    "AND transform = 'none'",
                              [model]))
        assert got == {k: _written(profile, k[0], k[2], None) for k in PER_MODEL}, model
    # No duplicate rows anywhere.
    assert _query(root, "SELECT count(*) FROM (SELECT family, dataset, model, lang, modality, transform, fit_set, "
                        "eval_set, metric, layer, count(*) c FROM metrics.all GROUP BY ALL HAVING c > 1)")[0][0] == 0
    gaps = _query(root, "SELECT value FROM metrics.modality_gap WHERE metric='gap_norm'")
    assert all(0 < v <= 2 for (v,) in gaps)
    layers = _query(root, "SELECT DISTINCT layer FROM metrics.layers ORDER BY layer")
    assert layers == [(0,), (1,), (2,)]


def test_multilingual_rows_compare_each_language_to_the_reference(materialized):
    profile, root, _, _ = materialized
    rows = _query(root, "SELECT model, lang, dataset, metric FROM metrics.multilingual")
    for model in profile.models:
        mine = {(lang, ds, metric) for m, lang, ds, metric in rows if m == model}
        assert {m for lang, ds, m in mine if lang == "fr" and ds == "shapes"} == _written(profile, "multilingual",
                                                                                             "text", "fr")
        for ds in ("shapes", "digits"):  # over every language: lang null
            assert {m for lang, d, m in mine if lang is None and d == ds} == _written(profile, "multilingual", "text",
                                                                                      None)
        assert not any(lang == "en" for lang, _, _ in mine), "the reference is not compared with itself"


def test_confidence_intervals_bracket_means(materialized):
    _, root, _, _ = materialized
    rows = _query(root, "SELECT family, metric, value, ci_low, ci_high FROM metrics.all WHERE ci_low IS NOT NULL")
    # the CLIP loss resamples batches: the tiny sets fill fewer than bootstrap.MIN_BATCHES, so no interval
    assert {r[1] for r in rows} >= {"mean_cosine", "top1", "i2t_r1", "accuracy", "xling_r1"}
    for family, metric, value, lo, hi in rows:
        assert lo - 1e-9 <= value <= hi + 1e-9, (family, metric, value, lo, hi)
    params = _query(root, "SELECT params FROM metrics.clip_loss LIMIT 1")[0][0]
    assert '"batch_size": 64' in params and '"logit_scale"' in params


def test_stored_values_match_a_recomputation(materialized):
    _, root, _, _ = materialized
    _, text = read_embeddings(root.text_embeddings("shapes", "tiny.random", "fr"))
    stored = dict(_query(root, "SELECT metric, value FROM metrics.isotropy WHERE model='tiny.random' AND lang='fr' "
                               "AND dataset='shapes' AND modality='text' AND transform='none'"))
    expected = isotropy_summary(text)
    assert {k: stored[k] for k in expected} == pytest.approx(expected)


def test_views_reach_the_parquet_files(materialized):
    profile, root, _, _ = materialized
    n = _query(root, "SELECT count(*) FROM embeddings.shapes_text WHERE model='tiny.random' AND lang='en'")[0][0]
    assert n == 12
    assert _query(root, "SELECT count(DISTINCT model) FROM embeddings.digits_image")[0][0] == 2
    assert _query(root, "SELECT count(*) FROM datasets.digits_samples")[0][0] == 24


def test_reports_are_written_and_linked(materialized):
    profile, root, _, instance = materialized
    for model in profile.models:
        for lang in profile.languages:
            page = (root.report_dir(model, lang) / "index.html").read_text()
            assert page.count("<svg") >= 4 and "i1" in page and "gap_norm" in page and "silhouette" in page
    event = instance.get_latest_materialization_event(dg.AssetKey(["reports", "partition_report"]))
    meta = event.asset_materialization.metadata
    assert meta["report"].value == report_url(root, Path(meta["path"].value))  # over http, conescope dev's server


def test_rematerializing_a_partition_replaces_only_its_rows(materialized):
    profile, root, defs, instance = materialized
    sql = ("SELECT family, model, lang, dataset, modality, metric, layer, value, computed_at, transform, fit_set, "
           "eval_set FROM metrics.all ORDER BY family, model, lang, dataset, modality, metric, layer, transform, "
           "fit_set, eval_set")
    snapshot = _query(root, sql)
    key = model_lang_key("tiny.random", "fr")
    # forced: the partition is fresh, and a plain plan would run nothing
    assert execute_plan(defs, [PlannedRun(job, key) for job in (MODEL_LANG_JOB, PAIRED_JOB, PARTITION_REPORT_JOB)],
                        instance, log=lambda _: None, force=True)
    after = _query(root, sql)
    assert len(after) == len(snapshot), "re-materialization must not duplicate rows"

    def mine(row) -> bool:  # rows of the re-materialized partition (multilingual rows belong to the model)
        return row[1:3] == ("tiny.random", "fr") and row[0] != "multilingual"

    assert [r for r in snapshot if not mine(r)] == [r for r in after if not mine(r)], \
        "other partitions' rows must be untouched (even computed_at)"
    before_mine, after_mine = [r for r in snapshot if mine(r)], [r for r in after if mine(r)]
    assert [r[:7] + r[9:] for r in after_mine] == [r[:7] + r[9:] for r in before_mine]
    assert np.allclose([r[7] for r in after_mine], [r[7] for r in before_mine], rtol=1e-6)
    assert min(r[8] for r in after_mine) > max(r[8] for r in before_mine)


def test_doc_transform_queries_answer_tables_2_to_4(materialized):
    from tests.doc_pages import page, sql_queries

    _, root, _, _ = materialized
    queries = sql_queries(page("docs/transforms.md"))
    assert len(queries) == 5
    results = [_query(root, q) for q in queries]
    assert all(results), "every query of docs/transforms.md returns rows"
    table2, table3, table4, amumo, sweep = results
    kinds = {"identity", "centering", "whitening_4", "pca_4", "procrustes", "lstsq"}
    assert {r[3] for r in table2} >= kinds
    assert {(r[3], r[4]) for r in table3} >= {(k, f) for k in kinds for f in ("digits:train", "shapes:train")}
    assert all(r[5] is not None and r[6] is not None for r in table4)
    for *_, original_distance, original_loss, closed_distance, closed_loss in amumo:
        assert closed_distance < original_distance and original_loss > 0 and closed_loss > 0
    assert {r[3] for r in sweep} == {0.0, 0.5, 1.0}


def test_transform_rows_and_files(materialized):
    profile, root, _, _ = materialized
    from conescope.transforms import transform_from_dict
    from storage.transform_store import read_transforms

    for model in profile.models:
        for lang in profile.languages:
            files = read_transforms(root.transforms_dir("procrustes", model, lang))
            assert set(files) == {"procrustes--shapes.train.npz", "procrustes--digits.train.npz",
                                  "procrustes--digits.train.known.npz"}
            t = transform_from_dict(files["procrustes--shapes.train.npz"])
            assert np.allclose(t.rotation.T @ t.rotation, np.eye(32), atol=1e-10)
            assert t.provenance["fit_set"] == "shapes:train" and len(t.provenance["data_sha256"]) == 64
            assert (t.provenance["model"], t.provenance["lang"]) == (model, lang)
            gap_files = read_transforms(root.transforms_dir("gap_shift", model, lang))
            assert len(gap_files) == 3 * 2 * 2  # lambdas x renormalize x in-domain fit sets
            got = _query(root, "SELECT DISTINCT family, transform, fit_set, eval_set FROM metrics.all "
                               "WHERE model=? AND lang=? AND transform <> 'none'", [model, lang])
            evals = {(f, e) for _, _, f, e in got}
            assert evals == {("shapes:train", "shapes:test"), ("digits:train", "digits:test"),
                             ("shapes:train", "digits:test"), ("digits:train:known", "digits:test:known"),
                             ("digits:train:known", "digits:test:new")}
            families = {fam for fam, t, _, _ in got if t == "lstsq"}
            assert families == set(TRANSFORM_TABLES)  # in-domain: every family measured after a transform
    # Whitening is measured after renormalization: isotropy rows exist for the k-dimensional output.
    n = _query(root, "SELECT count(*) FROM metrics.isotropy WHERE transform='whitening_4' AND metric='i1'")[0][0]
    assert n > 0


def test_storage_example_queries_run_and_return_rows(materialized):
    from tests.doc_pages import section, sql_queries

    _, root, _, _ = materialized
    queries = sql_queries(section("docs/storage.md", "### Example queries"))
    assert len(queries) >= 4
    # the metric queries return rows; the text-layer view exists only with embedding.text_layers (the
    # tiny profile leaves it off) and the rejects only where a sample was rejected
    for q in queries:
        if "text_layers" in q:
            continue
        rows = _query(root, q)
        assert rows or "rejects" in q, q
