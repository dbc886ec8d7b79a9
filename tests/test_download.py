"""Downloads against a local HTTP server on 127.0.0.1: checksums, resumption, the hub protocol, offline."""

import hashlib
import http.server
import re
import threading

import pytest

from conescope.download import (
    ChecksumMismatch,
    DownloadUnavailable,
    HttpSource,
    HubSource,
    ensure_sources,
    fetch_http,
    fetch_hub,
)

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Server:
    """Serves PAYLOAD at /file.bin (Range aware), cuts the first response short when ``flaky``, and
    answers the hub's resolve URLs (/datasets/<repo>/resolve/<rev>/<path>) like the Hugging Face hub."""

    def __init__(self):
        self.flaky = False
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, body: bytes, head: bool):
                server.requests.append((self.command, self.path, self.headers.get("Range")))
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    status = 206
                if self.path.startswith("/datasets/"):
                    self.send_response(200)
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                    start, status = 0, 200
                else:
                    self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if head:
                    return
                chunk = body[start:]
                if server.flaky and not rng:
                    server.flaky = False
                    self.wfile.write(chunk[: len(chunk) // 3])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(chunk)

            def _route(self, head: bool):
                if self.path == "/file.bin":
                    return self._send(PAYLOAD, head)
                m = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path)
                if m and m.group(1) == "org/tiny" and m.group(3) == "data/train.txt":
                    return self._send(b"hub bytes\n", head)
                server.requests.append((self.command, self.path, None))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self._route(False)

            def do_HEAD(self):
                self._route(True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("CONESCOPE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with _Server() as s:
        yield s


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_checksum(server, tmp_path):
    dest = fetch_http(f"{server.url}/file.bin", tmp_path / "f.bin", SHA)
    assert dest.read_bytes() == PAYLOAD
    fetch_http(f"{server.url}/file.bin", dest, SHA)  # present and verified: no request
    assert len(server.requests) == 1
    with pytest.raises(ChecksumMismatch, match="does not match"):
        fetch_http(f"{server.url}/file.bin", tmp_path / "g.bin", "0" * 64)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    server.flaky = True
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadUnavailable):
        fetch_http(f"{server.url}/file.bin", dest, SHA)
    part = tmp_path / "f.bin.part"
    assert 0 < part.stat().st_size < len(PAYLOAD) and not dest.exists()
    fetch_http(f"{server.url}/file.bin", dest, SHA)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1][2] == f"bytes={len(PAYLOAD) // 3}-"


def test_ensure_sources_offline_names_dataset_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("CONESCOPE_OFFLINE", "1")
    sources = [HttpSource("http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", unpack=True,
                          provides="val2014"),
               HubSource("uoft-cs/cifar100", "cifar100/train-00000-of-00001.parquet", revision=COMMIT)]
    with pytest.raises(DownloadUnavailable) as info:
        ensure_sources("coco", sources, tmp_path / "raw" / "coco")
    msg = str(info.value)
    assert "dataset 'coco'" in msg and "val2014.zip" in msg and str(tmp_path / "raw" / "coco") in msg
    assert "uoft-cs/cifar100" in msg and COMMIT in msg
    (tmp_path / "raw" / "coco" / "val2014").mkdir(parents=True)  # unpacked by hand: enough
    (tmp_path / "raw" / "coco" / "cifar100").mkdir()
    (tmp_path / "raw" / "coco" / "cifar100" / "train-00000-of-00001.parquet").write_bytes(b"x")
    ensure_sources("coco", sources, tmp_path / "raw" / "coco")


def test_ensure_sources_unreachable_server_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("CONESCOPE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DownloadUnavailable, match=r"dataset 'x': download failed.*put here"):
        ensure_sources("x", [HttpSource("http://127.0.0.1:9/nothing.bin", "nothing.bin")], tmp_path)


def test_ensure_sources_downloads_and_unpacks(server, tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images/a.txt", "inside")
    global PAYLOAD
    original = PAYLOAD
    PAYLOAD = buf.getvalue()
    try:
        sha = hashlib.sha256(PAYLOAD).hexdigest()
        ensure_sources("z", [HttpSource(f"{server.url}/file.bin", "a.zip", sha, unpack=True, provides="images")],
                       tmp_path)
    finally:
        PAYLOAD = original
    assert (tmp_path / "images" / "a.txt").read_text() == "inside"


def test_hub_download_through_a_local_endpoint(server, tmp_path):
    source = HubSource("org/tiny", "data/train.txt", revision="main")
    path = fetch_hub(source, tmp_path / "raw" / "ds", endpoint=server.url)
    assert path.read_bytes() == b"hub bytes\n"
    assert any(p.startswith("/datasets/org/tiny/resolve/main/data/train.txt") for _, p, _ in server.requests)
    (tmp_path / "raw" / "ds" / "data" / "train.txt").unlink()
    # offline mode reads the hub cache only: the file fetched before comes back without a request
    import os

    before = len(server.requests)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        path = fetch_hub(HubSource("org/tiny", "data/train.txt", revision=COMMIT), tmp_path / "raw" / "ds",
                         endpoint=server.url)
        assert path.read_bytes() == b"hub bytes\n" and len(server.requests) == before
        with pytest.raises(DownloadUnavailable, match="org/tiny"):
            fetch_hub(HubSource("org/tiny", "data/other.txt"), tmp_path / "raw" / "ds", endpoint=server.url)
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    with pytest.raises(DownloadUnavailable, match="missing.txt"):
        fetch_hub(HubSource("org/tiny", "missing.txt"), tmp_path / "raw" / "ds", endpoint=server.url)


def test_manifest_image_urls_are_fetched_and_cached(server, tmp_path, monkeypatch):
    import copy
    import io

    from PIL import Image

    from conescope.ingest import ingest
    from conescope.profile import parse_profile
    from tests.conftest import TINY_PROFILE

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    global PAYLOAD
    original, PAYLOAD = PAYLOAD, buf.getvalue()
    raw_dir = tmp_path / "raw" / "web"
    raw_dir.mkdir(parents=True)
    (raw_dir / "m.csv").write_text(f"image,text\n{server.url}/file.bin,a red square\n"
                                   f"{server.url}/absent.png,gone\n")
    profile = copy.deepcopy(TINY_PROFILE)
    profile["datasets"]["web"] = {"kind": "manifest", "file": "m.csv", "languages": ["en"]}
    spec = parse_profile(profile, "x.yaml").datasets["web"]
    try:
        result = ingest(spec, raw_dir, ("en",))
    finally:
        PAYLOAD = original
    cached = result.manifest.samples.column("image_path").to_pylist()
    from pathlib import Path

    assert len(cached) == 1 and "url-cache" in cached[0] and Path(cached[0]).read_bytes() == buf.getvalue()
    assert len(result.rejects) == 1 and "HTTP 404" in result.rejects[0].reason
    monkeypatch.setenv("CONESCOPE_OFFLINE", "1")  # the cached image still serves; the other is rejected
    again = ingest(spec, raw_dir, ("en",))
    assert again.manifest.samples.num_rows == 1 and "downloads are off" in again.rejects[0].reason
