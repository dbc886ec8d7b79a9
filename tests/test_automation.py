"""Declarative automation (pipelines/automation.py), evaluated tick by tick with Dagster's own
``evaluate_automation_conditions`` against the tiny profile's real graph. Materializations are
reported without running anything (each with the data version a real run would record), and
in-progress runs are created as the daemon would create them, so each test is fast."""

import datetime
import graphlib

import dagster as dg
import pytest

from pipelines.automation import AUTOMATION_ENV, IMAGE_PRIORITY, IMAGE_SENSOR_NAME, MINIMUM_INTERVAL_S, SENSOR_NAME
from pipelines.definitions import build_definitions
from pipelines.jobs import IMAGE_JOB, MODEL_LANG_JOB, PAIRED_JOB, PARTITION_REPORT_JOB

SHAPES, DIGITS = dg.AssetKey(["datasets", "shapes"]), dg.AssetKey(["datasets", "digits"])
SHAPES_IMAGE, SHAPES_TEXT = dg.AssetKey(["embeddings", "shapes_image"]), dg.AssetKey(["embeddings", "shapes_text"])
IMAGE_METRICS = [dg.AssetKey(["metrics", m]) for m in ("image_isotropy", "image_clusters", "linear_probe")]
MULTILINGUAL = dg.AssetKey(["metrics", "multilingual"])
NOON = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


class Ticks:
    """The automation sensor's ticks, one minute apart, against one instance."""

    def __init__(self, defs: dg.Definitions, when: datetime.datetime = NOON):
        self.defs, self.graph = defs, defs.resolve_asset_graph()
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor, self.when = None, when

    def tick(self, defs: dg.Definitions | None = None, minutes: float = 1, fresh_cursor: bool = False
             ) -> dict[str, set]:
        """Evaluate once (``defs``: a new deploy, kept for what follows; ``fresh_cursor``: as the first tick
        of a sensor that kept no state); what was requested, as {asset key: partition keys}."""
        self.when += datetime.timedelta(minutes=minutes)
        self.defs = defs or self.defs
        result = dg.evaluate_automation_conditions(self.defs, self.instance, evaluation_time=self.when,
                                                   cursor=None if fresh_cursor else self.cursor)
        self.cursor = result.cursor
        return {k.to_user_string(): result.get_requested_partitions(k)
                for k in self.graph.get_all_asset_keys() if result.get_num_requested(k)}

    def materialize(self, keys, partitions=None, version: str = "v1") -> None:
        """Record a materialization of ``keys`` (every partition, or ``partitions``) as a run of the
        deployed code records it: a data version that depends on ``version`` only (as a content hash
        would), the code version, and the provenance of every input (its data version, and the event log
        position it was read at; Dagster's ``dagster/input_*`` tags)."""
        graph = self.defs.resolve_asset_graph()
        for key in keys:
            pdef = self.graph.get(key).partitions_def
            for p in (partitions or pdef.get_partition_keys()) if pdef else [None]:
                pointer = str(self.instance.event_log_storage.get_maximum_record_id() or 0)
                tags = {"dagster/data_version": f"{key.to_user_string()}:{p}:{version}",
                        "dagster/code_version": graph.get(key).code_version or ""}
                for parent in graph.get(key).parent_keys:
                    latest = self.instance.get_latest_materialization_event(parent)
                    name = parent.to_user_string()
                    tags[f"dagster/input_data_version/{name}"] = (
                        latest.asset_materialization.tags.get("dagster/data_version", "") if latest else "")
                    tags[f"dagster/input_event_pointer/{name}"] = pointer
                self.instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=p, tags=tags))

    def everything(self) -> list[dg.AssetKey]:
        """Every materializable asset, parents first (as runs would record them: a child recorded before its
        parent would be stale)."""
        order = graphlib.TopologicalSorter({k: self.graph.get(k).parent_keys for k in self.graph.get_all_asset_keys()})
        return [k for k in order.static_order() if self.graph.get(k).is_materializable]

    def start_run(self, keys, partition: str) -> dg.DagsterRun:
        """A started run of ``keys`` at ``partition``, as the daemon launches one (its planned
        materializations make the partitions in progress)."""
        jobs = [self.defs.resolve_job_def(j) for j in (IMAGE_JOB, MODEL_LANG_JOB, PAIRED_JOB, PARTITION_REPORT_JOB)]
        job = next(j for j in jobs if j.asset_layer.selected_asset_keys >= set(keys))
        tags = {"dagster/partition": partition}
        if "|" in partition:
            lang, model = partition.split("|")
            tags.update({"dagster/partition/lang": lang, "dagster/partition/model": model})
        return self.instance.create_run_for_job(job_def=job, asset_selection=set(keys), tags=tags,
                                                status=dg.DagsterRunStatus.STARTED)

    def finish_run(self, run: dg.DagsterRun, partition: str, version: str) -> None:
        self.materialize([k for k in self.everything() if k in run.asset_selection], [partition], version)
        self.instance.handle_run_event(run.run_id, dg.DagsterEvent(event_type_value="PIPELINE_SUCCESS",
                                                                   job_name=run.job_name))


