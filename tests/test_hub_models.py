"""An ``hf-hub:`` open_clip model fetched through the real hub client from a local server on 127.0.0.1
standing in for the Hugging Face hub: its own weights arrive (not a random initialisation), the cache
serves it offline afterwards, and a repository without weights is an error rather than a silent
random model."""

import hashlib
import http.server
import io
import json
import re
import threading
from pathlib import Path

import pytest
import torch

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
_CONFIG = Path(__file__).resolve().parent.parent / "conescope" / "model_configs" / "conescope-tiny.json"


def _repo_files() -> dict[str, bytes]:
    import open_clip

    from conescope.model_kinds.open_clip import _register_configs

    _register_configs()
    torch.manual_seed(123)  # weights unlike any seed-0 random initialisation
    model = open_clip.create_model("conescope-tiny")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    config = {"model_cfg": json.loads(_CONFIG.read_text()), "preprocess_cfg": {}}
    return {"open_clip_config.json": json.dumps(config).encode(), "open_clip_pytorch_model.bin": buf.getvalue()}


class _Hub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, head: bool):
                hub.requests.append(self.path)
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path)
                body = repos.get(m.group(1), {}).get(m.group(3)) if m else None
                if body is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_GET(self):
                self._answer(False)

            def do_HEAD(self):
                self._answer(True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    files = _repo_files()
    server = _Hub({"org/tiny-clip": files, "org/no-weights": {"open_clip_config.json": files["open_clip_config.json"]}})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "ENDPOINT", server.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    yield server, files
    server.httpd.shutdown()
    server.httpd.server_close()


def test_hf_hub_model_loads_its_own_weights_and_then_works_offline(hub, monkeypatch):
    import huggingface_hub.constants as c

    from conescope.model_kinds.open_clip import load_model

    server, files = hub
    expected = torch.load(io.BytesIO(files["open_clip_pytorch_model.bin"]), weights_only=True)
    loaded = load_model("hf-hub:org/tiny-clip", None, 0, False, "cpu")
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert any("org/tiny-clip/resolve/main/open_clip_config.json" in p for p in server.requests)
    assert loaded.provenance["arch"] == "hf-hub:org/tiny-clip"
    with torch.inference_mode():
        out = loaded.model.encode_text(loaded.tokenizer(["a photo"]))
    assert out.shape == (1, 32)

    before = len(server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    again = load_model("hf-hub:org/tiny-clip", None, 0, False, "cpu")
    assert torch.equal(again.model.state_dict()["logit_scale"], expected["logit_scale"])
    assert len(server.requests) == before  # served from the cache


def test_hf_hub_repository_without_weights_is_an_error(hub):
    from conescope.model_kinds.open_clip import load_model

    with pytest.raises(RuntimeError, match=r"could not load weights hf-hub:org/no-weights"):
        load_model("hf-hub:org/no-weights", None, 0, False, "cpu")
