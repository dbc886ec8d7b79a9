"""Reading the warehouse for the assets and their checks: the SQL behind named functions.

The metric rows an asset owns come from its declaration (``conescope.metric_families``, a
:class:`RowFilter`), turned into a ``WHERE`` clause here; the report queries read ``metrics.all``.
Every function returns plain dicts (column -> value) and opens a short read-only connection.
"""

from __future__ import annotations

from collections.abc import Sequence

from conescope.metric_families import SUMMARY_TABLES, RowFilter
from storage.warehouse import EXPERIMENT_COLUMNS, EXTRA_COLUMNS, Warehouse

# The columns the metric checks read (the contract's, less when and by what each row was written).
CHECK_COLUMNS = ("dataset", "model", "lang", "modality", "transform", "fit_set", "eval_set", "metric", "value",
                 "ci_low", "ci_high", "n")
# The columns the reports read, from ``metrics.all``.
REPORT_COLUMNS = ("family", "dataset", "model", "lang", "modality", "transform", "fit_set", "eval_set", "metric",
                  "layer", "value", "ci_low", "ci_high", "n", "params")


def query_rows(warehouse: Warehouse, sql: str, params: Sequence = ()) -> list[dict]:
    """The rows of a read-only query, as dicts."""
    with warehouse.connect(read_only=True) as con:
        cursor = con.execute(sql, list(params))
        names = [col[0] for col in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def where_clause(rows: RowFilter) -> tuple[str, list]:
    """(SQL condition, parameters) selecting the rows of ``rows``."""
    clauses = [f"{column} = ?" for column in rows.equal] + [f"{column} IS NULL" for column in rows.null]
    clauses += [f"{column} <> ?" for column in rows.not_equal]
    return " AND ".join(clauses) or "true", [*rows.equal.values(), *rows.not_equal.values()]


def family_rows(warehouse: Warehouse, table: str, rows: RowFilter) -> list[dict]:
    """The rows of ``metrics.<table>`` that ``rows`` selects (the check columns, and ``layer`` where the
    table has it), in a stable order; none before the warehouse exists."""
    if not warehouse.exists():
        return []
    columns = ", ".join([*CHECK_COLUMNS, *(name for name, _ in EXTRA_COLUMNS.get(table, []))])
    condition, params = where_clause(rows)
    return query_rows(warehouse, f"SELECT {columns} FROM metrics.{table} WHERE {condition} ORDER BY ALL", params)


def rejects(warehouse: Warehouse, dataset: str, stage: str, model: str | None = None) -> list[tuple[str, str]]:
    """(sample id, reason) of the samples of ``dataset`` rejected at ``stage`` (for ``model`` when given),
    sorted; none before the warehouse exists."""
    if not warehouse.exists():
        return []
    by_model = model is not None
    found = query_rows(warehouse, "SELECT sample_id, reason FROM datasets.rejects WHERE dataset = ? AND stage = ?"
                                  f"{' AND model = ?' if by_model else ''} ORDER BY ALL",
                       [dataset, stage, *([model] if by_model else [])])
    return [(r["sample_id"], r["reason"]) for r in found]


def _summary_clause() -> str:
    return ", ".join(f"'{t}'" for t in SUMMARY_TABLES) or "''"


def partition_rows(warehouse: Warehouse, model: str, lang: str) -> list[dict]:
    """Every row of a model x lang partition (raw and transformed) and its model's image rows (``lang``
    null), in the partition report's order. The families over languages are left out: they are written
    after every language's report (the multilingual report shows them), so a page that showed them would
    depend on whether the summary had run yet."""
    return query_rows(warehouse, f"SELECT {', '.join(REPORT_COLUMNS)} FROM metrics.all WHERE model = ? AND "
                                 f"(lang = ? OR lang IS NULL) AND family NOT IN ({_summary_clause()}) "
                                 "ORDER BY dataset, family, transform, fit_set, eval_set, modality, metric, layer",
                      [model, lang])


def summary_rows(warehouse: Warehouse, model: str) -> list[dict]:
    """The rows of the families over languages of ``model`` (every compared language, then ``lang`` null)."""
    return query_rows(warehouse, f"SELECT {', '.join(REPORT_COLUMNS)} FROM metrics.all WHERE family IN "
                                 f"({_summary_clause()}) AND model = ? ORDER BY dataset, lang NULLS LAST, metric",
                      [model])


def raw_rows(warehouse: Warehouse) -> list[dict]:
    """The raw rows (``transform = 'none'``) of every model, families over languages left out."""
    return query_rows(warehouse, f"SELECT {', '.join(REPORT_COLUMNS)} FROM metrics.all WHERE transform = 'none' "
                                 f"AND family NOT IN ({_summary_clause()}) ORDER BY ALL")


def all_rows(warehouse: Warehouse) -> list[dict]:
    """Every metric row of the warehouse."""
    return query_rows(warehouse, f"SELECT {', '.join(REPORT_COLUMNS)} FROM metrics.all ORDER BY ALL")


# --- experiments (conescope.metric_families.EXPERIMENTS) ---------------------------------------------

_GEOMETRY_COLUMNS = "model, lang, dataset, modality, transform, fit_set, eval_set, value"


def transform_geometry_rows(warehouse: Warehouse) -> tuple[list[dict], list[dict]]:
    """(IsoScore rows of metrics.isotropy, silhouette rows of metrics.clusters) of every fitted transform
    (``transform <> 'none'``), every model and language: what experiments/transform_clusters pairs."""
    if not warehouse.exists():
        return [], []
    iso = query_rows(warehouse, f"SELECT {_GEOMETRY_COLUMNS} FROM metrics.isotropy WHERE metric = 'isoscore' "
                                "AND transform <> 'none' ORDER BY ALL")
    sil = query_rows(warehouse, f"SELECT {_GEOMETRY_COLUMNS} FROM metrics.clusters WHERE metric = 'silhouette' "
                                "AND transform <> 'none' ORDER BY ALL")
    return iso, sil


def experiment_table(warehouse: Warehouse, table: str, model: str | None = None) -> list[dict]:
    """Every row of ``experiments.<table>`` (less when and by what it was written; those of ``model`` only
    when given), in a stable order; none before the warehouse exists."""
    if not warehouse.exists():
        return []
    columns = [name for name, _ in EXPERIMENT_COLUMNS[table] if name not in ("computed_at", "code_version")]
    where = "" if model is None else " WHERE model = ?"
    return query_rows(warehouse, f"SELECT {', '.join(columns)} FROM experiments.{table}{where} ORDER BY ALL",
                      [] if model is None else [model])
