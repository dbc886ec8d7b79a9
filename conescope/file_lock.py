"""A non-blocking exclusive file lock, shared by the GPU claim of the engine and the staging
directory of a resumable partition."""

from __future__ import annotations

import fcntl
import os
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
