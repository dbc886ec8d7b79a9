"""The forking run launcher (pipelines/launcher.py, pipelines/forkserver.py), against a real
instance and a small code location of its own (a job that naps), with Dagster's own run worker
(``dagster api execute_run``) forked from the forkserver: runs succeed with their worker recorded,
a code change restarts the forkserver, a broken code location falls back to the code server, the
UI's Terminate cancels a run, and a killed worker is reported dead to run monitoring."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml

from pipelines.dagster_private import ReconstructableRepository, WorkerStatus
from pipelines.instance import instance_config, local_process, process_alive
from pipelines.launcher import WORKER_TAG, ForkServer, ForkServerError, PreforkRunLauncher

NAPS = """
import time
import dagster as dg

@dg.op(config_schema={"seconds": float})
def nap(context):
    time.sleep(context.op_config["seconds"])
    context.log.info(f"VERSION {VERSION} in pid {__import__('os').getpid()}")

@dg.job(executor_def=dg.in_process_executor)
def naps():
    nap()

VERSION = 1
defs = dg.Definitions(jobs=[naps])
"""


def _wait(done, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


class Location:
    """A code location module in its own folder, and an instance whose launcher forks its runs."""

    def __init__(self, tmp_path: Path, source: str = NAPS):
        self.module = f"naps_{uuid.uuid4().hex[:8]}"
        self.folder = tmp_path / "code"
        self.folder.mkdir()
        self.file = self.folder / f"{self.module}.py"
        self.file.write_text(source)
        home = tmp_path / "dagster_home"
        home.mkdir()
        launcher = {**instance_config()["run_launcher"], "config": {"preload": [], "warm_up": ""}}
        (home / "dagster.yaml").write_text(yaml.safe_dump({"run_launcher": launcher, "telemetry": {"enabled": False}}))
        self.instance = dg.DagsterInstance.from_config(str(home))
        self.recon = ReconstructableRepository.for_module(self.module, "defs", str(self.folder)) \
            .get_reconstructable_job("naps")
        self.job_def = self.recon.get_definition()  # imported here once: a test may break the file later

    def launch(self, seconds: float) -> dg.DagsterRun:
        run = self.instance.create_run_for_job(
            job_def=self.job_def, job_code_origin=self.recon.get_python_origin(),
            run_config={"ops": {"nap": {"config": {"seconds": seconds}}}})
        return self.instance.launch_run(run.run_id, workspace=None)

    def status(self, run: dg.DagsterRun) -> dg.DagsterRunStatus:
        return self.instance.get_run_by_id(run.run_id).status

    def finished(self, run: dg.DagsterRun, timeout_s: float = 60.0) -> dg.DagsterRun:
        _wait(lambda: self.instance.get_run_by_id(run.run_id).is_finished, timeout_s)
        return self.instance.get_run_by_id(run.run_id)

    def logs(self, run: dg.DagsterRun) -> str:
        return "\n".join(e.message or "" for e in self.instance.all_logs(run.run_id))

    def close(self) -> None:
        self.instance.run_launcher.dispose()
        self.instance.dispose()


@pytest.fixture
def location(tmp_path):
    loc = Location(tmp_path)
    yield loc
    loc.close()


def test_the_instance_uses_the_forking_launcher(tmp_path):
    from pipelines.instance import ensure_dagster_home
    from storage.paths import DataRoot

    previous = os.environ.get("DAGSTER_HOME")
    try:
        home = ensure_dagster_home(DataRoot(tmp_path))
        with dg.DagsterInstance.from_config(home) as instance:
            assert isinstance(instance.run_launcher, PreforkRunLauncher)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


def test_runs_are_forked_from_one_forkserver_and_succeed(location):
    first, second = location.launch(0.1), location.launch(0.1)
    for run in (first, second):
        done = location.finished(run)
        assert done.status == dg.DagsterRunStatus.SUCCESS, location.logs(run)
        pid, started = local_process(done.tags[WORKER_TAG])
        assert f"VERSION 1 in pid {pid}" in location.logs(run)  # the recorded worker ran the step
        assert started
    (server,) = location.instance.run_launcher._servers.values()
    workers = {local_process(location.instance.get_run_by_id(r.run_id).tags[WORKER_TAG])[0] for r in (first, second)}
    assert len(workers) == 2 and server.proc.pid not in workers
    for pid in workers:  # children of the forkserver, not of this process
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(pid).ppid() == server.proc.pid


def test_a_code_change_restarts_the_forkserver(location):
    assert location.finished(location.launch(0)).status == dg.DagsterRunStatus.SUCCESS
    (server,) = location.instance.run_launcher._servers.values()
    assert str(location.file.resolve()) in server.files
    location.file.write_text(NAPS.replace("VERSION = 1", "VERSION = 2"))
    run = location.finished(location.launch(0))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert "VERSION 2 in pid" in location.logs(run)
    assert "Code changed since the forkserver imported it" in location.logs(run)
    (restarted,) = location.instance.run_launcher._servers.values()
    assert restarted is not server and server.proc.poll() is not None


def test_terminate_cancels_a_forked_run(location):
    run = location.launch(60)
    _wait(lambda: location.status(run) == dg.DagsterRunStatus.STARTED)
    assert location.instance.run_launcher.terminate(run.run_id)
    done = location.finished(run, 30)
    assert done.status == dg.DagsterRunStatus.CANCELED, location.logs(run)


def test_a_killed_worker_is_reported_dead_to_run_monitoring(location):
    run = location.launch(60)
    _wait(lambda: location.status(run) == dg.DagsterRunStatus.STARTED)
    launcher = location.instance.run_launcher
    assert launcher.supports_check_run_worker_health
    started = location.instance.get_run_by_id(run.run_id)
    assert launcher.check_run_worker_health(started).status == WorkerStatus.RUNNING
    pid, start_time = local_process(started.tags[WORKER_TAG])
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not process_alive(pid, start_time), 10)
    health = launcher.check_run_worker_health(started)
    assert health.status == WorkerStatus.FAILED and str(pid) in health.msg


def test_a_code_location_that_fails_to_import_is_named(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken_location.py").write_text("import dagster\nraise RuntimeError('profile key models.x: bad')\n")
    with pytest.raises(ForkServerError, match=r"broken_location(.|\n)*models\.x: bad"):
        ForkServer(sys.executable, str(folder), ["broken_location"])


def test_a_forkserver_that_cannot_start_falls_back_to_the_code_server(location, monkeypatch):
    launched = []

    def default_launch(self, context):
        launched.append(context.dagster_run.run_id)

    monkeypatch.setattr(dg.DefaultRunLauncher, "launch_run", default_launch)
    location.file.write_text("raise ImportError('no such thing')\n")
    run = location.launch(0)
    assert launched == [run.run_id]
    assert WORKER_TAG not in location.instance.get_run_by_id(run.run_id).tags
    assert "Launching through the code server instead" in location.logs(run)
    assert "no such thing" in location.logs(run)


def test_optional_preloads_that_are_not_installed_are_skipped(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    (folder / "fine_location.py").write_text("X = 1\n")
    server = ForkServer(sys.executable, str(folder), ["fine_location", "no_such_module_for_conescope"])
    try:
        assert str((folder / "fine_location.py").resolve()) in server.files
        assert server.changed() == []
        (folder / "fine_location.py").write_text("X = 22\n")
        assert server.changed() == [str((folder / "fine_location.py").resolve())]
    finally:
        server.close()
    assert server.proc.returncode == 0


@pytest.mark.parametrize("parent_computed", [False, True])
def test_the_fork_probe_tells_a_forkserver_whose_children_would_hang(parent_computed):
    # GNU OpenMP hangs in a child forked after the parent used it: the forkserver computes on one
    # thread only, and its probe catches anything that computed in parallel before the fork
    code = ("import torch\n"
            "torch.set_num_threads(2)\n"
            f"if {parent_computed}: (torch.ones(1 << 22) * 2).sum()\n"
            "from pipelines.forkserver import fork_probe\n"
            "print('PROBE', fork_probe(2, timeout_s=8))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    line = next(text for text in out.stdout.splitlines() if text.startswith("PROBE"))
    if parent_computed:
        assert "hung in torch's thread pool" in line
    else:
        assert line == "PROBE None"


def test_warm_models_fills_the_cache_the_embedding_steps_read(tiny_profile):
    from assets.embeddings import cached_model, warm_models

    cached_model.cache_clear()
    assert warm_models(tiny_profile) == list(tiny_profile.models)[:3]
    hits = cached_model.cache_info().hits
    spec = next(iter(tiny_profile.models.values()))
    cached_model(spec, "cpu", tiny_profile.embedding.precision)  # what the image step calls on the CPU
    assert cached_model.cache_info().hits == hits + 1
    cached_model.cache_clear()


def test_only_the_projects_own_files_are_watched():
    # the virtual environment may sit inside the project's folder (README: python -m venv .venv):
    # its thousands of installed modules are not the code a change to which restarts the forkserver
    repo = Path(__file__).resolve().parent.parent
    server = ForkServer(sys.executable, str(repo), ["pipelines.forkserver", "yaml"])
    try:
        watched = [Path(p) for p in server.files]
        assert repo / "pipelines" / "forkserver.py" in watched
        assert not [p for p in watched if "site-packages" in p.parts or p.is_relative_to(Path(sys.prefix).resolve())]
    finally:
        server.close()
