"""The ``conescope`` command: materialize a profile, serve the UI, query the warehouse."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from storage.paths import DataRoot

REPO = Path(__file__).resolve().parent.parent


def _materialize(args: argparse.Namespace) -> int:
    from pipelines.instance import ensure_dagster_home

    root = DataRoot.from_env()
    ensure_dagster_home(root)
    import dagster as dg

    from conescope.profile import load_profile
    from pipelines.definitions import build_definitions
    from pipelines.refresh import execute_plan, full_plan

    profile = load_profile(args.profile)
    defs = build_definitions(profile, str(root.root))
    plan = full_plan(profile, f"cli-{time.strftime('%Y%m%dT%H%M%S')}", args.model or None, args.lang or None)
    print(f"profile {profile.name} ({profile.source}), data root {root.root}: {len(plan)} runs")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        if not execute_plan(defs, plan, instance):
            return 1
    print(f"done in {time.perf_counter() - started:.1f} s; try: conescope sql \"SELECT * FROM metrics.isotropy\"")
    return 0


def _sql(args: argparse.Namespace) -> int:
    from storage.warehouse import Warehouse

    warehouse = Warehouse(DataRoot.from_env().warehouse)
    try:
        with warehouse.connect(read_only=True) as con:
            rel = con.sql(args.query)
            if rel is None:
                return 0
            if args.format == "csv":
                import pyarrow.csv as pacsv

                pacsv.write_csv(rel.to_arrow_table(), sys.stdout.buffer)
            else:
                rel.show(max_rows=args.max_rows, max_width=args.max_width)
    except Exception as exc:  # duckdb raises one class per error kind; all go to the user as text
        print(f"conescope sql: {exc}", file=sys.stderr)
        return 2
    return 0


def _dev(args: argparse.Namespace) -> int:
    import dagster as dg

    from pipelines.instance import ensure_dagster_home, ensure_gpu_pool

    root = DataRoot.from_env()
    ensure_dagster_home(root)
    with dg.DagsterInstance.get() as instance:
        print(f"conescope dev: pool 'gpu' (embedding steps) has {ensure_gpu_pool(instance)} slot(s)")
    os.environ["CONESCOPE_HOME"] = str(root.root)  # the code server resolves it from the repository
    local = Path(sys.executable).parent / "dagster"
    cmd = [str(local) if local.exists() else "dagster", "dev", "-w", str(REPO / "workspace.yaml"),
           "-p", str(args.port), "-h", args.host]
    os.chdir(REPO)
    from pipelines.supervise import run_supervised

    return run_supervised(cmd)  # stops the webserver, daemon and code servers with it (SIGTERM, Ctrl-C)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conescope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="materialize every asset of a profile, every partition")
    mat.add_argument("--profile", help="profile name under configs/ or a .yaml path (default: CONESCOPE_PROFILE "
                                       "or demo)")
    mat.add_argument("--model", action="append", help="only this model (repeatable)")
    mat.add_argument("--lang", action="append", help="only this language (repeatable)")
    mat.set_defaults(fn=_materialize)
    sql = sub.add_parser("sql", help="run a query against the warehouse, read-only")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv"), default="table")
    sql.add_argument("--max-rows", type=int, default=200)
    sql.add_argument("--max-width", type=int, default=200)
    sql.set_defaults(fn=_sql)
    dev = sub.add_parser("dev", help="serve the Dagster UI (and its daemon) with DAGSTER_HOME in the data root")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(fn=_dev)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
