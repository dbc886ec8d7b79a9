"""experiments/*: the experiments declared in ``conescope.metric_families.EXPERIMENTS``, written to their
tables ``experiments.<table>`` (docs/storage.md, "Experiments").

- experiments/cluster_training [model], after every language: Mickus et al.'s isotropy against clusters
  on the datasets of the profile's ``cluster_training`` section (``conescope.cluster_training``). Built
  only when that section names datasets; partitioned per model because every model embeds every
  language of every dataset, so no partition is empty. A named dataset without two labelled classes
  fails its partitions (an error that names it) instead of materializing them empty.
- experiments/transform_clusters [unpartitioned], after every model's metrics/transforms: IsoScore against
  silhouette across the fitted transforms. Built only when the graph fits transforms.
"""

import dagster as dg

from assets import keys
from assets.transforms import has_transforms
from conescope import code_versions
from conescope.cluster_training import trajectory_rows, transform_rows
from conescope.metric_families import experiment
from conescope.profile import Profile
from conescope.provenance import rows_sha256
from pipelines.partitions import ProfilePartitions
from pipelines.resources import ConescopeHome
from storage import metric_rows
from storage.embedding_sets import StoredEmbeddings
from storage.warehouse import experiment_rows

CLUSTER_TRAINING = dg.AssetKey(["experiments", "cluster_training"])
TRANSFORM_CLUSTERS = dg.AssetKey(["experiments", "transform_clusters"])


def _result(tables: dict, replaced: dict, headline: dict) -> dg.MaterializeResult:
    content = rows_sha256(*(tables[t] for t in sorted(tables)))[:16]
    return dg.MaterializeResult(metadata={**{f"rows/{t}": r.num_rows for t, r in tables.items()},
                                          "replaced": sum(replaced.values()), "rows_sha256": content,
                                          **dict(list(headline.items())[:40])},
                                data_version=dg.DataVersion(content))


def _headline(summary: list[dict], *keys_of: str) -> dict:
    return {"/".join(str(r[k]) for k in keys_of): round(r["value"], 4) for r in summary if r["value"] == r["value"]}


def _cluster_training(profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    declared = experiment("cluster_training")
    version = code_versions.experiment(profile, declared.modules, training=True)
    datasets = profile.cluster_training.datasets

    @dg.asset(key=CLUSTER_TRAINING, partitions_def=parts.model, code_version=version, group_name="experiments",
              deps=[dg.AssetDep(keys.text_embeddings(ds), partition_mapping=parts.model_lang_to_model)
                    for ds in datasets],
              pool=keys.DUCKDB_POOL, kinds={"duckdb", "pytorch"}, description=declared.description)
    def cluster_training(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model = context.partition_key
        steps, summary = trajectory_rows(profile, model, StoredEmbeddings(conescope.paths, model), context.log.info)
        tables = {f"experiments.{t}": experiment_rows([{**r, "model": model} for r in records], t, version)
                  for t, records in zip(declared.tables, (steps, summary), strict=True)}
        replaced = conescope.warehouse.replace_tables(tables, {"model": model})
        pooled = [r for r in summary if r["seed"] is None]
        return _result(tables, replaced, _headline(pooled, "dataset", "lang", "statistic"))

    return cluster_training


def _transform_clusters(profile: Profile) -> dg.AssetsDefinition:
    declared = experiment("transform_clusters")
    version = code_versions.experiment(profile, declared.modules, training=False)

    @dg.asset(key=TRANSFORM_CLUSTERS, code_version=version, group_name="experiments", deps=[keys.TRANSFORM_METRICS],
              pool=keys.DUCKDB_POOL, kinds={"duckdb"}, description=declared.description)
    def transform_clusters(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        iso, sil = metric_rows.transform_geometry_rows(conescope.warehouse)
        points, summary = transform_rows(iso, sil, profile.metrics)
        tables = {f"experiments.{t}": experiment_rows(records, t, version)
                  for t, records in zip(declared.tables, (points, summary), strict=True)}
        replaced = conescope.warehouse.replace_whole_tables(tables)
        context.log.info(f"transform_clusters: {len(points)} points, {len(summary)} correlations")
        return _result(tables, replaced, _headline(summary, "modality", "statistic"))

    return transform_clusters


def experiment_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    """The experiments the profile runs: cluster_training when its section names datasets,
    transform_clusters when the graph fits transforms."""
    built = []
    if profile.cluster_training.datasets:
        built.append(_cluster_training(profile, parts))
    if has_transforms(profile, parts):
        built.append(_transform_clusters(profile))
    return built
