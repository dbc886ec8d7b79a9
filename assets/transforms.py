"""transforms/<kind> and metrics/transforms [model x lang]: fitted transforms and what they do.

``transforms/<kind>`` (one per kind of the profile's ``transforms.kinds``, all fitted in one step):
every variant (k, lambda) fitted on every fit set of the protocols, stored as ``.npz`` with its
provenance under ``transforms/<kind>/model=<m>/lang=<l>/``. ``metrics/transforms``: the metric rows
of every stored transform on every eval set of its protocols, written into the family tables with
``transform``, ``fit_set`` and ``eval_set`` filled in (all tables in one transaction, rows with
``transform <> 'none'`` of the partition only, so the raw metric assets and this one never delete
each other's rows).
"""

import dagster as dg

from assets import keys
from conescope import protocols
from conescope.profile import Profile
from conescope.transforms import transform_from_dict
from pipelines.partitions import ProfilePartitions, split_key
from pipelines.resources import ConescopeHome
from storage.embedding_sets import load_image_set, load_text_set
from storage.parquet_store import read_provenance
from storage.transform_store import read_transforms, transform_file_name, write_transforms
from storage.warehouse import metric_rows

TABLES = ("isotropy", "modality_gap", "clip_loss", "zero_shot", "retrieval", "linear_probe")


def _datasets(profile: Profile) -> list[str]:
    """Datasets some protocol names; transforms pair images with texts, so only those with images."""
    ts = profile.transforms
    used = {*ts.in_domain, *ts.class_disjoint, *(d for pair in ts.cross_dataset for d in pair)}
    return [ds for ds in profile.image_datasets() if ds in used]


def transform_assets(profile: Profile, parts: ProfilePartitions) -> list[dg.AssetsDefinition]:
    ts = profile.transforms
    datasets = _datasets(profile)
    if not ts.kinds or not datasets:
        return []
    emb_deps = [*(dg.AssetDep(keys.image_embeddings(ds), partition_mapping=parts.image_mapping) for ds in datasets),
                *(keys.text_embeddings(ds) for ds in datasets)]

    def load(home: ConescopeHome, model: str, lang: str):
        """(image set, text set) per dataset with texts in ``lang``; none for a text-only model, whose
        partitions then store no transforms and write no rows (protocols.plan skips what is missing)."""
        if profile.models[model].text_only:
            return {}
        return {ds: (load_image_set(home.root, ds, model), load_text_set(home.root, ds, model, lang))
                for ds in datasets if lang in profile.dataset_languages(ds)}

    specs = [dg.AssetSpec(keys.transform(kind), deps=emb_deps, partitions_def=parts.model_lang,
                          group_name="transforms", kinds={"numpy"},
                          description=f"Fitted {kind} transforms (every variant x fit set), .npz with provenance")
             for kind in ts.kinds]

    @dg.multi_asset(name="fit_transforms", specs=specs, partitions_def=parts.model_lang)
    def fit_transforms(context: dg.AssetExecutionContext, conescope: ConescopeHome):
        model, lang = split_key(context)
        sets = load(conescope, model, lang)
        plan = protocols.plan(ts, sets)
        if profile.models[model].text_only:
            context.log.info(f"{model} is text-only: transforms pair images with texts, none are fitted")
        for reason in [] if profile.models[model].text_only else plan.skipped:
            context.log.warning(f"not evaluated: {reason}")
        for kind in ts.kinds:
            fitted, skipped = protocols.fit_all(ts, kind, plan, sets)
            for reason in skipped:
                context.log.warning(f"{kind}: not fitted on {reason}")
            for t in fitted:
                t.provenance.update(model=model, lang=lang, profile=profile.name)
            files = write_transforms(conescope.root.transforms_dir(kind, model, lang), conescope.root.scratch,
                                     {transform_file_name(t.name, t.provenance["fit_set"]): t.to_dict()
                                      for t in fitted})
            yield dg.MaterializeResult(asset_key=keys.transform(kind), metadata={
                "path": dg.MetadataValue.path(str(conescope.root.transforms_dir(kind, model, lang))),
                "files": len(files), "fit_sets": sorted({t.provenance["fit_set"] for t in fitted}),
                "skipped": skipped})

    @dg.asset(key=keys.TRANSFORM_METRICS, deps=[*(keys.transform(k) for k in ts.kinds), *emb_deps],
              partitions_def=parts.model_lang, group_name="metrics", pool=keys.DUCKDB_POOL, kinds={"duckdb"},
              description="Metric rows of every fitted transform x protocol (transform, fit_set, eval_set filled "
                          "in) in metrics.isotropy, modality_gap, clip_loss, zero_shot, retrieval")
    def transform_metrics(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        model, lang = split_key(context)
        sets = load(conescope, model, lang)
        plan = protocols.plan(ts, sets)
        stored = [transform_from_dict(d) for kind in ts.kinds
                  for d in read_transforms(conescope.root.transforms_dir(kind, model, lang)).values()]
        scales = {}
        for ds in sets:
            prov = read_provenance(next(conescope.root.image_embeddings(ds, model).glob("*.parquet")))
            scales[ds] = (float(prov["logit_scale"]), prov.get("logit_bias"))
        rows = protocols.evaluate_all(stored, plan, sets, profile.metrics, scales)
        tables = {}
        for family in TABLES:
            records = rows.get(family, [])
            for rec in records:
                rec.update(model=model, lang=lang)
            tables[f"metrics.{family}"] = metric_rows(records, f"metrics.{family}")
        replaced = conescope.warehouse.replace_tables(tables, {"model": model, "lang": lang}, {"transform": "none"})
        context.log.info(f"transform rows: {({t: r.num_rows for t, r in tables.items()})}, replaced {replaced}")
        return dg.MaterializeResult(metadata={
            "rows": sum(r.num_rows for r in tables.values()),
            **{f"rows/{t}": r.num_rows for t, r in tables.items()}, "replaced": sum(replaced.values()),
            "transforms": len(stored), "eval_sets": sorted({ev.name for ev in plan.evals}),
            "skipped": plan.skipped})

    return [fit_transforms, transform_metrics]
