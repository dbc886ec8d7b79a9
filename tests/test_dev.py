"""``conescope dev`` runs Dagster's own ``dagster dev`` (webserver, code server, Dagster's daemon), every
daemon healthy, and serves the reports; it stops with every child process on
SIGTERM and on Ctrl-C (SIGINT) within 30 s, leaving no orphan and no port open; killed with SIGKILL, its
watchdog stops every process it started within 10 s, and both ports are closed."""

import contextlib
import os
import signal
import socket
import time
import urllib.request

import psutil
import pytest
import yaml

from tests.conftest import TINY_PROFILE
from tests.devserver import DevServer, alive, descendants


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_dev_stops_with_every_child(tmp_path, signum):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_PROFILE))
    page = tmp_path / "data" / "reports" / "_paper" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<title>paper reproduction</title>")
    server = DevServer(tmp_path / "data", str(profile), tmp_path / "dev.log")
    try:
        server.wait_ready()
        # the reports, served by conescope dev itself on the port of CONESCOPE_REPORTS_URL
        with urllib.request.urlopen(f"{server.reports_url}/_paper/index.html", timeout=10) as response:
            assert response.read() == page.read_bytes()
        tree = descendants(server.proc.pid)
        kinds = " ".join(tree.values())
        # the processes Dagster's dagster dev starts, nothing of conescope's in their place
        for part in ("-m dagster dev", "dagster_webserver", "-m dagster._daemon run", "code-server"):
            assert part in kinds, tree
        assert "pipelines.daemon" not in kinds, tree
        statuses = _daemon_statuses(server)
        assert statuses.get("BACKFILL") is True and all(statuses.values()), statuses
        took, left = server.stop(signum)
        print(f"conescope dev stopped in {took:.1f} s after {signal.Signals(signum).name} "
              f"({len(tree)} processes in its tree; loaded machine)")
        assert server.proc.returncode is not None, "conescope dev still running after 30 s"
        assert took < 30
        assert not left, f"orphans: {left}"
        assert not _answers(server.port) and not _answers(server.reports_port)
    finally:
        server.kill()


def test_dev_killed_with_sigkill_leaves_nothing_behind(tmp_path):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_PROFILE))
    server = DevServer(tmp_path / "data", str(profile), tmp_path / "dev.log")
    tree: dict[int, str] = {}
    try:
        server.wait_ready()
        tree = descendants(server.proc.pid)
        kinds = " ".join(tree.values())
        for part in ("dagster_webserver", "-m dagster._daemon run", "code-server", "pipelines.supervise watch"):
            assert part in kinds, tree
        assert _answers(server.reports_port)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        left, port_open = tree, True
        while (left or port_open) and time.monotonic() - t0 < 20:
            time.sleep(0.2)
            left = alive(tree)
            port_open = _answers(server.port) or _answers(server.reports_port)
        took = time.monotonic() - t0
        print(f"conescope dev killed with SIGKILL: its {len(tree)} processes gone and the port closed in {took:.1f} s")
        assert not left, f"left behind: {[tree[p] for p in left]}"
        assert not port_open, f"port {server.port} or {server.reports_port} (the reports) still answers"
        assert took < 10
        assert "supervisor (pid" in server.log.read_text()
    finally:
        for pid in alive(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"


def _daemon_statuses(server: DevServer, timeout_s: float = 60) -> dict[str, bool]:
    """The UI's daemon health (Deployment > Daemons), once every required daemon has sent a heartbeat."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = server.graphql(DAEMONS)["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        statuses = {row["daemonType"]: row["healthy"] for row in rows if row["required"]}
        if all(statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(2)


def test_a_process_group_s_members_are_its_live_processes():
    """What conescope dev's supervisor waits on (pipelines/supervise.py): every live process of the
    group, a zombie (dead, not yet reaped by its parent) left out."""
    import os
    import subprocess
    import sys

    from pipelines.supervise import group_members

    leader = subprocess.Popen([sys.executable, "-c", "import subprocess, time\n"
                               "print(subprocess.Popen(['sleep', '60']).pid, flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(leader.stdout.readline())
        assert sorted(group_members(leader.pid)) == sorted([leader.pid, child])
        os.kill(child, signal.SIGKILL)  # its parent sleeps: a zombie until the group ends
        deadline = time.monotonic() + 10
        while group_members(leader.pid) != [leader.pid] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_members(leader.pid) == [leader.pid]
        assert psutil.pid_exists(child), "the zombie is still there"
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
    assert group_members(leader.pid) == []


def test_a_supervised_group_dies_with_its_supervisor_killed():
    """The watchdog alone (pipelines/supervise.py): a supervisor running a command that started a
    child of its own is killed with SIGKILL; the command and its child are gone within 10 s, and so
    is the watchdog."""
    import subprocess
    import sys

    from tests.devserver import REPO

    command = ("import subprocess, time\nprint(subprocess.Popen(['sleep', '60']).pid, flush=True)\n"
               "time.sleep(60)")
    supervisor = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pipelines.supervise import run_supervised\n"
         f"sys.exit(run_supervised([sys.executable, '-c', {command!r}]))"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        grandchild = int(supervisor.stdout.readline())
        tree = descendants(supervisor.pid)
        assert grandchild in tree and any("pipelines.supervise watch" in c for c in tree.values()), tree
        t0 = time.monotonic()
        supervisor.kill()
        supervisor.wait()
        while alive(tree) and time.monotonic() - t0 < 20:
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert not alive(tree), {p: tree[p] for p in alive(tree)}
        assert took < 10, took
        assert "is gone: stopping the processes it started" in supervisor.stderr.read()
    finally:
        for pid in alive(descendants(supervisor.pid)):
            os.kill(pid, signal.SIGKILL)
