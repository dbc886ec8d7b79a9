"""Warehouse writes that several asset modules share: metric rows of a partition, rejected samples."""

from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from conescope.provenance import code_version
from pipelines.resources import ConescopeHome
from storage.warehouse import REJECT_COLUMNS, arrow_schema, metric_rows


def write_metric_rows(home: ConescopeHome, table: str, records: list[dict], where: dict,
                      log) -> dg.MaterializeResult:
    """Replace the raw rows (``transform = 'none'``) of ``metrics.<table>`` matching ``where`` with
    ``records`` (completed with the model and lang of ``where``); metadata: counts and headline values.
    The rows of fitted transforms in the same table belong to metrics/transforms."""
    qualified = f"metrics.{table}"
    for rec in records:
        rec.update({k: v for k, v in where.items() if k in ("model", "lang")})
    replaced = home.warehouse.replace_rows(qualified, metric_rows(records, qualified), {**where, "transform": "none"})
    headline = {f"{r['dataset']}/{r['modality']}/{r['metric']}" + (f"/{r['layer']}" if "layer" in r else "")
                + (f"/{r['lang']}" if table == "multilingual" else ""): round(r["value"], 4)
                for r in records}
    log.info(f"{qualified}: {len(records)} rows written, {replaced} replaced")
    return dg.MaterializeResult(metadata={"table": qualified, "rows": len(records), "replaced": replaced,
                                          **dict(list(headline.items())[:60])})


def write_rejects(home: ConescopeHome, dataset: str, model: str | None, stage: str,
                  rejects: list[tuple[str, str]]) -> int:
    """Replace the ``datasets.rejects`` rows of (dataset, model, stage) with ``rejects`` (sample id,
    reason); ``model`` None for the ingest stage, which owns the dataset's rows of every model."""
    now = datetime.now(UTC)
    rows = [{"dataset": dataset, "model": model, "stage": stage, "sample_id": sample_id, "reason": reason,
             "recorded_at": now, "code_version": code_version()} for sample_id, reason in rejects]
    where = {"dataset": dataset, "stage": stage, **({"model": model} if model is not None else {})}
    home.warehouse.replace_rows("datasets.rejects", pa.Table.from_pylist(rows, schema=arrow_schema(REJECT_COLUMNS)),
                                where)
    return len(rows)
