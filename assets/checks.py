"""Asset checks of every asset family, shown in the Checks tab of each asset in the Dagster UI.

One ``multi_asset_check`` per family and partitioning (so a run adds one check step per family, not
one per asset and check), partitioned like the assets it checks; each evaluates only the checks the
run selected, for the run's partition. The rules are pure functions in ``conescope/checks.py``; this
module reads what was stored and turns findings into results whose metadata names the partition
and the offending rows.

- ``datasets/<ds>``: ``reject_fraction`` (blocking: an error above ``max_reject_fraction``, a
  warning above half of it).
- ``embeddings/<ds>_image`` [image_model], ``embeddings/<ds>_text`` [model x lang]: ``parts_intact``
  (every part file readable, with the rows its writer recorded: storage/integrity.py), ``row_count``
  (the manifest minus rejects), ``finite_values`` (naming the part files), ``no_zero_rows``,
  ``dimension`` (the model's).
- ``metrics/*``: ``expected_metrics``, ``finite_values``, ``value_in_ci``, ``n_matches_rows``.
- ``transforms/<kind>``: ``finite_parameters``.
- ``reports/*``: ``self_contained`` (the file exists, its size is sane, no external URL).
- ``experiments/*``: ``complete_runs`` (every seed's recorded steps, every correlation; every transform
  point whole), ``correlation_in_ci``.
"""

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets import keys
from conescope import checks, metric_families
from conescope.metric_families import TRANSFORM_WRITTEN_TABLES
from conescope.metrics.isotropy_clusters import recorded_steps
from conescope.profile import Profile
from pipelines.partitions import ProfilePartitions, model_and_lang
from pipelines.resources import ConescopeHome
from storage import metric_rows
from storage.integrity import PART_GLOB, DamagedFile, part_of_rows, verify_parts
from storage.parquet_store import read_embeddings, read_manifest_table
from storage.paths import DataRoot
from storage.transform_store import read_transforms, stored_provenance

EMBEDDING_CHECKS = ("parts_intact", "row_count", "finite_values", "no_zero_rows", "dimension")
METRIC_CHECKS = ("expected_metrics", "finite_values", "value_in_ci", "n_matches_rows")
TRANSFORM_CHECKS = ("finite_parameters",)
REPORT_CHECKS = ("self_contained",)
DATASET_CHECKS = ("reject_fraction",)
EXPERIMENT_CHECKS = ("complete_runs", "correlation_in_ci")
WARN_SHARE_OF_MAX = 0.5  # reject fraction warning level, as a share of max_reject_fraction
REPORT_MIN_BYTES, REPORT_MAX_BYTES = 1024, 64 * 1024 * 1024
_METRIC_ASSETS = {keys.metric(asset.name): (family, asset) for family, asset in metric_families.assets()}


def _result(check: dg.AssetCheckKey, finding: checks.Finding, partition: str | None) -> dg.AssetCheckResult:
    where = f"[{partition}] " if partition else ""
    return dg.AssetCheckResult(
        asset_key=check.asset_key, check_name=check.name, passed=finding.passed,
        severity=dg.AssetCheckSeverity.WARN if finding.warn else dg.AssetCheckSeverity.ERROR,
        description=where + finding.description,
        metadata={"partition": partition or "(unpartitioned)", "offending_count": finding.count,
                  "offending": dg.MetadataValue.json(finding.offending), **finding.metadata})


def _missing(exc: OSError | ValueError, names: Iterable[str]) -> dict[str, checks.Finding]:
    what = "nothing stored" if isinstance(exc, FileNotFoundError) else "unreadable"
    return {name: checks.Finding(False, f"{what}: {exc}", [str(exc)], 1) for name in names}


def _split(partition: str | None) -> tuple[str | None, str | None]:
    """(model, lang) of a partition key: ``lang|model`` (model x lang) or ``model``."""
    if partition is None:
        return None, None
    if "|" in partition:
        return model_and_lang(partition)
    return partition, None


