"""The conescope command: materialize a profile, serve the UI, query the warehouse. Its help texts
(``conescope --help``, ``conescope <command> --help``) are the command line's manual."""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import time
from pathlib import Path

from storage.paths import DEFAULT_HOME, DataRoot
from storage.report_links import (
    DEFAULT_REPORTS_PORT,
    REPORTS_URL_ENV,
    reports_dir,
    reports_port,
    reports_url,
    with_port,
)

REPO = Path(__file__).resolve().parent.parent


def _warehouse(profile_name: str | None):
    from conescope.profile import load_profile
    from storage.warehouse import open_warehouse

    spec = load_profile(profile_name).warehouse
    return open_warehouse(DataRoot.from_env().root, spec.kind, spec.catalog, spec.data_path)


def _materialize(args: argparse.Namespace) -> int:
    from conescope.profile import load_profile
    from pipelines.jobs import REPORTS_JOB, SUMMARY_JOB
    from pipelines.refresh import execute_plan, full_plan
    from pipelines.terminal import TerminalLines

    root = DataRoot.from_env()
    profile = load_profile(args.profile)
    # an unknown --model or --lang fails here, before anything is started or written
    plan = full_plan(profile, f"cli-{time.strftime('%Y%m%dT%H%M%S')}", args.model or None, args.lang or None)
    root.require_writable("materialize")
    import dagster as dg

    from pipelines.definitions import build_definitions
    from pipelines.instance import (
        ensure_dagster_home,
        ensure_warehouse_pool,
        materialize_lock,
        recover_dead_runs,
        storage_creation_lock,
    )

    # one materialize per data root: a second waits here for the first, then sees what it wrote
    with materialize_lock(root, log=lambda line: print(line, flush=True)):
        ensure_dagster_home(root)  # creates Dagster's storage on a fresh data root, under a lock
        with storage_creation_lock(root):  # a dagster.yaml written by hand may name storages not made yet
            instance = dg.DagsterInstance.get()
        with instance:
            # models created and long embedding steps' progress, under the run in progress
            terminal = TerminalLines(lambda line: print(line, flush=True))
            defs = build_definitions(profile, str(root.root), terminal=terminal)
            print(f"profile {profile.name} ({profile.source}), data root {root.root}: {len(plan)} runs")
            if args.lang and set(profile.languages) - set(args.lang):
                print(f"note: {SUMMARY_JOB} and {REPORTS_JOB} read every language of the profile; they run "
                      f"when no --lang is given")
            started = time.perf_counter()
            recover_dead_runs(instance)
            ensure_warehouse_pool(instance, profile.warehouse.kind)
            if not execute_plan(defs, plan, instance, debug=args.debug, force=args.force, terminal=terminal):
                return 1
        print(f"done in {time.perf_counter() - started:.1f} s; try: conescope sql \"SELECT * FROM metrics.isotropy\"")
    return 0


def _sql(args: argparse.Namespace) -> int:
    import duckdb

    from storage.warehouse import ReadOnlyViolation, check_read_only

    # sandboxed: no file outside the views' folders is reachable, no statement but a query runs
    warehouse = _warehouse(args.profile)
    with warehouse.connect(sandbox=True) as con:
        statements = check_read_only(con, args.query)
        try:
            _print_results(con, statements, args)
        except duckdb.PermissionException as exc:
            folders = ", ".join(f"{folder}/" for folder in warehouse.sandbox_folders())
            raise ReadOnlyViolation(f"{' '.join(str(exc).split())}: conescope sql reads only {folders}") from exc
    return 0


