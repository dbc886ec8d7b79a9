"""Asset checks: each rule passes on good output and fails, naming the partition and the offending
rows, on bad output (a NaN row, a missing metric, a value outside its CI, an external URL...)."""

import math
import shutil
import warnings

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conescope import checks
from conescope.metric_families import family as metric_family
from storage.transform_store import read_transform_file, write_transform_file

warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def _row(metric: str, value: float = 0.5, ci=(None, None), n: int = 10, **kw) -> dict:
    return {"dataset": "shapes", "model": "m", "lang": "en", "modality": "pair", "transform": "none",
            "fit_set": None, "eval_set": "all", "metric": metric, "value": value, "ci_low": ci[0], "ci_high": ci[1],
            "n": n, **kw}


# --- pure rules ------------------------------------------------------------------------------------

def test_embedding_rules_name_the_offending_rows():
    ids = ["a", "b", "c", "d"]
    emb = np.ones((4, 3), dtype=np.float32)
    assert checks.embedding_finite(ids, emb).passed and checks.embedding_nonzero(ids, emb).passed
    emb[1, 2], emb[3] = np.nan, 0.0
    finite, nonzero = checks.embedding_finite(ids, emb), checks.embedding_nonzero(ids, emb)
    assert not finite.passed and finite.offending == ["b"] and "1 rows with NaN" in finite.description
    assert not nonzero.passed and nonzero.offending == ["d"]  # the NaN row is not also called zero


def test_row_count_is_manifest_minus_rejects():
    assert checks.embedding_row_count(["1", "3"], ["1", "2", "3"], ["2"]).passed
    bad = checks.embedding_row_count(["1", "1", "9"], ["1", "2", "3"], ["2"])
    assert not bad.passed
    assert set(bad.offending) == {"3 (missing)", "1 (duplicate)", "9 (not in the manifest)"}
    assert "where the manifest minus rejects has 2" in bad.description


def test_dimension_against_the_model_config():
    assert checks.embedding_dimension({"a": 32, "b": 32}, 32, "config").passed
    bad = checks.embedding_dimension({"a": 32, "b": 16}, 32, "config")
    assert not bad.passed and bad.offending == ["b (d = 16)"]
    # unknown model dimension: the files must agree with each other (the majority names the outlier)
    assert checks.embedding_dimension({"a": 8, "b": 8, "c": 4}, None, "files").offending == ["c (d = 4)"]


def test_expected_metrics_per_group():
    contract = metric_family("clip_loss").metrics["pair"]
    required = sorted(contract.required)
    full = [_row(m) for m in required]
    assert checks.expected_metrics("clip_loss", full).passed
    missing = checks.expected_metrics("clip_loss", full[:-1])
    assert not missing.passed and missing.offending == [f"shapes/en/pair/none/None/all: {required[-1]} missing"]
    unknown = checks.expected_metrics("clip_loss", [*full, _row("loss_typo")])
    assert unknown.offending == ["shapes/en/pair/none/None/all: loss_typo not in the contract"]
    # an optional metric (the Amumo loss, with metrics.amumo_loss) is in the contract
    assert checks.expected_metrics("clip_loss", [*full, *(_row(m) for m in contract.optional)]).passed
    assert not checks.expected_metrics("clip_loss", [_row("i1", modality="joint")]).passed  # not its modality
    # raw gap rows carry the separability, transformed rows may not
    gap = [_row("gap_norm", modality="joint")]
    assert not checks.expected_metrics("modality_gap", gap).passed
    assert checks.expected_metrics("modality_gap", [{**gap[0], "transform": "centering"}]).passed
    # a dataset measured for sure must have rows
    assert checks.expected_metrics("clip_loss", full, ["shapes", "digits"]).offending == ["digits: no rows"]


