"""Warehouse writes that several asset modules share: metric rows of a partition, rejected samples."""

from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from conescope.metric_families import RowFilter
from conescope.provenance import rows_sha256
from pipelines.resources import ConescopeHome
from storage.warehouse import REJECT_COLUMNS, arrow_schema, metric_rows


def write_metric_rows(home: ConescopeHome, table: str, records: list[dict], owned: RowFilter,
                      log, code_version: str) -> dg.MaterializeResult:
    """Replace the rows of ``metrics.<table>`` that ``owned`` selects (the raw rows of one asset's
    partition, ``MetricAsset.owned_rows``) with ``records`` (completed with the model and lang it
    fixes, and the writing asset's ``code_version``); metadata: counts and headline values; data
    version: the hash of the rows' content. The rows of fitted transforms in the same table belong
    to metrics/transforms."""
    qualified = f"metrics.{table}"
    for rec in records:
        rec.update({k: v for k, v in owned.equal.items() if k in ("model", "lang")})
    rows = metric_rows(records, qualified, code_version)
    replaced = home.warehouse.replace_rows(qualified, rows, owned.equal, owned.not_equal, owned.null)
    spans_langs = "lang" not in owned.equal and "lang" not in owned.null  # rows of several languages
    headline = {f"{r['dataset']}/{r['modality']}/{r['metric']}" + (f"/{r['layer']}" if "layer" in r else "")
                + (f"/{r['lang']}" if spans_langs else ""): round(r["value"], 4)
                for r in records}
    log.info(f"{qualified}: {len(records)} rows written, {replaced} replaced")
    data_version = rows_sha256(rows)[:16]
    return dg.MaterializeResult(metadata={"table": qualified, "rows": len(records), "replaced": replaced,
                                          "rows_sha256": data_version, **dict(list(headline.items())[:60])},
                                data_version=dg.DataVersion(data_version))


def write_rejects(home: ConescopeHome, dataset: str, model: str | None, stage: str,
                  rejects: list[tuple[str, str]], code_version: str) -> int:
    """Replace the ``datasets.rejects`` rows of (dataset, model, stage) with ``rejects`` (sample id,
    reason); ``model`` None for the ingest stage, which owns the dataset's rows of every model;
    ``code_version``: the writing asset's."""
    now = datetime.now(UTC)
    rows = [{"dataset": dataset, "model": model, "stage": stage, "sample_id": sample_id, "reason": reason,
             "recorded_at": now, "code_version": code_version} for sample_id, reason in rejects]
    where = {"dataset": dataset, "stage": stage, **({"model": model} if model is not None else {})}
    home.warehouse.replace_rows("datasets.rejects", pa.Table.from_pylist(rows, schema=arrow_schema(REJECT_COLUMNS)),
                                where)
    return len(rows)
