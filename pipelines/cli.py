"""The ``conescope`` command: materialize a profile, serve the UI, query the warehouse."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from storage.paths import DataRoot

REPO = Path(__file__).resolve().parent.parent


def _warehouse(profile_name: str | None):
    from conescope.profile import load_profile
    from storage.warehouse import open_warehouse

    spec = load_profile(profile_name).warehouse
    return open_warehouse(DataRoot.from_env().root, spec.kind, spec.catalog, spec.data_path)


def _materialize(args: argparse.Namespace) -> int:
    from conescope.profile import load_profile
    from pipelines.refresh import REPORTS_JOB, SUMMARY_JOB, execute_plan, full_plan

    root = DataRoot.from_env()
    profile = load_profile(args.profile)
    # an unknown --model or --lang fails here, before anything is started or written
    plan = full_plan(profile, f"cli-{time.strftime('%Y%m%dT%H%M%S')}", args.model or None, args.lang or None)
    import dagster as dg

    from pipelines.definitions import build_definitions
    from pipelines.instance import ensure_dagster_home, ensure_warehouse_pool, recover_dead_runs

    ensure_dagster_home(root)
    defs = build_definitions(profile, str(root.root))
    print(f"profile {profile.name} ({profile.source}), data root {root.root}: {len(plan)} runs")
    if args.lang and set(profile.languages) - set(args.lang):
        print(f"note: {SUMMARY_JOB} and {REPORTS_JOB} read every language of the profile; they run "
              f"when no --lang is given")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        recover_dead_runs(instance)
        ensure_warehouse_pool(instance, profile.warehouse.kind)
        if not execute_plan(defs, plan, instance, debug=args.debug, force=args.force):
            return 1
    print(f"done in {time.perf_counter() - started:.1f} s; try: conescope sql \"SELECT * FROM metrics.isotropy\"")
    return 0


def _sql(args: argparse.Namespace) -> int:
    from storage.warehouse import check_read_only

    # sandboxed: no file outside the views' folders is reachable, no statement but a query runs
    with _warehouse(args.profile).connect(sandbox=True) as con:
        check_read_only(con, args.query)
        rel = con.sql(args.query)
        if rel is None:
            return 0
        if args.format == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(rel.to_arrow_table(), sys.stdout.buffer)
        else:
            rel.show(max_rows=args.max_rows, max_width=args.max_width)
    return 0


def _dev(args: argparse.Namespace) -> int:
    import dagster as dg

    from conescope.profile import load_profile
    from pipelines.instance import (
        configured_max_runs,
        ensure_dagster_home,
        ensure_gpu_pool,
        ensure_warehouse_pool,
        run_thread_env,
    )

    root = DataRoot.from_env()
    profile = load_profile()
    ensure_dagster_home(root)
    threads = run_thread_env(configured_max_runs(root))
    os.environ.update(threads)  # inherited by the code server and every run it launches
    with dg.DagsterInstance.get() as instance:
        print(f"conescope dev: pool 'gpu' (embedding steps) has {ensure_gpu_pool(instance)} slot(s), pool "
              f"'duckdb' (warehouse writers, {profile.warehouse.kind}) "
              f"{ensure_warehouse_pool(instance, profile.warehouse.kind)}; runs use "
              f"{threads['OMP_NUM_THREADS']} thread(s) each (OMP_NUM_THREADS)")
    os.environ["CONESCOPE_HOME"] = str(root.root)  # the code server resolves it from the repository
    # Dagster's `dagster dev`, its daemon's backfill loop acting when a backfill's run ends (pipelines/daemon.py)
    cmd = [sys.executable, "-m", "pipelines.daemon", "dev", "-w", str(REPO / "workspace.yaml"),
           "-p", str(args.port), "-h", args.host]
    os.chdir(REPO)
    from pipelines.supervise import run_supervised

    return run_supervised(cmd)  # stops the webserver, daemon and code servers with it (SIGTERM, Ctrl-C)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ValueError | OSError | RuntimeError | LookupError) else \
        f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conescope", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="materialize what is stale or missing in every partition of a profile")
    mat.add_argument("--profile", help="profile name under configs/ or a .yaml path (default: CONESCOPE_PROFILE "
                                       "or demo)")
    mat.add_argument("--model", action="append", help="only this model (repeatable)")
    mat.add_argument("--lang", action="append", help="only this language (repeatable)")
    mat.add_argument("--force", action="store_true",
                     help="recompute every asset and partition, embeddings included (runs tagged conescope/force=true)")
    mat.set_defaults(fn=_materialize)
    sql = sub.add_parser("sql", help="run a query against the warehouse, read-only")
    sql.add_argument("query")
    sql.add_argument("--profile", help="the profile whose warehouse section says where the warehouse is "
                                       "(default: CONESCOPE_PROFILE or demo)")
    sql.add_argument("--format", choices=("table", "csv"), default="table")
    sql.add_argument("--max-rows", type=int, default=200)
    sql.add_argument("--max-width", type=int, default=200)
    sql.set_defaults(fn=_sql)
    dev = sub.add_parser("dev", help="serve the Dagster UI (and its daemon) with DAGSTER_HOME in the data root")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(fn=_dev)
    for p in (mat, sql, dev):  # accepted after the command too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("conescope: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"conescope: error: {_one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
