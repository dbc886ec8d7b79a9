"""The DuckLake backend: same tables, views and SQL as the embedded DuckDB file; many writers and
readers at once, on a SQLite catalog and on a real PostgreSQL server started by the test (Debian's
``postgresql`` package; skipped with the reason when it is not installed, installed by .ci/run)."""

from __future__ import annotations

import multiprocessing as mp
import re
import time
from pathlib import Path

import duckdb
import pytest

from conescope.metric_families import EXPERIMENT_TABLES
from conescope.profile import ProfileError, parse_profile
from storage.warehouse import METRIC_TABLES, LakeConfig, Warehouse, metric_rows
from tests.conftest import TINY_PROFILE
from tests.doc_pages import doc_text, section, sql_queries
from tests.postgres_server import postgres_bin, postgres_server

ROWS = 40  # rows per partition
PARTITIONS = 6  # per writer


def doc_queries() -> list[str]:
    """Every query of the README and the pages under docs/: the ``conescope sql "..."`` commands and
    the ```sql blocks."""
    text = doc_text()
    queries = [q for q in re.findall(r'conescope sql "([^"]+)"', text)]
    return [q for q in queries if q] + sql_queries(text)


def _lake(root: Path, catalog: str, data: Path) -> Warehouse:
    return Warehouse(root / "warehouse.duckdb", LakeConfig(catalog, str(data)))


def test_profile_warehouse_section():
    base = {k: v for k, v in TINY_PROFILE.items() if k != "transforms"}
    assert parse_profile(base, "t.yaml").warehouse.kind == "duckdb"
    lake = {"kind": "ducklake", "catalog": "sqlite:lake.sqlite"}
    spec = parse_profile({**base, "warehouse": lake}, "t.yaml").warehouse
    assert (spec.kind, spec.catalog, spec.data_path) == ("ducklake", "sqlite:lake.sqlite", "lake")
    with pytest.raises(ProfileError, match=r"warehouse.catalog: .mysql:x. does not match \^\(sqlite\|postgres\)"):
        parse_profile({**base, "warehouse": {"kind": "ducklake", "catalog": "mysql:x"}}, "t.yaml")
    with pytest.raises(ProfileError, match=r"t.yaml: warehouse.catalog: missing required key \(kind: ducklake\)"):
        parse_profile({**base, "warehouse": {"kind": "ducklake"}}, "t.yaml")
    with pytest.raises(ProfileError, match=r"t.yaml: warehouse.dta_path: unknown key \(allowed: catalog, data_path"):
        parse_profile({**base, "warehouse": {"kind": "ducklake", "catalog": "sqlite:x", "dta_path": "y"}}, "t.yaml")
    with pytest.raises(ProfileError, match=r"warehouse.catalog: only for kind: ducklake"):
        parse_profile({**base, "warehouse": {"catalog": "sqlite:x"}}, "t.yaml")
    with pytest.raises(ProfileError, match=r"warehouse.kind: 'sqlite' is not one of duckdb, ducklake"):
        parse_profile({**base, "warehouse": {"kind": "sqlite"}}, "t.yaml")


def test_doc_queries_answer_the_same_on_both_backends(materialized, tmp_path):
    """The warehouse of the tiny profile copied into DuckLake: every query of the documentation, same answer."""
    profile, root, _, _ = materialized
    embedded = Warehouse(root.warehouse)
    lake = _lake(root.root, f"sqlite:{tmp_path / 'catalog.sqlite'}", tmp_path / "lake")
    tables = [f"metrics.{t}" for t in METRIC_TABLES] + ["datasets.rejects"] + \
        [f"experiments.{t}" for t in EXPERIMENT_TABLES]
    with embedded.connect(read_only=True) as con:
        contents = {t: con.sql(f"SELECT * FROM {t}").to_arrow_table() for t in tables}
    with lake.connect() as con:
        lake.ensure_schema(con)
        for table, rows in contents.items():
            con.register("incoming", rows)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
    lake.refresh_views(root.root, list(profile.datasets))
    queries = doc_queries()
    assert len(queries) >= 10
    answered = missing = 0
    for query in queries:
        try:
            with embedded.connect(sandbox=True) as con:
                expected = con.sql(query).fetchall()
        except duckdb.CatalogException:  # a view the tiny profile has no data for (text layers)
            with pytest.raises(duckdb.CatalogException), lake.connect(sandbox=True) as con:
                con.sql(query).fetchall()
            missing += 1
            continue
        with lake.connect(sandbox=True) as con:
            got = con.sql(query).fetchall()
        assert sorted(map(repr, got)) == sorted(map(repr, expected)), query
        answered += bool(got)
    assert answered >= 10 and missing <= 2, (answered, missing, len(queries))


