"""``conescope dev`` as a test fixture: started on a free port (its reports on another) with its own data root, and the
process tree it spawned (psutil); the GraphQL the UI sends to launch
"Materialize all", and what the tests (and bench/daemon_refresh.py) read back: runs, failed steps,
materialized partitions."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie is dead, only not yet reaped)."""
    try:
        return process.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``, with its command line."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            if _live(child):
                out[child.pid] = " ".join(child.cmdline())[:200]
    return out


def alive(pids) -> list[int]:
    live = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if _live(psutil.Process(pid)):
                live.append(pid)
    return live


# The mutation the UI sends for "Materialize all" over assets of several partitionings (dagster-webserver
# 1.13, LaunchAssetChoosePartitionsDialog, a "pureAll" target): every asset, allPartitions.
LAUNCH_BACKFILL = """mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL = """query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status error { message } }
    ... on PythonError { message }
  }
}"""
ASSET_NODES = """{ assetNodes { assetKey { path } isMaterializable
  partitionStats { numMaterialized numPartitions numFailed numMaterializing }
  assetMaterializations(limit: 1) { runId } } }"""
RUNS = """{ runsOrError { ... on Runs { results { runId status startTime endTime
  tags { key value } stepStats { stepKey status } } } } }"""
BACKFILL_DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
LIVE_RUNS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


class DevServer:
    """``conescope dev``; with ``plain_in``, Dagster's plain ``dagster dev`` started in that folder instead
    (DAGSTER_HOME unset: the folder's dagster.yaml and workspace.yaml, as from the repository root)."""

    def __init__(self, home: Path, profile: str, log: Path, env: dict[str, str] | None = None,
                 plain_in: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the reports on a free port too (3001 may be taken); the links the runs record name it
        self.reports_port = free_port()
        self.reports_url = f"http://127.0.0.1:{self.reports_port}"
        env = {**os.environ, "CONESCOPE_HOME": str(home), "CONESCOPE_PROFILE": profile,
               "CONESCOPE_REPORTS_URL": self.reports_url, **(env or {})}
        env.pop("DAGSTER_HOME", None)
        self.log = log
        cmd = [sys.executable, "-m", "pipelines.cli", "dev", "--port", str(self.port)] if plain_in is None else \
            [sys.executable, "-m", "dagster", "dev", "-p", str(self.port)]
        # as from a terminal: a process started in the background by a non-interactive shell (a CI job)
        # inherits SIGINT ignored, and `dagster dev` then ignores SIGTERM too (conescope dev restores both)
        from pipelines.supervise import default_stop_signals

        self.proc = subprocess.Popen(cmd, cwd=plain_in or REPO, env=env, stdout=log.open("wb"),
                                     stderr=subprocess.STDOUT, preexec_fn=default_stop_signals)

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        """Until the webserver answers and the code location is loaded (the daemon and code server
        are up by then)."""
        deadline = time.monotonic() + timeout_s
        query = b'{"query": "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"}'
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"conescope dev exited: {self.log.read_text()[-3000:]}")
            try:
                req = urllib.request.Request(f"{self.url}/graphql", data=query,
                                             headers={"Content-Type": "application/json"})
                body = urllib.request.urlopen(req, timeout=5).read().decode()
                if '"LOADED"' in body:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"conescope dev not ready after {timeout_s} s: {self.log.read_text()[-3000:]}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        import json

        req = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query, "variables": variables
                                                                              or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
        body = json.loads(urllib.request.urlopen(req, timeout=30).read())
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body

    def asset_partitions(self) -> dict[str, tuple[int, int]]:
        """(materialized, total) partitions of every materializable asset (1 for an unpartitioned one)."""
        out = {}
        for node in self.graphql(ASSET_NODES)["data"]["assetNodes"]:
            if not node["isMaterializable"]:
                continue
            key, stats = "/".join(node["assetKey"]["path"]), node["partitionStats"]
            out[key] = ((stats["numMaterialized"], stats["numPartitions"]) if stats
                        else (int(bool(node["assetMaterializations"])), 1))
        return out

    def launch_materialize_all(self) -> str:
        """Launch "Materialize all" of the whole graph as the UI does; the backfill's id."""
        keys = [{"path": node["assetKey"]["path"]} for node in self.graphql(ASSET_NODES)["data"]["assetNodes"]
                if node["isMaterializable"]]
        result = self.graphql(LAUNCH_BACKFILL, {"backfillParams": {"tags": [], "assetSelection": keys,
                                                                   "allPartitions": True}})
        launched = result["data"]["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        return launched["backfillId"]

    def wait_backfill(self, backfill_id: str, timeout_s: float) -> str:
        """The backfill's final status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            backfill = self.graphql(BACKFILL, {"id": backfill_id})["data"]["partitionBackfillOrError"]
            if backfill.get("status") in BACKFILL_DONE:
                return backfill["status"]
            time.sleep(2)
        raise TimeoutError(f"backfill {backfill_id} not done after {timeout_s} s: {backfill}")

    def runs(self) -> list[dict]:
        return self.graphql(RUNS)["data"]["runsOrError"]["results"]

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30.0) -> tuple[float, dict[int, str]]:
        """Send ``signum``; (seconds until conescope dev exited, processes of its tree still alive)."""
        tree = descendants(self.proc.pid)
        t0 = time.monotonic()
        self.proc.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        took = time.monotonic() - t0
        left = {p: tree[p] for p in alive(tree)}
        return took, left

    def kill(self) -> None:
        """Last resort for a failed test: kill what is left of the tree."""
        tree = descendants(self.proc.pid)
        for pid in [self.proc.pid, *tree]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
