"""The DuckDB warehouse (``warehouse.duckdb`` under the data root), DESIGN.md "Storage".

Schema ``metrics`` holds one long-format table per metric family; schemas ``embeddings`` and
``datasets`` hold views over the Parquet files. A materialization replaces exactly the rows of its
partition, by column name, in one transaction. Connections are short-lived because DuckDB lets only
one process hold the file open for writing; a writer that finds the file locked waits and retries.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from conescope.metric_tables import METRIC_TABLES

# The storage contract: users query these columns; keep them stable (README, "Warehouse").
METRIC_COLUMNS: list[tuple[str, str]] = [
    ("dataset", "VARCHAR"), ("model", "VARCHAR"), ("lang", "VARCHAR"), ("modality", "VARCHAR"),
    ("transform", "VARCHAR"), ("fit_set", "VARCHAR"), ("eval_set", "VARCHAR"), ("metric", "VARCHAR"),
    ("value", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("n", "BIGINT"),
    ("computed_at", "TIMESTAMPTZ"), ("code_version", "VARCHAR"), ("params", "VARCHAR"),
]
# ``layers`` adds the hidden layer index to the columns every family table has.
EXTRA_COLUMNS = {"layers": [("layer", "INTEGER")]}
REJECT_COLUMNS: list[tuple[str, str]] = [
    ("dataset", "VARCHAR"), ("model", "VARCHAR"), ("stage", "VARCHAR"), ("sample_id", "VARCHAR"),
    ("reason", "VARCHAR"), ("recorded_at", "TIMESTAMPTZ"), ("code_version", "VARCHAR"),
]
_ARROW_TYPES = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "BIGINT": pa.int64(),
                "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"), "INTEGER": pa.int32()}


def arrow_schema(columns: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPES[typ]) for name, typ in columns])


def _ddl(qualified: str, columns: list[tuple[str, str]]) -> str:
    return f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(f'{c} {t}' for c, t in columns)})"


class WarehouseLocked(RuntimeError):
    pass


class Warehouse:
    def __init__(self, path: Path, lock_timeout_s: float = 120.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no warehouse yet; materialize the demo profile first "
                                    f"(`conescope materialize`)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseLocked(f"{self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield con
        finally:
            con.close()

    def ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        for schema in ("metrics", "embeddings", "datasets"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in METRIC_TABLES:
            columns = METRIC_COLUMNS + EXTRA_COLUMNS.get(table, [])
            con.execute(_ddl(f"metrics.{table}", columns))
            # Warehouses written by an older version gain the contract's newer columns (null there).
            for name, typ in columns:
                con.execute(f"ALTER TABLE metrics.{table} ADD COLUMN IF NOT EXISTS {name} {typ}")
        con.execute(_ddl("datasets.rejects", REJECT_COLUMNS))
        union = " UNION ALL BY NAME ".join(f"SELECT '{t}' AS family, * FROM metrics.{t}" for t in METRIC_TABLES)
        con.execute(f"CREATE OR REPLACE VIEW metrics.all AS {union}")

    def replace_rows(self, table: str, rows: pa.Table, where: Mapping[str, str],
                     exclude: Mapping[str, str] | None = None) -> int:
        """Delete the rows of ``table`` matching ``where`` (column = value, all of them) and not
        ``exclude`` (column <> value) and insert ``rows`` by column name, in one transaction. Every row
        must itself match the filter, so a partition can never write into another's rows. Returns the
        number of rows deleted."""
        return self.replace_tables({table: rows}, where, exclude)[table]

    def replace_tables(self, tables: Mapping[str, pa.Table], where: Mapping[str, str],
                       exclude: Mapping[str, str] | None = None) -> dict[str, int]:
        """:meth:`replace_rows` for several tables in one transaction: all are replaced or none.
        ``exclude`` lets two assets share a partition of a table (raw rows have ``transform = 'none'``,
        fitted-transform rows filter on ``transform <> 'none'``)."""
        exclude = dict(exclude or {})
        if not where:
            raise ValueError(f"{', '.join(tables)}: refusing to replace rows without a partition filter")
        for table, rows in tables.items():
            for column, value in where.items():
                if column not in rows.column_names:
                    raise ValueError(f"{table}: rows have no column {column!r} to match the partition filter")
                if rows.num_rows and set(rows.column(column).to_pylist()) != {value}:
                    raise ValueError(f"{table}: rows outside the partition {dict(where)} (column {column!r})")
            for column, value in exclude.items():
                if column not in rows.column_names:
                    raise ValueError(f"{table}: rows have no column {column!r} to match the partition filter")
                if value in rows.column(column).to_pylist():
                    raise ValueError(f"{table}: rows with {column} = {value!r} are outside this writer's filter")
        clause = " AND ".join([f"{column} = ?" for column in where] + [f"{column} <> ?" for column in exclude])
        deleted: dict[str, int] = {}
        with self.connect() as con:
            self.ensure_schema(con)
            con.execute("BEGIN TRANSACTION")
            try:
                for table, rows in tables.items():
                    deleted[table] = int(con.execute(f"DELETE FROM {table} WHERE {clause}",
                                                     [*where.values(), *exclude.values()]).fetchone()[0])
                    con.register("incoming_rows", rows)
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                    con.unregister("incoming_rows")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return deleted

    def refresh_views(self, root: Path, datasets: list[str]) -> list[str]:
        """(Re)create the views over the Parquet files of ``datasets`` that exist; returns their names."""
        created = []
        with self.connect() as con:
            self.ensure_schema(con)
            for ds in datasets:
                base = root / "embeddings" / ds
                globs = {
                    f"datasets.{ds}_samples": (root / "datasets" / ds / "samples.parquet", False),
                    f"datasets.{ds}_texts": (root / "datasets" / ds / "texts.parquet", False),
                    f"datasets.{ds}_pairs": (root / "datasets" / ds / "pairs.parquet", False),  # STS only
                    f"embeddings.{ds}_image": (base / "image" / "*" / "*.parquet", True),
                    f"embeddings.{ds}_text": (base / "text" / "*" / "*" / "*.parquet", True),
                    f"embeddings.{ds}_text_layers": (base / "text_layers" / "*" / "*" / "*.parquet", True),
                }
                for view, (pattern, hive) in globs.items():
                    if not glob.glob(str(pattern)):
                        continue
                    literal = str(pattern).replace("'", "''")
                    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet("
                                f"'{literal}', hive_partitioning = {str(hive).lower()})")
                    created.append(view)
        return created


def metric_rows(records: list[dict], table: str | None = None) -> pa.Table:
    """Complete metric records with the contract's defaults and build an Arrow table of the contract
    schema of ``table`` (unknown keys are an error: they would be silently dropped otherwise)."""
    from conescope.provenance import code_version

    family = (table or "").removeprefix("metrics.")
    schema = arrow_schema(METRIC_COLUMNS + EXTRA_COLUMNS.get(family, []))
    now = datetime.now(UTC)
    defaults = {"transform": "none", "fit_set": None, "eval_set": None, "ci_low": None, "ci_high": None,
                "computed_at": now, "code_version": code_version(), "params": None}
    full = []
    for rec in records:
        unknown = set(rec) - set(schema.names)
        if unknown:
            raise ValueError(f"metric record has columns outside the contract: {sorted(unknown)}")
        full.append({**defaults, **rec})
    return pa.Table.from_pylist(full, schema=schema)
