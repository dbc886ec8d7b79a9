"""The run launcher of ``conescope dev``'s instance: runs forked from a process that has already
imported the code location (pipelines/forkserver.py) instead of a new interpreter per run.

Dagster's ``DefaultRunLauncher`` asks the code server to start each run in a new (spawned)
interpreter, which imports the code location again: on the demo, 4.6-6.9 s between a run's
STARTING and START events on a 2-core machine, and another 2-3 s to import open_clip in an
embedding run, ~30 times per refresh, where ``conescope materialize`` pays it once. This launcher
keeps one forkserver per code location (same interpreter, module and working directory as the
code server's) and forks each run from it; the child runs ``dagster api execute_run``, the command
Dagster's own container launchers run.

- **Code changes**: the forkserver reports the project files it loaded (and the profile); before
  each launch they are checked, and a changed file restarts it, so a run executes the code on disk,
  as with the default launcher.
- **Fallback**: a code location that is not a Python module, or a forkserver that fails to import
  it, launches through the code server (``DefaultRunLauncher``), with an engine event that says why.
- **Termination** (the UI's Terminate): SIGINT to the worker, which Dagster turns into a canceled run.
- **Dead workers**: each run records its worker (``conescope/worker`` = host:pid:start time), so the
  daemon's run monitoring fails a run whose worker died (``kill -9``), which the default launcher
  cannot tell.

Configured in ``dagster_home/dagster.yaml`` (pipelines/instance.py)::

    run_launcher:
      module: pipelines.launcher
      class: PreforkRunLauncher
      config:                       # both optional; these are the defaults
        preload: [open_clip, sentence_transformers, ...]   # imported besides the code location
        warm_up: assets.embeddings:warm_models              # called once after the imports
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import DagsterRun, DefaultRunLauncher, Field, serialize_value

from pipelines.dagster_private import CheckRunHealthResult, LaunchRunContext, RepositoryPythonOrigin, WorkerStatus
from pipelines.instance import local_process, process_alive, process_tag

WORKER_TAG = "conescope/worker"
# Imported in the forkserver besides the code location, when installed: what the runs import lazily
# (the model libraries, the report renderers, the dataset readers).
DEFAULT_PRELOAD = ("open_clip", "sentence_transformers", "matplotlib.pyplot", "openTSNE", "PIL.Image",
                   "scipy.cluster.hierarchy", "pyarrow.csv", "sklearn.datasets")
# Called in the forkserver after the imports: the profile's models, created once on the CPU.
DEFAULT_WARM_UP = "assets.embeddings:warm_models"
READY_TIMEOUT_S = 300.0
FORK_TIMEOUT_S = 30.0


class ForkServerError(RuntimeError):
    pass


class ForkServer:
    """One ``python -m pipelines.forkserver`` process and its pipes."""

    def __init__(self, executable: str, working_directory: str, modules: Sequence[str],
                 warm_up: str | None = None, timeout_s: float = READY_TIMEOUT_S):
        self.modules = list(modules)
        self.proc = subprocess.Popen([executable, "-m", "pipelines.forkserver", working_directory, *modules,
                                      *(["--warm-up", warm_up] if warm_up else [])],
                                     cwd=working_directory, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        ready = self._read(timeout_s)
        if "error" in ready:
            self.close()
            raise ForkServerError(f"the forkserver for {self.modules[0]} cannot serve: {ready['error']}")
        self.files: dict[str, list[int]] = ready["files"]
        self.preload_s: float = ready["preload_s"]

    def _read(self, timeout_s: float) -> dict:
        stdout = self.proc.stdout
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline() if ready else ""
        if not line:
            self.close()
            raise ForkServerError(f"the forkserver (pid {self.proc.pid}) "
                                  + (f"did not answer within {timeout_s:.0f} s" if not ready else "exited"))
        return json.loads(line)

    def changed(self) -> list[str]:
        """The files it loaded that changed (or disappeared) since."""
        changed = []
        for path, (mtime_ns, size) in self.files.items():
            try:
                st = os.stat(path)
            except OSError:
                changed.append(path)
                continue
            if (st.st_mtime_ns, st.st_size) != (mtime_ns, size):
                changed.append(path)
        return changed

    def fork(self, args: Sequence[str]) -> tuple[int, str]:
        if self.proc.poll() is not None:
            raise ForkServerError(f"the forkserver (pid {self.proc.pid}) exited with {self.proc.returncode}")
        self.proc.stdin.write(json.dumps({"args": list(args)}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(FORK_TIMEOUT_S)
        if "error" in reply:
            raise ForkServerError(f"the forkserver could not fork: {reply['error']}")
        return reply["pid"], reply["started"]

    def close(self) -> None:
        """Stop it (closing its stdin ends its loop); the runs forked from it go on."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _code_location(origin: RepositoryPythonOrigin | None) -> tuple[str, str, str] | None:
    """(interpreter, working directory, module) of a repository's code location (a run's
    ``job_code_origin.repository_origin``), None unless it is a Python module or package."""
    if origin is None:
        return None
    pointer = origin.code_pointer
    module = getattr(pointer, "module", None)
    working_directory = getattr(pointer, "working_directory", None) or os.getcwd()
    if not module:
        return None
    return origin.executable_path, str(Path(working_directory).resolve()), module


