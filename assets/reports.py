"""reports/partition_report [model x lang]: the HTML report of one partition, linked from metadata."""


import dagster as dg
import numpy as np

from assets import keys
from assets.metrics import MODEL_LANG_LAYER, MODEL_LAYER
from conescope.profile import Profile
from conescope.provenance import code_version
from conescope.report import DatasetSection, render_partition_report
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.embedding_sets import load_image_set, load_text_set
from storage.parquet_store import atomic_directory, read_provenance

_ROWS_SQL = """
SELECT family, dataset, modality, metric, layer, value, ci_low, ci_high, n FROM metrics.all
WHERE model = ? AND (lang = ? OR (lang IS NULL AND family <> 'multilingual')) AND transform = 'none'
ORDER BY dataset, family, modality, metric, layer
"""


def report_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    datasets = [ds for ds in profile.datasets if profile.dataset_languages(ds)]

    @dg.asset(key=keys.PARTITION_REPORT, partitions_def=parts.model_lang, group_name="reports",
              deps=[*MODEL_LANG_LAYER, *(dg.AssetDep(k, partition_mapping=parts.image_mapping) for k in MODEL_LAYER)],
              pool=keys.DUCKDB_POOL, kinds={"html"},
              description="HTML report: 2-D SVD projection, singular-value spectrum and metric tables")
    def partition_report(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        with conescope.warehouse.connect(read_only=True) as con:
            cursor = con.execute(_ROWS_SQL, [model, lang])
            names = [col[0] for col in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        sections = []
        text_only = profile.models[model].text_only
        for ds in datasets:
            if lang not in profile.dataset_languages(ds):
                continue
            text = load_text_set(conescope.root, ds, model, lang).emb
            with_images = not text_only and profile.datasets[ds].has_images
            image = load_image_set(conescope.root, ds, model).emb if with_images else np.empty((0, text.shape[1]))
            sections.append(DatasetSection(ds, image, text, [r for r in rows if r["dataset"] == ds]))
        first = next((s.dataset for s in sections), None)
        emb_prov = {} if first is None else read_provenance(
            next(conescope.root.text_embeddings(first, model, lang).glob("*.parquet")))
        provenance = {"model": model, "lang": lang, "profile": profile.name, "code_version": code_version(),
                      **{k: emb_prov[k] for k in ("arch", "pretrained", "seed", "zero_bias") if k in emb_prov}}
        page = render_partition_report(model, lang, sections, provenance, profile.report.max_points, profile.seed)
        target = conescope.root.report_dir(model, lang)
        with atomic_directory(target, conescope.root.scratch) as staging:
            (staging / "index.html").write_text(page, encoding="utf-8")
        index = target / "index.html"
        headline = {f"{r['dataset']}/{r['modality']}/{r['metric']}": round(r["value"], 4)
                    for r in rows if r["metric"] in ("i1", "gap_norm")}
        preview = "\n".join(f"| {k} | {v} |" for k, v in headline.items())
        return dg.MaterializeResult(metadata={
            "report": dg.MetadataValue.url(index.as_uri()),
            "path": dg.MetadataValue.path(str(index)),
            "preview": dg.MetadataValue.md(f"| metric | value |\n|---|---|\n{preview}"),
        })

    return [partition_report]
