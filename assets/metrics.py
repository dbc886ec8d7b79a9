"""metrics/<family>: metric rows in the warehouse tables of the storage contract, replaced per partition.

[model] (image only, ``lang`` null; never planned for text-only models): image_isotropy, image_clusters,
linear_probe.
[model x lang]: isotropy (text, joint), modality_gap, clip_loss, zero_shot, retrieval, clusters (text),
layers (text tower, per hidden layer). For a text-only model only the text rows (isotropy, clusters,
layers) are computed; a dataset without texts in a language contributes no rows to that partition.
[model], after every language: multilingual (``lang`` holds the compared language).
"""

from collections.abc import Callable

import dagster as dg
import numpy as np

from assets import keys
from assets.embeddings import cached_model, require_image_tower
from conescope import families
from conescope.embedding import text_layer_states
from conescope.languages import set_text_language
from conescope.profile import Profile
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.embedding_sets import (
    load_image_set,
    load_text_layers,
    load_text_set,
    manifest_pairs,
    manifest_text_labels,
)
from storage.parquet_store import read_provenance
from storage.warehouse import metric_rows

MODEL_LAYER = [keys.IMAGE_ISOTROPY, keys.IMAGE_CLUSTERS, keys.LINEAR_PROBE]
MODEL_LANG_LAYER = [keys.ISOTROPY, keys.MODALITY_GAP, keys.CLIP_LOSS, keys.ZERO_SHOT, keys.RETRIEVAL, keys.CLUSTERS,
                    keys.LAYERS]
SUMMARY_LAYER = [keys.MULTILINGUAL]


def _write(home: ConescopeHome, table: str, records: list[dict], where: dict, context) -> dg.MaterializeResult:
    for rec in records:
        rec.update({k: v for k, v in where.items() if k in ("model", "lang")})
    # Raw rows only: the rows of fitted transforms in the same table belong to metrics/transforms.
    replaced = home.warehouse.replace_rows(table, metric_rows(records, table), {**where, "transform": "none"})
    headline = {f"{r['dataset']}/{r['modality']}/{r['metric']}" + (f"/{r['layer']}" if "layer" in r else "")
                + (f"/{r['lang']}" if table == "metrics.multilingual" else ""): round(r["value"], 4)
                for r in records}
    context.log.info(f"{table}: {len(records)} rows written, {replaced} replaced")
    return dg.MaterializeResult(metadata={"table": table, "rows": len(records), "replaced": replaced,
                                          **dict(list(headline.items())[:60])})


