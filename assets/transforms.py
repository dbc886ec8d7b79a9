"""transforms/<kind> and metrics/transforms [image model x lang]: fitted transforms and what they do.

``transforms/<kind>`` (one per kind of the profile's ``transforms.kinds``, all fitted in one step):
every variant (k, lambda) fitted on every fit set of the protocols, stored as ``.npz`` with its
provenance under ``transforms/<kind>/model=<m>/lang=<l>/``. ``metrics/transforms``: the metric rows
of every stored transform on every eval set of its protocols, written into the family tables with
``transform``, ``fit_set`` and ``eval_set`` filled in (all tables in one transaction, rows with
``transform <> 'none'`` of the partition only, so the raw metric assets and this one never delete
each other's rows). Planning is ``conescope.protocols``, fitting and measuring ``conescope.protocol_eval``.
"""

import dagster as dg

from assets import keys
from conescope import code_versions, protocol_eval, protocols
from conescope.metric_families import FAMILIES, TRANSFORM_WRITTEN_TABLES
from conescope.profile import Profile
from conescope.provenance import params_sha256, rows_sha256
from conescope.sets import ImageSet, TextSet
from conescope.transforms import transform_from_dict
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.embedding_sets import load_image_set, load_text_set, logit_scale
from storage.transform_store import read_transforms, transform_file_name, write_transforms
from storage.warehouse import metric_rows


def _datasets(profile: Profile) -> list[str]:
    """Datasets some protocol names; transforms pair images with texts, so only those with images."""
    named = protocols.protocol_datasets(profile.transforms)
    return [ds for ds in profile.image_datasets() if ds in named]


def _load(profile: Profile, home: ConescopeHome, model: str, lang: str) -> dict[str, tuple[ImageSet, TextSet]]:
    """(image set, text set) per protocol dataset with texts in ``lang`` (the partitions are the image
    models' only)."""
    return {ds: (load_image_set(home.paths, ds, model), load_text_set(home.paths, ds, model, lang))
            for ds in _datasets(profile) if lang in profile.dataset_languages(ds)}


def _fit_asset(profile: Profile, parts: ProfilePartitions, deps: list) -> dg.AssetsDefinition:
    settings, version = profile.transforms, code_versions.fit_transforms(profile)
    specs = [dg.AssetSpec(keys.transform(kind), deps=deps, partitions_def=parts.image_model_lang, code_version=version,
                          group_name="transforms", kinds={"numpy"},
                          description=f"Fitted {kind} transforms (every variant x fit set), .npz with provenance")
             for kind in settings.kinds]

    @dg.multi_asset(name="fit_transforms", specs=specs, partitions_def=parts.image_model_lang)
    def fit_transforms(context: dg.AssetExecutionContext, conescope: ConescopeHome):
        model, lang = split_key(context)
        sets = _load(profile, conescope, model, lang)
        plan = protocols.plan(settings, sets)
        for reason in plan.skipped:
            context.log.warning(f"not evaluated: {reason}")
        for kind in settings.kinds:
            fitted, skipped = protocol_eval.fit_all(settings, kind, plan, sets)
            for reason in skipped:
                context.log.warning(f"{kind}: not fitted on {reason}")
            for t in fitted:
                t.provenance.update(model=model, lang=lang, profile=profile.name, code_version=version)
            directory = conescope.paths.transforms_dir(kind, model, lang)
            named = {transform_file_name(t.name, t.provenance["fit_set"]): t.to_dict() for t in fitted}
            files = write_transforms(directory, conescope.paths.scratch, named)
            params = params_sha256(named)[:16]  # the data version: what was fitted, not when
            yield dg.MaterializeResult(asset_key=keys.transform(kind), metadata={
                "path": dg.MetadataValue.path(str(directory)), "files": len(files), "params_sha256": params,
                "fit_sets": sorted({t.provenance["fit_set"] for t in fitted}), "skipped": skipped},
                data_version=dg.DataVersion(params))

    return fit_transforms


def _metrics_asset(profile: Profile, parts: ProfilePartitions, deps: list) -> dg.AssetsDefinition:
    settings = profile.transforms
    # the formulas of every table it writes: a metric module's edit restales these rows too
    modules = sorted({m for f in FAMILIES if f.table in TRANSFORM_WRITTEN_TABLES for m in f.modules})
    version = code_versions.transform_metrics(profile, modules)

    @dg.asset(key=keys.TRANSFORM_METRICS, deps=[*(keys.transform(k) for k in settings.kinds), *deps],
              code_version=version,
              partitions_def=parts.image_model_lang, group_name="metrics", pool=keys.DUCKDB_POOL, kinds={"duckdb"},
              description="Metric rows of every fitted transform x protocol (transform, fit_set, eval_set filled "
                          f"in) in metrics.{', '.join(TRANSFORM_WRITTEN_TABLES)}")
    def transform_metrics(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        sets = _load(profile, conescope, model, lang)
        plan = protocols.plan(settings, sets)
        stored = [transform_from_dict(d) for kind in settings.kinds
                  for d in read_transforms(conescope.paths.transforms_dir(kind, model, lang)).values()]
        scales = {ds: logit_scale(conescope.paths, ds, model) for ds in sets}
        rows = protocol_eval.evaluate_all(stored, plan, sets, profile.metrics, scales)
        tables = {}
        for family in TRANSFORM_WRITTEN_TABLES:
            records = [{**rec, "model": model, "lang": lang} for rec in rows.get(family, [])]
            tables[f"metrics.{family}"] = metric_rows(records, f"metrics.{family}", version)
        replaced = conescope.warehouse.replace_tables(tables, {"model": model, "lang": lang}, {"transform": "none"})
        context.log.info(f"transform rows: {({t: r.num_rows for t, r in tables.items()})}, replaced {replaced}")
        content = rows_sha256(*(tables[t] for t in sorted(tables)))[:16]  # the data version
        return dg.MaterializeResult(metadata={
            "rows": sum(r.num_rows for r in tables.values()), "rows_sha256": content,
            **{f"rows/{t}": r.num_rows for t, r in tables.items()}, "replaced": sum(replaced.values()),
            "transforms": len(stored), "eval_sets": sorted({ev.name for ev in plan.evals}),
            "skipped": plan.skipped}, data_version=dg.DataVersion(content))

    return transform_metrics


def has_transforms(profile: Profile, parts: ProfilePartitions) -> bool:
    """Whether the graph fits transforms: some kind, some protocol dataset with images, and some model
    with an image tower (transforms pair image embeddings with texts)."""
    return bool(profile.transforms.kinds and _datasets(profile) and parts.image_model is not None)


def transform_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    if not has_transforms(profile, parts):
        return []
    datasets = _datasets(profile)
    deps = [*(dg.AssetDep(keys.image_embeddings(ds), partition_mapping=parts.image_to_model_lang)
              for ds in datasets),
            *(dg.AssetDep(keys.text_embeddings(ds), partition_mapping=parts.same_image_key) for ds in datasets)]
    return [_fit_asset(profile, parts, deps), _metrics_asset(profile, parts, deps)]
