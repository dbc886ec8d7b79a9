"""The warehouse (docs/storage.md, "Warehouse"): the metric tables and the views over the Parquet files, on one
of two backends with the same schemas, tables and SQL.

- ``duckdb`` (default): one DuckDB file ``warehouse.duckdb`` under the data root. DuckDB lets one
  process hold the file for writing, so connections are short-lived; a writer (or reader) that finds
  the file locked waits and retries, and every asset that writes stays in one Dagster pool slot.
- ``ducklake``: DuckLake (https://ducklake.select), a catalog database plus Parquet data files, with
  snapshot isolation: many readers and writers at once, from several processes or machines. The
  catalog is SQLite (``sqlite:<path>``, one machine) or PostgreSQL (``postgres:<libpq dsn>``, several
  machines); ``data_path`` holds the data files (a folder every machine sees). The extensions come
  from the pip packages ``duckdb-extension-ducklake``, ``-sqlite-scanner`` and ``-postgres-scanner``
  (extra ``ducklake``), loaded from their files, so nothing is downloaded.

Schema ``metrics`` holds one long-format table per metric family, schema ``experiments`` the wide tables of
the experiments (``EXPERIMENT_COLUMNS``); schemas ``embeddings`` and
``datasets`` hold views over the Parquet files of the data root, stored with paths relative to it and
resolved (DuckDB's ``file_search_path``) against the data root the warehouse is opened from, so a
copied or moved data root reads its own files. A materialization replaces exactly the rows of its
partition, by column name, in one transaction (retried when a concurrent DuckLake commit conflicts);
on DuckLake the writers of one partition take turns (a file lock, ``Warehouse._partition_locks``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from conescope.file_lock import held_lock
from conescope.metric_families import METRIC_TABLES
from storage.paths import ReadOnlyDataRoot

# The storage contract: users query these columns; keep them stable (docs/storage.md, "Warehouse").
METRIC_COLUMNS: list[tuple[str, str]] = [
    ("dataset", "VARCHAR"), ("model", "VARCHAR"), ("lang", "VARCHAR"), ("modality", "VARCHAR"),
    ("transform", "VARCHAR"), ("fit_set", "VARCHAR"), ("eval_set", "VARCHAR"), ("metric", "VARCHAR"),
    ("value", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("n", "BIGINT"),
    ("computed_at", "TIMESTAMPTZ"), ("code_version", "VARCHAR"), ("params", "VARCHAR"),
]
# ``layers`` adds the hidden layer index to the columns every family table has.
EXTRA_COLUMNS = {"layers": [("layer", "INTEGER")]}
_PROVENANCE = [("computed_at", "TIMESTAMPTZ"), ("code_version", "VARCHAR")]
# The tables of schema ``experiments`` (conescope.metric_families.EXPERIMENTS), wide: one row per recorded
# training step or per correlation (docs/storage.md, "Experiments").
EXPERIMENT_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "cluster_training": [
        ("dataset", "VARCHAR"), ("model", "VARCHAR"), ("lang", "VARCHAR"), ("seed", "INTEGER"), ("step", "INTEGER"),
        ("isoscore", "DOUBLE"), ("silhouette", "DOUBLE"), ("silhouette_ci_low", "DOUBLE"),
        ("silhouette_ci_high", "DOUBLE"), ("train_accuracy", "DOUBLE"), ("loss", "DOUBLE"), ("n", "BIGINT"),
        *_PROVENANCE, ("params", "VARCHAR")],
    "cluster_training_summary": [
        ("dataset", "VARCHAR"), ("model", "VARCHAR"), ("lang", "VARCHAR"), ("seed", "INTEGER"),
        ("statistic", "VARCHAR"), ("value", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("n", "BIGINT"),
        *_PROVENANCE, ("params", "VARCHAR")],
    "transform_clusters": [
        ("dataset", "VARCHAR"), ("model", "VARCHAR"), ("lang", "VARCHAR"), ("modality", "VARCHAR"),
        ("transform", "VARCHAR"), ("fit_set", "VARCHAR"), ("eval_set", "VARCHAR"), ("isoscore", "DOUBLE"),
        ("silhouette", "DOUBLE"), ("d_isoscore", "DOUBLE"), ("d_silhouette", "DOUBLE"), *_PROVENANCE],
    "transform_clusters_summary": [
        ("modality", "VARCHAR"), ("statistic", "VARCHAR"), ("value", "DOUBLE"), ("ci_low", "DOUBLE"),
        ("ci_high", "DOUBLE"), ("n", "BIGINT"), ("groups", "BIGINT"), *_PROVENANCE, ("params", "VARCHAR")],
}
REJECT_COLUMNS: list[tuple[str, str]] = [
    ("dataset", "VARCHAR"), ("model", "VARCHAR"), ("stage", "VARCHAR"), ("sample_id", "VARCHAR"),
    ("reason", "VARCHAR"), ("recorded_at", "TIMESTAMPTZ"), ("code_version", "VARCHAR"),
]
_ARROW_TYPES = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "BIGINT": pa.int64(),
                "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"), "INTEGER": pa.int32()}
# Folders of the data root that the views read; the read-only sandbox of `conescope sql` allows these.
VIEW_FOLDERS = ("datasets", "embeddings")
# Statements `conescope sql` runs: queries only. Keys: DuckDB's statement types (what the check
# compares); values: the statements a user writes that DuckDB parses as that type (FROM-first queries,
# VALUES, SHOW, DESCRIBE and SUMMARIZE are SELECTs to DuckDB), which the refusal and the help list.
# EXPLAIN runs only where what it explains is itself a query (EXPLAIN ANALYZE executes it).
READ_STATEMENTS = {"SELECT": ("SELECT", "WITH", "FROM", "VALUES", "SHOW", "DESCRIBE", "SUMMARIZE"),
                   "EXPLAIN": ("EXPLAIN",)}
# The table functions a query of `conescope sql` may call: each only reads (files in the allowed folders, the
# catalog, settings). Any other is refused, for some write or change the session even inside a SELECT
# (enable_logging(storage = 'file') creates files, enable_profiling, checkpoint, ducklake_expire_snapshots,
# sqlite_query runs SQL on a SQLite file) and query() / json_execute_serialized_sql run SQL text that this
# check does not see.
READ_TABLE_FUNCTIONS = frozenset({
    "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema", "parquet_file_metadata",
    "parquet_kv_metadata", "parquet_full_metadata", "read_csv", "read_csv_auto", "sniff_csv", "read_json",
    "read_json_auto", "read_json_objects", "read_json_objects_auto", "read_ndjson", "read_ndjson_auto",
    "read_ndjson_objects", "read_text", "read_blob", "glob", "range", "generate_series", "unnest", "repeat",
    "repeat_row", "json_each", "json_tree", "histogram", "histogram_values", "summary", "show", "show_tables",
    "show_tables_expanded", "show_databases", "table_info", "pragma_table_info", "pragma_show", "pragma_version",
    "version", "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies",
    "duckdb_functions", "duckdb_indexes", "duckdb_keywords", "duckdb_schemas", "duckdb_sequences",
    "duckdb_settings", "duckdb_tables", "duckdb_types", "duckdb_views", "ducklake_snapshots",
    "ducklake_current_snapshot", "ducklake_table_info", "ducklake_list_files", "ducklake_table_changes",
    "ducklake_table_insertions", "ducklake_table_deletions"})
# Scalar functions with an effect beyond their result: refused too.
EFFECT_FUNCTIONS = frozenset({"write_log", "nextval", "setseed"})
BACKENDS = ("duckdb", "ducklake")
LAKE_ALIAS = "conescope_lake"
# The secret folder of a sandboxed connection: a path under a file, which no one can create.
NO_SECRETS = os.path.join(os.devnull, "duckdb-secrets")
_LAKE_EXTENSIONS = {"ducklake": "duckdb_extension_ducklake", "sqlite_scanner": "duckdb_extension_sqlite_scanner",
                    "postgres_scanner": "duckdb_extension_postgres_scanner"}

T = TypeVar("T")
_BASES: dict[tuple[int, str, str, str], duckdb.DuckDBPyConnection] = {}
_BASES_LOCK = threading.Lock()


def arrow_schema(columns: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPES[typ]) for name, typ in columns])


def _ddl(qualified: str, columns: list[tuple[str, str]]) -> str:
    return f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(f'{c} {t}' for c, t in columns)})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class WarehouseLocked(RuntimeError):
    pass


class ReadOnlyViolation(PermissionError):
    pass


@dataclass(frozen=True)
class LakeConfig:
    """A DuckLake warehouse: ``catalog`` is ``sqlite:<path>`` or ``postgres:<libpq dsn>``; relative
    paths (the SQLite file, ``data_path``) are relative to the data root."""

    catalog: str
    data_path: str = "lake"

    def __post_init__(self) -> None:
        kind, _, target = self.catalog.partition(":")
        if kind not in ("sqlite", "postgres") or not target:
            raise ValueError(f"warehouse.catalog {self.catalog!r}: expected sqlite:<path> or postgres:<dsn>")

    @property
    def kind(self) -> str:
        return self.catalog.partition(":")[0]

    def catalog_uri(self, root: Path) -> str:
        kind, _, target = self.catalog.partition(":")
        if kind == "sqlite":
            target = str((root / target).resolve())
        return f"ducklake:{kind}:{target}"

    def sqlite_file(self, root: Path) -> Path | None:
        return (root / self.catalog.partition(":")[2]).resolve() if self.kind == "sqlite" else None

    def data_dir(self, root: Path) -> Path:
        return (root / self.data_path).resolve()


def load_lake_extensions(con: duckdb.DuckDBPyConnection, catalog_kind: str) -> None:
    """Load DuckLake and its catalog's scanner from the pip packages' files (no download)."""
    for ext in ("ducklake", f"{catalog_kind}_scanner"):
        package = _LAKE_EXTENSIONS[ext]
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise RuntimeError(f"warehouse.kind ducklake needs the pip package {package.replace('_', '-')} "
                               f"(pip install -e '.[ducklake]'); it pins duckdb {_pinned_hint()}") from exc
        path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{ext}.duckdb_extension"
        if not path.is_file():
            found = sorted(p.name for p in (Path(module.__file__).parent / "extensions").glob("v*"))
            raise RuntimeError(f"{package}: no build for duckdb {duckdb.__version__} (has {', '.join(found)}); "
                               f"install the duckdb version it pins")
        con.execute(f"LOAD {_literal(str(path))}")


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """The process's working directory is ``path`` inside the block, restored after it."""
    try:
        previous: str | None = os.getcwd()
    except FileNotFoundError:  # the directory it was started in is gone
        previous = None
    os.chdir(path)
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                os.chdir(previous)