def _writer(catalog: str, root: str, data: str, writer: int, out) -> None:
    wh = _lake(Path(root), catalog, Path(data))
    for rep in range(2):  # the second pass replaces every partition: deletes race with inserts
        for p in range(PARTITIONS):
            model, lang = f"m{writer}", f"l{p}"
            rows = metric_rows([{"dataset": "d", "model": model, "lang": lang, "modality": "text",
                                 "metric": f"x{i}", "value": float(rep), "n": i} for i in range(ROWS)])
            wh.replace_rows("metrics.isotropy", rows, {"model": model, "lang": lang})
    out.put(("writer", writer, 0))


def _reader(catalog: str, root: str, data: str, stop, out, retry: bool) -> None:
    wh = _lake(Path(root), catalog, Path(data))
    reads = failed = torn = 0
    # a researcher's session: one read-only connection, polling while the writers commit
    with wh.connect(sandbox=True) as con:
        while not stop.is_set():
            try:
                query = "SELECT model, lang, count(*), count(DISTINCT value) FROM metrics.isotropy GROUP BY ALL"
                counts = wh.fetch(con, query).to_pylist() if retry else con.execute(query).fetchall()
                counts = [tuple(c.values()) if isinstance(c, dict) else c for c in counts]
                torn += sum(1 for *_, n, values in counts if n != ROWS or values != 1)  # half a partition
                reads += 1
            except Exception as exc:  # any failed read is counted, with its message
                failed += 1
                out.put(("error", repr(exc), 0))
            time.sleep(0.05)
    out.put(("reader", reads, failed, torn))


def _concurrent(catalog: str, root: Path, data: Path, writers: int = 4, readers: int = 2,
                retry_reads: bool = False) -> dict:
    # the schema exists before the race (as after any first materialization)
    with _lake(root, catalog, data).connect() as con:
        _lake(root, catalog, data).ensure_schema(con)
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    readers_p = [ctx.Process(target=_reader, args=(catalog, str(root), str(data), stop, out, retry_reads))
                 for _ in range(readers)]
    writers_p = [ctx.Process(target=_writer, args=(catalog, str(root), str(data), w, out)) for w in range(writers)]
    for p in readers_p + writers_p:
        p.start()
    for p in writers_p:
        p.join(timeout=300)
    time.sleep(0.5)
    stop.set()
    for p in readers_p:
        p.join(timeout=60)
    results = []
    while not out.empty():
        results.append(out.get())
    errors = [r[1] for r in results if r[0] == "error"]
    reads = [r for r in results if r[0] == "reader"]
    assert [p.exitcode for p in writers_p] == [0] * writers, errors[:3]
    assert len(reads) == readers and not errors, errors[:3]
    with _lake(root, catalog, data).connect(read_only=True) as con:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT (model, lang, metric)) FROM "
                                      "metrics.isotropy").fetchone()
        values = {v for (v,) in con.execute("SELECT DISTINCT value FROM metrics.isotropy").fetchall()}
    return {"rows": total, "distinct": distinct, "values": values, "reads": sum(r[1] for r in reads),
            "failed": sum(r[2] for r in reads), "torn": sum(r[3] for r in reads)}


def _check(result: dict, writers: int = 4) -> None:
    assert result["rows"] == result["distinct"] == writers * PARTITIONS * ROWS, result  # none lost, none twice
    assert result["values"] == {1.0}, result  # every partition holds its last write
    assert result["reads"] > 0 and result["failed"] == 0 and result["torn"] == 0, result


def test_four_writers_two_readers_on_a_sqlite_catalog(tmp_path):
    # a SQLite catalog answers "database is locked" while another process commits: reads retry
    _check(_concurrent(f"sqlite:{tmp_path / 'catalog.sqlite'}", tmp_path / "root", tmp_path / "lake",
                       retry_reads=True))


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (Debian: apt-get install "
                                                   "postgresql; .ci/run installs it)")
def test_four_writers_two_readers_on_a_postgres_catalog(tmp_path):
    with postgres_server() as dsn:
        _check(_concurrent(f"postgres:{dsn}", tmp_path / "root", tmp_path / "lake"))


