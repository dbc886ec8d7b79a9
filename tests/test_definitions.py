"""The code location loads, with the graph, partitions and jobs of docs/ARCHITECTURE.md; the plan that
``conescope materialize`` walks (the automation sensor is tested in test_automation.py)."""

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from pipelines.jobs import (
    DATASETS_JOB,
    IMAGE_JOB,
    MODEL_LANG_JOB,
    PAIRED_JOB,
    PARTITION_REPORT_JOB,
    REPORTS_JOB,
    SUMMARY_JOB,
)
from pipelines.refresh import PlannedRun, full_plan, job_order


def test_module_level_definitions_load_with_the_demo_profile(monkeypatch):
    import importlib

    monkeypatch.delenv("CONESCOPE_PROFILE", raising=False)
    module = importlib.import_module("pipelines.definitions")
    defs = importlib.reload(module).defs
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"datasets/shapes", "datasets/digits", "embeddings/shapes_image", "embeddings/digits_text",
            "metrics/isotropy", "metrics/image_isotropy", "metrics/modality_gap",
            "reports/partition_report"} <= keys
    job = defs.resolve_job_def(MODEL_LANG_JOB)
    assert "en|vit-b-32.random" in job.partitions_def.get_partition_keys()
    # image partitions exist for the image models only: the text-only minilm has none
    assert defs.resolve_job_def(IMAGE_JOB).partitions_def.get_partition_keys() == [
        "vit-b-32.random", "vit-b-32.random-nobias", "tiny.trained"]
    assert "minilm" in defs.resolve_job_def(SUMMARY_JOB).partitions_def.get_partition_keys()
    summary = defs.resolve_job_def(SUMMARY_JOB)
    assert {k.to_user_string() for k in summary.asset_layer.executable_asset_keys} == {
        "metrics/multilingual", "reports/multilingual_report"}
    final = defs.resolve_job_def(REPORTS_JOB)
    assert final.partitions_def is None
    assert {k.to_user_string() for k in final.asset_layer.executable_asset_keys} == {
        "reports/comparison_report", "reports/paper_report", "experiments/transform_clusters",
        "reports/isotropy_clusters_report"}
    datasets = defs.resolve_job_def(DATASETS_JOB)
    assert not any(k.path[0] == "reports" for k in datasets.asset_layer.executable_asset_keys)


def test_every_asset_is_in_the_duckdb_pool_or_the_gpu_pool(tiny_profile, data_root):
    defs = build_definitions(tiny_profile, str(data_root))
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        if key.path[0] == "transforms":  # fitted transforms are .npz files: they never open the warehouse
            assert defs.resolve_assets_def(key).op.pool is None, key
            continue
        expected = "gpu" if key.path[0] == "embeddings" else "duckdb"
        assert defs.resolve_assets_def(key).op.pool == expected, key


def test_dependencies_and_partition_mappings(tiny_profile, data_root):
    defs = build_definitions(tiny_profile, str(data_root))
    graph = defs.resolve_asset_graph()
    iso = graph.get(dg.AssetKey(["metrics", "isotropy"]))
    assert dg.AssetKey(["embeddings", "shapes_image"]) in iso.parent_keys
    # Dagster's own mapping (serialized to the UI and the daemon); tests/test_partitions.py checks what it maps
    mapping = iso.partition_mappings[dg.AssetKey(["embeddings", "shapes_image"])]
    assert isinstance(mapping, dg.StaticPartitionMapping)


def test_full_plan_covers_every_partition_in_dependency_order(tiny_profile):
    plan = full_plan(tiny_profile, "x")
    jobs = [p.job for p in plan]
    # each model x lang partition: its text layer, its pairs, then its report (the report reads the pairs)
    assert jobs == [DATASETS_JOB] + [IMAGE_JOB] * 2 + [MODEL_LANG_JOB, PAIRED_JOB, PARTITION_REPORT_JOB] * 4 + \
        [SUMMARY_JOB] * 2 + [REPORTS_JOB]
    assert [p.partition_key for p in plan if p.job == PAIRED_JOB] == \
        [p.partition_key for p in plan if p.job == PARTITION_REPORT_JOB]
    assert full_plan(tiny_profile, "x", models=["tiny.random"])[-1] == PlannedRun(REPORTS_JOB, None)
    assert {p.partition_key for p in plan if p.job == MODEL_LANG_JOB} == {
        "en|tiny.random", "fr|tiny.random", "en|tiny.random-nobias", "fr|tiny.random-nobias"}
    with pytest.raises(ValueError, match="not in profile"):
        full_plan(tiny_profile, "x", models=["nope"])


def test_final_reports_wait_for_every_models_summary(tiny_profile):
    plan = full_plan(tiny_profile, "r")
    summaries = [i for i, p in enumerate(plan) if p.job == SUMMARY_JOB]
    assert [plan[i].partition_key for i in summaries] == ["tiny.random", "tiny.random-nobias"]
    [final] = [i for i, p in enumerate(plan) if p.job == REPORTS_JOB]
    assert final == len(plan) - 1 and final > max(summaries)
    assert plan[final] == PlannedRun(REPORTS_JOB, None) and plan[final].tags == {"conescope/refresh": "r"}
    # every summary after all the model x lang runs of its model
    for i in summaries:
        model = plan[i].partition_key
        assert max(j for j, p in enumerate(plan) if p.job in (MODEL_LANG_JOB, PAIRED_JOB, PARTITION_REPORT_JOB)
                   and p.partition_key.endswith(
            f"|{model}")) < i
    # Materializing one model by hand: its summary alone, then the final reports.
    assert full_plan(tiny_profile, "r", models=["tiny.random"])[-2:] == [
        PlannedRun(SUMMARY_JOB, "tiny.random"), PlannedRun(REPORTS_JOB, None)]


def test_the_job_order_comes_from_the_asset_graph(tiny_profile, data_root):
    """Each job after every job that holds a dependency of one of its assets; the plan follows it."""
    defs = build_definitions(tiny_profile, str(data_root))
    order = job_order(defs)
    assert order == [DATASETS_JOB, IMAGE_JOB, MODEL_LANG_JOB, PAIRED_JOB, PARTITION_REPORT_JOB, SUMMARY_JOB,
                     REPORTS_JOB]
    graph = defs.resolve_asset_graph()
    job_of = {key: name for name in order for key in defs.resolve_job_def(name).asset_layer.selected_asset_keys}
    for key, name in job_of.items():
        for parent in graph.get(key).parent_keys:
            assert order.index(job_of[parent]) <= order.index(name), (key, parent)
    assert [p.job for p in full_plan(tiny_profile, "x", defs=defs)] == [p.job for p in full_plan(tiny_profile, "x")]


def test_jobs_that_depend_on_each_other_both_ways_are_an_error():
    @dg.asset
    def a1() -> int:
        return 1

    @dg.asset(deps=[a1])
    def b1() -> int:
        return 1

    @dg.asset(deps=[b1])
    def a2() -> int:
        return 1

    defs = dg.Definitions(assets=[a1, b1, a2], jobs=[dg.define_asset_job("job_a", [a1, a2]),
                                                     dg.define_asset_job("job_b", [b1])])
    with pytest.raises(ValueError, match="both ways: job_(a|b), job_(a|b)"):
        job_order(defs)