@pytest.fixture
def ticks(tiny_profile, data_root) -> Ticks:
    return Ticks(build_definitions(tiny_profile, str(data_root)))


def _done(ticks: Ticks) -> None:
    """Everything materialized, and the ticks that see it request nothing."""
    ticks.materialize(ticks.everything())
    assert ticks.tick() == {}


def _with_code_versions(tiny_profile, data_root, changed: dict[dg.AssetKey, str]) -> dg.Definitions:
    """The definitions with every asset at code version "1" except ``changed``."""
    defs = build_definitions(tiny_profile, str(data_root))
    assets = [a.map_asset_specs(lambda s: s.replace_attributes(code_version=changed.get(s.key, "1")))
              for a in defs.assets]
    return dg.Definitions(assets=assets, asset_checks=defs.asset_checks, jobs=defs.jobs, resources=defs.resources)


def test_fresh_instance_requests_the_datasets_and_then_their_children(ticks):
    assert ticks.tick() == {"datasets/shapes": {None}, "datasets/digits": {None}}
    assert ticks.tick() == {}  # requested once; the children wait for them
    ticks.materialize([SHAPES, DIGITS])
    requested = ticks.tick()
    models = {"tiny.random", "tiny.random-nobias"}
    # the image layer (with its metrics, in the same run) and the text embeddings; nothing that
    # reads image and text embeddings yet: the images are requested in other runs
    assert requested == {
        **{f"embeddings/{ds}_image": models for ds in ("shapes", "digits")},
        **{f"embeddings/{ds}_text": {f"{lang}|{m}" for lang in ("en", "fr") for m in models}
           for ds in ("shapes", "digits")},
        **{k.to_user_string(): models for k in IMAGE_METRICS}}


def test_nothing_is_requested_once_everything_is_materialized(ticks):
    ticks.tick()
    _done(ticks)
    assert ticks.tick() == {}


def test_nightly_tick_rebuilds_the_datasets_and_nothing_else_when_their_content_is_unchanged(ticks):
    ticks.tick()
    _done(ticks)
    assert ticks.tick(minutes=60) == {}  # 13:00: no cron tick passed
    assert ticks.tick(minutes=14 * 60) == {"datasets/shapes": {None}, "datasets/digits": {None}}  # 02:00 passed
    ticks.materialize([SHAPES, DIGITS], version="v1")  # rebuilt, same content hash
    assert ticks.tick() == {}
    assert ticks.tick() == {}


def test_a_changed_dataset_requests_its_own_downstream_only(ticks):
    ticks.tick()
    _done(ticks)
    ticks.materialize([DIGITS], version="v2")
    requested = ticks.tick()
    assert {"embeddings/digits_image", "embeddings/digits_text"} <= set(requested)
    assert not any(key.startswith(("embeddings/shapes", "datasets/")) for key in requested)


