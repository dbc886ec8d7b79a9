"""Crash safety (docs/operations.md): ``kill -9`` of ``conescope materialize`` while one of its
steps holds a concurrency pool (``duckdb``: a dataset write; ``gpu``: an embedding), then a rerun of
the same command: it marks the dead run failed, frees its slot, says so, and completes, without
waiting; no staging of the killed step survives the rerun (tests/test_storage.py kills a writer in
the middle of a directory write)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PROFILE

REPO = Path(__file__).resolve().parent.parent
# Big enough that the killed step is caught in the middle of its work; no transforms, one language.
PROFILE = {"name": "crash", "seed": 0, "languages": ["en"],
           "datasets": {"shapes": {"kind": "shapes", "n": 600, "image_size": 32, "seed": 1}},
           "models": {"tiny.random": TINY_PROFILE["models"]["tiny.random"]},
           "embedding": {"batch_size": 8, "device": "cpu", "part_rows": 64, "workers": 0}}


def _holder(root: Path, pool: str) -> str | None:
    """The run holding a slot of ``pool``, read from the instance's own storage."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(root / "dagster_home")
    if not (root / "dagster_home" / "dagster.yaml").exists():
        return None
    with dg.DagsterInstance.get() as instance:
        if pool not in instance.event_log_storage.get_concurrency_keys():
            return None
        claimed = instance.event_log_storage.get_concurrency_info(pool).claimed_slots
        return claimed[0].run_id if claimed else None


def _command(profile: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "materialize", "--profile", str(profile)]


@pytest.mark.parametrize("pool", ["duckdb", "gpu"])
def test_rerun_after_kill_frees_the_dead_runs_slot_and_completes(pool, tmp_path, monkeypatch):
    import dagster as dg

    root = tmp_path / "data"
    profile = tmp_path / "crash.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    env = {**os.environ, "CONESCOPE_HOME": str(root), "PYTHONPATH": str(REPO)}
    env.pop("DAGSTER_HOME", None)
    victim = subprocess.Popen(_command(profile), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    holder = None
    staging = root / "tmp"
    while holder is None:
        assert victim.poll() is None, "the run ended before its step could be killed"
        assert time.monotonic() < deadline, f"no step took the {pool} pool"
        # the embedding is killed once it has committed a part, so the rerun resumes from it
        if pool == "duckdb" or any((staging / "resume").glob("*/*/commit-*.json")):
            holder = _holder(root, pool)
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert _holder(root, pool) == holder, "the step was killed while it held the slot"

    rerun = subprocess.run(_command(profile), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"run {holder} " in rerun.stdout and "marked failed, its concurrency slots freed" in rerun.stdout
    assert _holder(root, pool) is None
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.FAILURE
    assert not [p for p in staging.glob("*") if p.name.startswith(("new-", "old-"))], "stale staging survives"
    assert not (staging / "resume").exists() or not any((staging / "resume").iterdir())


def test_slots_of_a_run_ended_from_outside_are_freed():
    """A run failed from outside (the UI's terminate) keeps the slot its dead worker claimed; the
    recovery frees it, and leaves a live run's slot alone."""
    import dagster as dg

    from pipelines.instance import recover_dead_runs

    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("duckdb", 2)
        ended = instance.create_run_for_job(dg.GraphDefinition("a").to_job())
        live = instance.create_run_for_job(dg.GraphDefinition("b").to_job())
        instance.handle_run_event(live.run_id, dg.DagsterEvent(
            event_type_value="PIPELINE_START", job_name=live.job_name))
        for run in (ended, live):
            assert storage.claim_concurrency_slot("duckdb", run.run_id, "step").is_claimed
        instance.report_run_failed(ended, "terminated from the UI")
        lines = []
        assert recover_dead_runs(instance, lines.append) == []
        assert [s.run_id for s in storage.get_concurrency_info("duckdb").claimed_slots] == [live.run_id]
        assert lines == [f"run {ended.run_id} (FAILURE) still held concurrency slots: freed"]


def test_a_run_worker_killed_under_conescope_dev_is_failed_and_its_slot_freed(tmp_path):
    """``kill -9`` of the worker of a run that the daemon launched (the automation sensor, on an
    empty data root) while its embedding step holds the ``gpu`` pool: the daemon's run monitoring
    asks the launcher (pipelines/launcher.py), which sees the worker gone, fails the run with that
    reason, and frees the slot the dead worker never released."""
    import dagster as dg

    from pipelines.instance import local_process
    from tests.devserver import DevServer

    root = tmp_path / "data"
    profile = tmp_path / "crash.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    home = root / "dagster_home"
    home.mkdir(parents=True)
    # a user's setting, kept by conescope dev: the monitoring loop every 2 s instead of 30 s
    (home / "dagster.yaml").write_text(yaml.safe_dump({"run_monitoring": {"poll_interval_seconds": 2}}))
    server = DevServer(root, str(profile), tmp_path / "dev.log")
    try:
        server.wait_ready()
        deadline = time.monotonic() + 240
        holder = None
        while holder is None:
            assert time.monotonic() < deadline, "no run took the gpu pool"
            holder = _holder(root, "gpu")
            time.sleep(0.02)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            worker = instance.get_run_by_id(holder).tags["conescope/worker"]
            pid, _ = local_process(worker)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 120
            while instance.get_run_by_id(holder).status != dg.DagsterRunStatus.FAILURE:
                assert time.monotonic() < deadline, "run monitoring did not fail the run of the killed worker"
                time.sleep(0.5)
            reasons = [e.message for e in instance.all_logs(holder) if e.message and "is gone" in e.message]
            assert reasons and f"run worker process {pid} is gone" in reasons[-1]
            while _holder(root, "gpu") == holder:
                assert time.monotonic() < deadline, "the dead run's gpu slot was never freed"
                time.sleep(0.5)
        took, left = server.stop()
        assert not left
    finally:
        server.kill()
