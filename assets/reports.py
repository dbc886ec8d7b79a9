"""reports/*: HTML reports under the data root, linked and previewed in the asset metadata.

- reports/partition_report [model x lang]: the cone and the gap of one partition;
- reports/multilingual_report [model], after every language: parallel captions across languages;
- reports/comparison_report and reports/paper_report [unpartitioned], after every model: all models
  side by side, and Tables 1-7 of Tyshchuk et al. beside the published numbers;
- reports/isotropy_clusters_report [unpartitioned], after every model, when an experiment is built
  (assets/experiments.py): Mickus et al.'s training trajectories and the cross-transform view.
"""


import hashlib
from collections import ChainMap
from functools import lru_cache
from pathlib import Path

import dagster as dg

from assets import keys
from assets.experiments import CLUSTER_TRAINING, TRANSFORM_CLUSTERS, experiment_assets
from assets.metrics import MODEL_LANG_LAYER, MODEL_LAYER, PAIRED_LAYER, SUMMARY_LAYER
from assets.transforms import has_transforms
from conescope import code_versions
from conescope.partition_metrics import text_datasets
from conescope.profile import Profile, ReportSettings
from conescope.provenance import git_commit
from conescope.reports.cache import ArrayCache
from conescope.reports.comparison import render_comparison_report
from conescope.reports.isotropy_clusters import render_isotropy_clusters_report
from conescope.reports.multilingual import render_multilingual_report
from conescope.reports.paper import render_paper_report
from conescope.reports.partition import render_partition_report
from conescope.reports.report_data import DatasetData
from conescope.reports.thumbs import thumbnails
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage import metric_rows
from storage.embedding_sets import load_image_set, load_text_set
from storage.parquet_store import atomic_directory, read_manifest_table, read_provenance
from storage.report_links import report_url

MULTILINGUAL_REPORT = dg.AssetKey(["reports", "multilingual_report"])
COMPARISON_REPORT = dg.AssetKey(["reports", "comparison_report"])
PAPER_REPORT = dg.AssetKey(["reports", "paper_report"])
ISOTROPY_CLUSTERS_REPORT = dg.AssetKey(["reports", "isotropy_clusters_report"])
# unpartitioned, after every model's summary
FINAL_LAYER = [COMPARISON_REPORT, PAPER_REPORT, ISOTROPY_CLUSTERS_REPORT]
SUMMARY_REPORTS = [MULTILINGUAL_REPORT]  # [model], after every language


def manifest_view(home: ConescopeHome, dataset: str) -> tuple[dict[str, str], dict[str, str]]:
    """(sample_id -> label name, thumbnail key -> data URI) of a dataset's manifest; images are the
    manifest's bytes, or the file at ``image_path`` for sources stored by path."""
    path = home.paths.dataset_dir(dataset) / "samples.parquet"
    names, thumbs = _manifest_view(str(path), path.stat().st_mtime_ns if path.exists() else 0, dataset)
    return dict(names), thumbs  # a read-only mapping that decodes a thumbnail when a report asks for it


@lru_cache(maxsize=4)
def _manifest_view(path: str, mtime_ns: int, dataset: str) -> tuple[dict[str, str], dict[str, str]]:
    # Every language of a model, and the comparison report, show the same thumbnails: a process that
    # runs several report steps (the CLI) decodes each manifest once while the file is unchanged.
    samples = read_manifest_table(Path(path).parent, "samples")
    ids = [str(s) for s in samples.column("sample_id").to_pylist()]
    names = dict(zip(ids, [n or "" for n in samples.column("label_name").to_pylist()], strict=True))
    images = samples.column("image").to_pylist() if "image" in samples.column_names else [None] * len(ids)
    if "image_path" in samples.column_names:
        images = [b if b else path for b, path in zip(images, samples.column("image_path").to_pylist(), strict=True)]
    return names, thumbnails(ids, images, dataset)