def test_the_stale_assets_of_a_partition_are_requested_together_after_their_parents(ticks):
    ticks.tick()
    _done(ticks)
    ticks.materialize([SHAPES], version="v2")
    first = ticks.tick()
    assert first["embeddings/shapes_text"] == {"en|tiny.random", "fr|tiny.random", "en|tiny.random-nobias",
                                               "fr|tiny.random-nobias"}
    runs = {p: ticks.start_run([SHAPES_IMAGE, *IMAGE_METRICS], p) for p in first["embeddings/shapes_image"]}
    runs |= {p: ticks.start_run([SHAPES_TEXT], p) for p in first["embeddings/shapes_text"]}
    assert ticks.tick() == {}  # all in progress
    ticks.finish_run(runs["en|tiny.random"], "en|tiny.random", "v2")
    assert ticks.tick() == {}  # the partition's image embeddings are still being rewritten
    ticks.finish_run(runs["tiny.random"], "tiny.random", "v2")
    requested = ticks.tick()
    # one tick, one partition: its text layer and its pairs (Dagster groups a tick's requests by
    # partitioning and partition: a run each)
    assert {p for parts in requested.values() for p in parts} == {"en|tiny.random"}
    assert {"metrics/isotropy", "metrics/clip_loss", "transforms/procrustes", "metrics/transforms"} <= set(requested)
    # the report reads the pairs, rewritten in another run: it waits for them
    assert "reports/partition_report" not in requested
    # the model's summary reads every language: fr is still in progress
    assert "metrics/multilingual" not in requested
    by_job = {job: [k for k in map(dg.AssetKey.from_user_string, requested)
                    if k in ticks.defs.resolve_job_def(job).asset_layer.selected_asset_keys]
              for job in (MODEL_LANG_JOB, PAIRED_JOB)}
    layer_runs = [ticks.start_run(selection, "en|tiny.random") for selection in by_job.values()]
    assert "reports/partition_report" not in ticks.tick()
    ticks.finish_run(layer_runs[0], "en|tiny.random", "v2")
    assert "reports/partition_report" not in ticks.tick()  # the pairs are still in progress
    ticks.finish_run(layer_runs[1], "en|tiny.random", "v2")
    assert ticks.tick()["reports/partition_report"] == {"en|tiny.random"}
    assert "reports/partition_report" not in ticks.tick()  # requested once


def test_a_models_summary_waits_for_every_language(ticks):
    ticks.tick()
    _done(ticks)
    ticks.materialize([SHAPES], version="v2")
    first = ticks.tick()
    runs = {p: ticks.start_run([SHAPES_TEXT], p) for p in first["embeddings/shapes_text"]}
    ticks.finish_run(runs["en|tiny.random"], "en|tiny.random", "v2")
    assert "metrics/multilingual" not in ticks.tick()
    ticks.finish_run(runs["fr|tiny.random"], "fr|tiny.random", "v2")
    requested = ticks.tick()
    assert requested["metrics/multilingual"] == {"tiny.random"}  # the other model's fr is still running
    assert requested["reports/multilingual_report"] == {"tiny.random"}  # with it, in the same run


def test_changed_metric_code_recomputes_that_family_and_the_reports_only(tiny_profile, data_root):
    clip_loss = dg.AssetKey(["metrics", "clip_loss"])
    before = _with_code_versions(tiny_profile, data_root, {})
    ticks = Ticks(before)
    ticks.tick()
    _done(ticks)
    after = _with_code_versions(tiny_profile, data_root, {clip_loss: "2"})
    requested = ticks.tick(after)
    # the family's partitions; then the partition report that reads them (another partitioning: another run)
    assert set(requested) == {"metrics/clip_loss"}
    assert requested["metrics/clip_loss"] == set(ticks.graph.get(clip_loss).partitions_def.get_partition_keys())
    ticks.materialize([clip_loss], version="v2")
    assert set(ticks.tick(after)) == {"reports/partition_report"}
    ticks.materialize([dg.AssetKey(["reports", "partition_report"])], version="v2")
    # then the reports over every partition; never an embedding
    assert set(ticks.tick(after)) == {"reports/comparison_report", "reports/paper_report"}


def test_a_child_never_starts_before_a_parent_that_runs_in_another_run(tiny_profile, data_root):
    isotropy = dg.AssetKey(["metrics", "isotropy"])
    ticks = Ticks(_with_code_versions(tiny_profile, data_root, {}))
    ticks.tick()
    _done(ticks)
    # one deploy changes the image embedding code and the isotropy code
    after = _with_code_versions(tiny_profile, data_root, {SHAPES_IMAGE: "2", isotropy: "2"})
    requested = ticks.tick(after)
    assert requested[SHAPES_IMAGE.to_user_string()] == {"tiny.random", "tiny.random-nobias"}
    assert "metrics/isotropy" not in requested  # it reads the image embeddings, rewritten in other runs
    runs = {p: ticks.start_run([SHAPES_IMAGE, *IMAGE_METRICS], p) for p in ("tiny.random", "tiny.random-nobias")}
    assert "metrics/isotropy" not in ticks.tick(after)
    ticks.finish_run(runs["tiny.random"], "tiny.random", "v2")
    assert ticks.tick(after)["metrics/isotropy"] == {"en|tiny.random", "fr|tiny.random"}  # once, after


