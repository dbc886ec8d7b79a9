"""``conescope dev`` stops with every child process (webserver, daemon, code server) on SIGTERM
and on Ctrl-C (SIGINT) within 30 s, leaving no orphan."""

import signal

import pytest
import yaml

from tests.conftest import TINY_PROFILE
from tests.devserver import DevServer, descendants


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_dev_stops_with_every_child(tmp_path, signum):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_PROFILE))
    server = DevServer(tmp_path / "data", str(profile), tmp_path / "dev.log")
    try:
        server.wait_ready()
        tree = descendants(server.proc.pid)
        kinds = " ".join(tree.values())
        for part in ("dagster_webserver", "dagster._daemon", "code-server"):  # the processes dagster dev starts
            assert part in kinds, tree
        took, left = server.stop(signum)
        print(f"conescope dev stopped in {took:.1f} s after {signal.Signals(signum).name} "
              f"({len(tree)} processes in its tree; loaded machine)")
        assert server.proc.returncode is not None, "conescope dev still running after 30 s"
        assert took < 30
        assert not left, f"orphans: {left}"
    finally:
        server.kill()
