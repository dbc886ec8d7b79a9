"""Writers racing on one partition of a DuckLake warehouse, readers polling it (tests/test_ducklake.py).

Each run takes a partition nobody has written yet; 4 writer processes replace it at the same moment
(a barrier releases them together), then replace it again at the same moment (the partition now
exists). Each write is ``ROWS`` rows tagged with its writer and round (``params``). Two reader
processes poll the partition all along through one read-only connection each. Counted:

- duplicated rows: rows of the partition beyond ``ROWS`` (or a metric twice) once a run's writes end;
- torn reads: a read of the partition that is neither empty (before the first write) nor exactly one
  write's ``ROWS`` rows;
- failed writes: ``replace_rows`` raising (after its own retries);
- failed reads: a query raising (after ``Warehouse.fetch``'s retries).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from pathlib import Path

from storage.warehouse import LakeConfig, Warehouse, metric_rows

ROWS = 300
ROUNDS = 2  # the first write creates the partition, the second replaces it
TABLE = "metrics.isotropy"
MODEL = "race"


def _lake(root: str, catalog: str) -> Warehouse:
    return Warehouse(Path(root) / "warehouse.duckdb", LakeConfig(catalog, "lake"))


def _rows(lang: str, tag: str):
    return metric_rows([{"dataset": "d", "model": MODEL, "lang": lang, "modality": "text", "metric": f"x{i}",
                         "value": float(i), "n": i, "params": tag} for i in range(ROWS)], TABLE)


def _writer(root: str, catalog: str, writer: int, runs: int, barrier, out) -> None:
    wh = _lake(root, catalog)
    for run in range(runs):
        for rnd in range(ROUNDS):
            rows = _rows(f"r{run}", f"w{writer}.{rnd}")
            barrier.wait()
            try:
                wh.replace_rows(TABLE, rows, {"model": MODEL, "lang": f"r{run}"})
                out.put(("write", run, None))
            except Exception as exc:  # counted, with its message
                out.put(("write", run, f"{type(exc).__name__}: {exc}"))


QUERY = (f"SELECT lang, count(*), count(DISTINCT params), count(DISTINCT metric) FROM {TABLE} "
         f"WHERE model = '{MODEL}' GROUP BY lang")


def _reader(root: str, catalog: str, stop, out) -> None:
    wh = _lake(root, catalog)
    reads = torn = failed = 0
    errors: list[str] = []
    with wh.connect(read_only=True) as con:
        while not stop.is_set():
            try:
                for lang, n, tags, metrics in (tuple(r.values()) for r in wh.fetch(con, QUERY).to_pylist()):
                    if (n, tags, metrics) != (ROWS, 1, ROWS):
                        torn += 1
                        errors.append(f"torn read of {lang}: {n} rows, {tags} writes, {metrics} metrics")
                reads += 1
            except Exception as exc:
                failed += 1
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)
    out.put(("reader", reads, torn, failed, errors[:3]))


def race(root: Path, catalog: str, runs: int, writers: int = 4, readers: int = 2, timeout_s: float = 600) -> dict:
    """Run ``runs`` races on the lake at ``root`` (created if missing); the figures of all of them."""
    wh = _lake(str(root), catalog)
    with wh.connect() as con:  # the schema exists before the race, as after any first materialization
        wh.ensure_schema(con)
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    barrier = ctx.Barrier(writers + 1)  # and this process, which checks the partition after each round
    started = time.perf_counter()
    procs = [ctx.Process(target=_reader, args=(str(root), catalog, stop, out)) for _ in range(readers)]
    procs += [ctx.Process(target=_writer, args=(str(root), catalog, w, runs, barrier, out)) for w in range(writers)]
    for p in procs:
        p.start()
    writes: list[str | None] = []
    figures = {"runs": runs, "rows": 0, "duplicated": 0, "torn_reads": 0, "failed_writes": 0, "reads": 0,
               "failed_reads": 0, "errors": []}
    results = []

    def receive(until) -> None:
        while not until() and time.monotonic() < deadline:
            try:
                kind, *rest = out.get(timeout=1)
            except queue.Empty:
                continue
            if kind == "write":
                writes.append(rest[1])
            else:
                results.append(rest)

    deadline = time.monotonic() + timeout_s
    try:
        for run in range(runs):
            for rnd in range(ROUNDS):
                barrier.wait(timeout=max(1.0, deadline - time.monotonic()))  # the writers start together
                expected = (run * ROUNDS + rnd + 1) * writers
                receive(lambda: len(writes) >= expected)  # noqa: B023
                n, metrics = _partition(wh, f"r{run}")
                figures["duplicated"] += n - metrics
                figures["rows"] += n if rnd == ROUNDS - 1 else 0
        stop.set()
        receive(lambda: len(results) >= readers)
    finally:
        stop.set()
        barrier.abort()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["failed_writes"] = sum(e is not None for e in writes) + (runs * ROUNDS * writers - len(writes))
    figures["errors"] = [e for e in writes if e is not None][:3]
    for reads, torn, failed, errors in results:
        figures["reads"] += reads
        figures["torn_reads"] += torn
        figures["failed_reads"] += failed
        figures["errors"] += errors
    return figures


def _partition(wh: Warehouse, lang: str) -> tuple[int, int]:
    """(rows, distinct metrics) of the race's partition ``lang``."""
    with wh.connect(read_only=True) as con:
        row = wh.fetch(con, f"SELECT count(*) AS n, count(DISTINCT metric) AS metrics FROM {TABLE} "
                            f"WHERE model = ? AND lang = ?", [MODEL, lang]).to_pylist()[0]
    return row["n"], row["metrics"]
