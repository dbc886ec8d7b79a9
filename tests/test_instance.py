"""The instance config written to the data root: the run queue sized to the machine (runs launched
by the automation sensors and the UI), Dagster accepts it, and a user's own settings stand."""

import os

import dagster as dg
import pytest
import yaml

from pipelines.instance import DEQUEUE_INTERVAL_S, POOL_RUN_BUFFER, ensure_dagster_home, max_concurrent_runs
from storage.paths import DataRoot


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    yield DataRoot(tmp_path / "data")
    os.environ.pop("DAGSTER_HOME", None)


def test_max_concurrent_runs_is_one_per_two_cpus_between_one_and_four():
    assert [max_concurrent_runs(n) for n in (1, 2, 3, 4, 6, 8, 16)] == [1, 1, 1, 2, 3, 4, 4]
    assert max_concurrent_runs(0) == 1


def test_run_queue_and_pools_as_dagster_reads_them(root):
    ensure_dagster_home(root)
    with dg.DagsterInstance.get() as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == max_concurrent_runs()
        assert queue.op_concurrency_slot_buffer == POOL_RUN_BUFFER
        assert instance.run_coordinator.dequeue_interval_seconds == DEQUEUE_INTERVAL_S
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert not instance.telemetry_enabled
        assert type(instance.run_launcher).__name__ == "PreforkRunLauncher"


def test_an_existing_config_gains_missing_keys_and_keeps_its_own(root):
    config = root.dagster_home / "dagster.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}},
                                      "run_monitoring": {"enabled": False}}))
    ensure_dagster_home(root)
    written = yaml.safe_load(config.read_text())
    assert written["concurrency"]["runs"] == {"max_concurrent_runs": max_concurrent_runs()}  # gained, nested
    assert written["run_monitoring"]["enabled"] is False  # kept (and the keys it lacked added)
    # a limit of the user's stands (Dagster reads run limits beside pools only under concurrency > runs)
    config.write_text(yaml.safe_dump({"concurrency": {"runs": {"max_concurrent_runs": 7}}}))
    ensure_dagster_home(root)
    with dg.DagsterInstance.get() as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 7
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_runs_share_the_cpus_and_a_users_thread_setting_stands(root):
    from pipelines.instance import THREAD_VARS, configured_max_runs, run_thread_env

    assert run_thread_env(2, cpus=2, environ={}) == dict.fromkeys(THREAD_VARS, "1")
    assert run_thread_env(4, cpus=16, environ={}) == dict.fromkeys(THREAD_VARS, "4")
    assert run_thread_env(4, cpus=2, environ={})["OMP_NUM_THREADS"] == "1"  # never zero
    assert run_thread_env(2, cpus=2, environ={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
    ensure_dagster_home(root)
    assert configured_max_runs(root) == max_concurrent_runs()
    config = root.dagster_home / "dagster.yaml"
    data = yaml.safe_load(config.read_text())
    data["concurrency"]["runs"]["max_concurrent_runs"] = 7
    config.write_text(yaml.safe_dump(data))
    assert configured_max_runs(root) == 7


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the kernel's own record is Linux's /proc")
def test_a_process_tag_holds_the_start_time_in_the_unit_of_earlier_tags():
    """Run tags written before psutil hold the start time field of /proc/<pid>/stat (clock ticks since
    boot); the tag of a process started since must read the same for the same process."""
    import socket

    from pipelines.instance import local_process, owner_tag

    with open("/proc/self/stat") as fh:
        kernel = fh.read().rsplit(")", 1)[1].split()[19]
    assert owner_tag() == f"{socket.gethostname()}:{os.getpid()}:{kernel}"
    assert local_process(owner_tag()) == (os.getpid(), kernel)


def test_a_process_is_alive_until_it_exits_and_a_recycled_pid_is_not_it():
    import subprocess
    import sys

    from pipelines.instance import process_alive, process_start_time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start_time(child.pid)
        assert started and started.isdigit()
        assert process_alive(child.pid, started) and process_alive(child.pid, "")
        assert not process_alive(child.pid, str(int(started) - 1))  # same pid, another start: recycled
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, started)


def test_the_repository_dagster_yaml_is_conescope_s_instance_config_on_the_default_data_root(tmp_path, monkeypatch):
    """Plain ``dagster dev`` from the repository root (DAGSTER_HOME unset) opens a temporary home configured
    by the repository's dagster.yaml, as Dagster's CLI does (``InstanceRef.from_dir(tmp, config_dir=cwd)``):
    its launcher, queue and pools are conescope's, and its runs are stored where ``conescope dev`` and
    ``conescope materialize`` of the default data root read them."""
    from pipelines.dagster_private import InstanceRef
    from pipelines.instance import REPOSITORY_CONFIG, repository_config
    from tests.doc_pages import REPO

    assert yaml.safe_load((REPO / REPOSITORY_CONFIG).read_text()) == repository_config()
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / "dagster.yaml").write_text((REPO / REPOSITORY_CONFIG).read_text())
    monkeypatch.chdir(folder)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    @dg.asset
    def one() -> int:
        return 1

    temporary = tmp_path / "tmp_home"
    temporary.mkdir()
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(temporary), config_dir=str(folder))) as instance:
        assert type(instance.run_launcher).__name__ == "PreforkRunLauncher"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
        run_id = dg.materialize([one], instance=instance).run_id
    home = ensure_dagster_home(DataRoot(folder / "data"))  # what conescope's commands open on that data root
    with dg.DagsterInstance.from_config(home) as conescope_instance:
        assert conescope_instance.get_run_by_id(run_id) is not None
        assert conescope_instance.get_latest_materialization_event(dg.AssetKey("one")) is not None