class PreforkRunLauncher(DefaultRunLauncher):
    def __init__(self, inst_data=None, preload: Sequence[str] = DEFAULT_PRELOAD, warm_up: str = DEFAULT_WARM_UP):
        super().__init__(inst_data=inst_data)
        self._preload = list(preload)
        self._warm_up = warm_up or None
        self._servers: dict[tuple[str, str, str], ForkServer] = {}
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls) -> dict:
        return {"preload": Field([str], is_required=False, default_value=list(DEFAULT_PRELOAD),
                                 description="modules the forkserver imports besides the code location"),
                "warm_up": Field(str, is_required=False, default_value=DEFAULT_WARM_UP,
                                 description="module:function the forkserver calls after the imports ('' for none)")}

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]) -> PreforkRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def _server(self, location: tuple[str, str, str], run: DagsterRun) -> ForkServer:
        server = self._servers.get(location)
        if server is not None:
            changed = server.changed()
            if not changed and server.proc.poll() is None:
                return server
            server.close()
            del self._servers[location]
            if changed:
                shown = ", ".join(os.path.relpath(p, location[1]) for p in changed[:5])
                self._instance.report_engine_event(
                    f"Code changed since the forkserver imported it ({shown}{', ...' if len(changed) > 5 else ''}):"
                    " restarting it", run, cls=self.__class__)
        server = self._servers[location] = self._start(location)
        return server

    def _start(self, location: tuple[str, str, str]) -> ForkServer:
        executable, working_directory, module = location
        return ForkServer(executable, working_directory, [module, *self._preload], self._warm_up)

    def launch_run(self, context: LaunchRunContext) -> None:
        from pipelines.dagster_private import ExecuteRunArgs

        run = context.dagster_run
        location = _code_location(run.job_code_origin.repository_origin if run.job_code_origin else None)
        if location is None:
            self._instance.report_engine_event(
                "The code location is not a Python module: launching through the code server", run,
                cls=self.__class__)
            return super().launch_run(context)
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id,
                              instance_ref=self._instance.get_ref())
        try:
            with self._lock:
                pid, started = self._server(location, run).fork(["api", "execute_run", serialize_value(args)])
        except ForkServerError as exc:
            with self._lock:
                broken = self._servers.pop(location, None)
            if broken is not None:
                broken.close()
            self._instance.report_engine_event(f"{exc}\nLaunching through the code server instead.", run,
                                               cls=self.__class__)
            return super().launch_run(context)
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: process_tag(pid, started)})

    def _worker(self, run: DagsterRun) -> tuple[int, str] | None:
        """(pid, start time) of the run's forked worker, if it ran on this machine."""
        return local_process(run.tags.get(WORKER_TAG))

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or WORKER_TAG not in run.tags:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        worker = self._worker(run)
        if worker is None:
            self._instance.report_engine_event(f"Run worker {run.tags[WORKER_TAG]} is on another machine: "
                                               "cannot terminate it from here", run, cls=self.__class__)
            return False
        self._instance.report_run_canceling(run)
        if not process_alive(*worker):
            self._instance.report_run_canceled(run, f"Run worker {worker[0]} is gone: run canceled")
            return True
        os.kill(worker[0], signal.SIGINT)  # Dagster's run worker turns it into a canceled run
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._worker(run)
        if worker is None:
            # launched through the code server, or on another machine: nothing to tell, and any
            # status but RUNNING or SUCCESS would make run monitoring fail the run
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker not watched by this launcher")
        if process_alive(*worker):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        current = self._instance.get_run_by_id(run.run_id)
        if current is not None and current.is_finished:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        return CheckRunHealthResult(WorkerStatus.FAILED,
                                    f"run worker process {worker[0]} is gone (killed or crashed)")

    def dispose(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()
        super().dispose()