def _pinned_hint() -> str:
    return "(see pyproject.toml, extra ducklake)"


def _sqlite_wal(path: Path | None) -> None:
    """Create a SQLite catalog in WAL mode (persistent in the file): its readers then never wait for
    a writer, and writers wait only for each other."""
    if path is None or path.exists():
        return
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def _read_only_catalog(sqlite: Path | None, exc: Exception) -> ReadOnlyDataRoot | None:
    """The one-line error for a SQLite catalog that SQLite cannot open because its folder is read-only
    (it creates the ``-shm`` index beside a WAL-mode database even to read it), else None."""
    if sqlite is None or "unable to open database file" not in str(exc) or not sqlite.exists():
        return None
    folder = sqlite.parent
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        why = "the file system is mounted read-only"
    elif not os.access(folder, os.W_OK):
        why = "no write permission"
    else:
        return None
    return ReadOnlyDataRoot(f"{folder}: read-only ({why}); SQLite reads the DuckLake catalog {sqlite.name} only "
                            f"where it can create {sqlite.name}-shm beside it: make the folder writable or read a "
                            f"writable copy of the data root")


def _is_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    # SQLite catalogs answer "database is locked" while another process commits
    return isinstance(exc, duckdb.TransactionException) or any(
        sign in text for sign in ("conflict", "could not serialize", "database is locked"))


