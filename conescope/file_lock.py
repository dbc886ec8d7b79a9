"""Exclusive file locks (``flock``): the non-blocking one of the GPU claim of the engine and the
staging directory of a resumable partition, and the waiting one of a warehouse partition's replace
and of ``conescope materialize``'s hold on its data root. The OS releases a lock when its process
dies, ``kill -9`` included, so no lock outlives its holder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """The descriptor of ``path`` holding an exclusive ``flock``, or None when another process holds
    it (or the file cannot be opened). The OS releases the lock when the process dies; close the
    descriptor to release it earlier."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class LockTimeout(TimeoutError):
    pass


@contextlib.contextmanager
def held_lock(path: Path, timeout_s: float | None = None, on_wait: Callable[[], None] | None = None,
              poll_s: float = 0.01, note: str = "") -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder if missing) for the ``with``
    block, waiting for it while another process holds it: ``on_wait`` is called once when it has to
    wait; after ``timeout_s`` (None: no limit) :class:`LockTimeout` is raised. ``note`` is written
    into the file while the lock is held (:func:`lock_note` reads it: who holds the lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = try_lock(path)
    if fd is None:
        if on_wait is not None:
            on_wait()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if timeout_s is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                _poll(fd, path, timeout_s, poll_s)
        except BaseException:
            os.close(fd)
            raise
    try:
        if note:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        yield fd
    finally:
        if note:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)


def _poll(fd: int, path: Path, timeout_s: float, poll_s: float) -> None:
    # flock has no timeout: a non-blocking attempt, again after a pause that grows to 0.2 s
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LockTimeout(f"{path}: still locked by another process after {timeout_s:.0f} s") from None
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 0.2)


def lock_note(path: Path) -> str:
    """What the holder of the lock on ``path`` wrote into it (empty when nobody holds it or it said nothing)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""