def test_the_automation_sensors_run_by_default_and_can_be_switched_off(tiny_profile, data_root, monkeypatch):
    defs = build_definitions(tiny_profile, str(data_root))
    graph = defs.resolve_asset_graph()
    targets = {}
    for sensor in defs.sensors:
        assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == MINIMUM_INTERVAL_S
        assert not sensor.emit_backfills  # one run per partition, no wait on the backfill daemon
        targets[sensor.name] = {k.to_user_string() for k in sensor.asset_selection.resolve(graph)}
    # every asset in exactly one sensor; the image layer's runs first in the queue
    assert targets[IMAGE_SENSOR_NAME] == {"embeddings/shapes_image", "embeddings/digits_image",
                                          "metrics/image_isotropy", "metrics/image_clusters", "metrics/linear_probe"}
    assert targets[SENSOR_NAME] | targets[IMAGE_SENSOR_NAME] == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert not targets[SENSOR_NAME] & targets[IMAGE_SENSOR_NAME]
    assert defs.get_sensor_def(IMAGE_SENSOR_NAME).run_tags == {"dagster/priority": str(IMAGE_PRIORITY)}
    monkeypatch.setenv(AUTOMATION_ENV, "off")
    assert {s.default_status for s in build_definitions(tiny_profile, str(data_root)).sensors} == {
        dg.DefaultSensorStatus.STOPPED}
    monkeypatch.setenv(AUTOMATION_ENV, "maybe")
    with pytest.raises(ValueError, match="CONESCOPE_AUTOMATION='maybe'"):
        build_definitions(tiny_profile, str(data_root))


def test_every_asset_has_a_condition_and_no_schedule_or_run_sensor_remains(tiny_profile, data_root):
    defs = build_definitions(tiny_profile, str(data_root))
    graph = defs.resolve_asset_graph()
    labels = {graph.get(k).automation_condition.get_label() for k in graph.get_all_asset_keys()}
    assert labels == {"nightly refresh", "stale"}
    assert graph.get(SHAPES).automation_condition.get_label() == "nightly refresh"
    assert list(defs.schedules or []) == []
    assert sorted(s.name for s in defs.sensors) == [SENSOR_NAME, IMAGE_SENSOR_NAME]


@pytest.mark.parametrize("sensor_state", ["kept", "lost"])
def test_a_change_made_while_the_sensors_were_off_is_requested_once_when_they_run(tiny_profile, data_root,
                                                                                   sensor_state):
    """Level-triggered: what is stale when a tick runs is requested, wherever the change happened. The
    sensors are off while a deploy changes a metric's code (no tick sees the change); once they run
    again, with their state kept or lost, every stale partition is requested once, then its readers."""
    from pipelines.staleness import not_fresh, resolver

    clip_loss, report = dg.AssetKey(["metrics", "clip_loss"]), dg.AssetKey(["reports", "partition_report"])
    ticks = Ticks(_with_code_versions(tiny_profile, data_root, {}))
    ticks.tick()
    _done(ticks)
    assert ticks.tick() == {}
    after = _with_code_versions(tiny_profile, data_root, {clip_loss: "2"})
    graph = after.resolve_asset_graph()
    statuses = resolver(ticks.instance, graph)
    stale = {(k.to_user_string(), p) for k in graph.materializable_asset_keys
             for p in (graph.get(k).partitions_def.get_partition_keys() if graph.get(k).partitions_def else [None])
             if not_fresh(statuses, [k], p)}
    partitions = set(graph.get(clip_loss).partitions_def.get_partition_keys())
    assert stale == {("metrics/clip_loss", p) for p in partitions}

    requested = ticks.tick(after, minutes=60, fresh_cursor=sensor_state == "lost")
    assert requested == {"metrics/clip_loss": partitions}
    runs = {p: ticks.start_run([clip_loss], p) for p in partitions}
    assert ticks.tick() == {}  # in progress: requested once
    for p, run in runs.items():
        ticks.finish_run(run, p, "v2")
    assert ticks.tick() == {"reports/partition_report": partitions}
    ticks.materialize([report], version="v2")
    assert set(ticks.tick()) == {"reports/comparison_report", "reports/paper_report"}


def test_an_idle_tick_resolves_no_stale_status_and_a_new_event_resolves_again(ticks, monkeypatch):
    """Between two ticks with no new event and no new code version, the previous answer stands: the tick
    reads no stale status (on the demo a full evaluation costs seconds of CPU every 10 s)."""
    import pipelines.automation as automation

    ticks.tick()
    _done(ticks)
    assert ticks.tick() == {}
    calls, real = [], automation.not_fresh
    monkeypatch.setattr(automation, "not_fresh", lambda *args: calls.append(args) or real(*args))
    assert ticks.tick() == {}
    assert calls == []
    ticks.materialize([SHAPES], version="v2")
    assert "embeddings/shapes_text" in ticks.tick()
    assert calls