class Warehouse:
    """The warehouse of one data root: ``path`` is its embedded DuckDB file (``warehouse.duckdb``),
    whose folder is the data root; ``lake`` switches to DuckLake."""

    def __init__(self, path: Path, lake: LakeConfig | None = None, lock_timeout_s: float = 120.0,
                 conflict_retries: int = 20):
        self.path = Path(path)
        self.lake = lake
        self.lock_timeout_s = lock_timeout_s
        self.conflict_retries = conflict_retries
        self._schema_ready = False

    @property
    def root(self) -> Path:
        return self.path.parent.resolve()

    @property
    def kind(self) -> str:
        return "ducklake" if self.lake else "duckdb"

    def describe(self) -> str:
        if self.lake:
            return f"DuckLake catalog {self.lake.catalog}, data {self.lake.data_dir(self.root)}"
        return str(self.path)

    def exists(self) -> bool:
        if self.lake is None:
            return self.path.exists()
        sqlite = self.lake.sqlite_file(self.root)
        return sqlite.exists() if sqlite is not None else True

    @contextmanager
    def connect(self, read_only: bool = False, sandbox: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection whose relative paths resolve in the data root. ``sandbox`` (implies
        ``read_only``): external access is off except for reading the views' folders (and the lake's
        data files), and the configuration is locked, so no statement can write anywhere. DuckDB
        resolves a relative path against the process's working directory, so the sandbox moves it to
        the data root for the connection's life (process-wide: the sandbox is the one-shot
        ``conescope sql``'s) and allows the folders by their absolute, resolved paths only; DuckDB
        resolves symbolic links before it compares, so a link inside a folder to a file outside is refused."""
        read_only = read_only or sandbox
        if read_only and not self.exists():
            raise FileNotFoundError(f"{self.describe()}: no warehouse yet; materialize a profile first "
                                    f"(`conescope materialize`)")
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        with _working_directory(self.root) if sandbox else contextlib.nullcontext():
            if self.lake and not sandbox:
                con = self._lake_base().cursor()  # loading the extensions and attaching once per process
                con.execute(f"USE {LAKE_ALIAS}")
            else:
                con = self._open_lake(read_only, sandbox) if self.lake else self._open_file(read_only, sandbox)
            try:
                con.execute("SET enable_progress_bar = false")
                if sandbox:
                    for setting in self._sandbox_settings():
                        con.execute(setting)
                yield con
            finally:
                con.close()

    def sandbox_folders(self) -> list[Path]:
        """The folders a sandboxed connection may read: the views' and the lake's data files, each
        as written and as resolved (a folder that is a link to another disk is allowed where it points)."""
        folders = [self.root / folder for folder in VIEW_FOLDERS]
        if self.lake:
            folders.append(self.lake.data_dir(self.root))
        return list(dict.fromkeys([*folders, *(f.resolve() for f in folders)]))

    def _sandbox_settings(self) -> list[str]:
        allowed = ", ".join(_literal(f"{folder}/") for folder in self.sandbox_folders())
        return [f"SET allowed_directories = [{allowed}]", "SET enable_external_access = false",
                "SET lock_configuration = true"]

    def _lake_base(self) -> duckdb.DuckDBPyConnection:
        """This process's connection to the lake, shared by every Warehouse of the same lake (DuckLake
        gives each transaction its own snapshot, so one long-lived connection is safe; loading the
        extensions and attaching takes about half a second). A forked child opens its own."""
        assert self.lake is not None
        key = (os.getpid(), str(self.root), self.lake.catalog_uri(self.root), str(self.lake.data_dir(self.root)))
        with _BASES_LOCK:
            if key not in _BASES:
                _BASES[key] = self._open_lake(read_only=False)
            return _BASES[key]

    def _config(self, sandbox: bool = False) -> dict:
        config: dict = {"file_search_path": str(self.root)}
        if sandbox:  # no secret from ~/.duckdb/stored_secrets, no extension fetched or loaded by a query
            # A secret folder that cannot exist rather than allow_persistent_secrets = false: DuckLake's
            # PostgreSQL catalog looks its secret up in the persistent storage, which that setting removes.
            config.update(secret_directory=NO_SECRETS, autoinstall_known_extensions=False,
                          autoload_known_extensions=False)
        return config

    def _open_file(self, read_only: bool, sandbox: bool = False) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=self._config(sandbox))
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseLocked(f"{self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _open_lake(self, read_only: bool, sandbox: bool = False) -> duckdb.DuckDBPyConnection:
        assert self.lake is not None
        con = duckdb.connect(config=self._config(sandbox))
        try:
            load_lake_extensions(con, self.lake.kind)
            data = self.lake.data_dir(self.root)
            if not read_only:
                data.mkdir(parents=True, exist_ok=True)
                _sqlite_wal(self.lake.sqlite_file(self.root))
            options = f"DATA_PATH {_literal(str(data) + '/')}" + (", READ_ONLY" if read_only else "")
            try:
                self._retry(lambda: con.execute(f"ATTACH {_literal(self.lake.catalog_uri(self.root))} AS "
                                                f"{LAKE_ALIAS} ({options})"))
            except duckdb.Error as exc:
                unreadable = _read_only_catalog(self.lake.sqlite_file(self.root), exc)
                if unreadable is None:
                    raise
                raise unreadable from exc
            con.execute(f"USE {LAKE_ALIAS}")
        except BaseException:
            con.close()
            raise
        return con

    def fetch(self, con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> pa.Table:
        """The result of ``query`` as Arrow, retried while a DuckLake catalog is busy committing."""
        return self._retry(lambda: con.execute(query, params or []).fetch_arrow_table())

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, again after a randomised pause when a concurrent DuckLake commit conflicts."""
        for attempt in range(self.conflict_retries + 1):
            try:
                return fn()
            except duckdb.Error as exc:
                if self.lake is None or attempt == self.conflict_retries or not _is_conflict(exc):
                    raise
                time.sleep(random.uniform(0.01, 0.05) * 2 ** min(attempt, 5))
        raise AssertionError("unreachable")

    def _transaction(self, con: duckdb.DuckDBPyConnection, body: Callable[[], T]) -> T:
        def attempt() -> T:
            con.execute("BEGIN TRANSACTION")
            try:
                out = body()
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # a failed COMMIT has ended the transaction
                    con.execute("ROLLBACK")
                raise
            return out
        return self._retry(attempt)

    def ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the schemas, tables, columns and the ``metrics.all`` view that are missing. Nothing
        is written when all exist, so concurrent writers on DuckLake do not conflict on it."""
        if self._schema_ready:
            return

        def missing() -> list[str]:
            have = {(s, t, c) for s, t, c in con.execute(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                "WHERE table_catalog = current_database()").fetchall()}
            tables = {(s, t) for s, t, _ in have}
            schemas = {s for (s,) in con.execute("SELECT schema_name FROM information_schema.schemata "
                                                 "WHERE catalog_name = current_database()").fetchall()}
            todo = [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in ("metrics", "embeddings", "datasets", "experiments")
                    if s not in schemas]
            todo += [_ddl(f"experiments.{table}", columns) for table, columns in EXPERIMENT_COLUMNS.items()
                     if ("experiments", table) not in tables]
            for table in METRIC_TABLES:
                columns = METRIC_COLUMNS + EXTRA_COLUMNS.get(table, [])
                if ("metrics", table) not in tables:
                    todo.append(_ddl(f"metrics.{table}", columns))
                    continue
                # Warehouses written by an older version gain the contract's newer columns (null there).
                todo += [f"ALTER TABLE metrics.{table} ADD COLUMN {name} {typ}" for name, typ in columns
                         if ("metrics", table, name) not in have]
            if ("datasets", "rejects") not in tables:
                todo.append(_ddl("datasets.rejects", REJECT_COLUMNS))
            if todo or ("metrics", "all") not in tables:
                union = " UNION ALL BY NAME ".join(f"SELECT '{t}' AS family, * FROM metrics.{t}" for t in METRIC_TABLES)
                todo.append(f"CREATE OR REPLACE VIEW metrics.all AS {union}")
            return todo

        def create() -> None:
            for statement in missing():
                con.execute(statement)

        if missing():
            self._transaction(con, create)
        self._schema_ready = True

    def replace_rows(self, table: str, rows: pa.Table, where: Mapping[str, str],
                     exclude: Mapping[str, str] | None = None, null: Sequence[str] = ()) -> int:
        """Delete the rows of ``table`` matching ``where`` (column = value, all of them), ``null``
        (column IS NULL) and not ``exclude`` (column <> value) and insert ``rows`` by column name, in
        one transaction. Every row must itself match the filter, so a partition can never write into
        another's rows. Returns the number of rows deleted."""
        return self.replace_tables({table: rows}, where, exclude, null)[table]

    def replace_tables(self, tables: Mapping[str, pa.Table], where: Mapping[str, str],
                       exclude: Mapping[str, str] | None = None, null: Sequence[str] = ()) -> dict[str, int]:
        """:meth:`replace_rows` for several tables in one transaction: all are replaced or none.
        ``exclude`` lets two assets share a partition of a table (raw rows have ``transform = 'none'``,
        fitted-transform rows filter on ``transform <> 'none'``)."""
        exclude = dict(exclude or {})
        if not where:
            raise ValueError(f"{', '.join(tables)}: refusing to replace rows without a partition filter")
        for table, rows in tables.items():
            for column, value in [*where.items(), *((c, None) for c in null)]:
                if column not in rows.column_names:
                    raise ValueError(f"{table}: rows have no column {column!r} to match the partition filter")
                if rows.num_rows and set(rows.column(column).to_pylist()) != {value}:
                    raise ValueError(f"{table}: rows outside the partition {dict(where)} (column {column!r})")
            for column, value in exclude.items():
                if column not in rows.column_names:
                    raise ValueError(f"{table}: rows have no column {column!r} to match the partition filter")
                if value in rows.column(column).to_pylist():
                    raise ValueError(f"{table}: rows with {column} = {value!r} are outside this writer's filter")
        clause = " AND ".join([f"{column} = ?" for column in where] + [f"{column} IS NULL" for column in null]
                              + [f"{column} <> ?" for column in exclude])
        return self._replace(tables, f" WHERE {clause}", [*where.values(), *exclude.values()], where, null)

    def _replace(self, tables: Mapping[str, pa.Table], where_sql: str, params: list, where: Mapping[str, str],
                 null: Sequence[str]) -> dict[str, int]:
        """Delete the rows ``where_sql`` selects in each of ``tables`` and insert the given ones, in one
        transaction under the partition locks of (``where``, ``null``). Returns the rows deleted."""
        with self.connect() as con, self._partition_locks(tables, where, null):
            self.ensure_schema(con)

            def body() -> dict[str, int]:
                deleted = {}
                for table, rows in tables.items():
                    deleted[table] = int(con.execute(f"DELETE FROM {table}{where_sql}", params).fetchone()[0])
                    con.register("incoming_rows", rows)
                    try:
                        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                    finally:
                        con.unregister("incoming_rows")
                return deleted

            return self._transaction(con, body)

    @contextmanager
    def _partition_locks(self, tables: Iterable[str], where: Mapping[str, str], null: Sequence[str]) -> Iterator[None]:
        """On DuckLake, hold a file lock per (table, partition filter) for a replace: DuckLake does not
        serialize two transactions that delete the same rows before inserting theirs; when the
        partition is new both delete nothing, no conflict is detected, and both commit their rows
        (measured: 4 writers of one new partition stored it 4 times on a PostgreSQL catalog,
        docs/storage.md, "Concurrent writers"). Writers whose rows may overlap use the same filter (an
        asset owns its partition's rows, ``MetricAsset.owned_rows``); ``exclude`` only narrows a
        filter to rows no other writer of it has, so it is not part of the key. The locks live under
        the data root's scratch folder: they serialize the writers of the processes of one machine
        (of several only when the data root is a shared volume whose locks they all see). The
        embedded DuckDB file admits one writer at a time anyway."""
        if self.lake is None:
            yield
            return
        keys = sorted({_partition_key(table, where, null) for table in tables})
        with contextlib.ExitStack() as stack:
            for key in keys:  # in one order everywhere, so two writers of several tables cannot deadlock
                stack.enter_context(held_lock(self.root / "tmp" / "warehouse-locks" / f"{key}.lock",
                                              timeout_s=self.lock_timeout_s))
            yield

    def replace_whole_tables(self, tables: Mapping[str, pa.Table]) -> dict[str, int]:
        """Every row of each of ``tables`` replaced by the given rows, all tables in one transaction (the
        tables of an unpartitioned asset, which owns all their rows). Returns the rows deleted. On
        DuckLake the writers of a whole table take turns as a partition's do (``_partition_locks``)."""
        return self._replace(tables, "", [], {}, ())

    def refresh_views(self, root: Path, datasets: list[str]) -> list[str]:
        """(Re)create the views over the Parquet files of ``datasets`` that exist under ``root``;
        returns their names. A view stores its path relative to the data root; one that already
        reads that path is left alone (no write, so no conflict between concurrent writers)."""
        root = Path(root).resolve()
        wanted: dict[str, tuple[str, str]] = {}
        for ds in datasets:
            globs = {
                f"datasets.{ds}_samples": (f"datasets/{ds}/samples.parquet", False),
                f"datasets.{ds}_texts": (f"datasets/{ds}/texts.parquet", False),
                f"datasets.{ds}_pairs": (f"datasets/{ds}/pairs.parquet", False),  # STS only
                f"datasets.{ds}_word_pairs": (f"datasets/{ds}/word_pairs.parquet", False),  # word pairs only
                f"datasets.{ds}_lexicon": (f"datasets/{ds}/lexicon.parquet", False),  # valence lexicons only
                f"embeddings.{ds}_image": (f"embeddings/{ds}/image/*/*.parquet", True),
                f"embeddings.{ds}_text": (f"embeddings/{ds}/text/*/*/*.parquet", True),
                f"embeddings.{ds}_text_layers": (f"embeddings/{ds}/text_layers/*/*/*.parquet", True),
            }
            for view, (pattern, hive) in globs.items():
                if glob.glob(str(root / pattern)):
                    source = f"read_parquet({_literal(pattern)}"
                    wanted[view] = (source, f"SELECT * FROM {source}, hive_partitioning = {str(hive).lower()})")
        with self.connect() as con:
            self.ensure_schema(con)
            current = dict(con.execute("SELECT schema_name || '.' || view_name, sql FROM duckdb_views() "
                                       "WHERE database_name = current_database()").fetchall())
            # a view of an older version reads an absolute path: its quote is not right before the folder
            stale = {v: q for v, (source, q) in wanted.items() if source not in (current.get(v) or "")}
            if stale:
                def body() -> None:
                    for view, query in stale.items():
                        con.execute(f"CREATE OR REPLACE VIEW {view} AS {query}")
                self._transaction(con, body)
        return list(wanted)