def _print_results(con, statements: list, args: argparse.Namespace) -> None:
    for n, statement in enumerate(statements):
        rel = con.sql(statement)
        if rel is None:
            continue
        if n:
            print()  # a blank line between two results
        if args.format == "csv":
            import pyarrow.csv as pacsv

            sys.stdout.flush()  # the text written so far goes first
            pacsv.write_csv(rel.to_arrow_table(), sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            if len(statements) > 1:  # which statement each table answers
                print(" ".join(statement.query.split())[:args.max_width])
            rel.show(max_rows=args.max_rows, max_width=args.max_width)


def _dev(args: argparse.Namespace) -> int:
    import dagster as dg

    from conescope.profile import load_profile
    from pipelines.instance import (
        configured_max_runs,
        ensure_dagster_home,
        ensure_gpu_pool,
        ensure_warehouse_pool,
        run_thread_env,
        storage_creation_lock,
    )

    root = DataRoot.from_env()
    reports = reports_url()
    if args.reports_port is not None:
        reports = with_port(reports, args.reports_port)
    if reports_port(reports) == args.port:
        raise ValueError(f"the reports and the UI cannot share port {args.port}: pick another with --reports-port "
                         f"or {REPORTS_URL_ENV}")
    profile = load_profile()
    root.require_writable("dev")
    ensure_dagster_home(root)  # creates Dagster's storage on a fresh data root, under a lock
    with storage_creation_lock(root):  # a dagster.yaml written by hand may name storages not made yet
        instance = dg.DagsterInstance.get()
    threads = run_thread_env(configured_max_runs(root))
    os.environ.update(threads)  # inherited by the code server and every run it launches
    with instance:
        print(f"conescope dev: pool 'gpu' (embedding steps) has {ensure_gpu_pool(instance)} slot(s), pool "
              f"'duckdb' (warehouse writers, {profile.warehouse.kind}) "
              f"{ensure_warehouse_pool(instance, profile.warehouse.kind)}; runs use "
              f"{threads['OMP_NUM_THREADS']} thread(s) each (OMP_NUM_THREADS)")
    os.environ["CONESCOPE_HOME"] = str(root.root)  # the code server resolves it from the repository
    # the reports' links in the metadata of the runs it launches name the port served here
    os.environ[REPORTS_URL_ENV] = reports
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # their output is a pipe now: each line as it is written
    # Dagster's own `dagster dev`, run in Dagster's home: a dagster.yaml in its working folder other than
    # DAGSTER_HOME's would only earn a warning (the repository's is for plain `dagster dev`, docs/operations.md)
    # (its SupersessionWarning "Use 'dg dev' instead" is for projects laid out for dg, which this one is not)
    cmd = [sys.executable, "-W", "ignore:Function `dev_command` is superseded", "-m", "dagster", "dev",
           "-w", str(REPO / "workspace.yaml"), "-p", str(args.port), "-h", args.host]
    from pipelines.daemon import per_tick_line
    from pipelines.report_server import serving
    from pipelines.supervise import run_supervised

    with serving(reports_dir(root), args.host, reports_port(reports)):
        print(f"conescope dev: the reports (the data root's reports/ folder, read-only) at {reports}/", flush=True)
        # stops the webserver, daemon and code servers with it (SIGTERM, Ctrl-C); the daemons' per-tick lines dropped
        return run_supervised(cmd, drop_line=per_tick_line, cwd=root.dagster_home)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ValueError | OSError | RuntimeError | LookupError) else \
        f"{type(exc).__name__}: {text}"


# The environment variables the commands read, each with what it sets and its default: the help's epilog.
ENVIRONMENT = {
    "CONESCOPE_HOME": f"the data root: datasets, embeddings, warehouse, reports, Dagster's home "
                      f"(default: ./{DEFAULT_HOME})",
    "CONESCOPE_PROFILE": "the profile: a name under configs/ or a .yaml path (default: demo)",
    "CONESCOPE_OFFLINE": "1: download nothing (HF_HUB_OFFLINE=1 too); a dataset whose files are missing fails "
                         "(default: unset)",
    "CONESCOPE_AUTOMATION": "on or off: the automation sensors' state when conescope dev starts (default: on)",
    "CONESCOPE_EXECUTOR": "how the steps of a run launched by conescope dev execute: in_process (the default), "
                          "multiprocess, default (Dagster's) or k8s",
    REPORTS_URL_ENV: f"the URL of the data root's reports/ folder, which the report assets link to and "
                     f"conescope dev serves on its port (default: http://127.0.0.1:{DEFAULT_REPORTS_PORT})",
}


