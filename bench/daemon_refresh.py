"""Time a full materialization of a profile three ways, each on a fresh data root:

1. ``cli``: ``conescope materialize`` (every run in one process, no daemon);
2. ``automation``: ``conescope dev`` (webserver, daemon, code server) with the automation sensor on:
   on a fresh data root the datasets are newly missing, and the sensor requests the whole graph
   layer by layer, as the nightly refresh requests what became stale;
3. ``backfill``: ``conescope dev`` with the sensor off, and "Materialize all" of every asset and
   partition launched through GraphQL with the mutation the UI sends.

For each it prints the wall time (for 2 and 3 from the code location being loaded to the end of the
last run; the server's start is printed apart), the number of runs, failed runs and failed steps,
and ``RESULT <route>.<name> <value>`` lines; then the ratios to the CLI. Figures are printed, never
asserted; time them on a quiet machine, all routes in one sitting:

    .venv/bin/python -m bench.daemon_refresh                       # the demo profile
    .venv/bin/python -m bench.daemon_refresh --profile tiny --routes cli,automation   # configs/tiny.yaml
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.devserver import LIVE_RUNS, DevServer

REPO = Path(__file__).resolve().parent.parent
ROUTES = ("cli", "automation", "backfill")


def _failed_steps(runs: list[dict]) -> int:
    return sum(step["status"] == "FAILURE" for run in runs for step in run["stepStats"])


def _summary(runs: list[dict], started: float) -> dict:
    ends = [r["endTime"] for r in runs if r["endTime"]]
    return {"wall_s": max(ends, default=started) - started, "runs": len(runs),
            "failed_runs": sum(r["status"] == "FAILURE" for r in runs), "failed_steps": _failed_steps(runs)}


def run_cli(profile: str, root: Path) -> dict:
    env = {**os.environ, "CONESCOPE_HOME": str(root)}
    env.pop("DAGSTER_HOME", None)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "materialize", "--profile", profile],
                         cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
    import dagster as dg

    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        runs = instance.get_runs()
        failed_steps = sum(len(instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_FAILURE))
                           for r in runs)
        return {"wall_s": wall, "runs": len(runs), "failed_runs": sum(r.status == dg.DagsterRunStatus.FAILURE
                                                                      for r in runs),
                "failed_steps": failed_steps, "exit": out.returncode}


def _all_materialized(server: DevServer) -> bool:
    return all(done == total for done, total in server.asset_partitions().values())


def run_daemon(route: str, profile: str, root: Path, timeout_s: float, settle_s: float) -> dict:
    server = DevServer(root, profile, root.parent / f"{route}-dev.log",
                       env={"CONESCOPE_AUTOMATION": "on" if route == "automation" else "off"})
    t0 = time.time()
    try:
        server.wait_ready()
        ready = time.time()
        deadline = time.monotonic() + timeout_s
        if route == "backfill":
            status = server.wait_backfill(server.launch_materialize_all(), timeout_s)
        else:
            status = "automation"
            while not (_all_materialized(server) and server.runs()
                       and not any(r["status"] in LIVE_RUNS for r in server.runs())):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"automation: not every partition materialized after {timeout_s} s")
                time.sleep(5)  # the end is the last run's end time: polling less often only saves CPU
        # a run requested after everything is materialized would be one too many: wait a tick or two
        time.sleep(settle_s)
        runs = server.runs()
        result = {**_summary(runs, ready), "startup_s": ready - t0, "status": status,
                  "all_materialized": _all_materialized(server),
                  "late_runs": sum(r["status"] in LIVE_RUNS for r in runs)}
    finally:
        server.stop()
        server.kill()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo",
                        help="profile name under configs/ (demo, tiny, ...) or .yaml path (default: demo)")
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, of {', '.join(ROUTES)}")
    parser.add_argument("--workdir", help="where the fresh data roots go (default: a temporary folder, removed)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per daemon route")
    parser.add_argument("--settle", type=float, default=25, help="seconds to watch for late runs afterwards")
    args = parser.parse_args(argv)
    routes = args.routes.split(",")
    if unknown := set(routes) - set(ROUTES):
        parser.error(f"unknown routes: {', '.join(sorted(unknown))}")
    from conescope.profile import load_profile

    try:  # a profile that does not load fails here, in one line, before any route starts
        load_profile(args.profile)
    except (OSError, ValueError) as exc:
        print(f"bench.daemon_refresh: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    profile = str(Path(args.profile).resolve()) if args.profile.endswith((".yaml", ".yml")) else args.profile
    work = Path(args.workdir or tempfile.mkdtemp(prefix="conescope-bench-"))
    results = {}
    try:
        for route in routes:
            root = work / route / "data"
            if root.exists():
                shutil.rmtree(root)
            root.parent.mkdir(parents=True, exist_ok=True)
            print(f"{route}: data root {root} ...", flush=True)
            results[route] = (run_cli(profile, root) if route == "cli"
                              else run_daemon(route, profile, root, args.timeout, args.settle))
            print(f"{route}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in results[route].items()), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    for route, result in results.items():
        for name, value in result.items():
            print(f"RESULT {route}.{name} " + (f"{value:.1f}" if isinstance(value, float) else f"{value}"))
    if "cli" in results:
        for route in results.keys() - {"cli"}:
            print(f"RESULT ratio.{route}_over_cli {results[route]['wall_s'] / results['cli']['wall_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