def _rows_of(directory: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(directory.glob("part-*.parquet")))


# --- embeddings ----------------------------------------------------------------------------------

def _model_dims(root: DataRoot, model: str) -> dict[str, int]:
    """Dimension of every embedding file of ``model`` (every dataset, both modalities, every language)."""
    dims = {}
    pattern = f"*/*/model={model}/**/part-*.parquet"
    for f in sorted((root.root / "embeddings").glob(pattern)):
        if f.relative_to(root.root / "embeddings").parts[1] in ("image", "text"):
            dims[str(f.relative_to(root.root))] = pq.read_schema(f).field("embedding").type.list_size
    return dims


def embedding_findings(home: ConescopeHome, profile: Profile, ds: str, modality: str, model: str,
                       lang: str | None) -> dict[str, checks.Finding]:
    root = home.paths
    if modality == "text" and lang not in profile.dataset_languages(ds):
        done = checks.Finding(True, f"{ds} declares no {lang} texts: the partition is empty by design")
        return dict.fromkeys(EMBEDDING_CHECKS, done)
    try:
        if modality == "image":
            directory, id_col = root.image_embeddings(ds, model), "sample_id"
            expected = read_manifest_table(root.dataset_dir(ds), "samples", ["sample_id"]).column("sample_id")
            rejected = [sample_id for sample_id, _ in metric_rows.rejects(home.warehouse, ds, "embed_image", model)]
        else:
            directory, id_col = root.text_embeddings(ds, model, lang), "text_id"
            texts = read_manifest_table(root.dataset_dir(ds), "texts", ["text_id", "lang"])
            expected, rejected = texts.filter(pc.equal(texts.column("lang"), lang)).column("text_id"), []
        where = directory.relative_to(root.root)
        # the text layer states are parts of the same partition, written with the embeddings
        stored = [directory] + ([root.text_layers(ds, model, lang)] if modality == "text" else [])
        damaged = [(str(d.path.relative_to(root.root)), d.reason)
                   for s in stored for d in verify_parts(s, values="none")]
        intact = checks.parts_intact(damaged, sum(len(list(s.glob(PART_GLOB))) for s in stored))
        if damaged:  # the rows cannot be read: every other check reports the damage
            unread = checks.Finding(False, f"not evaluated: {intact.description}", intact.offending, intact.count)
            return {"parts_intact": intact, **{name: unread for name in EMBEDDING_CHECKS if name != "parts_intact"}}
        table, emb = read_embeddings(directory, [id_col])
    except (FileNotFoundError, DamagedFile) as exc:  # nothing stored, or the manifest is damaged
        return _missing(exc, EMBEDDING_CHECKS)
    ids = [str(i) for i in table.column(id_col).to_pylist()]
    dim, source = profile.models[model].declared_dimension()
    return {
        "parts_intact": intact,
        "row_count": checks.embedding_row_count(ids, [str(i) for i in expected.to_pylist()],
                                                [str(r) for r in rejected]),
        "finite_values": checks.embedding_finite(ids, emb, lambda rows: [str(where / name) for name in
                                                                        part_of_rows(directory, rows)]),
        "no_zero_rows": checks.embedding_nonzero(ids, emb),
        "dimension": checks.embedding_dimension(_model_dims(root, model), dim, source),
    }


# --- metrics -------------------------------------------------------------------------------------

def _embedding_counts(root: DataRoot, profile: Profile, model: str) -> dict[tuple[str, str, str | None], int]:
    counts = {}
    for ds in profile.datasets:
        counts[(ds, "image", None)] = _rows_of(root.image_embeddings(ds, model))
        for lang in profile.dataset_languages(ds):
            counts[(ds, "text", lang)] = _rows_of(root.text_embeddings(ds, model, lang))
    return counts


