"""A throw-away PostgreSQL server for the DuckLake tests and bench: Debian's ``postgresql`` package
(``initdb``/``postgres`` on PATH or under /usr/lib/postgresql/<version>/bin), a fresh cluster in a
temporary folder, trust authentication, a free port on 127.0.0.1. As root it runs as the ``postgres``
user (initdb refuses root) through ``runuser``."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server(timeout_s: float = 60.0) -> Iterator[str]:
    """Start a server, yield its libpq DSN, stop it and delete its cluster."""
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="conescope-pg-"))
    os.chmod(folder, 0o755)
    data = folder / "data"
    prefix: list[str] = []
    user = os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise FileNotFoundError("running as root: runuser is needed to start PostgreSQL as the postgres user")
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise FileNotFoundError("running as root: no postgres user (Debian's postgresql package makes it)") \
                from exc
        os.chown(folder, account.pw_uid, account.pw_gid)
        prefix, user = ["runuser", "-u", "postgres", "--"], "postgres"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8"],
                   check=True, capture_output=True)
    port = _free_port()
    log = folder / "server.log"
    server = subprocess.Popen([*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                               "-h", "127.0.0.1", "-k", str(folder), "-c", "max_connections=200",
                               "-c", "fsync=off"],
                              stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
    dsn = f"host=127.0.0.1 port={port} user={user} dbname=postgres"
    try:
        deadline = time.monotonic() + timeout_s
        ready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "postgres"]
        while True:
            if subprocess.run(ready, capture_output=True).returncode == 0:
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield dsn
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)