def _partition_key(table: str, where: Mapping[str, str], null: Sequence[str]) -> str:
    """The lock file name of a table's partition: the table, then a hash of its filter."""
    digest = hashlib.sha256(json.dumps([table, sorted(where.items()), sorted(null)]).encode()).hexdigest()
    return f"{table}-{digest[:20]}"


def open_warehouse(root: Path, kind: str = "duckdb", catalog: str | None = None,
                   data_path: str = "lake") -> Warehouse:
    """The warehouse of the data root ``root`` for the profile's ``warehouse`` section."""
    if kind not in BACKENDS:
        raise ValueError(f"warehouse.kind {kind!r}: expected one of {', '.join(BACKENDS)}")
    lake = LakeConfig(catalog or "", data_path) if kind == "ducklake" else None
    return Warehouse(Path(root) / "warehouse.duckdb", lake)


def read_statement_forms() -> list[str]:
    """The statements ``conescope sql`` runs, as a user writes them (:data:`READ_STATEMENTS`)."""
    return [form for forms in READ_STATEMENTS.values() for form in forms]


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> list[duckdb.Statement]:
    """The statements of ``query``, as DuckDB parses them; refuse any that is not a query (COPY, ATTACH,
    SET, INSERT, ...), an EXPLAIN of anything but a query, and a query calling a table function outside
    :data:`READ_TABLE_FUNCTIONS` or a function of :data:`EFFECT_FUNCTIONS`."""
    statements = con.extract_statements(query)
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_STATEMENTS:
            raise ReadOnlyViolation(f"{_excerpt(statement.query)}: {kind} statement refused; the "
                                    f"warehouse is read-only here (queries only: "
                                    f"{', '.join(read_statement_forms())})")
        text = _explained(con, statement.query) if kind == "EXPLAIN" else statement.query
        _check_functions(con, text, statement.query)
    return statements


