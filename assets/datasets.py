"""datasets/<ds>: build each profile dataset into its normalized Parquet manifest [unpartitioned].

Generated datasets are rendered; real sources are fetched into ``raw/<ds>/`` when absent (offline:
an immediate error saying what to fetch and where) and read by their ingest reader. Rejected samples
go to ``datasets.rejects`` (stage ``ingest``) before the reject fraction is checked, so a failed run
still says what was wrong; the previous manifest stays in place until a new one is complete.
"""


import dagster as dg

from assets import keys
from assets.writes import write_rejects
from conescope import code_versions
from conescope.datasets import build_dataset
from conescope.profile import DatasetSpec, Profile
from conescope.provenance import git_commit, table_sha256
from pipelines.resources import ConescopeHome
from storage.parquet_store import write_manifest


def _ingest(spec: DatasetSpec, languages: tuple[str, ...], conescope: ConescopeHome, context, version: str) -> tuple:
    from conescope.download import ensure_sources
    from conescope.ingest import ingest

    raw_dir = conescope.paths.raw_dir(spec.name)
    ensure_sources(spec.name, list(spec.download), raw_dir)
    result = ingest(spec, raw_dir, languages)
    write_rejects(conescope, spec.name, None, "ingest", [(r.sample_id, r.reason) for r in result.rejects], version)
    for r in result.rejects[:20]:
        context.log.warning(f"{spec.name}: rejected {r.sample_id}: {r.reason}")
    result.check_rejects(spec.name, spec.max_reject_fraction)
    missing = [lang for lang in languages if lang not in result.languages]
    if missing:
        context.log.warning(f"{spec.name}: no texts in {', '.join(missing)}; those text partitions stay empty")
    info = {**result.info, "languages_found": list(result.languages)}
    return result.manifest, result.tables, len(result.rejects), info


def _dataset_asset(spec: DatasetSpec, languages: tuple[str, ...], profile_name: str,
                   version: str) -> dg.AssetsDefinition:
    @dg.asset(key=keys.dataset(spec.name), group_name="datasets", pool=keys.DUCKDB_POOL, kinds={"parquet"},
              code_version=version,
              description=f"{spec.kind} dataset {spec.name!r} as a normalized manifest (samples + texts)")
    def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        extra_tables, rejected, info = {}, 0, {}
        if spec.is_source:
            manifest, extra_tables, rejected, info = _ingest(spec, languages, conescope, context, version)
        else:
            manifest = build_dataset(spec.kind, spec.name, spec.n, spec.seed, spec.image_size, languages,
                                     getattr(spec, "classes", "shape"))
        directory = conescope.paths.dataset_dir(spec.name)
        data_hash = table_sha256(manifest.samples, manifest.texts, *extra_tables.values())[:16]
        provenance = {"data_sha256": data_hash, "dataset": spec.name, "kind": spec.kind, "n": spec.n, "seed": spec.seed,
                      "image_size": spec.image_size, **({"classes": spec.classes} if hasattr(spec, "classes") else {}),
                      "languages": list(languages), "profile": profile_name,
                      "code_version": version, "git_commit": git_commit(), "rejected": rejected, **info}
        write_manifest(directory, conescope.paths.scratch,
                       {"samples": manifest.samples, "texts": manifest.texts, **extra_tables}, provenance)
        views = conescope.warehouse.refresh_views(conescope.paths.root, [spec.name])
        context.log.info(f"{spec.name}: {manifest.samples.num_rows} samples, {manifest.texts.num_rows} texts")
        return dg.MaterializeResult(
            metadata={"samples": manifest.samples.num_rows, "texts": manifest.texts.num_rows, "rejected": rejected,
                      "languages": ", ".join(languages), "path": dg.MetadataValue.path(str(directory)),
                      "views": ", ".join(views), "data_sha256": data_hash},
            data_version=dg.DataVersion(data_hash),
        )

    return _asset


def dataset_assets(profile: Profile) -> list[dg.AssetsDefinition]:
    return [_dataset_asset(spec, profile.dataset_languages(spec.name), profile.name,
                           code_versions.dataset(profile, spec.name)) for spec in profile.datasets.values()]