def test_finite_values_and_ci():
    good = [_row("loss", 1.0, (0.9, 1.1)), _row("loss_i2t", 2.0)]
    assert checks.finite_values(good).passed and checks.value_in_ci(good).passed
    nan = checks.finite_values([*good, _row("loss_t2i", math.nan)])
    assert not nan.passed and nan.offending == ["shapes/en/pair/none/None/all/loss_t2i"]
    half = checks.finite_values([_row("loss", 1.0, (0.9, None))])
    assert not half.passed
    outside = checks.value_in_ci([_row("loss", 1.2, (0.9, 1.1))])
    assert not outside.passed and "1.2 not in [0.9, 1.1]" in outside.offending[0]


def test_n_matches_rows():
    counts = {("shapes", "image", None): 12, ("shapes", "text", "en"): 10, ("shapes", "text", "fr"): 10}
    rows = [_row("i1", modality="image", lang=None, n=12), _row("i1", modality="text", n=10),
            _row("i1", modality="joint", n=22), _row("top1", eval_set="test", n=3),
            _row("rand_cosine_mean", modality="pair", n=12)]  # one image-text pair per image
    assert checks.n_matches_rows("isotropy", rows, counts).passed
    # more pairs than images x texts cannot have been measured
    assert not checks.n_matches_rows("modality_gap", [_row("rand_cosine_mean", modality="pair", n=1000)], counts).passed
    bad = checks.n_matches_rows("isotropy", [_row("i1", modality="joint", n=12), _row("top1", eval_set="test",
                                                                                      n=500)], counts)
    assert not bad.passed and len(bad.offending) == 2 and "expected = 22" in bad.offending[0]
    # a silhouette counts the labelled rows only: at most the stored rows
    assert checks.n_matches_rows("clusters", [_row("silhouette", modality="image", lang=None, n=7)], counts).passed
    assert not checks.n_matches_rows("clusters", [_row("silhouette", modality="image", lang=None, n=13)],
                                     counts).passed
    multi = [_row("lang_separability", lang=None, modality="text", n=20), _row("xling_r1", modality="text", n=10)]
    assert checks.n_matches_rows("multilingual", multi, counts).passed
    assert not checks.n_matches_rows("multilingual", [{**multi[0], "n": 10}], counts).passed
    # word pairs (65 pairs of RG65's 48 words) and a lexicon's scored words are not the stored texts
    words = {("rg65", "text", "en"): 48}

    def word_row(metric: str, n: int) -> dict:
        return _row(metric, dataset="rg65", modality="text", n=n, layer=0)

    assert checks.n_matches_rows("layers", [word_row("word_spearman", 65), word_row("valnorm", 46),
                                            word_row("self_similarity", 48)], words).passed
    assert not checks.n_matches_rows("layers", [word_row("word_spearman", 48 * 48 + 1)], words).passed
    assert not checks.n_matches_rows("layers", [word_row("self_similarity", 65)], words).passed


def test_reject_fraction_levels():
    ok = checks.reject_fraction(99, [("s1", "corrupt")], max_fraction=0.05, warn_fraction=0.025)
    assert ok.passed and ok.metadata["reject_fraction"] == 0.01
    warn = checks.reject_fraction(97, [("s1", "a"), ("s2", "b"), ("s3", "c")], 0.05, 0.025)
    assert not warn.passed and warn.warn and warn.offending == ["s1 (a)", "s2 (b)", "s3 (c)"]
    error = checks.reject_fraction(90, [(f"s{i}", "missing image") for i in range(10)], 0.05, 0.025)
    assert not error.passed and not error.warn and "above max_reject_fraction" in error.description