def metric_findings(home: ConescopeHome, profile: Profile, key: dg.AssetKey, model: str,
                    lang: str | None) -> dict[str, checks.Finding]:
    """The rows the asset owns in each table it writes (its declaration's, or those of the fitted
    transforms for metrics/transforms), checked against the contract and the stored embeddings."""
    if key == keys.TRANSFORM_METRICS:
        owned = [(table, metric_families.transform_rows(model, lang)) for table in TRANSFORM_WRITTEN_TABLES]
    else:
        family, asset = _METRIC_ASSETS[key]
        owned = [(family.table, asset.owned_rows(model, lang))]
    every_set = key != keys.TRANSFORM_METRICS and _METRIC_ASSETS[key][0].every_set
    families = [table for table, _ in owned]
    counts = _embedding_counts(home.paths, profile, model)
    found: dict[str, list[checks.Finding]] = {name: [] for name in METRIC_CHECKS}
    for family, where in owned:
        rows = metric_rows.family_rows(home.warehouse, family, where)
        # A family measured on every stored set: each dataset with rows must have its rows.
        measured = []
        if every_set:
            measured = [ds for (ds, modality, lg), n in counts.items() if n > 0 and
                        ((modality == "image" and lang is None) or (modality == "text" and lg == lang))]
        found["expected_metrics"].append(checks.expected_metrics(family, rows, measured))
        found["finite_values"].append(checks.finite_values(rows))
        found["value_in_ci"].append(checks.value_in_ci(rows))
        found["n_matches_rows"].append(checks.n_matches_rows(family, rows, counts))
    return {name: _merge(fs, families) for name, fs in found.items()}


def _merge(findings: list[checks.Finding], families: Iterable[str]) -> checks.Finding:
    """One finding over several tables (metrics/transforms writes five)."""
    if len(findings) == 1:
        return findings[0]
    bad = [(fam, f) for fam, f in zip(families, findings, strict=True) if not f.passed]
    if not bad:
        return checks.Finding(True, "; ".join(f"{fam}: {f.description}" for fam, f in zip(families, findings,
                                                                                         strict=True)))
    offending = [f"{fam}: {o}" for fam, f in bad for o in f.offending][:checks.MAX_LISTED]
    return checks.Finding(False, "; ".join(f"{fam}: {f.description}" for fam, f in bad), offending,
                          sum(f.count for _, f in bad))


# --- transforms, datasets, reports ---------------------------------------------------------------

def transform_findings(home: ConescopeHome, kind: str, model: str, lang: str) -> dict[str, checks.Finding]:
    stored = read_transforms(home.paths.transforms_dir(kind, model, lang))
    bad = []
    for name, d in stored.items():
        prov = stored_provenance(d)
        arrays = [k for k, v in d.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f" and
                  not np.isfinite(v).all()]
        bad += [f"{name}: {k} not finite" for k in arrays]
        if not prov.get("fit_set") or min(prov.get("n_image", 0), prov.get("n_text", 0)) < 1:
            bad.append(f"{name}: provenance names no fit set or no fit rows")
    return {"finite_parameters": checks.finding_of(bad, f"{len(stored)} fitted transforms, parameters finite",
                                                 "fitted transforms with bad parameters", files=len(stored))}


def dataset_findings(home: ConescopeHome, profile: Profile, ds: str) -> dict[str, checks.Finding]:
    spec = profile.datasets[ds]
    directory = home.paths.dataset_dir(ds)
    try:
        samples = pq.ParquetFile(directory / "samples.parquet").metadata.num_rows
        # Text-only sources have no samples: their items are the STS pairs, or the texts.
        for table in ("pairs", "texts"):
            if samples == 0 and (directory / f"{table}.parquet").is_file():
                samples = pq.ParquetFile(directory / f"{table}.parquet").metadata.num_rows
    except FileNotFoundError as exc:
        return _missing(exc, DATASET_CHECKS)
    rejects = metric_rows.rejects(home.warehouse, ds, "ingest")
    limit = spec.max_reject_fraction
    return {"reject_fraction": checks.reject_fraction(samples, rejects, limit, limit * WARN_SHARE_OF_MAX)}


