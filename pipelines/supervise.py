"""Run a command as a supervised process group: ``conescope dev`` starts ``dagster dev`` (through
``python -m pipelines.daemon dev``, pipelines/daemon.py) this way so that SIGTERM or Ctrl-C stops the
webserver, the daemon and the code servers with it, within 30 s.

The child gets a session (and process group) of its own, so a terminal's Ctrl-C reaches only this
process. The signal is passed to the child alone first: ``dagster dev`` then shuts its webserver,
daemon and code server down in order (signalling them all at once makes it wait on them). Whatever
of its group outlives it, or the grace period, gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

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


def _default_stop_signals() -> None:
    # A process started in the background by a non-interactive shell (a CI job, nohup ... &) inherits
    # SIGINT ignored, and Python then keeps it ignored; dagster dev maps SIGTERM to the SIGINT handler,
    # so it would ignore both. The child gets the default handlers back.
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)


def run_supervised(cmd: list[str], grace_s: float = 15.0, kill_after_s: float = 5.0, poll_s: float = 0.2) -> int:
    """Run ``cmd`` in a new session until it exits or this process gets SIGTERM/SIGINT. On a signal,
    pass it to the child and wait up to ``grace_s``; then SIGTERM what is left of its group, and
    SIGKILL after ``kill_after_s`` more. Returns the child's exit status (128 + the signal number
    when it was stopped by one)."""
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_default_stop_signals)
    pgid = proc.pid  # a session leader's pid is its group id
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
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + received[0] if received and rc != 0 else rc