def test_duckdb_pool_has_one_slot_on_the_file_and_more_on_ducklake():
    import dagster as dg

    from pipelines.instance import ensure_warehouse_pool

    with dg.instance_for_test() as instance:
        assert ensure_warehouse_pool(instance, "duckdb") == 1
        assert ensure_warehouse_pool(instance, "ducklake", slots=8) == 8
        assert instance.event_log_storage.get_concurrency_info("duckdb").slot_count == 8
        assert ensure_warehouse_pool(instance, "ducklake") == 8  # a limit set by hand is kept
        assert ensure_warehouse_pool(instance, "duckdb") == 1


def test_doc_warehouse_sections_parse():
    """Each ``warehouse:`` example of docs/scaling.md is a valid profile section."""
    import yaml

    block = section("docs/scaling.md", "## Warehouse backends").split("```yaml\n", 1)[1].split("```", 1)[0]
    base = {k: v for k, v in TINY_PROFILE.items() if k != "transforms"}
    kinds = [parse_profile({**base, **yaml.safe_load(line)}, "docs/scaling.md").warehouse.kind
             for line in block.splitlines() if line.strip()]
    assert kinds == ["duckdb", "ducklake", "ducklake"]


def test_materialize_and_query_on_ducklake(tmp_path, monkeypatch, capsys):
    """The pipeline end to end on a DuckLake warehouse with a SQLite catalog: every metric step
    writes, the views read the embeddings, `conescope sql` answers; no warehouse.duckdb is made."""
    import yaml

    from pipelines.cli import main
    from tests.test_crash import PROFILE

    root = tmp_path / "data"
    monkeypatch.setenv("CONESCOPE_HOME", str(root))
    profile = tmp_path / "lake.yaml"
    profile.write_text(yaml.safe_dump({**PROFILE, "datasets": {"shapes": {**PROFILE["datasets"]["shapes"], "n": 40}},
                                       "warehouse": {"kind": "ducklake", "catalog": "sqlite:catalog.sqlite"}}))
    assert main(["materialize", "--profile", str(profile)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    query = ("SELECT (SELECT count(*) FROM metrics.isotropy WHERE model = 'tiny.random' AND transform = 'none'), "
             "(SELECT count(*) FROM embeddings.shapes_image), (SELECT count(DISTINCT family) FROM metrics.all)")
    assert main(["sql", query, "--profile", str(profile), "--format", "csv"]) == 0
    isotropy, images, families = map(int, capsys.readouterr().out.splitlines()[1].split(","))
    assert isotropy > 0 and images == 40 and families >= 5
    assert (root / "catalog.sqlite").is_file() and any((root / "lake").rglob("*.parquet"))
    assert not (root / "warehouse.duckdb").exists()


def _race(catalog: str, root: Path, runs: int) -> None:
    """4 writers replacing one new partition at the same moment, twice, 2 readers polling it
    (tests/replace_race.py): no duplicated row, no torn read, no failed write or read."""
    from tests.replace_race import ROWS, race

    figures = race(root, catalog, runs)
    print(f"{catalog.partition(':')[0]} catalog: {figures}")
    assert figures["rows"] == runs * ROWS, figures
    assert (figures["duplicated"], figures["torn_reads"], figures["failed_writes"], figures["failed_reads"]) == \
        (0, 0, 0, 0), figures
    assert figures["reads"] > 0, figures


def test_writers_racing_on_a_new_partition_on_a_sqlite_catalog(tmp_path):
    _race(f"sqlite:{tmp_path / 'catalog.sqlite'}", tmp_path, runs=2)


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed")
def test_writers_racing_on_a_new_partition_on_a_postgres_catalog(tmp_path):
    with postgres_server() as dsn:
        _race(f"postgres:{dsn}", tmp_path, runs=2)


@pytest.mark.heavy
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_writers_racing_on_a_new_partition_ten_runs(tmp_path, backend):
    """The figures of docs/storage.md, "Concurrent writers": 10 runs per catalog."""
    if backend == "sqlite":
        _race(f"sqlite:{tmp_path / 'catalog.sqlite'}", tmp_path, runs=10)
    else:
        if postgres_bin() is None:
            pytest.skip("PostgreSQL is not installed")
        with postgres_server() as dsn:
            _race(f"postgres:{dsn}", tmp_path, runs=10)