def experiment_findings(home: ConescopeHome, profile: Profile, key: dg.AssetKey,
                        model: str | None) -> dict[str, checks.Finding]:
    """experiments/cluster_training: its model's runs against the profile's ``cluster_training`` section;
    experiments/transform_clusters: every point and correlation."""
    if key.path[-1] == "cluster_training":
        spec = profile.cluster_training
        summary = metric_rows.experiment_table(home.warehouse, "cluster_training_summary", model)
        complete = checks.training_runs(metric_rows.experiment_table(home.warehouse, "cluster_training", model),
                                        summary, [(ds, lang) for ds in spec.datasets
                                                  for lang in profile.dataset_languages(ds)],
                                        spec.seeds, recorded_steps(spec.updates, spec.record_every))
    else:
        summary = metric_rows.experiment_table(home.warehouse, "transform_clusters_summary")
        complete = checks.transform_points(metric_rows.experiment_table(home.warehouse, "transform_clusters"),
                                           summary)
    return {"complete_runs": complete, "correlation_in_ci": checks.correlation_intervals(summary)}


def report_path(root: DataRoot, key: dg.AssetKey, model: str | None, lang: str | None) -> Path:
    name = key.path[-1]
    if name == "partition_report":
        return root.report_dir(model, lang) / "index.html"
    if name == "multilingual_report":
        return root.multilingual_report_dir(model) / "index.html"
    return root.summary_report_dir(name.removesuffix("_report")) / "index.html"


def report_findings(home: ConescopeHome, key: dg.AssetKey, model: str | None,
                    lang: str | None) -> dict[str, checks.Finding]:
    path = report_path(home.paths, key, model, lang)
    if not path.is_file():
        return {"self_contained": checks.report_file(None, [], REPORT_MIN_BYTES, REPORT_MAX_BYTES)}
    urls = checks.external_urls(path.read_text(encoding="utf-8"))
    return {"self_contained": checks.report_file(path.stat().st_size, urls, REPORT_MIN_BYTES, REPORT_MAX_BYTES)}


# --- wiring --------------------------------------------------------------------------------------

Evaluate = Callable[[ConescopeHome, dg.AssetKey, str | None, str | None], dict[str, checks.Finding]]


def _family(key: dg.AssetKey) -> str | None:
    head, name = key.path[0], key.path[-1]
    if head == "embeddings" and name.endswith(("_image", "_text")):
        return "embeddings"
    return head if head in ("datasets", "metrics", "transforms", "reports", "experiments") else None


def build_asset_checks(profile: Profile, parts: ProfilePartitions,
                       assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetChecksDefinition]:
    """The checks of every asset of ``assets`` whose family has checks, one multi-check per family
    and partitioning (each partitioned like the assets it checks)."""
    def evaluate(family: str) -> Evaluate:
        def run(home: ConescopeHome, key: dg.AssetKey, model: str | None, lang: str | None):
            name = key.path[-1]
            if family == "datasets":
                return dataset_findings(home, profile, name)
            if family == "embeddings":
                ds, modality = name.rsplit("_", 1)
                return embedding_findings(home, profile, ds, modality, model, lang)
            if family == "metrics":
                return metric_findings(home, profile, key, model, lang)
            if family == "transforms":
                return transform_findings(home, name, model, lang)
            if family == "experiments":
                return experiment_findings(home, profile, key, model)
            return report_findings(home, key, model, lang)

        return run

    names = {"datasets": DATASET_CHECKS, "embeddings": EMBEDDING_CHECKS, "metrics": METRIC_CHECKS,
             "transforms": TRANSFORM_CHECKS, "reports": REPORT_CHECKS, "experiments": EXPERIMENT_CHECKS}
    groups: dict[tuple[str, str], list[tuple[dg.AssetKey, object]]] = {}
    for a in assets:
        for key in a.keys:
            family = _family(key)
            if family is not None and (family != "metrics" or key in _METRIC_ASSETS or key == keys.TRANSFORM_METRICS):
                partitions_def = a.specs_by_key[key].partitions_def
                groups.setdefault((family, parts.name_of(partitions_def)), []).append((key, partitions_def))
    return [_multi_check(family, partitioning, members, names[family], evaluate(family))
            for (family, partitioning), members in sorted(groups.items())]