class _HelpFormatter(argparse.HelpFormatter):
    """Fills a one-line paragraph to the terminal's width, as argparse does; keeps each line of a list
    (the environment variables, the examples), a long one wrapped under its text."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if len(lines) == 1:
                paragraphs.append(textwrap.fill(para, width, initial_indent=indent, subsequent_indent=indent))
            else:
                paragraphs.append("\n".join(self._list_line(line, width, indent) for line in lines))
        return "\n\n".join(paragraphs)

    @staticmethod
    def _list_line(line: str, width: int, indent: str) -> str:
        entry = re.match(r"\s*\S+\s{2,}", line)  # "  NAME  text": continue under "text"
        hang = len(entry.group(0)) if entry else len(line) - len(line.lstrip())
        return textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent + " " * hang)


def _environment(*names: str) -> str:
    width = max(len(n) for n in names)
    return "environment:\n" + "\n".join(f"  {n:<{width}}  {ENVIRONMENT[n]}" for n in names)


def build_parser() -> argparse.ArgumentParser:
    from storage.warehouse import read_statement_forms

    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="conescope", formatter_class=fmt,
        description="Measure the geometry of CLIP-like embeddings: materialize a profile's datasets, "
                    "embeddings, metrics, transforms and reports (stored in the data root), serve the "
                    "Dagster UI, query the warehouse.",
        epilog=_environment(*ENVIRONMENT) + "\n\nexamples:\n"
               "  conescope materialize\n"
               "  conescope materialize --model vit-b-32.random --lang en\n"
               "  conescope sql \"SELECT * FROM metrics.isotropy\"\n"
               "  conescope dev --port 3000")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="command",
                                help="conescope <command> --help describes each")
    mat = sub.add_parser(
        "materialize", formatter_class=fmt,
        help="materialize what is stale or missing in every partition of a profile",
        description="Materialize what is stale or missing in every partition of a profile, in this "
                    "process (no daemon needed). One line per run says what ran.",
        epilog=_environment("CONESCOPE_HOME", "CONESCOPE_PROFILE", "CONESCOPE_OFFLINE", REPORTS_URL_ENV))
    mat.add_argument("--profile", help="profile name under configs/ or a .yaml path (default: CONESCOPE_PROFILE "
                                       "or demo)")
    mat.add_argument("--model", action="append", help="only this model of the profile (repeatable)")
    mat.add_argument("--lang", action="append", help="only this language of the profile (repeatable)")
    mat.add_argument("--force", action="store_true",
                     help="recompute every asset and partition, embeddings included (runs tagged conescope/force=true)")
    mat.set_defaults(fn=_materialize)
    forms = ", ".join(read_statement_forms())
    sql = sub.add_parser(
        "sql", formatter_class=fmt, help="run queries against the warehouse, read-only",
        description=f"Run queries against the warehouse, read-only: {forms} (EXPLAIN of a query only); any "
                    f"other statement, and a table function that does more than read, is refused and nothing "
                    f"is written anywhere. A file path in a query is relative to the data root, wherever the "
                    f"command runs; only its datasets/ and embeddings/ folders are readable. Several "
                    f"statements separated by ';' print their results in order (a table each, headed by its "
                    f"statement; in CSV, separated by a blank line).",
        epilog=_environment("CONESCOPE_HOME", "CONESCOPE_PROFILE"))
    sql.add_argument("query", help="one or more SQL statements separated by ';', e.g. "
                                   "\"SELECT * FROM metrics.isotropy\" or \"SHOW ALL TABLES\"")
    sql.add_argument("--profile", help="the profile whose warehouse section says where the warehouse is "
                                       "(default: CONESCOPE_PROFILE or demo)")
    sql.add_argument("--format", choices=("table", "csv"), default="table",
                     help="a table for reading, or CSV on standard output (default: %(default)s)")
    sql.add_argument("--max-rows", type=int, default=200, help="rows shown per table (default: %(default)s)")
    sql.add_argument("--max-width", type=int, default=200,
                     help="characters per line of a table (default: %(default)s)")
    sql.set_defaults(fn=_sql)
    dev = sub.add_parser(
        "dev", formatter_class=fmt, help="serve the Dagster UI and its daemon, Dagster's home in the data root",
        description="Serve the Dagster UI, with its daemon (run queue, automation sensors, backfills, run "
                    "monitoring), for the profile of CONESCOPE_PROFILE; Dagster's home is "
                    "<data root>/dagster_home; and the HTML reports of the data root, read-only, where the report "
                    "assets' links in the UI point (--reports-port). Ctrl-C or SIGTERM stops it with every process "
                    "it started.",
        epilog=_environment("CONESCOPE_HOME", "CONESCOPE_PROFILE", "CONESCOPE_AUTOMATION", "CONESCOPE_EXECUTOR",
                            "CONESCOPE_OFFLINE", REPORTS_URL_ENV))
    dev.add_argument("--port", type=int, default=3000, help="port of the UI (default: %(default)s)")
    dev.add_argument("--reports-port", type=int,
                     help=f"port the HTML reports are served on, read-only, on the UI's host (default: the port of "
                          f"{REPORTS_URL_ENV}, {DEFAULT_REPORTS_PORT}); the report links of the runs it launches "
                          f"name it")
    dev.add_argument("--host", default="127.0.0.1",
                     help="address the UI listens on (default: %(default)s, this machine only; 0.0.0.0: every "
                          "interface)")
    dev.set_defaults(fn=_dev)
    for p in (mat, sql, dev):  # accepted after the command too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
