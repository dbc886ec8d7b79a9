"""The Dagster code location: assets, jobs, schedule and resources built from the active profile
(``CONESCOPE_PROFILE``, default ``demo``) and data root (``CONESCOPE_HOME``, default ``./data``)."""


from pathlib import Path

import dagster as dg

from assets.checks import build_asset_checks
from assets.datasets import dataset_assets
from assets.embeddings import embedding_assets
from assets.metrics import SUMMARY_LAYER, metric_assets
from assets.reports import FINAL_LAYER, SUMMARY_REPORTS, report_assets
from assets.transforms import transform_assets
from conescope.profile import Profile, load_profile
from pipelines.executors import executor_from_env
from pipelines.partitions import (
    IMAGE_MODEL,
    MODEL_LANG,
    UNPARTITIONED,
    ProfilePartitions,
    model_and_lang,
    profile_partitions,
)
from pipelines.refresh import (
    DATASETS_JOB,
    IMAGE_JOB,
    MODEL_LANG_JOB,
    REFRESH_TAG,
    REPORTS_JOB,
    SUMMARY_JOB,
    PlannedRun,
    first_layer,
    next_layer,
)
from pipelines.resources import ConescopeHome
from storage.paths import DataRoot


def _refresh_instigators(profile: Profile, jobs: dict) -> tuple[dg.ScheduleDefinition, list[dg.SensorDefinition]]:
    @dg.schedule(name="nightly_recompute", cron_schedule=profile.schedule.cron,
                 execution_timezone=profile.schedule.timezone, job=jobs[DATASETS_JOB],
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Recompute every partition of the profile: datasets now, then (through the "
                             "refresh sensors) every model's images, then every model x lang partition")
    def nightly(context: dg.ScheduleEvaluationContext):
        refresh_id = "nightly-" + context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
        for planned in first_layer(refresh_id):
            yield dg.RunRequest(run_key=f"{refresh_id}:{planned.job}", partition_key=planned.partition_key,
                                tags=planned.tags)

    def chain_sensor(upstream: str, *downstream: str) -> dg.SensorDefinition:
        @dg.run_status_sensor(name=f"refresh_after_{upstream}", run_status=dg.DagsterRunStatus.SUCCESS,
                              monitored_jobs=[jobs[upstream]], request_jobs=[jobs[d] for d in downstream],
                              default_status=dg.DefaultSensorStatus.RUNNING,
                              description=f"Continue a refresh: a successful {upstream} run of the chain "
                                          f"requests the {' and '.join(downstream)} runs that depend on it")
        def _sensor(context: dg.RunStatusSensorContext):
            run = context.dagster_run
            if REFRESH_TAG not in run.tags:
                return
            finished = PlannedRun(upstream, run.tags.get("dagster/partition"), {REFRESH_TAG: run.tags[REFRESH_TAG]})
            done_langs = None
            if upstream == MODEL_LANG_JOB:
                done = context.instance.get_runs(dg.RunsFilter(
                    job_name=MODEL_LANG_JOB, statuses=[dg.DagsterRunStatus.SUCCESS],
                    tags={REFRESH_TAG: run.tags[REFRESH_TAG]}))
                model = model_and_lang(run.tags["dagster/partition"])[0]
                done_langs = {lang for m, lang in (model_and_lang(r.tags["dagster/partition"]) for r in done)
                              if m == model}
            done_models = None
            if upstream == SUMMARY_JOB:
                done = context.instance.get_runs(dg.RunsFilter(
                    job_name=SUMMARY_JOB, statuses=[dg.DagsterRunStatus.SUCCESS],
                    tags={REFRESH_TAG: run.tags[REFRESH_TAG]}))
                done_models = {r.tags.get("dagster/partition") for r in done}
            for planned in next_layer(profile, finished, done_langs=done_langs, done_models=done_models):
                yield dg.RunRequest(run_key=f"{run.tags[REFRESH_TAG]}:{planned.job}:{planned.partition_key or ''}",
                                    partition_key=planned.partition_key, tags=planned.tags, job_name=planned.job)

        return _sensor

    # after the datasets: image runs, and the model x lang runs of text-only models (no image layer)
    chain = [(DATASETS_JOB, IMAGE_JOB, MODEL_LANG_JOB), (IMAGE_JOB, MODEL_LANG_JOB), (MODEL_LANG_JOB, SUMMARY_JOB),
             (SUMMARY_JOB, REPORTS_JOB)]
    # a profile without image models has no image job
    return nightly, [chain_sensor(*(job for job in link if job in jobs)) for link in chain if link[0] in jobs]


def _layer_jobs(parts: ProfilePartitions, assets: list[dg.AssetsDefinition]) -> dict[str, tuple]:
    """name -> (partitions def, description, asset keys) of each job of the refresh chain. An asset
    goes to the first layer of its partitioning unless it waits for a later one. Partitionings are told
    apart by name (``ProfilePartitions.name_of``)."""
    later = {**dict.fromkeys([*SUMMARY_LAYER, *SUMMARY_REPORTS], SUMMARY_JOB),
             **dict.fromkeys(FINAL_LAYER, REPORTS_JOB)}
    first_of = {UNPARTITIONED: DATASETS_JOB, IMAGE_MODEL: IMAGE_JOB, MODEL_LANG: MODEL_LANG_JOB}
    layers = {
        DATASETS_JOB: (None, "the dataset manifests"),
        IMAGE_JOB: (parts.image_model, "per image model: image embeddings and image-only metrics"),
        MODEL_LANG_JOB: (parts.model_lang, "per model x lang: text embeddings, metrics, report"),
        SUMMARY_JOB: (parts.model, "per model, after every language: multilingual metrics and report"),
        REPORTS_JOB: (None, "after every model: the model comparison and paper reproduction reports"),
    }
    selected: dict[str, list[dg.AssetKey]] = {name: [] for name in layers}
    for a in assets:
        for key in a.keys:
            selected[later.get(key) or first_of[parts.name_of(a.specs_by_key[key].partitions_def)]].append(key)
    # no image model: no image assets, and no image layer
    return {name: (partitions_def, description, selected[name])
            for name, (partitions_def, description) in layers.items() if name != IMAGE_JOB or selected[name]}


def build_definitions(profile: Profile, home: str | None = None,
                      executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    parts = profile_partitions(profile)
    all_assets = [*dataset_assets(profile), *embedding_assets(profile, parts), *metric_assets(profile, parts),
                  *transform_assets(profile, parts), *report_assets(profile, parts)]
    jobs = {name: dg.define_asset_job(name, selection=selected, partitions_def=partitions_def,
                                      description=description)
            for name, (partitions_def, description, selected) in _layer_jobs(parts, all_assets).items()}
    schedule, sensors = _refresh_instigators(profile, jobs)
    root = DataRoot.from_env() if home is None else DataRoot(Path(home).resolve())
    return dg.Definitions(
        assets=all_assets,
        asset_checks=build_asset_checks(profile, parts, all_assets),
        jobs=list(jobs.values()),
        schedules=[schedule],
        sensors=sensors,
        resources={"conescope": ConescopeHome(home=str(root.root), warehouse_kind=profile.warehouse.kind,
                                              warehouse_catalog=profile.warehouse.catalog,
                                              warehouse_data_path=profile.warehouse.data_path)},
        executor=executor,
    )


defs = build_definitions(load_profile(), executor=executor_from_env())
