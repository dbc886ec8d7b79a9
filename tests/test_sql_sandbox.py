"""``conescope sql`` runs read statements only and reads inside the data root only, whatever the working
directory: every escape attempt of the trial is refused with one line and leaves the data root and the
working directory byte for byte as they were (both backends)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import main
from storage import warehouse as wh_module
from storage.warehouse import LakeConfig, ReadOnlyViolation, Warehouse, check_read_only, metric_rows
from tests.conftest import TINY_PROFILE

ROWS = 120
PART = "embeddings/shapes/image/model=vit-b-32.random/part-00000.parquet"
SECRET = "do not print me"


EMPTY = hashlib.sha256(b"").hexdigest()


def snapshot(*folders: Path) -> dict[str, str]:
    """Every entry under ``folders``: a file's SHA-256, a link's target, a folder's name. Left out: what
    SQLite creates beside a WAL-mode catalog for any reader (https://sqlite.org/wal.html, "the wal-index"):
    its shared-memory index (``-shm``) and an empty ``-wal``; a ``-wal`` with content would count."""
    state = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if name.endswith(".sqlite-shm") or (name.endswith(".sqlite-wal") and not path.stat().st_size):
                    continue
                if path.is_symlink():
                    state[str(path)] = f"link {os.readlink(path)}"
                elif path.is_dir():
                    state[str(path)] = "folder"
                else:
                    state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _populate(wh: Warehouse, root: Path) -> None:
    # enough rows for DuckLake to write a data file rather than inline them in its catalog
    wh.replace_rows("metrics.isotropy", metric_rows([{"dataset": "shapes", "model": "m", "lang": "en",
                                                      "modality": "text", "metric": f"i{i}", "value": 0.25, "n": 4}
                                                     for i in range(ROWS)]),
                    {"model": "m", "lang": "en"})
    part = root / PART
    part.parent.mkdir(parents=True)
    pq.write_table(pa.table({"sample_id": [f"s{i}" for i in range(ROWS)]}), part)
    wh.refresh_views(root, ["shapes"])
    for con in wh_module._BASES.values():  # the lake's writer connection: closed, as after a run
        con.close()
    wh_module._BASES.clear()


@pytest.fixture(params=["duckdb", "ducklake"])
def sandboxed(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A data root with a metric table, an embedding part of 120 rows and its view; a working directory
    outside it holding ``embeddings/secret.txt``; a file outside both; links from inside the root to
    them. Returns (data root, working directory, outside folder, profile path, lake data file or None)."""
    root, cwd, outside = tmp_path / "data", tmp_path / "cwd", tmp_path / "outside"
    profile = {k: v for k, v in TINY_PROFILE.items() if k != "transforms"}
    lake = None
    if request.param == "ducklake":
        profile["warehouse"] = {"kind": "ducklake", "catalog": "sqlite:lake.sqlite"}
        lake = LakeConfig("sqlite:lake.sqlite")
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    _populate(Warehouse(root / "warehouse.duckdb", lake), root)
    (cwd / "embeddings").mkdir(parents=True)
    (cwd / "embeddings" / "secret.txt").write_text(SECRET)
    outside.mkdir()
    (outside / "secret.csv").write_text(f"a\n{SECRET}\n")
    (root / "secret_root.txt").write_text(SECRET)  # in the data root, outside the views' folders
    (root / "embeddings" / "to_outside.csv").symlink_to(outside / "secret.csv")
    (root / "embeddings" / "to_root.txt").symlink_to(root / "secret_root.txt")
    (root / "embeddings" / "outside_dir").symlink_to(outside, target_is_directory=True)
    data_file = next((root / "lake").rglob("*.parquet")) if lake else None
    monkeypatch.setenv("CONESCOPE_HOME", str(root))
    monkeypatch.chdir(cwd)
    return root, cwd, outside, profile_path, data_file


REFUSED_BY_THE_CHECK = {"explain analyze copy", "copy", "explain forms", "behind ; comments ctes", "other statements",
                        "functions that write", "query()", "secrets"}


def attempts(root: Path, outside: Path, data_file: Path | None) -> dict[str, list[str]]:
    """The trial's classes, each with its attempts: the issue's EXPLAIN ANALYZE COPY onto a stored part
    (and, on DuckLake, a data file), other EXPLAIN forms, writes behind ';', comments and CTEs, functions
    that write from inside a SELECT, query() and its kin, reads outside the root, traversal, symbolic
    links, the working directory, URLs, secrets."""
    copy = "COPY (SELECT 'x' AS sample_id) TO '{}' (FORMAT parquet)"
    targets = [str(root / PART), PART, "embeddings/x.csv", str(outside / "x.csv")]
    if data_file is not None:
        targets.insert(0, str(data_file))
    return {
        "explain analyze copy": [f"EXPLAIN ANALYZE {copy.format(t)}" for t in targets],
        "copy": [copy.format(t) for t in targets],
        "explain forms": [
            f"EXPLAIN (ANALYZE) {copy.format(PART)}", f"EXPLAIN (ANALYZE, FORMAT json) {copy.format(PART)}",
            f"explain analyse {copy.format(PART)}", f"EXPLAIN {copy.format(PART)}",
            f"/* a comment */ EXPLAIN ANALYZE {copy.format(PART)}", f"EXPLAIN /* c */ ANALYZE {copy.format(PART)}",
            "EXPLAIN ANALYZE EXPORT DATABASE 'embeddings/export'", "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
            "EXPLAIN ANALYZE DELETE FROM metrics.isotropy",
            "EXPLAIN ANALYZE INSERT INTO metrics.isotropy SELECT * FROM metrics.isotropy",
            "EXPLAIN ANALYZE SELECT 1; " + copy.format(PART)],
        "behind ; comments ctes": [
            f"SELECT 1; {copy.format(PART)}", f"SELECT 1 /* ; */; {copy.format(PART)}",
            f"SELECT 1 -- comment\n; {copy.format(PART)}", f"/* SELECT */ {copy.format(PART)}",
            "WITH x AS (SELECT 1 AS a) INSERT INTO metrics.isotropy (value) SELECT a FROM x",
            "WITH x AS (SELECT 1) DELETE FROM metrics.isotropy"],
        "other statements": [
            "DELETE FROM metrics.isotropy", "UPDATE metrics.isotropy SET value = 0", "CREATE TABLE metrics.t (a INT)",
            "DROP TABLE metrics.isotropy", "EXPORT DATABASE 'embeddings/export'",
            f"COPY metrics.isotropy TO '{root}/embeddings/m.parquet'", f"ATTACH '{root}/embeddings/x.duckdb' AS x",
            f"ATTACH '{outside}/x.duckdb' AS x", "SET enable_external_access = true", "RESET allowed_directories",
            "PRAGMA enable_profiling", "INSTALL httpfs", "LOAD httpfs", "CHECKPOINT", "VACUUM",
            "CALL enable_logging()"],
        "functions that write": [
            "SELECT * FROM enable_logging(storage = 'file', storage_path = 'embeddings/log')",
            "SELECT * FROM range(1), LATERAL (SELECT * FROM enable_logging(storage = 'file', storage_path = 'log'))",
            "SELECT * FROM enable_profiling()", "SELECT * FROM checkpoint()", "SELECT * FROM truncate_duckdb_logs()",
            "SELECT write_log('x', level := 'error')", "SELECT * FROM sqlite_query('lake.sqlite', 'DELETE FROM x')",
            "SELECT * FROM ducklake_expire_snapshots('conescope_lake', older_than => now())",
            "SELECT * FROM ducklake_cleanup_old_files('conescope_lake', cleanup_all => true)"],
        "query()": [  # SQL text that the check cannot see
            "SELECT * FROM query('{}')".format(copy.format(PART).replace("'", "''")),
            "SELECT * FROM query('SELECT 1')",
            "SELECT * FROM query_table('metrics.isotropy')",
            "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))"],
        "reads outside the root": [
            f"SELECT * FROM read_csv('{outside}/secret.csv')", f"SELECT * FROM '{outside}/secret.csv'",
            f"SELECT content FROM read_text('{root}/secret_root.txt')",
            "SELECT content FROM read_text('secret_root.txt')", "SELECT * FROM read_text('lake.sqlite')",
            "SELECT * FROM read_blob('dagster_home/dagster.yaml')", "SELECT * FROM glob('/etc/*')",
            "SELECT * FROM read_text('/etc/hostname')", "SELECT * FROM read_text('~/.bashrc')"],
        "traversal": [
            "SELECT content FROM read_text('embeddings/../secret_root.txt')",
            f"SELECT content FROM read_text('{root}/embeddings/../secret_root.txt')",
            "SELECT content FROM read_text('embeddings/../../outside/secret.csv')"],
        "symbolic links": [
            "SELECT content FROM read_text('embeddings/to_outside.csv')",
            "SELECT content FROM read_text('embeddings/to_root.txt')",
            "SELECT content FROM read_text('embeddings/outside_dir/secret.csv')",
            "SELECT * FROM read_csv('embeddings/*.csv')"],
        "working directory": [f"SELECT content FROM read_text('{Path.cwd()}/embeddings/secret.txt')"],
        "urls": [
            "SELECT * FROM read_csv('https://example.com/x.csv')", "SELECT * FROM 's3://bucket/x.parquet'",
            "SELECT * FROM read_json('hf://datasets/x/y.json')", "SELECT * FROM read_text('file:///etc/hostname')"],
        "secrets": [
            "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "SELECT * FROM duckdb_secrets()",
            "SELECT * FROM which_secret('s3://b/x', 's3')", "DROP SECRET s"],
    }


def test_every_escape_is_refused_and_nothing_on_disk_changes(sandboxed, capsys):
    root, cwd, outside, profile, data_file = sandboxed
    count = ["sql", "SELECT count(*) AS n FROM embeddings.shapes_image", "--format", "csv", "--profile", str(profile)]
    assert main(count) == 0, capsys.readouterr().err  # the sandbox opens: a refusal below is the check's
    assert capsys.readouterr().out.splitlines() == ['"n"', str(ROWS)]
    before = snapshot(root, cwd, outside)
    classes = attempts(root, outside, data_file)
    tries = [(name, query) for name, queries in classes.items() for query in queries]
    assert len(tries) == len({q for _, q in tries}) == (81 if data_file else 79)
    if data_file is not None:  # DuckLake (a second a try to attach): two of each class, the lake file first
        tries = [(name, query) for name, queries in classes.items() for query in queries[:2]]
    for name, query in tries:
        code = main(["sql", query, "--profile", str(profile)])
        out, err = capsys.readouterr()
        assert code == 2, (query, out)
        assert err.startswith("conescope: error: ") and len(err.strip().splitlines()) == 1, (query, err)
        assert SECRET not in out + err, query
        # refused by the statement check, else by DuckDB's file access (a few are not even valid SQL)
        assert ("refused" in err or "Parser Error" in err) if name in REFUSED_BY_THE_CHECK else \
            "conescope sql reads only" in err, (query, err)
        assert snapshot(root, cwd, outside) == before, query
    # the working directory's embeddings/secret.txt: the path means the data root's, where there is none
    for query in ["SELECT content FROM read_text('embeddings/secret.txt')",
                  "SELECT content FROM read_text('./embeddings/secret.txt')"]:
        assert main(["sql", query, "--format", "csv", "--profile", str(profile)]) == 0
        assert capsys.readouterr().out.splitlines() == ['"content"'], query
    # the stored part and the view are untouched: 120 rows
    assert main(count) == 0
    assert capsys.readouterr().out.splitlines() == ['"n"', str(ROWS)]
    assert snapshot(root, cwd, outside) == before
    assert Path.cwd() == cwd, "the working directory is given back"


def test_queries_still_run_and_relative_paths_mean_the_data_root(sandboxed, capsys):
    """From a working directory outside the root, a relative path reads the root's file; EXPLAIN and
    EXPLAIN ANALYZE of a query run; the table functions that read are there."""
    root, cwd, outside, profile, _ = sandboxed
    before = snapshot(root, cwd, outside)
    (cwd / PART).parent.mkdir(parents=True)
    pq.write_table(pa.table({"sample_id": ["cwd"]}), cwd / PART)  # a decoy of the same name
    before = snapshot(root, cwd, outside)
    queries = {f"SELECT count(*) AS n FROM read_parquet('{PART}')": str(ROWS),
               f"SELECT count(*) AS n FROM '{PART}'": str(ROWS),
               f"SELECT count(*) AS n FROM read_parquet('{root / PART}')": str(ROWS),
               "SELECT count(*) AS n FROM glob('embeddings/**/*.parquet')": "1",
               "EXPLAIN ANALYZE SELECT count(*) FROM embeddings.shapes_image": None,
               "EXPLAIN (ANALYZE, FORMAT json) SELECT 1": None, "EXPLAIN SELECT 1": None,
               "/* first */ EXPLAIN ANALYZE WITH x AS (SELECT 1 AS a) SELECT a FROM x": None,
               "SELECT count(*) AS n FROM duckdb_tables() WHERE schema_name = 'metrics'": None,
               "SUMMARIZE metrics.isotropy": None}
    for query, expected in queries.items():
        assert main(["sql", query, "--format", "csv", "--profile", str(profile)]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out.splitlines()
        if expected is not None:
            assert out == ['"n"', expected], query
    assert snapshot(root, cwd, outside) == before


def test_a_views_folder_linked_to_another_disk_is_read_where_it_points(tmp_path, monkeypatch, capsys):
    root, disk = tmp_path / "data", tmp_path / "disk"
    _populate(Warehouse(root / "warehouse.duckdb"), root)
    (root / "embeddings").rename(disk)
    (root / "embeddings").symlink_to(disk, target_is_directory=True)
    monkeypatch.setenv("CONESCOPE_HOME", str(root))
    assert main(["sql", "SELECT count(*) AS n FROM embeddings.shapes_image", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"n"', str(ROWS)]


@pytest.mark.parametrize("query", [
    "SELECT 1", "WITH a AS (SELECT 1) SELECT * FROM a", "FROM range(3)", "VALUES (1)", "SHOW ALL TABLES",
    "DESCRIBE SELECT 1", "SUMMARIZE SELECT 1", "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1",
    "explain analyse select 1", "EXPLAIN (FORMAT json) SELECT 1", "SELECT upper('a'), count(*) FROM range(3)",
    "SELECT * FROM read_parquet('embeddings/x/*.parquet', hive_partitioning = true)"])
def test_the_check_passes_queries(query):
    import duckdb

    with duckdb.connect() as con:
        assert len(check_read_only(con, query)) == 1


@pytest.mark.parametrize(("query", "reason"), [
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'", "EXPLAIN refused: it runs here only on a query"),
    ("EXPLAIN (ANALYZE) CREATE TABLE t AS SELECT 1", "EXPLAIN refused"),
    ("SELECT 1; COPY (SELECT 1) TO 'x.csv'", "COPY statement refused"),
    ("SELECT * FROM query('SELECT 1')", "table function query() refused"),
    ("SELECT * FROM t, LATERAL (SELECT * FROM enable_logging())", "table function enable_logging() refused"),
    ("SELECT list_transform([1], x -> write_log('a'))", "function write_log() refused"),
    ("SELECT nextval('s')", "function nextval() refused"),
    ("SELECT * FROM main.Enable_Logging()", "table function enable_logging() refused")])
def test_the_check_names_what_it_refuses(query, reason):
    import re

    import duckdb

    with duckdb.connect() as con, pytest.raises(ReadOnlyViolation, match=re.escape(reason)):
        check_read_only(con, query)


def test_a_sandboxed_connection_reads_no_stored_secret(tmp_path):
    """No secret of the user's DuckDB secret folder reaches a sandboxed connection: its folder is a path
    under a file (it cannot exist), not the setting that removes persistent storage altogether, which
    DuckLake's PostgreSQL catalog needs to attach (tests/test_ducklake.py reads through it)."""
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    with wh.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS metrics")
    assert not Path(wh_module.NO_SECRETS).exists()
    with wh.connect(read_only=True, sandbox=True) as con:
        assert con.execute("SELECT current_setting('secret_directory')").fetchone() == (wh_module.NO_SECRETS,)
        # listing the persistent secrets is out of the sandbox's file system access altogether
        with pytest.raises(duckdb.PermissionException, match=re.escape(wh_module.NO_SECRETS)):
            con.execute("SELECT count(*) FROM duckdb_secrets()").fetchone()
