"""The HTML reports over http, read-only, for the links in the report assets' metadata
(storage/report_links.py): ``conescope dev`` serves the data root's ``reports/`` folder on the port of
``CONESCOPE_REPORTS_URL`` (or ``--reports-port``), bound to the UI's host.

Only that folder: a path with ``..`` is cut to the folder by the standard library's
``translate_path``, and a file or folder whose real path (symlinks resolved) lies outside it answers
404, as a missing one does. Only GET and HEAD: the write methods answer 405 with ``Allow: GET, HEAD``,
any other method 501. A folder without ``index.html`` is listed (the folder itself: every report).

A thread of the ``conescope dev`` process (the supervisor, pipelines/supervise.py), not a process in
the supervised group: it stops with that process whatever stops it, SIGKILL included (the kernel closes
the socket with the process, so the watchdog has nothing to do for it), the port is bound before Dagster
starts (a port in use stops ``conescope dev`` at once, with one line), and it costs no interpreter start.
Static files from the page cache take the supervisor's GIL only briefly; its own loop sleeps.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class ReportHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` confined to its ``directory``, GET and HEAD only, quiet on success."""

    server_version = "conescope-reports"

    def send_head(self):
        root = Path(self.directory).resolve()
        real = Path(self.translate_path(self.path)).resolve()
        if real != root and root not in real.parents:  # a symlink that points out of the folder
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def _read_only(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _read_only

    def log_request(self, code="-", size="-") -> None:
        pass  # one line per request would bury the output of conescope dev; errors still go to log_error

    def log_error(self, format: str, *args) -> None:  # noqa: A002 - the standard library's signature
        if not (args and args[0] == HTTPStatus.NOT_FOUND):  # a missing page is the client's business
            sys.stderr.write(f"conescope reports: {format % args}\n")


class ReportServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds conescope dev back when it stops

    def __init__(self, folder: Path, host: str, port: int):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), partial(ReportHandler, directory=str(folder)))

    @property
    def port(self) -> int:
        return self.server_address[1]


@contextlib.contextmanager
def serving(folder: Path, host: str, port: int) -> Iterator[ReportServer]:
    """Serve ``folder`` on ``host:port`` in a thread until the block ends. A port in use raises
    ``OSError`` naming it and how to pick another."""
    try:
        server = ReportServer(folder, host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise OSError(f"the reports' port {host}:{port} is in use: pick another with --reports-port or "
                      f"CONESCOPE_REPORTS_URL") from None
    thread = threading.Thread(target=server.serve_forever, name="conescope-reports", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