def _excerpt(text: str) -> str:
    return repr(" ".join(text.split())[:60])


def _explained(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """The statement an EXPLAIN explains (after ``EXPLAIN``, ``ANALYZE`` and a parenthesized option
    list, read with DuckDB's tokenizer); refused unless it is one query."""
    tokens = duckdb.tokenize(text)
    words = [(pos, text[pos:end].strip().lower()) for (pos, _), end in
             zip(tokens, [p for p, _ in tokens[1:]] + [len(text)], strict=True)]
    refused = ReadOnlyViolation(f"{_excerpt(text)}: EXPLAIN refused: it runs here only on a query "
                                f"({', '.join(READ_STATEMENTS['SELECT'])})")
    if not words or words[0][1] != "explain":
        raise refused
    at = 1
    if at < len(words) and words[at][1] in ("analyze", "analyse"):
        at += 1
    elif at < len(words) and words[at][1].startswith("("):
        while at < len(words) and not words[at][1].startswith(")"):
            at += 1
        at += 1
    if at >= len(words):
        raise refused
    inner = text[words[at][0]:]
    try:
        explained = con.extract_statements(inner)
    except duckdb.Error as exc:
        raise refused from exc
    if len(explained) != 1 or explained[0].type.name != "SELECT":
        raise refused
    return inner


def _check_functions(con: duckdb.DuckDBPyConnection, text: str, statement: str) -> None:
    """Refuse a query whose parse tree (DuckDB's ``json_serialize_sql``) calls a table function outside
    :data:`READ_TABLE_FUNCTIONS` or a scalar of :data:`EFFECT_FUNCTIONS`, or that cannot be serialized."""
    import json

    tree = json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [text]).fetchone()[0])
    if tree.get("error"):
        raise ReadOnlyViolation(f"{_excerpt(statement)}: refused, its parse cannot be checked "
                                f"({tree.get('error_message')})")
    refused: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "TABLE_FUNCTION":
                name = str((node.get("function") or {}).get("function_name", "")).lower()
                if name not in READ_TABLE_FUNCTIONS:
                    refused.append(f"table function {name}()")
            elif str(node.get("function_name", "")).lower() in EFFECT_FUNCTIONS:
                refused.append(f"function {node['function_name'].lower()}()")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    if refused:
        raise ReadOnlyViolation(f"{_excerpt(statement)}: {', '.join(dict.fromkeys(refused))} refused; the "
                                f"warehouse is read-only here (table functions that read only: read_parquet, "
                                f"read_csv, read_json, read_text, glob, duckdb_tables, ...)")

