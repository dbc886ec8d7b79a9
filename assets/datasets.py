"""datasets/<ds>: build each profile dataset into its normalized Parquet manifest [unpartitioned]."""


import dagster as dg

from assets import keys
from conescope.datasets import build_dataset
from conescope.profile import DatasetSpec, Profile
from conescope.provenance import code_version, table_sha256
from pipelines.resources import ConescopeHome
from storage.parquet_store import write_manifest


def _dataset_asset(spec: DatasetSpec, languages: tuple[str, ...], profile_name: str) -> dg.AssetsDefinition:
    @dg.asset(key=keys.dataset(spec.name), group_name="datasets", pool=keys.DUCKDB_POOL, kinds={"parquet"},
              description=f"{spec.kind} dataset {spec.name!r} as a normalized manifest (samples + texts)")
    def _asset(context: dg.AssetExecutionContext, conescope: ConescopeHome) -> dg.MaterializeResult:
        manifest = build_dataset(spec.kind, spec.name, spec.n, spec.seed, spec.image_size, languages)
        directory = conescope.root.dataset_dir(spec.name)
        data_hash = table_sha256(manifest.samples, manifest.texts)[:16]
        provenance = {"data_sha256": data_hash, "dataset": spec.name, "kind": spec.kind, "n": spec.n, "seed": spec.seed,
                      "image_size": spec.image_size, "languages": list(languages), "profile": profile_name,
                      "code_version": code_version()}
        write_manifest(directory, conescope.root.scratch,
                       {"samples": manifest.samples, "texts": manifest.texts}, provenance)
        views = conescope.warehouse.refresh_views(conescope.root.root, [spec.name])
        context.log.info(f"{spec.name}: {manifest.samples.num_rows} samples, {manifest.texts.num_rows} texts")
        return dg.MaterializeResult(
            metadata={"samples": manifest.samples.num_rows, "texts": manifest.texts.num_rows,
                      "languages": ", ".join(languages), "path": dg.MetadataValue.path(str(directory)),
                      "views": ", ".join(views), "data_sha256": data_hash},
            data_version=dg.DataVersion(data_hash),
        )

    return _asset


def dataset_assets(profile: Profile) -> list[dg.AssetsDefinition]:
    return [_dataset_asset(spec, profile.languages, profile.name) for spec in profile.datasets.values()]
