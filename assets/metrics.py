"""metrics/<family>: metric rows in the warehouse tables of the storage contract, replaced per partition.

Each asset is declared in ``conescope.metric_families`` (its table, partitioning and the rows it owns)
and computed by ``conescope.partition_metrics`` (one ``MetricFamily`` per asset); an asset hands it the
stored embeddings of its model and replaces the rows it owns with what comes back.

[image_model] (image only, ``lang`` null; no partition for a text-only model, and not built when
the profile has no image model): image_isotropy, image_clusters, linear_probe. [model x lang]:
isotropy (text, joint), clusters (text), layers (text tower, per stored hidden layer). [image model x
lang] (image-caption pairs; no partition for a text-only model): modality_gap, clip_loss, zero_shot,
retrieval. [model], after every language: multilingual (``lang`` holds the compared language).
"""

import dagster as dg

from assets import keys
from assets.writes import write_metric_rows
from conescope import code_versions
from conescope.metric_families import MODEL, MODEL_LANG, PAIRED, SUMMARY
from conescope.partition_metrics import FAMILIES, MetricFamily, image_datasets, text_datasets
from conescope.profile import Profile
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.embedding_sets import StoredEmbeddings

MODEL_LAYER = [keys.metric(f.name) for f in FAMILIES if f.scope == MODEL]
MODEL_LANG_LAYER = [keys.metric(f.name) for f in FAMILIES if f.scope == MODEL_LANG]
PAIRED_LAYER = [keys.metric(f.name) for f in FAMILIES if f.scope == PAIRED]
SUMMARY_LAYER = [keys.metric(f.name) for f in FAMILIES if f.scope == SUMMARY]


def _deps(family: MetricFamily, profile: Profile, parts: ProfilePartitions) -> list:
    """The embeddings a family reads: its model's images; the images of its model and the texts of its
    partition; or the texts of every language of its model."""
    images, texts = image_datasets(profile), text_datasets(profile)
    if family.scope == MODEL:
        return [keys.image_embeddings(ds) for ds in images]
    if family.scope == MODEL_LANG:
        return [*(dg.AssetDep(keys.image_embeddings(ds), partition_mapping=parts.image_to_model_lang)
                  for ds in images), *(keys.text_embeddings(ds) for ds in texts)]
    if family.scope == PAIRED:
        return [*(dg.AssetDep(keys.image_embeddings(ds), partition_mapping=parts.image_to_model_lang)
                  for ds in images),
                *(dg.AssetDep(keys.text_embeddings(ds), partition_mapping=parts.same_image_key) for ds in texts)]
    return [dg.AssetDep(keys.text_embeddings(ds), partition_mapping=parts.model_lang_to_model) for ds in texts]


def _partitions_def(family: MetricFamily, parts: ProfilePartitions) -> dg.StaticPartitionsDefinition | None:
    return {MODEL: parts.image_model, MODEL_LANG: parts.model_lang, PAIRED: parts.image_model_lang,
            SUMMARY: parts.model}[family.scope]


def _metric_asset(family: MetricFamily, profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    version = code_versions.metric_family(profile, family.modules)

    @dg.asset(key=keys.metric(family.name), deps=_deps(family, profile, parts), code_version=version,
              partitions_def=_partitions_def(family, parts),
              group_name="metrics", pool=keys.DUCKDB_POOL, kinds={"duckdb"}, description=family.description)
    def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        if family.scope in (MODEL_LANG, PAIRED):
            model, lang = split_key(context)
        else:
            model, lang = context.partition_key, None
        records = family.rows(profile, model, StoredEmbeddings(conescope.paths, model), lang)
        return write_metric_rows(conescope, family.table, records, family.asset.owned_rows(model, lang), context.log,
                                 version)

    return _asset


def metric_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    """One asset per family; the image families only when some model has an image tower."""
    return [_metric_asset(family, profile, parts) for family in FAMILIES
            if _partitions_def(family, parts) is not None]