def test_external_urls():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
           '<rdf:RDF><cc:Work><dc:type rdf:resource="http://purl.org/dc/dcmitype/StillImage"/></cc:Work></rdf:RDF>'
           '<image href="data:image/png;base64,AAAA"/></svg>')
    assert checks.external_urls(f"<html><body>{svg}<a href='#ds-x'>x</a></body></html>") == []
    page = ("<html><head><script src='https://cdn.example/plotly.js'></script>"
            "<style>body { background: url('//fonts.example/bg.png') }</style></head>"
            "<body><img src=\"http://example.org/a.png\"><div style=\"background:url(https://x.example/b.png)\">"
            "</div><script>fetch('https://api.example/data')</script></body></html>")
    found = checks.external_urls(page)
    assert len(found) == 5 and any("plotly" in u for u in found) and any("api.example" in u for u in found)
    assert not checks.report_file(2048, found, 1024, 10 ** 6).passed
    assert checks.report_file(2048, [], 1024, 10 ** 6).passed
    assert not checks.report_file(None, [], 1024, 10 ** 6).passed
    assert not checks.report_file(100, [], 1024, 10 ** 6).passed


# --- the Dagster checks on a materialized graph -----------------------------------------------------

def run_checks(defs: dg.Definitions, partition: str | None, asset_keys=None, succeeds: bool = True) -> dict:
    """Evaluate the checks of every asset that has ``partition`` (or of ``asset_keys``) as a run of
    Dagster; {(asset, check): evaluation}. A blocking check that fails with ERROR fails the run.
    (In the tiny profile, without a text-only model, the image assets and the per-model assets have
    the same model keys, so one run covers both.)"""
    graph = defs.resolve_asset_graph()

    def same_partitioning(key) -> bool:
        parts = graph.get(key).partitions_def
        if partition is None:
            return parts is None
        return parts is not None and partition in parts.get_partition_keys()

    wanted = [k for k in graph.asset_check_keys if (asset_keys is None or k.asset_key in asset_keys)
              and same_partitioning(k.asset_key)]
    job = dg.define_asset_job("run_checks", selection=dg.AssetSelection.checks(*wanted))
    merged = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    result = merged.resolve_job_def("run_checks").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags={"dagster/partition": partition} if partition else None,
        raise_on_error=False)
    assert result.success == succeeds
    evaluations = [e.asset_check_evaluation_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return {(e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name): e for e in evaluations}


def test_every_asset_family_has_checks(materialized):
    _, _, defs, _ = materialized
    graph = defs.resolve_asset_graph()
    checked = {k.asset_key for k in graph.asset_check_keys}
    for key in graph.materializable_asset_keys:
        assert key in checked, f"{key.to_user_string()} has no asset check"


@pytest.mark.parametrize("partition", [None, "tiny.random", "en|tiny.random"])
def test_checks_pass_on_the_materialized_graph(materialized, partition):
    _, _, defs, _ = materialized
    found = run_checks(defs, partition)
    assert found
    failed = {k: e.description for k, e in found.items() if not e.passed}
    assert not failed
    for e in found.values():
        assert e.partition == partition


@pytest.fixture
def broken(materialized, tmp_path):
    """A copy of the materialized data root to damage, with definitions pointing at it."""
    from pipelines.definitions import build_definitions
    from storage.paths import DataRoot

    profile, root, _, _ = materialized
    copy = tmp_path / "data"
    shutil.copytree(root.root, copy, ignore=shutil.ignore_patterns("dagster_home"))
    return profile, DataRoot(copy), build_definitions(profile, str(copy))


def test_failing_checks_name_partition_and_rows(broken):
    profile, root, defs = broken
    with duckdb.connect(str(root.warehouse)) as con:
        con.execute("DELETE FROM metrics.clip_loss WHERE model = 'tiny.random' AND lang = 'en' AND metric = 'loss_i2t'"
                    " AND transform = 'none'")
        con.execute("UPDATE metrics.isotropy SET value = 'nan' WHERE model = 'tiny.random' AND lang = 'en' "
                    "AND metric = 'i2' AND modality = 'text' AND dataset = 'shapes' AND transform = 'none'")
        con.execute("UPDATE metrics.zero_shot SET value = ci_high + 0.5 WHERE model = 'tiny.random' AND lang = 'en' "
                    "AND metric = 'top1' AND transform = 'none'")
        con.execute("UPDATE metrics.retrieval SET n = n + 1000 WHERE model = 'tiny.random' AND lang = 'en' "
                    "AND metric = 'i2t_r1' AND transform = 'none'")
    # a NaN row in the text embeddings of shapes, en
    directory = root.text_embeddings("shapes", "tiny.random", "en")
    part = sorted(directory.glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    emb[0, 0] = np.nan
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1])
    damaged = table.set_column(table.schema.get_field_index("embedding"), "embedding", col)
    pq.write_table(damaged.replace_schema_metadata(table.schema.metadata), part)
    # a NaN in a fitted transform
    fitted = sorted(root.transforms_dir("centering", "tiny.random", "en").glob("*.npz"))[0]
    params = read_transform_file(fitted)
    params["mean"] = np.where(np.arange(params["mean"].size) == 0, np.nan, params["mean"])
    write_transform_file(fitted, params)
    report = root.report_dir("tiny.random", "en") / "index.html"
    report.write_text(report.read_text().replace("</body>", "<img src='https://tracker.example/p.gif'></body>"))

    found = run_checks(defs, "en|tiny.random")
    failed = {k: e for k, e in found.items() if not e.passed}
    assert set(failed) == {("metrics/clip_loss", "expected_metrics"), ("metrics/isotropy", "finite_values"),
                           ("metrics/zero_shot", "value_in_ci"), ("metrics/retrieval", "n_matches_rows"),
                           ("embeddings/shapes_text", "finite_values"), ("reports/partition_report", "self_contained"),
                           ("transforms/centering", "finite_parameters")}
    for e in failed.values():
        assert e.description.startswith("[en|tiny.random]")
        assert e.metadata["partition"].value == "en|tiny.random"
    missing = failed[("metrics/clip_loss", "expected_metrics")]
    assert "shapes/en/pair/none/None/all: loss_i2t missing" in missing.description
    assert "shapes/en/text/none/None/all/i2" in failed[("metrics/isotropy", "finite_values")].description
    first_text = str(table.column("text_id")[0])
    assert failed[("embeddings/shapes_text", "finite_values")].metadata["offending"].value == [first_text]
    assert f"{fitted.name}: mean not finite" in failed[("transforms/centering", "finite_parameters")].description
    assert "tracker.example" in failed[("reports/partition_report", "self_contained")].description
    # the other partitions are untouched
    assert all(e.passed for e in run_checks(defs, "fr|tiny.random").values())


