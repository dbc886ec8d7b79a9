"""Benchmark of the warehouse backends under concurrent writers: prints figures, asserts nothing.

    .venv/bin/python bench/warehouse.py [--partitions 360] [--rows 200] [--writers 1 2 4]
                                        [--backends duckdb ducklake-sqlite ducklake-postgres]

Each writer is its own process and replaces its share of ``--partitions`` metric partitions
(``Warehouse.replace_rows``, ``--rows`` rows each) as the metric assets do; one reader process polls
``SELECT count(*)`` meanwhile, every 0.1 s: on the DuckDB file with a fresh read-only connection per
read (the file admits no reader while a writer holds it, so reads wait), on DuckLake with one
long-lived connection. Printed per backend and writer count: rows written per second (wall time of
the writers), reader latency (median and p95 of the reads, connection included for the file) and
failed reads. ``ducklake-postgres`` starts a throw-away PostgreSQL server (tests/postgres_server.py;
skipped when PostgreSQL is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.warehouse import LakeConfig, Warehouse, metric_rows  # noqa: E402


def _warehouse(root: str, catalog: str | None) -> Warehouse:
    lake = LakeConfig(catalog, str(Path(root) / "lake")) if catalog else None
    return Warehouse(Path(root) / "warehouse.duckdb", lake)


def _write(root: str, catalog: str | None, partitions: list[int], rows: int, start, out) -> None:
    wh = _warehouse(root, catalog)
    start.wait()
    t0 = time.perf_counter()
    for p in partitions:
        model, lang = f"m{p % 3}", f"l{p}"
        records = [{"dataset": "bench", "model": model, "lang": lang, "modality": "text", "metric": f"x{i}",
                    "value": float(i), "n": rows} for i in range(rows)]
        wh.replace_rows("metrics.isotropy", metric_rows(records, "metrics.isotropy"), {"model": model, "lang": lang})
    out.put(("writer", time.perf_counter() - t0))


def _read(root: str, catalog: str | None, start, stop, out) -> None:
    wh = _warehouse(root, catalog)
    latencies, failed = [], 0
    start.wait()
    with contextlib.ExitStack() as stack:
        lake_con = stack.enter_context(wh.connect(read_only=True)) if catalog else None
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                if lake_con is not None:
                    wh.fetch(lake_con, "SELECT count(*) FROM metrics.isotropy")
                else:
                    with wh.connect(read_only=True) as con:
                        con.execute("SELECT count(*) FROM metrics.isotropy").fetchall()
                latencies.append(time.perf_counter() - t0)
            except Exception:  # a failed read is counted, never fatal to the bench
                failed += 1
            time.sleep(0.1)
    out.put(("reader", latencies, failed))


def run(backend: str, catalog: str | None, writers: int, partitions: int, rows: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="conescope-bench-wh-") as root:
        wh = _warehouse(root, catalog)
        with wh.connect() as con:  # the schema exists, as after any first materialization
            wh.ensure_schema(con)
        del wh
        ctx = mp.get_context("spawn")
        start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        shares = [list(range(w, partitions, writers)) for w in range(writers)]
        procs = [ctx.Process(target=_write, args=(root, catalog, share, rows, start, out)) for share in shares]
        reader = ctx.Process(target=_read, args=(root, catalog, start, stop, out))
        for p in [*procs, reader]:
            p.start()
        time.sleep(3)  # every process has imported and connected
        t0 = time.perf_counter()
        start.set()
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0
        stop.set()
        reader.join()
        results = [out.get() for _ in range(writers + 1)]
        latencies, failed = next((r[1], r[2]) for r in results if r[0] == "reader")
        with _warehouse(root, catalog).connect(read_only=True) as con:
            stored = con.execute("SELECT count(*) FROM metrics.isotropy").fetchone()[0]
    q = sorted(latencies) or [float("nan")]
    return {"backend": backend, "writers": writers, "rows_per_s": partitions * rows / wall, "wall_s": wall,
            "stored": stored, "expected": partitions * rows, "reads": len(latencies), "failed": failed,
            "read_median_ms": 1000 * statistics.median(q), "read_p95_ms": 1000 * q[int(0.95 * (len(q) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=360)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--backends", nargs="+", default=["duckdb", "ducklake-sqlite", "ducklake-postgres"])
    args = parser.parse_args()
    print(f"{args.partitions} partitions x {args.rows} rows; one reader polling every 0.1 s")
    print(f"{'backend':<18} {'writers':>7} {'rows/s':>9} {'wall s':>7} {'stored':>8} {'reads':>6} {'failed':>6} "
          f"{'read ms p50':>11} {'p95':>7}")
    for backend in args.backends:
        if backend == "ducklake-postgres":
            from tests.postgres_server import postgres_bin

            if postgres_bin() is None:
                print(f"{backend:<18} skipped: PostgreSQL is not installed")
                continue
        for writers in args.writers:
            with contextlib.ExitStack() as stack:
                if backend == "duckdb":
                    catalog = None
                elif backend == "ducklake-sqlite":
                    catalog = "sqlite:catalog.sqlite"
                else:  # a fresh server (and catalog) for each measurement
                    from tests.postgres_server import postgres_server

                    catalog = f"postgres:{stack.enter_context(postgres_server())}"
                r = run(backend, catalog, writers, args.partitions, args.rows)
                print(f"{backend:<18} {writers:>7} {r['rows_per_s']:>9.0f} {r['wall_s']:>7.1f} {r['stored']:>8} "
                      f"{r['reads']:>6} {r['failed']:>6} {r['read_median_ms']:>11.1f} {r['read_p95_ms']:>7.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