def _multi_check(family: str, partitioning: str, members: list, check_names: tuple[str, ...],
                 evaluate: Evaluate) -> dg.AssetChecksDefinition:
    blocking = family == "datasets"  # too many rejects: nothing downstream should read the manifest
    with warnings.catch_warnings():
        # partitioned checks are a preview feature of Dagster 1.13; their behaviour is tested here
        warnings.simplefilter("ignore", dg.PreviewWarning)
        specs = [dg.AssetCheckSpec(name, asset=key, partitions_def=parts, blocking=blocking,
                                   description=_DESCRIPTIONS[name])
                 for key, parts in members for name in check_names]
    # Reading the warehouse: with the metric and dataset steps in the one-slot pool, never beside a writer.
    pool = keys.DUCKDB_POOL if family in ("datasets", "metrics", "experiments") else None

    @dg.multi_asset_check(name=f"check_{family}_{partitioning}", specs=specs, can_subset=True, pool=pool,
                          description=f"Asset checks of the {family} assets ({partitioning})")
    def _checks(context: dg.AssetCheckExecutionContext, conescope: ConescopeHome):
        partition = context.partition_key if context.has_partition_key else None
        model, lang = _split(partition)
        selected: dict[dg.AssetKey, list[dg.AssetCheckKey]] = {}
        for check in context.selected_asset_check_keys:
            selected.setdefault(check.asset_key, []).append(check)
        for key, wanted in sorted(selected.items(), key=lambda kv: kv[0].to_user_string()):
            findings = evaluate(conescope, key, model, lang)
            for check in sorted(wanted, key=lambda c: c.name):
                finding = findings[check.name]
                if not finding.passed:
                    context.log.warning(f"{key.to_user_string()} {check.name} [{partition}]: {finding.description}")
                yield _result(check, finding, partition)

    return _checks


_DESCRIPTIONS = {
    "reject_fraction": "Share of rejected samples (datasets.rejects, stage ingest): blocking error above the "
                       "dataset's max_reject_fraction, warning above half of it; lists the rejected samples",
    "parts_intact": "Every stored part file of the partition is readable (its Parquet footer) and holds the rows "
                    "its writer recorded (_parts.json); lists the damaged files (conescope materialize embeds "
                    "them again)",
    "row_count": "Rows = the manifest (samples, or texts of the language) minus rejected samples; lists missing, "
                 "duplicate and unknown ids",
    "finite_values": "No NaN or inf (embeddings: in any row; metrics: in value, ci_low, ci_high); lists the rows",
    "no_zero_rows": "No all-zero embedding row (it has no direction); lists the rows",
    "dimension": "Every embedding file of the model has the model's dimension (embed_dim of its config)",
    "expected_metrics": "Every group of rows (dataset, modality, transform, fit/eval set) has every metric of the "
                        "storage contract, and nothing outside it",
    "value_in_ci": "ci_low <= value <= ci_high wherever a confidence interval is stored",
    "n_matches_rows": "n equals the stored embedding rows measured (exact over whole sets, bounded for subsets)",
    "finite_parameters": "Every fitted transform has finite parameters and a provenance naming its fit rows",
    "self_contained": "The report file exists, weighs between 1 KiB and 64 MiB, and loads no external URL",
    "complete_runs": "Every seed of every dataset and language has a finite row at every recorded step and its "
                     "correlations (cluster_training); every transform point is finite and whole (transform_clusters)",
    "correlation_in_ci": "Every correlation lies in [-1, 1] and inside its interval where one is stored",
}
