"""The Dagster code location: assets, jobs, schedule and resources built from the active profile
(``CONESCOPE_PROFILE``, default ``demo``) and data root (``CONESCOPE_HOME``, default ``./data``)."""


from pathlib import Path

import dagster as dg

from assets.datasets import dataset_assets
from assets.embeddings import embedding_assets
from assets.metrics import SUMMARY_LAYER, metric_assets
from assets.reports import report_assets
from conescope.profile import Profile, load_profile
from pipelines.executors import executor_from_env
from pipelines.partitions import profile_partitions
from pipelines.refresh import (
    DATASETS_JOB,
    IMAGE_JOB,
    PARTITION_JOB,
    REFRESH_TAG,
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

    def chain_sensor(upstream: str, downstream: str) -> dg.SensorDefinition:
        @dg.run_status_sensor(name=f"refresh_after_{upstream}", run_status=dg.DagsterRunStatus.SUCCESS,
                              monitored_jobs=[jobs[upstream]], request_job=jobs[downstream],
                              default_status=dg.DefaultSensorStatus.RUNNING,
                              description=f"Continue a refresh: a successful {upstream} run of the chain "
                                          f"requests the {downstream} runs that depend on it")
        def _sensor(context: dg.RunStatusSensorContext):
            run = context.dagster_run
            if REFRESH_TAG not in run.tags:
                return
            finished = PlannedRun(upstream, run.tags.get("dagster/partition"), {REFRESH_TAG: run.tags[REFRESH_TAG]})
            done_langs = None
            if upstream == PARTITION_JOB:
                done = context.instance.get_runs(dg.RunsFilter(
                    job_name=PARTITION_JOB, statuses=[dg.DagsterRunStatus.SUCCESS],
                    tags={REFRESH_TAG: run.tags[REFRESH_TAG],
                          "dagster/partition/model": run.tags.get("dagster/partition/model", "")}))
                done_langs = {r.tags.get("dagster/partition/lang") for r in done}
            for planned in next_layer(profile, finished, done_langs=done_langs):
                yield dg.RunRequest(run_key=f"{run.tags[REFRESH_TAG]}:{planned.job}:{planned.partition_key}",
                                    partition_key=planned.partition_key, tags=planned.tags)

        return _sensor

    return nightly, [chain_sensor(DATASETS_JOB, IMAGE_JOB), chain_sensor(IMAGE_JOB, PARTITION_JOB),
                     chain_sensor(PARTITION_JOB, SUMMARY_JOB)]


def build_definitions(profile: Profile, home: str | None = None,
                      executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    parts = profile_partitions(profile)
    all_assets = [*dataset_assets(profile), *embedding_assets(profile, parts), *metric_assets(profile, parts),
                  *report_assets(profile, parts)]
    summary = set(SUMMARY_LAYER)
    layers = {
        DATASETS_JOB: (None, "the dataset manifests"),
        IMAGE_JOB: (parts.model, "per model: image embeddings and image-only metrics"),
        PARTITION_JOB: (parts.model_lang, "per model x lang: text embeddings, metrics, report"),
        SUMMARY_JOB: (parts.model, "per model, after every language: multilingual metrics"),
    }
    jobs = {}
    for name, (partitions_def, description) in layers.items():
        selected = [a.key for a in all_assets if a.partitions_def == partitions_def
                    and (a.key in summary) == (name == SUMMARY_JOB)]
        jobs[name] = dg.define_asset_job(name, selection=selected, partitions_def=partitions_def,
                                         description=description)
    schedule, sensors = _refresh_instigators(profile, jobs)
    root = DataRoot.from_env() if home is None else DataRoot(Path(home).resolve())
    return dg.Definitions(
        assets=all_assets,
        jobs=list(jobs.values()),
        schedules=[schedule],
        sensors=sensors,
        resources={"conescope": ConescopeHome(home=str(root.root))},
        executor=executor,
    )


defs = build_definitions(load_profile(), executor=executor_from_env())