def test_reject_fraction_check_blocks_and_warns(broken):
    profile, root, defs = broken
    samples = pq.ParquetFile(root.dataset_dir("digits") / "samples.parquet").metadata.num_rows
    limit = profile.datasets["digits"].max_reject_fraction
    # just above the warning level (half the limit), then above the limit
    for count, severity in ((math.floor(samples * limit * 0.5 / (1 - limit * 0.5)) + 1, "WARN"),
                            (math.ceil(samples * limit / (1 - limit)) + 1, "ERROR")):
        with duckdb.connect(str(root.warehouse)) as con:
            con.execute("DELETE FROM datasets.rejects")
            for i in range(count):
                con.execute("INSERT INTO datasets.rejects (dataset, stage, sample_id, reason) VALUES "
                            "('digits', 'ingest', ?, 'corrupt image')", [f"bad-{i}"])
        found = run_checks(defs, None, [dg.AssetKey(["datasets", "digits"])], succeeds=severity == "WARN")
        e = found[("datasets/digits", "reject_fraction")]
        assert not e.passed and e.severity.value == severity, (count, e.description)
        assert e.metadata["offending"].value[0] == "bad-0 (corrupt image)"
    spec = defs.resolve_asset_graph().get_check_spec(dg.AssetCheckKey(dg.AssetKey(["datasets", "digits"]),
                                                                      "reject_fraction"))
    assert spec.blocking