def report_settings(profile: Profile) -> ReportSettings:
    return ReportSettings(max_points=profile.report.max_points, heatmap_pairs=profile.report.heatmap_pairs,
                          clusters=profile.report.clusters, seed=profile.seed)


def write_page(home: ConescopeHome, target: Path, page: str) -> Path:
    with atomic_directory(target, home.paths.scratch) as staging:
        (staging / "index.html").write_text(page, encoding="utf-8")
    return target / "index.html"


def report_metadata(index: Path, url: str, preview_png: str | None, headline: dict[str, float], title: str) -> dict:
    """The ``report`` link and the preview's: ``url``, the page over http (``conescope dev`` serves the
    reports: the UI turns a ``file://`` link into a dead one, and a browser refuses it from an http page);
    ``path``: the file."""
    lines = [f"**{title}**: [open the report]({url}) ({index.stat().st_size / 1024:.0f} KiB)", ""]
    if headline:
        lines += ["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in list(headline.items())[:24]), ""]
    if preview_png:
        lines.append(f"![preview]({preview_png})")
    return {
        "report": dg.MetadataValue.url(url),
        "path": dg.MetadataValue.path(str(index)),
        "size_kib": round(index.stat().st_size / 1024, 1),
        "preview": dg.MetadataValue.md("\n".join(lines)),
    }


def report_result(home: ConescopeHome, index: Path, report, title: str, version: str,
                  **extra) -> dg.MaterializeResult:
    """Metadata with the preview and the git commit that rendered the page, and the data version: the
    hash of the page without its code version (``version``, which the page records). Rendering is
    deterministic (seeded samples and layouts, SVG ids salted, no dates, no git commit, which changes
    with every edit anywhere in the work tree), so a page rendered again from the same inputs, even
    by edited report code, leaves its readers fresh when it says the same; the links in the metadata
    (``CONESCOPE_REPORTS_URL``) are not part of it."""
    metadata = {**report_metadata(index, report_url(home.paths, index), report.preview_png, report.headline, title),
                "git_commit": git_commit(),
                **extra}
    return dg.MaterializeResult(metadata=metadata,
                                data_version=dg.DataVersion(page_version(report.html, version)))


def page_version(html: str, version: str) -> str:
    """The data version of a rendered page: its SHA-256 without the code version it records."""
    return hashlib.sha256(html.replace(version, "").encode()).hexdigest()[:16]


def _versions(version: str) -> dict[str, str]:
    """What the page records of the code that rendered it: the report's code version (its modules'
    source); the git commit is in the asset's metadata (``report_result``)."""
    return {"code_version": version}


def _partition_report(profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    datasets, image_datasets = text_datasets(profile), set(profile.image_datasets())
    transform_deps = [keys.TRANSFORM_METRICS] if has_transforms(profile, parts) else []  # the gap-shift sweep
    # the image metric rows of its model and the pair rows of its partition (none for a text-only model:
    # the mappings give it no image parent)
    image_deps = [] if parts.image_model is None else \
        [*(dg.AssetDep(k, partition_mapping=parts.image_to_model_lang) for k in MODEL_LAYER),
         *(dg.AssetDep(k, partition_mapping=parts.same_image_key) for k in [*PAIRED_LAYER, *transform_deps])]
    version = code_versions.report(profile, "conescope.reports.partition")

    @dg.asset(key=keys.PARTITION_REPORT, partitions_def=parts.model_lang, group_name="reports", code_version=version,
              deps=[*MODEL_LANG_LAYER, *image_deps],
              pool=keys.DUCKDB_POOL, kinds={"html"},
              description="HTML report: SVD projections raw/centered/whitened, spectrum, pair-cosine histograms per "
                          "transform, similarity heatmaps, t-SNE maps, gap-shift landscape, layers, metric tables")
    def partition_report(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        rows = metric_rows.partition_rows(conescope.warehouse, model, lang)
        sections = []
        # a text-only model, or a dataset without images, gets the text-only figures of its section
        with_images = profile.models[model].has_image_tower
        for ds in datasets:
            if lang not in profile.dataset_languages(ds):
                continue
            names, thumbs = manifest_view(conescope, ds) if ds in image_datasets else ({}, {})
            image = load_image_set(conescope.paths, ds, model) if with_images and ds in image_datasets else None
            sections.append(DatasetData(image, load_text_set(conescope.paths, ds, model, lang), names, thumbs,
                                        [r for r in rows if r["dataset"] == ds]))
        emb_prov = read_provenance(next(conescope.paths.text_embeddings(sections[0].name, model, lang).glob(
            "*.parquet"))) if sections else {}
        provenance = {"model": model, "lang": lang, "profile": profile.name, **_versions(version),
                      **profile.models[model].describe(emb_prov)}
        cache = ArrayCache(conescope.paths.report_cache)
        report = render_partition_report(model, lang, sections, provenance, report_settings(profile), cache)
        index = write_page(conescope, conescope.paths.report_dir(model, lang), report.html)
        context.log.info(f"report written: {index} (cache: {cache.hits} hits, {cache.misses} computed)")
        return report_result(conescope, index, report, f"{model} / {lang}", version, cache_hits=cache.hits,
                             cache_computed=cache.misses)

    return partition_report


def _multilingual_report(profile: Profile, parts: ProfilePartitions) -> dg.AssetsDefinition:
    datasets, image_datasets = text_datasets(profile), set(profile.image_datasets())
    version = code_versions.report(profile, "conescope.reports.multilingual")

    @dg.asset(key=MULTILINGUAL_REPORT, partitions_def=parts.model, group_name="reports", code_version=version,
              deps=[*SUMMARY_LAYER, *(dg.AssetDep(keys.text_embeddings(ds), partition_mapping=parts.model_lang_to_model)
                                      for ds in datasets)],
              pool=keys.DUCKDB_POOL, kinds={"html"},
              description="HTML report per model: parallel captions of every language in one t-SNE map, distance "
                          "ratios and cross-lingual recall (metrics.multilingual)")
    def multilingual_report(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model = context.partition_key
        rows = metric_rows.summary_rows(conescope.warehouse, model)
        texts, thumb_sources = {}, []
        for ds in datasets:
            texts[ds] = {lang: load_text_set(conescope.paths, ds, model, lang)
                         for lang in profile.dataset_languages(ds)}
            if ds in image_datasets:
                thumb_sources.append(manifest_view(conescope, ds)[1])
        cache = ArrayCache(conescope.paths.report_cache)
        provenance = {"model": model, "profile": profile.name, "reference_lang": profile.reference_lang,
                      "languages": ", ".join(profile.languages), **_versions(version)}
        settings = report_settings(profile)
        report = render_multilingual_report(model, texts, profile.reference_lang, rows, ChainMap(*thumb_sources),
                                            provenance,
                                            settings.max_points, settings.seed, cache)
        index = write_page(conescope, conescope.paths.multilingual_report_dir(model), report.html)
        return report_result(conescope, index, report, f"{model}: languages", version, cache_hits=cache.hits,
                             cache_computed=cache.misses)

    return multilingual_report


def _comparison_report(profile: Profile) -> dg.AssetsDefinition:
    version = code_versions.report(profile, "conescope.reports.comparison", models=True)

    @dg.asset(key=COMPARISON_REPORT, group_name="reports", deps=[keys.PARTITION_REPORT, *SUMMARY_LAYER],
              code_version=version,
              pool=keys.DUCKDB_POOL, kinds={"html"},
              description="HTML report: every model side by side (SVD projections, headline metrics, all raw metrics)")
    def comparison_report(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        models, ref = list(profile.models), profile.reference_lang
        rows = metric_rows.raw_rows(conescope.warehouse)
        embeddings = {}
        for ds in sorted(set(profile.image_datasets()) & set(text_datasets(profile))):
            if ref not in profile.dataset_languages(ds):
                continue
            names, thumbs = manifest_view(conescope, ds)
            for model in profile.image_models:  # the figures are image-text projections
                try:
                    embeddings[(ds, model)] = DatasetData(load_image_set(conescope.paths, ds, model),
                                                          load_text_set(conescope.paths, ds, model, ref), names,
                                                          thumbs)
                except FileNotFoundError as exc:  # a model not materialized yet: shown without its figure
                    context.log.warning(f"comparison report: {exc}")
        links = {(m, lang): f"../{m}/{lang}/index.html" for m in models for lang in profile.languages
                 if (conescope.paths.report_dir(m, lang) / "index.html").is_file()}
        provenance = {"profile": profile.name, "models": ", ".join(models), "reference_lang": ref,
                      **_versions(version)}
        settings = report_settings(profile)
        report = render_comparison_report(models, list(profile.languages), ref, rows, embeddings, links, provenance,
                                          settings.max_points, settings.seed)
        index = write_page(conescope, conescope.paths.summary_report_dir("comparison"), report.html)
        return report_result(conescope, index, report, "model comparison", version)

    return comparison_report


def _paper_report(profile: Profile) -> dg.AssetsDefinition:
    version = code_versions.report(profile, "conescope.reports.paper", models=True)

    @dg.asset(key=PAPER_REPORT, group_name="reports", deps=[keys.PARTITION_REPORT, *SUMMARY_LAYER],
              code_version=version,
              pool=keys.DUCKDB_POOL, kinds={"html"},
              description="HTML report: Tables 1-7 of Tyshchuk et al. 2023 from the warehouse, beside the published "
                          "numbers, with the difference")
    def paper_report(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        rows = metric_rows.all_rows(conescope.warehouse)
        models = {name: m.paper_info() for name, m in profile.models.items()}
        kinds = {name: d.kind for name, d in profile.datasets.items()}
        provenance = {"profile": profile.name, **_versions(version)}
        report = render_paper_report(rows, models, kinds, profile.reference_lang, provenance)
        index = write_page(conescope, conescope.paths.summary_report_dir("paper"), report.html)
        return report_result(conescope, index, report, "paper reproduction", version)

    return paper_report


def _isotropy_clusters_report(profile: Profile, experiments: list[dg.AssetKey]) -> dg.AssetsDefinition:
    version = code_versions.report(profile, "conescope.reports.isotropy_clusters")

    @dg.asset(key=ISOTROPY_CLUSTERS_REPORT, group_name="reports", deps=experiments, code_version=version,
              pool=keys.DUCKDB_POOL, kinds={"html"},
              description="HTML report: IsoScore against silhouette while embeddings train under a linear head "
                          "(Mickus et al. 2024, Figures 2-3), and across the fitted transforms")
    def isotropy_clusters_report(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        read = {t: metric_rows.experiment_table(conescope.warehouse, t) if key in experiments else []
                for key, tables in ((CLUSTER_TRAINING, ("cluster_training", "cluster_training_summary")),
                                    (TRANSFORM_CLUSTERS, ("transform_clusters", "transform_clusters_summary")))
                for t in tables}
        provenance = {"profile": profile.name, "cluster_training": ", ".join(profile.cluster_training.datasets)
                      or "none", **_versions(version)}
        report = render_isotropy_clusters_report(read["cluster_training"], read["cluster_training_summary"],
                                                 read["transform_clusters"], read["transform_clusters_summary"],
                                                 provenance)
        index = write_page(conescope, conescope.paths.summary_report_dir("isotropy_clusters"), report.html)
        return report_result(conescope, index, report, "isotropy against clusters", version)

    return isotropy_clusters_report


def report_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    experiments = [key for a in experiment_assets(profile, parts) for key in a.keys]
    return [_partition_report(profile, parts), _multilingual_report(profile, parts), _comparison_report(profile),
            _paper_report(profile), *([_isotropy_clusters_report(profile, experiments)] if experiments else [])]
