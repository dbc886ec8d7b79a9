"""The code location loads, with the graph, partitions, jobs, schedule and sensors of DESIGN.md."""

import datetime

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from pipelines.refresh import (
    DATASETS_JOB,
    IMAGE_JOB,
    MODEL_LANG_JOB,
    REFRESH_TAG,
    REPORTS_JOB,
    SUMMARY_JOB,
    PlannedRun,
    full_plan,
    next_layer,
)


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
        "vit-b-32.random", "vit-b-32.random-nobias"]
    assert "minilm" in defs.resolve_job_def(SUMMARY_JOB).partitions_def.get_partition_keys()
    summary = defs.resolve_job_def(SUMMARY_JOB)
    assert {k.to_user_string() for k in summary.asset_layer.executable_asset_keys} == {
        "metrics/multilingual", "reports/multilingual_report"}
    final = defs.resolve_job_def(REPORTS_JOB)
    assert final.partitions_def is None
    assert {k.to_user_string() for k in final.asset_layer.executable_asset_keys} == {
        "reports/comparison_report", "reports/paper_report"}
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


def _tick(defs, when):
    schedule = defs.get_schedule_def("nightly_recompute")
    with dg.build_schedule_context(repository_def=defs.get_repository_def(), scheduled_execution_time=when) as ctx:
        return schedule, schedule.evaluate_tick(ctx).run_requests


def test_nightly_schedule_starts_the_refresh_chain(tiny_profile, data_root):
    defs = build_definitions(tiny_profile, str(data_root))
    when = datetime.datetime(2026, 11, 22, 2, 0, tzinfo=datetime.UTC)
    schedule, requests = _tick(defs, when)
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == DATASETS_JOB
    assert len(requests) == 1
    assert requests[0].tags[REFRESH_TAG] == "nightly-20261122T0200"
    assert requests[0].run_key == "nightly-20261122T0200:datasets_job"


def _sensor_requests(defs, sensor_name, job_name, partition_key, tags, instance):
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, partition_key=partition_key, tags=tags)
    run = result.dagster_run
    success = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
    sensor = defs.get_sensor_def(sensor_name)
    ctx = dg.build_run_status_sensor_context(sensor_name=sensor_name, dagster_event=success,
                                             dagster_instance=instance, dagster_run=run)
    return list(sensor(ctx) or [])


def test_refresh_sensors_request_every_downstream_partition(tiny_profile, data_root):
    defs = build_definitions(tiny_profile, str(data_root))
    instance = dg.DagsterInstance.ephemeral()
    tags = {REFRESH_TAG: "nightly-x"}
    after_datasets = _sensor_requests(defs, "refresh_after_datasets_job", DATASETS_JOB, None, tags, instance)
    assert sorted(r.partition_key for r in after_datasets) == sorted(tiny_profile.models)
    assert all(r.tags[REFRESH_TAG] == "nightly-x" for r in after_datasets)
    after_image = _sensor_requests(defs, "refresh_after_image_job", IMAGE_JOB, "tiny.random", tags, instance)
    assert sorted(r.partition_key for r in after_image) == ["en|tiny.random", "fr|tiny.random"]
    # A run outside a refresh (launched by hand) does not start the chain.
    assert _sensor_requests(defs, "refresh_after_image_job", IMAGE_JOB, "tiny.random", {}, instance) == []
    # The model's summary (every language) waits for its last language.
    first = _sensor_requests(defs, "refresh_after_model_lang_job", MODEL_LANG_JOB, "en|tiny.random", tags, instance)
    assert first == []
    last = _sensor_requests(defs, "refresh_after_model_lang_job", MODEL_LANG_JOB, "fr|tiny.random", tags, instance)
    assert [(r.partition_key, r.tags[REFRESH_TAG]) for r in last] == [("tiny.random", "nightly-x")]


def test_full_plan_covers_every_partition_in_dependency_order(tiny_profile):
    plan = full_plan(tiny_profile, "x")
    jobs = [p.job for p in plan]
    assert jobs == [DATASETS_JOB] + [IMAGE_JOB] * 2 + [MODEL_LANG_JOB] * 4 + [SUMMARY_JOB] * 2 + [REPORTS_JOB]
    assert full_plan(tiny_profile, "x", models=["tiny.random"])[-1] == PlannedRun(REPORTS_JOB, None)
    assert {p.partition_key for p in plan if p.job == MODEL_LANG_JOB} == {
        "en|tiny.random", "fr|tiny.random", "en|tiny.random-nobias", "fr|tiny.random-nobias"}
    with pytest.raises(ValueError, match="not in profile"):
        full_plan(tiny_profile, "x", models=["nope"])


def test_final_reports_wait_for_every_models_summary(tiny_profile):
    tags = {REFRESH_TAG: "r"}
    first = PlannedRun(SUMMARY_JOB, "tiny.random", tags)
    assert next_layer(tiny_profile, first, done_models=set()) == []
    last = PlannedRun(SUMMARY_JOB, "tiny.random-nobias", tags)
    [final] = next_layer(tiny_profile, last, done_models={"tiny.random"})
    assert final == PlannedRun(REPORTS_JOB, None) and final.tags == tags
    assert next_layer(tiny_profile, final) == []
    # Materializing one model by hand: its summary alone unlocks the final reports.
    assert next_layer(tiny_profile, first, models=["tiny.random"]) == [PlannedRun(REPORTS_JOB, None)]


def test_final_reports_sensor_waits_for_the_last_models_summary(tiny_profile, data_root):
    defs = build_definitions(tiny_profile, str(data_root))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def(SUMMARY_JOB)
    sensor = defs.get_sensor_def("refresh_after_model_summary_job")

    def finish(model: str) -> list:
        run = instance.create_run_for_job(job_def=job, tags={REFRESH_TAG: "r", "dagster/partition": model},
                                          status=dg.DagsterRunStatus.SUCCESS)
        event = dg.DagsterEvent(event_type_value="PIPELINE_SUCCESS", job_name=SUMMARY_JOB)
        ctx = dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=event,
                                                 dagster_instance=instance, dagster_run=run)
        return list(sensor(ctx) or [])

    assert finish("tiny.random") == []
    [request] = finish("tiny.random-nobias")
    assert request.partition_key is None and request.tags == {REFRESH_TAG: "r"}
    assert request.run_key == "r:reports_job:"