def experiment_rows(records: list[dict], table: str, code_version: str) -> pa.Table:
    """Records of ``experiments.<table>`` as an Arrow table of its columns (absent columns null; an
    unknown key is an error), stamped with ``computed_at`` and the writing asset's ``code_version``."""
    columns = EXPERIMENT_COLUMNS[table.removeprefix("experiments.")]
    schema = arrow_schema(columns)
    now = datetime.now(UTC)
    full = []
    for rec in records:
        unknown = set(rec) - set(schema.names)
        if unknown:
            raise ValueError(f"{table}: record has columns outside the table: {sorted(unknown)}")
        full.append({**dict.fromkeys(schema.names), "computed_at": now, "code_version": code_version, **rec})
    return pa.Table.from_pylist(full, schema=schema)


def metric_rows(records: list[dict], table: str | None = None, code_version: str | None = None) -> pa.Table:
    """Complete metric records with the contract's defaults and build an Arrow table of the contract
    schema of ``table`` (unknown keys are an error: they would be silently dropped otherwise).
    ``code_version``: the writing asset's (conescope/code_versions.py); the commit when not given."""
    from conescope.provenance import git_commit

    family = (table or "").removeprefix("metrics.")
    schema = arrow_schema(METRIC_COLUMNS + EXTRA_COLUMNS.get(family, []))
    now = datetime.now(UTC)
    defaults = {"transform": "none", "fit_set": None, "eval_set": None, "ci_low": None, "ci_high": None,
                "computed_at": now, "code_version": code_version or git_commit(), "params": None}
    full = []
    for rec in records:
        unknown = set(rec) - set(schema.names)
        if unknown:
            raise ValueError(f"metric record has columns outside the contract: {sorted(unknown)}")
        full.append({**defaults, **rec})
    return pa.Table.from_pylist(full, schema=schema)
