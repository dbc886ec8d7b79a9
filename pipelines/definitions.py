"""The Dagster code location: assets (with their automation conditions, pipelines/automation.py),
checks, jobs, the automation sensor and resources built from the active profile (``CONESCOPE_PROFILE``,
default ``demo``) and data root (``CONESCOPE_HOME``, default ``./data``)."""


import logging
from pathlib import Path

import dagster as dg

from assets import keys
from assets.checks import build_asset_checks
from assets.datasets import dataset_assets
from assets.embeddings import embedding_assets
from assets.experiments import CLUSTER_TRAINING, TRANSFORM_CLUSTERS, experiment_assets
from assets.metrics import SUMMARY_LAYER, metric_assets
from assets.reports import FINAL_LAYER, SUMMARY_REPORTS, report_assets
from assets.training import checkpoint_assets
from assets.transforms import transform_assets
from conescope.profile import Profile, load_profile
from pipelines.automation import automation_sensors, with_automation
from pipelines.executors import executor_from_env
from pipelines.jobs import (
    DATASETS_JOB,
    IMAGE_JOB,
    MODEL_LANG_JOB,
    PAIRED_JOB,
    PARTITION_REPORT_JOB,
    REPORTS_JOB,
    SUMMARY_JOB,
    TRAIN_JOB,
)
from pipelines.partitions import (
    IMAGE_MODEL,
    IMAGE_MODEL_LANG,
    MODEL_LANG,
    TRAINED_MODEL,
    UNPARTITIONED,
    ProfilePartitions,
    profile_partitions,
)
from pipelines.resources import ConescopeHome
from pipelines.terminal import run_loggers
from storage.paths import DataRoot


def _layer_jobs(parts: ProfilePartitions, assets: list[dg.AssetsDefinition]) -> dict[str, tuple]:
    """name -> (partitions def, description, asset keys) of each job of the refresh chain. An asset
    goes to the first layer of its partitioning unless it waits for a later one. Partitionings are told
    apart by name (``ProfilePartitions.name_of``). The jobs run in the order the asset graph gives
    (pipelines/refresh.py, ``job_order``); the order here only ranks jobs that do not depend on each other."""
    later = {keys.PARTITION_REPORT: PARTITION_REPORT_JOB,
             **dict.fromkeys([*SUMMARY_LAYER, *SUMMARY_REPORTS, CLUSTER_TRAINING], SUMMARY_JOB),
             **dict.fromkeys([*FINAL_LAYER, TRANSFORM_CLUSTERS], REPORTS_JOB)}
    first_of = {UNPARTITIONED: DATASETS_JOB, TRAINED_MODEL: TRAIN_JOB, IMAGE_MODEL: IMAGE_JOB,
                MODEL_LANG: MODEL_LANG_JOB, IMAGE_MODEL_LANG: PAIRED_JOB}
    layers = {
        DATASETS_JOB: (None, "the dataset manifests"),
        TRAIN_JOB: (parts.trained_model, "per model the pipeline trains: its checkpoint"),
        IMAGE_JOB: (parts.image_model, "per image model: image embeddings and image-only metrics"),
        MODEL_LANG_JOB: (parts.model_lang, "per model x lang: text embeddings and text metrics"),
        PAIRED_JOB: (parts.image_model_lang, "per image model x lang: the image-caption pair metrics, the "
                                             "fitted transforms and their metrics"),
        PARTITION_REPORT_JOB: (parts.model_lang, "per model x lang, after its pair metrics: the partition report"),
        SUMMARY_JOB: (parts.model, "per model, after every language: multilingual metrics and report, the "
                                   "cluster-training experiment"),
        REPORTS_JOB: (None, "after every model: the model comparison and paper reproduction reports, the "
                            "cross-transform experiment"),
    }
    selected: dict[str, list[dg.AssetKey]] = {name: [] for name in layers}
    for a in assets:
        for key in a.keys:
            selected[later.get(key) or first_of[parts.name_of(a.specs_by_key[key].partitions_def)]].append(key)
    # no image model: no image assets, and neither image layer; no trained model: no training layer
    return {name: (partitions_def, description, selected[name])
            for name, (partitions_def, description) in layers.items()
            if name not in (TRAIN_JOB, IMAGE_JOB, PAIRED_JOB) or selected[name]}


def build_definitions(profile: Profile, home: str | None = None, executor: dg.ExecutorDefinition | None = None,
                      terminal: logging.Handler | None = None) -> dg.Definitions:
    """The definitions of ``profile`` on the data root ``home``; ``terminal``: what ``conescope
    materialize`` prints of its runs' logs (pipelines/terminal.py, ``TerminalLines``)."""
    parts = profile_partitions(profile)
    all_assets = [*dataset_assets(profile), *checkpoint_assets(profile, parts), *embedding_assets(profile, parts),
                  *metric_assets(profile, parts),
                  *transform_assets(profile, parts), *experiment_assets(profile, parts),
                  *report_assets(profile, parts)]
    all_assets = with_automation(all_assets, profile)
    jobs = {name: dg.define_asset_job(name, selection=selected, partitions_def=partitions_def,
                                      description=description)
            for name, (partitions_def, description, selected) in _layer_jobs(parts, all_assets).items()}
    root = DataRoot.from_env() if home is None else DataRoot(Path(home).resolve())
    return dg.Definitions(
        assets=all_assets,
        asset_checks=build_asset_checks(profile, parts, all_assets),
        jobs=list(jobs.values()),
        sensors=automation_sensors(jobs[IMAGE_JOB].selection.resolve(all_assets) if IMAGE_JOB in jobs else []),
        resources={"conescope": ConescopeHome(home=str(root.root), warehouse_kind=profile.warehouse.kind,
                                              warehouse_catalog=profile.warehouse.catalog,
                                              warehouse_data_path=profile.warehouse.data_path)},
        executor=executor,
        loggers=run_loggers(terminal),
    )


defs = build_definitions(load_profile(), executor=executor_from_env())