def metric_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    image_datasets = [ds for ds in profile.image_datasets() if profile.image_models]
    text_datasets = [ds for ds in profile.datasets if profile.dataset_languages(ds)]
    s = profile.metrics
    image_deps = [keys.image_embeddings(ds) for ds in image_datasets]
    mapped_image_deps = [dg.AssetDep(keys.image_embeddings(ds), partition_mapping=parts.image_mapping)
                         for ds in image_datasets]
    text_deps = [keys.text_embeddings(ds) for ds in text_datasets]
    all_lang_deps = [dg.AssetDep(keys.text_embeddings(ds), partition_mapping=parts.image_mapping)
                     for ds in text_datasets]

    def model_asset(key: dg.AssetKey, table: str, description: str,
                    compute: Callable[[ConescopeHome, str], list[dict]], where: dict, deps,
                    image_layer: bool = True) -> dg.AssetsDefinition:
        @dg.asset(key=key, deps=deps, partitions_def=parts.model, group_name="metrics",
                  pool=keys.DUCKDB_POOL, kinds={"duckdb"}, description=description)
        def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
            model = context.partition_key
            if image_layer:
                require_image_tower(profile.models[model])
            return _write(conescope, table, compute(conescope, model), {"model": model, **where}, context)

        return _asset

    def model_lang_asset(key: dg.AssetKey, table: str, description: str,
                         compute: Callable[[ConescopeHome, str, str], list[dict]]) -> dg.AssetsDefinition:
        @dg.asset(key=key, deps=mapped_image_deps + text_deps, partitions_def=parts.model_lang,
                  group_name="metrics", pool=keys.DUCKDB_POOL, kinds={"duckdb"}, description=description)
        def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
            model, lang = split_key(context)
            return _write(conescope, table, compute(conescope, model, lang), {"model": model, "lang": lang}, context)

        return _asset

    def has_lang(ds: str, lang: str) -> bool:
        return lang in profile.dataset_languages(ds)

    def pairs(home: ConescopeHome, model: str, lang: str):
        """(image set, text set) of every dataset with images and texts in ``lang``; none for a
        text-only model (metrics that need images are skipped for it)."""
        if profile.models[model].text_only:
            return
        for ds in image_datasets:
            if has_lang(ds, lang):
                yield load_image_set(home.root, ds, model), load_text_set(home.root, ds, model, lang)

    def texts_of(home: ConescopeHome, model: str, lang: str):
        for ds in text_datasets:
            if has_lang(ds, lang):
                yield ds, load_text_set(home.root, ds, model, lang)

    datasets = image_datasets  # the image-only families below read these

    # --- [model] ---------------------------------------------------------------------------------
    def image_isotropy(home, model):
        return [r for ds in datasets
                for r in families.isotropy_rows(ds, "image", load_image_set(home.root, ds, model).emb, s)]

    def image_clusters(home, model):
        rows = []
        for ds in datasets:
            img = load_image_set(home.root, ds, model)
            rows += families.silhouette_rows(ds, "image", img.emb, img.labels, s)
        return rows

    def probe(home, model):
        return [r for ds in datasets for r in families.linear_probe_rows(load_image_set(home.root, ds, model), s)]

    # --- [model x lang] --------------------------------------------------------------------------
    def isotropy(home, model, lang):
        rows = []
        for ds, txt in texts_of(home, model, lang):
            rows += families.isotropy_rows(ds, "text", txt.emb, s)
        for img, txt in pairs(home, model, lang):
            rows += families.isotropy_rows(img.dataset, "joint", np.vstack([img.emb, txt.emb]), s)
        return rows

    def modality_gap(home, model, lang):
        return [r for img, txt in pairs(home, model, lang) for r in families.gap_rows(img, txt, s)]

    def clip_loss(home, model, lang):
        rows = []
        for img, txt in pairs(home, model, lang):
            prov = read_provenance(next(home.root.image_embeddings(img.dataset, model).glob("*.parquet")))
            rows += families.clip_loss_rows(img, txt, float(prov["logit_scale"]), prov.get("logit_bias"), s)
        return rows

    def zero_shot(home, model, lang):
        return [r for img, txt in pairs(home, model, lang) for r in families.zero_shot_rows(img, txt, s)]

    def retrieval(home, model, lang):
        return [r for img, txt in pairs(home, model, lang) for r in families.retrieval_rows(img, txt, s)]

    def text_clusters(home, model, lang):
        if profile.models[model].text_only:
            return [r for ds, txt in texts_of(home, model, lang)
                    for r in families.silhouette_rows(ds, "text", txt.emb, manifest_text_labels(home.root, txt), s)]
        return [r for img, txt in pairs(home, model, lang)
                for r in families.silhouette_rows(img.dataset, "text", txt.emb, families.caption_labels(img, txt), s)]

    def layer_metrics(home, model, lang):
        rows = []
        for ds, txt in texts_of(home, model, lang):
            if len(txt.texts) < 2:
                continue
            # Stored by the text embedding step (embedding.text_layers), else recomputed here.
            states = load_text_layers(home.root, ds, model, lang, txt.text_ids)
            if states is None:
                loaded = cached_model(profile.models[model], profile.embedding.device, profile.embedding.precision)
                set_text_language(loaded, lang)  # the model is shared across partitions: NLLB-CLIP needs this one's
                states = text_layer_states(loaded, txt.texts, profile.embedding.batch_size)
            rows += families.layer_rows(ds, states)
            pairs = manifest_pairs(home.root, ds)
            if pairs is not None:
                rows += families.sts_rows(ds, txt.text_ids, txt.emb, states, pairs)
        return rows

    # --- [model], every language -----------------------------------------------------------------
    def multilingual(home, model):
        rows = []
        for ds in text_datasets:
            langs = profile.dataset_languages(ds)
            if profile.reference_lang not in langs or len(langs) < 2:
                continue  # nothing to compare in this dataset
            texts = {lang: load_text_set(home.root, ds, model, lang) for lang in langs}
            rows += families.multilingual_rows(texts, profile.reference_lang, s)
        return rows

    return [
        model_asset(keys.IMAGE_ISOTROPY, "metrics.isotropy", "Isotropy of image embeddings (metrics.isotropy)",
                    image_isotropy, {"modality": "image"}, image_deps),
        model_asset(keys.IMAGE_CLUSTERS, "metrics.clusters", "Silhouette of image embeddings against labels",
                    image_clusters, {"modality": "image"}, image_deps),
        model_asset(keys.LINEAR_PROBE, "metrics.linear_probe",
                    "Linear-probe accuracy on image embeddings (train -> test split)", probe, {}, image_deps),
        model_lang_asset(keys.ISOTROPY, "metrics.isotropy", "Isotropy of text and joint embeddings", isotropy),
        model_lang_asset(keys.MODALITY_GAP, "metrics.modality_gap",
                         "Gap norm, modality separability, positive vs random pair cosines", modality_gap),
        model_lang_asset(keys.CLIP_LOSS, "metrics.clip_loss", "Symmetric CLIP loss of image-caption pairs",
                         clip_loss),
        model_lang_asset(keys.ZERO_SHOT, "metrics.zero_shot", "Zero-shot classification with class prompts",
                         zero_shot),
        model_lang_asset(keys.RETRIEVAL, "metrics.retrieval", "Image-text retrieval recall@k", retrieval),
        model_lang_asset(keys.CLUSTERS, "metrics.clusters", "Silhouette of text embeddings against labels",
                         text_clusters),
        model_lang_asset(keys.LAYERS, "metrics.layers", "Self-similarity of every hidden layer of the text tower",
                         layer_metrics),
        model_asset(keys.MULTILINGUAL, "metrics.multilingual",
                    "Distance ratios, cross-lingual recall and language separability (reads every language)",
                    multilingual, {}, all_lang_deps, image_layer=False),
    ]
