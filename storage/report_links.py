"""Where the HTML reports of a data root are reachable over http: ``CONESCOPE_REPORTS_URL``, default
``http://127.0.0.1:3001``, the data root's ``reports/`` folder as ``conescope dev`` serves it
(pipelines/report_server.py). One variable for both ends: a report asset reads it when it
materializes (the ``report`` link in its metadata), also under ``conescope materialize``, where nothing
serves the folder, and ``conescope dev`` serves on that URL's port.

Why http: the Dagster UI shows a ``file://`` link as a dead one (its markdown turns it into
``javascript:void(0)``) and a browser refuses to open one from an http page.

A module of its own rather than a method of ``storage.paths.DataRoot``: every asset imports that
module, and editing it changes every asset's code version (conescope/code_versions.py); only the
report assets use this one.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

from storage.paths import DataRoot

REPORTS_URL_ENV = "CONESCOPE_REPORTS_URL"
DEFAULT_REPORTS_PORT = 3001


def reports_dir(root: DataRoot) -> Path:
    """The folder every report is written under (``DataRoot.report_dir`` and its siblings)."""
    return root.root / "reports"


def reports_url() -> str:
    """The URL of the ``reports/`` folder, without a trailing slash. A path in it (a reverse proxy in
    front of the server) is kept: the server itself serves the folder at ``/``."""
    base = (os.environ.get(REPORTS_URL_ENV) or f"http://127.0.0.1:{DEFAULT_REPORTS_PORT}").strip().rstrip("/")
    parts = urlsplit(base)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number, or out of range
    except ValueError as exc:
        raise ValueError(f"{REPORTS_URL_ENV}={base!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{REPORTS_URL_ENV}={base!r} is not the http URL of the reports folder, e.g. "
                         f"http://127.0.0.1:{DEFAULT_REPORTS_PORT}")
    return base


def reports_port(base: str) -> int:
    """The port ``conescope dev`` serves the reports on for the URL ``base``: the one it names, else 3001
    (a URL without a port is a proxy's, which forwards to the server)."""
    return urlsplit(base).port or DEFAULT_REPORTS_PORT


def with_port(base: str, port: int) -> str:
    """``base`` on another port (``conescope dev --reports-port``)."""
    parts = urlsplit(base)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return parts._replace(netloc=f"{host}:{port}").geturl()


def report_url(root: DataRoot, page: Path, base: str | None = None) -> str:
    """The http URL of a file under ``reports/`` (``base``: default :func:`reports_url`)."""
    relative = Path(page).relative_to(reports_dir(root))  # ValueError for a file outside the reports
    return f"{base or reports_url()}/{quote(relative.as_posix())}"
