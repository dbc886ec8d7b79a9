"""Run a command as a supervised process group: ``conescope dev`` starts ``dagster dev`` this way so that
SIGTERM or Ctrl-C stops the webserver, the daemon and the code servers with it, within 30 s, and so that
nothing of it outlives ``conescope dev`` killed with SIGKILL (or by a closed terminal's SIGHUP) either.
The child's output (its processes' logs) can pass through a line filter on its way to this process's.

The child gets a session (and process group) of its own, so a terminal's Ctrl-C reaches only this
process. The signal is passed to the child alone first: ``dagster dev`` then shuts its webserver,
daemon and code server down in order (signalling them all at once makes it wait on them). Whatever
of its group outlives it, or the grace period, gets SIGTERM, then SIGKILL.

A process that is killed with SIGKILL runs no handler, so a watchdog does that part: a small process
(``python -m pipelines.supervise watch``, psutil only) in a session of its own, so that a signal to
this process's group does not reach it, which checks twice a second that this process still runs;
when it is gone the watchdog stops the child's group (SIGTERM to every member, SIGKILL after 3 s)
and exits. A parent-death signal (``prctl(PR_SET_PDEATHSIG)``) would reach the child only, not the
processes Dagster starts below it; the group reaches them all (none leaves it: nothing under
``dagster dev`` starts a session of its own).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies excluded: they are dead, only not yet reaped) of a process group."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE,
                                                                                 psutil.STATUS_DEAD):
                members.append(pid)
    return members


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait(done, seconds: float, poll_s: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def default_stop_signals() -> None:
    # A process started in the background by a non-interactive shell (a CI job, nohup ... &) inherits
    # SIGINT ignored, and Python then keeps it ignored; dagster dev maps SIGTERM to the SIGINT handler,
    # so it would ignore both. The child gets the default handlers back.
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)


def _copy_lines(source, drop: Callable[[str], bool]) -> None:
    for raw in iter(source.readline, b""):
        line = raw.decode(errors="replace")
        if not drop(line):
            sys.stdout.write(line)
            sys.stdout.flush()


def run_supervised(cmd: list[str], grace_s: float = 15.0, kill_after_s: float = 5.0, poll_s: float = 0.2,
                   drop_line: Callable[[str], bool] | None = None, cwd: str | Path | None = None) -> int:
    """Run ``cmd`` in a new session until it exits or this process gets SIGTERM/SIGINT. On a signal,
    pass it to the child and wait up to ``grace_s``; then SIGTERM what is left of its group, and
    SIGKILL after ``kill_after_s`` more. Returns the child's exit status (128 + the signal number
    when it was stopped by one). With ``drop_line``, the output of the child and of every process
    under it (stdout and stderr) is copied line by line to this process's stdout, less the lines
    ``drop_line`` is true of."""
    output = {} if drop_line is None else {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=default_stop_signals, cwd=cwd, **output)
    copier = None
    if drop_line is not None:
        copier = threading.Thread(target=_copy_lines, args=(proc.stdout, drop_line), name="conescope-output",
                                  daemon=True)
        copier.start()
    pgid = proc.pid  # a session leader's pid is its group id
    watchdog = start_watchdog(pgid)
    received: list[int] = []

    def forward(signum, _frame) -> None:
        if not received:
            received.append(signum)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        while proc.poll() is None and not received:
            time.sleep(poll_s)
        _wait(lambda: proc.poll() is not None, grace_s if received else 0.0, poll_s)
        if group_members(pgid):  # the child is stuck, or left processes behind
            _signal_group(pgid, signal.SIGTERM)
            if not _wait(lambda: not group_members(pgid), kill_after_s, poll_s):
                _signal_group(pgid, signal.SIGKILL)
        rc = proc.wait()
        if copier is not None:  # the group is gone: the pipe ends once what is left in it is read
            copier.join(timeout=5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        watchdog.kill()  # its work is done: the group is empty, or this process stopped it
        watchdog.wait()
    return 128 + received[0] if received and rc != 0 else rc


def start_watchdog(pgid: int, poll_s: float = 0.5) -> subprocess.Popen:
    """Start the watchdog of this process for the group ``pgid`` (the module's docstring)."""
    started = psutil.Process().create_time()
    return subprocess.Popen([sys.executable, "-m", "pipelines.supervise", "watch", str(os.getpid()), repr(started),
                             str(pgid), str(poll_s)], cwd=Path(__file__).resolve().parent.parent,
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _running(pid: int, started: float) -> bool:
    # a pid that the system gave to a new process after the parent's death has another start time
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 0.005 and process.status() not in (
            psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def watch(parent: int, started: float, pgid: int, poll_s: float = 0.5, kill_after_s: float = 3.0) -> int:
    """The watchdog's loop: wait while ``parent`` (started at ``started``, psutil's create time) runs;
    then stop what is left of the group ``pgid``: SIGTERM to every member, SIGKILL after ``kill_after_s``."""
    while _running(parent, started):
        time.sleep(poll_s)
    if group_members(pgid):
        print(f"conescope: supervisor (pid {parent}) is gone: stopping the processes it started (group {pgid})",
              file=sys.stderr, flush=True)
        _signal_group(pgid, signal.SIGTERM)
        if not _wait(lambda: not group_members(pgid), kill_after_s, 0.2):
            _signal_group(pgid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "watch":
        sys.exit("usage: python -m pipelines.supervise watch PARENT_PID PARENT_CREATE_TIME PGID POLL_S")
    sys.exit(watch(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
