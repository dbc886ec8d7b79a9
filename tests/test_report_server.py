"""The reports over http (pipelines/report_server.py): a report is served, nothing outside the data root's
``reports/`` folder is (``..``, encoded or not, and symlinks pointing out answer 404), no method writes;
and the URLs the report assets link to (storage/report_links.py, ``CONESCOPE_REPORTS_URL``)."""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines.cli import build_parser
from pipelines.report_server import serving
from storage.paths import DataRoot
from storage.report_links import REPORTS_URL_ENV, report_url, reports_dir, reports_port, reports_url, with_port
from tests.devserver import free_port

PAGE = "<!doctype html><title>tiny.random / en</title><h1>tiny.random / en</h1>"


@pytest.fixture
def served(tmp_path):
    """A data root with one report, a secret beside ``reports/`` and symlinks pointing out of it; the
    reports served on a free port: (root, base URL)."""
    root = DataRoot(tmp_path / "data")
    (root.report_dir("tiny.random", "en")).mkdir(parents=True)
    (root.report_dir("tiny.random", "en") / "index.html").write_text(PAGE)
    (root.root / "secret.txt").write_text("not a report")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "index.html").write_text("outside the reports")
    (reports_dir(root) / "escape.txt").symlink_to(root.root / "secret.txt")
    (reports_dir(root) / "elsewhere").symlink_to(outside, target_is_directory=True)
    with serving(reports_dir(root), "127.0.0.1", free_port()) as server:
        yield root, f"http://127.0.0.1:{server.port}"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _raw(base: str, method: str, path: str) -> http.client.HTTPResponse:
    """A request with the path as written (urllib would normalize ``..`` away)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_a_report_is_served_at_the_url_its_metadata_names(served):
    root, base = served
    index = root.report_dir("tiny.random", "en") / "index.html"
    url = report_url(root, index, base)
    assert url == f"{base}/tiny.random/en/index.html"
    status, body = _get(url)
    assert status == 200 and body == PAGE
    assert _get(f"{base}/tiny.random/en/")[1] == PAGE  # the folder's index.html
    head = _raw(base, "HEAD", "/tiny.random/en/index.html")
    assert head.status == 200 and head.getheader("Content-Type") == "text/html"
    assert "tiny.random/" in _get(f"{base}/")[1]  # the folder lists the reports


def test_nothing_outside_the_reports_folder_is_served(served):
    root, base = served
    assert _get(f"{base}/secret.txt")[0] == 404
    assert _get(f"{base}/missing/index.html")[0] == 404
    for path in ("/../secret.txt", "/tiny.random/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
                 "/tiny.random/en/..%2f..%2f..%2fsecret.txt"):
        response = _raw(base, "GET", path)
        assert response.status == 404, path
    # symlinks inside the folder that point out of it: a file and a folder
    assert _get(f"{base}/escape.txt")[0] == 404
    assert _get(f"{base}/elsewhere/index.html")[0] == 404
    assert _get(f"{base}/elsewhere/")[0] == 404
    # a symlink that stays inside is followed
    (reports_dir(root) / "latest").symlink_to(root.report_dir("tiny.random", "en"), target_is_directory=True)
    assert _get(f"{base}/latest/index.html") == (200, PAGE)


def test_no_method_writes(served):
    root, base = served
    before = sorted(p.relative_to(root.root) for p in root.root.rglob("*"))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = _raw(base, method, "/tiny.random/en/index.html")
        assert response.status == 405 and response.getheader("Allow") == "GET, HEAD", method
    assert _raw(base, "MKCOL", "/new").status == 501
    assert sorted(p.relative_to(root.root) for p in root.root.rglob("*")) == before
    assert (root.report_dir("tiny.random", "en") / "index.html").read_text() == PAGE


def test_a_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"reports' port 127.0.0.1:{port} is in use"), \
                serving(tmp_path, "127.0.0.1", port):
            pass


def test_the_reports_url_comes_from_one_variable(monkeypatch, tmp_path):
    root = DataRoot(tmp_path)
    page = root.summary_report_dir("comparison") / "index.html"
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    assert reports_url() == "http://127.0.0.1:3001" and reports_port(reports_url()) == 3001
    assert report_url(root, page) == "http://127.0.0.1:3001/_comparison/index.html"
    # every report folder of the layout lies under the served folder
    for folder in (root.report_dir("m", "en"), root.multilingual_report_dir("m"), root.summary_report_dir("paper")):
        assert reports_dir(root) in folder.parents
    monkeypatch.setenv(REPORTS_URL_ENV, "http://lab-box:8123/")
    assert report_url(root, page) == "http://lab-box:8123/_comparison/index.html"
    assert reports_port(reports_url()) == 8123
    assert with_port(reports_url(), 9000) == "http://lab-box:9000"
    # a proxy's URL: a path kept, no port (served on the default one)
    monkeypatch.setenv(REPORTS_URL_ENV, "https://lab.example.org/conescope/reports")
    assert report_url(root, root.report_dir("a b", "en") / "index.html") == \
        "https://lab.example.org/conescope/reports/a%20b/en/index.html"
    assert reports_port(reports_url()) == 3001
    for bad in ("file:///srv/reports", "127.0.0.1:3001", "http://host:port", "http://host:3001/?x=1"):
        monkeypatch.setenv(REPORTS_URL_ENV, bad)
        with pytest.raises(ValueError, match=REPORTS_URL_ENV):
            reports_url()
    with pytest.raises(ValueError):
        report_url(root, root.root / "warehouse.duckdb", "http://x:1")


def test_dev_takes_a_reports_port(monkeypatch, capsys):
    from pipelines.cli import main

    args = build_parser().parse_args(["dev", "--reports-port", "4321"])
    assert args.reports_port == 4321
    assert build_parser().parse_args(["dev"]).reports_port is None
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    assert main(["dev", "--port", "3001"]) == 2  # before anything starts
    assert "the reports and the UI cannot share port 3001" in capsys.readouterr().err


def test_report_metadata_links_the_http_url_and_keeps_the_path(tmp_path):
    from assets.reports import report_metadata

    index = Path(tmp_path / "reports" / "_paper" / "index.html")
    index.parent.mkdir(parents=True)
    index.write_text(PAGE)
    url = "http://127.0.0.1:3001/_paper/index.html"
    meta = report_metadata(index, url, None, {"i1": 0.5}, "paper reproduction")
    assert meta["report"].value == url
    assert meta["path"].value == str(index)
    assert f"[open the report]({url})" in meta["preview"].value
    assert "file://" not in meta["preview"].value and os.sep + "_paper" in meta["path"].value


def test_the_data_version_of_a_report_is_its_page_not_its_links(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from assets.reports import report_result
    from pipelines.resources import ConescopeHome

    home = ConescopeHome(home=str(tmp_path))
    index = home.paths.summary_report_dir("paper") / "index.html"
    index.parent.mkdir(parents=True)
    index.write_text(PAGE)
    report = SimpleNamespace(html=PAGE, preview_png=None, headline={})
    results = []
    for base in ("http://127.0.0.1:3001", "http://lab-box:8123"):
        monkeypatch.setenv(REPORTS_URL_ENV, base)
        results.append(report_result(home, index, report, "paper reproduction", "0123abcd"))
        assert results[-1].metadata["report"].value == f"{base}/_paper/index.html"
    assert results[0].data_version == results[1].data_version
    assert report_result(home, index, SimpleNamespace(html=PAGE + " ", preview_png=None, headline={}),
                         "paper reproduction", "0123abcd").data_version != results[0].data_version
