"""embeddings/<ds>_image [model] and embeddings/<ds>_text [model x lang]: tower outputs to Parquet."""


import time
from datetime import UTC, datetime
from functools import lru_cache

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets import keys
from conescope.embedding import embed_images, embed_texts
from conescope.languages import set_text_language
from conescope.models import LoadedModel, load_model
from conescope.profile import ModelSpec, Profile
from conescope.provenance import code_version
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.parquet_store import (
    IMAGE_KEY_COLUMNS,
    TEXT_KEY_COLUMNS,
    read_manifest_table,
    write_embeddings,
)
from storage.warehouse import REJECT_COLUMNS, arrow_schema


@lru_cache(maxsize=2)
def cached_model(spec: ModelSpec, device: str) -> LoadedModel:
    # Runs executed in one process (the CLI, tests) reuse the model across steps and partitions.
    if spec.text_only:
        from conescope.text_models import load_text_model

        return load_text_model(spec.arch, spec.package, device)
    return load_model(spec.arch, spec.pretrained, spec.seed, spec.zero_bias, device)


def require_image_tower(spec: ModelSpec) -> None:
    """Image-layer partitions exist for every model (Dagster maps model x lang to model only along a
    shared dimension), but a text-only model's are never planned; materialized by hand they fail here."""
    if spec.text_only:
        raise ValueError(f"model {spec.name!r} is text-only ({spec.kind}): it has no image partitions; "
                         f"materialize its model x lang partitions (model_lang_job) instead")


def _provenance(loaded: LoadedModel, spec: ModelSpec, dataset: str, **extra) -> dict:
    return {**loaded.provenance, "model": spec.name, "dataset": dataset, "code_version": code_version(),
            "logit_scale": loaded.logit_scale, "logit_bias": loaded.logit_bias,
            "created_at": datetime.now(UTC).isoformat(), **extra}


def _image_asset(ds: str, profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    @dg.asset(key=keys.image_embeddings(ds), deps=[keys.dataset(ds)], partitions_def=parts.model,
              group_name="embeddings", pool=keys.DUCKDB_POOL, kinds={"pytorch", "parquet"},
              description=f"Image-tower embeddings of {ds} (raw, float32) per model")
    def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        spec = profile.models[context.partition_key]
        require_image_tower(spec)
        samples = read_manifest_table(conescope.root.dataset_dir(ds), "samples", ["sample_id", "image", "image_path"])
        ids = samples.column("sample_id").to_pylist()
        # encoded bytes, or the file of a sample ingested by reference (decoded batch by batch)
        images = [b if b is not None else p for b, p in zip(samples.column("image").to_pylist(),
                                                             samples.column("image_path").to_pylist(), strict=True)]
        loaded = cached_model(spec, profile.embedding.device)
        rejects: list[dict] = []

        def reject(i: int, reason: str) -> None:
            context.log.warning(f"{ds}: skipping sample {ids[i]}: {reason}")
            rejects.append({"dataset": ds, "model": spec.name, "stage": "embed_image", "sample_id": ids[i],
                            "reason": reason, "recorded_at": datetime.now(UTC), "code_version": code_version()})

        start = time.perf_counter()
        batches = (({"sample_id": [ids[i] for i in rows]}, emb)
                   for rows, emb in embed_images(loaded, images, profile.embedding.batch_size, reject))
        n = write_embeddings(conescope.root.image_embeddings(ds, spec.name), conescope.root.scratch,
                             IMAGE_KEY_COLUMNS, batches, _provenance(loaded, spec, ds, modality="image"))
        seconds = time.perf_counter() - start
        conescope.warehouse.replace_rows(
            "datasets.rejects", pa.Table.from_pylist(rejects, schema=arrow_schema(REJECT_COLUMNS)),
            {"dataset": ds, "model": spec.name, "stage": "embed_image"})
        conescope.warehouse.refresh_views(conescope.root.root, [ds])
        return dg.MaterializeResult(metadata={
            "rows": n, "rejected": len(rejects), "device": loaded.device, "images_per_s": round(n / seconds, 2),
            "logit_scale": loaded.logit_scale,
            "path": dg.MetadataValue.path(str(conescope.root.image_embeddings(ds, spec.name)))})

    return _asset


def _text_asset(ds: str, profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    @dg.asset(key=keys.text_embeddings(ds), deps=[keys.dataset(ds)], partitions_def=parts.model_lang,
              group_name="embeddings", pool=keys.DUCKDB_POOL, kinds={"pytorch", "parquet"},
              description=f"Text-tower embeddings of {ds} (captions or class prompts) per model and language")
    def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        spec = profile.models[model]
        texts = read_manifest_table(conescope.root.dataset_dir(ds), "texts")
        texts = texts.filter(pc.equal(texts.column("lang"), lang))
        if lang not in profile.dataset_languages(ds):
            # the dataset declares no texts in this language: the partition is empty by design
            declared = ", ".join(profile.datasets[ds].languages)
            context.log.info(f"{ds}: no {lang} texts (the dataset declares {declared})")
            return dg.MaterializeResult(metadata={"rows": 0, "skipped": f"{ds} has no texts in {lang}"})
        if texts.num_rows == 0:
            raise ValueError(f"dataset {ds!r} declares language {lang!r} but its manifest has no {lang} texts "
                             f"(see datasets.rejects and the source files); rematerialize datasets/{ds}")
        cols = {name: texts.column(name).to_pylist() for name, _ in TEXT_KEY_COLUMNS}
        loaded = cached_model(spec, profile.embedding.device)
        code = set_text_language(loaded, lang)  # NLLB-CLIP: the tokenizer's source-language token
        start = time.perf_counter()
        batches = (({name: [values[i] for i in rows] for name, values in cols.items()}, emb)
                   for rows, emb in embed_texts(loaded, cols["text"], profile.embedding.batch_size))
        target = conescope.root.text_embeddings(ds, model, lang)
        n = write_embeddings(target, conescope.root.scratch, TEXT_KEY_COLUMNS, batches,
                             _provenance(loaded, spec, ds, modality="text", lang=lang,
                                         **({"text_language_code": code} if code else {})))
        seconds = time.perf_counter() - start
        conescope.warehouse.refresh_views(conescope.root.root, [ds])
        return dg.MaterializeResult(metadata={
            "rows": n, "device": loaded.device, "texts_per_s": round(n / seconds, 2),
            "logit_scale": loaded.logit_scale,
            "path": dg.MetadataValue.path(str(target))})

    return _asset


def embedding_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    out = []
    for ds, spec in profile.datasets.items():
        if spec.has_images and profile.image_models:
            out.append(_image_asset(ds, profile, parts))
        if profile.dataset_languages(ds):
            out.append(_text_asset(ds, profile, parts))
    return out
