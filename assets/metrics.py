"""metrics/<family>: metric rows in the warehouse, replaced per partition.

- metrics/image_isotropy [model]: isotropy of image embeddings (``lang`` null).
- metrics/isotropy [model x lang]: isotropy of text embeddings and of the joint image + text set.
- metrics/modality_gap [model x lang]: the gap between image and text embeddings.
All three write the tables of the storage contract (``metrics.isotropy``, ``metrics.modality_gap``).
"""


import dagster as dg
import numpy as np

from assets import keys
from conescope.metrics.gap import gap_norm
from conescope.metrics.isotropy import isotropy_summary
from conescope.profile import Profile
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.parquet_store import read_embeddings
from storage.warehouse import metric_rows


def _rows(dataset: str, model: str, lang: str | None, modality: str, n: int, values: dict[str, float]) -> list[dict]:
    return [{"dataset": dataset, "model": model, "lang": lang, "modality": modality, "metric": metric,
             "value": value, "n": n, "eval_set": "all"} for metric, value in values.items()]


def _summary(rows: list[dict]) -> dict:
    return {f"{r['dataset']}/{r['modality']}/{r['metric']}": round(r["value"], 4) for r in rows}


def load_pair(home: ConescopeHome, ds: str, model: str, lang: str) -> tuple[np.ndarray, np.ndarray]:
    _, image = read_embeddings(home.root.image_embeddings(ds, model))
    _, text = read_embeddings(home.root.text_embeddings(ds, model, lang))
    return image, text


def metric_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    datasets = list(profile.datasets)
    image_deps = [dg.AssetDep(keys.image_embeddings(ds), partition_mapping=parts.image_mapping) for ds in datasets]
    text_deps = [keys.text_embeddings(ds) for ds in datasets]

    @dg.asset(key=keys.IMAGE_ISOTROPY, deps=[keys.image_embeddings(ds) for ds in datasets],
              partitions_def=parts.model, group_name="metrics", pool=keys.DUCKDB_POOL, kinds={"duckdb"},
              description="I1, I2, mean cosine and mean-vector norm of image embeddings (metrics.isotropy)")
    def image_isotropy(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model = context.partition_key
        rows = []
        for ds in datasets:
            _, image = read_embeddings(conescope.root.image_embeddings(ds, model))
            rows += _rows(ds, model, None, "image", len(image), isotropy_summary(image))
        replaced = conescope.warehouse.replace_rows("metrics.isotropy", metric_rows(rows),
                                                    {"model": model, "modality": "image"})
        return dg.MaterializeResult(metadata={"rows": len(rows), "replaced": replaced, **_summary(rows)})

    @dg.asset(key=keys.ISOTROPY, deps=image_deps + text_deps, partitions_def=parts.model_lang,
              group_name="metrics", pool=keys.DUCKDB_POOL, kinds={"duckdb"},
              description="I1, I2, mean cosine and mean-vector norm of text and joint embeddings (metrics.isotropy)")
    def isotropy(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        rows = []
        for ds in datasets:
            image, text = load_pair(conescope, ds, model, lang)
            rows += _rows(ds, model, lang, "text", len(text), isotropy_summary(text))
            joint = np.vstack([image, text])
            rows += _rows(ds, model, lang, "joint", len(joint), isotropy_summary(joint))
        replaced = conescope.warehouse.replace_rows("metrics.isotropy", metric_rows(rows),
                                                    {"model": model, "lang": lang})
        return dg.MaterializeResult(metadata={"rows": len(rows), "replaced": replaced, **_summary(rows)})

    @dg.asset(key=keys.MODALITY_GAP, deps=image_deps + text_deps, partitions_def=parts.model_lang,
              group_name="metrics", pool=keys.DUCKDB_POOL, kinds={"duckdb"},
              description="Norm of the modality gap vector (metrics.modality_gap)")
    def modality_gap(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        rows = []
        for ds in datasets:
            image, text = load_pair(conescope, ds, model, lang)
            rows += _rows(ds, model, lang, "joint", len(image) + len(text), {"gap_norm": gap_norm(image, text)})
        replaced = conescope.warehouse.replace_rows("metrics.modality_gap", metric_rows(rows),
                                                    {"model": model, "lang": lang})
        return dg.MaterializeResult(metadata={"rows": len(rows), "replaced": replaced, **_summary(rows)})

    return [image_isotropy, isotropy, modality_gap]
