"""Plain ``dagster dev`` from the repository root (DAGSTER_HOME unset) is ``conescope dev`` on the default
data root: Dagster's temporary home is configured by the repository's dagster.yaml, so the UI shows the
runs ``conescope materialize`` stored in ``./data/dagster_home``, the instance uses conescope's run launcher
and run queue, and every daemon is healthy. The repository root is stood in for by a folder holding the
repository's dagster.yaml and a workspace.yaml that loads the project's code location, so the test writes
nothing into the checkout. Stopped with SIGTERM, it exits, and its code servers follow within their
30 s heartbeat."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

import dagster as dg
import yaml

from pipelines.instance import ensure_dagster_home
from storage.paths import DataRoot
from tests.conftest import TINY_PROFILE
from tests.devserver import DevServer, alive, descendants
from tests.doc_pages import REPO

INSTANCE = """{ instance { runLauncher { name } runQueuingSupported
  daemonHealth { allDaemonStatuses { daemonType required healthy } } }
  runsOrError { ... on Runs { results { runId } } } }"""


@dg.asset
def stored_before() -> int:
    return 1


def test_plain_dagster_dev_from_the_root_is_conescope_s_instance_on_the_default_data_root(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "dagster.yaml", checkout / "dagster.yaml")
    (checkout / "workspace.yaml").write_text(yaml.safe_dump(
        {"load_from": [{"python_module": {"module_name": "pipelines.definitions", "working_directory": str(REPO)}}]}))
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_PROFILE))
    data = checkout / "data"  # the default data root of a command started in the checkout
    with dg.DagsterInstance.from_config(ensure_dagster_home(DataRoot(data))) as instance:
        stored = dg.materialize([stored_before], instance=instance).run_id

    server = DevServer(data, str(profile), tmp_path / "dagster-dev.log", env={"CONESCOPE_AUTOMATION": "off"},
                       plain_in=checkout)
    tree: dict[int, str] = {}
    try:
        server.wait_ready()
        tree = descendants(server.proc.pid)
        assert "pipelines.cli" not in " ".join(tree.values()), tree
        assert list(checkout.glob(".tmp_dagster_home_*")), "Dagster's temporary home is not where expected"
        deadline, statuses = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            body = server.graphql(INSTANCE)["data"]
            rows = body["instance"]["daemonHealth"]["allDaemonStatuses"]
            statuses = {row["daemonType"]: row["healthy"] for row in rows if row["required"]}
            if statuses and all(statuses.values()):
                break
            time.sleep(2)
        assert statuses and all(statuses.values()), statuses
        assert body["instance"]["runLauncher"]["name"] == "PreforkRunLauncher"
        assert body["instance"]["runQueuingSupported"] is True
        assert stored in [run["runId"] for run in body["runsOrError"]["results"]]
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) is not None
        # its code servers are not stopped with it: they exit when its heartbeat stops (30 s)
        deadline = time.monotonic() + 45
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(1)
        assert not alive(tree), [tree[p] for p in alive(tree)]
    finally:
        server.kill()
        for pid in alive(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
